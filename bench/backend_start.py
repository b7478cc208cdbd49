"""Start-up cost of each probe backend: time from exec to the agent's "tracing via" line, and its
memory (VmRSS then, VmHWM: the peak, which for bcc is LLVM's while compiling). As root:

    .venv/bin/python bench/backend_start.py [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time


def status_kib(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def one(backend: str) -> tuple[float, int, int]:
    start = time.monotonic()
    agent = subprocess.Popen([sys.executable, "-m", "otel_tcplife", "--backend", backend, "--format", "ndjson",
                              "-L", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for line in agent.stderr:
            if "tracing via" in line:
                break
        else:
            raise SystemExit(f"{backend}: the agent did not start")
        elapsed = time.monotonic() - start
        return elapsed, status_kib(agent.pid, "VmRSS"), status_kib(agent.pid, "VmHWM")
    finally:
        agent.send_signal(signal.SIGINT)
        agent.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    os.chdir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    print(f"{'backend':8} {'start s (median)':>17} {'RSS MiB':>8} {'peak RSS MiB':>13}")
    for backend in ("core", "bcc"):
        runs = [one(backend) for _ in range(args.runs)]
        print(f"{backend:8} {statistics.median(r[0] for r in runs):17.2f} "
              f"{statistics.median(r[1] for r in runs) / 1024:8.0f} {statistics.median(r[2] for r in runs) / 1024:13.0f}")


if __name__ == "__main__":
    main()
