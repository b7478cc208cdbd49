"""The record contract in every encoding: NDJSON, OTLP/JSON and OTLP protobuf agree."""

from __future__ import annotations

import errno
import json

import orjson
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings, strategies as st
from opentelemetry.proto.logs.v1.logs_pb2 import LogsData
from opentelemetry.proto.trace.v1.trace_pb2 import TracesData
from opentelemetry.sdk.resources import Resource

from otel_tcplife import abi, contract
from otel_tcplife.caches import Formatted
from otel_tcplife.enrich import ProcessNames
from otel_tcplife.output.ndjson import CHUNK_LINES, NdjsonEncoder, Rfc3339
from otel_tcplife.output.otlp_json import CHUNK_RECORDS, OtlpJsonEncoder
from otel_tcplife.output.otlp_proto import ProtoEncoder
from otel_tcplife.record import RecordBuilder, format_bytes, log_body
from otel_tcplife.resource import resource_json, resource_proto, scope_json, scope_proto
from otel_tcplife.session import Decoder, as_events

from ..support import FixedClock, hex_ids_to_base64, sample_session
from .test_otlp_frames import sessions as generated_sessions



session = sample_session


OBSERVED = 1_800_000_000_000_000_000


def build_both(*sessions):
    """Records and NDJSON lines for the same sessions, sharing ids and clock as the pipeline does."""
    records, rows, _ = build_all(*sessions)
    return records, rows


def build_all(*sessions, resource=None):
    """Records (of the sessions as decoded from their events), NDJSON rows and OTLP/JSON lines
    ({signal: line}) for the same events, sharing ids, clock and observed time as the pipeline does."""
    events = as_events(sessions)
    names = ProcessNames(proc="/nonexistent")
    records = RecordBuilder(clock=FixedClock(), names=names).build(
        Decoder().decode(events), FixedClock.offset_ns, OBSERVED)
    lines = b"".join(NdjsonEncoder(names).encode(events, FixedClock.offset_ns)).splitlines()
    resource = resource or Resource.create({})
    otlp_json = {signal: b"".join(OtlpJsonEncoder(resource_json(resource), scope_json(), signal, names).encode(
        events, FixedClock.offset_ns, OBSERVED)) for signal in ("logs", "traces")}
    return records, [json.loads(line) for line in lines], otlp_json


def build(*sessions, extended: bool = True):
    """Records of the sessions; extended: with the wire facts, as -x writes them."""
    return RecordBuilder(clock=FixedClock(), names=ProcessNames(proc="/nonexistent"),
                         attributes=contract.attributes(extended=extended)).build(list(sessions))


def test_the_wire_facts_are_only_in_extended_records():
    attributes = dict(build(session(srtt_us=12_345, retransmits=2), extended=False)[0].attributes)
    assert not [key for key in attributes if key.startswith("tcplife.") and key not in (
        "tcplife.role", "tcplife.bytes_sent", "tcplife.bytes_received", "tcplife.duration_ms")]


def test_client_record_follows_the_contract():
    (r,) = build(session(srtt_us=12_345, rtt_min_us=9_870, retransmits=2, closed_by=abi.CLOSED_BY_LOCAL, oldstate=5))
    attributes = dict(r.attributes)
    assert (r.name, r.kind) == ("tcp connect", 3)
    assert r.start_ns == FixedClock.offset_ns + 5_000_000_000
    assert r.end_ns == FixedClock.offset_ns + 5_091_790_000
    assert len(r.trace_id) == 16 and len(r.span_id) == 8
    assert log_body(r) == "curl 10.0.0.5:51234 -> 93.184.216.34:443 tx=1.2KiB rx=48.0KiB 91.79ms"
    assert attributes == {
        "network.transport": "tcp", "network.type": "ipv4",
        "network.local.address": "10.0.0.5", "network.local.port": 51234,
        "network.peer.address": "93.184.216.34", "network.peer.port": 443,
        "client.address": "10.0.0.5", "client.port": 51234,
        "server.address": "93.184.216.34", "server.port": 443,
        "process.pid": 4242, "process.executable.name": "curl", "thread.name": "curl",
        "tcplife.role": "client", "tcplife.bytes_sent": 1229, "tcplife.bytes_received": 49152,
        "tcplife.duration_ms": 91.79, "tcplife.rtt_ms": 12.345, "tcplife.rtt_min_ms": 9.87,
        "tcplife.retransmits": 2, "tcplife.closed_by": "local", "tcplife.close_state": "FIN_WAIT2",
    }
    assert "network.io.direction" not in attributes


