"""stdout for the formats that write there, and what happens when it fails.

A stdout that fails (its reader went away: EPIPE; a full disk or /dev/full: ENOSPC) must
not take OTLP export down with it. With export on, the first failure gives up stdout: one
warning line, the sessions it never got counted in the stats (`stdout_dropped`, whole
batches), and export goes on. Without export, stdout is the agent's only job: a reader that
went away ends the agent quietly with status 0, as the classic tool under `| head`; any
other failure ends it with one line and status 1.

Once stdout is given up, file descriptor 1 points at /dev/null, so that no later write or
the interpreter's final flush fails again.
"""

from __future__ import annotations

import errno
import os
from typing import Callable

from .errors import StdoutFailed


class StdoutGuard:
    def __init__(self, exporting: bool, warn: Callable[[str], None], fd: int = 1) -> None:
        self.exporting = exporting
        self.warn = warn
        self.fd = fd
        self.failed = False
        self.dropped = 0  # sessions not written to stdout since it failed

    def write(self, write: Callable[[], object], sessions: int) -> None:
        """Runs write(), which writes `sessions` sessions to stdout, unless stdout was given up."""
        if self.failed:
            self.dropped += sessions
            return
        try:
            write()
        except OSError as exc:
            self._give_up(exc, sessions)

    def _give_up(self, exc: OSError, sessions: int) -> None:
        self.failed = True
        self.dropped += sessions
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, self.fd)
        os.close(null)
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        if self.exporting:
            self.warn(f"stdout failed ({reason}): no more records on stdout; OTLP export goes on")
        elif exc.errno == errno.EPIPE:
            raise BrokenPipeError(exc.errno, reason) from None
        else:
            raise StdoutFailed(f"writing to stdout failed: {reason}") from None
