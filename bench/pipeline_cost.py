"""Offline: what the agent's pipeline costs per session after the probe, per output mode and Resource mode.

    .venv/bin/python bench/pipeline_cost.py [--modes table,ndjson,otlp-json,otlp] [--sessions 200000] [--rounds 5]
    .venv/bin/python bench/pipeline_cost.py --profile otlp:process     # cProfile of one variant

Synthetic events (bench/encode.py's sessions: four fifths the storm's, from 8 processes; the others from
--others processes), in batches of --batch as the ring buffer holds them (records with their headers),
unpacked as the agent's reader does (only the fields the outputs read, Pipeline.read_fields), then
through Pipeline.handle as the agent runs it (its own flags per mode, plus
--resource agent or process), with the agent's allocator and collector settings (interpreter), in this
one thread. table: its rows written to /dev/null. otlp: the exporters are not started; after handle, their queues are taken and encoded into
requests (what the workers do) in the same thread, and the requests thrown away: so both halves of the
exporters' CPU (reading thread and workers) are timed, without gRPC. stdout formats write to /dev/null.
The pids are not running here, so each process's Resource is resolved once from what the kernel gave
(as for a process gone before it was looked up), then cached: the per-session work is what is timed.
Prints µs per session, best and median round, per mode and Resource, alternated round by round.
"""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = str(Path(__file__).resolve().parent)
sys.path[:] = [p for p in sys.path if p not in (BENCH, "")]  # bench/profile.py would hide the stdlib's

import argparse  # noqa: E402
import cProfile  # noqa: E402
import gc  # noqa: E402
import io  # noqa: E402
import os  # noqa: E402
import pstats  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import struct  # noqa: E402
import time  # noqa: E402

sys.path.insert(0, str(Path(BENCH).parent))
sys.path.append(BENCH)

from encode import sessions  # noqa: E402
from otel_tcplife import abi, interpreter  # noqa: E402
from otel_tcplife.cli import parse_config  # noqa: E402
from otel_tcplife.delivery.retry import SendResult  # noqa: E402
from otel_tcplife.pipeline import Pipeline  # noqa: E402
from otel_tcplife.probe import ring  # noqa: E402
from otel_tcplife.session import as_events  # noqa: E402

MODES = {
    "table": ["--format", "table"],
    "ndjson": ["--format", "ndjson"],
    "otlp-json": ["--format", "otlp-json"],
    "otlp": ["--format", "none", "--otlp-endpoint", "http://127.0.0.1:9", "--queue-size", "100000000"],
}


class Devnull(io.TextIOWrapper):
    """A stdout that is /dev/null, text (the table) and .buffer (the other formats)."""

    def __init__(self) -> None:
        super().__init__(open(os.devnull, "wb"), encoding="utf-8")


def make_pipeline(mode: str, resource: str) -> Pipeline:
    config = parse_config([*MODES[mode], "--resource", resource])
    stdout = Devnull()
    pipeline = Pipeline(config, stdout)
    pipeline.devnull = stdout  # the pipeline keeps only its .buffer: closed with the wrapper otherwise
    pipeline.fields = pipeline.read_fields()
    for exporter in pipeline.exporters.values():
        exporter._send = lambda payload, timeout: SendResult()
    return pipeline


def run(pipeline: Pipeline, batches: list[bytes]) -> float:
    """CPU seconds for reading the batches' records and handle(), then (otlp) encoding what the exporters
    queued."""
    records = ring.record_struct(abi.event_struct(pipeline.fields))
    start = time.process_time()
    for batch in batches:
        pipeline.handle(list(records.iter_unpack(batch)))
    for exporter in pipeline.exporters.values():
        queue = exporter._queue
        while len(queue):
            if getattr(exporter, "_runs", False):  # each record's Resource, as runs of the queue
                runs: list = []
                exporter._encode(queue.take(exporter._max_batch, 0, runs=runs), runs)
            else:
                exporter._encode(queue.take(exporter._max_batch, 0))
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", default="table,ndjson,otlp-json,otlp")
    parser.add_argument("--sessions", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=2048, help="events per handle() (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--others", type=int, default=40,
                        help="processes owning the non-storm fifth of the sessions (default %(default)s)")
    parser.add_argument("--profile", metavar="MODE:RESOURCE", help="cProfile one variant, one round, instead")
    args = parser.parse_args()
    interpreter.tune_malloc()  # as the agent starts
    rng = random.Random(args.seed)
    made = sessions(args.sessions, rng)
    # The storm's sessions come from 8 processes (pids 40000-40007); the others' from a pool of --others.
    made = [s if 40000 <= s.pid < 40008 else s._replace(pid=1000 + s.pid % args.others) for s in made]
    events = as_events(made)
    # As the ring buffer holds them: a header (the length) and the event, padded to 8 bytes.
    padding = bytes(ring.RECORD_SIZE - ring.HEADER_SIZE - abi.EVENT.size)
    records = [struct.pack("<II", abi.EVENT.size, 0) + abi.EVENT.pack(*event) + padding for event in events]
    batches = [b"".join(records[i:i + args.batch]) for i in range(0, len(records), args.batch)]
    variants = [(m, r) for m in args.modes.split(",") for r in ("agent", "process")]
    pipelines = {v: make_pipeline(*v) for v in variants}
    for v, pipeline in pipelines.items():  # warm the caches, as a running agent's are
        run(pipeline, batches[:4])
    interpreter.tune_collector()
    if args.profile:
        mode, resource = args.profile.split(":")
        profile = cProfile.Profile()
        profile.runcall(run, pipelines[mode, resource], batches)
        pstats.Stats(profile).sort_stats("tottime").print_stats(25)
        return
    times: dict[tuple[str, str], list[float]] = {v: [] for v in variants}
    for round_no in range(args.rounds):
        for v in (variants if round_no % 2 == 0 else reversed(variants)):
            gc.collect()
            times[v].append(run(pipelines[v], batches) * 1e6 / len(events))
    print(f"{len(events)} sessions x {args.rounds} rounds, batches of {args.batch}, Python {sys.version.split()[0]}")
    print(f"{'mode':<12}{'resource':<10}{'best µs':>9}{'median µs':>11}{'vs agent (median)':>19}")
    for mode, resource in variants:
        t = times[mode, resource]
        base = statistics.median(times[mode, "agent"])
        print(f"{mode:<12}{resource:<10}{min(t):>9.2f}{statistics.median(t):>11.2f}"
              f"{100 * (statistics.median(t) / base - 1):>+18.1f}%")


if __name__ == "__main__":
    main()
