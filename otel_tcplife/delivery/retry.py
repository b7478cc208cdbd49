"""Retrying one request with jittered exponential backoff, as the OpenTelemetry Collector does.

Invariants of send_with_retry:
  * It returns only what send() returned; it raises only PermanentError (at once, never retried),
    RetryExhausted (when it gives up on a RetryableError), or whatever else send() raised (not retried).
  * Before each retry it waits max(retry_after, backoff): the server's throttling hint is a floor.
  * No attempt starts later than max_elapsed after the first one, nor after `deadline`: when the next
    wait would end past either, it gives up now rather than sleep for nothing.
  * Setting `stop` ends a wait at once and no further attempt is made.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import RetryableError, RetryExhausted


@dataclass(frozen=True)
class SendResult:
    """A request the server accepted: all of it, or all but `rejected` records (partial success,
    never retried: sending them again would be refused again)."""

    rejected: int = 0  # records the server rejected in a partial success
    message: str = ""  # the server's message (a warning when rejected is 0)


@dataclass(frozen=True)
class RetryPolicy:
    initial_interval: float = 1.0
    max_interval: float = 30.0
    multiplier: float = 1.5
    jitter: float = 0.5  # randomization factor: delay * uniform(1-jitter, 1+jitter)
    max_elapsed: float = 300.0  # give up after this many seconds since the first attempt; 0 = never retry

    def __post_init__(self):
        if self.initial_interval <= 0 or self.max_interval < self.initial_interval:
            raise ValueError("retry intervals must satisfy 0 < initial_interval <= max_interval")
        if self.multiplier < 1:
            raise ValueError("retry multiplier must be at least 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("retry jitter must be between 0 and 1")
        if self.max_elapsed < 0:
            raise ValueError("retry max_elapsed must not be negative")

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """The wait after failed attempt number `attempt` (0 for the first).

        initial_interval * multiplier**attempt, capped at max_interval, then jittered; so it lies in
        [base * (1 - jitter), base * (1 + jitter)] and may exceed max_interval by the jitter, as in the
        Collector. The jitter keeps many agents that failed together from retrying together.
        """
        try:
            base = min(self.initial_interval * self.multiplier**attempt, self.max_interval)
        except OverflowError:  # a long outage: the power outgrew a float long after reaching the cap
            base = self.max_interval
        return base * rng.uniform(1 - self.jitter, 1 + self.jitter)


def _ignore(error: RetryableError, delay: float) -> None:
    pass


class Progress:
    """Counts successful sends, so that requests waiting out a backoff after a
    failure try again at once when another request got through: the collector
    is back, and each sender's own backoff (up to max_interval) need not pass."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self.successes = 0

    def note_success(self) -> None:
        with self._condition:
            self.successes += 1
            self._condition.notify_all()

    def wait(self, timeout: float) -> None:
        with self._condition:
            self._condition.wait(timeout)

    def wake(self) -> None:
        """Ends the waits now, e.g. because the stop event was just set."""
        with self._condition:
            self._condition.notify_all()


STOP_CHECK_INTERVAL = 0.2  # how often a wait on Progress looks at the stop event


def send_with_retry(
    send: Callable[[], SendResult],
    policy: RetryPolicy,
    stop: threading.Event,
    *,
    deadline: float | None = None,
    on_retry: Callable[[RetryableError, float], None] = _ignore,
    clock: Callable[[], float] = time.monotonic,
    rng: random.Random | None = None,
    progress: Progress | None = None,
) -> SendResult:
    """Calls send() until it returns; see the module docstring for when it gives up.

    `deadline` is an absolute clock() time (used during shutdown). on_retry(error, delay) is called
    before each wait, e.g. to log. `stop` is only read and waited on; the caller sets it. With
    `progress`, a backoff ends early when another send succeeds, unless the server asked for the
    delay (RetryInfo).
    """
    rng = rng or random.Random()
    first_attempt = clock()
    attempt = 0
    while True:
        try:
            return send()
        except RetryableError as error:
            last = error
        delay = max(last.retry_after or 0.0, policy.backoff(attempt, rng))
        next_attempt = clock() + delay
        if policy.max_elapsed == 0 or next_attempt - first_attempt > policy.max_elapsed:
            raise RetryExhausted(last, "max_elapsed")
        if deadline is not None and next_attempt > deadline:
            raise RetryExhausted(last, "deadline")
        if stop.is_set():
            raise RetryExhausted(last, "stopped")
        on_retry(last, delay)
        if progress is None or last.retry_after:
            if stop.wait(delay):
                raise RetryExhausted(last, "stopped")
        else:
            seen = progress.successes
            while progress.successes == seen and not stop.is_set() and (left := next_attempt - clock()) > 0:
                progress.wait(min(left, STOP_CHECK_INTERVAL))
            if stop.is_set():
                raise RetryExhausted(last, "stopped")
        attempt += 1
