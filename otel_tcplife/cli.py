"""Command line: classic tcplife flags -> Config -> the running agent."""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import signal
import sys
import time
from typing import NoReturn, Sequence

from . import __version__, interpreter, log
from .abi import MAX_PORTS
from .config import (
    ATTACH_MODES,
    BACKENDS,
    DEFAULT_RING_BUFFER_BYTES,
    FORMATS,
    RESOURCE_MODES,
    TRACE_ID_MODES,
    SPOOL_FSYNC,
    SPOOL_FULL_POLICIES,
    SPOOL_MIN_BYTES,
    STATS_CHECK_SECONDS,
    Config,
    DeliverySettings,
    ProbeSettings,
    SpoolSettings,
    TableStyle,
)
from .errors import TcplifeError, UsageError
from .log import PROG
from .otlp_config import SIGNALS, OtlpFlags
from .otlp_config import resolve as resolve_otlp
from .pipeline import Pipeline
from .probe import CoreProbe, open_probe
from .probe.core import check_ring_buffer_bytes
from .probe.pins import DEFAULT_ROOT as DEFAULT_PIN_ROOT
from .ratelimit import LOG_INTERVAL, RateLimitedLog
from .resource import check_resource_env


EXAMPLES = """examples:
    otel-tcplife           # trace all TCP connect()s and accept()s
    otel-tcplife -T        # include time column (HH:MM:SS)
    otel-tcplife -w        # wider columns (fit IPv6)
    otel-tcplife -stT      # csv output, with times & timestamps
    otel-tcplife -p 181    # only trace PID 181
    otel-tcplife -L 80     # only trace local port 80
    otel-tcplife -L 80,81  # only trace local ports 80 and 81
    otel-tcplife -D 80     # only trace remote port 80
    otel-tcplife -4        # only trace IPv4 family
    otel-tcplife -6        # only trace IPv6 family
"""


NEGATIVE_NUMBER = re.compile(r"^-\.?\d")


class ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2
        raise UsageError(message)

    def parse_args(self, args: Sequence[str] | None = None, namespace=None):
        """Values that look like negative numbers (`-p -5`) are given to their option as
        `-p=-5`: with -4 and -6 among the options, argparse would take them for options and say
        "expected one argument" instead of what is wrong with the value."""
        args = list(sys.argv[1:] if args is None else args)
        takes_value = {option for action in self._actions if action.nargs != 0 for option in action.option_strings}
        joined = []
        for arg in args:
            if joined and joined[-1] in takes_value and NEGATIVE_NUMBER.match(arg):
                joined[-1] = f"{joined[-1]}={arg}"
            else:
                joined.append(arg)
        return super().parse_args(joined, namespace)


def pid_value(text: str) -> int:
    try:
        pid = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid PID {text!r}: expected a positive integer") from None
    if not 0 < pid < 2**32:
        raise argparse.ArgumentTypeError(f"invalid PID {text!r}: expected a positive integer")
    return pid


def port_list(text: str) -> tuple[int, ...]:
    ports = []
    for item in text.split(","):
        try:
            port = int(item, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid port {item!r} in {text!r}: expected 1-65535") from None
        if not 0 < port < 65536:
            raise argparse.ArgumentTypeError(f"invalid port {item!r} in {text!r}: expected 1-65535")
        if port not in ports:
            ports.append(port)
    if len(ports) > MAX_PORTS:
        raise argparse.ArgumentTypeError(f"too many ports in {text!r}: at most {MAX_PORTS}")
    return tuple(ports)


def ring_buffer_size(text: str) -> int:
    try:
        return check_ring_buffer_bytes(int(text, 10))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"invalid size {text!r}: {exc}") from None


def number(kind: type, minimum: float, inclusive: bool):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or value < minimum or (not inclusive and value == minimum) or value != value:
            bound = f">= {minimum}" if inclusive else f"> {minimum}"
            raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected a number {bound}")
        return value
    return parse


positive_int = number(int, 0, inclusive=False)
positive_float = number(float, 0, inclusive=False)
non_negative_float = number(float, 0, inclusive=True)


