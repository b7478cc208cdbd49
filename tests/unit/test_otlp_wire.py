"""WireEncoder writes byte for byte what ProtoEncoder's messages serialize to."""

from __future__ import annotations

import errno
import math
import sys
import threading

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.sdk.resources import Resource

from otel_tcplife import abi
from otel_tcplife.enrich import ProcessNames
from otel_tcplife.output import otlp_proto, otlp_wire
from otel_tcplife.output.otlp_proto import ProtoEncoder
from otel_tcplife.output.otlp_wire import WireEncoder, encode_attributes, varint
from otel_tcplife.record import RecordBuilder, SessionRecord
from otel_tcplife.resource import resource_proto, scope_proto
from otel_tcplife.session import Session

from ..support import FixedClock, sample_session

RESOURCE = resource_proto(Resource.create({"service.name": "otel-tcplife", "host.name": "h"}))
SCOPE = scope_proto()
SIGNALS = ("logs", "traces")



session = sample_session


def build(sessions) -> list[SessionRecord]:
    return RecordBuilder(clock=FixedClock(), names=ProcessNames(proc="/nonexistent")).build(list(sessions))


def varied(n: int) -> list[SessionRecord]:
    """Clients, servers, unknown roles, IPv4 and IPv6, failures, small and huge counters."""
    sessions = []
    for i in range(n):
        v6 = i % 3 == 0
        sessions.append(session(
            pid=1000 + i % 7, comm=("curl", "nginx", "ñandú-😀", "")[i % 4], family=6 if v6 else 4,
            laddr="fd00::5" if v6 else "10.0.0.5", lport=(i * 7919) % 65536,
            raddr=f"2606:2800:220:1:248:1893:25c8:{i % 50:x}" if v6 else f"93.184.216.{i % 256}",
            rport=(0, 443, 65535)[i % 3], tx_bytes=(0, 1, 127, 128, 16383, 16384, 2**32 + 5, 2**62)[i % 8],
            rx_bytes=i * 1_000_003, close_ns=5_000_000_000 + (i % 5) * 1_000_000 + i,
            role=(abi.ROLE_CLIENT, abi.ROLE_SERVER, abi.ROLE_UNKNOWN)[i % 3],
            error=(0, 0, errno.ECONNREFUSED, errno.ECONNRESET, 9999)[i % 5],
        ))
    return build(sessions)


def proto_bytes(proto: ProtoEncoder, signal: str, records) -> bytes:
    build_request = proto.logs_request if signal == "logs" else proto.traces_request
    return build_request(records).SerializeToString()


def wire_bytes(wire: WireEncoder, signal: str, records) -> bytes:
    return (wire.logs_request if signal == "logs" else wire.traces_request)(records)


def assert_same_bytes(records, resource=RESOURCE, scope=SCOPE) -> None:
    proto, wire = ProtoEncoder(resource, scope), WireEncoder(resource, scope)
    for signal in SIGNALS:
        assert wire_bytes(wire, signal, records) == proto_bytes(proto, signal, records), signal


# --- equality with ProtoEncoder ------------------------------------------------------------------

@pytest.mark.parametrize("signal", SIGNALS)
def test_builder_records_byte_equal_and_parse_back_equal(signal):
    records = varied(300)
    assert any(len(r.trace_id) == 16 for r in records)
    proto, wire = ProtoEncoder(RESOURCE, SCOPE), WireEncoder(RESOURCE, SCOPE)
    payload = wire_bytes(wire, signal, records)
    assert payload == proto_bytes(proto, signal, records)
    message = (proto.logs_request if signal == "logs" else proto.traces_request)(records)
    parse = ExportLogsServiceRequest if signal == "logs" else ExportTraceServiceRequest
    assert parse.FromString(payload) == message
    # and again, now with every cache warm
    assert wire_bytes(wire, signal, records) == payload


def test_long_bodies_and_empty_resource_and_scope():
    long = session(family=6, laddr="2606:2800:220:1:248:1893:25c8:1946", raddr="2606:2800:220:1:248:1893:25c8:1947",
                   comm="x" * 15, tx_bytes=2**50, rx_bytes=2**50, close_ns=10**18, error=errno.ECONNREFUSED)
    records = build([long, session()])
    assert_same_bytes(records)
    assert_same_bytes(records, resource_pb2.Resource(), common_pb2.InstrumentationScope())
    assert_same_bytes([], resource_pb2.Resource(), common_pb2.InstrumentationScope())
    assert_same_bytes([])


ADDRESSES = st.one_of(st.ip_addresses(v=4).map(lambda a: (4, str(a))), st.ip_addresses(v=6).map(lambda a: (6, str(a))))


