"""The probe's events straight to framed OTLP LogRecords and Spans: the agent's OTLP hot path.

`SessionFrames.encode` writes, for each event (a closed session), the bytes of one ScopeLogs.log_records entry
and one ScopeSpans.spans entry (tag 0x12, length, message): what ProtoEncoder would serialize
for the SessionRecord RecordBuilder makes of its Session, byte for byte (tests/unit/test_otlp_frames.py),
without building the record. `WireEncoder.requests` then wraps a batch of them in a request.

Why not records: building a SessionRecord's attribute pairs and encoding them again costs about
twice as much as this. Here every attribute is one cached piece (constant keys and values,
addresses, the process, the error), or a key head plus the value's varint / double. The
attributes are encoded once and joined twice, once per signal: a KeyValue is the same message in
a LogRecord and a Span, only the field tag in front differs. Field layouts: otlp_wire.py.

The attribute order is RecordBuilder's (record.py): network.transport, network.type, local and
peer address and port, client and server address and port (client and server roles), process.pid,
process.executable.name, thread.name, tcplife.role, bytes sent and received, duration, error.type.
"""

from __future__ import annotations

import errno
import struct
from typing import Sequence

from .. import abi
from ..enrich import ProcessNames
from ..record import NETWORK_TYPE, ROLES, SEVERITY_INFO, TRANSPORT, body_text
from ..session import Formatted, address_caches, comm_text, port_cache
from .otlp_wire import (
    EVENT_NAME_FIELD, GROUPS, LOG_ATTRIBUTES, LOG_FIXED_SIZE, SPAN_ATTRIBUTES, VARINTS, delimited, double_head, fixed64,
    int64_varint, int_heads, log_record, pack_log_head, pack_log_tail, span_name_kind, span_status, string_piece,
    varint,
)

_pack_double = struct.Struct("<d").pack


_TRANSPORT = string_piece(*TRANSPORT)
_NETWORK_TYPES = {family: string_piece(*attribute) for family, attribute in NETWORK_TYPE.items()}
# role -> (span name + kind for the span head, tcplife.role piece, kind)
_ROLES = {role: (span_name_kind(name, kind), string_piece("tcplife.role", role_name), kind)
          for role, (name, kind, role_name) in ROLES.items()}
_KIND_SERVER = ROLES[abi.ROLE_SERVER][1]
# Heads of int attributes, indexed by the value's varint length.
_LOCAL_PORT, _PEER_PORT, _CLIENT_PORT, _SERVER_PORT, _SENT, _RECEIVED, _PID = (
    int_heads(key) for key in ("network.local.port", "network.peer.port", "client.port", "server.port",
                               "tcplife.bytes_sent", "tcplife.bytes_received", "process.pid"))
_DURATION = double_head("tcplife.duration_ms")
_ADDRESS_KEYS = ("network.local.address", "network.peer.address", "client.address", "server.address")


def _count(value: int) -> bytes:
    """A byte counter's varint (always >= 0 from the kernel; negative ones as int64 would be)."""
    if 0 <= value < 1 << 14:
        return VARINTS[value]
    return int64_varint(value)


