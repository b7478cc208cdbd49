"""What the benchmarks share: the agent's output modes, the agent and the OTLP sink in their own processes
(started, waited for, measured, stopped), and untraced runs bracketing the traced ones.

run.py, soak.py, outage.py, profile.py and probe_cost.py import this; it imports none of them.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

BENCH = Path(__file__).resolve().parent
DEFAULT_AGENT = BENCH.parent / ".venv" / "bin" / "otel-tcplife"
SINK = BENCH / "otlp_sink.py"
READY_LINE = "otel-tcplife: tracing via"  # on the agent's stderr once it traces (not in table mode)
READY_TIMEOUT_S = 60.0
EXIT_MARGIN_S = 60.0  # waited for the agent's exit on top of its --shutdown-timeout
AGENT_SHUTDOWN_TIMEOUT_S = 5.0  # the agent's default --shutdown-timeout
SINK_EXIT_TIMEOUT_S = 60.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
RSS_TARGET_MB = 60.0  # steady RSS, below


@dataclass(frozen=True)
class Mode:
    """One way of running the agent: its flags, and its ready signal."""
    name: str
    agent_args: tuple[str, ...]
    ready_on_stdout: bool  # table: the header line; the others: READY_LINE on stderr
    sink: bool = False  # otlp: export to bench/otlp_sink.py (+ --otlp-endpoint, once the sink is up)


MODE_NAMES = ("table", "ndjson", "otlp-json", "otlp")


def agent_modes(ring_buffer_size: int | None = None, queue_size: int | None = None,
                shutdown_timeout: float | None = None) -> dict[str, Mode]:
    """The four output modes, by name: with the agent's own defaults, or with these flags (run.py's buffers;
    the last two for otlp only)."""
    common: tuple[str, ...] = () if ring_buffer_size is None else ("--ring-buffer-size", str(ring_buffer_size))
    otlp = common
    if queue_size is not None:
        otlp += ("--queue-size", str(queue_size))
    if shutdown_timeout is not None:
        otlp += ("--shutdown-timeout", f"{shutdown_timeout:g}")
    return {
        "table": Mode("table", ("--summary", *common), True),
        "ndjson": Mode("ndjson", ("--format", "ndjson", *common), False),
        "otlp-json": Mode("otlp-json", ("--format", "otlp-json", *common), False),
        "otlp": Mode("otlp", ("--format", "none", *otlp), False, sink=True),
    }


class CpuUsage(NamedTuple):
    cpu_s: float  # user + sys
    sys_s: float  # in the kernel: syscalls and page faults
    minor_faults: int  # a fresh page touched (the kernel zeroes and maps it)

    def since(self, earlier: "CpuUsage") -> "CpuUsage":
        return CpuUsage(*(now - then for now, then in zip(self, earlier)))


def process_cpu(pid: int) -> CpuUsage:
    """CPU and minor faults of a live process (all its threads), from /proc/PID/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ", comm may hold spaces
    user, system = int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK  # fields 14 and 15 of proc(5)
    return CpuUsage(user + system, system, int(fields[7]))  # minflt: field 10


def vm_status_mb(pid: int) -> tuple[float, float] | None:
    """(VmRSS, VmHWM) of a live process in MB (MiB), from /proc/PID/status; None once it is gone (or a
    zombie, which has neither line). VmHWM, the peak RSS, rather than the child's ru_maxrss: that one
    also counts the memory of this (the forking) process before exec, so it would show the bench's own
    peak, not the agent's, once this process has grown (e.g. parsing a large output)."""
    rss = hwm = None
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    rss = int(line.split()[1]) / 1024  # kB
                elif line.startswith(b"VmHWM:"):
                    hwm = int(line.split()[1]) / 1024
    except OSError:
        return None
    return None if rss is None or hwm is None else (rss, hwm)


def stop_process(proc: subprocess.Popen | None) -> None:
    """Kill one of our own children, by its handle, if it is still running."""
    if proc is not None and proc.returncode is None and proc.poll() is None:
        proc.kill()
        proc.wait()


