"""QueuedExporter: bounded queue -> batching -> retry -> per-request timeout -> send, in one place.

Modelled on the OpenTelemetry Collector's exporterhelper. The exporter knows nothing of what it
ships: `encode` turns a batch of items into requests, `send` pushes one request and classifies the
outcome (returns a SendResult, or raises RetryableError / PermanentError). Everything else is here.

Flow: offer() puts items in the queue without blocking. max_in_flight worker threads each loop:
take up to max_batch items (waiting at most flush_interval) -> encode -> send_with_retry each
request -> account. So up to max_in_flight requests are in flight, each retried on its own.

Accounting invariant, exact once shutdown() has returned:

    accepted == exported + rejected + dropped_queue_full + dropped_permanent
                + dropped_retry_exhausted + dropped_shutdown

Every record offered is counted exactly once on the right-hand side; no record is lost silently.
Until shutdown, the records still queued or in flight make up the difference. Log lines carry
counts, reasons and server messages, never payload contents.
"""

from __future__ import annotations

import itertools
import random
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Generic, TypeVar

from .errors import PermanentError, RetryableError, RetryExhausted, SendError, SendResult
from .queue import BoundedQueue
from .retry import RetryPolicy, send_with_retry

T = TypeVar("T")

LOG_INTERVAL = 10.0  # seconds between two warnings of the same kind
SHUTDOWN_GRACE = 0.05  # after the deadline, how long workers get to notice the stop before we count
_MAX_REASON = 300  # characters of a reason or server message kept in a log line


