"""Warnings rate-limited by kind, never quoting payloads.

Shared by QueuedExporter, Spool and the kernel loss reporter (cli.LossReporter): an overloaded host
gets a line per kind every LOG_INTERVAL seconds, not one per event or per check. A held-back line is
not lost: its count is summed into the next line of its kind, or written by flush().
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

LOG_INTERVAL = 10.0  # seconds between two warnings of the same kind
_MAX_REASON = 300  # characters of a reason or server message kept in a log line


# Control characters as \xNN escapes: a server's message must not start a line of its own in our log.
_CONTROL_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}


def clip(text: str) -> str:
    """A reason or server message made safe for one log line: control characters escaped, clipped."""
    text = text.translate(_CONTROL_ESCAPES)
    return text if len(text) <= _MAX_REASON else text[:_MAX_REASON] + "..."


class RateLimitedLog:
    """At most one line per kind of event every `interval` seconds.

    What it holds back is not lost: the counts are summed into the next line of that kind, or written
    by flush(). So the count in a line covers everything since the previous line of its kind.
    """

    def __init__(self, log: Callable[[str], None], interval: float = LOG_INTERVAL):
        self._log = log
        self._interval = interval
        self._lock = threading.Lock()
        self._next_line: dict[str, float] = {}  # kind -> earliest time of its next line
        self._held: dict[str, tuple[int, str, str]] = {}  # kind -> (count, what, detail) held back

    def __call__(self, kind: str, count: int, what: str, detail: str = "") -> None:
        """`what` is our own text with an {n} for the count; `detail` (a reason, a server message)
        is appended as is, so it needs no escaping."""
        now = time.monotonic()
        with self._lock:
            count += self._held.pop(kind, (0, "", ""))[0]
            if now < self._next_line.get(kind, now):
                self._held[kind] = (count, what, detail)
                return
            self._next_line[kind] = now + self._interval
        self._log(self._line(count, what, detail))

    def flush(self) -> None:
        with self._lock:
            held, self._held = self._held, {}
        for count, what, detail in held.values():
            self._log(self._line(count, what, detail))

    @staticmethod
    def _line(count: int, what: str, detail: str) -> str:
        line = what.format(n=count)
        return f"{line}: {clip(detail)}" if detail else line
