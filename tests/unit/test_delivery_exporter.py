"""QueuedExporter against the scripted FakeSender: delivery, concurrency, batching, shutdown, accounting."""

from __future__ import annotations

import gc
import threading
import time
import weakref

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otel_tcplife.delivery import (ExporterStats, PermanentError, QueuedExporter, RetryableError, RetryPolicy,
                                   SendResult)
from otel_tcplife.delivery.testing import FakeSender, Slow

FAST_RETRY = RetryPolicy(initial_interval=0.005, max_interval=0.02, max_elapsed=5.0)
SLOW_RETRY = RetryPolicy(initial_interval=1.0)  # a retry never comes within a test's shutdown timeout
REQUEST_RECORDS = 50  # the test encoder splits batches into requests of at most this many records


def encode(items: list) -> list[tuple[object, int]]:
    chunks = [tuple(items[i:i + REQUEST_RECORDS]) for i in range(0, len(items), REQUEST_RECORDS)]
    return [(chunk, len(chunk)) for chunk in chunks]


def exporter(send, *, name="test", encode=encode, **options) -> tuple[QueuedExporter, list[str]]:
    logs: list[str] = []
    options.setdefault("retry", FAST_RETRY)
    options.setdefault("flush_interval", 0.01)
    return QueuedExporter(name, encode, send, log=logs.append, **options), logs


def records(count: int, start: int = 0) -> list[str]:
    return [f"secret-{n}" for n in range(start, start + count)]  # "secret": must never reach a log line


def delivered(sender: FakeSender) -> list[str]:
    return [record for payload in sender.delivered for record in payload]


def assert_balanced(s: dict) -> None:
    """The accounting invariant of any snapshot, taken at any instant."""
    dropped = (s["dropped_queue_full"] + s["dropped_permanent"] + s["dropped_retry_exhausted"]
               + s["dropped_shutdown"])
    assert s["dropped"] == dropped, s
    assert s["accepted"] == s["exported"] + s["rejected"] + dropped + s["queued"] + s["in_flight"], s


def assert_accounted(stats: ExporterStats) -> dict[str, int]:
    """The accounting invariant after shutdown: nothing left queued or in flight; returns the snapshot."""
    s = stats.snapshot()
    assert_balanced(s)
    assert s["queued"] == 0 and s["in_flight"] == 0, s
    return s


def assert_no_payload_in(logs: list[str]) -> None:
    assert not [line for line in logs if "secret" in line]


def wait_until(condition, timeout: float = 2.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.002)


def test_every_record_is_delivered_once_when_failures_are_transient():
    sender = FakeSender([RetryableError("UNAVAILABLE")] * 5
                        + [Slow(0.01, RetryableError("RESOURCE_EXHAUSTED", retry_after=0.01))])
    exp, logs = exporter(sender, max_batch=64)
    exp.start()
    for start in range(0, 1000, 10):
        exp.offer(records(10, start))
    exp.shutdown(5.0)
    assert sorted(delivered(sender)) == sorted(records(1000))
    s = assert_accounted(exp.stats)
    assert s["exported"] == 1000 and s["retries"] == 6 and s["dropped"] == 0
    assert any("UNAVAILABLE" in line for line in logs)
    assert_no_payload_in(logs)


def test_throttled_request_waits_for_retry_after():
    sender = FakeSender([RetryableError("RESOURCE_EXHAUSTED", retry_after=0.2)])
    exp, _ = exporter(sender, max_in_flight=1)
    exp.offer(records(5))
    exp.start()
    exp.shutdown(5.0)
    first, second = sender.calls
    assert second.started - first.started >= 0.2  # the fast backoff alone would be about 5 ms
    assert assert_accounted(exp.stats)["exported"] == 5


def test_permanent_error_drops_the_request_without_retrying():
    sender = FakeSender([PermanentError("INVALID_ARGUMENT: bad attribute")])
    exp, logs = exporter(sender, max_in_flight=1, max_batch=10)
    exp.offer(records(30))
    exp.start()
    exp.shutdown(5.0)
    s = assert_accounted(exp.stats)
    assert (s["dropped_permanent"], s["exported"], s["retries"]) == (10, 20, 0)
    assert len(sender.calls) == 3
    assert logs == ["dropped 10 records: permanent error: INVALID_ARGUMENT: bad attribute"]


