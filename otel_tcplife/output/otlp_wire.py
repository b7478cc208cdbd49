"""The OTLP protobuf wire format, written by hand: primitives, and the request envelope.

otlp_frames.SessionFrames writes each session's LogRecord and Span with these primitives;
WireEncoder.requests wraps a batch of them in an ExportLogsServiceRequest or
ExportTraceServiceRequest. Byte for byte what ProtoEncoder (the readable reference, with the
generated message classes) serializes (tests/unit/test_otlp_frames.py), several times faster
(bench/encode.py): no message objects, every constant part precomputed.

Wire format reminders: a field is a tag varint `(number << 3) | wire_type`, then its payload.
Wire types used here: 0 varint, 1 fixed64 (8 bytes little-endian), 2 length-delimited (varint
length, then bytes). Repeated message fields are not packed: one tag + length per element.
proto3 leaves out scalar fields holding their default (0, "", b""); oneof members and message
fields that were set are always written. Fields go in field-number order, as upb writes them.

Envelope (the same bytes for both signals: same field numbers, same message shapes)::

    ExportLogsServiceRequest / ExportTraceServiceRequest
      1 resource_logs / resource_spans   ResourceLogs / ResourceSpans (exactly one)   tag 0x0a
          1 resource                     Resource, serialized once in __init__         tag 0x0a
                                         (always written: ProtoEncoder sets it with CopyFrom)
          2 scope_logs / scope_spans     ScopeLogs / ScopeSpans (exactly one)         tag 0x12
              1 scope                    InstrumentationScope, serialized once         tag 0x0a
              2 log_records / spans      one per record, in order                      tag 0x12

LogRecord (opentelemetry/proto/logs/v1/logs.proto)::

     1 time_unix_nano           fixed64   r.end_ns                       tag 0x09
     2 severity_number          enum      9 (INFO)                       0x10 0x09
     5 body                     AnyValue  {1 string_value: log_body(r)}  tag 0x2a
     6 attributes               KeyValue, repeated                       tag 0x32
     9 trace_id                 bytes     r.trace_id (16)                tag 0x4a
    10 span_id                  bytes     r.span_id (8)                  tag 0x52
    11 observed_time_unix_nano  fixed64   r.observed_ns                  tag 0x59
    12 event_name               string    "tcplife.session"              tag 0x62

Span (opentelemetry/proto/trace/v1/trace.proto)::

     1 trace_id                 bytes                                    tag 0x0a
     2 span_id                  bytes                                    tag 0x12
     5 name                     string                                   tag 0x2a
     6 kind                     enum (int32)                             tag 0x30
     7 start_time_unix_nano     fixed64   r.start_ns                     tag 0x39
     8 end_time_unix_nano       fixed64   r.end_ns                       tag 0x41
     9 attributes               KeyValue, repeated                       tag 0x4a
    15 status                   Status, only when r.error_type is set    tag 0x7a
           2 message  string  r.error_type                               tag 0x12
           3 code     enum    2 (STATUS_CODE_ERROR)                      0x18 0x02

KeyValue (common.proto): 1 key string (0x0a), 2 value AnyValue (0x12). AnyValue is a oneof:
1 string_value (0x0a), 3 int_value int64 varint (0x18; a negative number takes 10 bytes, two's
complement), 4 double_value fixed64 (0x21). A KeyValue is the same message in a LogRecord and in
a Span; only the field tag in front differs (6 vs 9).

Thread safety: the caches are plain dicts used only through single operations, atomic under the
GIL (get, set, clear). Two threads missing the same entry both compute the same bytes and the last
write wins, harmlessly. A full cache is cleared: cheaper than LRU bookkeeping.
"""

from __future__ import annotations

import struct
from typing import Callable

from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from ..contract import EVENT_NAME, SEVERITY_INFO

# Collectors commonly refuse messages over 4 MiB; keep a margin for framing.
MAX_REQUEST_BYTES = 4 * 1024 * 1024 - 64 * 1024

_UINT64 = (1 << 64) - 1
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_INT32_MIN, _INT32_MAX = -(1 << 31), (1 << 31) - 1

_pack_fixed64 = struct.Struct("<Q").pack


# --- varints and generic fields ----------------------------------------------------------------

def _make_varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


# Values below 2**14 (lengths, counters, ports below the ephemeral range) from a table of whole
# varints; larger ones 14 bits at a time, from a table of 14-bit groups with both continuation bits
# set. Byte counts up to 4 TiB take at most three lookups, and no Python loop. The tables hold
# 32,768 small bytes objects, ~2 MB resident: one of all 2**16 varints would spare ephemeral ports
# a concatenation, for ~3 MB more.
VARINTS = tuple(_make_varint(n) for n in range(1 << 14))
GROUPS = tuple(bytes(((n & 0x7F) | 0x80, (n >> 7) | 0x80)) for n in range(1 << 14))


