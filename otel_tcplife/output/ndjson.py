"""Flat NDJSON: one object per session per line, for jq, Fluent Bit and journald.

Keys, in this order: time, start_time (RFC 3339, ns, UTC), otel.event.name,
trace_id, span_id (hex), then every attribute of the record contract as a
flat dotted key (record.RecordBuilder defines them; tests check both agree).

This is the hot path of the default output, so lines are filled into
per-role templates straight from Sessions: no dict, no attribute tuples.
Only the process names can need JSON escaping; they are escaped once per
(pid, comm).
"""

from __future__ import annotations

import errno
import time
from typing import Sequence

import orjson

from .. import abi
from ..enrich import ProcessNames
from ..record import EVENT_NAME, NETWORK_TYPE, ROLES
from ..session import Session

CACHE_LIMIT = 8192

_HEAD = ('{"time":"%s.%09dZ","start_time":"%s.%09dZ","otel.event.name":"' + EVENT_NAME +
         '","trace_id":"%s","span_id":"%s","network.transport":"tcp","network.type":"%s",'
         '"network.local.address":"%s","network.local.port":%d,"network.peer.address":"%s","network.peer.port":%d')
_CLIENT_SERVER = ',"client.address":"%s","client.port":%d,"server.address":"%s","server.port":%d'
_TAIL = '%s,"tcplife.role":"%s","tcplife.bytes_sent":%d,"tcplife.bytes_received":%d,"tcplife.duration_ms":%r%s}\n'
TEMPLATES = {
    abi.ROLE_CLIENT: _HEAD + _CLIENT_SERVER + _TAIL,
    abi.ROLE_SERVER: _HEAD + _CLIENT_SERVER + _TAIL,
    abi.ROLE_UNKNOWN: _HEAD + _TAIL,
}
ROLE_NAMES = {role: name for role, (_, _, name) in ROLES.items()}  # tcplife.role values
NETWORK_TYPES = {family: name for family, (_, name) in NETWORK_TYPE.items()}


class Rfc3339:
    """Unix ns -> '2026-11-26T08:15:42.123456789Z', the seconds part cached."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def prefix(self, second: int) -> str:
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return self._prefix

    def __call__(self, unix_ns: int) -> str:
        second, nanos = divmod(unix_ns, 1_000_000_000)
        return f"{self.prefix(second)}.{nanos:09d}Z"


class NdjsonEncoder:
    def __init__(self, names: ProcessNames | None = None) -> None:
        self.names = names or ProcessNames()
        self.rfc3339 = Rfc3339()
        self._process: dict[tuple[int, str], str] = {}
        self._errors: dict[int, str] = {0: ""}

    def _process_json(self, pid: int, comm: str) -> str:
        key = (pid, comm)
        fragment = self._process.get(key)
        if fragment is None:
            if len(self._process) >= CACHE_LIMIT:
                self._process.clear()
            name = orjson.dumps(self.names.executable_name(pid, comm)).decode()
            fragment = self._process[key] = (f',"process.pid":{pid},"process.executable.name":{name},'
                                             f'"thread.name":{orjson.dumps(comm).decode()}')
        return fragment

    def _error_json(self, error: int) -> str:
        fragment = self._errors.get(error)
        if fragment is None:
            fragment = self._errors[error] = f',"error.type":"{errno.errorcode.get(error, str(error))}"'
        return fragment

    def encode(self, sessions: Sequence[Session], ids: bytes, offset: int) -> bytes:
        """Lines for sessions; ids holds 24 random bytes per session (trace id, span id),
        offset turns their monotonic times into Unix ns (as RecordBuilder.build)."""
        hex_ids = ids.hex()
        prefix = self.rfc3339.prefix
        process_json = self._process_json
        error_json = self._error_json
        lines = []
        for i, s in enumerate(sessions):
            end_second, end_nanos = divmod(s.close_ns + offset, 1_000_000_000)
            start_second, start_nanos = divmod(s.birth_ns + offset, 1_000_000_000)
            j = 48 * i
            la, lp, ra, rp = s.laddr, s.lport, s.raddr, s.rport
            role = s.role if s.role in TEMPLATES else abi.ROLE_UNKNOWN
            head = (prefix(end_second), end_nanos, prefix(start_second), start_nanos,
                    hex_ids[j:j + 32], hex_ids[j + 32:j + 48], NETWORK_TYPES[s.family], la, lp, ra, rp)
            if role == abi.ROLE_CLIENT:
                head += (la, lp, ra, rp)
            elif role == abi.ROLE_SERVER:
                head += (ra, rp, la, lp)
            lines.append(TEMPLATES[role] % (*head, process_json(s.pid, s.comm), ROLE_NAMES[role], s.tx_bytes,
                                             s.rx_bytes, (s.close_ns - s.birth_ns) / 1e6, error_json(s.error)))
        return "".join(lines).encode()
