"""OTLP/gRPC: push one serialized request and classify the outcome. Nothing else.

Queueing, batching and retrying live in otel_tcplife.delivery; this module
only maps gRPC results onto RetryableError / PermanentError / SendResult by the
OTLP rules (opentelemetry-proto docs/specification.md):
- retryable: CANCELLED, DEADLINE_EXCEEDED, ABORTED, OUT_OF_RANGE, UNAVAILABLE, DATA_LOSS;
- RESOURCE_EXHAUSTED only when the server sent RetryInfo (its delay is honoured);
- everything else is permanent; a partial success is returned, never retried.
"""

from __future__ import annotations

import os

# gRPC core writes its own INFO lines to stderr unless told otherwise; ours say what matters.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

import grpc  # noqa: E402
from google.rpc import error_details_pb2, status_pb2  # noqa: E402
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse  # noqa: E402
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse  # noqa: E402

from ..delivery import PermanentError, RetryableError, SendResult  # noqa: E402
from ..config import OtlpSettings  # noqa: E402
from ..otlp_config import system_roots  # noqa: E402

RETRYABLE_CODES = frozenset({
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DATA_LOSS,
})

# signal -> (method, response type, partial-success field)
SERVICES = {
    "logs": ("/opentelemetry.proto.collector.logs.v1.LogsService/Export",
             ExportLogsServiceResponse, "rejected_log_records"),
    "traces": ("/opentelemetry.proto.collector.trace.v1.TraceService/Export",
               ExportTraceServiceResponse, "rejected_spans"),
}


def retry_delay(error: grpc.RpcError) -> float | None:
    """RetryInfo's delay, from either place servers put it, or None."""
    for key, value in error.trailing_metadata() or ():
        info = None
        if key == "google.rpc.retryinfo-bin":
            info = error_details_pb2.RetryInfo.FromString(value)
        elif key == "grpc-status-details-bin":
            for detail in status_pb2.Status.FromString(value).details:
                if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                    info = error_details_pb2.RetryInfo()
                    detail.Unpack(info)
        if info is not None:
            return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    return None


def classify(error: grpc.RpcError) -> RetryableError | PermanentError:
    code = error.code()
    reason = f"{code.name}: {error.details() or 'no details'}"
    if code in RETRYABLE_CODES:
        return RetryableError(reason, retry_delay(error))
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        delay = retry_delay(error)
        if delay is not None:
            return RetryableError(reason, delay)
    return PermanentError(reason)


class OtlpGrpcSender:
    """Sends pre-serialized Export requests of one signal over one channel."""

    def __init__(self, settings: OtlpSettings, signal: str) -> None:
        method, response_type, self._rejected_field = SERVICES[signal]
        options = [
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
            # Reconnect soon after the collector is back: gRPC's default backoff grows
            # to 120 s, failing every call with the stale error meanwhile.
            ("grpc.initial_reconnect_backoff_ms", 250),
            ("grpc.min_reconnect_backoff_ms", 250),
            ("grpc.max_reconnect_backoff_ms", 2000),
        ]
        if settings.secure:
            # Always explicit roots: given None, gRPC would trust its own bundled roots.pem,
            # not the system's store the README promises.
            roots = settings.root_certificates
            credentials = grpc.ssl_channel_credentials(
                root_certificates=roots if roots is not None else system_roots(),
                private_key=settings.client_key,
                certificate_chain=settings.client_certificate,
            )
            self._channel = grpc.secure_channel(settings.target, credentials, options=options)
        else:
            self._channel = grpc.insecure_channel(settings.target, options=options)
        self._export = self._channel.unary_unary(
            method, request_serializer=None, response_deserializer=response_type.FromString)
        self._metadata = settings.headers or None
        self._compression = grpc.Compression.Gzip if settings.compression == "gzip" else grpc.Compression.NoCompression

    def __call__(self, payload: bytes, timeout: float) -> SendResult:
        try:
            response = self._export(payload, timeout=timeout, metadata=self._metadata,
                                    compression=self._compression)
        except grpc.RpcError as error:
            raise classify(error) from None
        partial = response.partial_success
        rejected = getattr(partial, self._rejected_field)
        if rejected or partial.error_message:
            return SendResult(rejected=rejected, message=partial.error_message)
        return SendResult()

    def close(self) -> None:
        self._channel.close()