def signal_list(text: str) -> tuple[str, ...]:
    signals = tuple(dict.fromkeys(item.strip() for item in text.split(",")))
    if not signals or any(s not in SIGNALS for s in signals):
        raise argparse.ArgumentTypeError(f"invalid signals {text!r}: expected logs, traces or logs,traces")
    return signals


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog=PROG,
        description="Trace the lifespan of TCP sessions and summarize.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EXAMPLES,
    )
    parser.add_argument("-T", "--time", action="store_true", help="include time column on output (HH:MM:SS)")
    parser.add_argument("-t", "--timestamp", action="store_true", help="include timestamp on output (seconds)")
    parser.add_argument("-w", "--wide", action="store_true", help="wide column output (fits IPv6 addresses)")
    parser.add_argument("-s", "--csv", action="store_true", help="comma separated values output")
    parser.add_argument("-x", "--extended", action="store_true",
                        help="table: also RTT, minimum RTT, retransmits, who closed, reset and the state "
                             "before CLOSE (always in the other formats)")
    parser.add_argument("-p", "--pid", type=pid_value, default=0, help="trace this PID only")
    parser.add_argument("-L", "--localport", type=port_list, default=(), metavar="PORTS",
                        help="comma-separated list of local ports to trace")
    parser.add_argument("-D", "--remoteport", type=port_list, default=(), metavar="PORTS",
                        help="comma-separated list of remote ports to trace")
    family = parser.add_mutually_exclusive_group()
    family.add_argument("-4", "--ipv4", action="store_true", help="trace IPv4 family only")
    family.add_argument("-6", "--ipv6", action="store_true", help="trace IPv6 family only")
    parser.add_argument("--ring-buffer-size", type=ring_buffer_size, default=DEFAULT_RING_BUFFER_BYTES,
                        metavar="BYTES", help="kernel ring buffer size, a power of two (default %(default)s)")
    parser.add_argument("--poll-interval", type=non_negative_float, default=0.1, metavar="SECONDS",
                        help="read the kernel's ring buffer this often, and on demand when it is a quarter "
                             "full; 0: woken by every event, as the classic tool (default %(default)s)")
    parser.add_argument("--attach", choices=ATTACH_MODES, default="auto",
                        help="how to attach to sock:inet_sock_set_state (default %(default)s)")
    parser.add_argument("--backend", choices=BACKENDS, default="auto",
                        help="the probe: core (the precompiled CO-RE object, needs kernel BTF) or bcc (the same "
                             "probe compiled at start by bcc, for kernels without BTF); auto: core where the "
                             "kernel has BTF, else bcc (default %(default)s)")
    out = parser.add_argument_group("output and export")
    out.add_argument("--format", choices=FORMATS, default="table",
                     help="stdout: the classic table, NDJSON (one object per session), OTLP/JSON "
                          "LogsData lines, OTLP/JSON TracesData lines; journald: one journal entry per "
                          "session with typed fields, to journald's socket; or nothing (default %(default)s)")
    out.add_argument("--resource", choices=RESOURCE_MODES, default="process",
                     help="the Resource of each record: the traced process's (its OTEL_SERVICE_NAME and "
                          "OTEL_RESOURCE_ATTRIBUTES, container.id, k8s.pod.uid), or the agent's own "
                          "(default %(default)s)")
    out.add_argument("--trace-ids", choices=TRACE_ID_MODES, default="derived",
                     help="span ids: derived from the connection's initial sequence numbers, so the client's "
                          "and the server's agents put both ends in one trace (the server span a child of the "
                          "client's); random ones where the handshake was not seen; or always random "
                          "(default %(default)s)")
    out.add_argument("--otlp-endpoint", metavar="URL",
                     help="export over OTLP/gRPC (http:// plain text, https:// TLS); "
                          "default from OTEL_EXPORTER_OTLP_[SIGNAL_]ENDPOINT")
    out.add_argument("--signals", type=signal_list, default=SIGNALS, metavar="LIST",
                     help="what to export: logs,traces (default both)")
    out.add_argument("--otlp-insecure", action="store_true", help="plain text even without an http:// scheme")
    out.add_argument("--otlp-certificate", metavar="PEM", help="CA certificates to trust (default: system roots)")
    out.add_argument("--otlp-client-key", metavar="PEM", help="client key for mTLS")
    out.add_argument("--otlp-client-certificate", metavar="PEM", help="client certificate for mTLS")
    out.add_argument("--otlp-headers-file", metavar="FILE",
                     help="headers as key=value, comma or newline separated (added to OTEL_EXPORTER_OTLP_HEADERS)")
    out.add_argument("--otlp-compression", choices=("gzip", "none"),
                     help="default none, as in the OTLP specification (gzip costs ~11 µs of CPU per session)")
    out.add_argument("--otlp-timeout", type=positive_float, metavar="SECONDS", help="per request (default 10)")
    out.add_argument("--queue-size", type=positive_int, default=DeliverySettings.queue_size, metavar="N",
                     help="records per signal waiting for export; when full the oldest are dropped "
                          "and counted (default %(default)s)")
    out.add_argument("--batch-size", type=positive_int, default=DeliverySettings.batch_size, metavar="N",
                     help="records per request (default %(default)s)")
    out.add_argument("--flush-interval", type=positive_float, default=DeliverySettings.flush_interval,
                     metavar="SECONDS", help="longest wait before a partial batch is sent (default %(default)s)")
    out.add_argument("--max-in-flight", type=positive_int, default=DeliverySettings.max_in_flight, metavar="N",
                     help="concurrent requests per signal (default %(default)s)")
    out.add_argument("--retry-max-elapsed", type=non_negative_float, default=DeliverySettings.retry_max_elapsed,
                     metavar="SECONDS", help="give up retrying a request after this; 0: never retry "
                                             "(default %(default)s)")
    out.add_argument("--shutdown-timeout", type=non_negative_float, default=DeliverySettings.shutdown_timeout,
                     metavar="SECONDS", help="flush deadline at exit (default %(default)s)")
    out.add_argument("--spool-dir", metavar="DIR",
                     help="persist every batch on disk until the collector acknowledged it (at-least-once "
                          "across outages and restarts); the directory must be ours and not group/world-writable")
    out.add_argument("--spool-max-bytes", type=number(int, SPOOL_MIN_BYTES, inclusive=True),
                     default=SpoolSettings.max_bytes, metavar="BYTES",
                     help=f"disk the spool may use, over all signals, at least {SPOOL_MIN_BYTES} "
                          "(default %(default)s)")
    out.add_argument("--spool-full-policy", choices=SPOOL_FULL_POLICIES, default=SpoolSettings.full_policy,
                     help="when the spool is full: drop its oldest batches or the new ones; counted either way "
                          "(default %(default)s)")
    out.add_argument("--spool-fsync", choices=SPOOL_FSYNC, default=SpoolSettings.fsync,
                     help="fsync after every write, at most once a second, or leave it to the OS "
                          "(default %(default)s)")
    out.add_argument("--stats-interval", type=non_negative_float, default=0.0, metavar="SECONDS",
                     help="print a JSON stats line on stderr this often (default: only at exit)")
    out.add_argument("--summary", action="store_true",
                     help="print the JSON stats line at exit in table mode too")
    pin = parser.add_argument_group("kernel state across restarts")
    pin.add_argument("--pin", action=argparse.BooleanOptionalAction, default=None,
                     help="pin the probe's maps and links in bpffs, so that a restarted agent loses nothing; "
                          "--no-pin: the probe goes with the agent, and a restart loses the sessions open or "
                          "unread then (default: pinned, but for the classic table, which leaves nothing "
                          "behind it unless asked)")
    pin.add_argument("--pin-path", metavar="DIR",
                     help=f"where the pins go, on bpffs (default {DEFAULT_PIN_ROOT}); implies --pin")
    pin.add_argument("--unpin", action="store_true",
                     help="remove the pins under --pin-path (detaching the probe) and exit")
    pin.add_argument("--pre-existing", action=argparse.BooleanOptionalAction, default=None,
                     help="at start, also track the TCP sessions already open (reported at close, their "
                          "start unknown); default: on, except for the table")
    parser.add_argument("--verbose", action="store_true", help="show libbpf messages and probe details")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def parse_config(argv: Sequence[str] | None) -> Config:
    args = build_parser().parse_args(argv)
    pin_path = DEFAULT_PIN_ROOT if args.pin_path is None else args.pin_path
    if not pin_path or "\0" in pin_path:
        raise UsageError(f"invalid --pin-path {pin_path!r}")
    if args.unpin:
        raise Unpin(os.path.abspath(pin_path))
    # The classic table at a terminal leaves nothing attached behind it, unless asked to.
    pinned = args.pin if args.pin is not None else args.pin_path is not None or args.format != "table"
    pre_existing = args.format != "table" if args.pre_existing is None else args.pre_existing
    probe = ProbeSettings(
        pid=args.pid,
        family=4 if args.ipv4 else 6 if args.ipv6 else 0,
        local_ports=args.localport,
        remote_ports=args.remoteport,
        ring_buffer_bytes=args.ring_buffer_size,
        poll_interval=args.poll_interval,
        attach=args.attach,
        backend=args.backend,
        verbose=args.verbose,
        random_trace_ids=args.trace_ids == "random",
        pin_root=os.path.abspath(pin_path) if pinned else None,
        pre_existing=pre_existing,
    )
    table = TableStyle(wide=args.wide, csv=args.csv, wall_time=args.time, timestamp=args.timestamp,
                       extended=args.extended)
    flags = OtlpFlags(
        endpoint=args.otlp_endpoint, insecure=args.otlp_insecure, certificate=args.otlp_certificate,
        client_key=args.otlp_client_key, client_certificate=args.otlp_client_certificate,
        headers_file=args.otlp_headers_file, compression=args.otlp_compression, timeout=args.otlp_timeout,
    )
    otlp = {}
    for signal_name in args.signals:
        settings = resolve_otlp(flags, signal_name)
        if settings is not None:
            otlp[signal_name] = settings
    if otlp or args.format not in ("table", "none"):
        check_resource_env()  # the Resource's variables: refused here, before anything starts
    delivery = DeliverySettings(
        queue_size=args.queue_size, batch_size=args.batch_size, flush_interval=args.flush_interval,
        max_in_flight=args.max_in_flight, retry_max_elapsed=args.retry_max_elapsed,
        shutdown_timeout=args.shutdown_timeout,
    )
    spool = None
    if args.spool_dir is not None:
        if not otlp:
            raise UsageError("--spool-dir needs an OTLP endpoint (--otlp-endpoint or OTEL_EXPORTER_OTLP_ENDPOINT)")
        spool = SpoolSettings(directory=args.spool_dir, max_bytes=args.spool_max_bytes,
                              fsync=args.spool_fsync, full_policy=args.spool_full_policy)
    return Config(probe=probe, table=table, format=args.format, otlp=otlp, delivery=delivery, spool=spool,
                  stats_interval=args.stats_interval, summary=args.summary, resource=args.resource)


