"""Settings resolved from the command line and environment: frozen values, checked once."""

from __future__ import annotations

from dataclasses import dataclass, field

from .otlp_config import OtlpSettings
from .output.table import TableStyle
from .probe import ProbeSettings

STATS_CHECK_SECONDS = 1.0  # how often kernel-side loss counters are read
FORMATS = ("table", "ndjson", "otlp-json", "otlp-json-traces", "none")


@dataclass(frozen=True)
class DeliverySettings:
    queue_size: int = 100_000  # records per signal waiting for export
    batch_size: int = 2048  # records per request (split further to stay under 4 MiB)
    flush_interval: float = 1.0  # longest wait before a partial batch is sent
    max_in_flight: int = 4  # concurrent requests per signal
    retry_max_elapsed: float = 300.0  # give up retrying a request after this
    shutdown_timeout: float = 5.0  # flush deadline on SIGINT/SIGTERM


SPOOL_FSYNC = ("always", "interval", "never")
SPOOL_FULL_POLICIES = ("drop_oldest", "drop_newest")
# Below this a spool holds too few requests to be useful (requests are split to fit, down to one record).
SPOOL_MIN_BYTES = 64 * 1024


@dataclass(frozen=True)
class SpoolSettings:
    """A persistent queue per exported signal, in <directory>/<signal>."""

    directory: str
    max_bytes: int = 1 << 30  # over all signals
    fsync: str = "interval"  # always | interval (every second) | never
    full_policy: str = "drop_oldest"


@dataclass(frozen=True)
class Config:
    probe: ProbeSettings = field(default_factory=ProbeSettings)
    table: TableStyle = field(default_factory=TableStyle)
    format: str = "table"
    otlp: dict[str, OtlpSettings] = field(default_factory=dict)  # signal -> settings
    delivery: DeliverySettings = field(default_factory=DeliverySettings)
    spool: SpoolSettings | None = None
    stats_interval: float = 0.0  # seconds between JSON stats lines on stderr; 0: only at exit
    summary: bool = False  # JSON counters on stderr at exit, also in table mode

    @property
    def prints_summary(self) -> bool:
        # The classic table stays quiet unless asked; the shipper always reports.
        return self.summary or self.format != "table" or bool(self.otlp)
