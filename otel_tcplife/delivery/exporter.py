"""QueuedExporter: bounded queue -> batching -> retry -> per-request timeout -> send, in one place.

Modelled on the OpenTelemetry Collector's exporterhelper. The exporter knows nothing of what it
ships: `encode` turns a batch of items into requests, `send` pushes one request and classifies the
outcome (returns a SendResult, or raises RetryableError / PermanentError). Everything else is here.

Flow in memory (no spool): offer() puts items in the queue without blocking. max_in_flight worker
threads each loop: take up to max_batch items (waiting at most flush_interval) -> encode ->
send_with_retry each request -> account. So up to max_in_flight requests are in flight, each
retried on its own, until the retry budget (RetryPolicy.max_elapsed) runs out: then its records are
dropped and counted (dropped_retry_exhausted).

Flow with a Spool (a persistent queue on disk, see spool.py), as the Collector's persistent queue:
offer() -> memory queue -> ONE spooler thread (take up to max_batch items -> encode -> spool.append
each request; a request larger than the spool's max_payload is encoded again from each half of its
records, and so on, until every piece fits; while the collector takes requests, the spooler waits for
acks to make room rather than have the spool drop records) -> max_in_flight sender threads (spool.take() ->
send_with_retry -> spool.ack). A request leaves the spool only once its fate is known (delivered,
rejected, permanent error), or when the spool's size policy drops it (counted by the spool). The
spool is there for long outages, so retries never run out: when the retry budget does, the request
goes back to the spool (spool.release) and its sender waits max_interval, or until another request
gets through, before it takes one again (so a full spool can still drop the oldest, and a sender
does not hammer a collector that is down). Entries left at shutdown, and those of a crash, are sent
by the next run (at least once).
Fairness while a backlog drains: with max_in_flight > 1, sender 0 takes the NEWEST entry and the
others the oldest, so live data keeps flowing (one request at a time) while the backlog drains
oldest-first at a bounded rate: at most max_in_flight - 1 requests of backlog in flight. With
max_in_flight == 1, delivery is strictly oldest-first and live data waits behind the backlog.

Accounting invariant, exact in every snapshot (ExporterStats.snapshot), taken at any instant:

    accepted + replayed == exported + rejected + dropped + queued + in_flight + spool_records

where `dropped` is the sum of the dropped_* counters (dropped_queue_full, dropped_permanent,
dropped_retry_exhausted, dropped_shutdown, dropped_spool_full, dropped_spool_io_error); `queued`
counts the records in the memory queue, `in_flight` those taken from it and not yet settled (being
encoded or sent without a spool; with one, being encoded and spooled: a request being sent from the
spool is still in `spool_records`). `replayed` (records found in the spool at start),
`dropped_spool_*`, `spool_records` and `spooled` exist only with a spool. Once shutdown() has
returned, queued == in_flight == 0 and spool_records == spooled (records left in the spool for the
next run: not lost). Every record is counted exactly once on the right-hand side; no record is lost
silently. A snapshot holds every move between those figures still while it reads them (see
_hold_still): offer() is not slowed down. A record delivered before a crash but not yet acked is
sent again by the next run and counted there in `duplicated` (part of `replayed`). Records found
damaged in the spool at start (`corrupted_records`) were counted as `spooled` by the run that wrote
them, and are not part of this run's figures. Log lines carry counts, reasons and server messages,
never payload contents.

Durable frontier, with a spool (durable_prefix): how many of the records offered, counted from the
first, are settled, i.e. in the spool or counted as dropped, with none before them still in memory. A
caller that must not forget records before they are durable (a pinned ring buffer: pipeline.bind_probe)
releases up to there. Records leave the memory queue in order: taken by the one spooler thread, or
evicted, oldest first, when the queue is full. Evicted records come after the batch the spooler holds,
so while it holds one they are only noted; when the batch is settled (each of its records appended, or
counted as dropped, whatever the path), the frontier moves past the batch and the records evicted
meanwhile. An eviction while nothing is held moves it at once. Records dropped at shutdown
(dropped_shutdown) do not move it: they are not durable, and a pinned ring buffer keeps them for the
next run. on_durable(frontier, done) is told before a batch's first append (done False: records before
`frontier` are about to be durable) and after the frontier moved past a batch (done True).
"""

from __future__ import annotations

import contextlib
import itertools
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import ContextManager, Generic, Literal, TypeVar

