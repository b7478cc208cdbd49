"""Kernel timestamps (CLOCK_MONOTONIC, from bpf_ktime_get_ns) to wall-clock time."""

from __future__ import annotations

import time

REFRESH_SECONDS = 60.0  # follow NTP adjustments of the wall clock


class WallClock:
    """wall_ns = monotonic_ns + offset, the offset measured now and then."""

    def __init__(self) -> None:
        self._next_refresh = 0.0
        self.offset_ns = 0
        self.refresh()

    def refresh(self) -> None:
        # The tightest of a few samples: the read of both clocks can be preempted.
        best = None
        for _ in range(3):
            before = time.monotonic_ns()
            wall = time.time_ns()
            after = time.monotonic_ns()
            if best is None or after - before < best[0]:
                best = (after - before, wall - (before + after) // 2)
        self.offset_ns = best[1]
        self._next_refresh = time.monotonic() + REFRESH_SECONDS

    def offset(self) -> int:
        """The current offset, refreshed when it is due (call once per batch)."""
        if time.monotonic() >= self._next_refresh:
            self.refresh()
        return self.offset_ns
