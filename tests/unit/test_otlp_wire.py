"""The wire primitives and the request envelope (WireEncoder.requests) against ProtoEncoder.

What SessionFrames writes per session is checked in test_otlp_frames.py."""

from __future__ import annotations

import errno
import os

import pytest
from hypothesis import given, settings, strategies as st
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.sdk.resources import Resource

from otel_tcplife import abi
from otel_tcplife.enrich import ProcessNames
from otel_tcplife.output import otlp_wire
from otel_tcplife.output.otlp_frames import SessionFrames
from otel_tcplife.output.otlp_proto import ProtoEncoder
from otel_tcplife.output.otlp_wire import WireEncoder, varint
from otel_tcplife.record import RecordBuilder, SessionRecord
from otel_tcplife.resource import resource_proto, scope_proto

from otel_tcplife.session import Decoder, Session, as_events

from ..support import FixedClock, sample_session

RESOURCE = resource_proto(Resource.create({"service.name": "otel-tcplife", "host.name": "h"}))
SCOPE = scope_proto()
SIGNALS = ("logs", "traces")
OBSERVED = 1_800_000_000_123_456_789

session = sample_session


def varied_sessions(n: int) -> list[Session]:
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
            srtt_us=(0, 1, 37, 16384, 2**32 - 1)[i % 5], rtt_min_us=(0, 1, 25, 9999)[i % 4],
            retransmits=(0, 0, 1, 127, 128, 2**32 - 1)[i % 6], closed_by=i % 4, reset=(i // 3) % 4,
            oldstate=(1, 4, 5, 8, 9, 11, 200)[i % 7],
            # every other server a child span, as when the probe derived the ids from the ISNs
            span_ids=os.urandom(24) + (os.urandom(8) if i % 6 == 1 else abi.NO_PARENT),
            flags=abi.EVENT_START_UNKNOWN if i % 4 == 3 else 0,  # open before the agent started
        ))
    return sessions


def records_and_frames(sessions: list[Session]) -> tuple[list[SessionRecord], dict[str, list[bytes]]]:
    """The same sessions as RecordBuilder records (for ProtoEncoder) and as SessionFrames frames."""
    events = as_events(sessions)
    names = ProcessNames(proc="/nonexistent")
    records = RecordBuilder(clock=FixedClock(), names=names).build(
        Decoder().decode(events), FixedClock.offset_ns, OBSERVED)
    logs, spans = SessionFrames(names).encode(events, FixedClock.offset_ns, OBSERVED)
    return records, {"logs": logs, "traces": spans}


def proto_bytes(proto: ProtoEncoder, signal: str, records) -> bytes:
    build_request = proto.logs_request if signal == "logs" else proto.traces_request
    return build_request(records).SerializeToString()


@pytest.mark.parametrize("signal", SIGNALS)
def test_resource_and_scope_of_any_size(signal):
    records, frames = records_and_frames(varied_sessions(3))
    for resource, scope in ((RESOURCE, SCOPE), (resource_pb2.Resource(), common_pb2.InstrumentationScope())):
        wire, proto = WireEncoder(resource, scope), ProtoEncoder(resource, scope)
        assert wire.requests(frames[signal]) == [(proto_bytes(proto, signal, records), 3)]
        assert wire.requests([]) == [(proto_bytes(proto, signal, []), 0)]


@pytest.mark.parametrize("changes", [{"tx_bytes": 2**63}, {"rx_bytes": 2**64 - 1}])
def test_values_out_of_range_are_refused_like_protobuf_does(changes):
    """Byte counters are u64 in the event, int64 in OTLP."""
    bad = [session(**changes)]
    with pytest.raises(ValueError):
        proto_bytes(ProtoEncoder(RESOURCE, SCOPE), "logs", RecordBuilder(clock=FixedClock()).build(bad))
    with pytest.raises(ValueError):
        SessionFrames().encode(as_events(bad), 0, OBSERVED)


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
    monkeypatch.setattr(otlp_wire, "MAX_REQUEST_BYTES", limit)
    records, frames = records_and_frames(varied_sessions(120))
    proto, wire = ProtoEncoder(RESOURCE, SCOPE), WireEncoder(RESOURCE, SCOPE)
    requests = wire.requests(frames[signal])
    assert len(requests) > 1
    assert sum(count for _, count in requests) == len(records)
    start = 0
    for i, (payload, count) in enumerate(requests):
        assert 0 < count and len(payload) <= limit
        chunk = records[start:start + count]
        assert payload == proto_bytes(proto, signal, chunk)  # byte equal, chunk by chunk
        if i < len(requests) - 1:  # greedy: one more record would not have fitted
            assert len(proto_bytes(proto, signal, records[start:start + count + 1])) > limit
        start += count


