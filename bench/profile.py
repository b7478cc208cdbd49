"""Where the agent's time goes: py-spy samples of the agent under a paced storm, summed by component.

    .venv/bin/python bench/profile.py                       # ndjson at 5000 conn/s
    .venv/bin/python bench/profile.py --mode otlp --rate 5000 --seconds 20
    .venv/bin/python bench/profile.py --agent-cmd "env -C /tmp/old PYTHONPATH=/tmp/old:$SITE $VENV/bin/python -S -m otel_tcplife"
        (an older commit in /tmp/old, `git worktree add`, with the BPF object copied in; SITE is the
        venv's site-packages: -S and -C keep the venv's editable install of this checkout out of the way)

The agent (unfiltered, its own defaults; --mode as in run.py: table, ndjson, otlp-json, otlp, the
last with bench/otlp_sink.py in another process) runs under bench/storm.py at --rate for --seconds,
while `py-spy record --gil --format raw --rate HZ` samples it for --seconds minus 2 (one second of
margin at each end). --gil: only the thread holding the GIL is sampled, so waiting (epoll, locks,
gRPC calls) is left out and what remains is the Python work that competes for the one core the GIL
allows; gRPC's C threads and the kernel's time are not in it. Each sample is charged to its
innermost frame of otel-tcplife's own code (C calls such as struct, mmap and orjson show on the
line that makes them) or, if it has none, to its innermost frame; frames are summed by component
(ring buffer read, decode, each output, delivery, gRPC, other). Prints the components and the --top
busiest functions, as % of the samples. --agent-cmd profiles another build (e.g. an older commit,
to compare).
"""

from __future__ import annotations

import argparse
import collections
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import DEFAULT_AGENT, Agent, Sink, agent_modes  # noqa: E402
from storm import free_port, run_storm  # noqa: E402

PY_SPY = Path(sys.executable).parent / "py-spy"
# (component, substrings of a frame "function (file:line)"), first match wins.
COMPONENTS = [
    ("ring buffer read", ("probe/ring.py", "probe/core.py")),
    ("decode", ("session.py",)),
    ("table", ("output/table.py",)),
    ("ndjson", ("output/ndjson.py",)),
    ("otlp-json", ("output/otlp_json.py",)),
    ("otlp frames", ("output/otlp_frames.py", "output/otlp_wire.py")),
    ("delivery", ("delivery/", "output/otlp.py")),
    ("grpc", ("grpc/",)),
    ("records", ("record.py",)),
    ("process names", ("enrich.py",)),
    ("pipeline", ("pipeline.py", "cli.py", "stats.py", "clock.py")),
]


def component(frame: str) -> str:
    for name, needles in COMPONENTS:
        if any(n in frame for n in needles):
            return name
    return "other"


def summarize(raw: Path, top: int) -> str:
    by_function: collections.Counter = collections.Counter()
    by_component: collections.Counter = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        samples = int(count)
        frames = stack.split(";")
        ours = [f for f in frames if "otel_tcplife/" in f]
        frame = ours[-1] if ours else frames[-1]
        name, _, where = frame.partition(" (")
        total += samples
        by_function[f"{name} ({where.split(':')[0]})"] += samples
        by_component[component(frame)] += samples
    if not total:
        return "no samples"
    lines = [f"samples holding the GIL: {total}", "by component:"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in by_component.most_common()]
    lines.append(f"top {top} functions (self):")
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in by_function.most_common(top)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", default="ndjson", choices=("table", "ndjson", "otlp-json", "otlp"))
    parser.add_argument("--rate", type=float, default=5000.0, help="storm connections a second (default %(default)g)")
    parser.add_argument("--seconds", type=float, default=15.0, help="storm duration (default %(default)g)")
    parser.add_argument("--hz", type=int, default=250, help="py-spy samples a second (default %(default)s)")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--agent-cmd", default=str(DEFAULT_AGENT), help="the agent command (default %(default)s)")
    args = parser.parse_args(argv)
    if not PY_SPY.exists():
        print(f"profile: error: {PY_SPY} not found (pip install py-spy)", file=sys.stderr)
        return 1
    if args.seconds < 4:
        parser.error("--seconds must be at least 4")
    port = free_port()
    mode = agent_modes()[args.mode]
    with tempfile.TemporaryDirectory(prefix="otel-tcplife-profile-") as workdir:
        raw = Path(workdir) / "profile.raw"
        sink = Sink(port, Path(workdir) / "sink.err") if mode.sink else None
        agent_args = list(mode.agent_args) + (["--otlp-endpoint", f"http://127.0.0.1:{sink.port}"] if sink else [])
        if mode.ready_on_stdout:
            agent_args.append("--verbose")  # table: so that it says on stderr when it is ready
        agent = spy = None
        try:
            agent = Agent([*shlex.split(args.agent_cmd), *agent_args], Path(workdir) / "agent.err")
            storm: dict = {}
            runner = threading.Thread(target=lambda: storm.update(run_storm(
                seconds=args.seconds, port=port, rate=args.rate)))
            runner.start()
            time.sleep(1)
            spy = subprocess.run([str(PY_SPY), "record", "--pid", str(agent.proc.pid), "--duration",
                                  str(int(args.seconds - 2)), "--rate", str(args.hz), "--format", "raw",
                                  "--output", str(raw), "--gil", "--nonblocking"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            runner.join()
            agent.stop(60)
        finally:
            if agent is not None:
                agent.kill()
            if sink:
                sink.stop()
        if spy is None or spy.returncode != 0 or not raw.exists():
            print(f"profile: error: py-spy failed: {spy.stderr if spy else ''}", file=sys.stderr)
            return 1
        print(f"agent: {args.agent_cmd} {' '.join(agent_args)}; storm {storm.get('conn_per_s', 0):.0f} conn/s "
              f"for {args.seconds:g} s; py-spy {args.hz} Hz for {int(args.seconds - 2)} s")
        print(summarize(raw, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
