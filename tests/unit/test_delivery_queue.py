"""BoundedQueue: a model-based test of its contents, runs and drop counts, and take()'s waiting."""

from __future__ import annotations

import threading
import time
from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from otel_tcplife.delivery import BoundedQueue
from otel_tcplife.delivery.queue import split_runs

TAGS = (None, b"a", b"b")  # the same objects every time, as the pipeline's Resource fields are


def expand(runs) -> list:
    """Runs -> the tag of each item."""
    assert all(count > 0 for _, count in runs)
    return [tag for tag, count in runs for _ in range(count)]


class QueueModel(RuleBasedStateMachine):
    """Compares BoundedQueue with a plain deque: append everything, then trim the oldest."""

    def __init__(self):
        super().__init__()
        self.next_item = 0  # items are distinct and increasing, so order and identity are checked

    @initialize(capacity=st.integers(1, 8))
    def create(self, capacity):
        self.queue = BoundedQueue(capacity)
        self.model: deque[int] = deque()
        self.tags: dict[int, object] = {}  # item -> the tag it was put with
        self.capacity = capacity
        self.closed = False

    @rule(count=st.integers(0, 12), as_tuple=st.booleans(), data=st.data())
    def put_many(self, count, as_tuple, data):
        items = list(range(self.next_item, self.next_item + count))
        self.next_item += count
        runs = None
        if data.draw(st.booleans()):  # runs of tags, some of them empty
            cuts = sorted(data.draw(st.lists(st.integers(0, count), max_size=4)))
            bounds = [0, *cuts, count]
            runs = [(data.draw(st.sampled_from(TAGS)), b - a) for a, b in zip(bounds, bounds[1:])]
        self.tags.update(zip(items, expand([r for r in runs if r[1]]) if runs is not None else [None] * count))
        dropped = self.queue.put_many(tuple(items) if as_tuple else items, runs)
        if self.closed:
            expected = count
        else:
            self.model.extend(items)
            expected = max(0, len(self.model) - self.capacity)
            for _ in range(expected):
                self.model.popleft()
        assert dropped == expected

    @rule(max_items=st.integers(1, 10), with_runs=st.booleans())
    def take(self, max_items, with_runs):
        runs = [] if with_runs else None
        taken = self.queue.take(max_items, 0, runs=runs)  # no wait: the model has no clock
        expected = [self.model.popleft() for _ in range(min(max_items, len(self.model)))]
        assert taken == expected
        if with_runs:
            assert expand(runs) == [self.tags[item] for item in taken]

    @rule()
    def close(self):
        self.queue.close()
        self.closed = True

    @invariant()
    def same_contents(self):
        assert len(self.queue) == len(self.model) <= self.capacity
        runs = list(map(tuple, self.queue._runs))
        assert expand(runs) == [self.tags[item] for item in self.model]
        assert all(a[0] is not b[0] for a, b in zip(runs, runs[1:]))  # one run per stretch of a tag
        assert self.queue.closed == self.closed


TestQueueModel = QueueModel.TestCase
TestQueueModel.settings = settings(max_examples=200, stateful_step_count=30, deadline=None)


def elapsed(start: float) -> float:
    return time.monotonic() - start


def later(seconds: float, action) -> threading.Thread:
    def run():
        time.sleep(seconds)
        action()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_take_returns_at_once_when_max_items_are_there():
    queue = BoundedQueue(10)
    queue.put_many([1, 2, 3, 4])
    start = time.monotonic()
    assert queue.take(3, 5.0) == [1, 2, 3]
    assert elapsed(start) < 0.5
    assert len(queue) == 1


def test_take_waits_max_wait_then_returns_what_is_there():
    queue = BoundedQueue(10)
    queue.put_many([1, 2])
    start = time.monotonic()
    assert queue.take(3, 0.05) == [1, 2]
    assert elapsed(start) >= 0.05


def test_take_on_an_empty_queue_returns_nothing_after_max_wait():
    queue = BoundedQueue(10)
    start = time.monotonic()
    assert queue.take(1, 0.05) == []
    assert 0.05 <= elapsed(start) < 1.0


