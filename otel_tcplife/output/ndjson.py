"""Flat NDJSON: one object per session per line, for jq, Fluent Bit and journald.

Keys, in this order: time, start_time (RFC 3339, ns, UTC), otel.event.name,
trace_id, span_id (hex), then every attribute of the record contract as a
flat dotted key (record.RecordBuilder defines them; tests check both agree).

This is the hot path of the default output, so lines are built by per-role
f-strings straight from the probe's event tuples (abi.EVENT field order): no
Session, no dict, no attribute tuples. Addresses, ports and the process come
from caches of their text; only the process names can need JSON escaping, and
they are escaped once per (pid, comm).
"""

from __future__ import annotations

import errno
import time
from typing import Iterator, Sequence

import orjson

from .. import abi
from ..enrich import ProcessNames
from ..record import EVENT_NAME, NETWORK_TYPE, ROLES
from ..session import Formatted, address_caches, comm_text, port_cache

# Lines per chunk of output: ~100 KB, under the size malloc serves from fresh mmap-ed pages
# (cli.tune_malloc), whose page faults cost more than the extra write calls.
CHUNK_LINES = 128

ROLE_NAMES = {role: name for role, (_, _, name) in ROLES.items()}  # tcplife.role values
NETWORK_TYPES = {family: name for family, (_, name) in NETWORK_TYPE.items()}


class Rfc3339:
    """Unix ns -> '2026-11-26T08:15:42.123456789Z', the seconds part cached.

    Works on the decimal digits of the time: the last nine are the nanoseconds, already
    zero-padded, and the rest (the second) is the cache key. Cheaper than divmod and
    '%09d' on the hot path; right for any time after 1970-01-01T00:00:01Z."""

    def __init__(self) -> None:
        self.seconds: dict[str, str] = {}  # "1764144942" -> "2026-11-26T08:15:42"

    def second(self, digits: str) -> str:
        text = self.seconds.get(digits)
        if text is None:
            if len(self.seconds) >= 16:  # a batch spans a few seconds at most
                self.seconds.clear()
            text = self.seconds[digits] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(int(digits)))
        return text

    def __call__(self, unix_ns: int) -> str:
        digits = str(unix_ns)
        return f"{self.second(digits[:-9])}.{digits[-9:]}Z"


class NdjsonEncoder:
    def __init__(self, names: ProcessNames | None = None) -> None:
        self.names = names or ProcessNames()
        self.rfc3339 = Rfc3339()
        self._ipv4, self._ipv6 = address_caches()
        self._ports = port_cache()
        self._processes = Formatted(self._process_json)  # (pid, raw comm) -> JSON
        self._errors = Formatted(lambda error: f',"error.type":"{errno.errorcode.get(error, str(error))}"')

    def _process_json(self, key: tuple[int, bytes]) -> str:
        pid, comm = key[0], comm_text(key[1])
        name = orjson.dumps(self.names.executable_name(pid, comm)).decode()
        return f',"process.pid":{pid},"process.executable.name":{name},"thread.name":{orjson.dumps(comm).decode()}'

    def encode(self, events: Sequence[tuple], ids: bytes, offset: int) -> Iterator[bytes]:
        """Lines for events (abi.EVENT tuples), made and yielded CHUNK_LINES at a time (only one chunk
        is in memory); ids holds 24 random bytes per event (trace id, span id), offset turns their
        monotonic times into Unix ns (as RecordBuilder.build)."""
        return (self._encode_chunk(events[i:i + CHUNK_LINES], ids[24 * i:24 * (i + CHUNK_LINES)], offset)
                for i in range(0, len(events), CHUNK_LINES))

    def _encode_chunk(self, events: Sequence[tuple], ids: bytes, offset: int) -> bytes:
        """One flat loop, no call or tuple per session that can be avoided: this is most of the
        agent's CPU in NDJSON mode. f-strings, not %-templates: PyUnicode_Format parses the
        template for every line, and took a fifth more time per session."""
        hex_ids = ids.hex()
        seconds, second = self.rfc3339.seconds, self.rfc3339.second
        ipv4, ipv6, ports, processes, errors = self._ipv4, self._ipv6, self._ports, self._processes, self._errors
        types = NETWORK_TYPES
        event = EVENT_NAME
        CLIENT, SERVER = abi.ROLE_CLIENT, abi.ROLE_SERVER
        client_name, server_name, unknown_name = (
            ROLE_NAMES[r] for r in (abi.ROLE_CLIENT, abi.ROLE_SERVER, abi.ROLE_UNKNOWN))
        lines = []
        append = lines.append
        j = 0
        for birth, close, tx, rx, saddr, daddr, pid, error, sport, dport, family, role, _, _, comm in events:
            addresses = ipv4 if family == 4 else ipv6
            la, ra, lp, rp = addresses[saddr], addresses[daddr], ports[sport], ports[dport]
            end = str(close + offset)  # Rfc3339, inlined
            start = str(birth + offset)
            head = (f'{{"time":"{seconds.get(end[:-9]) or second(end[:-9])}.{end[-9:]}Z",'
                    f'"start_time":"{seconds.get(start[:-9]) or second(start[:-9])}.{start[-9:]}Z",'
                    f'"otel.event.name":"{event}","trace_id":"{hex_ids[j:j + 32]}","span_id":"{hex_ids[j + 32:j + 48]}",'
                    f'"network.transport":"tcp","network.type":"{types[family]}",'
                    f'"network.local.address":"{la}","network.local.port":{lp},'
                    f'"network.peer.address":"{ra}","network.peer.port":{rp}')
            process = processes[pid, comm]
            failure = errors[error] if error else ""
            # The three branches differ only in the client/server attributes.
            if role == CLIENT:
                append(f'{head},"client.address":"{la}","client.port":{lp},"server.address":"{ra}","server.port":{rp}'
                       f'{process},"tcplife.role":"{client_name}","tcplife.bytes_sent":{tx},'
                       f'"tcplife.bytes_received":{rx},"tcplife.duration_ms":{(close - birth) / 1e6!r}{failure}}}\n')
            elif role == SERVER:
                append(f'{head},"client.address":"{ra}","client.port":{rp},"server.address":"{la}","server.port":{lp}'
                       f'{process},"tcplife.role":"{server_name}","tcplife.bytes_sent":{tx},'
                       f'"tcplife.bytes_received":{rx},"tcplife.duration_ms":{(close - birth) / 1e6!r}{failure}}}\n')
            else:
                append(f'{head}{process},"tcplife.role":"{unknown_name}","tcplife.bytes_sent":{tx},'
                       f'"tcplife.bytes_received":{rx},"tcplife.duration_ms":{(close - birth) / 1e6!r}{failure}}}\n')
            j += 48
        return "".join(lines).encode()
