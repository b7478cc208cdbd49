"""Benchmark: short-connection rate with and without otel-tcplife, and what the agent costs.

Each round runs the storm (bench/storm.py) untraced, then once per output mode with the agent
attached, and prints one table row per traced run.

Counting, decided:
- The agent runs UNFILTERED (no -L/-D/-p): every session on the machine takes the whole
  path (probe, ring buffer, decoding, formatting), as in real use, so the cost is realistic.
- Sessions made = 2 x connections counted by the storm's clients (both ends are local).
- Sessions reported = rows of the agent's own output whose LPORT or RPORT is the storm's
  server port, counted after the run: exact, whatever else runs on the machine. The agent's
  other rows (other processes' sessions) are shown apart, as "other".
- lost / untracked come from the agent's --summary and cover all sessions, not only the storm's.
- Agent CPU = user+sys of the agent process from "ready" (header printed, /proc/PID/stat) to
  exit (os.wait4 rusage), so start-up (imports, BPF load) is left out; per 1000 sessions it
  reported (all of them, storm and other). In-kernel probe time is charged to the storm's
  processes, not the agent: it shows in the traced/untraced rate ratio.
- The agent's output goes to a file on tmpfs (/dev/shm, deleted afterwards) rather than to
  /dev/null: its first line is the ready signal and its rows are what we count. Nothing reads
  it during the run, so it costs the agent about what /dev/null would.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from storm import DEFAULT_SERVERS, DEFAULT_WORKERS, free_port, run_storm  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_AGENT = REPO_ROOT / ".venv" / "bin" / "otel-tcplife"
READY_TIMEOUT_S = 60.0
EXIT_TIMEOUT_S = 30.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


def count_table_rows(output: Path, port: int) -> tuple[int, int]:
    """(rows with `port` as LPORT or RPORT, other rows) in the classic table."""
    storm = other = 0
    with output.open() as f:
        next(f, None)  # header
        for line in f:
            fields = line.split()
            # Count from the right: COMM may hold spaces. ... LPORT RADDR RPORT TX_KB RX_KB MS
            if len(fields) < 8:
                continue
            if fields[-6] == str(port) or fields[-4] == str(port):
                storm += 1
            else:
                other += 1
    return storm, other


@dataclass(frozen=True)
class Mode:
    """One way of running the agent: its extra flags and how to count storm rows in its output."""
    name: str
    agent_args: tuple[str, ...]
    count_rows: Callable[[Path, int], tuple[int, int]]


# More modes (ndjson, otlp, ...) are added here.
MODES = [
    Mode("table", (), count_table_rows),
]


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a live process (all its threads), from /proc/PID/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ", comm may hold spaces
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of proc(5)


def read_summary(stderr_path: Path) -> dict:
    for line in reversed(stderr_path.read_text().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                pass
    raise RuntimeError(f"agent printed no --summary line; stderr:\n{stderr_path.read_text()[-2000:]}")


def traced_storm(agent: Path, mode: Mode, storm_args: dict, workdir: Path) -> dict:
    """Start the agent, wait until it is ready, run the storm, stop the agent, collect counts."""
    out_path, err_path = workdir / f"{mode.name}.out", workdir / f"{mode.name}.err"
    with out_path.open("w") as out, err_path.open("w") as err:
        proc = subprocess.Popen([str(agent), "--summary", *mode.agent_args],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=err)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while b"\n" not in out_path.read_bytes()[:4096]:  # the header line: tracing has started
            if proc.poll() is not None:
                raise RuntimeError(f"agent exited with {proc.returncode}: {err_path.read_text().strip()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"agent not ready after {READY_TIMEOUT_S:.0f} s")
            time.sleep(0.01)
        cpu_at_ready = process_cpu_seconds(proc.pid)

        storm = run_storm(**storm_args)  # every session is closed when this returns

        proc.send_signal(signal.SIGINT)  # the agent drains its ring buffer, then prints --summary
        deadline = time.monotonic() + EXIT_TIMEOUT_S
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"agent did not exit within {EXIT_TIMEOUT_S:.0f} s of SIGINT")
            time.sleep(0.02)
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, tell Popen
        if proc.returncode != 0:
            raise RuntimeError(f"agent exited with {proc.returncode}: {err_path.read_text().strip()}")
    finally:
        if proc.returncode is None:  # only on failure: our own child, by its pid
            proc.kill()
            proc.wait()

    summary = read_summary(err_path)
    storm_rows, other_rows = mode.count_rows(out_path, storm_args["port"])
    agent_cpu = usage.ru_utime + usage.ru_stime - cpu_at_ready
    out_path.unlink()
    err_path.unlink()
    return {"storm": storm, "summary": summary, "reported": storm_rows, "other": other_rows,
            "agent_cpu_s": agent_cpu}


COLUMNS = [  # (header, width, format)
    ("mode", 6, "{}"),
    ("round", 5, "{}"),
    ("untraced conn/s", 15, "{:.0f}"),
    ("traced conn/s", 13, "{:.0f}"),
    ("traced/untraced", 15, "{:.3f}"),
    ("sessions made", 13, "{:.0f}"),
    ("sessions reported", 17, "{:.0f}"),
    ("other", 5, "{:.0f}"),
    ("lost", 4, "{:.0f}"),
    ("untracked", 9, "{:.0f}"),
    ("agent CPU s", 11, "{:.2f}"),
    ("agent CPU %", 11, "{:.0f}"),
    ("agent CPU s/1000 sessions", 25, "{:.4f}"),
]


def format_row(values: list) -> str:
    cells = []
    for (header, width, fmt), value in zip(COLUMNS, values):
        text = value if isinstance(value, str) else fmt.format(value)
        cells.append(text.rjust(max(width, len(header))))
    return "  ".join(cells)


def row_values(mode: str, round_label: str, untraced: dict, traced: dict) -> list:
    storm, summary = traced["storm"], traced["summary"]
    agent_sessions = summary["sessions_observed"]
    return [
        mode, round_label,
        untraced["conn_per_s"], storm["conn_per_s"], storm["conn_per_s"] / untraced["conn_per_s"],
        storm["sessions"], traced["reported"], traced["other"],
        summary["lost_in_kernel"], summary["untracked_in_kernel"],
        traced["agent_cpu_s"], 100 * traced["agent_cpu_s"] / storm["duration_s"],
        traced["agent_cpu_s"] / agent_sessions * 1000 if agent_sessions else float("nan"),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Connection rate with and without otel-tcplife.")
    parser.add_argument("--seconds", type=float, default=10.0, help="storm duration per run (default %(default)s)")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                        help="storm client processes (default: 2 per CPU, %(default)s)")
    parser.add_argument("--servers", type=int, default=DEFAULT_SERVERS,
                        help="storm server processes (default: 1 per CPU, %(default)s)")
    parser.add_argument("--bytes", type=int, default=16, dest="payload_size",
                        help="bytes sent each way per connection (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=1, help="untraced/traced pairs, alternated (default 1)")
    parser.add_argument("--warmup", type=float, default=2.0,
                        help="unreported storm seconds first, so every measured run starts with the same "
                             "TIME_WAIT backlog (default %(default)s, 0 for none)")
    parser.add_argument("--agent", type=Path, default=DEFAULT_AGENT, help="agent executable (default %(default)s)")
    parser.add_argument("--format", choices=[m.name for m in MODES], default=MODES[0].name,
                        help="agent output mode (default %(default)s)")
    args = parser.parse_args(argv)
    if not os.access(args.agent, os.X_OK):
        print(f"bench: error: agent {args.agent} is not executable (run `make setup`)", file=sys.stderr)
        return 1
    modes = [m for m in MODES if m.name == args.format]

    # One fixed port for every run: the agent's rows are matched on it.
    storm_args = {"seconds": args.seconds, "workers": args.workers, "servers": args.servers,
                  "port": free_port(), "payload_size": args.payload_size}
    print(f"otel-tcplife bench: kernel {platform.release()}, {os.cpu_count()} CPUs; storm: {args.workers} client + "
          f"{args.servers} server processes, 127.0.0.1:{storm_args['port']}, {args.payload_size} bytes each way, "
          f"{args.seconds:g} s per run; agent: {args.agent} --summary (unfiltered), output to tmpfs")
    if args.warmup > 0:
        run_storm(**{**storm_args, "seconds": args.warmup})
    print(format_row([header for header, _, _ in COLUMNS]), flush=True)

    rows: dict[str, list[list]] = {m.name: [] for m in modes}
    with tempfile.TemporaryDirectory(prefix="otel-tcplife-bench-", dir="/dev/shm") as workdir:
        for round_no in range(1, args.rounds + 1):
            untraced = run_storm(**storm_args)
            for mode in modes:
                try:
                    traced = traced_storm(args.agent, mode, storm_args, Path(workdir))
                except RuntimeError as exc:
                    print(f"bench: error: {exc}", file=sys.stderr)
                    return 1
                row = row_values(mode.name, str(round_no), untraced, traced)
                rows[mode.name].append(row)
                print(format_row(row), flush=True)
    if args.rounds > 1:
        for name, mode_rows in rows.items():
            medians = [statistics.median(column) for column in list(zip(*mode_rows))[2:]]
            print(format_row([name, "median", *medians]))

    print("sessions made = 2 x connections counted by the storm clients (client and server end are both local).")
    print("sessions reported = agent rows with the storm port as LPORT or RPORT; other = its remaining rows "
          "(other processes); lost, untracked: from --summary, all sessions.")
    print("agent CPU = agent user+sys from ready to exit (start-up excluded); % of one CPU over the storm; "
          "s/1000 sessions = per 1000 rows it reported. In-kernel probe cost shows in traced/untraced only.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
