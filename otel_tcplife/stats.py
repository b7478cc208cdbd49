"""Self-telemetry: what the agent saw, shipped and lost, as one JSON line.

Each exported signal's figures balance in every line (otel_tcplife/delivery/exporter.py):
accepted + replayed == exported + rejected + dropped + queued + in_flight + spool_records, where
replayed and spool_records exist with a spool only; accepted == sessions_observed.
With --format journald, journald_dropped counts the sessions journald did not take (the agent's queue
for it full, journald behind or gone, the shutdown deadline); what journald's own rate limit drops
after it took them is not seen by the agent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import orjson

if TYPE_CHECKING:
    from .delivery import ExporterStats


@dataclass
class Stats:
    sessions_observed: int = 0
    kernel: Callable[[], dict[str, int]] = lambda: {"lost": 0, "untracked": 0}
    stdout_dropped: Callable[[], int] = lambda: 0  # sessions not written to stdout after it failed
    journald_dropped: Callable[[], int] | None = None  # --format journald: sessions not sent to journald
    exporters: dict[str, ExporterStats] = field(default_factory=dict)
    # With pins: `duplicated` (sessions read again after a restart that an earlier agent had already
    # written or spooled) and `pre_existing_sessions` (found open at start).
    restart: Callable[[], dict[str, int]] | None = None

    def snapshot(self) -> dict:
        kernel = self.kernel()
        data: dict = {
            "sessions_observed": self.sessions_observed,
            "lost_in_kernel": kernel["lost"],
            "untracked_in_kernel": kernel["untracked"],
            "stdout_dropped": self.stdout_dropped(),
        }
        if self.restart is not None:
            data.update(self.restart())
        if self.journald_dropped is not None:
            data["journald_dropped"] = self.journald_dropped()
        for signal, stats in self.exporters.items():
            data[signal] = stats.snapshot()
        return data

    def line(self) -> str:
        return orjson.dumps(self.snapshot()).decode() + "\n"
