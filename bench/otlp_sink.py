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

--track-ids (exact duplicates): keeps every record's trace id (16 random bytes, one per session,
shared by its log record and its span) in a set per signal, and adds to the JSON line
logs_dup / spans_dup (records whose trace id had arrived before: a request delivered twice),
logs_unique / spans_unique (= logs - logs_dup, ...), and with --port-filter logs_port_dup /
spans_port_dup and logs_port_unique / spans_port_unique. About 0.3 us a record more.

--control (an outage on demand, for bench/outage.py): reads commands on stdin, one a line, and
answers each with one JSON line on stdout (the counts above plus "serving" and "port"):
    stats        the counts so far
    stop [GRACE] stop serving: the gRPC server stops (requests being handled get GRACE seconds,
                 default 0: cancelled at once, as in a crash; their records are counted all the
                 same, as a collector that had already passed them on would), its listening
                 socket and connections are closed: clients get connection refused
    start        serve again, on the same port, with the counts kept (a restart)
Without --control, stdin is not read. SIGINT/SIGTERM end it as above in both cases.
"""

from __future__ import annotations

import argparse
import json
import queue
import resource
import signal
import sys
import threading
import time
from concurrent import futures

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

HOST = "127.0.0.1"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
PORT_KEYS = ("network.local.port", "network.peer.port")
REBIND_TIMEOUT_S = 10.0  # start: how long to retry binding the old port


def is_port(record, port: int) -> bool:
    """Whether a LogRecord or Span has `port` as local or peer port."""
    attributes = record.attributes
    if len(attributes) > 5 and attributes[3].key == PORT_KEYS[0] and attributes[5].key == PORT_KEYS[1]:
        return attributes[3].value.int_value == port or attributes[5].value.int_value == port
    for kv in attributes:  # another layout: look at every attribute
        if kv.key in PORT_KEYS and kv.value.int_value == port:
            return True
    return False


def count_port(records, port: int) -> int:
    """How many of `records` (LogRecords or Spans) have `port` as local or peer port (is_port, inlined)."""
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
    """What arrived, per signal ("logs", "spans"); shared by the servicers across restarts."""

    def __init__(self, port_filter: int | None, track_ids: bool) -> None:
        self.port_filter = port_filter
        self.track_ids = track_ids
        self.lock = threading.Lock()
        self.n = {"logs": 0, "spans": 0}
        self.requests = {"logs": 0, "spans": 0}
        self.port = {"logs": 0, "spans": 0}
        self.dup = {"logs": 0, "spans": 0}
        self.port_dup = {"logs": 0, "spans": 0}
        self.seen: dict[str, set[bytes]] = {"logs": set(), "spans": set()}

    def add(self, signal_name: str, records) -> None:
        """Counts one request's records (a repeated field of LogRecords or Spans)."""
        port = self.port_filter
        n = len(records)
        if self.track_ids:  # (trace id, storm?) of each, checked against the set under the lock
            if port is None:
                ids = [(record.trace_id, False) for record in records]
            else:
                ids = [(record.trace_id, is_port(record, port)) for record in records]
            matched = sum(storm for _, storm in ids)
        else:
            ids = ()
            matched = count_port(records, port) if port is not None else 0
        with self.lock:
            self.n[signal_name] += n
            self.port[signal_name] += matched
            if ids:
                seen = self.seen[signal_name]
                dup = port_dup = 0
                for trace_id, storm in ids:
                    if trace_id in seen:
                        dup += 1
                        port_dup += storm
                    else:
                        seen.add(trace_id)
                self.dup[signal_name] += dup
                self.port_dup[signal_name] += port_dup

    def request(self, signal_name: str) -> None:
        with self.lock:
            self.requests[signal_name] += 1

    def snapshot(self) -> dict:
        with self.lock:
            data = {"logs": self.n["logs"], "spans": self.n["spans"],
                    "log_requests": self.requests["logs"], "span_requests": self.requests["spans"]}
            if self.port_filter is not None:
                data.update(port_filter=self.port_filter, logs_port=self.port["logs"], spans_port=self.port["spans"])
            if self.track_ids:
                for s in ("logs", "spans"):
                    data[f"{s}_dup"] = self.dup[s]
                    data[f"{s}_unique"] = self.n[s] - self.dup[s]
                    if self.port_filter is not None:
                        data[f"{s}_port_dup"] = self.port_dup[s]
                        data[f"{s}_port_unique"] = self.port[s] - self.port_dup[s]
        usage = resource.getrusage(resource.RUSAGE_SELF)
        data["cpu_s"] = round(usage.ru_utime + usage.ru_stime, 3)
        return data


