"""QueuedExporter's durable frontier with a spool (durable_prefix, on_durable): it never passes a record
still in memory, and a batch dropped for good does not stop it."""

from __future__ import annotations

import threading

from otel_tcplife.delivery.testing import FakeSender

from .test_delivery_spool import assert_accounted, encode, records, spooled_exporter, wait_until


class HeldEncode:
    """encode that holds its first batch until released, as a spooler busy encoding or waiting for room."""

    def __init__(self, fail_first: bool = False):
        self.entered = threading.Event()
        self.release = threading.Event()
        self.fail_first = fail_first
        self.calls = 0

    def __call__(self, items):
        self.calls += 1
        if self.calls == 1:
            self.entered.set()
            assert self.release.wait(5)
            if self.fail_first:
                raise ValueError("secret")  # a bug in encode: the batch is dropped (dropped_permanent)
        return encode(items)


def held_exporter(tmp_path, held: HeldEncode, **options):
    exp, logs = spooled_exporter(tmp_path / "spool", FakeSender(), queue_capacity=10, max_batch=10,
                                 flush_interval=5.0, **options)
    exp._encode = held
    told: list[tuple[int, bool]] = []
    exp.on_durable = lambda prefix, done: told.append((prefix, done))
    return exp, told, logs


def test_records_evicted_while_the_spooler_holds_a_batch_do_not_move_the_frontier_past_it(tmp_path):
    held = HeldEncode()
    exp, told, _ = held_exporter(tmp_path, held)
    exp.start()
    exp.offer(records(10))  # a full batch: taken at once, then held in encode
    assert held.entered.wait(2)
    exp.offer(records(15, 10))  # a queue of 10: records 10..14 are evicted while 0..9 are held
    assert exp.stats.dropped_queue_full == 5
    assert exp.durable_prefix() == 0  # 0..9 are not in the spool yet
    assert told == []
    held.release.set()
    # Batch 0..9 spooled: the frontier moves past it and the records evicted meanwhile, then past 15..24.
    wait_until(lambda: exp.durable_prefix() == 25)
    assert told == [(10, False), (15, True), (25, False), (25, True)]
    exp.shutdown(2.0)
    s = assert_accounted(exp.stats)
    assert s["exported"] == 20 and s["dropped_queue_full"] == 5
    assert exp.durable_prefix() == 25


def test_a_batch_whose_encode_fails_is_settled_and_the_frontier_moves_on(tmp_path):
    held = HeldEncode(fail_first=True)
    exp, told, logs = held_exporter(tmp_path, held)
    exp.start()
    exp.offer(records(10))
    assert held.entered.wait(2)
    exp.offer(records(12, 10))  # 10, 11 evicted while 0..9 are held
    assert exp.durable_prefix() == 0
    held.release.set()
    wait_until(lambda: exp.stats.dropped_permanent == 10)
    wait_until(lambda: exp.durable_prefix() == 22)  # 0..9 dropped, 10..11 evicted, 12..21 spooled
    assert told == [(12, True), (22, False), (22, True)]
    exp.shutdown(2.0)
    s = assert_accounted(exp.stats)
    assert s["exported"] == 10 and s["dropped_permanent"] == 10 and s["dropped_queue_full"] == 2
    assert not [line for line in logs if "secret" in line]


def test_a_half_left_out_by_fit_still_settles_its_batch(tmp_path):
    def encode_or_fail(items):  # the whole batch encodes too large; its first half fails to encode again
        if len(items) == 10:
            return [(b"x" * 4096, 10)]
        if items[0] == "secret-0":
            raise ValueError("secret")
        return encode(items)

    exp, logs = spooled_exporter(tmp_path / "spool", FakeSender(), queue_capacity=10, max_batch=10,
                                 spool_options={"max_bytes": 64 << 10, "segment_bytes": 2048})
    exp._encode = encode_or_fail
    exp.start()
    exp.offer(records(10))
    wait_until(lambda: exp.durable_prefix() == 10)
    exp.shutdown(2.0)
    s = assert_accounted(exp.stats)
    assert s["dropped_permanent"] == 5 and s["exported"] == 5


def test_an_eviction_while_nothing_is_held_moves_the_frontier_at_once(tmp_path):
    held = HeldEncode()
    held.release.set()
    exp, told, _ = held_exporter(tmp_path, held)  # not started: nothing is taken
    exp.offer(records(15))
    assert exp.durable_prefix() == 5
    exp.offer(records(3, 15))
    assert exp.durable_prefix() == 8
    exp.shutdown(2.0)  # the queue is flushed into the spool
    assert exp.durable_prefix() == 18 and told[-1] == (18, True)


def test_records_dropped_at_shutdown_do_not_move_the_frontier(tmp_path):
    held = HeldEncode()
    exp, told, _ = held_exporter(tmp_path, held)
    exp.start()
    exp.offer(records(10))
    assert held.entered.wait(2)
    exp.shutdown(0.05)  # the spooler is still in encode: its batch is counted as dropped_shutdown
    held.release.set()
    s = assert_accounted(exp.stats)
    assert s["dropped_shutdown"] == 10
    assert exp.durable_prefix() == 0 and told == []  # not durable: a pinned ring buffer keeps them