def test_wire_facts_are_left_out_when_the_kernel_had_none():
    """No RTT sample (a connect that failed), no FIN or reset (a timeout): those attributes are absent;
    retransmits and the state before CLOSE are always there."""
    (r,) = build(session(error=errno.ETIMEDOUT, oldstate=2, retransmits=1))
    attributes = dict(r.attributes)
    assert [k for k in attributes if k.startswith("tcplife.") and k not in (
        "tcplife.role", "tcplife.bytes_sent", "tcplife.bytes_received", "tcplife.duration_ms")] == [
        "tcplife.retransmits", "tcplife.close_state"]
    assert (attributes["tcplife.retransmits"], attributes["tcplife.close_state"]) == (1, "SYN_SENT")


def test_reset_and_who_closed_read_as_words():
    records = build(session(closed_by=abi.CLOSED_BY_PEER, reset=abi.RESET_RECEIVED, oldstate=1, srtt_us=1),
                    session(closed_by=abi.CLOSED_BY_LOCAL, reset=abi.RESET_SENT, oldstate=8),
                    session(closed_by=7, reset=9, oldstate=99))
    assert [(a["tcplife.closed_by"], a["tcplife.reset"], a["tcplife.close_state"]) for a in map(dict, (
        r.attributes for r in records))] == [("peer", "received", "ESTABLISHED"), ("local", "sent", "CLOSE_WAIT"),
                                             ("7", "9", "99")]
    assert dict(records[0].attributes)["tcplife.rtt_ms"] == 0.001


def test_server_record_swaps_client_and_server():
    (r,) = build(session(role=abi.ROLE_SERVER, family=6, laddr="::1", raddr="::2"))
    attributes = dict(r.attributes)
    assert (r.name, r.kind, attributes["tcplife.role"]) == ("tcp accept", 2, "server")
    assert (attributes["client.address"], attributes["server.address"]) == ("::2", "::1")
    assert attributes["network.type"] == "ipv6"
    assert log_body(r).startswith("curl [::2]:443 -> [::1]:51234 ")


def test_failed_connect_carries_error_type():
    (r,) = build(session(error=errno.ECONNREFUSED, tx_bytes=0, rx_bytes=0))
    assert r.error_type == "ECONNREFUSED"
    assert dict(r.attributes)["error.type"] == "ECONNREFUSED"


def test_every_session_gets_its_own_ids():
    records = build(*[session() for _ in range(100)])
    assert len({r.trace_id for r in records}) == 100 and len({r.span_id for r in records}) == 100


def test_format_bytes():
    assert [format_bytes(n) for n in (0, 1023, 1024, 1536, 5 * 1024 * 1024)] == \
        ["0B", "1023B", "1.0KiB", "1.5KiB", "5.0MiB"]


def test_rfc3339_has_nanoseconds_in_utc():
    assert Rfc3339()(1_700_000_000_123_456_789) == "2023-11-14T22:13:20.123456789Z"




