"""Micro-benchmark: OTLP protobuf encoding per session, the record path vs SessionFrames (logs + traces).

    .venv/bin/python bench/encode.py [--sessions 20000] [--batch 2048] [--rounds 5] [--seed 1]

Synthetic sessions like the ones bench/storm.py makes (loopback client + server ends, ephemeral
ports, a few pids and comms), plus some IPv6, remote peers and failed connects. Each round builds
FRESH sessions (new ports, byte counts, durations, so per-session values are not already cached),
then times serializing requests for both signals, batch by batch (--batch, the default batch
size):
- records + ProtoEncoder: from Sessions, RecordBuilder's SessionRecords, then the generated
  protobuf classes (the readable reference, and what the agent did before SessionFrames);
- SessionFrames + WireEncoder: from the same sessions as the probe's event tuples, what the agent
  does (frames in the reading thread, requests in the exporters).
Prints µs per session (best and median round) and checks that both produce the same bytes.
Then, on the same events, the stdout encoders alone: NDJSON, OTLP/JSON log records, OTLP/JSON
spans (each batch's output made whole, as the agent writes it), the classic table (written to a
stream that drops it), journald entries (made, not sent: a datagram per session costs more again).
"""

from __future__ import annotations

import argparse
import errno
import gc
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from otel_tcplife import abi  # noqa: E402
from otel_tcplife.enrich import ProcessNames  # noqa: E402
from otel_tcplife.output.journald import JournaldEncoder, resource_fields  # noqa: E402
from otel_tcplife.output.ndjson import NdjsonEncoder  # noqa: E402
from otel_tcplife.output.otlp_json import OtlpJsonEncoder  # noqa: E402
from otel_tcplife.output.otlp_proto import ProtoEncoder  # noqa: E402
from otel_tcplife.output.otlp_frames import SessionFrames  # noqa: E402
from otel_tcplife.output.otlp_wire import WireEncoder  # noqa: E402
from otel_tcplife.config import TableStyle  # noqa: E402
from otel_tcplife.output.table import TableWriter  # noqa: E402
from otel_tcplife.record import RecordBuilder  # noqa: E402
from otel_tcplife.resource import build_resource, resource_json, resource_proto, scope_json, scope_proto  # noqa: E402
from otel_tcplife.session import Session, as_events  # noqa: E402

COMMS = ["python3", "curl", "nginx", "postgres", "sshd", "java", "node", "redis-server"]
REMOTES4 = ["93.184.216.34", "10.0.3.17", "172.16.8.200", "192.168.1.10"]
REMOTES6 = ["2606:2800:220:1:248:1893:25c8:1946", "fd00::17", "::1"]


def sessions(n: int, rng: random.Random) -> list[Session]:
    out = []
    clock = 1_000_000_000_000
    server_port = rng.randrange(20000, 30000)
    for _ in range(n):
        clock += rng.randrange(10_000, 80_000)
        duration = rng.randrange(20_000, 5_000_000)
        kind = rng.random()
        if kind < 0.8:  # the storm: loopback, one client end and one server end per connection
            family, laddr, raddr = 4, "127.0.0.1", "127.0.0.1"
            client = rng.random() < 0.5
            ephemeral = rng.randrange(32768, 61000)
            lport, rport = (ephemeral, server_port) if client else (server_port, ephemeral)
            role = abi.ROLE_CLIENT if client else abi.ROLE_SERVER
            pid = 40000 + rng.randrange(8)
            comm = "python3"
            tx, rx = (16, 64) if client else (64, 16)
            error = 0
        else:  # everything else on a busy host
            family = 6 if rng.random() < 0.3 else 4
            laddr = "fd00::5" if family == 6 else "10.0.0.5"
            raddr = rng.choice(REMOTES6 if family == 6 else REMOTES4)
            lport, rport = rng.randrange(32768, 61000), rng.choice([443, 80, 5432, 6379, 22])
            role = rng.choice([abi.ROLE_CLIENT, abi.ROLE_SERVER, abi.ROLE_UNKNOWN])
            pid = rng.randrange(300, 4_000_000)
            comm = rng.choice(COMMS)
            tx, rx = rng.randrange(0, 1 << 20), rng.randrange(0, 1 << 34)
            error = rng.choice([0] * 8 + [errno.ECONNREFUSED, errno.ECONNRESET])
        out.append(Session(pid=pid, comm=comm, family=family, laddr=laddr, lport=lport, raddr=raddr,
                           rport=rport, tx_bytes=tx, rx_bytes=rx, birth_ns=clock, close_ns=clock + duration,
                           role=role, error=error, oldstate=4, owner=abi.OWNER_CONNECT,
                           # a server's span is the client's child when the handshake was seen
                           span_ids=rng.randbytes(24) + (rng.randbytes(8) if role == abi.ROLE_SERVER and not error
                                                         else abi.NO_PARENT)))
    return out