from ..errors import PermanentError, RetryableError, RetryExhausted, SendError
from .. import log as stderr
from ..ratelimit import RateLimitedLog
from .queue import BoundedQueue, split_runs
from .retry import STOP_CHECK_INTERVAL, Progress, RetryPolicy, SendResult, send_with_retry
from .spool import Entry, Spool

T = TypeVar("T")

SHUTDOWN_GRACE = 0.05  # after the deadline, how long workers get to notice the stop before we count

# Spool.stats() keys -> ExporterStats.snapshot() keys.
_SPOOL_KEYS = {
    "records": "spool_records",  # gauge: records in the spool, in flight included
    "bytes": "spool_bytes",  # gauge
    "oldest_age_s": "spool_oldest_age_s",  # gauge
    "replayed": "replayed",  # records found in the spool at start
    "duplicated": "duplicated",  # of which possibly delivered already (dispatched before a crash)
    "corrupted_entries": "corrupted_entries",  # damaged entries found in the spool (lost)
    "corrupted_records": "corrupted_records",  # the records known to be in them (a lower bound)
    "dropped_full": "dropped_spool_full",
    "dropped_io_error": "dropped_spool_io_error",  # a write (disk full, read-only) or read-back failed
    "write_errors": "spool_write_errors",  # failed writes and fsyncs
    "refused_files": "spool_refused_files",  # not a regular file, or too large: left alone
}


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
    spooled: int = 0  # records left in the spool at shutdown, for the next run (with a spool only)
    # A gauge: records taken from the queue and not yet settled (module docstring). Every change to it
    # goes in one add() with the counter its records move to, e.g. add(exported=9, in_flight=-9).
    in_flight: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)
    _queued: Callable[[], int] = field(default=lambda: 0, init=False, repr=False, compare=False)
    _spool: Callable[[], dict] | None = field(default=None, init=False, repr=False, compare=False)
    _still: Callable[[], ContextManager] = field(default=contextlib.nullcontext, init=False, repr=False,
                                                 compare=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, count in counts.items():
                setattr(self, name, getattr(self, name) + count)

    def bind_queue(self, length: Callable[[], int]) -> None:
        """Where the `queued` gauge of snapshot() comes from (QueuedExporter binds its queue)."""
        self._queued = length

    def bind_spool(self, spool_stats: Callable[[], dict]) -> None:
        """Where the spool figures of snapshot() come from (QueuedExporter binds its spool's stats)."""
        self._spool = spool_stats

    def bind_still(self, still: Callable[[], ContextManager]) -> None:
        """A context in which no record moves between the figures of snapshot(), so that they balance
        (QueuedExporter binds its _hold_still)."""
        self._still = still

    def snapshot(self) -> dict[str, int | float]:
        """The counters, plus the gauges `in_flight` and `queued`, and `dropped` (the sum of the
        dropped_* counters). With a spool bound, also `spooled` and the spool's figures (see
        _SPOOL_KEYS); without, neither. The figures balance (module docstring)."""
        with self._still():
            with self._lock:
                counters = {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}
            counters["queued"] = self._queued()
            spool = self._spool() if self._spool is not None else None
        if spool is None:
            del counters["spooled"]
        else:
            counters.update({name: spool[key] for key, name in _SPOOL_KEYS.items()})
        counters["dropped"] = sum(v for k, v in counters.items() if k.startswith("dropped_"))
        return counters


def _describe(error: Exception) -> str:
    """A loggable description: a SendError's reason is written by the sender for logs; the message of
    any other exception could quote the payload, so only its type is shown."""
    return str(error) if isinstance(error, SendError) else type(error).__name__


class _InFlight:
    """The records workers have taken from the queue and not yet accounted for, by batch.

    close() (at the shutdown deadline) counts them all as dropped_shutdown. A worker that reports on
    its batch after that finds it gone and counts nothing, so no record is counted twice. Whatever
    accounts for records takes them off the stats' in_flight gauge in the same add().
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
                self._stats.add(dropped_shutdown=records, in_flight=-records)
                return None
            batch = next(self._ids)
            self._held[batch] = records
            return batch

    def settle(self, batch: int, **counts: int) -> None:
        """Accounts for some of a batch's records, e.g. settle(b, exported=97, rejected=3)."""
        with self._lock:
            if batch not in self._held:
                return  # shutdown counted them already
            settled = sum(counts.values())
            self._held[batch] -= settled
            self._stats.add(in_flight=-settled, **counts)

    def release(self, batch: int) -> int:
        """Forgets a batch; returns how many of its records were never accounted for."""
        with self._lock:
            return self._held.pop(batch, 0)

    def close(self) -> None:
        """Counts everything still held as dropped_shutdown; later batches are counted so on arrival."""
        with self._lock:
            self._closed = True
            held = sum(self._held.values())
            self._stats.add(dropped_shutdown=held, in_flight=-held)
            self._held.clear()



class QueuedExporter(Generic[T]):
    """Delivers items through `encode` and `send` with a bounded queue, batching, retries,
    max_in_flight concurrent requests, an optional spool on disk, and a shutdown deadline.
    See the module docstring."""

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
        spool: Spool | None = None,
        runs: bool = False,
    ):
        """encode(items) returns requests as (payload, record_count) pairs whose counts sum to
        len(items); it splits large batches itself. send(payload, timeout_seconds) pushes one request.
        runs: offer(items, runs) labels items with tags (BoundedQueue's runs), and encode is called as
        encode(items, runs) with the runs of the batch; its requests need not then hold the items in
        their order (it may group them by tag).
        With a spool, payloads must be bytes, and the exporter closes the spool at shutdown.
        log defaults to lines "otel-tcplife: <name>: <message>" on stderr."""
        if max_batch < 1 or max_in_flight < 1:
            raise ValueError("max_batch and max_in_flight must be at least 1")
        if flush_interval < 0 or timeout <= 0:
            raise ValueError("flush_interval must not be negative and timeout must be positive")
        self.name = name
        self.stats = stats if stats is not None else ExporterStats()
        self._encode = encode
        self._runs = runs
        self._send = send
        self._max_batch = max_batch
        self._flush_interval = flush_interval
        self._max_in_flight = max_in_flight
        self._timeout = timeout
        self._retry = retry
        self._log = log or stderr.named(name)
        self._warn = RateLimitedLog(self._log)
        self._rng = random.Random()
        self._progress = Progress()  # a success anywhere ends the other requests' backoff
        self._collector_up = True  # whether the last attempt got an answer (see _wait_for_room)

        self._queue: BoundedQueue[T] = BoundedQueue(queue_capacity)
        self.stats.bind_queue(self._queue.__len__)
        self.stats.bind_still(self._hold_still)
        self._in_flight = _InFlight(self.stats)
        # One worker at a time waits in take(), so a trickle of records becomes one request per
        # flush_interval rather than one per worker; the others are sending meanwhile.
        self._take_lock = threading.Lock()
        self._lock = threading.Lock()  # orders offer() against shutdown() closing the queue
        self._closing = False
        self._deadline: float | None = None  # time.monotonic() deadline, set by shutdown()
        self._stop = threading.Event()  # set at the deadline: no new attempts, retry waits end
        self._workers: list[threading.Thread] = []

        # With a spool (see _spool_work and _send_spooled).
        self._spool = spool
        if spool is not None:
            self.stats.bind_spool(spool.stats)
        # Orders spool appends and acks, and their counting, against shutdown taking stock: after
        # that (`_settled`) nothing more is counted and the spool is closed.
        self._account = threading.Lock()
        self._settled = False
        self._spooling = 0  # records the spooler took from the queue and has neither spooled nor counted
        # Senders wait here for entries. `_appended` counts appends, so a sender waits only if nothing
        # was appended since it last looked; `_spooler_done`: no more appends will come.
        self._spool_ready = threading.Condition(threading.Lock())
        self._appended = 0
        self._spooler_done = False
        self._spooler_started = False
        # The durable frontier (module docstring), under `_frontier`, a lock taken last (inside any other).
        self._frontier = threading.Lock()
        self._prefix = 0  # records offered, from the first, all settled
        self._hold = 0  # records of the batch the spooler took and has not settled (0: none)
        self._hold_evicted = 0  # records evicted from the queue while it held that batch: they come after it
        self.on_durable: Callable[[int, bool], None] | None = None

    def start(self) -> None:
        """Starts the daemon worker threads (once): max_in_flight workers, plus a spooler with a spool."""
        with self._lock:
            if self._workers or self._closing:
                return
            if self._spool is None:
                targets = [(self._work, ())] * self._max_in_flight
            else:
                self._log_replay()
                self._spooler_started = True
                worker = threading.Thread(target=self._spool_work, name=f"otel-tcplife-{self.name}-spooler",
                                          daemon=True)
                worker.start()
                self._workers.append(worker)
                # Sender 0 keeps live data flowing while the others drain a backlog (module docstring).
                targets = [(self._send_spooled, ("newest" if i == 0 and self._max_in_flight > 1 else "oldest",))
                           for i in range(self._max_in_flight)]
            for i, (target, args) in enumerate(targets):
                worker = threading.Thread(target=target, args=args, name=f"otel-tcplife-{self.name}-{i}", daemon=True)
                worker.start()
                self._workers.append(worker)

    def offer(self, items: Sequence[T], runs: Sequence[tuple[object, int]] | None = None) -> None:
        """Queues items without blocking; when the queue is full the oldest records are dropped.
        runs: (tag, count) pairs labelling the items in order (see BoundedQueue), for encode."""
        if not items:
            return
        with self._lock:  # counted under the lock too, so that a snapshot sees them queued and accepted
            closing = self._closing
            if not closing:
                dropped = self._queue.put_many(items, runs)
                if not dropped:
                    self.stats.add(accepted=len(items))
                    return
                self.stats.add(accepted=len(items), dropped_queue_full=dropped)
                self._evicted(dropped)
            else:
                self.stats.add(accepted=len(items), dropped_shutdown=len(items))
        if closing:
            self._warn("offer_closed", len(items), "shutting down: dropped {n} records offered late")
        else:
            self._warn("queue_full", dropped, f"queue full ({self._queue.capacity} records): "
                                              "dropped the oldest {n} records")

    def shutdown(self, timeout: float) -> None:
        """Stops accepting and drains the queue, retrying only until now + timeout.

        Without a spool, at that deadline the retry waits end and everything not delivered, queued or
        in flight, is counted as dropped_shutdown. With a spool, the queue is flushed into the spool
        first; at the deadline, what is not delivered stays in the spool (entries in flight are
        released) and is counted as `spooled`; then the spool is closed.
        Returns by the deadline plus SHUTDOWN_GRACE, even if a sender ignores its timeout (its late
        result is then not counted). Calling it again does nothing.
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
        if self._spool is not None:
            self._shutdown_spooled(deadline)
            return
        dropped_before = self.stats.dropped_shutdown
        self._join_workers(deadline)
        self._in_flight.close()
        self._drop_queued()
        self._warn.flush()
        undelivered = self.stats.dropped_shutdown - dropped_before
        if undelivered:
            self._log(f"shutdown: {undelivered} records not delivered by the deadline")

    def _drop_queued(self) -> None:
        """Counts what is left in the queue as dropped_shutdown (as it is taken: see _hold_still)."""
        while self._queue.take(self._queue.capacity, 0, lambda n: self.stats.add(dropped_shutdown=n)):
            pass

    @contextlib.contextmanager
    def _hold_still(self):
        """Holds every move of records between the figures of a snapshot: offer() counts under _lock,
        a take from the queue under the queue's lock (on_take), a spool append or ack under _account;
        the rest in one stats.add(). (The order of the locks, here as everywhere: _lock, the queue's,
        _account, then the spool's or the stats'; `_frontier` last of all.)"""
        with self._lock, self._queue.lock, self._account:
            yield

    def _took(self, count: int) -> None:
        """on_take of the workers' takes: the records are now in flight."""
        self.stats.add(in_flight=count)

    def _spool_took(self, count: int) -> None:
        """on_take of the spooler's takes: the records are now in flight, and held (durable frontier).
        Under the queue's lock, so the hold begins before any later eviction is noted. (An eviction just
        before the take, noted by offer() only after it, is then deferred to the end of the hold: the
        frontier lags, never leads.)"""
        self.stats.add(in_flight=count)
        with self._frontier:
            self._hold = count
            self._hold_evicted = 0

    def _evicted(self, count: int) -> None:
        """Records dropped from a full queue: they come after any batch the spooler holds."""
        with self._frontier:
            if self._hold:
                self._hold_evicted += count
            else:
                self._prefix += count

    def _release_hold(self, settled: bool) -> None:
        """The spooler is done with its batch: if it is settled (not cut short by shutdown), the frontier
        moves past it and the records evicted while it was held."""
        with self._frontier:
            if settled:
                self._prefix += self._hold + self._hold_evicted
            self._hold = self._hold_evicted = 0

    def durable_prefix(self) -> int:
        """With a spool: how many of the records offered, from the first, are settled (in the spool, or
        counted as dropped before shutdown): see the module docstring."""
        with self._frontier:
            return self._prefix

    def _join_workers(self, deadline: float) -> None:
        """Waits for the workers until the deadline, then ends retry waits and gives them a moment."""
        for worker in self._workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        self._stop.set()
        self._progress.wake()
        with self._spool_ready:
            self._spool_ready.notify_all()
        grace_end = time.monotonic() + SHUTDOWN_GRACE
        for worker in self._workers:
            worker.join(max(0.0, grace_end - time.monotonic()))

    def _shutdown_spooled(self, deadline: float) -> None:
        dropped_before = self.stats.dropped_shutdown
        if not self._spooler_started:  # never started: flush the queue into the spool from here
            self._spool_work()
        self._join_workers(deadline)
        self._drop_queued()  # (nothing is left, unless the spooler is stuck: what it takes, it counts)
        with self._account:
            # Take stock. A worker still busy (a sender ignoring its timeout) counts nothing from now on.
            self._settled = True
            dropped = self._spooling  # a spooler stuck in encode past the grace
            self._spooling = 0
            spooled = self._spool.stats()["records"]
            self.stats.add(dropped_shutdown=dropped, in_flight=-dropped, spooled=spooled)
            self._spool.close()
        self._warn.flush()
        undelivered = self.stats.dropped_shutdown - dropped_before
        if undelivered:
            self._log(f"shutdown: {undelivered} records not delivered by the deadline")
        if spooled:
            self._log(f"shutdown: {spooled} records left in the spool for the next start")

    # Worker side, in memory.

    def _work(self) -> None:
        while not self._stop.is_set():
            runs = [] if self._runs else None
            with self._take_lock:
                items = self._queue.take(self._max_batch, self._flush_interval, self._took, runs)
            if items:
                self._deliver(items, runs)
            elif self._queue.closed and not len(self._queue):
                return  # nothing is added after close(), so the queue stays empty

    def _deliver(self, items: list[T], runs: list[tuple[object, int]] | None = None) -> None:
        batch = self._in_flight.hold(len(items))
        if batch is None:
            return
        try:
            requests = self._encode_checked(items, runs)
            taken = len(items)
            items.clear()  # free the records now, not after the send: ~1 MB a batch, max_in_flight batches
            if requests is None:
                self._in_flight.settle(batch, dropped_permanent=taken)
            for payload, count in requests or ():
                counts = self._send_request(payload, count)
                self._in_flight.settle(batch, **(counts or {"dropped_shutdown": count}))
        except Exception as error:  # a bug (perhaps in a log function): the worker must survive it
            self._log(f"unexpected {type(error).__name__} while delivering a batch")
        # Safety net: whatever the code above failed to account for is counted, not lost.
        unaccounted = self._in_flight.release(batch)
        if unaccounted:
            self.stats.add(dropped_permanent=unaccounted, in_flight=-unaccounted)
            self._log(f"dropped {unaccounted} records that were not accounted for (a bug)")

    # Worker side, with a spool.

    def _log_replay(self) -> None:
        spool = self._spool.stats()
        if spool["replayed"]:
            self._log(f"replaying {spool['replayed']} records from the spool "
                      f"({spool['duplicated']} of them may have been delivered already)")

    def _spool_work(self) -> None:
        """The spooler: memory queue -> encode -> spool, until the queue is closed and empty."""
        try:
            while not self._stop.is_set():
                runs = [] if self._runs else None
                items = self._queue.take(self._max_batch, self._flush_interval, self._spool_took, runs)
                if items:
                    self._spool_batch(items, runs)
                elif self._queue.closed and not len(self._queue):
                    return
        finally:
            with self._spool_ready:
                self._spooler_done = True
                self._spool_ready.notify_all()

    def _spool_batch(self, items: list[T], runs: list[tuple[object, int]] | None = None) -> None:
        """Encodes and spools a batch the spooler took (held: see _spool_took), then settles it."""
        with self._account:
            if self._settled:
                self.stats.add(dropped_shutdown=len(items), in_flight=-len(items))
                self._release_hold(False)
                return
            self._spooling = len(items)
        hook = self.on_durable
        handed = hook is None
        try:
            requests = self._encode_checked(items, runs, need_bytes=True)
            if requests is not None:
                requests = self._fit(items, runs, requests)
            for payload, count in requests or ():
                self._wait_for_room(len(payload))
                with self._account:
                    if self._settled:
                        return  # shutdown counted what we hold as dropped_shutdown
                    if not handed:  # the frontier does not move while we hold the batch
                        handed = True
                        hook(self._prefix + self._hold, False)
                    self._spool.append(payload, count)  # the spool counts what it drops
                    self._spooling -= count
                    self.stats.add(in_flight=-count)
                with self._spool_ready:
                    self._appended += 1
                    self._spool_ready.notify()
        except Exception as error:  # a bug: the spooler must survive it
            self._log(f"unexpected {type(error).__name__} while spooling a batch")
        finally:
            with self._account:
                # Encode failed (requests is None, already logged), a half was left out (_fit), or the
                # code above has a bug: counted, so the batch is settled all the same.
                settled = not self._settled
                if self._spooling and settled:
                    self.stats.add(dropped_permanent=self._spooling, in_flight=-self._spooling)
                self._spooling = 0
                self._release_hold(settled)
                frontier = self._prefix
            if settled and hook is not None:
                try:
                    hook(frontier, True)
                except Exception as error:  # the spooler must survive it
                    self._log(f"unexpected {type(error).__name__} after spooling a batch")

    def _wait_for_room(self, size: int) -> None:
        """While the collector takes requests (the last attempt did not fail), waits up to a request
        timeout for acks to make room in the spool: a burst larger than a small spool is then
        delivered, not dropped by its size policy. During an outage the policy applies at once (the
        records wait in the spool, and drop_oldest keeps the newest). The memory queue fills meanwhile:
        offer() never waits."""
        end = time.monotonic() + self._timeout
        while self._collector_up and not self._spool.fits(size) and not self._stop.is_set():
            left = end - time.monotonic()
            if left <= 0:
                return
            self._progress.wait(min(left, STOP_CHECK_INTERVAL))

    def _fit(self, items: list[T], runs: list[tuple[object, int]] | None,
             requests: list[tuple[bytes, int]]) -> list[tuple[bytes, int]]:
        """The requests, each no larger than the spool takes: one that is larger is encoded again from
        each half of its records (requests cover the items in order), and so on. With runs, requests
        need not cover the items in order: if one is too large, the whole batch is encoded again from
        each half. A record too large on its own is left for the spool to drop and count; a half that
        fails to encode is left out (logged by _encode_checked, counted by the caller as
        dropped_permanent)."""
        limit = self._spool.max_payload
        fitted: list[tuple[bytes, int]] = []
        if runs is not None:
            if len(items) == 1 or all(len(payload) <= limit or count == 1 for payload, count in requests):
                return requests
            half = len(items) // 2
            for part, part_runs in zip((items[:half], items[half:]), split_runs(runs, half)):
                smaller = self._encode_checked(part, part_runs, need_bytes=True)
                if smaller is not None:
                    fitted += self._fit(part, part_runs, smaller)
            return fitted
        start = 0
        for payload, count in requests:
            part, start = items[start:start + count], start + count
            if len(payload) <= limit or count == 1:
                fitted.append((payload, count))
                continue
            for half in (part[:count // 2], part[count // 2:]):
                smaller = self._encode_checked(half, need_bytes=True)
                if smaller is not None:
                    fitted += self._fit(half, None, smaller)
        return fitted

    def _send_spooled(self, prefer: Literal["oldest", "newest"]) -> None:
        """A sender: spool.take(prefer) -> send -> ack, until the deadline or the spool is drained
        after the spooler is done."""
        while not self._stop.is_set():
            with self._spool_ready:
                appended, spooler_done = self._appended, self._spooler_done
            entry = self._spool.take(prefer)
            if entry is not None:
                if not self._send_entry(entry):
                    self._pause()
            elif spooler_done:
                return  # no more appends will come, and nothing is left to take
            else:
                with self._spool_ready:
                    if self._appended == appended and not self._spooler_done and not self._stop.is_set():
                        self._spool_ready.wait(1.0)

    def _send_entry(self, entry: Entry) -> bool:
        """Sends an entry and acks it; False if it went back to the spool undelivered instead."""
        try:
            counts = self._send_request(entry.payload, entry.count, keep=True)
        except Exception as error:  # a bug (perhaps in a log function): the sender must survive it
            self._log(f"unexpected {type(error).__name__} while sending a request")
            counts = {"dropped_permanent": entry.count}  # not retried: the bug would recur
        with self._account:
            if self._settled:
                return True  # too late to count: it stays in the spool, counted as spooled
            if counts is None:  # retries ran out, or shutdown cut them short: sent again later
                self._spool.release(entry.id)
                return False
            self._spool.ack(entry.id)
            self.stats.add(**counts)
            return True

    def _pause(self) -> None:
        """After a request went back to the spool: waits max_interval before taking one again, or
        until another request got through (the collector is back), or shutdown."""
        seen = self._progress.successes
        end = time.monotonic() + self._retry.max_interval
        while self._progress.successes == seen and not self._stop.is_set() and (left := end - time.monotonic()) > 0:
            self._progress.wait(min(left, STOP_CHECK_INTERVAL))

    # Encoding and sending, shared.

    def _encode_checked(self, items: list[T], runs: list[tuple[object, int]] | None = None,
                        need_bytes: bool = False) -> list[tuple[object, int]] | None:
        """The requests for items (with their runs, if the exporter has runs); None (logged) when encode
        fails or miscounts. The caller counts the records of a None as dropped_permanent."""
        try:
            requests = self._encode(items) if runs is None else self._encode(items, runs)
            encoded = sum(count for _, count in requests)
        except Exception as error:  # a bug in encode: drop the batch but keep the worker alive
            self._warn("encode", len(items), "dropped {n} records: encode failed", _describe(error))
            return None
        if encoded != len(items):  # sending them would break the accounting invariant
            self._warn("encode", len(items), "dropped {n} records: encode failed",
                       f"requests for {encoded} of {len(items)} records")
            return None
        if need_bytes:
            for payload, _ in requests:
                if not isinstance(payload, (bytes, bytearray, memoryview)):
                    self._warn("encode", len(items), "dropped {n} records: encode failed",
                               f"a payload is {type(payload).__name__}, not bytes (a spool needs bytes)")
                    return None
        return requests

    def _send_request(self, payload: object, records: int, keep: bool = False) -> dict[str, int] | None:
        """Sends one request, retrying; returns the counters its records go to (e.g. exported=97,
        rejected=3), or None when shutdown cut it short before its fate was known, or, with `keep`
        (a request from the spool), when the retries ran out."""
        if self._stop.is_set() or self._past_deadline():
            return None
        attempts = 0

        def attempt() -> SendResult:
            nonlocal attempts
            if attempts:
                self.stats.add(retries=1)
            attempts += 1
            try:
                result = self._send(payload, self._attempt_timeout())
            except RetryableError:
                self._collector_up = False
                raise
            self._collector_up = True
            self._progress.note_success()
            return result

        def on_retry(error: RetryableError, delay: float) -> None:
            self._warn("retry", 1, "retrying {n} failed requests", f"{error.reason} (next retry in {delay:.1f} s)")

        try:
            result = send_with_retry(attempt, self._retry, self._stop, deadline=self._deadline,
                                     on_retry=on_retry, rng=self._rng, progress=self._progress)
            rejected = min(max(result.rejected, 0), records)  # a send returning no SendResult is a bug
        except PermanentError as error:
            self._warn("permanent", records, "dropped {n} records: permanent error", error.reason)
            return {"dropped_permanent": records}
        except RetryExhausted as error:
            if error.cause != "max_elapsed":
                return None  # shutdown cut the retries short; shutdown() reports the total
            if keep:
                self._warn("kept", records, "retries exhausted: {n} records kept in the spool, to be sent "
                           "again", error.last.reason)
                return None
            self._warn("exhausted", records, "dropped {n} records: retries exhausted", error.last.reason)
            return {"dropped_retry_exhausted": records}
        except Exception as error:  # a bug in send, or an unclassified error: never kill the worker
            self._warn("send", records, "dropped {n} records: send failed", _describe(error))
            return {"dropped_permanent": records}
        if rejected:
            self._warn("partial", rejected, "server rejected {n} records (partial success)", result.message)
        elif result.message:  # the specification's way for a server to warn: the client must tell
            self._warn("partial_warning", 1, "server accepted {n} requests with a warning (partial success)",
                       result.message)
        return {"exported": records - rejected, "rejected": rejected}

    def _past_deadline(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    def _attempt_timeout(self) -> float:
        """The per-request timeout, shortened during shutdown so no attempt outlives the deadline."""
        if self._deadline is None:
            return self._timeout
        return max(0.001, min(self._timeout, self._deadline - time.monotonic()))