def test_partial_success_counts_rejected_records_and_is_not_retried():
    sender = FakeSender([SendResult(rejected=3, message="3 records had an invalid trace id")])
    exp, logs = exporter(sender, max_in_flight=1, max_batch=10)
    exp.offer(records(30))
    exp.start()
    exp.shutdown(5.0)
    s = assert_accounted(exp.stats)
    assert (s["rejected"], s["exported"], s["retries"]) == (3, 27, 0)
    assert len(sender.calls) == 3
    assert logs == ["server rejected 3 records (partial success): 3 records had an invalid trace id"]


def test_a_partial_success_with_only_a_warning_is_logged_rate_limited():
    sender = FakeSender([SendResult(message="attribute dropped: too long")] * 3)
    exp, logs = exporter(sender, max_in_flight=1, max_batch=10)
    exp.offer(records(40))
    exp.start()
    exp.shutdown(5.0)
    s = assert_accounted(exp.stats)
    assert (s["exported"], s["rejected"], s["retries"]) == (40, 0, 0)
    # One line at once, the two held back within LOG_INTERVAL summed at shutdown.
    assert logs == ["server accepted 1 requests with a warning (partial success): attribute dropped: too long",
                    "server accepted 2 requests with a warning (partial success): attribute dropped: too long"]
    assert_no_payload_in(logs)


def test_a_snapshot_balances_while_a_request_is_in_flight():
    sending, release = threading.Event(), threading.Event()

    def slow_send(payload, timeout):
        sending.set()
        release.wait(5.0)
        return SendResult()

    exp, _ = exporter(slow_send, max_in_flight=1, max_batch=10)
    exp.offer(records(25))
    exp.start()
    assert sending.wait(5.0)
    s = exp.stats.snapshot()
    assert_balanced(s)
    assert (s["in_flight"], s["queued"], s["exported"]) == (10, 15, 0)  # one batch being sent
    release.set()
    exp.shutdown(5.0)
    assert assert_accounted(exp.stats)["exported"] == 25


def test_every_snapshot_balances_while_records_move():
    """Snapshots taken on another thread than offer(), while workers take, send, retry and drop."""
    sender = FakeSender([RetryableError("UNAVAILABLE"), PermanentError("INVALID_ARGUMENT"),
                         SendResult(rejected=2, message="over quota")] * 30, delay=0.0005)
    exp, _ = exporter(sender, queue_capacity=200, max_batch=7, max_in_flight=3, flush_interval=0.001)
    exp.start()
    done = threading.Event()
    snapshots: list[dict] = []

    def watch():
        while not done.is_set():
            snapshots.append(exp.stats.snapshot())

    watcher = threading.Thread(target=watch)
    watcher.start()
    for start in range(0, 3000, 30):
        exp.offer(records(30, start))
    exp.shutdown(5.0)
    done.set()
    watcher.join()
    for s in snapshots:
        assert_balanced(s)
    assert any(s["in_flight"] for s in snapshots) and any(s["queued"] for s in snapshots)
    assert assert_accounted(exp.stats)["accepted"] == 3000


def test_records_are_dropped_when_retries_are_exhausted():
    sender = FakeSender(then=RetryableError("UNAVAILABLE"))
    exp, logs = exporter(sender, retry=RetryPolicy(initial_interval=0.01, max_interval=0.01, max_elapsed=0.05))
    exp.offer(records(20))
    exp.start()
    exp.shutdown(5.0)
    s = assert_accounted(exp.stats)
    assert (s["dropped_retry_exhausted"], s["exported"]) == (20, 0)
    assert s["retries"] > 0
    assert "dropped 20 records: retries exhausted: UNAVAILABLE" in logs


def test_several_requests_are_in_flight_when_the_sender_is_slow():
    sender = FakeSender(delay=0.05)
    exp, _ = exporter(sender, max_in_flight=4, max_batch=10)
    exp.offer(records(200))
    start = time.monotonic()
    exp.start()
    exp.shutdown(5.0)
    assert 1 < sender.max_concurrent <= 4
    assert time.monotonic() - start < 20 * 0.05  # faster than one request at a time
    assert assert_accounted(exp.stats)["exported"] == 200


