"""A real OTLP/gRPC receiver (logs and traces) for tests, with fault injection.

    with OtlpReceiver() as rx:
        rx.fail_next(grpc.StatusCode.UNAVAILABLE, retry_after=0.2)
        ... point the exporter at rx.endpoint ...
        assert rx.wait_for(lambda r: len(r.log_records()) == 3)

Data counts as received only when a call succeeds (fully or partially);
failed and cancelled calls are still counted in `calls` and `call_log`.
Faults (fail_next, fail_for, partial_success) queue up in the order they are
added; each call takes the first pending one that matches its signal.
"""

from __future__ import annotations

import collections
import threading
import time
from concurrent import futures
from dataclasses import dataclass
from typing import Callable

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from .certs import ServerTls

SIGNALS = ("logs", "traces")
RETRY_INFO_KEY = "google.rpc.retryinfo-bin"  # read by opentelemetry-python
STATUS_DETAILS_KEY = "grpc-status-details-bin"  # read by the OpenTelemetry Collector (Go)


@dataclass
class Call:
    """One Export call as the receiver saw it."""

    signal: str  # "logs" or "traces"
    metadata: dict[str, str | bytes]  # invocation metadata; "-bin" keys have bytes values
    started: float  # time.monotonic() at arrival
    outcome: str = "in-flight"  # "ok", "partial", "cancelled", or a StatusCode name e.g. "UNAVAILABLE"
    items: int = 0  # log records or spans in the request
    ended: float | None = None


@dataclass
class _Rule:
    signal: str
    code: grpc.StatusCode | None = None  # None: partial success
    message: str = "injected"
    retry_after: float | None = None
    remaining: int = 1
    until: float | None = None  # fail_for: active until this monotonic time
    rejected: int = 0

    def expired(self, now: float) -> bool:
        return self.remaining <= 0 if self.until is None else now >= self.until


def _check_signal(signal: str) -> str:
    if signal not in (*SIGNALS, "both"):
        raise ValueError(f"signal must be 'logs', 'traces' or 'both', not {signal!r}")
    return signal


