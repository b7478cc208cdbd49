"""QueuedExporter with a Spool, against the scripted FakeSender: delivery through the spool, what
shutdown leaves for the next run, duplicates after a hung send, fairness while a backlog drains, and
the accounting invariant  accepted + replayed == exported + rejected + dropped_* + spooled."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import threading
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otel_tcplife.delivery import (ExporterStats, PermanentError, QueuedExporter, RetryableError, RetryPolicy,
                                   SendResult, Spool)
from otel_tcplife.delivery import spool as spool_module
from otel_tcplife.delivery.testing import FakeSender

from .test_delivery_exporter import OUTCOMES  # what a collector may answer

FAST_RETRY = RetryPolicy(initial_interval=0.005, max_interval=0.02, max_elapsed=5.0)
SLOW_RETRY = RetryPolicy(initial_interval=1.0)  # a retry never comes within a test's shutdown timeout
REQUEST_RECORDS = 50


def encode(items: list[str]) -> list[tuple[bytes, int]]:
    chunks = [items[i:i + REQUEST_RECORDS] for i in range(0, len(items), REQUEST_RECORDS)]
    return [("\n".join(chunk).encode(), len(chunk)) for chunk in chunks]


def records(count: int, start: int = 0, prefix: str = "secret") -> list[str]:
    return [f"{prefix}-{n}" for n in range(start, start + count)]  # "secret": must never reach a log line


def delivered(sender: FakeSender) -> list[str]:
    return [record for payload in sender.delivered for record in payload.decode().split("\n")]


def spooled_exporter(directory, send, *, spool_options=None, **options) -> tuple[QueuedExporter, list[str]]:
    logs: list[str] = []
    options.setdefault("retry", FAST_RETRY)
    options.setdefault("flush_interval", 0.01)
    spool = Spool(str(directory), **{"max_bytes": 1 << 20, "fsync": "never", "log": logs.append,
                                     **(spool_options or {})})
    return QueuedExporter("test", encode, send, log=logs.append, spool=spool, **options), logs


def assert_balanced(s: dict) -> None:
    """The accounting invariant of any snapshot, taken at any instant."""
    dropped = sum(v for k, v in s.items() if k.startswith("dropped_"))
    assert s["dropped"] == dropped, s
    assert (s["accepted"] + s["replayed"] ==
            s["exported"] + s["rejected"] + dropped + s["queued"] + s["in_flight"] + s["spool_records"]), s


def assert_accounted(stats: ExporterStats) -> dict:
    """The accounting invariant after shutdown; returns the snapshot for further checks."""
    s = stats.snapshot()
    assert_balanced(s)
    assert s["queued"] == 0 and s["in_flight"] == 0, s
    assert s["spool_records"] == s["spooled"]  # what is left in the spool is exactly what was counted
    return s


def wait_until(condition, timeout: float = 2.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.002)


def test_every_snapshot_balances_while_records_move(tmp_path):
    sender = FakeSender([RetryableError("UNAVAILABLE"), PermanentError("INVALID_ARGUMENT"),
                         SendResult(rejected=2, message="over quota")] * 20, delay=0.0005)

    def slow_encode(items):  # so that snapshots see records between the queue and the spool
        time.sleep(0.0005)
        return encode(items)

    logs: list[str] = []
    spool = Spool(str(tmp_path), max_bytes=20000, fsync="never", log=logs.append)
    exp = QueuedExporter("test", slow_encode, sender, log=logs.append, spool=spool, retry=FAST_RETRY, max_batch=7,
                         max_in_flight=3, flush_interval=0.001, queue_capacity=200)
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
    assert any(s["in_flight"] for s in snapshots) and any(s["spool_records"] for s in snapshots)
    assert assert_accounted(exp.stats)["accepted"] == 3000


def test_every_record_is_delivered_once_when_the_sender_comes_back(tmp_path):
    sender = FakeSender([RetryableError("UNAVAILABLE")] * 8)
    exp, logs = spooled_exporter(tmp_path, sender, max_batch=20)
    exp.start()
    for start in range(0, 500, 25):
        exp.offer(records(25, start))
    exp.shutdown(5.0)
    assert sorted(delivered(sender)) == sorted(records(500))
    s = assert_accounted(exp.stats)
    assert (s["exported"], s["retries"], s["dropped"], s["spooled"], s["replayed"]) == (500, 8, 0, 0, 0)
    assert os.listdir(tmp_path) == []  # every segment acked and deleted
    assert not [line for line in logs if "secret" in line]


def test_shutdown_leaves_what_is_undelivered_in_the_spool_for_the_next_run(tmp_path):
    down = FakeSender(then=RetryableError("UNAVAILABLE"))
    exp, logs = spooled_exporter(tmp_path, down, retry=SLOW_RETRY, max_in_flight=2, max_batch=10)
    exp.offer(records(100))
    exp.start()
    wait_until(lambda: len(down.calls) >= 2)  # both senders are now waiting to retry
    start = time.monotonic()
    exp.shutdown(0.3)
    assert time.monotonic() - start < 0.3 + 0.2
    s = assert_accounted(exp.stats)
    assert (s["spooled"], s["dropped"], s["exported"]) == (100, 0, 0)
    assert logs[-1] == "shutdown: 100 records left in the spool for the next start"

    up = FakeSender()
    again, logs = spooled_exporter(tmp_path, up)
    again.start()
    again.shutdown(5.0)
    s = assert_accounted(again.stats)
    assert (s["replayed"], s["duplicated"], s["exported"], s["spooled"]) == (100, 0, 100, 0)
    assert sorted(delivered(up)) == sorted(records(100))  # once each: the senders released theirs
    assert logs[0] == "replaying 100 records from the spool (0 of them may have been delivered already)"


def test_a_send_still_running_at_shutdown_is_replayed_as_a_possible_duplicate(tmp_path):
    entered, release, returned = threading.Event(), threading.Event(), threading.Event()

    def hung_send(payload, timeout):
        entered.set()
        release.wait(5.0)  # ignores `timeout`
        returned.set()
        return SendResult()

    exp, _ = spooled_exporter(tmp_path, hung_send, max_in_flight=1)
    exp.offer(records(10))
    exp.start()
    assert entered.wait(1.0)
    exp.shutdown(0.1)
    assert assert_accounted(exp.stats)["spooled"] == 10
    release.set()  # it "succeeds" after all, too late to count or to ack
    assert returned.wait(1.0)
    for thread in threading.enumerate():
        if thread.name.startswith("otel-tcplife-test-"):
            thread.join(1.0)
    assert assert_accounted(exp.stats)["exported"] == 0

    up = FakeSender()
    again, _ = spooled_exporter(tmp_path, up)
    again.start()
    again.shutdown(5.0)
    s = assert_accounted(again.stats)
    assert (s["replayed"], s["duplicated"], s["exported"]) == (10, 10, 10)


def fill_backlog(directory, count: int) -> None:
    backlog = Spool(str(directory), max_bytes=1 << 20, fsync="never")
    for n in range(count):
        backlog.append(f"old-{n}".encode(), 1)
    backlog.close()


def test_live_records_overtake_a_backlog(tmp_path):
    fill_backlog(tmp_path, 30)
    sender = FakeSender(delay=0.02)
    exp, _ = spooled_exporter(tmp_path, sender, max_in_flight=2)
    exp.start()
    exp.offer(["new-0"])
    wait_until(lambda: "new-0" in delivered(sender))
    # One sender takes the newest entries, the other drains the backlog oldest-first.
    assert delivered(sender).index("new-0") < 15
    exp.shutdown(5.0)
    s = assert_accounted(exp.stats)
    assert (s["replayed"], s["accepted"], s["exported"]) == (30, 1, 31)
    assert sorted(delivered(sender)) == sorted(["new-0"] + [f"old-{n}" for n in range(30)])


def test_a_single_sender_delivers_oldest_first(tmp_path):
    fill_backlog(tmp_path, 5)
    sender = FakeSender()
    exp, _ = spooled_exporter(tmp_path, sender, max_in_flight=1)
    exp.offer(["new-0"])
    exp.start()
    exp.shutdown(5.0)
    assert delivered(sender) == [f"old-{n}" for n in range(5)] + ["new-0"]


def test_failed_requests_leave_the_spool_and_are_counted_as_before(tmp_path):
    sender = FakeSender([PermanentError("INVALID_ARGUMENT"), SendResult(rejected=2, message="bad")])
    exp, logs = spooled_exporter(tmp_path, sender, max_in_flight=1, max_batch=10)
    exp.offer(records(30))
    exp.start()
    exp.shutdown(5.0)
    s = assert_accounted(exp.stats)
    assert (s["dropped_permanent"], s["rejected"], s["exported"], s["spooled"]) == (10, 2, 18, 0)
    assert "dropped 10 records: permanent error: INVALID_ARGUMENT" in logs
    again, _ = spooled_exporter(tmp_path, FakeSender())
    assert again.stats.snapshot()["replayed"] == 0  # not sent again
    again.shutdown(1.0)


SHORT_BUDGET = RetryPolicy(initial_interval=0.01, max_interval=0.05, max_elapsed=0.05)


def test_an_outage_longer_than_the_retry_budget_keeps_the_records_in_the_spool(tmp_path):
    sender = FakeSender(then=RetryableError("UNAVAILABLE"))
    exp, logs = spooled_exporter(tmp_path, sender, retry=SHORT_BUDGET, max_batch=10, max_in_flight=2)
    exp.offer(records(20))
    exp.start()
    time.sleep(0.5)  # ten retry budgets
    exp.shutdown(0.2)
    s = assert_accounted(exp.stats)
    assert (s["dropped"], s["spooled"], s["exported"]) == (0, 20, 0)
    assert any(line.startswith("retries exhausted: 10 records kept in the spool, to be sent again: UNAVAILABLE")
               for line in logs)
    # Paused between budgets (max_interval): a few attempts per budget, not a busy loop.
    assert len(sender.calls) < 2 * 0.7 / 0.01
    assert not [line for line in logs if "secret" in line]

    up = FakeSender()
    again, _ = spooled_exporter(tmp_path, up)
    again.start()
    again.shutdown(5.0)
    assert sorted(delivered(up)) == sorted(records(20))


def test_records_kept_past_the_retry_budget_go_once_the_collector_is_back(tmp_path):
    back = threading.Event()

    def collector(payload, timeout):
        if not back.is_set():
            raise RetryableError("UNAVAILABLE")
        return sender(payload, timeout)

    sender = FakeSender()
    exp, _ = spooled_exporter(tmp_path, collector, retry=RetryPolicy(initial_interval=0.01, max_interval=0.2,
                                                                    max_elapsed=0.05), max_batch=10, max_in_flight=3)
    exp.offer(records(50))
    exp.start()
    time.sleep(0.5)
    back.set()
    wait_until(lambda: len(delivered(sender)) == 50, timeout=2.0)  # within a pause (0.2 s), then all at once
    exp.shutdown(1.0)
    s = assert_accounted(exp.stats)
    assert (s["exported"], s["dropped"], s["spooled"]) == (50, 0, 0)


def test_with_no_retries_a_spooled_request_is_tried_again_each_max_interval_not_in_a_loop(tmp_path):
    sender = FakeSender(then=RetryableError("UNAVAILABLE"))
    exp, _ = spooled_exporter(tmp_path, sender, retry=RetryPolicy(initial_interval=0.01, max_interval=0.1,
                                                                   max_elapsed=0), max_batch=10, max_in_flight=2)
    exp.offer(records(20))
    exp.start()
    time.sleep(0.5)
    exp.shutdown(0.1)
    assert len(sender.calls) <= 2 * (0.6 / 0.1 + 1)  # one attempt a sender each max_interval
    assert assert_accounted(exp.stats)["spooled"] == 20


def test_a_permanent_error_still_drops_with_a_spool(tmp_path):
    sender = FakeSender([PermanentError("INVALID_ARGUMENT")], then=RetryableError("UNAVAILABLE"))
    exp, _ = spooled_exporter(tmp_path, sender, retry=SHORT_BUDGET, max_batch=10, max_in_flight=1)
    exp.offer(records(20))
    exp.start()
    time.sleep(0.2)
    exp.shutdown(0.1)
    s = assert_accounted(exp.stats)
    assert (s["dropped_permanent"], s["dropped_retry_exhausted"], s["spooled"]) == (10, 0, 10)


def test_an_exporter_never_started_spools_its_queue(tmp_path):
    exp, _ = spooled_exporter(tmp_path, FakeSender())
    exp.offer(records(7))
    start = time.monotonic()
    exp.shutdown(5.0)
    assert time.monotonic() - start < 0.5
    s = assert_accounted(exp.stats)
    assert (s["spooled"], s["dropped"]) == (7, 0)


def test_a_full_spool_drops_and_counts(tmp_path):
    sender = FakeSender(then=RetryableError("UNAVAILABLE"))
    exp, logs = spooled_exporter(tmp_path, sender, retry=SLOW_RETRY, max_batch=10, max_in_flight=1,
                                 spool_options={"max_bytes": 2000})
    exp.start()
    for start in range(0, 300, 10):
        exp.offer(records(10, start))
    exp.shutdown(0.2)
    s = assert_accounted(exp.stats)
    assert s["dropped_spool_full"] > 0 and s["spooled"] > 0 and s["spool_bytes"] <= 2000
    assert s["accepted"] == 300
    assert any(line.startswith("spool full (2000 bytes)") for line in logs)


def test_write_errors_drop_and_count_without_stopping_delivery(tmp_path, monkeypatch):
    def no_space(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(spool_module, "_write_all", no_space)
    sender = FakeSender()
    exp, logs = spooled_exporter(tmp_path, sender, max_batch=10)
    exp.start()
    exp.offer(records(30))
    wait_until(lambda: exp.stats.snapshot()["dropped_spool_io_error"] == 30)
    monkeypatch.undo()  # the disk has room again
    exp.offer(records(5, 30))
    exp.shutdown(5.0)
    s = assert_accounted(exp.stats)
    assert (s["dropped_spool_io_error"], s["exported"]) == (30, 5)
    assert s["spool_write_errors"] == 3
    assert any(line.startswith("write error: dropped 10 records") for line in logs)


def test_requests_too_big_for_a_small_spool_are_split_to_fit(tmp_path):
    sender = FakeSender(then=RetryableError("UNAVAILABLE"))
    # 1000 bytes: segments (and entries) of 250 bytes; a request of 50 records is ~450 bytes.
    exp, logs = spooled_exporter(tmp_path, sender, retry=SLOW_RETRY, max_batch=50, max_in_flight=1,
                                 spool_options={"max_bytes": 1000, "full_policy": "drop_newest"})
    exp.offer(records(50))
    exp.start()
    exp.shutdown(0.2)
    s = assert_accounted(exp.stats)
    assert (s["spooled"], s["dropped"]) == (50, 0)
    assert not [line for line in logs if "larger" in line or "dropped" in line]

    up = FakeSender()
    again, _ = spooled_exporter(tmp_path, up, spool_options={"max_bytes": 1000})
    again.start()
    again.shutdown(5.0)
    assert sorted(delivered(up)) == sorted(records(50))
    assert all(len(payload) <= 250 - spool_module.HEADER_BYTES for payload in up.delivered)


def test_a_burst_larger_than_the_spool_waits_for_room_while_the_collector_takes_requests(tmp_path):
    sender = FakeSender(delay=0.01)
    exp, logs = spooled_exporter(tmp_path, sender, max_batch=500, max_in_flight=2,
                                 spool_options={"max_bytes": 2000})  # ~180 records
    exp.offer(records(500))
    exp.start()
    exp.shutdown(10.0)
    s = assert_accounted(exp.stats)
    assert (s["exported"], s["dropped"]) == (500, 0)
    assert sorted(delivered(sender)) == sorted(records(500))


def test_during_an_outage_a_full_spool_drops_the_oldest_at_once(tmp_path):
    sender = FakeSender(then=RetryableError("UNAVAILABLE"))
    exp, _ = spooled_exporter(tmp_path, sender, retry=SLOW_RETRY, max_batch=500, max_in_flight=1,
                              spool_options={"max_bytes": 2000})
    exp.start()
    exp.offer(records(1, 500))
    wait_until(lambda: sender.calls)  # the collector is down
    start = time.monotonic()
    exp.offer(records(500))
    wait_until(lambda: exp.stats.snapshot()["queued"] == 0 and exp.stats.snapshot()["in_flight"] == 0)
    assert time.monotonic() - start < 1.0  # no waiting for room that will not come
    exp.shutdown(0.1)
    s = assert_accounted(exp.stats)
    assert s["dropped_spool_full"] > 200 and s["spooled"] > 0  # ~180 records fit


def test_a_record_too_big_for_the_spool_on_its_own_is_dropped_and_counted(tmp_path):
    sender = FakeSender()
    exp, logs = spooled_exporter(tmp_path, sender, max_batch=10, spool_options={"max_bytes": 1000})
    exp.offer(["x" * 300] + records(9))
    exp.start()
    exp.shutdown(5.0)
    s = assert_accounted(exp.stats)
    assert (s["dropped_spool_full"], s["exported"]) == (1, 9)
    assert "dropped 1 records: an entry larger than a spool segment (250 bytes)" in logs


def test_a_payload_that_is_not_bytes_cannot_be_spooled(tmp_path):
    spool = Spool(str(tmp_path), max_bytes=1 << 20)
    logs: list[str] = []
    exp = QueuedExporter("test", lambda items: [(tuple(items), len(items))], FakeSender(), log=logs.append,
                         spool=spool, flush_interval=0.01)
    exp.offer(records(3))
    exp.start()
    exp.shutdown(5.0)
    assert assert_accounted(exp.stats)["dropped_permanent"] == 3
    assert logs == ["dropped 3 records: encode failed: a payload is tuple, not bytes (a spool needs bytes)"]


def test_snapshot_has_the_spool_figures(tmp_path):
    exp, _ = spooled_exporter(tmp_path, FakeSender())
    assert set(exp.stats.snapshot()) == {
        "accepted", "exported", "retries", "rejected", "dropped_queue_full", "dropped_permanent",
        "dropped_retry_exhausted", "dropped_shutdown", "in_flight", "queued", "dropped", "spooled", "spool_records",
        "spool_bytes", "spool_oldest_age_s", "replayed", "duplicated", "corrupted_entries", "corrupted_records",
        "dropped_spool_full", "dropped_spool_io_error", "spool_write_errors", "spool_refused_files"}
    exp.shutdown(0.0)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(script=st.lists(OUTCOMES, max_size=10), never_succeeds=st.booleans(),
       offers=st.lists(st.integers(1, 40), max_size=6), max_batch=st.integers(1, 30),
       max_in_flight=st.integers(1, 4))
def test_every_record_is_accounted_for_across_two_runs(script, never_succeeds, offers, max_batch, max_in_flight):
    directory = tempfile.mkdtemp(prefix="spooled-exporter-")
    try:
        first = FakeSender(script, then=RetryableError("UNAVAILABLE") if never_succeeds else SendResult())
        exp, _ = spooled_exporter(directory, first, max_batch=max_batch, max_in_flight=max_in_flight,
                                  flush_interval=0.005)
        exp.start()
        offered = 0
        for count in offers:
            exp.offer(records(count, offered))
            offered += count
        exp.shutdown(0.2 if never_succeeds else 3.0)
        s1 = assert_accounted(exp.stats)
        assert s1["accepted"] == offered and s1["dropped_shutdown"] == 0

        second = FakeSender()
        again, _ = spooled_exporter(directory, second, max_in_flight=max_in_flight)
        again.start()
        again.shutdown(3.0)
        s2 = assert_accounted(again.stats)
        assert s2["replayed"] == s1["spooled"] and s2["spooled"] == 0
        seen = delivered(first) + delivered(second)
        assert len(seen) == s1["exported"] + s1["rejected"] + s2["exported"] + s2["rejected"]
        assert len(seen) - len(set(seen)) <= s2["duplicated"]
        if not s1["dropped"]:
            assert set(seen) == set(records(offered))
    finally:
        shutil.rmtree(directory)


def grouped_encode(items: list[str], runs) -> list[tuple[bytes, int]]:
    """An encode with runs that regroups the records by tag (as WireEncoder.grouped_requests does), so
    its requests do not hold the items in their order: "tag:record" lines, REQUEST_RECORDS a request."""
    groups: dict = {}
    start = 0
    for tag, count in runs:
        groups.setdefault(tag, []).extend(f"{tag}:{item}" for item in items[start:start + count])
        start += count
    lines = [line for group in groups.values() for line in group]
    return [("\n".join(lines[i:i + REQUEST_RECORDS]).encode(), len(lines[i:i + REQUEST_RECORDS]))
            for i in range(0, len(lines), REQUEST_RECORDS)]


def test_requests_of_runs_too_big_for_a_small_spool_are_split_to_fit(tmp_path):
    """With runs, encode's requests need not follow the items' order: halves of the whole batch."""
    sender = FakeSender(then=RetryableError("UNAVAILABLE"))
    logs: list[str] = []
    spool = Spool(str(tmp_path), max_bytes=1000, fsync="never", full_policy="drop_newest", log=logs.append)
    exp = QueuedExporter("test", grouped_encode, sender, log=logs.append, spool=spool, runs=True,
                         retry=SLOW_RETRY, max_batch=50, max_in_flight=1, flush_interval=0.01)
    items = records(50)
    exp.offer(items[:20], [("a", 7), ("b", 13)])
    exp.offer(items[20:], [("a", 30)])
    exp.start()
    exp.shutdown(0.2)
    s = assert_accounted(exp.stats)
    assert (s["spooled"], s["dropped"]) == (50, 0)

    up = FakeSender()
    again, _ = spooled_exporter(tmp_path, up, spool_options={"max_bytes": 1000})
    again.start()
    again.shutdown(5.0)
    tags = ["a"] * 7 + ["b"] * 13 + ["a"] * 30
    assert sorted(delivered(up)) == sorted(f"{tag}:{item}" for tag, item in zip(tags, items))
    assert all(len(payload) <= 250 - spool_module.HEADER_BYTES for payload in up.delivered)