def test_records_are_freed_once_encoded_while_their_request_is_in_flight():
    class Record:  # weakly referenceable, unlike str or bytes
        pass

    sending, release = threading.Event(), threading.Event()

    def send(payload, timeout):
        sending.set()
        release.wait(5.0)
        return SendResult()

    exp, _ = exporter(send, encode=lambda items: [(len(items), len(items))], max_batch=10)
    items = [Record() for _ in range(10)]
    refs = [weakref.ref(item) for item in items]
    exp.offer(items)
    del items
    exp.start()
    assert sending.wait(5.0)
    gc.collect()
    assert all(ref() is None for ref in refs)  # gone before the send returns
    release.set()
    exp.shutdown(5.0)
    assert assert_accounted(exp.stats)["exported"] == 10


def test_a_lone_record_is_sent_within_the_flush_interval():
    sender = FakeSender()
    exp, _ = exporter(sender, flush_interval=0.1, max_batch=1000)
    exp.start()
    time.sleep(0.03)  # workers are waiting for a batch to fill
    offered = time.monotonic()
    exp.offer(records(1))
    wait_until(lambda: sender.delivered)
    assert sender.calls[0].started - offered <= 0.1 + 0.1
    exp.shutdown(1.0)


def test_a_full_batch_does_not_wait_for_the_flush_interval():
    sender = FakeSender()
    exp, _ = exporter(sender, flush_interval=10.0, max_batch=10)
    exp.start()
    offered = time.monotonic()
    exp.offer(records(10))
    wait_until(lambda: sender.delivered)
    assert time.monotonic() - offered < 1.0
    exp.shutdown(1.0)


def test_records_offered_together_within_the_interval_go_in_one_request():
    sender = FakeSender()
    exp, _ = exporter(sender, flush_interval=0.05, max_batch=1000, max_in_flight=4)
    exp.start()
    exp.offer(records(20))
    exp.shutdown(1.0)
    assert len(sender.calls) == 1
    assert sorted(delivered(sender)) == sorted(records(20))


def test_shutdown_honours_its_deadline_when_the_sender_never_succeeds():
    sender = FakeSender(then=RetryableError("UNAVAILABLE"))
    exp, logs = exporter(sender, retry=SLOW_RETRY, max_in_flight=2, max_batch=10)
    exp.offer(records(100))
    exp.start()
    wait_until(lambda: len(sender.calls) >= 2)  # both workers are now waiting to retry
    start = time.monotonic()
    exp.shutdown(0.3)
    assert time.monotonic() - start < 0.3 + 0.2
    s = assert_accounted(exp.stats)
    assert (s["dropped_shutdown"], s["exported"]) == (100, 0)
    assert "shutdown: 100 records not delivered by the deadline" in logs


def test_shutdown_keeps_retrying_until_the_deadline():
    sender = FakeSender([RetryableError("UNAVAILABLE")] * 3)
    exp, _ = exporter(sender, max_in_flight=1)
    exp.offer(records(10))
    exp.start()
    start = time.monotonic()
    exp.shutdown(2.0)
    assert time.monotonic() - start < 1.0  # returns once drained, not at the deadline
    s = assert_accounted(exp.stats)
    assert (s["exported"], s["retries"], s["dropped"]) == (10, 3, 0)


def test_shutdown_gives_up_at_once_on_a_retry_that_would_end_past_the_deadline():
    sender = FakeSender([Slow(0.1)], then=RetryableError("UNAVAILABLE"))
    exp, _ = exporter(sender, retry=RetryPolicy(initial_interval=1.0, jitter=0.0), max_in_flight=1, max_batch=10)
    exp.offer(records(30))
    exp.start()
    wait_until(lambda: sender.calls)
    start = time.monotonic()
    exp.shutdown(0.6)
    assert time.monotonic() - start < 0.4  # no use waiting 1 s to retry when 0.6 s are left
    s = assert_accounted(exp.stats)
    assert (s["exported"], s["dropped_shutdown"], s["retries"]) == (10, 20, 0)


def test_shutdown_of_an_exporter_never_started_counts_the_queue():
    exp, _ = exporter(FakeSender())
    exp.offer(records(7))
    start = time.monotonic()
    exp.shutdown(5.0)
    assert time.monotonic() - start < 0.5
    assert assert_accounted(exp.stats)["dropped_shutdown"] == 7