class _LogsServicer(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self._receiver = receiver

    def Export(self, request, context):
        return self._receiver._handle("logs", request, context)


class _TraceServicer(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self._receiver = receiver

    def Export(self, request, context):
        return self._receiver._handle("traces", request, context)


class OtlpReceiver:
    """OTLP/gRPC logs and traces receiver on 127.0.0.1, plain, TLS or mTLS.

    start() may be called again after stop(): it binds the same port and keeps
    what was received, so tests can take the collector down and bring it back.
    """

    def __init__(self, *, tls: ServerTls | None = None, port: int = 0, max_workers: int = 16,
                 accept_gzip: bool = True) -> None:
        """accept_gzip=False: gzip-compressed calls fail with UNIMPLEMENTED before reaching the
        handler (not in call_log); grpc gives a server no other way to see request compression."""
        self.tls = tls
        self.port = port
        self.accept_gzip = accept_gzip
        self._max_workers = max_workers
        self._lock = threading.Lock()
        self._server: grpc.Server | None = None
        self._executor: futures.ThreadPoolExecutor | None = None
        self._stopping = threading.Event()
        self._rules: list[_Rule] = []
        self._delay = 0.0
        self._in_flight = 0
        # What arrived; append-only, guarded by _lock.
        self.logs: list[logs_service_pb2.ExportLogsServiceRequest] = []
        self.traces: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.metadata: list[dict[str, str | bytes]] = []  # one per call, in arrival order, failed ones too
        self.call_log: list[Call] = []
        self.calls: collections.Counter[tuple[str, str]] = collections.Counter()  # (signal, outcome) -> n
        self.rejected: dict[str, int] = {s: 0 for s in SIGNALS}  # partial-success rejections sent
        self.max_concurrent_calls = 0

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> OtlpReceiver:
        """Listen and serve; returns self with .port set."""
        if self._server is not None:
            raise RuntimeError("receiver already started")
        self._stopping = threading.Event()
        self._executor = futures.ThreadPoolExecutor(self._max_workers, thread_name_prefix="otlp-receiver")
        options = [("grpc.so_reuseport", 0)]
        if not self.accept_gzip:
            options.append(("grpc.compression_enabled_algorithms_bitset", 1))  # identity only
        server = grpc.server(self._executor, options=options)
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(_LogsServicer(self), server)
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceServicer(self), server)
        address = f"127.0.0.1:{self.port}"
        try:
            port = self._bind(server, address)
        except RuntimeError as e:
            server.stop(None)
            self._executor.shutdown(wait=True)
            self._executor = None
            raise RuntimeError(f"OtlpReceiver cannot listen on {address}: {e}") from e
        self.port = port
        server.start()
        self._server = server
        return self

    def _bind(self, server: grpc.Server, address: str) -> int:
        if self.tls is None:
            port = server.add_insecure_port(address)
        else:
            creds = grpc.ssl_server_credentials(
                [(self.tls.private_key, self.tls.cert_chain)],
                root_certificates=self.tls.client_ca,
                require_client_auth=self.tls.client_ca is not None)
            port = server.add_secure_port(address, creds)
        if not port:  # older grpc returns 0 instead of raising
            raise RuntimeError("bind failed")
        return port

    def stop(self, grace: float = 0) -> None:
        """Stop serving (pending calls get `grace` seconds); safe to call twice."""
        server, executor = self._server, self._executor
        self._server = self._executor = None
        if server is None:
            return
        server.stop(grace).wait()  # after grace, calls are cancelled
        self._stopping.set()  # and handlers sleeping in delay_responses wake up
        executor.shutdown(wait=True)

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def target(self) -> str:
        """gRPC channel target: "127.0.0.1:PORT", or "localhost:PORT" with TLS."""
        host = "localhost" if self.tls else "127.0.0.1"
        return f"{host}:{self.port}"

    @property
    def endpoint(self) -> str:
        """OTLP endpoint URL: http://127.0.0.1:PORT, or https://localhost:PORT with TLS."""
        return f"{'https' if self.tls else 'http'}://{self.target}"

    # -- fault injection ---------------------------------------------------

    def fail_next(self, code: grpc.StatusCode, count: int = 1, *, retry_after: float | None = None,
                  signal: str = "both", message: str = "injected") -> None:
        """The next `count` calls (of `signal`) fail with `code`.

        With retry_after (seconds), a google.rpc.RetryInfo goes in the trailers twice:
        as "google.rpc.retryinfo-bin" and inside the google.rpc.Status of "grpc-status-details-bin".
        """
        self._add(_Rule(_check_signal(signal), code, message, retry_after, remaining=count))

    def fail_for(self, code: grpc.StatusCode, seconds: float, signal: str = "both", *,
                 retry_after: float | None = None, message: str = "injected") -> None:
        """Every call (of `signal`) fails with `code` for the next `seconds`."""
        self._add(_Rule(_check_signal(signal), code, message, retry_after,
                        until=time.monotonic() + seconds))

    def partial_success(self, rejected: int, message: str, count: int = 1, signal: str = "both") -> None:
        """The next `count` calls are accepted but answer partial_success(rejected, message)."""
        self._add(_Rule(_check_signal(signal), None, message, remaining=count, rejected=rejected))

    def delay_responses(self, seconds: float) -> None:
        """Every call waits this long before answering (0 turns it off)."""
        with self._lock:
            self._delay = seconds

    def clear_faults(self) -> None:
        """Forget every pending fail_next / fail_for / partial_success."""
        with self._lock:
            self._rules.clear()

    def _add(self, rule: _Rule) -> None:
        with self._lock:
            self._rules.append(rule)

    def _take_rule(self, signal: str) -> _Rule | None:
        """The first active rule for signal, consuming one use of it. Caller holds _lock."""
        now = time.monotonic()
        self._rules = [r for r in self._rules if not r.expired(now)]
        for rule in self._rules:
            if rule.signal in (signal, "both"):
                rule.remaining -= 1 if rule.until is None else 0
                return rule
        return None

    # -- what arrived ------------------------------------------------------

    def log_records_with_resource(self) -> list[tuple[Resource, InstrumentationScope, LogRecord]]:
        with self._lock:
            requests = list(self.logs)
        return [(rl.resource, sl.scope, record)
                for request in requests for rl in request.resource_logs
                for sl in rl.scope_logs for record in sl.log_records]

    def spans_with_resource(self) -> list[tuple[Resource, InstrumentationScope, Span]]:
        with self._lock:
            requests = list(self.traces)
        return [(rs.resource, ss.scope, span)
                for request in requests for rs in request.resource_spans
                for ss in rs.scope_spans for span in ss.spans]

    def log_records(self) -> list[LogRecord]:
        return [record for _, _, record in self.log_records_with_resource()]

    def spans(self) -> list[Span]:
        return [span for _, _, span in self.spans_with_resource()]

    def call_count(self, signal: str = "both", outcome: str | None = None) -> int:
        """Calls seen for signal ("both" = all) with outcome (None = any)."""
        with self._lock:
            return sum(n for (s, o), n in self.calls.items()
                       if signal in (s, "both") and outcome in (o, None))

    def wait_for(self, predicate: Callable[[OtlpReceiver], bool], timeout: float = 10) -> bool:
        """Poll predicate(self) until it is true (returns True) or timeout passes (False)."""
        deadline = time.monotonic() + timeout
        while not predicate(self):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    # -- the handler -------------------------------------------------------

    def _handle(self, signal: str, request, context: grpc.ServicerContext):
        metadata = dict(context.invocation_metadata())
        items = _count_items(signal, request)
        call = Call(signal, metadata, time.monotonic(), items=items)
        with self._lock:
            self.metadata.append(metadata)
            self.call_log.append(call)
            self._in_flight += 1
            self.max_concurrent_calls = max(self.max_concurrent_calls, self._in_flight)
            rule = self._take_rule(signal)
            delay = self._delay
        try:
            self._sleep(delay, context)
            if not context.is_active() or self._stopping.is_set():
                self._finish(call, "cancelled")
                context.abort(grpc.StatusCode.CANCELLED, "receiver stopping or call cancelled")
            if rule is not None and rule.code is not None:
                self._finish(call, rule.code.name)
                context.set_trailing_metadata(_retry_trailers(rule))
                context.abort(rule.code, rule.message)
            with self._lock:
                (self.logs if signal == "logs" else self.traces).append(request)
                if rule is not None:
                    self.rejected[signal] += rule.rejected
            self._finish(call, "ok" if rule is None else "partial")
            return _response(signal, rule)
        finally:
            with self._lock:
                self._in_flight -= 1

    def _finish(self, call: Call, outcome: str) -> None:
        with self._lock:
            call.outcome, call.ended = outcome, time.monotonic()
            self.calls[call.signal, outcome] += 1

    def _sleep(self, seconds: float, context: grpc.ServicerContext) -> None:
        """Sleep, waking early when the call is cancelled or the receiver stops."""
        deadline = time.monotonic() + seconds
        while context.is_active() and not self._stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._stopping.wait(min(left, 0.02))


def _count_items(signal: str, request) -> int:
    if signal == "logs":
        return sum(len(sl.log_records) for rl in request.resource_logs for sl in rl.scope_logs)
    return sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)


def _retry_trailers(rule: _Rule) -> tuple[tuple[str, bytes], ...]:
    """RetryInfo both ways clients read it, or nothing without retry_after."""
    if rule.retry_after is None:
        return ()
    info = error_details_pb2.RetryInfo()
    info.retry_delay.FromNanoseconds(round(rule.retry_after * 1e9))
    detail = any_pb2.Any()
    detail.Pack(info)
    status = status_pb2.Status(code=rule.code.value[0], message=rule.message, details=[detail])
    return ((RETRY_INFO_KEY, info.SerializeToString()),
            (STATUS_DETAILS_KEY, status.SerializeToString()))


def _response(signal: str, rule: _Rule | None):
    if signal == "logs":
        response = logs_service_pb2.ExportLogsServiceResponse()
        if rule is not None:
            response.partial_success.rejected_log_records = rule.rejected
            response.partial_success.error_message = rule.message
        return response
    response = trace_service_pb2.ExportTraceServiceResponse()
    if rule is not None:
        response.partial_success.rejected_spans = rule.rejected
        response.partial_success.error_message = rule.message
    return response
