"""The Session record: one closed TCP session, decoded from the event ABI."""

from __future__ import annotations

import socket
from typing import Callable, Iterable, NamedTuple

from . import abi


class Session(NamedTuple):
    pid: int
    comm: str
    family: int  # 4 or 6
    laddr: str
    lport: int
    raddr: str
    rport: int
    tx_bytes: int  # payload bytes acked by the peer
    rx_bytes: int  # payload bytes received
    birth_ns: int  # CLOCK_MONOTONIC
    close_ns: int  # CLOCK_MONOTONIC
    role: int  # abi.ROLE_*
    error: int  # errno at close, 0 if none
    oldstate: int  # TCP state before CLOSE
    owner: int  # abi.OWNER_*: how pid/comm were found

    @property
    def duration_ns(self) -> int:
        return self.close_ns - self.birth_ns


# The event field (abi.EVENT_NAMES) each Session field comes from: the one of the same name, except these.
EVENT_FIELD = {"laddr": "saddr", "lport": "sport", "raddr": "daddr", "rport": "dport"}
# Session fields decoded from the event's bytes: addresses (address_text) and the comm (comm_text).
# The others are the event's numbers as they are.
ADDRESS_FIELDS = frozenset({"laddr", "raddr"})
COMM_FIELD = "comm"


def event_field(name: str) -> str:
    """The event field a Session field comes from."""
    return EVENT_FIELD.get(name, name)


def address_text(family: int, raw: bytes) -> str:
    """An event's address (16 bytes, IPv4 in the first 4) as text."""
    if family == 4:
        return socket.inet_ntop(socket.AF_INET, raw[:4])
    return socket.inet_ntop(socket.AF_INET6, raw)


def address_bytes(family: int, text: str) -> bytes:
    """address_text's inverse: an address as an event holds it (16 bytes, IPv4 in the first 4)."""
    return socket.inet_pton(socket.AF_INET if family == 4 else socket.AF_INET6, text).ljust(16, b"\0")


def comm_text(raw: bytes) -> str:
    """An event's comm (NUL-padded, not always valid UTF-8) as text."""
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


CACHE_LIMIT = 8192  # entries per Formatted cache, unless told otherwise


class Formatted(dict):
    """key -> make(key), made once: formatting a field costs several times a lookup. Cleared when
    full (limit entries), so that it stays bounded."""

    def __init__(self, make: Callable, limit: int | None = None) -> None:
        super().__init__()
        self.make = make
        self.limit = CACHE_LIMIT if limit is None else limit

    def __missing__(self, key):
        if len(self) >= self.limit:
            self.clear()
        value = self[key] = self.make(key)
        return value


def address_caches(make: Callable[[str], object] = str) -> tuple[Formatted, Formatted]:
    """Raw address (16 bytes) -> make(its text), for IPv4 and for IPv6: one cache per family,
    since 0.0.0.0 and :: are the same bytes. The outputs read events with these, not Sessions."""
    return (Formatted(lambda raw: make(address_text(4, raw))),
            Formatted(lambda raw: make(address_text(6, raw))))


def port_cache(make: Callable[[int], object] = str) -> Formatted:
    """Port -> make(port), never cleared: only 65,536 ports exist."""
    return Formatted(make, limit=1 << 16)


# An event's fields in Session order.
_SESSION_ORDER = abi.event_getter(*map(event_field, Session._fields))


class Decoder:
    """Turns raw event records into Sessions (the readable form: RecordBuilder, tests)."""

    def __init__(self) -> None:
        self._ipv4, self._ipv6 = address_caches()
        self._comms = Formatted(comm_text)

    def decode(self, events: list[tuple]) -> list[Session]:
        """abi.EVENT tuples (as the probe reads them) -> Sessions."""
        ipv4, ipv6, comms = self._ipv4, self._ipv6, self._comms
        sessions = []
        for (pid, comm, family, saddr, sport, daddr, dport, tx_bytes, rx_bytes, birth_ns, close_ns, role, error,
             oldstate, owner) in map(_SESSION_ORDER, events):
            addresses = ipv4 if family == 4 else ipv6
            sessions.append(Session(pid, comms[comm], family, addresses[saddr], sport, addresses[daddr], dport,
                                    tx_bytes, rx_bytes, birth_ns, close_ns, role, error, oldstate, owner))
        return sessions


def as_events(sessions: Iterable[Session]) -> list[tuple]:
    """Decoder.decode's inverse, for tests and benchmarks: Sessions as the probe reads them
    (abi.EVENT tuples), the comm cut to 16 bytes as the kernel's is."""
    events = []
    for s in sessions:
        fields = {event_field(name): value for name, value in s._asdict().items()}
        fields.update(saddr=address_bytes(s.family, s.laddr), daddr=address_bytes(s.family, s.raddr),
                      comm=s.comm.encode())
        events.append(abi.EVENT.unpack(abi.pack_event(**fields)))
    return events
