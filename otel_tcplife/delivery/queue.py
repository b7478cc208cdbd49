"""A thread-safe FIFO bounded by item count, where producers never block.

Invariants:
  * len(queue) <= capacity, always.
  * put_many never blocks and never fails: when full it evicts the OLDEST items (fresh data is worth
    more to live monitoring) and returns how many items it dropped, so the caller can count every one.
    Each item handed to put_many is either queued or counted in its return value, never both.
  * Items come out in the order they went in; each item comes out of take() at most once.
  * After close() nothing more is added, and take() no longer waits: it hands out what is left.
  * take(on_take=f) calls f(count) under the queue's lock, so the caller can count the items where
    they went without an instant in which they are neither queued nor counted (see `lock`).
  * Runs: put_many(items, runs) may label consecutive items with a tag, as (tag, count) pairs summing to
    len(items) (default: one run tagged None). take(runs=out) appends to `out` the runs of the items it
    returns, in order, summing to their number: a run cut by a take, an eviction or the capacity keeps its
    tag on both sides. The queue keeps one entry per run, not per item (OTLP's Resource of each record,
    which the encoder groups by: no tuple per record).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")


class BoundedQueue(Generic[T]):
    """FIFO bounded by item count. Policy when full: drop the OLDEST items to make room."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"queue capacity must be at least 1, not {capacity}")
        self.capacity = capacity
        self._items: deque[T] = deque()
        # [tag, count] per run of items, oldest first; the counts sum to len(self._items).
        self._runs: deque[list] = deque()
        self._ready = threading.Condition(threading.Lock())
        self._closed = False
        # max_items of each take() now waiting: put_many wakes the waiters only once one of them
        # could return, instead of on every put (a trickle of single items would wake them all).
        self._waiting: list[int] = []

    def put_many(self, items: Sequence[T], runs: Sequence[tuple[object, int]] | None = None) -> int:
        """Appends items, evicting the oldest when full; returns how many items were dropped.
        runs: (tag, count) pairs labelling the items in order, counts summing to len(items); None: one
        run tagged None."""
        if runs is not None and sum(count for _, count in runs) != len(items):
            raise ValueError(f"runs of {sum(count for _, count in runs)} items for {len(items)} items")
        with self._ready:
            if self._closed:
                return len(items)
            # If the batch alone overflows the queue, only its newest `capacity` items can stay.
            skipped = max(0, len(items) - self.capacity)
            self._items.extend(itertools.islice(items, skipped, None))
            queued, left_out = self._runs, skipped
            for tag, count in ((None, len(items)),) if runs is None else runs:
                if left_out:  # the batch's oldest, left out above
                    cut = min(left_out, count)
                    left_out, count = left_out - cut, count - cut
                if not count:
                    continue
                if queued and queued[-1][0] is tag:  # the same tag again (the same object): one run
                    queued[-1][1] += count
                else:
                    queued.append([tag, count])
            evicted = max(0, len(self._items) - self.capacity)
            for _ in range(evicted):
                self._items.popleft()
            self._drop_runs(evicted)
            if self._waiting and len(self._items) >= min(self._waiting):
                self._ready.notify_all()
            return skipped + evicted

    def _drop_runs(self, count: int, out: list[tuple[object, int]] | None = None) -> None:  # under the lock
        """Takes the oldest `count` items off the runs (appending their runs to out, if given)."""
        queued = self._runs
        while count:
            run = queued[0]
            n = min(count, run[1])
            if out is not None:
                out.append((run[0], n))
            count -= n
            if n == run[1]:
                queued.popleft()
            else:
                run[1] -= n

    def take(self, max_items: int, max_wait: float, on_take: Callable[[int], None] | None = None,
             runs: list[tuple[object, int]] | None = None) -> list[T]:
        """Removes and returns up to max_items, oldest first.

        Returns as soon as max_items are available, else after max_wait seconds with what is there
        (possibly nothing). After close() it does not wait: it returns what is left, up to max_items.
        on_take(count), if given, is called under the lock when count > 0 items are taken.
        runs, if given, gets the (tag, count) runs of the items taken appended.
        """
        if max_items < 1:
            raise ValueError(f"max_items must be at least 1, not {max_items}")
        deadline = time.monotonic() + max_wait
        with self._ready:
            self._waiting.append(max_items)
            try:
                while len(self._items) < max_items and not self._closed:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._ready.wait(remaining)
            finally:
                self._waiting.remove(max_items)
            count = min(max_items, len(self._items))
            taken = [self._items.popleft() for _ in range(count)]
            self._drop_runs(count, runs)
            if count and on_take is not None:
                on_take(count)
            return taken

    def close(self) -> None:
        """Stops accepting items and wakes every waiting take(); what is queued can still be taken."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()

    @property
    def lock(self) -> threading.Condition:
        """Held (`with queue.lock:`), nothing enters or leaves the queue."""
        return self._ready

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        return len(self._items)


def split_runs(runs: Sequence[tuple[object, int]], count: int) -> tuple[list[tuple[object, int]], list[tuple[object, int]]]:
    """Runs (as put_many and take have them) cut after `count` items: (the first count's, the rest's)."""
    first: list[tuple[object, int]] = []
    rest: list[tuple[object, int]] = []
    for tag, n in runs:
        if count >= n:
            first.append((tag, n))
        elif count > 0:
            first.append((tag, count))
            rest.append((tag, n - count))
        else:
            rest.append((tag, n))
        count -= n
    return first, rest