@st.composite
def sessions(draw) -> Session:
    family, laddr = draw(ADDRESSES)
    raddr = draw(st.ip_addresses(v=family).map(str))
    birth = draw(st.integers(0, 2**62))
    return Session(
        pid=draw(st.integers(0, 2**22)), comm=draw(st.text(max_size=16)), family=family,
        laddr=laddr, lport=draw(st.integers(0, 65535)), raddr=raddr, rport=draw(st.integers(0, 65535)),
        tx_bytes=draw(st.integers(0, 2**63 - 1) | st.sampled_from([0, 2**32, 2**32 + 1])),
        rx_bytes=draw(st.integers(0, 2**63 - 1)), birth_ns=birth, close_ns=birth + draw(st.integers(0, 2**40)),
        role=draw(st.sampled_from([abi.ROLE_CLIENT, abi.ROLE_SERVER, abi.ROLE_UNKNOWN])),
        error=draw(st.sampled_from([0, errno.ECONNREFUSED, errno.ECONNRESET, errno.ETIMEDOUT, 4242])),
        oldstate=4, owner=abi.OWNER_CONNECT,
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(sessions(), max_size=8))
def test_generated_sessions_byte_equal(generated):
    assert_same_bytes(build(generated))


# Few keys, so that int, float, bool and str values of one key meet in the caches (1 == 1.0 == True
# as dict keys): a cached KeyValue must never be reused for a value of another type.
KEYS = st.sampled_from(["k", "network.peer.port", "tcplife.duration_ms", "", "ключ", "k" * 200]) | st.text()
VALUES = st.one_of(
    st.text(), st.sampled_from(["", "1", "tcp", "127.0.0.1"]),
    st.integers(-2**63, 2**63 - 1), st.integers(-2, 70000), st.sampled_from([0, 1, 2**32, 2**63 - 1, -2**63]),
    st.floats(), st.integers(-2, 3).map(float), st.sampled_from([-0.0, math.inf, -math.inf, math.nan]),
    st.booleans(), st.none(),
)
ATTRIBUTES = st.lists(st.tuples(KEYS, VALUES), max_size=20).map(tuple)
IDS = st.binary(min_size=16, max_size=16) | st.binary(max_size=20)
SPAN_IDS = st.binary(min_size=8, max_size=8) | st.binary(max_size=10)
TIMES = st.integers(0, 2**64 - 1) | st.just(0)


@st.composite
def records(draw) -> SessionRecord:
    return SessionRecord(
        session=draw(sessions()), trace_id=draw(IDS), span_id=draw(SPAN_IDS),
        start_ns=draw(TIMES), end_ns=draw(TIMES), observed_ns=draw(TIMES),
        name=draw(st.text() | st.sampled_from(["tcp connect", ""])),
        kind=draw(st.sampled_from([0, 1, 2, 3]) | st.integers(-2**31, 2**31 - 1)),
        error_type=draw(st.sampled_from(["", "ECONNRESET"]) | st.text()),
        attributes=draw(ATTRIBUTES),
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(records(), max_size=6))
def test_generated_records_byte_equal(generated):
    assert_same_bytes(generated)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ATTRIBUTES)
def test_attributes_encode_as_both_fields(attributes):
    log, span = LogRecord(), Span()
    otlp_proto._set_attributes(log.attributes, attributes)
    otlp_proto._set_attributes(span.attributes, attributes)
    pieces = encode_attributes(attributes)
    assert b"\x32".join(pieces) == log.SerializeToString()  # LogRecord.attributes = 6
    assert b"\x4a".join(pieces) == span.SerializeToString()  # Span.attributes = 9


def test_one_key_with_values_of_every_type_never_shares_a_cached_encoding():
    values = [1, 1.0, True, "1", 0, 0.0, -0.0, False, "0", 2**40, float(2**40), "", None, 1]
    for order in (values, values[::-1]):
        for value in order:
            log = LogRecord()
            otlp_proto._set_attributes(log.attributes, (("k", value),))
            assert b"\x32".join(encode_attributes((("k", value),))) == log.SerializeToString(), repr(value)


@pytest.mark.parametrize("changes", [
    {"attributes": (("k", 2**63),)}, {"attributes": (("k", -2**63 - 1),)}, {"kind": 2**31}, {"kind": -2**31 - 1},
])
def test_values_out_of_range_are_refused_like_protobuf_does(changes):
    (record,) = varied(1)
    record = record._replace(**changes)
    for signal in ("logs", "traces") if "attributes" in changes else ("traces",):
        with pytest.raises(ValueError):
            proto_bytes(ProtoEncoder(RESOURCE, SCOPE), signal, [record])
        with pytest.raises(ValueError):
            wire_bytes(WireEncoder(RESOURCE, SCOPE), signal, [record])


