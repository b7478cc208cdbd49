"""Benchmark: short-connection rate with and without otel-tcplife, and what the agent costs, per output mode.

Each round runs the storm (bench/storm.py) untraced, then once per output mode with the agent
attached, and prints one table row per traced run (plus a median row per mode with --rounds N),
after the exact command line. With --bracket-seconds S (--targets: 20) an untraced run of S seconds
also follows every traced run, and each traced run's baseline is the mean of the untraced runs just
before and after it: this VM's speed drifts by several per cent within minutes, which biased the
ratios of the modes run last in a round against a single baseline run first. Modes:

- table: the classic table on stdout (`--summary`);
- ndjson: `--format ndjson`, one JSON object per session on stdout;
- otlp-json: `--format otlp-json`, one OTLP/JSON LogsData object per batch on stdout (its log records);
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
- reported (table, ndjson, otlp-json) = rows of the agent's stdout whose local or remote port is the
  storm's server port (table: LPORT/RPORT; ndjson: "network.local.port"/"network.peer.port", parsed line
  by line with orjson; otlp-json: log records whose attribute "network.local.port" or "network.peer.port"
  has that intValue, every line parsed with orjson, ~13 us a record), counted after the run: exact,
  whatever else runs on the machine. The other rows (other processes' sessions) are shown apart, as
  "other". otlp has no stdout: "-".
- delivered = storm sessions that reached the destination. table, ndjson, otlp-json: the destination is
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
  bench bug): stdout modes: sessions written == observed; otlp: for each signal accepted == observed,
  accepted == exported + rejected + dropped, queued == 0, and the sink received exactly what the
  agent says it exported; storm: client_errors == server_errors == 0, not stopped at its connection
  cap, at most 1 s behind its schedule when paced, and delivered <= made.
  The agent's stderr lines other than its ready line and its stats line are printed too.
- Agent CPU = user+sys of the agent process from "ready" (/proc/PID/stat) to exit (os.wait4
  rusage), so start-up (imports, BPF load) is left out but the catching up at exit is in; % of
  one CPU over storm + exit s; per 1000 sessions it observed (all of them, storm and other).
  agent sys % = the kernel's part of it (syscalls, page faults); minor faults/session = pages the
  agent touched fresh over the same span (each one zeroed and mapped by the kernel), per session.
  In-kernel probe time is charged to the storm's processes, not the agent: it shows in the
  traced/untraced rate ratio. In otlp mode the sink's CPU (parsing, gzip) competes with the
  storm too (2 CPUs here): it is printed apart, under "details".
- Ready = table: the header line on stdout; other modes: "otel-tcplife: tracing via" on stderr.
  start-up s = Popen to ready (polled every 10 ms).
- Memory, from /proc/PID/status: RSS at ready = VmRSS right at ready; steady RSS = the median of VmRSS
  sampled about every second during the storm (storm.run_storm's tick hook, in this process); max RSS =
  the largest VmHWM seen (sampled with VmRSS, then every 20 ms until exit). Not the child's ru_maxrss:
  Linux counts in it the forking process's memory before exec, i.e. this bench's own peak.
- Buffers. At the machine's maximum connection rate the agent handles sessions more slowly than
  they arrive in ndjson (decoding + records + JSON in the reading thread) and otlp (protobuf
  encoding, gzip and gRPC for two signals, all under one GIL) modes: with its defaults it loses
  sessions (ring buffer full; export queue full). It catches up after the storm if the backlog
  fits, so every mode gets `--ring-buffer-size 134217728` (128 MiB, ~1.2 M events; bench flag
  --ring-buffer-size) and otlp also `--queue-size 4000000 --shutdown-timeout 300` (bench flags
  --queue-size, --shutdown-timeout; generous, so delivery completes): enough for a storm of
  ~10-20 s here, not necessarily for the default 60 s (then lost > 0: a larger --ring-buffer-size,
  or --seconds 20). --agent-defaults passes none of them, to show what the defaults lose.
- exit s = SIGINT to exit: draining the ring buffer backlog and, for otlp, flushing the export
  queues. max RSS MB = the agent's peak resident memory (the ring buffer, mapped once, and the
  queued backlog show there).
- The agent's stdout goes to a file on tmpfs (/dev/shm, deleted afterwards) rather than to
  /dev/null: its rows are what we count. Nothing reads it during the run, but its writes cost the
  agent the file's fresh pages (`copy_folio_from_iter_atomic` in perf): at the maximum rate
  OTLP/JSON took 3.7 µs per session so, 3.1 into a pipe read by `cat` and 2.8 into /dev/null. A
  real log pipeline pays for storing the lines too; the figures here include it.
- --rate CONN_PER_S paces the storm (storm.py --rate) instead of running it flat out: every run,
  untraced and traced, makes the same number of connections, so traced/untraced is ~1 and the
  figures to read are the agent's CPU, losses and exit time at that load.
- --targets: the issue's targets. The max-rate rounds (every mode, --seconds, default 60) with the
  agent's own defaults (implies --agent-defaults), then ndjson and otlp paced at --targets-rate (5000
  conn/s) for --targets-rate-seconds (20), without an untraced baseline ("paced" rows), then a table:
  per mode, lost at max rate (storm sessions made - delivered; met only if that, lost_in_kernel and the
  exporters' drops are all 0; worst round) = 0; traced/untraced >= 0.90 (table, ndjson), >= 0.80
  (otlp-json, otlp); agent CPU per session observed at the paced rate <= 5 us (ndjson), <= 15 us
  (otlp); start-up < 0.5 s; steady RSS < 60 MB (at max rate). Median over rounds but for lost.
  RSS growth over 10 minutes is bench/soak.py's (`run.py --soak`).

`run.py --outage [options]` runs bench/outage.py instead (the collector goes down and comes back
under steady load, with the agent's disk spool): see its docstring, or `run.py --outage -h`.
`run.py --soak [options]` runs bench/soak.py (max rate for 10 minutes: the agent's RSS curve).
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
from pathlib import Path
from typing import Callable

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
import outage  # noqa: E402
import soak  # noqa: E402
from measure import (AGENT_SHUTDOWN_TIMEOUT_S, DEFAULT_AGENT, EXIT_MARGIN_S, MODE_NAMES, READY_LINE,  # noqa: E402
                     RSS_TARGET_MB, Agent, Baseline, Bracket, Mode, Sink, agent_modes, storm_checks)
from storm import add_storm_arguments, free_port, run_storm  # noqa: E402

RING_BUFFER_BYTES = 128 * 1024 * 1024
QUEUE_SIZE = 4_000_000
SHUTDOWN_TIMEOUT_S = 300.0
RSS_SAMPLE_S = 1.0  # VmRSS sampled this often during the storm


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


OTLP_PORT_KEYS = ("network.local.port", "network.peer.port")


def count_otlp_json_rows(output: Path, port: int) -> tuple[int, int, int]:
    """(log records with `port` as network.local.port or network.peer.port, other log records, bad lines)
    in OTLP/JSON LogsData lines: {"resourceLogs":[{"resource":..,"scopeLogs":[{"scope":..,"logRecords":[
    {.., "attributes":[{"key":"network.local.port","value":{"intValue":"1234"}}, ..]}]}]}]}, several
    records a line (one line per batch). intValue is a decimal string in OTLP/JSON; an int is accepted too."""
    storm = other = bad = 0
    loads = orjson.loads
    wanted = (str(port), port)
    with output.open("rb") as f:
        for line in f:
            line_storm = line_other = 0
            try:
                for resource_logs in loads(line)["resourceLogs"]:
                    for scope_logs in resource_logs["scopeLogs"]:
                        for record in scope_logs["logRecords"]:
                            for attribute in record["attributes"]:
                                if attribute["key"] in OTLP_PORT_KEYS \
                                        and attribute["value"].get("intValue") in wanted:
                                    line_storm += 1
                                    break
                            else:
                                line_other += 1
            except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
                bad += 1
                continue
            storm += line_storm
            other += line_other
    return storm, other, bad


# Where each stdout mode's sessions are counted, after the run: (storm rows, other rows, bad lines).
COUNT_ROWS: dict[str, Callable[[Path, int], tuple[int, int, int]]] = {
    "table": count_table_rows, "ndjson": count_ndjson_rows, "otlp-json": count_otlp_json_rows}


def read_summary(stderr_text: str) -> dict:
    for line in reversed(stderr_text.splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                pass
    raise RuntimeError(f"agent printed no stats line; stderr:\n{stderr_text[-2000:]}")


def traced_storm(agent_path: Path, mode: Mode, storm_args: dict, workdir: Path, exit_timeout: float) -> dict:
    """Start the agent (and sink), wait until it is ready, run the storm, stop it, collect counts."""
    out_path, err_path = workdir / f"{mode.name}.out", workdir / f"{mode.name}.err"
    sink = Sink(storm_args["port"], workdir / "sink.err") if mode.sink else None
    agent_args = list(mode.agent_args)
    if sink:
        agent_args += ["--otlp-endpoint", f"http://127.0.0.1:{sink.port}"]
    agent = None
    try:
        agent = Agent([str(agent_path), *agent_args], err_path, out_path, mode.ready_on_stdout)
        rss_samples: list[float] = []

        def sample_rss(_elapsed: float) -> None:
            rss = agent.rss_mb()
            if rss is not None:
                rss_samples.append(rss)

        # every session is closed when this returns; RSS sampled about every second meanwhile
        storm = run_storm(**storm_args, tick=sample_rss, tick_seconds=RSS_SAMPLE_S)

        exit_s, agent_cpu = agent.stop(exit_timeout)
        agent_cpu = agent_cpu.since(agent.cpu_at_ready)
        if agent.proc.returncode != 0:
            raise RuntimeError(f"agent exited with {agent.proc.returncode}: {err_path.read_text().strip()}")
        sink_counts = sink.stop() if sink else None
    finally:
        if agent is not None:
            agent.kill()  # only on failure
        if sink:
            sink.kill()

    stderr_text = err_path.read_text()
    summary = read_summary(stderr_text)
    notes = [line for line in stderr_text.splitlines()
             if line.strip() and not line.startswith("{") and not line.startswith(READY_LINE)]
    if mode.name in COUNT_ROWS:
        storm_rows, other_rows, bad_rows = COUNT_ROWS[mode.name](out_path, storm_args["port"])
    else:
        storm_rows = other_rows = bad_rows = None
    out_path.unlink()
    err_path.unlink()
    return {"storm": storm, "summary": summary, "reported": storm_rows, "other": other_rows, "bad": bad_rows,
            "sink": sink_counts, "agent_cpu": agent_cpu,
            "exit_s": exit_s, "max_rss_mb": agent.peak_rss_mb, "startup_s": agent.startup_s,
            "rss_at_ready_mb": agent.rss_at_ready_mb, "rss_samples": rss_samples,
            "steady_rss_mb": statistics.median(rss_samples) if rss_samples else None, "stderr": notes}


COLUMNS = [  # (header, width, format); None prints as "-" (does not apply to this mode)
    ("mode", 9, "{}"),
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
    ("agent sys %", 11, "{:.0f}"),
    ("minor faults/session", 20, "{:.3f}"),
    ("exit s", 6, "{:.1f}"),
    ("start-up s", 10, "{:.2f}"),
    ("RSS at ready MB", 15, "{:.1f}"),
    ("steady RSS MB", 13, "{:.1f}"),
    ("max RSS MB", 10, "{:.1f}"),
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


def lost_total(traced: dict) -> int:
    """lost + dropped + max(0, made - delivered): 0 = nothing lost anywhere (see the docstring)."""
    summary = traced["summary"]
    delivered, _ = delivered_counts(traced)
    return (summary["lost_in_kernel"] + (exporter_dropped(summary) or 0)
            + max(0, traced["storm"]["sessions"] - delivered))


def row_values(mode: str, round_label: str, untraced: float | None, traced: dict) -> list:
    """One table row; untraced: the baseline conn/s, None for none (the paced runs of --targets)."""
    storm, summary, cpu = traced["storm"], traced["summary"], traced["agent_cpu"]
    observed = summary["sessions_observed"]
    delivered, other = delivered_counts(traced)
    dropped = exporter_dropped(summary)
    return [
        mode, round_label,
        untraced, storm["conn_per_s"], storm["conn_per_s"] / untraced if untraced else None,
        storm["sessions"], observed, traced["reported"], other, delivered,
        summary["lost_in_kernel"], summary["untracked_in_kernel"], dropped, lost_total(traced),
        cpu.cpu_s, 100 * cpu.cpu_s / (storm["duration_s"] + traced["exit_s"]),
        cpu.cpu_s / observed * 1000 if observed else float("nan"),
        100 * cpu.sys_s / cpu.cpu_s if cpu.cpu_s else None,
        cpu.minor_faults / observed if observed else None,
        traced["exit_s"], traced["startup_s"], traced["rss_at_ready_mb"], traced["steady_rss_mb"],
        traced["max_rss_mb"],
    ]


def checks(traced: dict) -> list[str]:
    """What does not add up in one traced run (see the docstring); empty when all is well."""
    storm, summary, sink = traced["storm"], traced["summary"], traced["sink"]
    observed = summary["sessions_observed"]
    failed = storm_checks(storm)
    delivered, other = delivered_counts(traced)
    if delivered > storm["sessions"]:
        failed.append(f"delivered {delivered} > made {storm['sessions']} (duplicates?)")
    if traced["bad"]:
        failed.append(f"{traced['bad']} unparsable stdout lines")
    if sink is None:
        if traced["reported"] + traced["other"] != observed:
            failed.append(f"stdout sessions {traced['reported'] + traced['other']} != observed {observed}")
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


PACED_MODES = ("ndjson", "otlp")  # --targets: agent CPU per session at a fixed moderate rate
RATIO_TARGETS = {"table": 0.90, "ndjson": 0.90, "otlp-json": 0.80, "otlp": 0.80}  # traced/untraced, at least
CPU_TARGETS_US = {"ndjson": 5.0, "otlp": 15.0}  # agent CPU per session observed, at most
STARTUP_TARGET_S = 0.5  # Popen -> ready, below


def fmt_or_dash(value: float | None, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def targets_table(max_rate: dict[str, list[tuple[float, dict]]], paced: dict[str, list[dict]],
                  rate: float) -> list[str]:
    """The issue's targets, one line per target per mode: (untraced, traced) pairs of the max-rate rounds
    and the paced runs (one a round). lost: the worst round; the other figures: the median over rounds."""
    lines: list[list[str]] = []

    def add(target: str, mode: str, measured: str, goal: str, ok: bool | None, detail: str) -> None:
        lines.append([target, mode, measured, goal, "not measured" if ok is None else "met" if ok else "NOT met",
                      detail])

    for name, runs in max_rate.items():
        worst = max((traced for _, traced in runs), key=lost_total)
        storm, summary = worst["storm"], worst["summary"]
        delivered, _ = delivered_counts(worst)
        undelivered = max(0, storm["sessions"] - delivered)
        dropped = exporter_dropped(summary)
        add("lost at max rate", name, str(undelivered), "0",
            undelivered == 0 and summary["lost_in_kernel"] == 0 and not dropped,
            f"storm sessions made {storm['sessions']} - delivered {delivered}; agent (all sessions): lost in kernel "
            f"{summary['lost_in_kernel']}, exporters dropped {'-' if dropped is None else dropped}; "
            f"{storm['conn_per_s']:.0f} conn/s for {storm['duration_s']:.1f} s")
    for name, runs in max_rate.items():
        ratio = statistics.median(t["storm"]["conn_per_s"] / u for u, t in runs)
        goal = RATIO_TARGETS[name]
        add("traced/untraced rate", name, f"{ratio:.3f}", f">= {goal:.2f}", ratio >= goal,
            f"traced {statistics.median(t['storm']['conn_per_s'] for _, t in runs):.0f} / untraced "
            f"{statistics.median(u for u, _ in runs):.0f} conn/s")
    for name, paced_runs in paced.items():
        per_run = [t["agent_cpu"].cpu_s / t["summary"]["sessions_observed"] * 1e6
                   for t in paced_runs if t["summary"]["sessions_observed"]]
        us = median_or_none(tuple(per_run))
        lag = max(t["storm"]["max_lag_s"] for t in paced_runs)
        goal = CPU_TARGETS_US[name]
        add(f"CPU/session at {rate:g}/s", name, fmt_or_dash(us, "{:.2f} us"), f"<= {goal:g} us",
            None if us is None else us <= goal,
            "agent CPU s / sessions observed, per run: " + ", ".join(f"{v:.2f}" for v in per_run)
            + f" us; storm {statistics.median(t['storm']['conn_per_s'] for t in paced_runs):.0f} conn/s, "
            f"max lag {lag:.3f} s" + ("" if lag <= 1.0 else " (the storm did NOT keep the rate)"))
    for name, runs in max_rate.items():
        startup = statistics.median(t["startup_s"] for _, t in runs)
        add("start-up s", name, f"{startup:.2f}", f"< {STARTUP_TARGET_S:g}", startup < STARTUP_TARGET_S,
            "Popen -> ready (table: header line; others: 'tracing via' on stderr)")
    for name, runs in max_rate.items():
        steady = median_or_none(tuple(t["steady_rss_mb"] for _, t in runs))
        ready = median_or_none(tuple(t["rss_at_ready_mb"] for _, t in runs))
        samples = sum(len(t["rss_samples"]) for _, t in runs)
        add("steady RSS MB", name, fmt_or_dash(steady, "{:.1f}"), f"< {RSS_TARGET_MB:g}",
            None if steady is None else steady < RSS_TARGET_MB,
            f"median of {samples} VmRSS samples (1 s) during the max-rate storm; at ready "
            f"{fmt_or_dash(ready, '{:.1f}')}, max {max(t['max_rss_mb'] for _, t in runs):.1f} MB")
    header = ["target", "mode", "measured", "target", "verdict", "detail"]
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header) - 1)]

    def join(row: list[str]) -> str:
        return " | ".join([cell.ljust(w) for cell, w in zip(row, widths)] + [row[-1]])

    return [join(header), join(["-" * w for w in widths] + ["-" * 6]), *map(join, lines)]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--outage" in argv:  # another benchmark, with its own options
        return outage.main([a for a in argv if a != "--outage"])
    if "--soak" in argv:  # another benchmark, with its own options
        return soak.main([a for a in argv if a != "--soak"])
    parser = argparse.ArgumentParser(description="Connection rate with and without otel-tcplife, per output mode.")
    parser.add_argument("--outage", action="store_true",
                        help="run bench/outage.py instead, with the options that follow (see --outage -h)")
    parser.add_argument("--soak", action="store_true",
                        help="run bench/soak.py instead, with the options that follow (see --soak -h)")
    parser.add_argument("--seconds", type=float, default=60.0, help="storm duration per run (default %(default)s)")
    add_storm_arguments(parser)
    parser.add_argument("--rate", type=float, default=None, metavar="CONN_PER_S",
                        help="pace the storm at this many connections a second, over all clients "
                             "(default: as fast as possible)")
    parser.add_argument("--rounds", type=int, default=1, help="untraced/traced sets, alternated (default 1)")
    parser.add_argument("--bracket-seconds", type=float, default=None, metavar="SECONDS",
                        help="an untraced run of SECONDS before every traced run and after the last one; each "
                             "traced run's baseline is the mean of the two beside it (default: off, one untraced "
                             "run of --seconds per round; --targets: 20)")
    parser.add_argument("--warmup", type=float, default=2.0,
                        help="unreported storm seconds first, so every measured run starts with the same "
                             "TIME_WAIT backlog (default %(default)s, 0 for none)")
    parser.add_argument("--agent", type=Path, action="append", dest="agents",
                        help=f"agent executable (default {DEFAULT_AGENT}); given more than once, every mode runs "
                             "with each agent in every round (in turn, the order reversed every other round), "
                             "rows labelled MODE#N for the Nth: an A/B comparison under the same conditions")
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
    parser.add_argument("--targets", action="store_true",
                        help="the issue's targets: the max-rate rounds with the agent's defaults (implies "
                             "--agent-defaults), then a paced run per mode of ndjson, otlp at --targets-rate, then "
                             "a table of figures against the targets")
    parser.add_argument("--targets-rate", type=float, default=5000.0, metavar="CONN_PER_S",
                        help="--targets: the paced run's rate, for CPU per session (default %(default)g)")
    parser.add_argument("--targets-rate-seconds", type=float, default=20.0,
                        help="--targets: the paced run's duration (default %(default)g)")
    args = parser.parse_args(argv)
    if args.targets:
        if args.rate is not None:
            parser.error("--targets runs flat out and at --targets-rate: no --rate")
        if not args.targets_rate > 0 or not args.targets_rate_seconds > 0:
            parser.error("--targets-rate and --targets-rate-seconds must be positive")
        args.agent_defaults = True
        if args.bracket_seconds is None:
            args.bracket_seconds = 20.0
    if args.bracket_seconds is not None and args.bracket_seconds < 0:
        parser.error("--bracket-seconds must not be negative (0: off)")
    agents: list[Path] = args.agents or [DEFAULT_AGENT]
    if args.targets and len(agents) > 1:
        parser.error("--targets takes one --agent")
    for agent in agents:
        if not os.access(agent, os.X_OK):
            print(f"bench: error: agent {agent} is not executable (run `make setup`)", file=sys.stderr)
            return 1
    all_modes = (agent_modes() if args.agent_defaults
                 else agent_modes(args.ring_buffer_size, args.queue_size, args.shutdown_timeout))
    names = [n.strip() for n in args.modes.split(",") if n.strip()]
    unknown = [n for n in names if n not in all_modes]
    if unknown or not names:
        parser.error(f"--modes: unknown {', '.join(unknown) or 'none given'}; choose from {', '.join(MODE_NAMES)}")
    modes = [all_modes[n] for n in names]
    # The agent gets its own deadline; we give it a margin on top (stdout modes default to 5 s).
    exit_timeout = (AGENT_SHUTDOWN_TIMEOUT_S if args.agent_defaults else args.shutdown_timeout) + EXIT_MARGIN_S

    # One fixed port for every run: the agent's rows (and the sink's records) are matched on it.
    if args.rate is not None and not args.rate > 0:
        parser.error("--rate must be positive")
    storm_args = {"seconds": args.seconds, "workers": args.workers, "servers": args.servers,
                  "port": free_port(), "payload_size": args.payload_size, "rate": args.rate}
    pace = "as fast as possible" if args.rate is None else f"paced at {args.rate:g} conn/s"
    paced_modes = [m for m in modes if m.name in PACED_MODES] if args.targets else []
    if args.bracket_seconds:
        pace += f"; untraced {args.bracket_seconds:g} s before and after each traced run"
    if paced_modes:
        pace += (f"; then {', '.join(m.name for m in paced_modes)} paced at {args.targets_rate:g} conn/s for "
                 f"{args.targets_rate_seconds:g} s (no untraced baseline)")
    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    print(f"otel-tcplife bench: kernel {platform.release()}, {os.cpu_count()} CPUs; storm: {args.workers} client + "
          f"{args.servers} server processes, 127.0.0.1:{storm_args['port']}, {args.payload_size} bytes each way, "
          f"{args.seconds:g} s per run, {pace}; agent: {agents[0] if len(agents) == 1 else 'several'}, unfiltered, "
          f"stdout to tmpfs")
    if len(agents) > 1:
        for number, agent in enumerate(agents, 1):
            print(f"  agent #{number}: {agent}")
    for mode in modes:
        endpoint = " --otlp-endpoint http://127.0.0.1:<sink port>" if mode.sink else ""
        print(f"  {mode.name}: otel-tcplife {' '.join(mode.agent_args)}{endpoint}")
    if args.warmup > 0:
        run_storm(**{**storm_args, "seconds": args.warmup})
    print(format_row([header for header, _, _ in COLUMNS]), flush=True)

    # (label, agent, mode) per traced run of a round; the label is the mode's name, MODE#N with several agents.
    variants = [(m.name if len(agents) == 1 else f"{m.name}#{n}", agent, m)
                for m in modes for n, agent in enumerate(agents, 1)]
    rows: dict[str, list[list]] = {label: [] for label, _, _ in variants}
    runs: dict[str, list[tuple[float, dict]]] = {label: [] for label, _, _ in variants}  # (untraced, traced)
    paced: dict[str, list[dict]] = {m.name: [] for m in paced_modes}
    details: list[str] = []

    def traced_run(mode: Mode, run_args: dict, label: str, agent: Path = agents[0], name: str = "") -> dict:
        traced = traced_storm(agent, mode, run_args, Path(workdir), exit_timeout)
        name = name or mode.name
        if traced["sink"] is not None:
            details.append(otlp_detail(f"{name} {label}" if name != mode.name else label, traced))
        details.extend(f"  CHECK FAILED {name} {label}: {text}" for text in checks(traced))
        details.extend(f"  agent stderr {name} {label}: {line}" for line in traced["stderr"][:20])
        return traced

    with tempfile.TemporaryDirectory(prefix="otel-tcplife-bench-", dir="/dev/shm") as workdir:
        try:
            baseline_args = {**storm_args, "seconds": args.bracket_seconds} if args.bracket_seconds else storm_args
            for round_no in range(1, args.rounds + 1):
                bracket = Bracket(lambda: run_storm(**baseline_args)["conn_per_s"])
                # With several agents, each mode's runs in turn, every other round in reverse order: neither
                # agent always runs first after the untraced run, or last before the next mode.
                ordered = [variants[i:i + len(agents)] for i in range(0, len(variants), len(agents))]
                for group in ordered:
                    for name, agent, mode in (group if round_no % 2 else reversed(group)):
                        traced = traced_run(mode, storm_args, f"round {round_no}", agent, name)
                        if args.bracket_seconds:  # the traced run's baseline: the untraced runs on either side
                            baseline = bracket.baseline()
                            details.append(f"  baseline {name} round {round_no}: {baseline} (conn/s)")
                        else:  # the round's one untraced run
                            baseline = Baseline(bracket.before)
                        runs[name].append((baseline.conn_per_s, traced))
                        row = row_values(name, str(round_no), baseline.conn_per_s, traced)
                        rows[name].append(row)
                        print(format_row(row), flush=True)
            if args.rounds > 1:
                for name, mode_rows in rows.items():
                    medians = [median_or_none(column) for column in list(zip(*mode_rows))[2:]]
                    print(format_row([name, "median", *medians]), flush=True)
            paced_args = {**storm_args, "seconds": args.targets_rate_seconds, "rate": args.targets_rate}
            for round_no in range(1, args.rounds + 1):
                for mode in paced_modes:
                    traced = traced_run(mode, paced_args, f"paced {args.targets_rate:g}/s, round {round_no}")
                    paced[mode.name].append(traced)
                    print(format_row(row_values(mode.name, f"paced{round_no}", None, traced)), flush=True)
        except RuntimeError as exc:
            print(f"bench: error: {exc}", file=sys.stderr)
            return 1

    print("made = 2 x connections counted by the storm clients (client and server end are both local); "
          "observed = the agent's sessions_observed (all sessions).")
    print("sessions reported = stdout rows (otlp-json: log records) with the storm port as local or remote port; "
          "other = the remaining rows (other processes), for otlp the sink's non-storm records.")
    print("delivered = storm sessions at the destination: = reported (stdout modes); otlp: min(storm log records, "
          "storm spans) received by the sink (another process).")
    print("lost, untracked: agent's kernel counters, all sessions; dropped: agent's exporter drops + rejected, "
          "logs + traces (otlp); lost (total) = lost + dropped + max(0, made - delivered): 0 = nothing lost.")
    print("agent CPU = agent user+sys from ready to exit (start-up excluded, catching up at exit included); % of "
          "one CPU over storm + exit s; s/1000 sessions = per 1000 sessions observed. In-kernel probe cost shows in "
          "traced/untraced only. exit s = SIGINT to exit (ring buffer backlog + export flush).")
    print("start-up s = Popen to ready; RSS at ready = VmRSS then; steady RSS = median of VmRSS sampled every "
          f"{RSS_SAMPLE_S:g} s during the storm; max RSS = peak (VmHWM). MB = MiB.")
    if paced:
        print(f"paced rows: the storm at {args.targets_rate:g} conn/s, no untraced baseline (-): read the agent's "
              "CPU per session there.")
    if details:
        print("details:")
        print("\n".join(details))
    else:
        print("all consistency checks passed; the agent printed nothing else on stderr.")
    if args.targets:
        print(f"targets (agent defaults; max rate: {args.rounds} round(s) of {args.seconds:g} s, lost = worst round, "
              f"other figures = median over rounds; CPU/session = agent CPU s / sessions observed, median of "
              f"{args.rounds} paced run(s) of {args.targets_rate_seconds:g} s):")
        print("\n".join(targets_table(runs, paced, args.targets_rate)))
        print("RSS growth over 10 min at max rate: not measured here, see `run.py --soak` (bench/soak.py).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