def test_ndjson_otlp_json_and_protobuf_agree():
    resource = Resource.create({"service.name": "otel-tcplife", "host.name": "h"})
    records, rows, otlp_json = build_all(
        session(srtt_us=1500, rtt_min_us=900, retransmits=300, closed_by=abi.CLOSED_BY_LOCAL),
        session(role=abi.ROLE_SERVER, error=errno.ECONNRESET, reset=abi.RESET_RECEIVED, closed_by=abi.CLOSED_BY_PEER),
        session(role=abi.ROLE_UNKNOWN, family=6, laddr="::1", raddr="::2"), resource=resource)
    logs, traces = assert_otlp_json_matches_protobuf(records, otlp_json, resource)
    (_, failed, _) = traces.resource_spans[0].scope_spans[0].spans
    assert (failed.status.code, failed.status.message) == (2, "ECONNRESET")

    assert len(rows) == 3
    rfc3339 = Rfc3339()
    for row, record, log in zip(rows, records, logs.resource_logs[0].scope_logs[0].log_records):
        # same keys in the same order: the NDJSON templates and RecordBuilder agree
        assert list(row) == ["time", "start_time", "otel.event.name", "trace_id", "span_id",
                             *(key for key, _ in record.attributes)]
        assert (row["time"], row["start_time"]) == (rfc3339(record.end_ns), rfc3339(record.start_ns))
        assert row["otel.event.name"] == log.event_name == "tcplife.session"
        assert bytes.fromhex(row["trace_id"]) == log.trace_id
        assert bytes.fromhex(row["span_id"]) == log.span_id
        flat = {kv.key: getattr(kv.value, kv.value.WhichOneof("value")) for kv in log.attributes}
        assert {k: v for k, v in row.items() if k in flat} == flat
        assert len(row) == len(flat) + 5  # time, start_time, event name, trace_id, span_id


def assert_otlp_json_matches_protobuf(records, otlp_json, resource):
    """The OTLP/JSON lines parse back into the messages ProtoEncoder builds from the records."""
    protos = ProtoEncoder(resource_proto(resource), scope_proto())
    logs, traces = LogsData(), TracesData()
    for signal, message in (("logs", logs), ("traces", traces)):
        line = otlp_json[signal]
        assert line.endswith(b"\n") and line.count(b"\n") == 1
        json_format.ParseDict(hex_ids_to_base64(json.loads(line)), message)
    assert logs == LogsData(resource_logs=protos.logs_request(records).resource_logs)
    assert traces == TracesData(resource_spans=protos.traces_request(records).resource_spans)
    return logs, traces


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(generated_sessions(), min_size=1, max_size=8))
def test_otlp_json_of_generated_sessions_matches_protobuf(sessions):
    resource = Resource.create({"service.name": 'a "quoted" \\ name'})
    records, _, otlp_json = build_all(*sessions, resource=resource)
    assert_otlp_json_matches_protobuf(records, otlp_json, resource)


def test_otlp_json_of_a_large_batch_is_one_line_written_in_chunks():
    sessions = [session(lport=1000 + i, role=(abi.ROLE_CLIENT, abi.ROLE_SERVER, abi.ROLE_UNKNOWN)[i % 3])
                for i in range(2 * CHUNK_RECORDS + 5)]
    encoder = OtlpJsonEncoder(resource_json(Resource.create({})), scope_json())
    chunks = list(encoder.encode(as_events(sessions), FixedClock.offset_ns, OBSERVED))
    assert [chunk.count(b"\"traceId\"") for chunk in chunks] == [CHUNK_RECORDS, CHUNK_RECORDS, 5]
    resource = Resource.create({})
    records, _, otlp_json = build_all(*sessions, resource=resource)
    logs, traces = assert_otlp_json_matches_protobuf(records, otlp_json, resource)
    assert len(logs.resource_logs[0].scope_logs[0].log_records) == len(sessions)


def test_otlp_json_of_no_sessions_is_no_line():
    encoder = OtlpJsonEncoder(resource_json(Resource.create({})), scope_json())
    assert list(encoder.encode([], 0, OBSERVED)) == []


def test_ndjson_escapes_process_names():
    _, rows = build_both(session(comm='x},{"y\\'), session(comm="plain\u00e9"))
    assert [row["thread.name"] for row in rows] == ['x},{"y\\', "plain\u00e9"]


