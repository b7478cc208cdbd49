"""A minimal, fast OTLP/gRPC receiver for the bench: counts log records and spans, nothing else.

    python bench/otlp_sink.py [--port-filter PORT]

Listens on 127.0.0.1 (a free port the kernel picks, or --listen-port), serves
opentelemetry.proto LogsService/Export and TraceService/Export on the raw request bytes (gRPC
undoes gzip), and prints its port on stdout, alone on a line, once it is ready. On SIGINT or
SIGTERM it stops (letting requests already received finish) and prints one JSON line on stdout:

    {"logs": N, "spans": M, "log_requests": R, "span_requests": Q,
     "port_filter": P, "logs_port": n, "spans_port": m, "cpu_s": C}

logs / spans: records received in all, found by walking the request's wire format down to its
records (resource > scope > record; about 0.35 us a record).
logs_port / spans_port (only with --port-filter): the records whose attribute
network.local.port or network.peer.port equals PORT, i.e. the bench storm's sessions
among everything the unfiltered agent exported: the occurrences in the request of those two
KeyValues as serialized bytes (key and int_value), counted by bytes.count (about 0.3 us a record
for both), so a record with PORT in both attributes would count twice: a connection from PORT to
PORT, which the storm never makes (its server listens on PORT).
Why not parse: the generated classes plus a look at each record's attributes cost ~3.5 us a
record, as much CPU as the agent spends on the session, taken from the storm on a 2-CPU machine.
Every request gets an empty (full success) response. cpu_s: this process's user+sys.

--track-ids (exact duplicates): keeps every record's trace id and span id (one pair per session,
shared by its log record and its span: the two ends of a connection share the trace id, not the
span id) in a set per signal, and adds to the JSON line
logs_dup / spans_dup (records whose ids had arrived before: a request delivered twice),
logs_unique / spans_unique (= logs - logs_dup, ...), and with --port-filter logs_port_dup /
spans_port_dup and logs_port_unique / spans_port_unique. Here the requests are also parsed, for the
trace ids, and each record is checked on its own (logs_port / spans_port: records with PORT in
either attribute or both): about 3.5 us a record in all.

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
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

HOST = "127.0.0.1"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
PORT_KEYS = ("network.local.port", "network.peer.port")
SERVICES = (("opentelemetry.proto.collector.logs.v1.LogsService", "logs"),
            ("opentelemetry.proto.collector.trace.v1.TraceService", "spans"))
REBIND_TIMEOUT_S = 10.0  # start: how long to retry binding the old port


def read_varint(buf: bytes, i: int) -> tuple[int, int]:
    """The varint at buf[i], and the index after it."""
    value = buf[i]
    i += 1
    if value < 0x80:
        return value, i
    value &= 0x7F
    shift = 7
    while True:
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i
        shift += 7


def fields(buf: bytes, i: int, end: int, number: int) -> list[tuple[int, int]]:
    """(start, end) of each payload of the length-delimited field `number` in buf[i:end], a
    serialized message; its other fields are skipped."""
    out = []
    while i < end:
        key, i = read_varint(buf, i)
        wire_type = key & 7
        if wire_type == 2:
            n, i = read_varint(buf, i)
            if key >> 3 == number:
                out.append((i, i + n))
            i += n
        elif wire_type == 0:
            _, i = read_varint(buf, i)
        elif wire_type == 1:
            i += 8
        elif wire_type == 5:
            i += 4
        else:
            raise ValueError(f"unexpected wire type {wire_type} at byte {i}")
    return out


def records(request: bytes) -> list[tuple[int, int]]:
    """(start, end) of every LogRecord / Span in a serialized Export request. Both requests nest the
    same way: field 1 resource_logs / resource_spans > field 2 scope_logs / scope_spans > field 2
    log_records / spans."""
    out = []
    for start, end in fields(request, 0, len(request), 1):
        for scope_start, scope_end in fields(request, start, end, 2):
            out += fields(request, scope_start, scope_end, 2)
    return out


def trace_ids(signal_name: str, request: bytes) -> list[bytes]:
    """Every record's trace id and span id, in order (parsed by the generated classes: in C, and exact)."""
    if signal_name == "logs":
        logs = ExportLogsServiceRequest.FromString(request)
        return [r.trace_id + r.span_id for rl in logs.resource_logs for sl in rl.scope_logs for r in sl.log_records]
    traces = ExportTraceServiceRequest.FromString(request)
    return [r.trace_id + r.span_id for rs in traces.resource_spans for ss in rs.scope_spans for r in ss.spans]


def port_patterns(port: int) -> tuple[bytes, bytes]:
    """The serialized KeyValues network.local.port = port and network.peer.port = port (int_value),
    as the bytes that follow their length: a record holds one exactly when it has that attribute.
    The varint is written here rather than taken from otel_tcplife: the receiver checks the agent."""
    value = bytearray()
    n = port
    while n > 0x7F:
        value.append((n & 0x7F) | 0x80)
        n >>= 7
    value.append(n)
    return tuple(b"\x0a" + bytes([len(key)]) + key.encode() + b"\x12" + bytes([1 + len(value)]) + b"\x18" + value
                 for key in PORT_KEYS)


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

    def add(self, signal_name: str, request: bytes) -> None:
        """Counts one serialized Export request's records (signal_name: "logs" or "spans")."""
        ranges = records(request)
        n = len(ranges)
        patterns = port_patterns(self.port_filter) if self.port_filter is not None else ()
        if self.track_ids:  # (trace id, storm?) of each, checked against the set under the lock
            ids = [(trace_id, any(request.find(p, start, end) >= 0 for p in patterns))
                   for trace_id, (start, end) in zip(trace_ids(signal_name, request), ranges)]
            matched = sum(storm for _, storm in ids)
        else:
            ids = ()
            # The patterns are whole KeyValues (tag, key, value): only a port attribute matches.
            matched = sum(request.count(p) for p in patterns)
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


def handlers(counts: Counts) -> tuple[grpc.GenericRpcHandler, ...]:
    """LogsService/Export and TraceService/Export on the raw request bytes (gRPC has already
    undone any gzip); each answered with an empty response: full success."""
    def export(signal_name: str):
        def handle(request: bytes, context) -> bytes:
            counts.add(signal_name, request)
            counts.request(signal_name)
            return b""  # an empty Export*ServiceResponse
        return grpc.unary_unary_rpc_method_handler(handle)  # no (de)serializers: bytes in and out

    return tuple(grpc.method_handlers_generic_handler(service, {"Export": export(signal_name)})
                 for service, signal_name in SERVICES)


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
            server.add_generic_rpc_handlers(handlers(self.counts))
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
