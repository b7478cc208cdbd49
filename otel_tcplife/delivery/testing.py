"""A scripted fake sender, for tests of QueuedExporter and of anything built on it.

    sender = FakeSender([RetryableError("UNAVAILABLE"), SendResult(rejected=2, message="bad")])
    exporter = QueuedExporter("test", encode, sender)

Each call takes the next outcome of the script; once the script is used up, every call gets
`then` (success by default). An outcome is one of:
    SendResult(...)            returned: success, or partial success when .rejected > 0
    a SendError instance       raised: RetryableError(...), PermanentError(...)
    Slow(seconds, outcome)     takes `seconds`, then applies `outcome`
Like a gRPC call, a call that would take longer than its timeout instead gives up at the timeout
with RetryableError("DEADLINE_EXCEEDED"). `delay` makes every call take that long.

The fake keeps what a test needs to check: the payloads delivered (success or partial success),
every call, and the largest number of calls in progress at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple, Union

from ..errors import RetryableError, SendError
from .retry import SendResult


@dataclass(frozen=True)
class Slow:
    seconds: float
    outcome: Union[SendResult, SendError] = SendResult()


Outcome = Union[SendResult, SendError, Slow]


class Call(NamedTuple):
    payload: object
    timeout: float
    started: float  # time.monotonic()


class FakeSender:
    def __init__(self, script: Iterable[Outcome] = (), *, then: Outcome = SendResult(), delay: float = 0.0):
        self._script = iter(script)
        self._then = then
        self._delay = delay
        self._lock = threading.Lock()
        self._in_progress = 0
        self.calls: list[Call] = []
        self.delivered: list[object] = []  # payloads accepted, in full or in part
        self.max_concurrent = 0

    def __call__(self, payload: object, timeout: float) -> SendResult:
        with self._lock:
            self.calls.append(Call(payload, timeout, time.monotonic()))
            outcome = next(self._script, self._then)
            self._in_progress += 1
            self.max_concurrent = max(self.max_concurrent, self._in_progress)
        try:
            seconds = self._delay
            if isinstance(outcome, Slow):
                seconds, outcome = seconds + outcome.seconds, outcome.outcome
            if seconds > timeout:
                time.sleep(timeout)
                raise RetryableError("DEADLINE_EXCEEDED")
            time.sleep(seconds)
            if isinstance(outcome, SendError):
                raise outcome
            with self._lock:
                self.delivered.append(payload)
            return outcome
        finally:
            with self._lock:
                self._in_progress -= 1