def test_ndjson_chunks_hold_whole_lines_in_order():
    sessions = [session(lport=1000 + i) for i in range(2 * CHUNK_LINES + 3)]
    encoder = NdjsonEncoder(ProcessNames(proc="/nonexistent"))
    chunks = list(encoder.encode(as_events(sessions), FixedClock.offset_ns))
    assert [chunk.count(b"\n") for chunk in chunks] == [CHUNK_LINES, CHUNK_LINES, 3]
    assert all(chunk.endswith(b"\n") for chunk in chunks)
    assert [json.loads(line)["network.local.port"] for line in b"".join(chunks).splitlines()] == [
        s.lport for s in sessions]
    assert list(encoder.encode([], FixedClock.offset_ns)) == []


def test_ndjson_lines_end_with_their_owners_tails_in_the_events_order():
    sessions = [session(lport=1000 + i, pid=100 + i % 3, comm=f"p{i % 3}", cgroup_id=i % 3, start_ns=7 + i % 3)
                for i in range(CHUNK_LINES + 30)]
    asked = []

    def tail(owner):
        asked.append(owner)
        pid, comm, start_ns, cgroup_id = owner
        return f',"owner":"{pid}/{comm.rstrip(bytes(1)).decode()}/{start_ns}/{cgroup_id}"'

    events = as_events(sessions)
    encoder = NdjsonEncoder(ProcessNames(proc="/nonexistent"), tails=Formatted(tail))
    chunks = list(encoder.encode(events, FixedClock.offset_ns))
    assert [chunk.count(b"\n") for chunk in chunks] == [CHUNK_LINES, 30]
    rows = [json.loads(line) for line in b"".join(chunks).splitlines()]
    assert [row["owner"] for row in rows] == [f"{s.pid}/{s.comm}/{s.start_ns}/{s.cgroup_id}" for s in sessions]
    assert [row["network.local.port"] for row in rows] == [s.lport for s in sessions]
    assert len(asked) == 3  # each owner's tail made once
    # Without the tail, the same lines as the encoder without owners writes.
    plain = b"".join(NdjsonEncoder(ProcessNames(proc="/nonexistent")).encode(events[:5], FixedClock.offset_ns))
    assert [{k: v for k, v in row.items() if k != "owner"} for row in rows[:5]] == [
        json.loads(line) for line in plain.splitlines()]


def test_otlp_json_groups_are_one_resource_each_in_chunks_of_any_groups():
    sizes = [1, CHUNK_RECORDS + 2, 3, CHUNK_RECORDS - 6, 2]
    sessions = [session(lport=1000 + i) for i in range(sum(sizes))]
    events = as_events(sessions)
    groups, start = [], 0
    for n, size in enumerate(sizes):
        resource = orjson.dumps(resource_json(Resource.create({"service.name": f"group-{n}"}))).decode()
        groups.append((resource, events[start:start + size]))
        start += size
    encoder = OtlpJsonEncoder(resource_json(Resource.create({})), scope_json(), "logs",
                              ProcessNames(proc="/nonexistent"))
    chunks = list(encoder.encode_groups(groups[:2] + [(groups[2][0], [])] + groups[2:], FixedClock.offset_ns,
                                        OBSERVED))  # an empty group is left out
    assert [chunk.count(b'"traceId"') for chunk in chunks] == [CHUNK_RECORDS, CHUNK_RECORDS,
                                                               sum(sizes) - 2 * CHUNK_RECORDS]
    line = b"".join(chunks)
    assert line.endswith(b"]}\n") and line.count(b"\n") == 1
    data = json.loads(line)
    names = [next(a["value"]["stringValue"] for a in rl["resource"]["attributes"] if a["key"] == "service.name")
             for rl in data["resourceLogs"]]
    assert names == [f"group-{n}" for n in range(len(sizes))]
    records = [rl["scopeLogs"][0]["logRecords"] for rl in data["resourceLogs"]]
    assert [len(r) for r in records] == sizes
    ports = [a["value"]["intValue"] for r in records for record in r for a in record["attributes"]
             if a["key"] == "network.local.port"]
    assert ports == [str(s.lport) for s in sessions]
