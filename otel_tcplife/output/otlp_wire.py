"""Session records as OTLP protobuf requests, written straight to the wire format.

Byte for byte what ProtoEncoder's requests serialize to (tests/unit/test_otlp_wire.py checks it),
three to four times faster (bench/encode.py): no message objects, every constant part
precomputed, repeated attribute values cached, and each record's attributes encoded once for
both signals. What remains is mostly one Python-level step per attribute, and log_body().

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
complement), 4 double_value fixed64 (0x21). As in ProtoEncoder, values that are not exactly
str, int or float (bool included) are written as str(value).

Attributes: a KeyValue is the same message in a LogRecord and in a Span; only the field tag in
front differs (6 vs 9). `encode_attributes` returns the KeyValues length-prefixed but untagged, so
one encoding serves both signals (`tag.join(pieces)`). WireEncoder hands each record's pieces
from the first signal's encoder (an exporter thread) to the second.

Thread safety: the caches are plain dicts used only through single operations, atomic under the
GIL (get, set, pop, clear). Two threads missing the same entry both compute the same bytes and
the last write wins, harmlessly. A full cache is cleared: cheaper than LRU bookkeeping.
"""

from __future__ import annotations

import struct
from typing import Callable, Sequence

from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from . import otlp_proto  # MAX_REQUEST_BYTES, read at call time (tests lower it)
from ..record import EVENT_NAME, SEVERITY_INFO, SessionRecord, log_body

# The loops below unpack records by position, faster than by name: refuse a changed layout.
if SessionRecord._fields != ("session", "trace_id", "span_id", "start_ns", "end_ns", "observed_ns",
                             "name", "kind", "error_type", "attributes"):
    raise ImportError(f"otlp_wire: unexpected SessionRecord fields {SessionRecord._fields}")

__all__ = ["WireEncoder", "encode_attributes", "varint"]

CACHE_LIMIT = 65536  # entries in each value cache
# Records encoded by one signal and not yet by the other (~0.8 KB each): 8 batches of lag at the
# default batch size. Past that the entries are dropped, and the lagging signal encodes the
# attributes itself.
SHARED_LIMIT = 16384

_UINT64 = (1 << 64) - 1
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_INT32_MIN, _INT32_MAX = -(1 << 31), (1 << 31) - 1

_pack_double = struct.Struct("<d").pack
_pack_fixed64 = struct.Struct("<Q").pack


def _remember(cache: dict, key, value) -> None:
    if len(cache) >= CACHE_LIMIT:
        cache.clear()
    cache[key] = value


# --- varints and generic fields ----------------------------------------------------------------

def _make_varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


# Larger values 14 bits at a time, from a table of 14-bit groups with both continuation bits set;
# below 2**16 (lengths, ports, most pids, small counters), from a table of whole varints (2 MB).
# Byte counts up to 4 TiB take two or three lookups, and no Python loop.
_GROUPS = tuple(bytes(((n & 0x7F) | 0x80, (n >> 7) | 0x80)) for n in range(1 << 14))
_VARINTS = tuple(_make_varint(n) for n in range(1 << 14))
_VARINTS += tuple(_GROUPS[n & 0x3FFF] + _VARINTS[n >> 14] for n in range(1 << 14, 1 << 16))


def varint(n: int) -> bytes:
    """An unsigned varint (0 <= n < 2**64)."""
    if n < 1 << 16:
        return _VARINTS[n]
    if n < 1 << 28:
        return _GROUPS[n & 0x3FFF] + _VARINTS[n >> 14]
    if n < 1 << 42:
        return _GROUPS[n & 0x3FFF] + _GROUPS[(n >> 14) & 0x3FFF] + _VARINTS[n >> 28]
    return _make_varint(n)


def _int64_varint(n: int) -> bytes:
    """An int64 field's varint: a negative number as its 64-bit two's complement."""
    if not _INT64_MIN <= n <= _INT64_MAX:
        raise ValueError(f"int value out of int64 range: {n}")
    return varint(n & _UINT64)