def test_a_sender_ignoring_its_timeout_does_not_hold_up_shutdown_nor_count_twice():
    entered, release, returned = threading.Event(), threading.Event(), threading.Event()

    def hung_send(payload, timeout):
        entered.set()
        release.wait(5.0)  # ignores `timeout`
        returned.set()
        return SendResult()

    exp, _ = exporter(hung_send, name="hung", max_in_flight=1)
    exp.offer(records(10))
    exp.start()
    assert entered.wait(1.0)
    start = time.monotonic()
    exp.shutdown(0.1)
    assert time.monotonic() - start < 0.1 + 0.2
    assert assert_accounted(exp.stats)["dropped_shutdown"] == 10
    release.set()  # the request "succeeds" after all, too late to count
    assert returned.wait(1.0)
    for thread in threading.enumerate():
        if thread.name.startswith("otel-tcplife-hung-"):
            thread.join(1.0)
    s = assert_accounted(exp.stats)
    assert (s["dropped_shutdown"], s["exported"]) == (10, 0)


def test_send_is_given_the_time_left_before_the_deadline():
    sender = FakeSender([Slow(0.05)])  # keeps the first request busy while shutdown begins
    exp, _ = exporter(sender, max_in_flight=1, max_batch=5, timeout=10.0)
    exp.offer(records(10))
    exp.start()
    wait_until(lambda: sender.calls)
    exp.shutdown(1.0)
    assert sender.calls[0].timeout == 10.0
    assert sender.calls[1].timeout <= 1.0


def test_queue_full_drops_the_oldest_records_and_warns_at_most_every_ten_seconds():
    sender = FakeSender()
    exp, logs = exporter(sender, queue_capacity=10)
    exp.offer(records(25))
    assert exp.stats.snapshot()["queued"] == 10
    for start in (25, 30, 35):
        exp.offer(records(5, start))
    assert logs == ["queue full (10 records): dropped the oldest 15 records"]
    exp.start()
    exp.shutdown(5.0)
    s = assert_accounted(exp.stats)
    assert (s["accepted"], s["dropped_queue_full"], s["exported"]) == (40, 30, 10)
    assert sorted(delivered(sender)) == sorted(records(10, 30))  # the newest survive
    # shutdown reports what the rate limit held back
    assert logs[1] == "queue full (10 records): dropped the oldest 15 records"


def test_offers_after_shutdown_are_counted_as_dropped():
    exp, logs = exporter(FakeSender())
    exp.start()
    exp.shutdown(1.0)
    exp.offer(records(4))
    s = assert_accounted(exp.stats)
    assert (s["accepted"], s["dropped_shutdown"]) == (4, 4)
    assert logs == ["shutting down: dropped 4 records offered late"]


def test_an_encoder_crash_drops_its_batch_and_the_worker_carries_on():
    def fragile_encode(items):
        if "secret-3" in items:
            raise ValueError(f"cannot encode {items}")  # quotes the payload: must not be logged
        return encode(items)

    sender = FakeSender()
    exp, logs = exporter(sender, encode=fragile_encode, max_in_flight=1, max_batch=5)
    exp.offer(records(20))
    exp.start()
    exp.shutdown(5.0)
    s = assert_accounted(exp.stats)
    assert (s["dropped_permanent"], s["exported"]) == (5, 15)
    assert logs == ["dropped 5 records: encode failed: ValueError"]


def test_an_encoder_that_loses_records_has_its_batch_dropped():
    def lossy_encode(items):
        return [(tuple(items[1:]), len(items) - 1)]

    sender = FakeSender()
    exp, logs = exporter(sender, encode=lossy_encode, max_in_flight=1, max_batch=10)
    exp.offer(records(10))
    exp.start()
    exp.shutdown(5.0)
    assert sender.calls == []
    assert assert_accounted(exp.stats)["dropped_permanent"] == 10
    assert logs == ["dropped 10 records: encode failed: requests for 9 of 10 records"]


def test_a_send_crash_drops_its_request_and_the_worker_carries_on():
    calls = []

    def buggy_send(payload, timeout):
        calls.append(payload)
        if len(calls) == 1:
            raise TypeError(f"bad payload {payload}")
        return SendResult()

    exp, logs = exporter(buggy_send, max_in_flight=1, max_batch=5)
    exp.offer(records(15))
    exp.start()
    exp.shutdown(5.0)
    s = assert_accounted(exp.stats)
    assert (s["dropped_permanent"], s["exported"]) == (5, 10)
    assert logs == ["dropped 5 records: send failed: TypeError"]