def varint(n: int) -> bytes:
    """An unsigned varint (0 <= n < 2**64)."""
    if n < 1 << 14:
        return VARINTS[n]
    if n < 1 << 28:
        return GROUPS[n & 0x3FFF] + VARINTS[n >> 14]
    if n < 1 << 42:
        return GROUPS[n & 0x3FFF] + GROUPS[(n >> 14) & 0x3FFF] + VARINTS[n >> 28]
    return _make_varint(n)


def int64_varint(n: int) -> bytes:
    """An int64 field's varint: a negative number as its 64-bit two's complement."""
    if not _INT64_MIN <= n <= _INT64_MAX:
        raise ValueError(f"int value out of int64 range: {n}")
    return varint(n & _UINT64)


def delimited(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: tag, length, payload."""
    return tag + varint(len(payload)) + payload


def _bytes_field(tag: bytes, value: bytes) -> bytes:
    return tag + varint(len(value)) + value if value else b""  # proto3 leaves out b"" and ""


def fixed64(tag: bytes, value: int) -> bytes:
    return tag + _pack_fixed64(value) if value else b""  # proto3 leaves out 0


# --- attributes: length-prefixed KeyValues without their field tag --------------------------------

def _key_field(key: str) -> bytes:
    return _bytes_field(b"\x0a", key.encode())


def string_piece(key: str, value: str) -> bytes:
    """A KeyValue with a string value."""
    kv = _key_field(key) + delimited(b"\x12", delimited(b"\x0a", value.encode()))
    return varint(len(kv)) + kv


def bool_piece(key: str, value: bool) -> bytes:
    """A KeyValue with a bool value (0x10: AnyValue.bool_value, written even when false: a oneof member)."""
    kv = _key_field(key) + delimited(b"\x12", b"\x10" + (b"\x01" if value else b"\x00"))
    return varint(len(kv)) + kv


def int_heads(key: str) -> tuple[bytes, ...]:
    """Everything of an int KeyValue before the value's varint, indexed by the varint's length:
    len(KeyValue), key, 0x12 len(AnyValue) (< 128 here), 0x18 (AnyValue.int_value)."""
    k = _key_field(key)
    return tuple(varint(len(k) + 3 + n) + k + b"\x12" + varint(1 + n) + b"\x18" for n in range(11))


def double_head(key: str) -> bytes:
    """Everything of a double KeyValue before the value's 8 bytes (0x21: AnyValue.double_value)."""
    k = _key_field(key)
    return varint(len(k) + 11) + k + b"\x12\x09\x21"  # 11 = 0x12 0x09 0x21 + 8 bytes


# --- record fields -------------------------------------------------------------------------------

LOG_ATTRIBUTES = b"\x32"  # LogRecord.attributes = 6
SPAN_ATTRIBUTES = b"\x4a"  # Span.attributes = 9
EVENT_NAME_FIELD = _bytes_field(b"\x62", EVENT_NAME.encode())  # LogRecord.event_name = 12
assert 0 < SEVERITY_INFO < 128  # one varint byte, in pack_log_head

# Fast paths, for the usual 16- and 8-byte ids, non-zero times and bodies under 126 bytes: the
# fixed fields in one struct call each. LogRecord: time_unix_nano (0x09), severity_number (0x10),
# body (0x2a, len) = AnyValue{string_value (0x0a, len)}, both lengths one byte; then after the
# body and the attributes: trace_id (0x4a, 16), span_id (0x52, 8), observed_time_unix_nano (0x59).
_LOG_HEAD = struct.Struct("<BQBBBBBB")
_LOG_TAIL = struct.Struct("<BB16sBB8sBQ")
LOG_FIXED_SIZE = _LOG_HEAD.size + _LOG_TAIL.size + len(EVENT_NAME_FIELD)  # besides body text and attributes
pack_log_head, pack_log_tail = _LOG_HEAD.pack, _LOG_TAIL.pack


def log_record(end: int, observed: int, body: bytes, trace_id: bytes, span_id: bytes, attributes: bytes) -> bytes:
    """A LogRecord in the general case, field by field (SessionFrames has the fast path)."""
    return b"".join((
        fixed64(b"\x09", end),
        b"\x10", varint(SEVERITY_INFO),
        delimited(b"\x2a", delimited(b"\x0a", body)),  # string_value, a oneof member: even if ""
        attributes,
        _bytes_field(b"\x4a", trace_id),
        _bytes_field(b"\x52", span_id),
        fixed64(b"\x59", observed),
        EVENT_NAME_FIELD,
    ))


def span_name_kind(name: str, kind: int) -> tuple[bytes, Callable[..., bytes], int]:
    """Span.name (0x2a) and Span.kind (0x30); and for the fast path, a struct packing them between
    trace_id (0x0a, 16), span_id (0x12, 8) and start (0x39), end (0x41), with its size."""
    if not _INT32_MIN <= kind <= _INT32_MAX:
        raise ValueError(f"span kind out of int32 range: {kind}")
    field = _bytes_field(b"\x2a", name.encode()) + (b"\x30" + varint(kind & _UINT64) if kind else b"")
    head = struct.Struct(f"<BB16sBB8s{len(field)}sBQBQ")
    return field, head.pack, head.size


def span_status(error_type: str) -> bytes:
    """Span.status (0x7a): message (0x12), code ERROR (0x18 0x02)."""
    return delimited(b"\x7a", delimited(b"\x12", error_type.encode()) + b"\x18" + varint(Status.STATUS_CODE_ERROR))


def resource_field(resource: resource_pb2.Resource) -> bytes:
    """ResourceLogs.resource / ResourceSpans.resource (field 1), serialized: what grouped_requests
    groups records by (the same bytes object for every record of a Resource: runs of it merge)."""
    return delimited(b"\x0a", resource.SerializeToString())


class WireEncoder:
    """Framed records -> serialized requests, for either signal (the envelopes are the same bytes).

    A request is a sequence of ResourceLogs / ResourceSpans fields, one per Resource: `requests`
    puts every record under the encoder's own Resource, `grouped_requests` under each record's (given
    as runs of records, as QueuedExporter's queue keeps them)."""

    def __init__(self, resource: resource_pb2.Resource, scope: common_pb2.InstrumentationScope) -> None:
        # ResourceLogs.resource = 1 and ScopeLogs.scope = 1 (the same in the span messages).
        self._resource_field = resource_field(resource)
        self._scope_field = delimited(b"\x0a", scope.SerializeToString())

    def _head(self, size: int, resource: bytes | None = None) -> bytes:
        """A ResourceLogs field up to its first record, for `size` bytes of framed records."""
        resource = self._resource_field if resource is None else resource
        scope_list = len(self._scope_field) + size  # ScopeLogs / ScopeSpans
        resource_list = len(resource) + 1 + len(varint(scope_list)) + scope_list
        return (b"\x0a" + varint(resource_list) + resource
                + b"\x12" + varint(scope_list) + self._scope_field)

    def _pieces(self, framed: list[bytes], resource: bytes | None = None) -> list[tuple[bytes, list[bytes], int]]:
        """Framed records of one Resource -> ResourceLogs fields, each under MAX_REQUEST_BYTES as a
        request: (its head, its records, its size in bytes). Packed greedily, in order; a record too big
        on its own goes alone, as in ProtoEncoder. Not joined here: a request is joined once, whole."""
        limit = MAX_REQUEST_BYTES  # a global, read at call time: tests lower it
        sizes = list(map(len, framed))
        size = sum(sizes)
        head = self._head(size, resource)
        if len(head) + size <= limit:
            return [(head, framed, len(head) + size)]
        pieces = []
        start, size = 0, 0
        for i, n in enumerate(sizes):
            if i > start and len(self._head(size + n, resource)) + size + n > limit:
                head = self._head(size, resource)
                pieces.append((head, framed[start:i], len(head) + size))
                start, size = i, 0
            size += n
        head = self._head(size, resource)
        pieces.append((head, framed[start:], len(head) + size))
        return pieces

    def requests(self, framed: list[bytes]) -> list[tuple[bytes, int]]:
        """Framed records (of one signal), all of the encoder's Resource -> requests, each under
        MAX_REQUEST_BYTES, with their record counts."""
        return [(b"".join([head, *records]), len(records)) for head, records, _ in self._pieces(framed)]

    def grouped_requests(self, framed: list[bytes], runs: list[tuple[bytes | None, int]]) -> list[tuple[bytes, int]]:
        """Framed records and their runs of Resources ((resource_field(...), count) pairs in order, counts
        summing to len(framed); None: the encoder's own) -> requests, each under MAX_REQUEST_BYTES, with
        their record counts: one ResourceLogs per distinct Resource in a request, in order of first
        appearance, the records of each in their order. The work is per run, not per record."""
        groups: dict[bytes | None, list[bytes]] = {}
        start = 0
        for resource, count in runs:
            end = start + count
            group = groups.get(resource)
            if group is None:
                groups[resource] = framed[start:end]
            else:
                group += framed[start:end]
            start = end
        requests: list[tuple[bytes, int]] = []
        parts: list[bytes] = []  # the next request's, joined once (a copy of every byte costs)
        size = count = 0
        for resource, records in groups.items():
            for head, piece, piece_size in self._pieces(records, resource):
                if parts and size + piece_size > MAX_REQUEST_BYTES:
                    requests.append((b"".join(parts), count))
                    parts, size, count = [], 0, 0
                parts.append(head)
                parts += piece
                size += piece_size
                count += len(piece)
        if parts:
            requests.append((b"".join(parts), count))
        return requests
