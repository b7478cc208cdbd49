"""RetryPolicy.backoff and send_with_retry, on a fake clock that waits advance."""

from __future__ import annotations

import random
import threading
import time

import pytest

from otel_tcplife.delivery import (PermanentError, RetryableError, RetryExhausted, RetryPolicy, SendResult,
                                   send_with_retry)

NO_JITTER = RetryPolicy(initial_interval=1.0, max_interval=10.0, multiplier=2.0, jitter=0.0, max_elapsed=100.0)


class FakeTime:
    """A clock and a stop event in one: wait(seconds) advances the clock instead of sleeping."""

    def __init__(self):
        self.now = 1000.0
        self.waits: list[float] = []
        self.stop_after_waits: int | None = None  # set the stop event during this many-th wait

    def clock(self) -> float:
        return self.now

    def is_set(self) -> bool:
        return self.stop_after_waits is not None and len(self.waits) >= self.stop_after_waits

    def wait(self, seconds: float) -> bool:
        self.waits.append(seconds)
        if self.is_set():
            return True
        self.now += seconds
        return False


class Script:
    """A send() that plays outcomes in order (raising the exceptions) and records when it was called."""

    def __init__(self, clock, *outcomes):
        self.clock = clock
        self.pending = list(outcomes)
        self.calls: list[float] = []

    def __call__(self) -> SendResult:
        self.calls.append(self.clock())
        outcome = self.pending.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


def run(send: Script, policy: RetryPolicy, fake: FakeTime, **kwargs) -> SendResult:
    return send_with_retry(send, policy, fake, clock=fake.clock, rng=random.Random(7), **kwargs)