def _delimited(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: tag, length, payload."""
    return tag + varint(len(payload)) + payload


def _bytes_field(tag: bytes, value: bytes) -> bytes:
    return tag + varint(len(value)) + value if value else b""  # proto3 leaves out b"" and ""


def _fixed64(tag: bytes, value: int) -> bytes:
    return tag + _pack_fixed64(value) if value else b""  # proto3 leaves out 0


# --- attributes ---------------------------------------------------------------------------------

# (key, str value) -> length-prefixed KeyValue. Only exact-str pairs go in, so looking any pair up
# is safe: no number equals a str. (A cache of int or float pairs would not be: dict keys compare
# 1 == 1.0 == True, and a double must never get an int's encoding.) Ints and floats are built from
# per-key heads instead, a few operations: ephemeral ports, byte counts and durations hardly
# repeat, and a big int cache measured slower than building them.
_str_pieces: dict[tuple[str, str], bytes] = {}
# key -> everything of a length-prefixed KeyValue before the value's own bytes: len(KeyValue),
# key field, 0x12 len(AnyValue) (always < 128 here), AnyValue's tag (0x18 int, 0x21 double).
_int_heads: dict[str, tuple[bytes, ...]] = {}  # indexed by the value's varint length, 1..10
_double_heads: dict[str, bytes] = {}


def _key_field(key: str) -> bytes:
    return _bytes_field(b"\x0a", key.encode())


def _int_heads_for(key: str) -> tuple[bytes, ...]:
    k = _key_field(key)
    # KeyValue: k, 0x12, len(AnyValue) = 1 + n, 0x18, n varint bytes
    heads = tuple(varint(len(k) + 3 + n) + k + b"\x12" + varint(1 + n) + b"\x18" for n in range(11))
    _remember(_int_heads, key, heads)
    return heads


def _double_head(key: str) -> bytes:
    k = _key_field(key)
    head = varint(len(k) + 11) + k + b"\x12\x09\x21"  # 11 = 0x12 0x09 0x21 + 8 bytes
    _remember(_double_heads, key, head)
    return head


def _string_piece(pair: tuple[str, object]) -> bytes:
    """A str value (then cached) or, as in ProtoEncoder, any other type as str(value)."""
    key, value = pair
    exact = value.__class__ is str
    text = value if exact else str(value)
    kv = _key_field(key) + _delimited(b"\x12", _delimited(b"\x0a", text.encode()))
    piece = varint(len(kv)) + kv
    if exact:
        _remember(_str_pieces, pair, piece)
    return piece


def encode_attributes(attributes: Sequence[tuple[str, object]]) -> list[bytes]:
    """The attributes as length-prefixed KeyValues without their field tag, after a leading b"".

    The tag depends on the enclosing message (LogRecord.attributes = 6, Span.attributes = 9);
    thanks to the leading b"", `tag.join(pieces)` is the whole repeated field: tag kv1 tag kv2...,
    or b"" when there are no attributes. (A str subclass value equal to a cached str gets that
    str's encoding; ProtoEncoder writes str(value): the same text unless __str__ is overridden.)
    """
    str_get = _str_pieces.get
    int_heads = _int_heads.get
    pieces = [b""]
    append = pieces.append
    for pair in attributes:  # one flat loop: a function call per attribute would double its cost
        piece = str_get(pair)
        if piece is None:
            value = pair[1]
            cls = value.__class__
            if cls is int:
                heads = int_heads(pair[0]) or _int_heads_for(pair[0])
                if 0 <= value < 1 << 16:
                    v = _VARINTS[value]
                elif 0 < value < 1 << 28:
                    v = _GROUPS[value & 0x3FFF] + _VARINTS[value >> 14]
                else:
                    v = _int64_varint(value)
                piece = heads[len(v)] + v
            elif cls is float:
                piece = (_double_heads.get(pair[0]) or _double_head(pair[0])) + _pack_double(value)
            else:
                piece = _string_piece(pair)
        append(piece)
    return pieces


# --- record fields -------------------------------------------------------------------------------

_LOG_ATTRIBUTES = b"\x32"  # LogRecord.attributes = 6
_SPAN_ATTRIBUTES = b"\x4a"  # Span.attributes = 9
_EVENT_NAME = _bytes_field(b"\x62", EVENT_NAME.encode())  # LogRecord.event_name = 12
assert 0 < SEVERITY_INFO < 128  # one varint byte, in _log_head

# Fast paths, for the usual 16- and 8-byte ids, non-zero times and bodies under 126 bytes: the
# fixed fields in one struct call each. LogRecord: time_unix_nano (0x09), severity_number (0x10),
# body (0x2a, len) = AnyValue{string_value (0x0a, len)}, both lengths one byte; then after the
# body and the attributes: trace_id (0x4a, 16), span_id (0x52, 8), observed_time_unix_nano (0x59).
_LOG_HEAD = struct.Struct("<BQBBBBBB")
_LOG_TAIL = struct.Struct("<BB16sBB8sBQ")
_LOG_FIXED = _LOG_HEAD.size + _LOG_TAIL.size + len(_EVENT_NAME)  # besides body text and attributes
_log_head, _log_tail = _LOG_HEAD.pack, _LOG_TAIL.pack


def _log_record(end: int, observed: int, body: bytes, trace_id: bytes, span_id: bytes, attributes: bytes) -> bytes:
    """A LogRecord in the general case, field by field (WireEncoder._log_records has the fast path)."""
    return b"".join((
        _fixed64(b"\x09", end),
        b"\x10", varint(SEVERITY_INFO),
        _delimited(b"\x2a", _delimited(b"\x0a", body)),  # string_value, a oneof member: even if ""
        attributes,
        _bytes_field(b"\x4a", trace_id),
        _bytes_field(b"\x52", span_id),
        _fixed64(b"\x59", observed),
        _EVENT_NAME,
    ))


# Span name + kind, and Status by error_type: a handful of distinct values.
_name_kinds: dict[tuple[str, int], tuple[bytes, Callable[..., bytes], int]] = {}
_statuses: dict[str, bytes] = {}


def _name_kind(name: str, kind: int) -> tuple[bytes, Callable[..., bytes], int]:
    """Span.name (0x2a) and Span.kind (0x30); and for the fast path, a struct packing them between
    trace_id (0x0a, 16), span_id (0x12, 8) and start (0x39), end (0x41), with its size."""
    if not _INT32_MIN <= kind <= _INT32_MAX:
        raise ValueError(f"span kind out of int32 range: {kind}")
    field = _bytes_field(b"\x2a", name.encode()) + (b"\x30" + varint(kind & _UINT64) if kind else b"")
    head = struct.Struct(f"<BB16sBB8s{len(field)}sBQBQ")
    entry = (field, head.pack, head.size)
    _remember(_name_kinds, (name, kind), entry)
    return entry


def _status(error_type: str) -> bytes:
    """Span.status (0x7a): message (0x12), code ERROR (0x18 0x02)."""
    status = _delimited(b"\x12", error_type.encode()) + b"\x18" + varint(Status.STATUS_CODE_ERROR)
    field = _delimited(b"\x7a", status)
    _remember(_statuses, error_type, field)
    return field


class WireEncoder:
    """ProtoEncoder's interface, but logs_request and traces_request return serialized bytes."""

    def __init__(self, resource: resource_pb2.Resource, scope: common_pb2.InstrumentationScope) -> None:
        self.resource = resource
        self.scope = scope
        # ResourceLogs.resource = 1 and ScopeLogs.scope = 1 (the same in the span messages).
        self._resource_field = _delimited(b"\x0a", resource.SerializeToString())
        self._scope_field = _delimited(b"\x0a", scope.SerializeToString())
        # id(attributes) -> (attributes, pieces): left by the first signal to encode a record and
        # popped by the second, so it only holds records one signal has encoded and the other
        # not yet. The entry holds the tuple, so its id cannot be reused meanwhile. Switched on
        # once encoders exist for both signals: with one, nobody would take the entries.
        self._signals: set[str] = set()
        self._shared: dict[int, tuple[tuple, list[bytes]]] | None = None

    # Records -> framed records: ScopeLogs.log_records / ScopeSpans.spans = 2, tag 0x12. Both loops
    # are flat on purpose: a function call per record costs about as much as a field.

    def _log_records(self, records: Sequence[SessionRecord]) -> list[bytes]:
        shared = self._shared
        take = shared.pop if shared is not None else None
        tag = _LOG_ATTRIBUTES
        out = []
        append = out.append
        for r in records:
            _, trace_id, span_id, _, end, observed, _, _, _, attributes = r
            if take is None:
                block = tag.join(encode_attributes(attributes))
            else:
                key = id(attributes)
                entry = take(key, None)
                if entry is not None and entry[0] is attributes:
                    block = tag.join(entry[1])
                else:
                    pieces = encode_attributes(attributes)
                    if len(shared) >= SHARED_LIMIT:
                        shared.clear()
                    shared[key] = (attributes, pieces)
                    block = tag.join(pieces)
            body = log_body(r).encode()
            n = len(body)
            if n < 126 and end and observed and len(trace_id) == 16 and len(span_id) == 8:
                size = _LOG_FIXED + n + len(block)
                append(b"".join((
                    b"\x12", _VARINTS[size] if size < 1 << 16 else varint(size),
                    _log_head(0x09, end, 0x10, SEVERITY_INFO, 0x2a, n + 2, 0x0a, n), body,
                    block,
                    _log_tail(0x4a, 16, trace_id, 0x52, 8, span_id, 0x59, observed),
                    _EVENT_NAME,
                )))
            else:
                append(_delimited(b"\x12", _log_record(end, observed, body, trace_id, span_id, block)))
        return out

    def _spans(self, records: Sequence[SessionRecord]) -> list[bytes]:
        shared = self._shared
        take = shared.pop if shared is not None else None
        tag = _SPAN_ATTRIBUTES
        name_kinds = _name_kinds.get
        statuses = _statuses.get
        out = []
        append = out.append
        for _, trace_id, span_id, start, end, _, name, kind, error_type, attributes in records:
            if take is None:
                block = tag.join(encode_attributes(attributes))
            else:
                key = id(attributes)
                entry = take(key, None)
                if entry is not None and entry[0] is attributes:
                    block = tag.join(entry[1])
                else:
                    pieces = encode_attributes(attributes)
                    if len(shared) >= SHARED_LIMIT:
                        shared.clear()
                    shared[key] = (attributes, pieces)
                    block = tag.join(pieces)
            name_kind, pack_head, head_size = name_kinds((name, kind)) or _name_kind(name, kind)
            status = (statuses(error_type) or _status(error_type)) if error_type else b""
            if start and end and len(trace_id) == 16 and len(span_id) == 8:
                size = head_size + len(block) + len(status)
                append(b"".join((
                    b"\x12", _VARINTS[size] if size < 1 << 16 else varint(size),
                    pack_head(0x0a, 16, trace_id, 0x12, 8, span_id, name_kind, 0x39, start, 0x41, end),
                    block,
                    status,
                )))
            else:  # the general case, field by field
                append(_delimited(b"\x12", b"".join((
                    _bytes_field(b"\x0a", trace_id),
                    _bytes_field(b"\x12", span_id),
                    name_kind,
                    _fixed64(b"\x39", start),
                    _fixed64(b"\x41", end),
                    block,
                    status,
                ))))
        return out

    # -- the envelope --

    def _head(self, size: int) -> bytes:
        """The request up to its first record, for `size` bytes of framed records."""
        scope_list = len(self._scope_field) + size  # ScopeLogs / ScopeSpans
        resource_list = len(self._resource_field) + 1 + len(varint(scope_list)) + scope_list
        return (b"\x0a" + varint(resource_list) + self._resource_field
                + b"\x12" + varint(scope_list) + self._scope_field)

    def _request_size(self, size: int) -> int:
        return len(self._head(size)) + size

    def _request(self, framed: list[bytes], size: int | None = None) -> bytes:
        """One request: the head and the framed records, joined in one copy."""
        head = self._head(sum(map(len, framed)) if size is None else size)
        return b"".join([head, *framed])

    def logs_request(self, records: Sequence[SessionRecord]) -> bytes:
        """A serialized ExportLogsServiceRequest, whatever its size."""
        return self._request(self._log_records(records))

    def traces_request(self, records: Sequence[SessionRecord]) -> bytes:
        """A serialized ExportTraceServiceRequest, whatever its size."""
        return self._request(self._spans(records))

    def encoder_for(self, signal: str) -> Callable[[list[SessionRecord]], list[tuple[bytes, int]]]:
        """records -> serialized requests, each under MAX_REQUEST_BYTES, with its record count
        (see requests). Each record is encoded once, however the batch is split."""
        logs = signal == "logs"
        frame = self._log_records if logs else self._spans
        self._signals.add("logs" if logs else "traces")
        if len(self._signals) == 2 and self._shared is None:
            self._shared = {}

        def encode(records: list[SessionRecord]) -> list[tuple[bytes, int]]:
            return self.requests(frame(records))

        return encode

    def requests(self, framed: list[bytes]) -> list[tuple[bytes, int]]:
        """Framed records (of one signal) -> requests, each under MAX_REQUEST_BYTES, with their
        record counts. Packed greedily, in order; a record too big on its own goes alone, as in
        ProtoEncoder."""
        limit = otlp_proto.MAX_REQUEST_BYTES
        size = sum(map(len, framed))
        if self._request_size(size) <= limit:
            return [(self._request(framed, size), len(framed))]
        requests = []
        start, size = 0, 0
        for i, n in enumerate(map(len, framed)):
            if i > start and self._request_size(size + n) > limit:
                requests.append((self._request(framed[start:i]), i - start))
                start, size = i, 0
            size += n
        requests.append((self._request(framed[start:]), len(framed) - start))
        return requests