def test_take_wakes_when_enough_items_arrive():
    queue = BoundedQueue(10)
    thread = later(0.05, lambda: queue.put_many([1, 2, 3]))
    start = time.monotonic()
    assert queue.take(3, 5.0) == [1, 2, 3]
    assert 0.04 <= elapsed(start) < 1.0
    thread.join()


def test_take_keeps_waiting_while_too_few_items_arrive():
    queue = BoundedQueue(10)
    thread = later(0.02, lambda: queue.put_many([1]))
    start = time.monotonic()
    assert queue.take(3, 0.1) == [1]
    assert elapsed(start) >= 0.1
    thread.join()


def test_close_wakes_a_waiting_take_with_what_is_left():
    queue = BoundedQueue(10)
    queue.put_many([1])
    thread = later(0.05, queue.close)
    start = time.monotonic()
    assert queue.take(3, 5.0) == [1]
    assert elapsed(start) < 1.0
    thread.join()


def test_after_close_take_drains_without_waiting_and_put_adds_nothing():
    queue = BoundedQueue(10)
    queue.put_many([1, 2, 3])
    queue.close()
    assert queue.put_many([4, 5]) == 2
    start = time.monotonic()
    assert queue.take(2, 5.0) == [1, 2]
    assert queue.take(2, 5.0) == [3]
    assert queue.take(2, 5.0) == []
    assert elapsed(start) < 0.5


def test_each_item_goes_to_exactly_one_of_many_takers():
    queue = BoundedQueue(10_000)
    taken: list[list[int]] = [[] for _ in range(4)]

    def taker(out: list[int]):
        while batch := queue.take(7, 0.02):
            out.extend(batch)

    threads = [threading.Thread(target=taker, args=(out,)) for out in taken]
    for thread in threads:
        thread.start()
    for start in range(0, 5000, 50):
        queue.put_many(range(start, start + 50))
    for thread in threads:
        thread.join()
    assert sorted(item for out in taken for item in out) == list(range(5000))
    for out in taken:
        assert out == sorted(out)  # each taker sees items in queue order


def test_a_batch_larger_than_capacity_keeps_its_newest_items():
    queue = BoundedQueue(3)
    queue.put_many([1])
    assert queue.put_many([2, 3, 4, 5, 6]) == 3  # 1, 2 and 3 dropped
    assert queue.take(10, 0) == [4, 5, 6]


@pytest.mark.parametrize("capacity", [0, -1])
def test_capacity_must_be_positive(capacity):
    with pytest.raises(ValueError):
        BoundedQueue(capacity)


def test_on_take_is_told_what_was_taken_while_the_lock_is_held():
    queue = BoundedQueue(10)
    queue.put_many([1, 2, 3])
    seen: list[tuple[int, int, bool]] = []  # (count, left in the queue, could another thread lock it)

    def on_take(count):
        free: list[bool] = []
        other = threading.Thread(target=lambda: free.append(queue.lock.acquire(timeout=0.05)))
        other.start()
        other.join()
        seen.append((count, len(queue), free[0]))

    assert queue.take(2, 0, on_take) == [1, 2]
    assert queue.take(5, 0.01, on_take) == [3]
    assert queue.take(5, 0.01, on_take) == []  # nothing taken: not called
    assert seen == [(2, 1, False), (1, 0, False)]


def test_runs_must_cover_the_items():
    queue = BoundedQueue(10)
    with pytest.raises(ValueError):
        queue.put_many([1, 2, 3], [(b"a", 2)])
    assert len(queue) == 0


@given(st.lists(st.tuples(st.sampled_from(TAGS), st.integers(1, 5)), max_size=6), st.integers(0, 30))
def test_split_runs(runs, count):
    first, rest = split_runs(runs, count)
    assert expand(first) + expand(rest) == expand(runs)
    assert len(expand(first)) == min(count, len(expand(runs)))
