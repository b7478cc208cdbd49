"""How a sender reports the fate of one request, and how the retry loop reports giving up.

    SendError               base class; any other subclass is treated as permanent
    ├── RetryableError      transient (UNAVAILABLE, DEADLINE_EXCEEDED, throttling): send again later
    ├── PermanentError      the server will never accept this request (INVALID_ARGUMENT): drop it
    └── RetryExhausted      raised by send_with_retry when it stops retrying; .last is the final RetryableError

A send that returns (a SendResult) was accepted; SendResult.rejected counts the records the server
refused in a partial success. Those are never retried: sending them again would be refused again.

Reasons and messages end up in log lines, so senders must not put payload contents in them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


class SendError(Exception):
    pass


class RetryableError(SendError):
    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after  # seconds the server asked us to wait (throttling), or None


class PermanentError(SendError):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# Why send_with_retry gave up:
#   "max_elapsed"  the retry budget (RetryPolicy.max_elapsed) ran out
#   "deadline"     the next attempt would start after the caller's deadline (shutdown)
#   "stopped"      the caller's stop event was set during a wait (shutdown)
GiveUpCause = Literal["max_elapsed", "deadline", "stopped"]


class RetryExhausted(SendError):
    def __init__(self, last: RetryableError, cause: GiveUpCause = "max_elapsed"):
        super().__init__(f"gave up retrying ({cause}): {last.reason}")
        self.last = last
        self.cause = cause


@dataclass(frozen=True)
class SendResult:
    rejected: int = 0  # records the server rejected in a partial success (never retried)
    message: str = ""  # the server's message for them
