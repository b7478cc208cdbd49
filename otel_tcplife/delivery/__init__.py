"""Protocol-agnostic delivery: bounded queue -> batching -> retry -> timeout -> send.

Modelled on the OpenTelemetry Collector's exporterhelper, composed in QueuedExporter. It knows
nothing of TCP, OTLP or gRPC: a protocol plugs in an `encode` (items -> requests) and a `send`
(one request -> SendResult, or RetryableError / PermanentError). A scripted fake sender for tests
lives in otel_tcplife.delivery.testing.
"""

from .errors import PermanentError, RetryableError, RetryExhausted, SendError, SendResult
from .exporter import ExporterStats, QueuedExporter
from .queue import BoundedQueue
from .retry import RetryPolicy, send_with_retry

__all__ = [
    "BoundedQueue",
    "ExporterStats",
    "PermanentError",
    "QueuedExporter",
    "RetryExhausted",
    "RetryPolicy",
    "RetryableError",
    "SendError",
    "SendResult",
    "send_with_retry",
]
