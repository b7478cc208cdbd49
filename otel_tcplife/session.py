"""The Session record: one closed TCP session, decoded from the event ABI."""

from __future__ import annotations

import socket
from typing import NamedTuple


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


def address_text(family: int, raw: bytes) -> str:
    """An event's address (16 bytes, IPv4 in the first 4) as text."""
    if family == 4:
        return socket.inet_ntop(socket.AF_INET, raw[:4])
    return socket.inet_ntop(socket.AF_INET6, raw)


def comm_text(raw: bytes) -> str:
    """An event's comm (NUL-padded, not always valid UTF-8) as text."""
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


class Decoder:
    """Turns raw event records into Sessions; caches address strings."""

    def __init__(self) -> None:
        # Raw address (16 bytes, IPv4 in the first 4) -> text, one cache per family: a bytes
        # key hashes faster than a (family, bytes) tuple made for every lookup.
        self._ipv4: dict[bytes, str] = {}
        self._ipv6: dict[bytes, str] = {}
        self._comms: dict[bytes, str] = {}

    def address(self, family: int, raw: bytes) -> str:
        addresses = self._ipv4 if family == 4 else self._ipv6
        text = addresses.get(raw)
        if text is None:
            if len(addresses) > 65536:
                addresses.clear()
            text = addresses[raw] = address_text(family, raw)
        return text

    def decode(self, events: list[tuple]) -> list[Session]:
        """abi.EVENT tuples (as the probe reads them) -> Sessions."""
        ipv4, ipv6 = self._ipv4, self._ipv6
        address = self.address
        comms = self._comms
        make = tuple.__new__  # Session(...) without its Python-level __new__: a third faster
        sessions = []
        append = sessions.append
        for (birth, close, tx, rx, saddr, daddr, pid, error, sport, dport, family, role,
             oldstate, owner, comm) in events:
            name = comms.get(comm)
            if name is None:
                if len(comms) > 65536:
                    comms.clear()
                name = comms[comm] = comm_text(comm)
            addresses = ipv4 if family == 4 else ipv6
            append(make(Session, (
                pid, name, family, addresses.get(saddr) or address(family, saddr), sport,
                addresses.get(daddr) or address(family, daddr), dport,
                tx, rx, birth, close, role, error, oldstate, owner,
            )))
        return sessions
