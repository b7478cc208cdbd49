"""Every error otel-tcplife raises on purpose, in one hierarchy.

    TcplifeError            one clear line for the user (cli.main prints it); exit status 1
    ├── UsageError          bad flag, environment value or spool directory; exit status 2
    ├── ProbeError          the kernel probe could not be set up
    │   └── LibbpfError     a libbpf call failed: names the step and the errno
    └── StdoutFailed        stdout failed with nothing else left to do

    SendError               the fate of one export request (delivery); never reaches the user as is
    ├── RetryableError      transient (UNAVAILABLE, DEADLINE_EXCEEDED, throttling): send again later
    ├── PermanentError      the server will never accept this request (INVALID_ARGUMENT): drop it
    └── RetryExhausted      raised by send_with_retry when it stops retrying; .last is the final RetryableError

A sender that returns (a delivery.SendResult) was accepted. Reasons and messages end up in log
lines, so senders must not put payload contents or header values in them.
"""

from __future__ import annotations

import errno as _errno
import os
from typing import Literal


class TcplifeError(Exception):
    exit_status = 1


class UsageError(TcplifeError):
    exit_status = 2


class ProbeError(TcplifeError):
    pass


class LibbpfError(ProbeError):
    def __init__(self, step: str, err: int):
        err = abs(err)
        name = _errno.errorcode.get(err, str(err))
        super().__init__(f"{step} failed: {name} ({os.strerror(err)})")
        self.step = step
        self.errno = err


class StdoutFailed(TcplifeError):
    pass


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
