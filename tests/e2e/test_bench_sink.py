"""bench/otlp_sink.py counts from the raw request bytes: the same counts as parsing every record.

The bench's OTLP figures rest on these counts, so they are checked against the generated classes,
over real gRPC (gzip or not), with several resources and scopes per request and the port attributes
anywhere in a record."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

SINK = Path(__file__).resolve().parents[2] / "bench" / "otlp_sink.py"
PORT = 40000  # a 3-byte varint
OTHER_PORTS = (PORT, 80, 300, 40001)
METHODS = {"logs": "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
           "spans": "/opentelemetry.proto.collector.trace.v1.TraceService/Export"}


def attributes(rng: random.Random) -> list[KeyValue]:
    """Port attributes (or not) among others, in a random order; PORT also where it must not count."""
    items = [KeyValue(key="client.port", value=AnyValue(int_value=PORT)),
             KeyValue(key="note", value=AnyValue(string_value=f"network.local.port {PORT}")),
             KeyValue(key="process.pid", value=AnyValue(int_value=rng.randrange(1, 1 << 40)))]
    for key in ("network.local.port", "network.peer.port"):
        if rng.random() < 0.8:
            items.append(KeyValue(key=key, value=AnyValue(int_value=rng.choice(OTHER_PORTS))))
    rng.shuffle(items)
    return items


def request(signal_name: str, rng: random.Random) -> tuple[bytes, list[tuple[bytes, int]]]:
    """A request with 2 resources x 2 scopes of records, and each record's (trace id, how many of
    its two port attributes are PORT)."""
    message = ExportLogsServiceRequest() if signal_name == "logs" else ExportTraceServiceRequest()
    expected = []
    for _ in range(2):
        resource = (message.resource_logs if signal_name == "logs" else message.resource_spans).add()
        resource.resource.attributes.append(KeyValue(key="host.name", value=AnyValue(string_value="h")))
        for _ in range(2):
            scope = (resource.scope_logs if signal_name == "logs" else resource.scope_spans).add()
            for _ in range(rng.randrange(0, 40)):
                record = (scope.log_records if signal_name == "logs" else scope.spans).add()
                record.trace_id = rng.choice([os.urandom(16), b"\x01" * 16])  # some repeated
                record.attributes.extend(attributes(rng))
                if signal_name == "logs":
                    record.body.string_value = "x" * rng.randrange(0, 300)
                else:
                    record.name = "tcp connect"
                    record.start_time_unix_nano = rng.randrange(1, 1 << 63)
                expected.append((record.trace_id, sum(
                    kv.key in ("network.local.port", "network.peer.port") and kv.value.int_value == PORT
                    for kv in record.attributes)))
    return message.SerializeToString(), expected


@pytest.mark.parametrize("track_ids", [False, True])
def test_sink_counts_match_parsed_records(track_ids):
    sink = subprocess.Popen([sys.executable, str(SINK), "--port-filter", str(PORT)] + ["--track-ids"] * track_ids,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = int(sink.stdout.readline())
        rng = random.Random(7)
        sent = {"logs": [], "spans": []}
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            for i in range(6):
                for signal_name, method in METHODS.items():
                    payload, expected = request(signal_name, rng)
                    compression = grpc.Compression.Gzip if i % 2 else grpc.Compression.NoCompression
                    channel.unary_unary(method)(payload, timeout=10, compression=compression)
                    sent[signal_name] += expected
        sink.send_signal(signal.SIGTERM)
        out, err = sink.communicate(timeout=30)
    finally:
        if sink.poll() is None:
            sink.kill()
            sink.wait()
    assert sink.returncode == 0, err
    counts = json.loads(out.splitlines()[-1])
    for signal_name, records in sent.items():
        assert counts[signal_name] == len(records) > 100
        if track_ids:  # records with PORT as local or peer port, or both
            assert counts[f"{signal_name}_port"] == sum(bool(ports) for _, ports in records) > 10
        else:  # port attributes holding PORT: a record with both counts twice (never in the storm)
            assert counts[f"{signal_name}_port"] == sum(ports for _, ports in records) > 10
        assert any(ports == 2 for _, ports in records)
        assert counts[f"{'log' if signal_name == 'logs' else 'span'}_requests"] == 6
        if track_ids:
            seen, dup, port_dup = set(), 0, 0
            for trace_id, ports in records:
                if trace_id in seen:
                    dup += 1
                    port_dup += bool(ports)
                seen.add(trace_id)
            assert counts[f"{signal_name}_dup"] == dup > 0
            assert counts[f"{signal_name}_port_dup"] == port_dup