def test_a_send_returning_no_result_is_counted_as_a_failure():
    results = iter([None])

    def careless_send(payload, timeout):
        return next(results, SendResult())

    exp, logs = exporter(careless_send, max_in_flight=1, max_batch=5)
    exp.offer(records(10))
    exp.start()
    exp.shutdown(5.0)
    s = assert_accounted(exp.stats)
    assert (s["dropped_permanent"], s["exported"]) == (5, 5)
    assert logs == ["dropped 5 records: send failed: AttributeError"]


def test_default_log_goes_to_stderr_with_the_exporter_name(capsys):
    exp = QueuedExporter("logs", encode, FakeSender(), queue_capacity=1)
    exp.offer(records(2))
    exp.shutdown(0.0)
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "otel-tcplife: logs: queue full (1 records): dropped the oldest 1 records"
    assert err[-1] == "otel-tcplife: logs: shutdown: 1 records not delivered by the deadline"


def test_stats_snapshot_has_the_gauge_and_the_total():
    stats = ExporterStats()
    stats.add(accepted=10, exported=4, dropped_queue_full=1, dropped_permanent=2, dropped_shutdown=3)
    stats.bind_queue(lambda: 5)
    s = stats.snapshot()
    assert s["queued"] == 5 and s["dropped"] == 6
    assert set(s) == {"accepted", "exported", "retries", "rejected", "dropped_queue_full", "dropped_permanent",
                      "dropped_retry_exhausted", "dropped_shutdown", "in_flight", "queued", "dropped"}


OUTCOMES = st.sampled_from([
    SendResult(),
    SendResult(rejected=1, message="partial"),
    SendResult(rejected=99, message="more than sent"),
    RetryableError("UNAVAILABLE"),
    RetryableError("RESOURCE_EXHAUSTED", retry_after=0.01),
    PermanentError("INVALID_ARGUMENT"),
    Slow(0.01),
    Slow(0.01, RetryableError("DEADLINE_EXCEEDED")),
])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(script=st.lists(OUTCOMES, max_size=12), never_succeeds=st.booleans(),
       offers=st.lists(st.integers(1, 40), max_size=8), capacity=st.integers(1, 100),
       max_batch=st.integers(1, 30), max_in_flight=st.integers(1, 4))
def test_every_record_is_accounted_for_exactly_once(script, never_succeeds, offers, capacity, max_batch,
                                                    max_in_flight):
    sender = FakeSender(script, then=RetryableError("UNAVAILABLE") if never_succeeds else SendResult())
    exp, logs = exporter(sender, queue_capacity=capacity, max_batch=max_batch, max_in_flight=max_in_flight,
                         flush_interval=0.005)
    exp.start()
    offered = 0
    for count in offers:
        exp.offer(records(count, offered))
        offered += count
    exp.shutdown(0.2 if never_succeeds else 3.0)
    s = assert_accounted(exp.stats)
    assert s["accepted"] == offered
    # The counters agree with what the server saw: each record accepted at most once, all counted.
    seen = delivered(sender)
    assert len(seen) == len(set(seen)) == s["exported"] + s["rejected"]
    if not never_succeeds:
        assert s["dropped_shutdown"] == 0 and s["dropped_retry_exhausted"] == 0
    assert_no_payload_in(logs)


def test_runs_reach_encode_in_memory():
    from .test_delivery_spool import delivered, grouped_encode, records as named_records

    sender = FakeSender()
    exp = QueuedExporter("test", grouped_encode, sender, runs=True, max_batch=1000, flush_interval=0.01,
                         log=lambda line: None)
    exp.offer(named_records(3), [("a", 1), ("b", 2)])
    exp.offer(named_records(2, 3), [("a", 2)])
    exp.start()
    exp.shutdown(5.0)
    assert assert_accounted(exp.stats)["exported"] == 5
    assert sorted(delivered(sender)) == ["a:secret-0", "a:secret-3", "a:secret-4", "b:secret-1", "b:secret-2"]
