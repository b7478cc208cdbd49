"""What the kernel probe alone costs the workload: the storm untraced, then with only the probe.

    .venv/bin/python bench/probe_cost.py [--seconds 15] [--rounds 3] [--no-accept | --compare-accept]

"Probe only" is the BPF object loaded and attached as the agent does it, with a minimal reader
(`CoreProbe.read()` in a loop: records parsed, nothing else), so what the workload loses is the
in-kernel cost plus ~0.5 µs per session of parsing. While it runs, kernel.bpf_stats_enabled is on
(restored after) and each program's run count and run time come from `bpftool prog show`: the time
spent inside the BPF programs, per run and per session, exactly (not the tracepoint dispatch around
them, nor the slower syscall exit path that the syscall tracepoints cost every task).
--no-accept leaves out the accept programs; --compare-accept runs the probe both with and without
them in every round, to see what they cost.

An untraced storm runs before and after every probe-only storm, and each ratio is against the mean
of the two around it: this machine's rate drifts by 10% within minutes. The median is over rounds.
Needs root, BPF and bpftool.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import Bracket, stop_process  # noqa: E402
from storm import add_storm_arguments, free_port, run_storm  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
STATS_SYSCTL = Path("/proc/sys/kernel/bpf_stats_enabled")
PROGRAM_PREFIXES = ("set_state_", "sys_exit_accept")
READY = "ready"

HOLDER = f"""
import signal, sys
sys.path.insert(0, {str(ROOT)!r})
from otel_tcplife.probe import core
if sys.argv[1] == "no-accept":
    core.ACCEPT_PROGRAMS = ()
probe = core.CoreProbe(core.ProbeSettings()).start()
stopping = []
signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
print({READY!r}, flush=True)
while not stopping:
    probe.read()
probe.close()
"""


def loaded_programs() -> list[dict]:
    return json.loads(subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, check=True).stdout)


def our_programs(before: set[int]) -> dict[int, str]:
    """Programs with our names loaded since `before` (ids): the holder's."""
    return {p["id"]: p["name"] for p in loaded_programs()
            if p["id"] not in before and p.get("name", "").startswith(PROGRAM_PREFIXES)}


def program_stats(ids: dict[int, str]) -> dict[str, tuple[int, int]]:
    """name -> (run count, run time ns)."""
    stats = {}
    for prog_id, name in ids.items():
        shown = json.loads(subprocess.run(["bpftool", "-j", "prog", "show", "id", str(prog_id)],
                                          capture_output=True, check=True).stdout)
        stats[name] = (shown.get("run_cnt", 0), shown.get("run_time_ns", 0))
    return stats


def probe_only_storm(storm_args: dict, accept: bool) -> tuple[dict, dict[str, tuple[int, int]]]:
    before = {p["id"] for p in loaded_programs()}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, "accept" if accept else "no-accept"],
                              stdout=subprocess.PIPE, text=True)
    try:
        if holder.stdout.readline().strip() != READY:
            raise RuntimeError(f"probe did not start (exit {holder.wait()})")
        ids = our_programs(before)
        start = program_stats(ids)
        storm = run_storm(**storm_args)
        end = program_stats(ids)
    finally:
        stop_process(holder)
    return storm, {name: (end[name][0] - start[name][0], end[name][1] - start[name][1]) for name in ids.values()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="storm duration per run (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds, each a probe-only run per variant between untraced runs (default %(default)s)")
    variant = parser.add_mutually_exclusive_group()
    variant.add_argument("--no-accept", action="store_true", help="attach without the accept programs")
    variant.add_argument("--compare-accept", action="store_true",
                         help="run the probe with and without the accept programs in every round")
    add_storm_arguments(parser)
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.seconds <= 0:
        parser.error("--rounds must be at least 1 and --seconds positive")
    if shutil.which("bpftool") is None:
        print("probe_cost: bpftool not found (apt-get install bpftool)", file=sys.stderr)
        return 2
    try:
        stats_before = STATS_SYSCTL.read_text().strip()
        STATS_SYSCTL.write_text("1")
    except OSError as exc:
        print(f"probe_cost: cannot enable {STATS_SYSCTL} ({exc.strerror}): run as root", file=sys.stderr)
        return 2

    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    storm_args = {"seconds": args.seconds, "workers": args.workers, "servers": args.servers,
                  "payload_size": args.payload_size, "port": free_port()}
    variants = [True, False] if args.compare_accept else [not args.no_accept]
    print(f"{'round':>5} {'probe':>9} {'untraced conn/s':>15} {'probe conn/s':>12} {'ratio':>6} {'sessions':>9}  "
          "BPF ns/run (runs/session) per program; BPF µs/session; BPF % of machine CPU")
    ratios: dict[bool, list[float]] = {accept: [] for accept in variants}
    per_session: dict[bool, list[float]] = {accept: [] for accept in variants}
    try:
        run_storm(**{**storm_args, "seconds": 2.0})  # warm-up
        for round_no in range(1, args.rounds + 1):
            bracket = Bracket(lambda: run_storm(**storm_args)["conn_per_s"])
            for accept in variants:
                traced, stats = probe_only_storm(storm_args, accept)
                baseline = bracket.baseline()
                untraced = baseline.conn_per_s
                sessions = traced["sessions"]
                total_ns = sum(ns for _, ns in stats.values())
                ratios[accept].append(traced["conn_per_s"] / untraced)
                per_session[accept].append(total_ns / sessions / 1000)
                programs = ", ".join(f"{name} {ns / max(runs, 1):.0f} ({runs / sessions:.2f})"
                                     for name, (runs, ns) in sorted(stats.items()))
                machine = total_ns / 1e9 / (traced["duration_s"] * len(os.sched_getaffinity(0))) * 100
                print(f"{round_no:>5} {variant_name(accept):>9} {untraced:>15.0f} {traced['conn_per_s']:>12.0f} "
                      f"{ratios[accept][-1]:>6.3f} {sessions:>9}  {programs}; {per_session[accept][-1]:.2f} µs; "
                      f"{machine:.1f}% ({baseline})", flush=True)
                time.sleep(0.5)
    finally:
        STATS_SYSCTL.write_text(stats_before)
    for accept in variants:
        print(f"median, {variant_name(accept)}: probe-only/untraced {statistics.median(ratios[accept]):.3f}, "
              f"BPF {statistics.median(per_session[accept]):.2f} µs per session")
    return 0


def variant_name(accept: bool) -> str:
    return "accept" if accept else "no-accept"


if __name__ == "__main__":
    sys.exit(main())