@dataclass
class ExporterStats:
    """Thread-safe counters of records (except `retries`, which counts requests re-sent)."""

    accepted: int = 0  # records offered
    exported: int = 0  # records the server accepted
    retries: int = 0  # retry attempts (requests re-sent)
    rejected: int = 0  # records rejected by partial success
    dropped_queue_full: int = 0
    dropped_permanent: int = 0  # permanent error (e.g. INVALID_ARGUMENT), or encode/send crashed
    dropped_retry_exhausted: int = 0
    dropped_shutdown: int = 0  # offered after shutdown, or queued or in flight at the shutdown deadline
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)
    _queued: Callable[[], int] = field(default=lambda: 0, init=False, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, count in counts.items():
                setattr(self, name, getattr(self, name) + count)

    def bind_queue(self, length: Callable[[], int]) -> None:
        """Where the `queued` gauge of snapshot() comes from (QueuedExporter binds its queue)."""
        self._queued = length

    def snapshot(self) -> dict[str, int]:
        """The counters, plus `queued` (a gauge) and `dropped` (the sum of the dropped_* counters)."""
        with self._lock:
            counters = {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}
        counters["queued"] = self._queued()
        counters["dropped"] = sum(v for k, v in counters.items() if k.startswith("dropped_"))
        return counters


def _stderr_log(name: str) -> Callable[[str], None]:
    def log(message: str) -> None:
        sys.stderr.write(f"otel-tcplife: {name}: {message}\n")
        sys.stderr.flush()

    return log


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_REASON else text[:_MAX_REASON] + "..."


def _describe(error: Exception) -> str:
    """A loggable description: a SendError's reason is written by the sender for logs; the message of
    any other exception could quote the payload, so only its type is shown."""
    return str(error) if isinstance(error, SendError) else type(error).__name__


class _RateLimitedLog:
    """At most one line per kind of event every `interval` seconds.

    What it holds back is not lost: the counts are summed into the next line of that kind, or written
    by flush(). So the count in a line covers everything since the previous line of its kind.
    """

    def __init__(self, log: Callable[[str], None], interval: float = LOG_INTERVAL):
        self._log = log
        self._interval = interval
        self._lock = threading.Lock()
        self._next_line: dict[str, float] = {}  # kind -> earliest time of its next line
        self._held: dict[str, tuple[int, str, str]] = {}  # kind -> (count, what, detail) held back

    def __call__(self, kind: str, count: int, what: str, detail: str = "") -> None:
        """`what` is our own text with an {n} for the count; `detail` (a reason, a server message)
        is appended as is, so it needs no escaping."""
        now = time.monotonic()
        with self._lock:
            count += self._held.pop(kind, (0, "", ""))[0]
            if now < self._next_line.get(kind, now):
                self._held[kind] = (count, what, detail)
                return
            self._next_line[kind] = now + self._interval
        self._log(self._line(count, what, detail))

    def flush(self) -> None:
        with self._lock:
            held, self._held = self._held, {}
        for count, what, detail in held.values():
            self._log(self._line(count, what, detail))

    @staticmethod
    def _line(count: int, what: str, detail: str) -> str:
        line = what.format(n=count)
        return f"{line}: {_clip(detail)}" if detail else line


class _InFlight:
    """The records workers have taken from the queue and not yet accounted for, by batch.

    close() (at the shutdown deadline) counts them all as dropped_shutdown. A worker that reports on
    its batch after that finds it gone and counts nothing, so no record is counted twice.
    """

    def __init__(self, stats: ExporterStats):
        self._stats = stats
        self._lock = threading.Lock()
        self._held: dict[int, int] = {}  # batch id -> records not yet accounted for
        self._ids = itertools.count()
        self._closed = False

    def hold(self, records: int) -> int | None:
        """Registers a batch; None (and its records counted as dropped_shutdown) when closed."""
        with self._lock:
            if self._closed:
                self._stats.add(dropped_shutdown=records)
                return None
            batch = next(self._ids)
            self._held[batch] = records
            return batch

    def settle(self, batch: int, **counts: int) -> None:
        """Accounts for some of a batch's records, e.g. settle(b, exported=97, rejected=3)."""
        with self._lock:
            if batch not in self._held:
                return  # shutdown counted them already
            self._held[batch] -= sum(counts.values())
            self._stats.add(**counts)

    def release(self, batch: int) -> int:
        """Forgets a batch; returns how many of its records were never accounted for."""
        with self._lock:
            return self._held.pop(batch, 0)

    def close(self) -> None:
        """Counts everything still held as dropped_shutdown; later batches are counted so on arrival."""
        with self._lock:
            self._closed = True
            self._stats.add(dropped_shutdown=sum(self._held.values()))
            self._held.clear()


class QueuedExporter(Generic[T]):
    """Delivers items through `encode` and `send` with a bounded queue, batching, retries,
    max_in_flight concurrent requests, and a shutdown deadline. See the module docstring."""

    def __init__(
        self,
        name: str,
        encode: Callable[[list[T]], list[tuple[object, int]]],
        send: Callable[[object, float], SendResult],
        *,
        queue_capacity: int = 100_000,
        max_batch: int = 2048,
        flush_interval: float = 1.0,
        max_in_flight: int = 4,
        timeout: float = 10.0,
        retry: RetryPolicy = RetryPolicy(),
        log: Callable[[str], None] | None = None,
        stats: ExporterStats | None = None,
    ):
        """encode(items) returns requests as (payload, record_count) pairs whose counts sum to
        len(items); it splits large batches itself. send(payload, timeout_seconds) pushes one request.
        log defaults to lines "otel-tcplife: <name>: <message>" on stderr."""
        if max_batch < 1 or max_in_flight < 1:
            raise ValueError("max_batch and max_in_flight must be at least 1")
        if flush_interval < 0 or timeout <= 0:
            raise ValueError("flush_interval must not be negative and timeout must be positive")
        self.name = name
        self.stats = stats if stats is not None else ExporterStats()
        self._encode = encode
        self._send = send
        self._max_batch = max_batch
        self._flush_interval = flush_interval
        self._max_in_flight = max_in_flight
        self._timeout = timeout
        self._retry = retry
        self._log = log or _stderr_log(name)
        self._warn = _RateLimitedLog(self._log)
        self._rng = random.Random()

        self._queue: BoundedQueue[T] = BoundedQueue(queue_capacity)
        self.stats.bind_queue(self._queue.__len__)
        self._in_flight = _InFlight(self.stats)
        # One worker at a time waits in take(), so a trickle of records becomes one request per
        # flush_interval rather than one per worker; the others are sending meanwhile.
        self._take_lock = threading.Lock()
        self._lock = threading.Lock()  # orders offer() against shutdown() closing the queue
        self._closing = False
        self._deadline: float | None = None  # time.monotonic() deadline, set by shutdown()
        self._stop = threading.Event()  # set at the deadline: no new attempts, retry waits end
        self._workers: list[threading.Thread] = []

    def start(self) -> None:
        """Starts max_in_flight daemon worker threads (once)."""
        with self._lock:
            if self._workers or self._closing:
                return
            for i in range(self._max_in_flight):
                worker = threading.Thread(target=self._work, name=f"otel-tcplife-{self.name}-{i}", daemon=True)
                worker.start()
                self._workers.append(worker)

    def offer(self, items: Sequence[T]) -> None:
        """Queues items without blocking; when the queue is full the oldest records are dropped."""
        if not items:
            return
        with self._lock:
            closing = self._closing
            dropped = len(items) if closing else self._queue.put_many(items)
        if closing:
            self.stats.add(accepted=len(items), dropped_shutdown=dropped)
            self._warn("offer_closed", dropped, "shutting down: dropped {n} records offered late")
        elif dropped:
            self.stats.add(accepted=len(items), dropped_queue_full=dropped)
            self._warn("queue_full", dropped, f"queue full ({self._queue.capacity} records): "
                                              "dropped the oldest {n} records")
        else:
            self.stats.add(accepted=len(items))

    def shutdown(self, timeout: float) -> None:
        """Stops accepting and drains the queue, retrying only until now + timeout.

        At that deadline the retry waits end and everything not delivered, queued or in flight, is
        counted as dropped_shutdown. Returns by the deadline plus SHUTDOWN_GRACE, even if a sender
        ignores its timeout (its late result is then not counted). Calling it again does nothing.
        (A worker starved of CPU for longer than SHUTDOWN_GRACE between taking a batch and registering
        it counts that batch as dropped_shutdown itself when it resumes, so even then nothing is lost.)
        """
        deadline = time.monotonic() + max(0.0, timeout)
        with self._lock:
            if self._closing:
                return
            self._closing = True
            self._deadline = deadline
            self._queue.close()  # take() stops waiting; workers exit once it is empty
        dropped_before = self.stats.dropped_shutdown
        for worker in self._workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        # Deadline (or drained): end retry waits, give senders a moment to notice, then take stock.
        self._stop.set()
        grace_end = time.monotonic() + SHUTDOWN_GRACE
        for worker in self._workers:
            worker.join(max(0.0, grace_end - time.monotonic()))
        self._in_flight.close()
        while leftover := self._queue.take(self._queue.capacity, 0):
            self.stats.add(dropped_shutdown=len(leftover))
        self._warn.flush()
        undelivered = self.stats.dropped_shutdown - dropped_before
        if undelivered:
            self._log(f"shutdown: {undelivered} records not delivered by the deadline")

    # Worker side.

    def _work(self) -> None:
        while not self._stop.is_set():
            with self._take_lock:
                items = self._queue.take(self._max_batch, self._flush_interval)
            if items:
                self._deliver(items)
            elif self._queue.closed and not len(self._queue):
                return  # nothing is added after close(), so the queue stays empty

    def _deliver(self, items: list[T]) -> None:
        batch = self._in_flight.hold(len(items))
        if batch is None:
            return
        try:
            for payload, count in self._encode_checked(batch, items):
                self._send_request(batch, payload, count)
        except Exception as error:  # a bug (perhaps in a log function): the worker must survive it
            self._log(f"unexpected {type(error).__name__} while delivering a batch")
        # Safety net: whatever the code above failed to account for is counted, not lost.
        unaccounted = self._in_flight.release(batch)
        if unaccounted:
            self.stats.add(dropped_permanent=unaccounted)
            self._log(f"dropped {unaccounted} records that were not accounted for (a bug)")

    def _encode_checked(self, batch: int, items: list[T]) -> list[tuple[object, int]]:
        """The requests for items; none (and the batch dropped) when encode fails or miscounts."""
        try:
            requests = self._encode(items)
            encoded = sum(count for _, count in requests)
        except Exception as error:  # a bug in encode: drop the batch but keep the worker alive
            self._in_flight.settle(batch, dropped_permanent=len(items))
            self._warn("encode", len(items), "dropped {n} records: encode failed", _describe(error))
            return []
        if encoded != len(items):  # sending them would break the accounting invariant
            self._in_flight.settle(batch, dropped_permanent=len(items))
            self._warn("encode", len(items), "dropped {n} records: encode failed",
                       f"requests for {encoded} of {len(items)} records")
            return []
        return requests

    def _send_request(self, batch: int, payload: object, records: int) -> None:
        if self._stop.is_set() or self._past_deadline():
            self._in_flight.settle(batch, dropped_shutdown=records)
            return
        attempts = 0

        def attempt() -> SendResult:
            nonlocal attempts
            if attempts:
                self.stats.add(retries=1)
            attempts += 1
            return self._send(payload, self._attempt_timeout())

        def on_retry(error: RetryableError, delay: float) -> None:
            self._warn("retry", 1, "retrying {n} failed requests", f"{error.reason} (next retry in {delay:.1f} s)")

        try:
            result = send_with_retry(attempt, self._retry, self._stop, deadline=self._deadline,
                                     on_retry=on_retry, rng=self._rng)
            rejected = min(max(result.rejected, 0), records)  # a send returning no SendResult is a bug
        except PermanentError as error:
            self._in_flight.settle(batch, dropped_permanent=records)
            self._warn("permanent", records, "dropped {n} records: permanent error", error.reason)
        except RetryExhausted as error:
            if error.cause == "max_elapsed":
                self._in_flight.settle(batch, dropped_retry_exhausted=records)
                self._warn("exhausted", records, "dropped {n} records: retries exhausted", error.last.reason)
            else:  # shutdown cut the retries short; shutdown() reports the total
                self._in_flight.settle(batch, dropped_shutdown=records)
        except Exception as error:  # a bug in send, or an unclassified error: never kill the worker
            self._in_flight.settle(batch, dropped_permanent=records)
            self._warn("send", records, "dropped {n} records: send failed", _describe(error))
        else:
            self._in_flight.settle(batch, exported=records - rejected, rejected=rejected)
            if rejected:
                self._warn("partial", rejected, "server rejected {n} records (partial success)", result.message)

    def _past_deadline(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    def _attempt_timeout(self) -> float:
        """The per-request timeout, shortened during shutdown so no attempt outlives the deadline."""
        if self._deadline is None:
            return self._timeout
        return max(0.001, min(self._timeout, self._deadline - time.monotonic()))