class Logs(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, counts: Counts) -> None:
        self.counts = counts

    def Export(self, request, context):
        for resource_logs in request.resource_logs:
            for scope_logs in resource_logs.scope_logs:
                self.counts.add("logs", scope_logs.log_records)
        self.counts.request("logs")
        return logs_service_pb2.ExportLogsServiceResponse()


class Traces(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, counts: Counts) -> None:
        self.counts = counts

    def Export(self, request, context):
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                self.counts.add("spans", scope_spans.spans)
        self.counts.request("spans")
        return trace_service_pb2.ExportTraceServiceResponse()


class Server:
    """The gRPC server, which can be stopped and started again on the same port."""

    def __init__(self, counts: Counts, threads: int) -> None:
        self.counts = counts
        self.threads = threads
        self.server: grpc.Server | None = None
        self.port = 0

    @property
    def serving(self) -> bool:
        return self.server is not None

    def start(self, port: int, rebind_timeout: float = 0.0) -> bool:
        """Serves on HOST:port (0: a free one); False if the port cannot be bound (after retrying
        for rebind_timeout seconds)."""
        deadline = time.monotonic() + rebind_timeout
        while True:
            server = grpc.server(futures.ThreadPoolExecutor(max_workers=self.threads),
                                 options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)])
            logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Logs(self.counts), server)
            trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(self.counts), server)
            try:
                bound = server.add_insecure_port(f"{HOST}:{port}")
            except RuntimeError:  # some grpc versions raise rather than return 0
                bound = 0
            if bound:
                server.start()
                self.server, self.port = server, bound
                return True
            server.stop(None)
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)

    def stop(self, grace: float | None) -> None:
        if self.server is not None:
            self.server.stop(grace).wait()  # closes the listening socket and every connection
            self.server = None


def control_loop(server: Server, counts: Counts, stop: threading.Event) -> None:
    """--control: commands on stdin (read by a thread), answers on stdout, until a signal."""
    lines: queue.Queue[str | None] = queue.Queue()

    def read_stdin() -> None:
        for line in sys.stdin:
            lines.put(line)
        lines.put(None)  # EOF: no more commands

    threading.Thread(target=read_stdin, name="sink-stdin", daemon=True).start()
    while not stop.is_set():
        try:
            line = lines.get(timeout=0.2)  # short waits: the signal handler runs between them
        except queue.Empty:
            continue
        if line is None:
            stop.wait()
            break
        words = line.split()
        if not words:
            continue
        answer: dict = {}
        if words[0] == "stop":
            server.stop(float(words[1]) if len(words) > 1 else None)  # None: abort at once
        elif words[0] == "start":
            if not server.serving and not server.start(server.port, REBIND_TIMEOUT_S):
                answer["error"] = f"cannot listen on {HOST}:{server.port} again"
        elif words[0] != "stats":
            answer["error"] = f"unknown command {words[0]!r}"
        answer.update(counts.snapshot(), serving=server.serving, port=server.port)
        print(json.dumps(answer), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Count OTLP/gRPC log records and spans received (127.0.0.1).")
    parser.add_argument("--listen-port", type=int, default=0, help="port to listen on (default: any free one)")
    parser.add_argument("--port-filter", type=int, default=None, metavar="PORT",
                        help="also count records whose network.local.port or network.peer.port is PORT")
    parser.add_argument("--track-ids", action="store_true",
                        help="count duplicates exactly: every trace id received, in a set per signal")
    parser.add_argument("--control", action="store_true",
                        help="take commands on stdin: stats, stop [GRACE], start (see the docstring)")
    parser.add_argument("--threads", type=int, default=8, help="request handler threads (default %(default)s)")
    args = parser.parse_args(argv)

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda _signum, _frame: stop.set())

    counts = Counts(args.port_filter, args.track_ids)
    server = Server(counts, args.threads)
    if not server.start(args.listen_port):
        print(f"otlp_sink: error: cannot listen on {HOST}:{args.listen_port}", file=sys.stderr)
        return 1
    print(server.port, flush=True)
    if args.control:
        control_loop(server, counts, stop)
    else:
        while not stop.wait(0.2):  # short waits: the signal handler runs between them
            pass
    server.stop(5)  # no new requests; those being handled finish
    print(json.dumps(counts.snapshot()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
