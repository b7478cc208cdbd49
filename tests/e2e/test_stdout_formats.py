"""NDJSON and OTLP/JSON on stdout: real sessions, exact facts, and agreement across formats."""

from __future__ import annotations

import json
import time

from google.protobuf import json_format
from opentelemetry.proto.logs.v1.logs_pb2 import LogsData
from opentelemetry.proto.trace.v1.trace_pb2 import TracesData

from otel_tcplife.contract import SESSION_ATTRIBUTES

from ..support import hex_ids_to_base64

ATTRIBUTE_KEYS = {a.key for a in SESSION_ATTRIBUTES}


def collect(agent, count: int, timeout: float = 10) -> list[str]:
    lines, deadline = [], time.monotonic() + timeout
    while len(lines) < count and time.monotonic() < deadline:
        line = agent.read_line(timeout=0.5)
        if line:
            lines.append(line)
    return lines


def records_of(data) -> list:
    if isinstance(data, LogsData):
        return [r for rl in data.resource_logs for sl in rl.scope_logs for r in sl.log_records]
    return [s for rs in data.resource_spans for ss in rs.scope_spans for s in ss.spans]


def parse_lines(agent, message_type, count: int, timeout: float = 10) -> list:
    """Records from OTLP/JSON lines (one message per batch), until `count` arrived."""
    records, deadline = [], time.monotonic() + timeout
    while len(records) < count and time.monotonic() < deadline:
        line = agent.read_line(timeout=0.5)
        if line:  # each line must be a valid message on its own
            records += records_of(json_format.ParseDict(hex_ids_to_base64(json.loads(line)), message_type()))
    return records




def flat(attributes) -> dict:
    return {kv.key: getattr(kv.value, kv.value.WhichOneof("value")) for kv in attributes}


def test_the_same_sessions_agree_in_ndjson_otlp_json_and_otlp(traffic, start_agent, receiver):
    server, port = traffic.server(name="tl-server", count=4, recv=1023, send=1024 * 1024)
    # Three agents watch the same sessions, one format each (and OTLP export).
    ndjson = start_agent("--format", "ndjson", "-L", str(port), "--otlp-endpoint", receiver.endpoint,
                         "--flush-interval", "0.2")
    logs_json = start_agent("--format", "otlp-json", "-L", str(port))
    spans_json = start_agent("--format", "otlp-json-traces", "-L", str(port))
    client = traffic.client(name="tl-client", port=port, count=4, send=1023, recv=1024 * 1024)
    closed = [e for e in client.events() if e["event"] == "closed"]
    server.events()

    rows = [json.loads(line) for line in collect(ndjson, 4)]
    assert len(rows) == 4
    for row in rows:
        assert set(row) >= {"time", "start_time", "otel.event.name", "trace_id", "span_id"}
        assert row["otel.event.name"] == "tcplife.session"
        assert (row["process.pid"], row["thread.name"], row["tcplife.role"]) == (server.pid, "tl-server", "server")
        assert (row["tcplife.bytes_sent"], row["tcplife.bytes_received"]) == (1024 * 1024, 1023)
        assert row["time"].endswith("Z") and len(row["time"]) == len("2026-01-01T00:00:00.000000000Z")
    assert {row["network.peer.port"] for row in rows} == {e["lport"] for e in closed}

    log_records = parse_lines(logs_json, LogsData, 4)
    spans = parse_lines(spans_json, TracesData, 4)

    assert receiver.wait_for(lambda r: len(r.log_records()) == 4)
    exported = receiver.log_records()
    for agent in (ndjson, logs_json, spans_json):
        assert agent.stop()[0] == 0

    # Same session (by client port) -> same facts in every format; ids differ per agent.
    # Each agent's probe reads the kernel clock itself, microseconds apart.
    def facts(attributes: dict) -> dict:
        return {k: v for k, v in attributes.items() if k not in ("process.executable.name", "tcplife.duration_ms")}

    by_port = {row["network.peer.port"]: row for row in rows}
    for records in (log_records, spans, exported):
        assert len(records) == 4
        for record in records:
            a = flat(record.attributes)
            row = by_port[a["network.peer.port"]]
            assert facts(a) == facts({k: v for k, v in row.items() if k in ATTRIBUTE_KEYS})
            assert abs(a["tcplife.duration_ms"] - row["tcplife.duration_ms"]) < 1
    exported_by_trace = {r.trace_id.hex(): flat(r.attributes) for r in exported}
    for row in rows:  # the NDJSON agent's own export: identical
        assert exported_by_trace[row["trace_id"]]["tcplife.duration_ms"] == row["tcplife.duration_ms"]
    # the exported records are the NDJSON agent's own: same ids too
    assert {r.trace_id.hex() for r in exported} == {row["trace_id"] for row in rows}