def test_backoff_grows_by_the_multiplier_up_to_the_cap():
    rng = random.Random(1)
    assert [NO_JITTER.backoff(n, rng) for n in range(6)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_backoff_never_overflows():
    assert NO_JITTER.backoff(100_000, random.Random(1)) == 10.0


@pytest.mark.parametrize("attempt", range(12))
def test_jittered_backoff_stays_within_its_bounds(attempt):
    policy = RetryPolicy()  # 1 s, x1.5, cap 30 s, jitter 0.5
    base = min(1.0 * 1.5**attempt, 30.0)
    rng = random.Random(attempt)
    delays = [policy.backoff(attempt, rng) for _ in range(500)]
    assert all(base * 0.5 <= d <= base * 1.5 for d in delays)
    assert max(delays) - min(delays) > base * 0.5  # it really is spread, not constant


@pytest.mark.parametrize("bad", [dict(initial_interval=0), dict(max_interval=0.5), dict(multiplier=0.5),
                                 dict(jitter=1.5), dict(max_elapsed=-1)])
def test_policy_rejects_nonsense(bad):
    with pytest.raises(ValueError):
        RetryPolicy(**bad)


def test_success_at_once_makes_one_call():
    fake = FakeTime()
    send = Script(fake.clock, SendResult(rejected=2, message="m"))
    assert run(send, NO_JITTER, fake) == SendResult(rejected=2, message="m")
    assert len(send.calls) == 1


def test_retryable_errors_are_retried_after_the_backoff():
    fake = FakeTime()
    retried = []
    send = Script(fake.clock, RetryableError("UNAVAILABLE"), RetryableError("UNAVAILABLE"), SendResult())
    assert run(send, NO_JITTER, fake, on_retry=lambda err, delay: retried.append((err.reason, delay))) == SendResult()
    assert fake.waits == [1.0, 2.0]
    assert retried == [("UNAVAILABLE", 1.0), ("UNAVAILABLE", 2.0)]
    assert send.calls == [1000.0, 1001.0, 1003.0]


def test_retry_after_is_a_floor_on_the_wait():
    fake = FakeTime()
    send = Script(fake.clock, RetryableError("RESOURCE_EXHAUSTED", retry_after=7.0),
                  RetryableError("RESOURCE_EXHAUSTED", retry_after=0.5), SendResult())
    run(send, NO_JITTER, fake)
    assert fake.waits == [7.0, 2.0]  # the server's 7 s over the 1 s backoff; the 2 s backoff over its 0.5 s


def test_gives_up_when_the_next_attempt_would_pass_max_elapsed():
    fake = FakeTime()
    policy = RetryPolicy(initial_interval=1.0, max_interval=10.0, multiplier=2.0, jitter=0.0, max_elapsed=10.0)
    errors = [RetryableError(f"fail {n}") for n in range(10)]
    send = Script(fake.clock, *errors)
    with pytest.raises(RetryExhausted) as raised:
        run(send, policy, fake)
    # attempts at 0, 1, 3 and 7 s; the next would be at 15 s > 10 s, so no wait for it
    assert fake.waits == [1.0, 2.0, 4.0]
    assert raised.value.last is errors[3]
    assert raised.value.cause == "max_elapsed"


def test_a_retry_after_beyond_max_elapsed_gives_up_at_once():
    fake = FakeTime()
    send = Script(fake.clock, RetryableError("RESOURCE_EXHAUSTED", retry_after=500.0))
    with pytest.raises(RetryExhausted):
        run(send, NO_JITTER, fake)
    assert fake.waits == []


def test_max_elapsed_zero_never_retries():
    fake = FakeTime()
    send = Script(fake.clock, RetryableError("UNAVAILABLE"))
    with pytest.raises(RetryExhausted) as raised:
        run(send, RetryPolicy(max_elapsed=0), fake)
    assert len(send.calls) == 1
    assert raised.value.cause == "max_elapsed"


def test_no_attempt_after_the_deadline():
    fake = FakeTime()
    send = Script(fake.clock, *[RetryableError("UNAVAILABLE") for _ in range(10)])
    with pytest.raises(RetryExhausted) as raised:
        run(send, NO_JITTER, fake, deadline=fake.now + 5.0)
    assert send.calls == [1000.0, 1001.0, 1003.0]  # the next would be at 1007, past the deadline
    assert fake.waits == [1.0, 2.0]
    assert raised.value.cause == "deadline"


def test_stop_during_a_wait_ends_the_retries():
    fake = FakeTime()
    fake.stop_after_waits = 2  # the second wait is interrupted
    send = Script(fake.clock, RetryableError("a"), RetryableError("b"), SendResult())
    with pytest.raises(RetryExhausted) as raised:
        run(send, NO_JITTER, fake)
    assert len(send.calls) == 2
    assert raised.value.cause == "stopped"
    assert raised.value.last.reason == "b"


def test_stop_interrupts_a_long_real_wait_promptly():
    stop = threading.Event()
    send = Script(time.monotonic, *[RetryableError("UNAVAILABLE", retry_after=60.0) for _ in range(3)])
    threading.Timer(0.05, stop.set).start()
    start = time.monotonic()
    with pytest.raises(RetryExhausted) as raised:
        send_with_retry(send, RetryPolicy(), stop)
    assert time.monotonic() - start < 1.0
    assert raised.value.cause == "stopped"
    assert len(send.calls) == 1


def test_real_short_intervals_retry_until_success():
    policy = RetryPolicy(initial_interval=0.01, max_interval=0.02, max_elapsed=5.0)
    send = Script(time.monotonic, RetryableError("x"), RetryableError("x", retry_after=0.03), SendResult())
    start = time.monotonic()
    assert send_with_retry(send, policy, threading.Event()) == SendResult()
    assert len(send.calls) == 3
    assert send.calls[2] - send.calls[1] >= 0.03  # retry_after honoured on the real clock
    assert time.monotonic() - start < 1.0


def test_permanent_errors_are_not_retried():
    fake = FakeTime()
    send = Script(fake.clock, PermanentError("INVALID_ARGUMENT"), SendResult())
    with pytest.raises(PermanentError):
        run(send, NO_JITTER, fake)
    assert len(send.calls) == 1
    assert fake.waits == []


def test_other_exceptions_propagate_unretried():
    fake = FakeTime()
    send = Script(fake.clock, KeyError("bug"), SendResult())
    with pytest.raises(KeyError):
        run(send, NO_JITTER, fake)
    assert len(send.calls) == 1


def test_a_success_elsewhere_ends_a_backoff_early():
    from otel_tcplife.delivery.retry import Progress
    progress = Progress()
    calls = []

    def send():
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise RetryableError("down")
        return SendResult()

    threading.Timer(0.2, progress.note_success).start()  # another request got through
    started = time.monotonic()
    send_with_retry(send, RetryPolicy(initial_interval=30, jitter=0), threading.Event(), progress=progress)
    assert len(calls) == 2 and calls[1] - started < 2


def test_a_throttled_backoff_is_not_cut_short():
    from otel_tcplife.delivery.retry import Progress
    progress = Progress()
    calls = []

    def send():
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise RetryableError("slow down", retry_after=0.6)
        return SendResult()

    threading.Timer(0.1, progress.note_success).start()
    send_with_retry(send, RetryPolicy(initial_interval=0.01, jitter=0), threading.Event(), progress=progress)
    assert calls[1] - calls[0] >= 0.6
