"""Command line: classic tcplife flags -> Config -> the running agent."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from typing import NoReturn, Sequence

from . import __version__
from .abi import MAX_PORTS
from .config import POLL_TIMEOUT_MS, STATS_CHECK_SECONDS, Config
from .errors import TcplifeError, UsageError
from .output.table import TableStyle, TableWriter
from .probe import ATTACH_MODES, CoreProbe, ProbeSettings
from .probe.core import DEFAULT_RING_BUFFER_BYTES, check_ring_buffer_bytes
from .session import Decoder

PROG = "otel-tcplife"

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


class ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2
        raise UsageError(message)


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
    parser.add_argument("--attach", choices=ATTACH_MODES, default="auto",
                        help="how to attach to sock:inet_sock_set_state (default %(default)s)")
    parser.add_argument("--summary", action="store_true",
                        help="at exit, print a one-line JSON summary of counters on stderr")
    parser.add_argument("--verbose", action="store_true", help="show libbpf messages and probe details")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def parse_config(argv: Sequence[str] | None) -> Config:
    args = build_parser().parse_args(argv)
    probe = ProbeSettings(
        pid=args.pid,
        family=4 if args.ipv4 else 6 if args.ipv6 else 0,
        local_ports=args.localport,
        remote_ports=args.remoteport,
        ring_buffer_bytes=args.ring_buffer_size,
        attach=args.attach,
        verbose=args.verbose,
    )
    table = TableStyle(wide=args.wide, csv=args.csv, wall_time=args.time, timestamp=args.timestamp)
    return Config(probe=probe, table=table, summary=args.summary)


def warn(message: str) -> None:
    sys.stderr.write(f"{PROG}: warning: {message}\n")
    sys.stderr.flush()


class Stopper:
    """Turns SIGINT/SIGTERM into a flag the read loop checks."""

    def __init__(self) -> None:
        self.stopped = False
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._stop)

    def _stop(self, _signum: int, _frame: object) -> None:
        self.stopped = True


class LossReporter:
    """Reports kernel-side losses on stderr when they grow, and at exit."""

    def __init__(self, probe: CoreProbe) -> None:
        self.probe = probe
        self.reported = {"lost": 0, "untracked": 0}
        self.next_check = time.monotonic() + STATS_CHECK_SECONDS

    def check(self, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now < self.next_check:
            return
        self.next_check = now + STATS_CHECK_SECONDS
        counters = self.probe.counters()
        if counters["lost"] > self.reported["lost"]:
            warn(f"{counters['lost'] - self.reported['lost']} closed sessions lost: ring buffer full "
                 f"(total {counters['lost']}; try a larger --ring-buffer-size)")
        if counters["untracked"] > self.reported["untracked"]:
            warn(f"{counters['untracked'] - self.reported['untracked']} sessions untracked: socket table full "
                 f"(total {counters['untracked']})")
        self.reported = counters


def run(config: Config) -> int:
    stopper = Stopper()
    writer = TableWriter(sys.stdout, config.table)
    decoder = Decoder()
    with CoreProbe(config.probe) as probe:
        for message in probe.warnings:
            warn(message)
        if config.probe.verbose:
            sys.stderr.write(f"{PROG}: tracing via {probe.attach_mode}\n")
        losses = LossReporter(probe)
        writer.write_header()
        reported = 0
        while not stopper.stopped:
            records = probe.read(POLL_TIMEOUT_MS)
            if records:
                writer.write(decoder.decode(records))
                reported += len(records)
            losses.check()
        records = probe.drain()
        writer.write(decoder.decode(records))
        reported += len(records)
        losses.check(final=True)
        if config.summary:
            sys.stderr.write(json.dumps({"sessions_reported": reported, **losses.reported}) + "\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return run(parse_config(argv))
    except TcplifeError as exc:
        sys.stderr.write(f"{PROG}: error: {exc}\n")
        return exc.exit_status
    except BrokenPipeError:
        # The reader went away (`otel-tcplife | head`): stop quietly, and keep
        # the interpreter's final flush of stdout from failing again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        return 0
