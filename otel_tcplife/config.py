"""Settings resolved from the command line and environment: frozen values, checked once.

Plain values only: this module imports no implementation, so that any module can take its
settings from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

STATS_CHECK_SECONDS = 1.0  # how often kernel-side loss counters are read
# Whose Resource records carry: the traced process's (identity.py), or the agent's own.
RESOURCE_MODES = ("process", "agent")
TRACE_ID_MODES = ("derived", "random")  # --trace-ids
FORMATS = ("table", "ndjson", "otlp-json", "otlp-json-traces", "journald", "none")
# How sock:inet_sock_set_state is attached: tp_btf (direct access to the
# socket) or the classic tracepoint; "auto" tries tp_btf first.
ATTACH_MODES = ("auto", "tp_btf", "tracepoint")
# Which probe runs: the CO-RE object (needs kernel BTF) or the same probe compiled by bcc at start;
# "auto": CO-RE where the kernel has BTF, else bcc (see probe.backend).
BACKENDS = ("auto", "core", "bcc")
# ~80k events: about 1.3 s of a 2-core machine's maximum rate (~60k sessions/s), so that the
# reader, sharing the CPUs with the workload, can fall behind for a moment without losing any.
DEFAULT_RING_BUFFER_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class ProbeSettings:
    pid: int = 0
    family: int = 0  # 0, 4 or 6
    local_ports: tuple[int, ...] = ()
    remote_ports: tuple[int, ...] = ()
    ring_buffer_bytes: int = DEFAULT_RING_BUFFER_BYTES
    # > 0: the reader polls this often (seconds) and the kernel wakes it only when
    # the ring buffer is a quarter full; 0: the kernel wakes it for every event.
    poll_interval: float = 0.1
    attach: str = "auto"  # one of ATTACH_MODES
    verbose: bool = False
    ring_reader: str = "auto"  # auto, mmap or libbpf; auto: mmap on x86-64, else libbpf (see probe.ring)
    backend: str = "auto"  # one of BACKENDS
    bcc_buffer: str = "auto"  # bcc: auto (the ring buffer on 5.8+, else the perf buffer), ring or perf
    random_trace_ids: bool = False  # --trace-ids random: never derive span ids from the ISNs (trace_ids.py)
    pin_root: str | None = None  # pin the probe's maps and links under this bpffs directory (probe/pins.py)
    pre_existing: bool = False  # at start, find the sessions already open (the socket iterator)
    # The event fields the outputs read (Pipeline.read_fields): the reader unpacks only these; (): all.
    event_fields: tuple[str, ...] = ()


@dataclass(frozen=True)
class TableStyle:
    wide: bool = False
    csv: bool = False  # overrides wide
    wall_time: bool = False  # -T: TIME column, local HH:MM:SS at print time
    timestamp: bool = False  # -t: TIME(s) column, seconds since the first row
    extended: bool = False  # -x: the session's wire facts (RTT, retransmits, who closed, reset, state) after MS


@dataclass(frozen=True)
class OtlpSettings:
    """Where and how to export one signal. Header values are secrets: never print them."""

    target: str  # host:port for grpc
    secure: bool
    # PEM CAs to trust: --otlp-certificate's, else the system bundle (see otlp_config.system_roots).
    # None (settings made by hand) also means the system bundle, never gRPC's own roots.pem.
    root_certificates: bytes | None = None
    client_key: bytes | None = None
    client_certificate: bytes | None = None
    headers: tuple[tuple[str, str | bytes], ...] = ()  # -bin keys: bytes
    compression: str = "none"  # none | gzip
    timeout: float = 10.0
    warnings: tuple[str, ...] = ()  # for the user, once at start (no secrets in them)

    def __repr__(self) -> str:  # keep header values and keys out of any log
        return (f"OtlpSettings(target={self.target!r}, secure={self.secure}, "
                f"headers=<{len(self.headers)} hidden>, compression={self.compression!r})")


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
    resource: str = "process"  # one of RESOURCE_MODES

    @property
    def prints_summary(self) -> bool:
        # The classic table stays quiet unless asked; the shipper always reports.
        return self.summary or self.format != "table" or bool(self.otlp)