def batches(items, size):
    return [items[i:i + size] for i in range(0, len(items), size)]


OBSERVED = 1_800_000_000_000_000_000


def run_records(builder: RecordBuilder, proto: ProtoEncoder, sessions_, batch) -> tuple[float, list]:
    gc.collect()
    start = time.perf_counter_ns()
    out = []
    for b in batches(sessions_, batch):
        records = builder.build(b, 0, OBSERVED)
        out.append(proto.logs_request(records).SerializeToString())
        out.append(proto.traces_request(records).SerializeToString())
    return (time.perf_counter_ns() - start) / 1e3 / len(sessions_), out


def run_frames(frames: SessionFrames, wire: WireEncoder, events, batch) -> tuple[float, list]:
    gc.collect()
    start = time.perf_counter_ns()
    out = []
    for i, b in enumerate(batches(events, batch)):
        logs, spans = frames.encode(b, 0, OBSERVED)
        out += (payload for payload, _ in wire.requests(logs))
        out += (payload for payload, _ in wire.requests(spans))
    return (time.perf_counter_ns() - start) / 1e3 / len(events), out


class Discard:
    """A text stream that keeps nothing: the table's rows are made, not written."""

    def write(self, text: str) -> None:
        pass

    def flush(self) -> None:
        pass


def run_stdout(encode, events, batch) -> float:
    """µs per session for encode(batch) -> pieces of output, every piece made."""
    gc.collect()
    start = time.perf_counter_ns()
    for b in batches(events, batch):
        for _ in encode(b):
            pass
    return (time.perf_counter_ns() - start) / 1e3 / len(events)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    names = ProcessNames(proc="/nonexistent")
    builder, frames = RecordBuilder(names=names), SessionFrames(names)
    resource, scope = resource_proto(build_resource()), scope_proto()
    proto, wire = ProtoEncoder(resource, scope), WireEncoder(resource, scope)
    labels = ("records + ProtoEncoder", "SessionFrames + WireEncoder")
    times: dict[str, list[float]] = {label: [] for label in labels}
    ndjson = NdjsonEncoder(names)
    journald = JournaldEncoder(resource_fields(build_resource().attributes)[0], names)
    table = TableWriter(Discard(), TableStyle())
    otlp_json = {signal: OtlpJsonEncoder(resource_json(build_resource()), scope_json(), signal, names)
                 for signal in ("logs", "traces")}
    stdout_encoders = {
        "NDJSON": lambda b: ndjson.encode(b, OBSERVED),
        "OTLP/JSON log records": lambda b: otlp_json["logs"].encode(b, OBSERVED, OBSERVED),
        "OTLP/JSON spans": lambda b: otlp_json["traces"].encode(b, OBSERVED, OBSERVED),
        "table": lambda b: table.write(b) or (),
        "journald entries": lambda b: journald.encode(b),
    }
    stdout_times: dict[str, list[float]] = {name: [] for name in stdout_encoders}
    payload = 0
    for _ in range(args.rounds):
        batch_sessions = sessions(args.sessions, rng)
        events = as_events(batch_sessions)
        us_proto, expected = run_records(builder, proto, batch_sessions, args.batch)
        us_frames, got = run_frames(frames, wire, events, args.batch)
        if got != expected:
            sys.exit("MISMATCH: SessionFrames bytes differ from ProtoEncoder's")
        times[labels[0]].append(us_proto)
        times[labels[1]].append(us_frames)
        payload = sum(map(len, got))
        for name, encode in stdout_encoders.items():
            stdout_times[name].append(run_stdout(encode, events, args.batch))

    best = {name: min(t) for name, t in times.items()}
    median = {name: statistics.median(t) for name, t in times.items()}
    print(f"{args.sessions} sessions x {args.rounds} rounds, batches of {args.batch}, Python "
          f"{sys.version.split()[0]}; {payload / args.sessions:.0f} payload bytes/session (logs + traces); "
          f"bytes identical: yes")
    print(f"{'µs per session, logs + traces':<32}{'best':>8}{'median':>8}{'sessions/s (best, 1 core)':>28}")
    for name in labels:
        print(f"{name:<32}{best[name]:>8.2f}{median[name]:>8.2f}{1e6 / best[name]:>28,.0f}")
    print(f"speed-up (best): {best[labels[0]] / best[labels[1]]:.1f}x; median: "
          f"{median[labels[0]] / median[labels[1]]:.1f}x")
    print(f"{'µs per session, stdout formats':<32}{'best':>8}{'median':>8}")
    for name, t in stdout_times.items():
        print(f"{name:<32}{min(t):>8.2f}{statistics.median(t):>8.2f}")


if __name__ == "__main__":
    main()
