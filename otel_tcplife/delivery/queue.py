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
        self._ready = threading.Condition(threading.Lock())
        self._closed = False
        # max_items of each take() now waiting: put_many wakes the waiters only once one of them
        # could return, instead of on every put (a trickle of single items would wake them all).
        self._waiting: list[int] = []

    def put_many(self, items: Sequence[T]) -> int:
        """Appends items, evicting the oldest when full; returns how many items were dropped."""
        with self._ready:
            if self._closed:
                return len(items)
            # If the batch alone overflows the queue, only its newest `capacity` items can stay.
            skipped = max(0, len(items) - self.capacity)
            self._items.extend(itertools.islice(items, skipped, None))
            evicted = max(0, len(self._items) - self.capacity)
            for _ in range(evicted):
                self._items.popleft()
            if self._waiting and len(self._items) >= min(self._waiting):
                self._ready.notify_all()
            return skipped + evicted

    def take(self, max_items: int, max_wait: float, on_take: Callable[[int], None] | None = None) -> list[T]:
        """Removes and returns up to max_items, oldest first.

        Returns as soon as max_items are available, else after max_wait seconds with what is there
        (possibly nothing). After close() it does not wait: it returns what is left, up to max_items.
        on_take(count), if given, is called under the lock when count > 0 items are taken.
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