class Agent:
    """The agent in its own process, from its start to its exit: start-up time, CPU, memory."""

    def __init__(self, command: list[str], err_path: Path, out_path: Path = Path(os.devnull),
                 ready_on_stdout: bool = False) -> None:
        """Start `command`, stdout to out_path, stderr to err_path, and wait until it is ready: ready_on_stdout,
        a first line in out_path (the table's header); else READY_LINE in err_path (polled every 10 ms).
        RuntimeError, the process killed, if it exits first or is not ready READY_TIMEOUT_S after its start."""
        self.err_path = err_path
        if command and Path(command[0]) == DEFAULT_AGENT:  # a bench run leaves no probe pinned behind it
            command = [command[0], "--no-pin", *command[1:]]
        with out_path.open("wb") as out, err_path.open("wb") as err:
            started = time.monotonic()
            self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        ready_path, ready = (out_path, b"\n") if ready_on_stdout else (err_path, READY_LINE.encode())
        try:
            while ready not in ready_path.read_bytes()[:65536]:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"agent exited with {self.proc.returncode}: {self.stderr_tail()}")
                if time.monotonic() - started > READY_TIMEOUT_S:
                    raise RuntimeError(f"agent not ready after {READY_TIMEOUT_S:.0f} s")
                time.sleep(0.01)
        except BaseException:
            stop_process(self.proc)
            raise
        self.startup_s = time.monotonic() - started  # Popen to ready
        self.cpu_at_ready = process_cpu(self.proc.pid)
        self.rss_at_ready_mb, self.peak_rss_mb = vm_status_mb(self.proc.pid) or (None, 0.0)

    def stderr_tail(self) -> str:
        return self.err_path.read_text().strip()[-2000:]

    def rss_mb(self) -> float | None:
        """VmRSS now; None once the agent has exited. Its VmHWM goes into peak_rss_mb."""
        status = vm_status_mb(self.proc.pid)
        if status is None:
            return None
        self.peak_rss_mb = max(self.peak_rss_mb, status[1])
        return status[0]

    def stop(self, timeout: float) -> tuple[float, CpuUsage]:
        """SIGINT (the agent drains its ring buffer, flushes, prints its stats), then wait for it to exit,
        reading VmHWM (into peak_rss_mb) until it is a zombie. Returns (seconds to exit, CPU of its whole
        life: .since(self.cpu_at_ready) for ready to exit); sets proc.returncode. RuntimeError if it takes
        longer than timeout."""
        self.proc.send_signal(signal.SIGINT)
        stopped_at = time.monotonic()
        while True:
            self.rss_mb()
            pid, status, usage = os.wait4(self.proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - stopped_at > timeout:
                raise RuntimeError(f"agent did not exit within {timeout:.0f} s of SIGINT")
            time.sleep(0.02)
        self.proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, tell Popen
        return time.monotonic() - stopped_at, CpuUsage(usage.ru_utime + usage.ru_stime, usage.ru_stime,
                                                       usage.ru_minflt)

    def kill(self) -> None:
        """Only on failure: our own child, by its handle."""
        stop_process(self.proc)


class StderrLines:
    """The agent's stderr file, read as it grows, in whole non-empty lines."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset, self.partial = path, 0, b""

    def read(self, final: bool = False) -> list[str]:
        """The lines written since the last call; final: the last one too, even without its newline."""
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        self.offset += len(data)
        lines = (self.partial + data).split(b"\n")
        self.partial = b"" if final else lines.pop()
        return [line.decode(errors="replace") for line in lines if line.strip()]


class Sink:
    """bench/otlp_sink.py --port-filter PORT [flags] in its own process: started, asked for its port, stopped,
    read. With "--control" among flags, command() sends it commands on its stdin."""

    def __init__(self, port_filter: int, err_path: Path, *flags: str) -> None:
        self.err_path = err_path
        with err_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(SINK), "--port-filter", str(port_filter), *flags],
                stdin=subprocess.PIPE if "--control" in flags else subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=err)
        line = self._line(READY_TIMEOUT_S)
        if not line.strip().isdigit():
            stop_process(self.proc)
            raise RuntimeError(f"otlp sink did not start: {line!r} {self._stderr()}")
        self.port = int(line)

    def _stderr(self) -> str:
        return self.err_path.read_text()[-2000:]

    def _line(self, timeout: float) -> bytes:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        return self.proc.stdout.readline() if ready else b""

    def command(self, text: str) -> dict:
        """--control: one command (stats, stop [GRACE], start), its answer: the sink's counts."""
        self.proc.stdin.write(text.encode() + b"\n")
        self.proc.stdin.flush()
        line = self._line(SINK_EXIT_TIMEOUT_S)
        if not line.startswith(b"{"):
            raise RuntimeError(f"otlp sink: no answer to {text!r}: {line!r} {self._stderr()}")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"otlp sink: {text}: {answer['error']}")
        return answer

    def stop(self) -> dict:
        """SIGTERM, wait for it, return its final JSON line of counts."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=SINK_EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            stop_process(self.proc)
            raise RuntimeError(f"otlp sink did not exit within {SINK_EXIT_TIMEOUT_S:.0f} s") from None
        lines = out.decode().strip().splitlines()
        if self.proc.returncode != 0 or not lines or not lines[-1].startswith("{"):
            raise RuntimeError(f"otlp sink exited with {self.proc.returncode}: {self._stderr()}")
        return json.loads(lines[-1])

    def kill(self) -> None:
        """Only on failure: our own child, by its handle."""
        stop_process(self.proc)


def storm_checks(storm: dict) -> list[str]:
    """What went wrong in a storm (run_storm's or storm.py's result); empty when all is well."""
    failed = []
    if storm["client_errors"] or storm["server_errors"]:
        failed.append(f"storm errors: client {storm['client_errors']}, server {storm['server_errors']}")
    if storm["capped"]:
        failed.append(f"the storm stopped at its cap of {storm['max_connections']} connections")
    if storm["rate"] and storm["max_lag_s"] > 1.0:
        failed.append(f"the storm fell {storm['max_lag_s']:.1f} s behind its schedule (rate {storm['rate']:g}): "
                      "the machine did not keep the rate")
    return failed


class Baseline(NamedTuple):
    """The untraced rates (conn/s) beside one traced run."""
    before: float
    after: float | None = None  # None: not bracketed, `before` alone is the baseline

    @property
    def conn_per_s(self) -> float:
        return self.before if self.after is None else (self.before + self.after) / 2

    def __str__(self) -> str:
        return f"untraced {self.before:.0f} before, {self.after:.0f} after"


class Bracket:
    """Untraced runs around traced ones, each traced run's baseline the mean of the untraced runs just before
    and just after it: this machine's speed drifts by several per cent (up to 10%) within minutes, which a
    single untraced run at the start charges to the traced runs made last.

        bracket = Bracket(untraced)      # runs untraced() (returns conn/s): the first traced run's before
        ... a traced run ...
        baseline = bracket.baseline()    # runs untraced() again: this run's after, the next one's before
    """

    def __init__(self, untraced: Callable[[], float]) -> None:
        self.untraced = untraced
        self.before = untraced()

    def baseline(self) -> Baseline:
        """After a traced run: the untraced run after it, and that traced run's baseline."""
        before, self.before = self.before, self.untraced()
        return Baseline(before, self.before)
