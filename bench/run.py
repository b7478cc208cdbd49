"""Benchmark: short-connection rate with and without otel-tcplife, and what the agent costs, per output mode.

Each round runs the storm (bench/storm.py) untraced, then once per output mode with the agent
attached, and prints one table row per traced run (plus a median row per mode with --rounds N):

- table: the classic table on stdout (`--summary`);
- ndjson: `--format ndjson`, one JSON object per session on stdout;
- otlp: `--format none --otlp-endpoint http://127.0.0.1:PORT`: every session exported as an OTLP
  log record AND a span over gRPC to bench/otlp_sink.py, a receiver in another process (started
  afresh for each otlp run, before the agent; stopped after the agent has exited).

Counting, decided:
- The agent runs UNFILTERED (no -L/-D/-p): every session on the machine takes the whole
  path (probe, ring buffer, decoding, formatting, exporting), as in real use, so the cost is
  realistic. Hence two populations: the storm's sessions (counted exactly, by port) and all
  sessions (the agent's own counters, which include a few from other processes).
- made = 2 x connections counted by the storm's clients (both ends are local).
- observed = the agent's `sessions_observed` (all sessions), from its JSON stats line at exit.
- reported (table, ndjson) = rows of the agent's stdout whose local or remote port is the storm's
  server port (table: LPORT/RPORT; ndjson: "network.local.port"/"network.peer.port", parsed line by
  line with orjson), counted after the run: exact, whatever else runs on the machine. The other
  rows (other processes' sessions) are shown apart, as "other". otlp has no stdout: "-".
- delivered = storm sessions that reached the destination. table, ndjson: the destination is
  stdout, so delivered = reported. otlp: the sink checks the same two port attributes of every
  log record and span it receives; delivered = min(storm log records, storm spans), i.e. a
  session counts as delivered only as far as BOTH its log record and its span arrived; other =
  min of the non-storm counts.
- lost, untracked = the agent's `lost_in_kernel` (ring buffer full), `untracked_in_kernel`
  (socket table full): all sessions, not only the storm's.
- dropped (otlp) = everything the agent's exporters gave up on, logs + traces: the dropped_*
  counters plus `rejected` (partial success; this sink never rejects). "-" for stdout modes.
- lost (total) = lost + dropped + max(0, made - delivered). Zero means nothing was lost anywhere.
  It is an alarm, not a count of distinct sessions: a storm session lost in the kernel is also
  missing from delivered, so it is counted twice, and a session dropped for both signals counts
  twice in dropped; lost and dropped also cover non-storm sessions.
- Consistency checks, printed under the table when one fails (each would point at an agent or
  bench bug): table/ndjson: rows written == observed; otlp: for each signal accepted == observed,
  accepted == exported + rejected + dropped, queued == 0, and the sink received exactly what the
  agent says it exported; storm: client_errors == server_errors == 0 and delivered <= made.
  The agent's stderr lines other than its ready line and its stats line are printed too.
- Agent CPU = user+sys of the agent process from "ready" (/proc/PID/stat) to exit (os.wait4
  rusage), so start-up (imports, BPF load) is left out but the catching up at exit is in; % of
  one CPU over storm + exit s; per 1000 sessions it observed (all of them, storm and other).
  In-kernel probe time is charged to the storm's processes, not the agent: it shows in the
  traced/untraced rate ratio. In otlp mode the sink's CPU (parsing, gzip) competes with the
  storm too (2 CPUs here): it is printed apart, under "details".
- Ready = table: the header line on stdout; other modes: "otel-tcplife: tracing via" on stderr.
- Buffers. At the machine's maximum connection rate the agent handles sessions more slowly than
  they arrive in ndjson (decoding + records + JSON in the reading thread) and otlp (protobuf
  encoding, gzip and gRPC for two signals, all under one GIL) modes: with its defaults it loses
  sessions (ring buffer full; export queue full). It catches up after the storm if the backlog
  fits, so every mode gets `--ring-buffer-size 134217728` (128 MiB, ~1.2 M events; bench flag
  --ring-buffer-size) and otlp also `--queue-size 4000000 --shutdown-timeout 300` (bench flags
  --queue-size, --shutdown-timeout; generous, so delivery completes): enough for a storm of
  ~10-20 s here. --agent-defaults passes none of them, to show what the defaults lose.
- exit s = SIGINT to exit: draining the ring buffer backlog and, for otlp, flushing the export
  queues. max RSS MB = the agent's peak resident memory (the ring buffer pages it touched and
  the queued backlog show there).
- The agent's stdout goes to a file on tmpfs (/dev/shm, deleted afterwards) rather than to
  /dev/null: its rows are what we count. Nothing reads it during the run, so it costs the agent
  about what /dev/null would.
- --rate CONN_PER_S paces the storm (storm.py --rate) instead of running it flat out: every run,
  untraced and traced, makes the same number of connections, so traced/untraced is ~1 and the
  figures to read are the agent's CPU, losses and exit time at that load.

`run.py --outage [options]` runs bench/outage.py instead (the collector goes down and comes back
under steady load, with the agent's disk spool): see its docstring, or `run.py --outage -h`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from storm import DEFAULT_SERVERS, DEFAULT_WORKERS, free_port, run_storm  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_AGENT = REPO_ROOT / ".venv" / "bin" / "otel-tcplife"
SINK = Path(__file__).resolve().parent / "otlp_sink.py"
READY_TIMEOUT_S = 60.0
EXIT_MARGIN_S = 60.0  # on top of the agent's --shutdown-timeout
SINK_EXIT_TIMEOUT_S = 60.0
READY_LINE = b"otel-tcplife: tracing via"
CLK_TCK = os.sysconf("SC_CLK_TCK")
RING_BUFFER_BYTES = 128 * 1024 * 1024
QUEUE_SIZE = 4_000_000
SHUTDOWN_TIMEOUT_S = 300.0


def count_table_rows(output: Path, port: int) -> tuple[int, int, int]:
    """(rows with `port` as LPORT or RPORT, other rows, unparsable lines) in the classic table."""
    storm = other = bad = 0
    wanted = str(port)
    with output.open() as f:
        next(f, None)  # header
        for line in f:
            fields = line.split()
            # Count from the right: COMM may hold spaces. ... LPORT RADDR RPORT TX_KB RX_KB MS
            if len(fields) < 8:
                bad += 1
            elif fields[-6] == wanted or fields[-4] == wanted:
                storm += 1
            else:
                other += 1
    return storm, other, bad


def count_ndjson_rows(output: Path, port: int) -> tuple[int, int, int]:
    """(objects with `port` as network.local.port or network.peer.port, other objects, bad lines)."""
    storm = other = bad = 0
    loads = orjson.loads
    with output.open("rb") as f:
        for line in f:
            try:
                row = loads(line)
            except orjson.JSONDecodeError:
                bad += 1
                continue
            if row.get("network.local.port") == port or row.get("network.peer.port") == port:
                storm += 1
            else:
                other += 1
    return storm, other, bad


@dataclass(frozen=True)
class Mode:
    """One way of running the agent: its flags, its ready signal, and where its sessions are counted."""
    name: str
    agent_args: tuple[str, ...]
    ready_on_stdout: bool  # table: the header line; the others: READY_LINE on stderr
    count_rows: Callable[[Path, int], tuple[int, int, int]] | None = None  # stdout modes
    sink: bool = False  # otlp: export to bench/otlp_sink.py, count there


def build_modes(args: argparse.Namespace) -> dict[str, Mode]:
    common: tuple[str, ...] = ()
    otlp: tuple[str, ...] = ()
    if not args.agent_defaults:
        common = ("--ring-buffer-size", str(args.ring_buffer_size))
        otlp = ("--queue-size", str(args.queue_size), "--shutdown-timeout", f"{args.shutdown_timeout:g}")
    return {
        "table": Mode("table", ("--summary", *common), True, count_table_rows),
        "ndjson": Mode("ndjson", ("--format", "ndjson", *common), False, count_ndjson_rows),
        # + --otlp-endpoint, once the sink is up
        "otlp": Mode("otlp", ("--format", "none", *common, *otlp), False, sink=True),
    }


MODE_NAMES = ("table", "ndjson", "otlp")


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a live process (all its threads), from /proc/PID/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ", comm may hold spaces
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of proc(5)


def read_summary(stderr_text: str) -> dict:
    for line in reversed(stderr_text.splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                pass
    raise RuntimeError(f"agent printed no stats line; stderr:\n{stderr_text[-2000:]}")


def stop_process(proc: subprocess.Popen) -> None:
    """Kill one of our own children, by its handle, if it is still running."""
    if proc.returncode is None and proc.poll() is None:
        proc.kill()
        proc.wait()


class Sink:
    """bench/otlp_sink.py in its own process: started, asked for its port, stopped, read."""

    def __init__(self, port_filter: int) -> None:
        self.proc = subprocess.Popen([sys.executable, str(SINK), "--port-filter", str(port_filter)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        ready, _, _ = select.select([self.proc.stdout], [], [], READY_TIMEOUT_S)
        line = self.proc.stdout.readline() if ready else b""
        if not line.strip().isdigit():
            stop_process(self.proc)
            raise RuntimeError(f"otlp sink did not start: {line!r} {self.proc.stderr.read().decode()[-2000:]}")
        self.port = int(line)

    def stop(self) -> dict:
        self.proc.send_signal(signal.SIGTERM)
        try:
            out, err = self.proc.communicate(timeout=SINK_EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            stop_process(self.proc)
            raise RuntimeError(f"otlp sink did not exit within {SINK_EXIT_TIMEOUT_S:.0f} s") from None
        lines = out.decode().strip().splitlines()
        if self.proc.returncode != 0 or not lines or not lines[-1].startswith("{"):
            raise RuntimeError(f"otlp sink exited with {self.proc.returncode}: {err.decode()[-2000:]}")
        return json.loads(lines[-1])


def traced_storm(agent: Path, mode: Mode, storm_args: dict, workdir: Path, exit_timeout: float) -> dict:
    """Start the agent (and sink), wait until it is ready, run the storm, stop it, collect counts."""
    out_path, err_path = workdir / f"{mode.name}.out", workdir / f"{mode.name}.err"
    sink = Sink(storm_args["port"]) if mode.sink else None
    agent_args = list(mode.agent_args)
    if sink:
        agent_args += ["--otlp-endpoint", f"http://127.0.0.1:{sink.port}"]
    proc = None
    try:
        with out_path.open("w") as out, err_path.open("w") as err:
            proc = subprocess.Popen([str(agent), *agent_args], stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        ready_path = out_path if mode.ready_on_stdout else err_path
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            head = ready_path.read_bytes()[:4096]
            if (b"\n" in head) if mode.ready_on_stdout else (READY_LINE in head):
                break
            if proc.poll() is not None:
                raise RuntimeError(f"agent exited with {proc.returncode}: {err_path.read_text().strip()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"agent not ready after {READY_TIMEOUT_S:.0f} s")
            time.sleep(0.01)
        cpu_at_ready = process_cpu_seconds(proc.pid)

        storm = run_storm(**storm_args)  # every session is closed when this returns

        proc.send_signal(signal.SIGINT)  # the agent drains its ring buffer, flushes, prints its stats
        stopped_at = time.monotonic()
        deadline = stopped_at + exit_timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"agent did not exit within {exit_timeout:.0f} s of SIGINT")
            time.sleep(0.02)
        exit_s = time.monotonic() - stopped_at
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, tell Popen
        if proc.returncode != 0:
            raise RuntimeError(f"agent exited with {proc.returncode}: {err_path.read_text().strip()}")
        sink_counts = sink.stop() if sink else None
    finally:
        if proc is not None:
            stop_process(proc)  # only on failure: our own child, by its handle
        if sink:
            stop_process(sink.proc)

    stderr_text = err_path.read_text()
    summary = read_summary(stderr_text)
    notes = [line for line in stderr_text.splitlines()
             if line.strip() and not line.startswith("{") and not line.startswith(READY_LINE.decode())]
    if mode.count_rows:
        storm_rows, other_rows, bad_rows = mode.count_rows(out_path, storm_args["port"])
    else:
        storm_rows = other_rows = bad_rows = None
    out_path.unlink()
    err_path.unlink()
    return {"storm": storm, "summary": summary, "reported": storm_rows, "other": other_rows, "bad": bad_rows,
            "sink": sink_counts, "agent_cpu_s": usage.ru_utime + usage.ru_stime - cpu_at_ready,
            "exit_s": exit_s, "max_rss_mb": usage.ru_maxrss / 1024, "stderr": notes}


COLUMNS = [  # (header, width, format); None prints as "-" (does not apply to this mode)
    ("mode", 6, "{}"),
    ("round", 6, "{}"),
    ("untraced conn/s", 15, "{:.0f}"),
    ("traced conn/s", 13, "{:.0f}"),
    ("traced/untraced", 15, "{:.3f}"),
    ("sessions made", 13, "{:.0f}"),
    ("observed", 8, "{:.0f}"),
    ("sessions reported", 17, "{:.0f}"),
    ("other", 5, "{:.0f}"),
    ("delivered", 9, "{:.0f}"),
    ("lost", 4, "{:.0f}"),
    ("untracked", 9, "{:.0f}"),
    ("dropped", 7, "{:.0f}"),
    ("lost (total)", 12, "{:.0f}"),
    ("agent CPU s", 11, "{:.2f}"),
    ("agent CPU %", 11, "{:.0f}"),
    ("agent CPU s/1000 sessions", 25, "{:.4f}"),
    ("exit s", 6, "{:.1f}"),
    ("max RSS MB", 10, "{:.0f}"),
]


def format_row(values: list) -> str:
    cells = []
    for (header, width, fmt), value in zip(COLUMNS, values):
        text = "-" if value is None else value if isinstance(value, str) else fmt.format(value)
        cells.append(text.rjust(max(width, len(header))))
    return "  ".join(cells)


EXPORT_DROPS = ("rejected", "dropped_queue_full", "dropped_permanent", "dropped_retry_exhausted",
                "dropped_shutdown")


def exporter_dropped(summary: dict) -> int | None:
    signals = [summary[s] for s in ("logs", "traces") if s in summary]
    if not signals:
        return None
    return sum(stats.get(key, 0) for stats in signals for key in EXPORT_DROPS)


def delivered_counts(traced: dict) -> tuple[int, int]:
    """(storm sessions delivered, other sessions delivered) at the destination."""
    sink = traced["sink"]
    if sink is None:
        return traced["reported"], traced["other"]
    return (min(sink["logs_port"], sink["spans_port"]),
            min(sink["logs"] - sink["logs_port"], sink["spans"] - sink["spans_port"]))


def row_values(mode: str, round_label: str, untraced: dict, traced: dict) -> list:
    storm, summary = traced["storm"], traced["summary"]
    observed = summary["sessions_observed"]
    delivered, other = delivered_counts(traced)
    dropped = exporter_dropped(summary)
    lost_total = summary["lost_in_kernel"] + (dropped or 0) + max(0, storm["sessions"] - delivered)
    return [
        mode, round_label,
        untraced["conn_per_s"], storm["conn_per_s"], storm["conn_per_s"] / untraced["conn_per_s"],
        storm["sessions"], observed, traced["reported"], other, delivered,
        summary["lost_in_kernel"], summary["untracked_in_kernel"], dropped, lost_total,
        traced["agent_cpu_s"], 100 * traced["agent_cpu_s"] / (storm["duration_s"] + traced["exit_s"]),
        traced["agent_cpu_s"] / observed * 1000 if observed else float("nan"),
        traced["exit_s"], traced["max_rss_mb"],
    ]


def checks(traced: dict) -> list[str]:
    """What does not add up in one traced run (see the docstring); empty when all is well."""
    storm, summary, sink = traced["storm"], traced["summary"], traced["sink"]
    observed = summary["sessions_observed"]
    failed = []
    if storm["client_errors"] or storm["server_errors"]:
        failed.append(f"storm errors: client {storm['client_errors']}, server {storm['server_errors']}")
    delivered, other = delivered_counts(traced)
    if delivered > storm["sessions"]:
        failed.append(f"delivered {delivered} > made {storm['sessions']} (duplicates?)")
    if traced["bad"]:
        failed.append(f"{traced['bad']} unparsable stdout lines")
    if sink is None:
        if traced["reported"] + traced["other"] != observed:
            failed.append(f"stdout rows {traced['reported'] + traced['other']} != observed {observed}")
        return failed
    received = {"logs": sink["logs"], "traces": sink["spans"]}
    for signal_name, stats in ((s, summary.get(s)) for s in ("logs", "traces")):
        if stats is None:
            failed.append(f"no {signal_name} stats in the agent's summary")
            continue
        settled = stats["exported"] + sum(stats.get(k, 0) for k in EXPORT_DROPS)
        if stats["accepted"] != observed:
            failed.append(f"{signal_name}: accepted {stats['accepted']} != observed {observed}")
        if stats["accepted"] != settled:
            failed.append(f"{signal_name}: accepted {stats['accepted']} != exported + rejected + dropped {settled}")
        if stats.get("queued"):
            failed.append(f"{signal_name}: {stats['queued']} still queued at exit")
        if received[signal_name] != stats["exported"]:
            failed.append(f"{signal_name}: sink received {received[signal_name]} != agent exported {stats['exported']}")
    return failed


def otlp_detail(label: str, traced: dict) -> str:
    sink, summary, storm = traced["sink"], traced["summary"], traced["storm"]
    delivered_all = min(sink["logs"], sink["spans"])
    elapsed = storm["duration_s"] + traced["exit_s"]
    exported = {s: {k: v for k, v in summary[s].items() if v} for s in ("logs", "traces") if s in summary}
    return (f"  otlp {label}: sink received {sink['logs']} log records / {sink['spans']} spans "
            f"({sink['log_requests']} / {sink['span_requests']} requests; storm port: {sink['logs_port']} / "
            f"{sink['spans_port']}), sink CPU {sink['cpu_s']:.2f} s; agent exporters (non-zero counters): "
            f"{json.dumps(exported, separators=(',', ':'))}; end to end {delivered_all} sessions in "
            f"{storm['duration_s']:.1f} s storm + {traced['exit_s']:.1f} s flush = "
            f"{delivered_all / elapsed:.0f} sessions/s")


def median_or_none(column: tuple) -> float | None:
    values = [v for v in column if v is not None]
    return statistics.median(values) if values else None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--outage" in argv:  # another benchmark, with its own options
        from outage import main as outage_main
        return outage_main([a for a in argv if a != "--outage"])
    parser = argparse.ArgumentParser(description="Connection rate with and without otel-tcplife, per output mode.")
    parser.add_argument("--outage", action="store_true",
                        help="run bench/outage.py instead, with the options that follow (see --outage -h)")
    parser.add_argument("--seconds", type=float, default=10.0, help="storm duration per run (default %(default)s)")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                        help="storm client processes (default: 2 per CPU, %(default)s)")
    parser.add_argument("--servers", type=int, default=DEFAULT_SERVERS,
                        help="storm server processes (default: 1 per CPU, %(default)s)")
    parser.add_argument("--bytes", type=int, default=16, dest="payload_size",
                        help="bytes sent each way per connection (default %(default)s)")
    parser.add_argument("--rate", type=float, default=None, metavar="CONN_PER_S",
                        help="pace the storm at this many connections a second, over all clients "
                             "(default: as fast as possible)")
    parser.add_argument("--rounds", type=int, default=1, help="untraced/traced sets, alternated (default 1)")
    parser.add_argument("--warmup", type=float, default=2.0,
                        help="unreported storm seconds first, so every measured run starts with the same "
                             "TIME_WAIT backlog (default %(default)s, 0 for none)")
    parser.add_argument("--agent", type=Path, default=DEFAULT_AGENT, help="agent executable (default %(default)s)")
    parser.add_argument("--modes", "--format", default=",".join(MODE_NAMES), dest="modes",
                        help=f"comma-separated agent output modes, from {', '.join(MODE_NAMES)} (default all)")
    parser.add_argument("--ring-buffer-size", type=int, default=RING_BUFFER_BYTES,
                        help="the agent's --ring-buffer-size, every mode (default %(default)s)")
    parser.add_argument("--queue-size", type=int, default=QUEUE_SIZE,
                        help="otlp: the agent's --queue-size (default %(default)s)")
    parser.add_argument("--shutdown-timeout", type=float, default=SHUTDOWN_TIMEOUT_S,
                        help="otlp: the agent's --shutdown-timeout, its flush deadline at exit (default %(default)g)")
    parser.add_argument("--agent-defaults", action="store_true",
                        help="pass none of the three flags above: the agent's own defaults")
    args = parser.parse_args(argv)
    if not os.access(args.agent, os.X_OK):
        print(f"bench: error: agent {args.agent} is not executable (run `make setup`)", file=sys.stderr)
        return 1
    all_modes = build_modes(args)
    names = [n.strip() for n in args.modes.split(",") if n.strip()]
    unknown = [n for n in names if n not in all_modes]
    if unknown or not names:
        parser.error(f"--modes: unknown {', '.join(unknown) or 'none given'}; choose from {', '.join(MODE_NAMES)}")
    modes = [all_modes[n] for n in names]
    # The agent gets its own deadline; we give it a margin on top (stdout modes default to 5 s).
    exit_timeout = (5.0 if args.agent_defaults else args.shutdown_timeout) + EXIT_MARGIN_S

    # One fixed port for every run: the agent's rows (and the sink's records) are matched on it.
    if args.rate is not None and not args.rate > 0:
        parser.error("--rate must be positive")
    storm_args = {"seconds": args.seconds, "workers": args.workers, "servers": args.servers,
                  "port": free_port(), "payload_size": args.payload_size, "rate": args.rate}
    pace = "as fast as possible" if args.rate is None else f"paced at {args.rate:g} conn/s"
    print(f"otel-tcplife bench: kernel {platform.release()}, {os.cpu_count()} CPUs; storm: {args.workers} client + "
          f"{args.servers} server processes, 127.0.0.1:{storm_args['port']}, {args.payload_size} bytes each way, "
          f"{args.seconds:g} s per run, {pace}; agent: {args.agent}, unfiltered, stdout to tmpfs")
    for mode in modes:
        endpoint = " --otlp-endpoint http://127.0.0.1:<sink port>" if mode.sink else ""
        print(f"  {mode.name}: otel-tcplife {' '.join(mode.agent_args)}{endpoint}")
    if args.warmup > 0:
        run_storm(**{**storm_args, "seconds": args.warmup})
    print(format_row([header for header, _, _ in COLUMNS]), flush=True)

    rows: dict[str, list[list]] = {m.name: [] for m in modes}
    details: list[str] = []
    with tempfile.TemporaryDirectory(prefix="otel-tcplife-bench-", dir="/dev/shm") as workdir:
        for round_no in range(1, args.rounds + 1):
            untraced = run_storm(**storm_args)
            for mode in modes:
                try:
                    traced = traced_storm(args.agent, mode, storm_args, Path(workdir), exit_timeout)
                except RuntimeError as exc:
                    print(f"bench: error: {exc}", file=sys.stderr)
                    return 1
                row = row_values(mode.name, str(round_no), untraced, traced)
                rows[mode.name].append(row)
                print(format_row(row), flush=True)
                label = f"round {round_no}"
                if traced["sink"] is not None:
                    details.append(otlp_detail(label, traced))
                details += [f"  CHECK FAILED {mode.name} {label}: {text}" for text in checks(traced)]
                details += [f"  agent stderr {mode.name} {label}: {line}" for line in traced["stderr"][:20]]
    if args.rounds > 1:
        for name, mode_rows in rows.items():
            medians = [median_or_none(column) for column in list(zip(*mode_rows))[2:]]
            print(format_row([name, "median", *medians]))

    print("made = 2 x connections counted by the storm clients (client and server end are both local); "
          "observed = the agent's sessions_observed (all sessions).")
    print("sessions reported = stdout rows with the storm port as local or remote port (table, ndjson); other = "
          "the remaining rows (other processes), for otlp the sink's non-storm records.")
    print("delivered = storm sessions at the destination: stdout rows (table, ndjson); otlp: min(storm log records, "
          "storm spans) received by the sink (another process).")
    print("lost, untracked: agent's kernel counters, all sessions; dropped: agent's exporter drops + rejected, "
          "logs + traces (otlp); lost (total) = lost + dropped + max(0, made - delivered): 0 = nothing lost.")
    print("agent CPU = agent user+sys from ready to exit (start-up excluded, catching up at exit included); % of "
          "one CPU over storm + exit s; s/1000 sessions = per 1000 sessions observed. In-kernel probe cost shows in "
          "traced/untraced only. exit s = SIGINT to exit (ring buffer backlog + export flush).")
    if details:
        print("details:")
        print("\n".join(details))
    else:
        print("all consistency checks passed; the agent printed nothing else on stderr.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
