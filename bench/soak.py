"""Soak benchmark: the agent under a storm at the machine's maximum rate for a long time; does its memory grow?

    .venv/bin/python bench/soak.py                                   # 600 s, ndjson
    .venv/bin/python bench/soak.py --seconds 600 --mode otlp
    .venv/bin/python bench/soak.py --seconds 1800 --mode otlp          # longer: storm.py allows up to 3600 s
    .venv/bin/python bench/run.py --soak ...                         # the same

One run:
1. For --mode otlp, bench/otlp_sink.py starts in another process (as in run.py: --port-filter STORM_PORT).
2. The agent starts, unfiltered, with its own defaults (no ring buffer or queue overrides: what is measured
   is the agent as shipped) plus `--stats-interval S` (S = --sample-seconds, default 10): table `--summary
   --verbose` (--verbose only so that it prints its ready line on stderr; it adds libbpf messages at start
   and nothing afterwards), ndjson `--format ndjson`, otlp-json `--format otlp-json`, otlp `--format none
   --otlp-endpoint http://127.0.0.1:SINK_PORT`. Its stdout goes to /dev/null (ten minutes of output would
   not fit tmpfs), so what it writes is not counted; its stderr goes to a file on tmpfs, read as it grows.
3. Once it is ready ("otel-tcplife: tracing via" on stderr; start-up s = Popen to then), the storm
   (bench/storm.py's run_storm, in this process) runs flat out for --seconds (default 600), with a cap of
   --seconds x 100,000 connections (far above this machine's rate; storm.py's own default cap, 10 M, is
   too low for 600 s at ~15-30 k conn/s) and storm.py's limit (3600 s). Meanwhile, every 0.2 s, the agent's
   new stderr lines are read: for each JSON stats line (one every S seconds), VmRSS is read from
   /proc/PID/status at once and a row of the RSS curve is printed: t (s since the storm started), RSS MB,
   sessions observed so far, sessions/s since the previous row, lost in kernel, exporters' dropped +
   rejected (logs + traces), lost = the sum. If no stats line comes for 2 x S, a row with RSS alone; and
   one at the storm's end (RSS alone unless a stats line has just come).
4. After the storm: SIGINT, the agent drains and prints its final stats line; then the sink stops.

Then the verdict:
- RSS growth: over the samples from the first at or after 60 s (for runs shorter than 120 s: after half
  the run) to the last, the rise of their least-squares line (its slope, also printed in MB per 10 min,
  times their time span), in MB and %. Not last minus first sample: with OTLP, RSS swings by ~10 MB from
  one second to the next as requests are joined, copied and freed, so two single samples measure where
  in that swing each fell (a run with a slope of -0.03 MB per 10 min ended 10 MB above its 60 s sample);
  those two samples are printed too. Target: no growth; met when the growth is at most
  --growth-tolerance-mb (default 2 MB: Python's allocator moves by about that much under a steady load).
- steady RSS: median and max of the samples from that point; target < 60 MB (max).
- max RSS: the agent's peak (VmHWM, polled; not ru_maxrss, which counts this process's memory before exec).
- sessions made (2 x the storm's connections), observed (the agent's final stats); lost: for otlp, storm
  sessions made - delivered (min of the storm's log records and spans at the sink), exact; for stdout
  modes (delivery not counted: /dev/null) the agent's lost in kernel + exporters' dropped + rejected (all
  sessions). Target 0: met only if that and the agent's counters are all 0.
- the agent's CPU (user+sys, ready to exit) per session observed, its exit time, the storm's figures, and
  the agent's other stderr lines (warnings).
MB = MiB.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import (AGENT_SHUTDOWN_TIMEOUT_S, DEFAULT_AGENT, EXIT_MARGIN_S, MODE_NAMES, READY_LINE,  # noqa: E402
                     RSS_TARGET_MB, Agent, Sink, StderrLines, agent_modes, storm_checks)
from storm import DEFAULT_MAX_CONNECTIONS, MAX_SECONDS, add_storm_arguments, free_port, run_storm  # noqa: E402

CAP_RATE = 100_000  # conn/s: the storm's cap is --seconds x this, far above what this machine makes
POLL_S = 0.2  # agent stderr read this often during the storm
REFERENCE_S = 60.0  # growth measured from the first sample at or after this
EXPORT_DROPS = ("dropped", "rejected")  # in a stats line: dropped = the sum of the dropped_* counters

CURVE = [("t s", 8), ("RSS MB", 7), ("observed", 10), ("sessions/s", 10), ("lost in kernel", 14),
         ("dropped", 8), ("lost", 8)]


def curve_row(values: list) -> str:
    return "  ".join(str(v).rjust(max(w, len(h))) for (h, w), v in zip(CURVE, values))


def lost_in(stats: dict) -> tuple[int, int]:
    """(lost in kernel, exporters' dropped + rejected over logs and traces) from an agent stats line."""
    dropped = sum(stats[s].get(k, 0) for s in ("logs", "traces") if s in stats for k in EXPORT_DROPS)
    return stats["lost_in_kernel"], dropped


def slope_mb_per_10min(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (t s, RSS MB), in MB per 600 s."""
    if len(points) < 2:
        return None
    mt = statistics.fmean(t for t, _ in points)
    mr = statistics.fmean(r for _, r in points)
    var = sum((t - mt) ** 2 for t, _ in points)
    return None if not var else 600 * sum((t - mt) * (r - mr) for t, r in points) / var


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Storm at the maximum rate for a long time with the agent (its defaults) attached; print its "
                    "RSS curve and whether it grows.")
    parser.add_argument("--seconds", type=float, default=600.0,
                        help=f"storm duration (default %(default)s, at most {MAX_SECONDS:g})")
    parser.add_argument("--mode", choices=MODE_NAMES, default="ndjson", help="agent output (default %(default)s)")
    parser.add_argument("--sample-seconds", type=float, default=10.0,
                        help="the agent's --stats-interval: one RSS sample per stats line (default %(default)s)")
    parser.add_argument("--growth-tolerance-mb", type=float, default=2.0,
                        help="RSS growth counted as none up to this (default %(default)s)")
    add_storm_arguments(parser)
    parser.add_argument("--agent", type=Path, default=DEFAULT_AGENT, help="agent executable (default %(default)s)")
    args = parser.parse_args(argv)
    if not os.access(args.agent, os.X_OK):
        print(f"soak: error: agent {args.agent} is not executable (run `make setup`)", file=sys.stderr)
        return 1
    if not 0 < args.seconds <= MAX_SECONDS:
        parser.error(f"--seconds must be in (0, {MAX_SECONDS:g}]")
    if not args.sample_seconds > 0:
        parser.error("--sample-seconds must be positive")
    try:
        with tempfile.TemporaryDirectory(prefix="otel-tcplife-soak-", dir="/dev/shm") as workdir:
            return run(args, Path(workdir))
    except RuntimeError as exc:
        print(f"soak: error: {exc}", file=sys.stderr)
        return 1


def run(args: argparse.Namespace, workdir: Path) -> int:
    port = free_port()
    cap = max(DEFAULT_MAX_CONNECTIONS, int(args.seconds * CAP_RATE))
    mode = agent_modes()[args.mode]
    agent_args = [*mode.agent_args, "--stats-interval", f"{args.sample_seconds:g}"]
    if mode.ready_on_stdout:
        agent_args.append("--verbose")  # its ready line on stderr: stdout is /dev/null
    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    print(f"otel-tcplife soak: kernel {platform.release()}, {os.cpu_count()} CPUs; storm: {args.workers} client + "
          f"{args.servers} server processes, 127.0.0.1:{port}, {args.payload_size} bytes each way, as fast as "
          f"possible for {args.seconds:g} s (cap {cap} connections); agent: {args.agent} "
          f"{' '.join(agent_args)}{' --otlp-endpoint http://127.0.0.1:<sink port>' if mode.sink else ''}, "
          f"unfiltered, its defaults, stdout to /dev/null", flush=True)

    sink = agent = None
    err_path = workdir / "agent.err"
    try:
        sink = Sink(port, workdir / "sink.err") if mode.sink else None
        if sink:
            agent_args += ["--otlp-endpoint", f"http://127.0.0.1:{sink.port}"]
        agent = Agent([str(args.agent), *agent_args], err_path)
        log = StderrLines(err_path)
        samples: list[tuple[float, float]] = []  # (t, RSS MB)
        notes: list[str] = []
        last = {"t": 0.0, "observed": 0}
        print(f"agent ready after {agent.startup_s:.2f} s, RSS {agent.rss_at_ready_mb or 0:.1f} MB; RSS curve (a row "
              f"per agent stats line; lost = lost in kernel + dropped, so far):")
        print(curve_row([h for h, _ in CURVE]), flush=True)

        def sample(t: float, final: bool = False) -> None:
            """A row per new agent stats line (RSS read now); final: a row at the storm's end whatever."""
            if agent.proc.poll() is not None:
                raise RuntimeError(f"agent exited during the storm with {agent.proc.returncode}: "
                                   f"{agent.stderr_tail()}")
            stats_lines = []
            for line in log.read():
                if line.startswith("{"):
                    try:
                        stats_lines.append(json.loads(line))
                        continue
                    except ValueError:
                        pass
                if not line.startswith(READY_LINE) and not line.startswith("libbpf:"):
                    notes.append(f"t={t:.1f} s: {line}")
            if not stats_lines and not final and t - last["t"] < 2 * args.sample_seconds:
                return
            rss = agent.rss_mb()
            if rss is None:
                return
            samples.append((t, rss))
            if not stats_lines:  # no stats line for 2 intervals, or the storm's end: RSS alone
                label = f"{t:.1f}" + (" end" if final else "")
                print(curve_row([label, f"{rss:.1f}", "-", "-", "-", "-", "-"]), flush=True)
                return
            stats = stats_lines[-1]
            kernel, dropped = lost_in(stats)
            observed = stats["sessions_observed"]
            rate = (observed - last["observed"]) / (t - last["t"]) if t > last["t"] else 0.0
            print(curve_row([f"{t:.1f}", f"{rss:.1f}", observed, f"{rate:.0f}", kernel, dropped, kernel + dropped]),
                  flush=True)
            last.update(t=t, observed=observed)

        storm_started = time.monotonic()
        storm = run_storm(seconds=args.seconds, workers=args.workers, servers=args.servers, port=port,
                          payload_size=args.payload_size, max_connections=cap, tick=sample, tick_seconds=POLL_S)
        sample(time.monotonic() - storm_started, final=True)  # RSS at the storm's end, before SIGINT

        exit_s, agent_cpu = agent.stop(AGENT_SHUTDOWN_TIMEOUT_S + EXIT_MARGIN_S)
        summary = None
        for line in log.read(final=True):
            if line.startswith("{"):
                summary = json.loads(line)
            elif not line.startswith(READY_LINE) and not line.startswith("libbpf:"):
                notes.append(f"exit: {line}")
        if agent.proc.returncode != 0 or summary is None:
            raise RuntimeError(f"agent exited with {agent.proc.returncode}: {agent.stderr_tail()}")
        sink_counts = sink.stop() if sink else None
    finally:
        for proc in (agent, sink):
            if proc is not None:
                proc.kill()  # only on failure

    report(args, storm, summary, sink_counts, samples, notes, startup_s=agent.startup_s,
           rss_at_ready=agent.rss_at_ready_mb, peak=agent.peak_rss_mb,
           cpu_s=agent_cpu.since(agent.cpu_at_ready).cpu_s, exit_s=exit_s)
    return 0


def report(args: argparse.Namespace, storm: dict, summary: dict, sink: dict | None,
           samples: list[tuple[float, float]], notes: list[str], *, startup_s: float, rss_at_ready: float | None,
           peak: float, cpu_s: float, exit_s: float) -> None:
    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    reference_s = REFERENCE_S if args.seconds >= 2 * REFERENCE_S else args.seconds / 2
    after = [(t, rss) for t, rss in samples if t >= reference_s]
    print("verdict:")
    if len(after) >= 2:
        (t0, rss0), (t1, rss1) = after[0], after[-1]
        slope = slope_mb_per_10min(after)
        growth = None if slope is None else slope * (t1 - t0) / 600
        rss_values = [rss for _, rss in after]
        print(f"  RSS growth           {'-' if growth is None else f'{growth:+.1f} MB ({100 * growth / rss0:+.1f}%)'}"
              f": least-squares line over {len(after)} samples from t={t0:.1f} s (first at or after "
              f"{reference_s:g} s) to t={t1:.1f} s, slope {'-' if slope is None else format(slope, '+.2f')} MB per "
              f"10 min (samples there: {rss0:.1f} -> {rss1:.1f} MB); target: no growth "
              f"(<= {args.growth_tolerance_mb:g} MB): "
              f"{verdict(growth is not None and growth <= args.growth_tolerance_mb)}")
        print(f"  steady RSS           median {statistics.median(rss_values):.1f} MB, max {max(rss_values):.1f} MB "
              f"(samples from t={t0:.1f} s); target < {RSS_TARGET_MB:g} MB: "
              f"{verdict(max(rss_values) < RSS_TARGET_MB)}")
    else:
        print(f"  RSS growth           not measured: {len(after)} sample(s) at or after {reference_s:g} s "
              f"(a longer --seconds or a shorter --sample-seconds)")
    print(f"  max RSS              {peak:.1f} MB (VmHWM: the agent's peak, exit included); at ready "
          f"{'-' if rss_at_ready is None else format(rss_at_ready, '.1f')} MB, start-up {startup_s:.2f} s")
    made, observed = storm["sessions"], summary["sessions_observed"]
    kernel, dropped = lost_in(summary)
    agent_counts = (f"agent (all sessions): lost in kernel {kernel}, exporters dropped/rejected {dropped}, untracked "
                    f"in kernel {summary['untracked_in_kernel']}")
    if sink is not None:  # storm sessions that never arrived: exact (a session lost in the kernel is one of them)
        delivered = min(sink["logs_port"], sink["spans_port"])
        lost = max(0, made - delivered)
        what = (f"storm sessions made - delivered at the sink ({delivered}: min of {sink['logs_port']} log records, "
                f"{sink['spans_port']} spans; sink CPU {sink['cpu_s']:.1f} s); {agent_counts}")
    else:  # stdout to /dev/null: only the agent's own counters
        lost = kernel + dropped
        what = f"{agent_counts}; delivery not counted (stdout to /dev/null)"
    print(f"  sessions             made {made} (2 x {storm['connections']} connections, {storm['conn_per_s']:.0f} "
          f"conn/s for {storm['duration_s']:.1f} s), observed {observed} (all sessions)")
    print(f"  lost                 {lost}: {what}; target 0: {verdict(lost == 0 and kernel == 0 and dropped == 0)}")
    print(f"  agent                CPU {cpu_s:.1f} s from ready to exit, "
          f"{cpu_s / observed * 1e6 if observed else float('nan'):.2f} us per session observed; exit "
          f"{exit_s:.1f} s after SIGINT")
    for text in storm_checks(storm):
        print(f"  CHECK FAILED: {text}")
    for line in notes[:40]:
        print(f"  agent stderr {line}")
    if len(notes) > 40:
        print(f"  agent stderr: {len(notes) - 40} more lines")


if __name__ == "__main__":
    sys.exit(main())
