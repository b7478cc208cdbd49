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
from typing import Iterator, Sequence

import orjson

from .. import abi
from ..enrich import ProcessNames
from ..record import EVENT_NAME, NETWORK_TYPE, ROLES
from ..session import Session

CACHE_LIMIT = 8192
# Lines per chunk of output: ~100 KB, under the size malloc serves from fresh mmap-ed pages
# (cli.tune_malloc), whose page faults cost more than the extra write calls.
CHUNK_LINES = 128

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
        self.prefixes: dict[int, str] = {}  # second -> "2026-11-26T08:15:42"

    def prefix(self, second: int) -> str:
        text = self.prefixes.get(second)
        if text is None:
            if len(self.prefixes) >= 16:  # a batch spans a few seconds at most
                self.prefixes.clear()
            text = self.prefixes[second] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return text

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

    def encode(self, sessions: Sequence[Session], ids: bytes, offset: int) -> Iterator[bytes]:
        """Lines for sessions, made and yielded CHUNK_LINES at a time (only one chunk is in memory);
        ids holds 24 random bytes per session (trace id, span id), offset turns their monotonic
        times into Unix ns (as RecordBuilder.build)."""
        return (self._encode_chunk(sessions[i:i + CHUNK_LINES], ids[24 * i:24 * (i + CHUNK_LINES)], offset)
                for i in range(0, len(sessions), CHUNK_LINES))

    def _encode_chunk(self, sessions: Sequence[Session], ids: bytes, offset: int) -> bytes:
        """One flat loop, no call or tuple per session that can be avoided: this
        is most of the agent's CPU in NDJSON mode."""
        hex_ids = ids.hex()
        prefixes = self.rfc3339.prefixes
        prefix = self.rfc3339.prefix
        processes = self._process
        process_json = self._process_json
        error_json = self._error_json
        types = NETWORK_TYPES
        client, server, unknown = (TEMPLATES[r] for r in (abi.ROLE_CLIENT, abi.ROLE_SERVER, abi.ROLE_UNKNOWN))
        client_name, server_name, unknown_name = (
            ROLE_NAMES[r] for r in (abi.ROLE_CLIENT, abi.ROLE_SERVER, abi.ROLE_UNKNOWN))
        CLIENT, SERVER = abi.ROLE_CLIENT, abi.ROLE_SERVER
        lines = []
        append = lines.append
        j = 0
        for pid, comm, family, la, lp, ra, rp, tx, rx, birth, close, role, error, _, _ in sessions:
            end_second, end_nanos = divmod(close + offset, 1_000_000_000)
            start_second, start_nanos = divmod(birth + offset, 1_000_000_000)
            end = prefixes.get(end_second) or prefix(end_second)
            start = prefixes.get(start_second) or prefix(start_second)
            process = processes.get((pid, comm)) or process_json(pid, comm)
            failure = error_json(error) if error else ""
            # The three branches differ only in the client/server attributes.
            if role == CLIENT:
                append(client % (end, end_nanos, start, start_nanos, hex_ids[j:j + 32], hex_ids[j + 32:j + 48],
                                 types[family], la, lp, ra, rp, la, lp, ra, rp,
                                 process, client_name, tx, rx, (close - birth) / 1e6, failure))
            elif role == SERVER:
                append(server % (end, end_nanos, start, start_nanos, hex_ids[j:j + 32], hex_ids[j + 32:j + 48],
                                 types[family], la, lp, ra, rp, ra, rp, la, lp,
                                 process, server_name, tx, rx, (close - birth) / 1e6, failure))
            else:
                append(unknown % (end, end_nanos, start, start_nanos, hex_ids[j:j + 32], hex_ids[j + 32:j + 48],
                                  types[family], la, lp, ra, rp,
                                  process, unknown_name, tx, rx, (close - birth) / 1e6, failure))
            j += 48
        return "".join(lines).encode()