def reference_varint(n: int) -> bytes:
    out = []
    while True:
        out.append(n & 0x7F | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


@settings(max_examples=500)
@given(st.integers(0, 2**64 - 1) | st.sampled_from([2**k + d for k in (7, 14, 16, 21, 28, 35, 42, 49, 56, 63)
                                                     for d in (-1, 0, 1)] + [0, 2**64 - 1]))
def test_varint(n):
    assert varint(n) == reference_varint(n)


# --- requests under the size limit ---------------------------------------------------------------

@pytest.mark.parametrize("signal", SIGNALS)
@pytest.mark.parametrize("limit", [1500, 4096, 20_000])
def test_batches_are_split_greedily_under_the_limit(monkeypatch, signal, limit):
    monkeypatch.setattr(otlp_proto, "MAX_REQUEST_BYTES", limit)
    records = varied(120)
    proto, wire = ProtoEncoder(RESOURCE, SCOPE), WireEncoder(RESOURCE, SCOPE)
    requests = wire.encoder_for(signal)(records)
    assert len(requests) > 1
    assert sum(count for _, count in requests) == len(records)
    start = 0
    for i, (payload, count) in enumerate(requests):
        assert 0 < count and len(payload) <= limit
        chunk = records[start:start + count]
        assert payload == proto_bytes(proto, signal, chunk)  # byte equal, chunk by chunk
        if i < len(requests) - 1:  # greedy: one more record would not have fitted
            assert len(wire_bytes(wire, signal, records[start:start + count + 1])) > limit
        start += count


@pytest.mark.parametrize("signal", SIGNALS)
def test_a_record_too_big_alone_goes_alone(monkeypatch, signal):
    monkeypatch.setattr(otlp_proto, "MAX_REQUEST_BYTES", 100)
    records = varied(5)
    requests = WireEncoder(RESOURCE, SCOPE).encoder_for(signal)(records)
    assert [count for _, count in requests] == [1] * 5
    assert [p for p, _ in requests] == [proto_bytes(ProtoEncoder(RESOURCE, SCOPE), signal, [r]) for r in records]


@pytest.mark.parametrize("signal", SIGNALS)
def test_small_and_empty_batches_are_one_request(signal):
    proto, wire = ProtoEncoder(RESOURCE, SCOPE), WireEncoder(RESOURCE, SCOPE)
    encode = wire.encoder_for(signal)
    assert encode([]) == [(proto_bytes(proto, signal, []), 0)]
    records = varied(50)
    assert encode(records) == [(proto_bytes(proto, signal, records), 50)]


# --- attributes shared between the signals, and threads -------------------------------------------

def test_attributes_are_handed_from_one_signal_to_the_other():
    records = varied(40)
    proto, wire = ProtoEncoder(RESOURCE, SCOPE), WireEncoder(RESOURCE, SCOPE)
    logs = wire.encoder_for("logs")
    assert wire._shared is None  # one signal: nobody would take the entries
    traces = wire.encoder_for("traces")
    assert wire._shared == {}
    assert logs(records) == [(proto_bytes(proto, "logs", records), 40)]
    assert len(wire._shared) == len({id(r.attributes) for r in records})
    assert traces(records) == [(proto_bytes(proto, "traces", records), 40)]
    assert wire._shared == {}


@pytest.mark.parametrize("signal", SIGNALS)
def test_an_entry_for_another_tuple_is_never_used(signal):
    (record,) = varied(1)
    wire = WireEncoder(RESOURCE, SCOPE)
    wire.encoder_for("logs"), wire.encoder_for("traces")
    wire._shared[id(record.attributes)] = ((("k", "v"),), [b"", b"bogus"])  # as if the id were reused
    assert wire_bytes(wire, signal, [record]) == proto_bytes(ProtoEncoder(RESOURCE, SCOPE), signal, [record])


def test_concurrent_encoders_give_the_same_bytes():
    records = varied(1200)
    batches = [records[i:i + 150] for i in range(0, len(records), 150)]
    proto = ProtoEncoder(RESOURCE, SCOPE)
    expected = {s: [[(proto_bytes(proto, s, b), len(b))] for b in batches] for s in SIGNALS}
    for cache in (otlp_wire._str_pieces, otlp_wire._int_heads, otlp_wire._double_heads,
                  otlp_wire._name_kinds, otlp_wire._statuses):
        cache.clear()  # so that the threads also race on misses
    wire = WireEncoder(RESOURCE, SCOPE)
    encoders = {s: wire.encoder_for(s) for s in SIGNALS}
    workers = [s for s in SIGNALS for _ in range(3)]  # as exporters with max_in_flight=3
    results: dict[int, list] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(workers))

    def work(i: int, signal: str) -> None:
        try:
            barrier.wait()
            results[i] = [encoders[signal](b) for b in (batches if i % 2 else batches[::-1])]
        except BaseException as e:  # reported below
            errors.append(e)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        threads = [threading.Thread(target=work, args=(i, s)) for i, s in enumerate(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert not errors
    for i, signal in enumerate(workers):
        assert results[i] == (expected[signal] if i % 2 else expected[signal][::-1]), (i, signal)
