"""Settings resolved from the command line: frozen values, checked once."""

from __future__ import annotations

from dataclasses import dataclass, field

from .output.table import TableStyle
from .probe import ProbeSettings

STATS_CHECK_SECONDS = 1.0  # how often kernel-side loss counters are read
POLL_TIMEOUT_MS = 100


@dataclass(frozen=True)
class Config:
    probe: ProbeSettings = field(default_factory=ProbeSettings)
    table: TableStyle = field(default_factory=TableStyle)
    summary: bool = False  # JSON counters on stderr at exit
