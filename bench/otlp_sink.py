"""A minimal, fast OTLP/gRPC receiver for the bench: counts log records and spans, nothing else.

    python bench/otlp_sink.py [--port-filter PORT]

Listens on 127.0.0.1 (a free port the kernel picks, or --listen-port), serves
opentelemetry.proto LogsService/Export and TraceService/Export with the generated
servicers (so requests are parsed by the generated classes, gzip or not), and prints
its port on stdout, alone on a line, once it is ready. On SIGINT or SIGTERM it stops
(letting requests already received finish) and prints one JSON line on stdout:

    {"logs": N, "spans": M, "log_requests": R, "span_requests": Q,
     "port_filter": P, "logs_port": n, "spans_port": m, "cpu_s": C}

logs / spans: records received in all (len() of each request's repeated fields).
logs_port / spans_port (only with --port-filter): the records whose attribute
network.local.port or network.peer.port equals PORT, i.e. the bench storm's sessions
among everything the unfiltered agent exported. Checked while receiving (about 1.5 us
a record; attributes 3 and 5 first, where otel-tcplife puts them, else a scan).
Every request gets an empty (full success) response. cpu_s: this process's user+sys.
"""

from __future__ import annotations

import argparse
import json
import resource
import signal
import sys
import threading
from concurrent import futures

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

HOST = "127.0.0.1"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
PORT_KEYS = ("network.local.port", "network.peer.port")


def count_port(records, port: int) -> int:
    """How many of `records` (LogRecords or Spans) have `port` as local or peer port."""
    n = 0
    for record in records:
        attributes = record.attributes
        if len(attributes) > 5 and attributes[3].key == PORT_KEYS[0] and attributes[5].key == PORT_KEYS[1]:
            if attributes[3].value.int_value == port or attributes[5].value.int_value == port:
                n += 1
            continue
        for kv in attributes:  # another layout: look at every attribute
            if kv.key in PORT_KEYS and kv.value.int_value == port:
                n += 1
                break
    return n


class Counts:
    def __init__(self, port_filter: int | None) -> None:
        self.port_filter = port_filter
        self.lock = threading.Lock()
        self.logs = self.spans = self.log_requests = self.span_requests = 0
        self.logs_port = self.spans_port = 0

    def snapshot(self) -> dict:
        with self.lock:
            data = {"logs": self.logs, "spans": self.spans,
                    "log_requests": self.log_requests, "span_requests": self.span_requests}
            if self.port_filter is not None:
                data.update(port_filter=self.port_filter, logs_port=self.logs_port, spans_port=self.spans_port)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        data["cpu_s"] = round(usage.ru_utime + usage.ru_stime, 3)
        return data


class Logs(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, counts: Counts) -> None:
        self.counts = counts

    def Export(self, request, context):
        port = self.counts.port_filter
        n = matched = 0
        for resource_logs in request.resource_logs:
            for scope_logs in resource_logs.scope_logs:
                n += len(scope_logs.log_records)
                if port is not None:
                    matched += count_port(scope_logs.log_records, port)
        with self.counts.lock:
            self.counts.logs += n
            self.counts.logs_port += matched
            self.counts.log_requests += 1
        return logs_service_pb2.ExportLogsServiceResponse()


class Traces(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, counts: Counts) -> None:
        self.counts = counts

    def Export(self, request, context):
        port = self.counts.port_filter
        n = matched = 0
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                n += len(scope_spans.spans)
                if port is not None:
                    matched += count_port(scope_spans.spans, port)
        with self.counts.lock:
            self.counts.spans += n
            self.counts.spans_port += matched
            self.counts.span_requests += 1
        return trace_service_pb2.ExportTraceServiceResponse()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Count OTLP/gRPC log records and spans received (127.0.0.1).")
    parser.add_argument("--listen-port", type=int, default=0, help="port to listen on (default: any free one)")
    parser.add_argument("--port-filter", type=int, default=None, metavar="PORT",
                        help="also count records whose network.local.port or network.peer.port is PORT")
    parser.add_argument("--threads", type=int, default=8, help="request handler threads (default %(default)s)")
    args = parser.parse_args(argv)

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda _signum, _frame: stop.set())

    counts = Counts(args.port_filter)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=args.threads),
                         options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)])
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Logs(counts), server)
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(counts), server)
    port = server.add_insecure_port(f"{HOST}:{args.listen_port}")
    if not port:
        print(f"otlp_sink: error: cannot listen on {HOST}:{args.listen_port}", file=sys.stderr)
        return 1
    server.start()
    print(port, flush=True)
    while not stop.wait(0.2):  # short waits: the signal handler runs between them
        pass
    server.stop(grace=5).wait()  # no new requests; those being handled finish
    print(json.dumps(counts.snapshot()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