class Unpin(Exception):
    """--unpin: remove the pins under this root and exit."""

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self.root = root


def unpin(root: str) -> int:
    from .probe import pins

    removed = pins.unpin(os.path.abspath(root))
    log.line(f"removed the pins of {len(removed)} probe layout(s) under {root}" if removed
             else f"no pins under {root}")
    return 0


class Stopper:
    """Turns SIGINT, SIGTERM and SIGHUP into a flag the read loop checks: each ends the agent
    with a flush and the stats line. SIGHUP is what a closed terminal or a session manager
    sends; the agent has no files to reopen (stdout is inherited, the spool is its own)."""

    def __init__(self) -> None:
        self.stopped = False
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._stop)

    def _stop(self, _signum: int, _frame: object) -> None:
        self.stopped = True


class LossReporter:
    """Reports kernel-side losses on stderr when they grow: at once, then at most a line per kind every
    LOG_INTERVAL seconds while they keep growing (each line counts everything since the one before),
    and what was held back at exit."""

    def __init__(self, probe: CoreProbe, log_interval: float = LOG_INTERVAL) -> None:
        self.probe = probe
        # Pinned counters count since the pins were made: what an earlier agent reported is not again.
        seen = getattr(probe, "seen_counters", None)
        self.reported = seen() if seen else {"lost": 0, "untracked": 0}
        self.next_check = time.monotonic() + STATS_CHECK_SECONDS
        self._warn = RateLimitedLog(log.warn, log_interval)

    def check(self, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now < self.next_check:
            return
        self.next_check = now + STATS_CHECK_SECONDS
        counters = self.probe.counters()
        if counters["lost"] > self.reported["lost"]:
            self._warn("lost", counters["lost"] - self.reported["lost"],
                       f"{{n}} closed sessions lost: ring buffer full "
                       f"(total {counters['lost']}; try a larger --ring-buffer-size)")
        if counters["untracked"] > self.reported["untracked"]:
            self._warn("untracked", counters["untracked"] - self.reported["untracked"],
                       f"{{n}} sessions untracked: socket table full (total {counters['untracked']})")
        if counters != self.reported and hasattr(self.probe, "counters_seen"):
            self.probe.counters_seen(counters)
        self.reported = counters
        if final:
            self._warn.flush()


def run(config: Config) -> int:
    stopper = Stopper()
    pipeline = Pipeline(config, sys.stdout)
    try:
        # The probe's reader unpacks only the event fields the outputs read.
        with open_probe(dataclasses.replace(config.probe, event_fields=pipeline.read_fields())) as probe:
            for message in probe.warnings:
                log.warn(message)
            for message in dict.fromkeys(w for s in config.otlp.values() for w in s.warnings):
                log.warn(message)  # once, though each signal's settings carry it
            if config.probe.verbose or config.format != "table":
                # The classic table stays quiet; a shipper says once what it does.
                exports = ", ".join(f"{signal} to {s.target}" for signal, s in config.otlp.items())
                log.line(f"tracing via {probe.attach_mode}; format {config.format}"
                         f"{'; exporting ' + exports if exports else ''}")
            pipeline.bind_probe(probe)
            if getattr(probe, "pinned", False):
                pipeline.stats.restart = lambda: {"duplicated": probe.duplicated,
                                                  "pre_existing_sessions": probe.pre_existing}
            losses = LossReporter(probe)
            pipeline.stats.kernel = lambda: losses.reported
            next_stats = time.monotonic() + config.stats_interval
            pipeline.start()
            interpreter.tune_collector()
            while not stopper.stopped:
                records = probe.read()
                if records:
                    pipeline.handle(records)
                    pipeline.handled()
                losses.check()
                if config.stats_interval and time.monotonic() >= next_stats:
                    next_stats += config.stats_interval
                    log.stats(pipeline.stats.line())
            # Everything already in the ring buffer; then detach before the flush,
            # so sessions closing meanwhile are not counted as lost.
            while records := probe.drain():
                pipeline.handle(records)
                pipeline.handled()
            losses.check(final=True)
            # With pins, the spools commit what they take in: flushed before the probe closes.
            pipeline.shutdown()
    finally:
        pipeline.shutdown()
    if config.prints_summary:
        log.stats(pipeline.stats.line())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    interpreter.tune_malloc()
    try:
        return run(parse_config(argv))
    except Unpin as request:
        try:
            return unpin(request.root)
        except (TcplifeError, OSError) as exc:
            log.error(f"--unpin: {exc}")
            return 1
    except TcplifeError as exc:
        log.error(str(exc))
        return exc.exit_status
    except BrokenPipeError:
        # The reader went away (`otel-tcplife | head`): stop quietly, and keep
        # the interpreter's final flush of stdout from failing again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        return 0
