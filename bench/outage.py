"""Outage benchmark: the collector goes away for a while under steady load; does the spool lose anything?

    .venv/bin/python bench/outage.py --seconds 40 --rate 2000 --outage-start 5 --outage-seconds 20
    .venv/bin/python bench/run.py --outage ...        # the same

One run, in this order:
1. bench/otlp_sink.py starts in another process with --control --track-ids --port-filter STORM_PORT
   (it counts, per signal, the records of the storm's sessions and their duplicates, exactly, by
   trace id; see its docstring).
2. The agent starts, unfiltered: `--format none --otlp-endpoint http://127.0.0.1:SINK_PORT` (logs and
   spans) `--spool-dir` a fresh temporary directory (mode 0700, under --spool-parent, removed at the
   end) `--stats-interval 1 --ring-buffer-size 134217728 --shutdown-timeout 300`, plus --spool-*
   when given here. Its stderr goes to a file that this script reads as it grows: one JSON stats line
   a second (the spool gauges come from there), and warnings.
3. The storm (bench/storm.py in another process) runs for --seconds at --rate connections a second
   (paced: a steady load, not the machine's maximum, so the agent keeps up and what is measured is
   the outage, not overload).
4. --outage-start seconds into the storm the sink is told to stop: its gRPC server stops at once
   (in-flight requests cancelled, as in a crash; --outage-grace to let them finish), the listening
   socket and connections close, so the agent gets connection refused. --outage-seconds later it is
   told to start again, on the same port, with its counts (and its trace id sets) kept. The storm
   goes on throughout and after (--seconds must end after the outage).
5. After the storm, wait (at most --drain-timeout s) until the agent has settled every record: in a
   stats line written at least 1 s after the storm's end, for both signals, nothing queued, nothing
   in the spool, and accepted == exported + rejected + dropped. (The sink counts a request before it
   answers it, so by then it holds everything the agent exported.) Then SIGINT the agent (it flushes
   and prints its summary), then stop the sink.

Printed: a timeline (one row per agent stats line: sink up or down, what the sink holds, the spool
gauges, retries, drops), then the results:
- made = 2 x connections counted by the storm's clients (both ends are local).
- delivered = min(unique storm log records, unique storm spans) at the sink: a session counts once,
  and only as far as both its log record and its span arrived. Per signal too.
- duplicated = storm records that reached the sink more than once (same trace id), per signal. At
  least once: a request the sink had handled when it went down (its answer never sent) is sent again.
  The agent cannot know these: its own `duplicated` counts only records replayed from the spool at
  start that may have been delivered before (a restart of the agent), 0 here.
- lost = (made - delivered) + the agent's lost_in_kernel (ring buffer full, all sessions). An alarm
  rather than a count of distinct sessions, as in run.py. The target is 0 while the spool has room.
- peak spool = the largest logs + traces spool_bytes (and spool_records) in the agent's stats lines,
  and, as a cross-check, the largest size of the spool directory's files polled here (every 0.25 s).
- first delivery = from the sink's restart to the first request the sink receives afterwards, per
  signal (sink polled every 0.25 s). The agent has no way to learn that the collector is back: its
  senders wait out their retry backoff.
- backlog drained = from the sink's restart to the first agent stats line in which, for both
  signals, the spool is empty or its oldest entry is younger than the restart (spool_oldest_age_s <
  time since the restart): every batch spooled before the restart has left the spool (1 s
  resolution, as the stats lines).
- time to drain = from the sink's restart until BOTH the spool is empty (the first stats line after
  the restart with spool_records == 0 for both signals) AND delivered == made. The latter is
  knowable only once the storm has ended (made is counted by its clients at the end), and under
  live load the spool is seldom empty at the instant of a stats line, so with the storm going on
  after the restart this is bounded below by the storm's end; the storm's end (since the restart)
  is printed with it. "backlog drained" is the figure that does not depend on the storm's length.
- the agent's summary at exit per signal, its CPU (user+sys over the whole run, start-up included),
  max RSS and exit time; the sink's CPU.
- Checks (printed when one fails; each points at an agent or bench bug): storm without errors, not at
  its cap and on schedule; per signal accepted == observed, accepted + replayed == exported + rejected
  + dropped + spooled, nothing queued, spooled or left in the spool at exit, nothing replayed or corrupted,
  sink unique records == agent exported and sink received - exported == duplicates; the spool
  directory holds no files after the agent's exit; drained before --drain-timeout; lost == 0.
  The agent's stderr lines other than its ready and stats lines are printed, with their time.
Times are seconds since the storm started (t) or since the sink's restart (+).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import (BENCH, DEFAULT_AGENT, EXIT_MARGIN_S, READY_LINE, SINK, Agent, Sink,  # noqa: E402
                     StderrLines, stop_process, storm_checks)
from storm import add_storm_arguments, free_port  # noqa: E402

STORM = BENCH / "storm.py"
RING_BUFFER_BYTES = 128 * 1024 * 1024
SHUTDOWN_TIMEOUT_S = 300.0
POLL_S = 0.05
DISK_POLL_S = 0.25
SINK_POLL_S = 0.25
SIGNALS = (("logs", "logs"), ("traces", "spans"))  # agent stats key, sink key
EXPORT_DROPS = ("rejected", "dropped_queue_full", "dropped_permanent", "dropped_retry_exhausted",
                "dropped_shutdown", "dropped_spool_full", "dropped_spool_io_error")


def dir_bytes(path: str) -> int:
    """Sum of the sizes of the files under path (the spool: <dir>/<signal>/*.seg, *.state)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except FileNotFoundError:  # deleted meanwhile
                pass
    return total


def fmt_mb(n: float) -> str:
    return f"{n / 1e6:.1f}"


TIMELINE = [  # header, width
    ("t s", 6), ("sink", 4), ("delivered logs", 14), ("delivered spans", 15), ("dup logs", 8), ("dup spans", 9),
    ("spool rec logs", 14), ("spool rec traces", 16), ("spool MB", 8), ("disk MB", 7), ("oldest s", 8),
    ("exported logs", 13), ("exported traces", 15), ("retries", 7), ("dropped", 7), ("observed", 8),
]


def timeline_row(values: list) -> str:
    return "  ".join(str(v).rjust(max(w, len(h))) for (h, w), v in zip(TIMELINE, values))


def settled(stats: dict) -> bool:
    """Whether an agent stats line says every record accepted has met its fate: nothing is queued or
    in the spool, and accepted == exported + rejected + dropped, for both signals."""
    for key, _ in SIGNALS:
        s = stats.get(key)
        if s is None or s["queued"] or s["spool_records"] \
                or s["accepted"] != s["exported"] + s["rejected"] + s["dropped"]:
            return False
    return True


def spool_sum(stats: dict, key: str) -> float:
    return sum(stats.get(s, {}).get(key, 0) for s, _ in SIGNALS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Storm at a steady rate; the OTLP sink goes down and comes back on the same port; "
                    "the agent spools to disk meanwhile. Counts made, delivered, duplicated, lost, peak "
                    "spool and time to drain.")
    parser.add_argument("--seconds", type=float, default=40.0, help="storm duration (default %(default)s)")
    parser.add_argument("--rate", type=float, default=2000.0, metavar="CONN_PER_S",
                        help="storm connections a second, over all clients (default %(default)s)")
    parser.add_argument("--outage-start", type=float, default=5.0,
                        help="seconds into the storm when the sink stops (default %(default)s)")
    parser.add_argument("--outage-seconds", type=float, default=20.0,
                        help="how long the sink stays down (default %(default)s)")
    parser.add_argument("--outage-grace", type=float, default=None, metavar="SECONDS",
                        help="grace the sink gives requests being handled when it stops (default: none, "
                             "they are cancelled at once, as in a crash)")
    parser.add_argument("--drain-timeout", type=float, default=300.0,
                        help="after the storm, longest wait for spool empty and delivered == made "
                             "(default %(default)s)")
    add_storm_arguments(parser)
    parser.add_argument("--agent", type=Path, default=DEFAULT_AGENT, help="agent executable (default %(default)s)")
    parser.add_argument("--ring-buffer-size", type=int, default=RING_BUFFER_BYTES,
                        help="the agent's --ring-buffer-size (default %(default)s)")
    parser.add_argument("--shutdown-timeout", type=float, default=SHUTDOWN_TIMEOUT_S,
                        help="the agent's --shutdown-timeout (default %(default)g)")
    parser.add_argument("--spool-parent", default=tempfile.gettempdir(),
                        help="where the fresh spool directory is made (default %(default)s)")
    parser.add_argument("--spool-max-bytes", type=int, default=None, help="the agent's (default: its own)")
    parser.add_argument("--spool-full-policy", choices=("drop_oldest", "drop_newest"), default=None,
                        help="the agent's (default: its own)")
    parser.add_argument("--spool-fsync", choices=("always", "interval", "never"), default=None,
                        help="the agent's (default: its own)")
    parser.add_argument("--keep-spool", action="store_true", help="leave the spool directory in place")
    args = parser.parse_args(argv)
    if not os.access(args.agent, os.X_OK):
        print(f"outage: error: agent {args.agent} is not executable (run `make setup`)", file=sys.stderr)
        return 1
    if args.outage_start <= 0 or args.outage_seconds <= 0:
        parser.error("--outage-start and --outage-seconds must be positive")
    if args.seconds <= args.outage_start + args.outage_seconds:
        parser.error("the storm must go on after the outage: --seconds > --outage-start + --outage-seconds")

    port = free_port()
    print(f"otel-tcplife outage bench: kernel {platform.release()}, {os.cpu_count()} CPUs; storm: {args.workers} "
          f"client + {args.servers} server processes, 127.0.0.1:{port}, {args.rate:g} conn/s, {args.payload_size} "
          f"bytes each way, {args.seconds:g} s; sink down from t={args.outage_start:g} s for {args.outage_seconds:g} s "
          f"({'grace ' + format(args.outage_grace, 'g') + ' s' if args.outage_grace is not None else 'no grace'}), "
          f"then restarted on the same port", flush=True)

    with tempfile.TemporaryDirectory(prefix="otel-tcplife-outage-", dir="/dev/shm") as workdir:
        spool_dir = tempfile.mkdtemp(prefix="otel-tcplife-spool-", dir=args.spool_parent)  # mode 0700
        try:
            return run(args, port, Path(workdir), spool_dir)
        except RuntimeError as exc:
            print(f"outage: error: {exc}", file=sys.stderr)
            return 1
        finally:
            if args.keep_spool:
                print(f"spool directory kept: {spool_dir}")
            else:
                shutil.rmtree(spool_dir, ignore_errors=True)


def run(args: argparse.Namespace, port: int, workdir: Path, spool_dir: str) -> int:
    sink = agent = storm = None
    try:
        sink = Sink(port, workdir / "sink.err", "--track-ids", "--control")
        agent_args = ["--format", "none", "--otlp-endpoint", f"http://127.0.0.1:{sink.port}",
                      "--spool-dir", spool_dir, "--stats-interval", "1",
                      "--ring-buffer-size", str(args.ring_buffer_size),
                      "--shutdown-timeout", f"{args.shutdown_timeout:g}"]
        for flag, value in (("--spool-max-bytes", args.spool_max_bytes),
                            ("--spool-full-policy", args.spool_full_policy), ("--spool-fsync", args.spool_fsync)):
            if value is not None:
                agent_args += [flag, str(value)]
        print(f"agent: {args.agent} {' '.join(agent_args)}")
        print(f"sink: {SINK.name} --port-filter {port} --track-ids --control (port {sink.port})", flush=True)
        err_path = workdir / "agent.err"
        agent = Agent([str(args.agent), *agent_args], err_path)
        log = StderrLines(err_path)

        storm_cmd = [sys.executable, str(STORM), "--seconds", f"{args.seconds:g}", "--rate", f"{args.rate:g}",
                     "--port", str(port), "--workers", str(args.workers), "--servers", str(args.servers),
                     "--bytes", str(args.payload_size)]
        t0 = time.monotonic()
        storm = subprocess.Popen(storm_cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

        def now() -> float:
            return time.monotonic() - t0

        t_stop = t_restart = t_storm_end = t_spool_empty = t_delivered = t_backlog = None
        first_delivery: dict[str, float] = {}  # sink signal -> t of the first request after the restart
        requests_at_restart: dict[str, int] = {}
        storm_result = None
        samples: list[tuple[float, dict]] = []  # (t, agent stats line)
        notes: list[tuple[float, str]] = []  # (t, other agent stderr line)
        sink_last = sink.command("stats")
        peak = {"bytes": (0, None), "records": (0, None), "disk": (0, None)}  # value, t
        next_disk = 0.0
        next_sink = 0.0
        drain_deadline = None
        print("timeline (one row per agent stats line; delivered = unique storm records at the sink; spool = "
              "logs + traces; retries, dropped: logs + traces):")
        print(timeline_row([h for h, _ in TIMELINE]), flush=True)
        while True:
            t = now()
            # The outage.
            if t_stop is None and t >= args.outage_start:
                sink.command("stop" if args.outage_grace is None else f"stop {args.outage_grace:g}")
                t_stop = now()
                print(f"t={t_stop:.1f} s: sink stopped", flush=True)
            elif t_stop is not None and t_restart is None and t >= t_stop + args.outage_seconds:
                answer = sink.command("start")
                t_restart = now()
                requests_at_restart = {"logs": answer["log_requests"], "spans": answer["span_requests"]}
                print(f"t={t_restart:.1f} s: sink restarted on port {sink.port}", flush=True)
            # The spool directory, on disk.
            if t >= next_disk:
                next_disk = t + DISK_POLL_S
                size = dir_bytes(spool_dir)
                if size > peak["disk"][0]:
                    peak["disk"] = (size, t)
            # The agent's stderr.
            new_samples = False
            for text in log.read():
                if text.startswith("{"):
                    try:
                        stats = json.loads(text)
                    except ValueError:
                        notes.append((t, text))
                        continue
                    samples.append((t, stats))
                    new_samples = True
                    for key, peak_key in (("spool_bytes", "bytes"), ("spool_records", "records")):
                        value = spool_sum(stats, key)
                        if value > peak[peak_key][0]:
                            peak[peak_key] = (value, t)
                    if t_restart is not None and t_spool_empty is None and spool_sum(stats, "spool_records") == 0:
                        t_spool_empty = t
                    if t_restart is not None and t_backlog is None and all(
                            stats[k]["spool_records"] == 0 or stats[k]["spool_oldest_age_s"] < t - t_restart
                            for k, _ in SIGNALS):
                        t_backlog = t
                elif not text.startswith(READY_LINE):
                    notes.append((t, text))
            if new_samples or t >= next_sink:
                next_sink = t + SINK_POLL_S
                sink_last = sink.command("stats")
                if t_restart is not None:
                    for key, field in (("logs", "log_requests"), ("spans", "span_requests")):
                        if key not in first_delivery and sink_last[field] > requests_at_restart[key]:
                            first_delivery[key] = now()
            if new_samples:
                stats = samples[-1][1]
                lg, tr = stats.get("logs", {}), stats.get("traces", {})
                print(timeline_row([
                    f"{t:.1f}", "up" if sink_last["serving"] else "DOWN",
                    sink_last["logs_port_unique"], sink_last["spans_port_unique"],
                    sink_last["logs_port_dup"], sink_last["spans_port_dup"],
                    lg.get("spool_records", "-"), tr.get("spool_records", "-"),
                    fmt_mb(spool_sum(stats, "spool_bytes")), fmt_mb(dir_bytes(spool_dir)),
                    f"{max(lg.get('spool_oldest_age_s', 0), tr.get('spool_oldest_age_s', 0)):.1f}",
                    lg.get("exported", "-"), tr.get("exported", "-"),
                    lg.get("retries", 0) + tr.get("retries", 0), lg.get("dropped", 0) + tr.get("dropped", 0),
                    stats.get("sessions_observed", "-"),
                ]), flush=True)
            if agent.proc.poll() is not None:
                raise RuntimeError(f"agent exited early with {agent.proc.returncode}: {agent.stderr_tail()}")
            # The storm's end, then the drain.
            if storm_result is None and storm.poll() is not None:
                t_storm_end = now()
                out, err = storm.communicate()
                if storm.returncode != 0:
                    raise RuntimeError(f"storm failed ({storm.returncode}): {err.decode()[-2000:]}")
                storm_result = json.loads(out.decode().strip().splitlines()[-1])
                drain_deadline = t_storm_end + args.drain_timeout
                print(f"t={t_storm_end:.1f} s: storm ended: {storm_result['connections']} connections, "
                      f"{storm_result['sessions']} sessions made", flush=True)
            if storm_result is not None and t_restart is not None:
                made = storm_result["sessions"]
                if t_delivered is None and sink_last["logs_port_unique"] >= made \
                        and sink_last["spans_port_unique"] >= made:
                    t_delivered = now()
                if samples and samples[-1][0] >= t_storm_end + 1.0 and settled(samples[-1][1]):
                    sink_last = sink.command("stats")
                    if t_delivered is None and min(sink_last["logs_port_unique"],
                                                   sink_last["spans_port_unique"]) >= made:
                        t_delivered = now()
                    break
                if now() > drain_deadline:
                    print(f"t={now():.1f} s: not drained {args.drain_timeout:g} s after the storm: giving up",
                          flush=True)
                    break
            time.sleep(POLL_S)

        # The agent's exit: it flushes what is left and prints its summary.
        exit_s, agent_cpu = agent.stop(args.shutdown_timeout + EXIT_MARGIN_S)
        summary = None
        for text in log.read(final=True):
            if text.startswith("{"):
                summary = json.loads(text)
            else:
                notes.append((now(), text))
        if agent.proc.returncode != 0 or summary is None:
            raise RuntimeError(f"agent exited with {agent.proc.returncode}: {agent.stderr_tail()}")
        # Each signal's directory keeps its (empty) lock file: one agent per spool.
        leftover = sorted(str(p.relative_to(spool_dir)) for p in Path(spool_dir).rglob("*")
                          if p.is_file() and p.name != "lock")
        sink_final = sink.stop()
    finally:
        stop_process(storm)  # only on failure: our own children, by their handle
        for proc in (agent, sink):
            if proc is not None:
                proc.kill()

    report(args, storm_result, summary, sink_final, peak, notes, leftover,
           dict(t_stop=t_stop, t_restart=t_restart, t_storm_end=t_storm_end, t_spool_empty=t_spool_empty,
                t_delivered=t_delivered, t_backlog=t_backlog, first_logs=first_delivery.get("logs"),
                first_spans=first_delivery.get("spans")),
           agent_cpu.cpu_s, agent.peak_rss_mb, exit_s)
    return 0


def report(args, storm: dict, summary: dict, sink: dict, peak: dict, notes: list, leftover: list, times: dict,
           agent_cpu_s: float, max_rss_mb: float, exit_s: float) -> None:
    made = storm["sessions"]
    unique = {"logs": sink["logs_port_unique"], "spans": sink["spans_port_unique"]}
    dup = {"logs": sink["logs_port_dup"], "spans": sink["spans_port_dup"]}
    delivered = min(unique.values())
    kernel_lost = summary["lost_in_kernel"]
    lost = max(0, made - delivered) + kernel_lost
    restart = times["t_restart"]

    def since_restart(t: float | None) -> str:
        return "never" if t is None else f"+{t - restart:.1f} s (t={t:.1f} s)"

    drain = None
    if times["t_spool_empty"] is not None and times["t_delivered"] is not None:
        drain = max(times["t_spool_empty"], times["t_delivered"]) - restart
    print("results:")
    print(f"  sessions made        {made}  (2 x {storm['connections']} connections in {storm['duration_s']:.1f} s, "
          f"{storm['conn_per_s']:.0f} conn/s for a target of {storm['rate']:g}; max lag behind schedule "
          f"{storm['max_lag_s']:.3f} s)")
    print(f"  delivered            {delivered}  (unique storm records at the sink: logs {unique['logs']}, "
          f"spans {unique['spans']}; received with duplicates: logs {sink['logs_port']}, spans {sink['spans_port']})")
    print(f"  duplicated           logs {dup['logs']}, spans {dup['spans']}  (storm records received more than "
          f"once; all records: logs {sink['logs_dup']}, spans {sink['spans_dup']})")
    print(f"  lost                 {lost}  (made - delivered {made - delivered} + lost in kernel {kernel_lost}; "
          f"untracked in kernel {summary['untracked_in_kernel']})")
    def at(key: str) -> str:
        return "" if peak[key][1] is None else f" at t={peak[key][1]:.1f} s"

    print(f"  peak spool           {peak['bytes'][0]} bytes ({fmt_mb(peak['bytes'][0])} MB){at('bytes')}, "
          f"{peak['records'][0]} records{at('records')} (agent stats, logs + traces); "
          f"spool directory on disk: {peak['disk'][0]} bytes at most{at('disk')}")
    print(f"  outage               sink stopped at t={times['t_stop']:.1f} s, restarted at t={restart:.1f} s "
          f"({restart - times['t_stop']:.1f} s)")
    print(f"  first delivery       logs {since_restart(times['first_logs'])}, spans "
          f"{since_restart(times['first_spans'])}  (restart -> first request the sink received)")
    print(f"  backlog drained      {since_restart(times['t_backlog'])}  (restart -> nothing spooled before the "
          f"restart is left in the spool)")
    print(f"  time to drain        {'not drained' if drain is None else f'{drain:.1f} s'}  (restart -> spool empty "
          f"{since_restart(times['t_spool_empty'])} and delivered == made {since_restart(times['t_delivered'])}; "
          f"the storm ended {since_restart(times['t_storm_end'])})")
    for key, sink_key in SIGNALS:
        stats = summary.get(key, {})
        shown = {k: v for k, v in stats.items() if v or k in ("accepted", "exported", "retries", "dropped")}
        print(f"  agent {key:<6}         {json.dumps(shown, separators=(',', ':'))}")
    print(f"  agent                observed {summary['sessions_observed']}; CPU {agent_cpu_s:.1f} s over the run "
          f"(start-up included), max RSS {max_rss_mb:.0f} MB, exit {exit_s:.1f} s after SIGINT")
    print(f"  sink                 received logs {sink['logs']} / spans {sink['spans']} in {sink['log_requests']} / "
          f"{sink['span_requests']} requests (all sessions, storm and other), CPU {sink['cpu_s']:.1f} s")

    failed = storm_checks(storm)
    observed = summary["sessions_observed"]
    for key, sink_key in SIGNALS:
        stats = summary.get(key)
        if stats is None:
            failed.append(f"no {key} stats in the agent's summary")
            continue
        settled = stats["exported"] + stats.get("spooled", 0) + sum(stats.get(k, 0) for k in EXPORT_DROPS)
        if stats["accepted"] != observed:
            failed.append(f"{key}: accepted {stats['accepted']} != observed {observed}")
        if stats["accepted"] + stats.get("replayed", 0) != settled:
            failed.append(f"{key}: accepted + replayed {stats['accepted'] + stats.get('replayed', 0)} != exported + "
                          f"rejected + dropped + spooled {settled}")
        for gauge in ("queued", "spooled", "spool_records", "replayed", "duplicated", "corrupted_entries",
                      "corrupted_records", "spool_refused_files", "in_flight"):
            if stats.get(gauge):
                failed.append(f"{key}: {gauge} = {stats[gauge]} at exit")
        if stats.get("dropped") or stats.get("rejected"):
            failed.append(f"{key}: dropped {stats.get('dropped')}, rejected {stats.get('rejected')}")
        sink_unique = sink[f"{sink_key}_unique"]
        if sink_unique != stats["exported"]:
            failed.append(f"{key}: sink unique records {sink_unique} != agent exported {stats['exported']}")
        if sink[sink_key] - stats["exported"] != sink[f"{sink_key}_dup"]:
            failed.append(f"{key}: sink received {sink[sink_key]} - exported {stats['exported']} != sink duplicates "
                          f"{sink[f'{sink_key}_dup']}")
    if leftover:
        failed.append(f"spool directory not empty after exit: {', '.join(leftover[:10])}")
    if drain is None:
        failed.append("not drained (spool empty and delivered == made) before --drain-timeout")
    if times["t_backlog"] is None:
        failed.append("the backlog spooled before the restart never left the spool")
    if lost:
        failed.append(f"lost {lost} sessions")
    if max(unique.values()) > made:
        failed.append(f"unique delivered {max(unique.values())} > made {made}")
    print("made = 2 x connections counted by the storm clients; delivered = min(unique storm log records, unique "
          "storm spans) at the sink (trace ids); lost = made - delivered + lost in kernel; backlog drained = sink "
          "restart -> no pre-restart batch left in the spool; time to drain = sink restart -> spool empty (1 s stats) "
          "and delivered == made (not before the storm's end).")
    for text in failed:
        print(f"CHECK FAILED: {text}")
    if not failed:
        print("all checks passed.")
    for t, text in notes[:40]:
        print(f"agent stderr t={t:.1f} s: {text}")
    if len(notes) > 40:
        print(f"agent stderr: {len(notes) - 40} more lines")


if __name__ == "__main__":
    sys.exit(main())
