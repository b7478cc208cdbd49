"""Protocol-agnostic delivery: bounded queue -> batching -> [disk spool] -> retry -> timeout -> send.

Modelled on the OpenTelemetry Collector's exporterhelper, composed in QueuedExporter. It knows
nothing of TCP, OTLP or gRPC: a protocol plugs in an `encode` (items -> requests) and a `send`
(one request -> SendResult, or RetryableError / PermanentError). A scripted fake sender for tests
lives in otel_tcplife.delivery.testing. An optional Spool (spool.py) persists requests on disk
between encoding and sending, for at-least-once delivery across restarts and crashes.
"""

from ..errors import PermanentError, RetryableError, RetryExhausted, SendError
from .exporter import ExporterStats, QueuedExporter
from .queue import BoundedQueue
from .retry import RetryPolicy, SendResult, send_with_retry
from .spool import Entry, Spool, SpoolDirectoryError, check_directory

__all__ = [
    "BoundedQueue",
    "Entry",
    "ExporterStats",
    "PermanentError",
    "QueuedExporter",
    "RetryExhausted",
    "RetryPolicy",
    "RetryableError",
    "SendError",
    "SendResult",
    "Spool",
    "SpoolDirectoryError",
    "check_directory",
    "send_with_retry",
]