class SessionFrames:
    def __init__(self, names: ProcessNames | None = None) -> None:
        self.names = names or ProcessNames()
        # raw address -> (local, peer, client, server pieces, text), per family
        self._ipv4, self._ipv6 = address_caches(self._address)
        self._ports = port_cache()  # for the log body
        self._processes = Formatted(self._process)  # (pid, raw comm) -> (pid, name, thread pieces), comm
        self._errors = Formatted(self._error)  # errno -> piece, error.type, span status

    @staticmethod
    def _address(address: str) -> tuple[bytes, bytes, bytes, bytes, str]:
        return (*(string_piece(key, address) for key in _ADDRESS_KEYS), address)

    def _process(self, key: tuple[int, bytes]) -> tuple[tuple[bytes, bytes, bytes], str]:
        pid, comm = key[0], comm_text(key[1])
        pid_value = int64_varint(pid)
        pieces = (_PID[len(pid_value)] + pid_value,
                  string_piece("process.executable.name", self.names.executable_name(pid, comm)),
                  string_piece("thread.name", comm))
        return pieces, comm

    @staticmethod
    def _error(error: int) -> tuple[bytes, str, bytes]:
        name = errno.errorcode.get(error, str(error))
        return string_piece("error.type", name), name, span_status(name)

    def encode(self, events: Sequence[tuple], ids: bytes, offset: int, observed: int,
               logs: bool = True, spans: bool = True) -> tuple[list[bytes], list[bytes]]:
        """(framed log records, framed spans) for events (abi.EVENT tuples), each list empty when not
        asked for.

        ids: 24 random bytes per event (trace id, span id); offset: monotonic -> Unix ns;
        observed: the log records' observed time, Unix ns (as RecordBuilder.build)."""
        ipv4, ipv6, ports, processes, errors = self._ipv4, self._ipv6, self._ports, self._processes, self._errors
        roles, unknown_role = _ROLES, _ROLES[abi.ROLE_UNKNOWN]
        types = _NETWORK_TYPES
        log_tag, span_tag = LOG_ATTRIBUTES, SPAN_ATTRIBUTES
        varints, groups = VARINTS, GROUPS
        CLIENT, SERVER = abi.ROLE_CLIENT, abi.ROLE_SERVER
        log_out: list[bytes] = []
        span_out: list[bytes] = []
        j = 0
        # One flat loop: a function call per session or attribute would cost as much as a field.
        for birth, close, tx, rx, saddr, daddr, pid, error, lp, rp, family, role, _, _, comm in events:
            trace_id, span_id = ids[j:j + 16], ids[j + 16:j + 24]
            j += 24
            start, end = birth + offset, close + offset
            addresses = ipv4 if family == 4 else ipv6
            local, peer = addresses[saddr], addresses[daddr]
            # Ports are < 2**16: varint() inlined, a call would cost more than the lookups.
            lv = varints[lp] if lp < 1 << 14 else groups[lp & 0x3FFF] + varints[lp >> 14]
            rv = varints[rp] if rp < 1 << 14 else groups[rp & 0x3FFF] + varints[rp >> 14]
            name_kind, role_piece, kind = roles.get(role) or unknown_role
            duration = (close - birth) / 1e6
            # Byte counters: a lookup when small, as _count() does (inlined: a call costs more).
            tx_value = varints[tx] if tx < 1 << 14 else _count(tx)
            rx_value = varints[rx] if rx < 1 << 14 else _count(rx)
            pieces = [b"", _TRANSPORT, types[family], local[0], _LOCAL_PORT[len(lv)] + lv,
                      peer[1], _PEER_PORT[len(rv)] + rv]
            if role == CLIENT:
                pieces += (local[2], _CLIENT_PORT[len(lv)] + lv, peer[3], _SERVER_PORT[len(rv)] + rv)
            elif role == SERVER:
                pieces += (peer[2], _CLIENT_PORT[len(rv)] + rv, local[3], _SERVER_PORT[len(lv)] + lv)
            process, name = processes[pid, comm]
            pieces += process
            pieces += (role_piece, _SENT[len(tx_value)] + tx_value, _RECEIVED[len(rx_value)] + rx_value,
                       _DURATION + _pack_double(duration))
            if error:
                error_piece, error_type, status = errors[error]
                pieces.append(error_piece)
            else:
                error_type, status = "", b""

            if logs:
                block = log_tag.join(pieces)
                if kind == _KIND_SERVER:
                    body = body_text(family, name, peer[4], ports[rp], local[4], ports[lp], tx, rx, duration)
                else:
                    body = body_text(family, name, local[4], ports[lp], peer[4], ports[rp], tx, rx, duration)
                if error_type:
                    body = f"{body} {error_type}"
                body = body.encode()
                n = len(body)
                if n < 126 and end > 0 and observed > 0:  # the fast path: one-byte body lengths
                    size = LOG_FIXED_SIZE + n + len(block)
                    log_out.append(b"".join((
                        b"\x12", varints[size] if size < 1 << 14 else varint(size),
                        pack_log_head(0x09, end, 0x10, SEVERITY_INFO, 0x2a, n + 2, 0x0a, n), body,
                        block,
                        pack_log_tail(0x4a, 16, trace_id, 0x52, 8, span_id, 0x59, observed),
                        EVENT_NAME_FIELD,
                    )))
                else:
                    log_out.append(delimited(b"\x12", log_record(end, observed, body, trace_id, span_id, block)))
            if spans:
                block = span_tag.join(pieces)
                field, pack_head, head_size = name_kind
                if start > 0 and end > 0:
                    size = head_size + len(block) + len(status)
                    span_out.append(b"".join((
                        b"\x12", varints[size] if size < 1 << 14 else varint(size),
                        pack_head(0x0a, 16, trace_id, 0x12, 8, span_id, field, 0x39, start, 0x41, end),
                        block,
                        status,
                    )))
                else:  # a zero time is left out (proto3)
                    span_out.append(delimited(b"\x12", b"".join((
                        b"\x0a\x10", trace_id, b"\x12\x08", span_id, field,
                        fixed64(b"\x39", start),
                        fixed64(b"\x41", end),
                        block,
                        status,
                    ))))
        return log_out, span_out