@pytest.mark.parametrize("signal", SIGNALS)
def test_a_record_too_big_alone_goes_alone(monkeypatch, signal):
    monkeypatch.setattr(otlp_wire, "MAX_REQUEST_BYTES", 100)
    records, frames = records_and_frames(varied_sessions(5))
    requests = WireEncoder(RESOURCE, SCOPE).requests(frames[signal])
    assert [count for _, count in requests] == [1] * 5
    assert [p for p, _ in requests] == [proto_bytes(ProtoEncoder(RESOURCE, SCOPE), signal, [r]) for r in records]


@pytest.mark.parametrize("signal", SIGNALS)
def test_small_and_empty_batches_are_one_request(signal):
    proto, wire = ProtoEncoder(RESOURCE, SCOPE), WireEncoder(RESOURCE, SCOPE)
    assert wire.requests([]) == [(proto_bytes(proto, signal, []), 0)]
    records, frames = records_and_frames(varied_sessions(50))
    assert wire.requests(frames[signal]) == [(proto_bytes(proto, signal, records), 50)]


# --- grouped requests: each record under its own Resource, given as runs -------------------------

OTHER = resource_proto(Resource.create({"service.name": "checkout", "process.pid": 42}))


def grouped(frames: list[bytes], runs) -> list[tuple[bytes, int]]:
    return WireEncoder(RESOURCE, SCOPE).grouped_requests(frames, runs)


@pytest.mark.parametrize("signal", SIGNALS)
def test_grouped_requests_one_resource_field_per_resource_in_order_of_first_appearance(signal):
    records, frames = records_and_frames(varied_sessions(20))
    field = otlp_wire.resource_field(OTHER)
    runs = [(field, 3), (None, 5), (field, 4), (None, 1), (field, 7)]  # None: the encoder's own Resource
    at = [0, 3, 8, 12, 13, 20]
    mine = [r for i, (tag, _) in enumerate(runs) if tag is None for r in records[at[i]:at[i + 1]]]
    other = [r for i, (tag, _) in enumerate(runs) if tag is field for r in records[at[i]:at[i + 1]]]
    expected = proto_bytes(ProtoEncoder(OTHER, SCOPE), signal, other) + proto_bytes(
        ProtoEncoder(RESOURCE, SCOPE), signal, mine)  # a request is its ResourceLogs fields, one after another
    assert grouped(frames[signal], runs) == [(expected, 20)]
    # a Resource's runs merge whichever bytes object holds it
    assert grouped(frames[signal], [(bytes(field), 3), *runs[1:]]) == [(expected, 20)]
    assert grouped(frames[signal], [(None, 20)]) == WireEncoder(RESOURCE, SCOPE).requests(frames[signal])


@pytest.mark.parametrize("signal", SIGNALS)
@pytest.mark.parametrize("limit", [1500, 4096])
def test_grouped_requests_are_split_under_the_limit(monkeypatch, signal, limit):
    monkeypatch.setattr(otlp_wire, "MAX_REQUEST_BYTES", limit)
    records, frames = records_and_frames(varied_sessions(120))
    field = otlp_wire.resource_field(OTHER)
    runs = [(field if i % 2 else None, 10) for i in range(12)]
    requests = grouped(frames[signal], runs)
    assert len(requests) > 1
    assert all(0 < count and len(payload) <= limit for payload, count in requests)
    assert sum(count for _, count in requests) == 120
    # every record once, under its own Resource
    message = (logs_service_pb2.ExportLogsServiceRequest if signal == "logs"
               else trace_service_pb2.ExportTraceServiceRequest)
    seen = {}
    for payload, count in requests:
        request = message.FromString(payload)
        groups = request.resource_logs if signal == "logs" else request.resource_spans
        assert count == sum(len(g.scope_logs[0].log_records if signal == "logs" else g.scope_spans[0].spans)
                            for g in groups)
        for g in groups:
            items = g.scope_logs[0].log_records if signal == "logs" else g.scope_spans[0].spans
            for item in items:
                seen[item.span_id] = g.resource
    expected_resource = {r.span_id: OTHER if (i // 10) % 2 else RESOURCE for i, r in enumerate(records)}
    assert seen == expected_resource
