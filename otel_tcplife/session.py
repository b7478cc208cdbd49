"""The Session record: one closed TCP session, decoded from the event ABI."""

from __future__ import annotations

import os
from typing import Iterable, NamedTuple

from . import abi
from .abi import address_bytes, comm_text
from .caches import Formatted, address_caches


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
    # What happened on the wire (defaults: a session the kernel knew nothing of that about)
    srtt_us: int = 0  # smoothed RTT at close, us; 0: no RTT sample
    rtt_min_us: int = 0  # minimum RTT, us; 0: no RTT sample
    retransmits: int = 0  # segments retransmitted
    closed_by: int = abi.CLOSED_BY_NONE  # abi.CLOSED_BY_*: who closed first
    reset: int = abi.RESET_NONE  # abi.RESET_*: the session's first reset
    # The owner as only the live process could tell (0: unknown): see identity.py
    cgroup_id: int = 0  # its cgroup v2 id
    start_ns: int = 0  # its start, boot-time ns
    # struct span_ids: trace id (16), span id (8), parent span id (8, abi.NO_PARENT: none);
    # b"": none given (as_events and RecordBuilder make random ones)
    span_ids: bytes = b""
    flags: int = 0  # abi.EVENT_* bits: EVENT_START_UNKNOWN

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
             oldstate, owner, srtt_us, rtt_min_us, retransmits, closed_by, reset, cgroup_id,
             start_ns, span_ids, flags) in map(_SESSION_ORDER, events):
            addresses = ipv4 if family == 4 else ipv6
            sessions.append(Session(pid, comms[comm], family, addresses[saddr], sport, addresses[daddr], dport,
                                    tx_bytes, rx_bytes, birth_ns, close_ns, role, error, oldstate, owner,
                                    srtt_us, rtt_min_us, retransmits, closed_by, reset, cgroup_id, start_ns,
                                    span_ids, flags))
        return sessions


def random_span_ids() -> bytes:
    """A root span's struct span_ids with random ids, as the probe makes them when it cannot derive them."""
    return os.urandom(24) + abi.NO_PARENT


def as_events(sessions: Iterable[Session]) -> list[tuple]:
    """Decoder.decode's inverse, for tests and benchmarks: Sessions as the probe reads them
    (abi.EVENT tuples), the comm cut to 16 bytes as the kernel's is."""
    events = []
    for s in sessions:
        fields = {event_field(name): value for name, value in s._asdict().items()}
        fields.update(saddr=address_bytes(s.family, s.laddr), daddr=address_bytes(s.family, s.raddr),
                      comm=s.comm.encode(), span_ids=s.span_ids or random_span_ids())
        events.append(abi.EVENT.unpack(abi.pack_event(**fields)))
    return events
