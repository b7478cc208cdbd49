"""Connection storm: as many short TCP connections over loopback as the machine can make, or a set rate.

A server (one or more processes sharing one listening socket on 127.0.0.1) and N client
worker processes. Each client, until its deadline: connect, send a few bytes, read the
reply until EOF, close. The server reads, replies and closes FIRST, so TIME_WAIT lands on
the server side (keyed on the server's port) and client ephemeral ports are free again at
once: no port exhaustion, no sysctl changes. Closes are normal (FIN), never RST.

Each connection is two TCP sessions on this machine: the client's and the server's.

With a rate (--rate CONN_PER_S, over all clients) each client is paced at rate / workers
connections a second on a fixed schedule (connection k of a client starts at
start + offset + k / per-client rate; the clients' offsets are spread over one interval, so
their connections interleave). A client that falls behind its schedule (the machine is too
slow, or it was descheduled) connects at once until it has caught up, so the total stays
rate x seconds when the machine can sustain the rate; `max_lag_s` (how far behind its schedule
any client ever started a connection) tells whether it could: well under a second means it kept
up. Without a rate, every client connects as fast as it can.

    python3 bench/storm.py --seconds 10 --workers 2
    python3 bench/storm.py --seconds 30 --rate 5000
print one JSON line; `run_storm()` returns the same dict.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import queue
import socket
import sys
import time
from typing import Callable

HOST = "127.0.0.1"  # the only address this ever talks to
MAX_SECONDS = 3600.0  # an hour: long enough for a soak, still bounded
DEFAULT_MAX_CONNECTIONS = 10_000_000  # hard cap over all workers, whatever the duration
ACCEPT_POLL_SECONDS = 0.2  # how fast an idle server notices it should stop
CPUS = len(os.sched_getaffinity(0))
# One client per CPU leaves CPUs idle while clients wait on the server (measured ~9% idle
# on 2 CPUs); two per CPU keep the machine saturated.
DEFAULT_WORKERS = 2 * CPUS
DEFAULT_SERVERS = CPUS

# fork: workers inherit the listening socket and need no pickling; Linux only anyway.
_mp = multiprocessing.get_context("fork")


def free_port() -> int:
    """A loopback port that is free now (the kernel picks it)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _serve(listener: socket.socket, payload_size: int, stop, results) -> None:
    accepted = errors = 0
    while True:
        try:
            conn, _ = listener.accept()
        except socket.timeout:
            if stop.is_set():
                break
            continue
        try:
            if payload_size:
                conn.recv(payload_size)
                conn.sendall(b"y" * payload_size)
            accepted += 1
        except OSError:
            errors += 1
        finally:
            conn.close()  # the server closes first: TIME_WAIT stays here
    results.put(("server", accepted, errors, 0.0))


def _client(port: int, payload_size: int, seconds: float, limit: int, interval: float, offset: float,
            start, results) -> None:
    """Connects until the deadline or `limit`; with an interval (s), one connection per interval, on a
    fixed schedule from start + offset (catching up at once when behind)."""
    address = (HOST, port)
    payload = b"x" * payload_size
    made = errors = 0
    max_lag = 0.0
    start.wait()
    began = time.monotonic()
    deadline = began + seconds
    next_at = began + offset
    while made < limit:
        now = time.monotonic()
        if interval:
            if now < next_at:
                if next_at >= deadline:
                    break
                time.sleep(next_at - now)
            else:
                max_lag = max(max_lag, now - next_at)
            next_at += interval
            if now >= deadline:
                break
        elif now >= deadline:
            break
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.connect(address)
            if payload:
                s.sendall(payload)
            while s.recv(4096):  # reply, then EOF: the server has closed
                pass
            made += 1
        except OSError:
            errors += 1
        finally:
            s.close()
    results.put(("client", made, errors, time.monotonic() - began, max_lag))


def run_storm(seconds: float = 10.0, workers: int = DEFAULT_WORKERS, servers: int = DEFAULT_SERVERS,
              port: int = 0, payload_size: int = 16, max_connections: int = DEFAULT_MAX_CONNECTIONS,
              rate: float | None = None, tick: Callable[[float], None] | None = None,
              tick_seconds: float = 1.0) -> dict:
    """Run one storm and return its counts; every process it starts is gone on return.
    rate: connections a second over all clients (None: as fast as possible).
    max_connections: cap over all clients (each stops after max_connections // workers); a caller that
    needs more than the default (a long storm) passes its own bound.
    tick: called with the seconds since the clients started, about every tick_seconds while they run,
    in this process (between waits for their reports; no thread): a hook to sample something during
    the storm. An exception from it stops the storm's processes and propagates."""
    if not 0 < seconds <= MAX_SECONDS:
        raise ValueError(f"seconds must be in (0, {MAX_SECONDS}]")
    if workers < 1 or servers < 1 or max_connections < 1:
        raise ValueError("workers, servers and max_connections must be at least 1")
    if rate is not None and not rate > 0:
        raise ValueError("rate must be positive")
    if not tick_seconds > 0:
        raise ValueError("tick_seconds must be positive")
    interval = workers / rate if rate else 0.0  # per client
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # Server-side TIME_WAITs of an earlier storm on this port must not block the bind.
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((HOST, port))
    listener.listen(socket.SOMAXCONN)
    listener.settimeout(ACCEPT_POLL_SECONDS)
    port = listener.getsockname()[1]

    start, stop, results = _mp.Event(), _mp.Event(), _mp.Queue()
    server_procs = [_mp.Process(target=_serve, args=(listener, payload_size, stop, results), daemon=True)
                    for _ in range(servers)]
    limit = max(1, max_connections // workers)
    client_procs = [_mp.Process(target=_client, args=(port, payload_size, seconds, limit, interval,
                                                      interval * i / workers, start, results), daemon=True)
                    for i in range(workers)]
    procs = server_procs + client_procs
    try:
        for p in procs:
            p.start()
        listener.close()  # the servers hold their own copies
        start.set()
        began = time.monotonic()
        deadline = began + seconds + 60
        next_tick = began + tick_seconds
        reports = []
        while len(reports) < len(client_procs):
            now = time.monotonic()
            if now >= deadline:
                raise queue.Empty
            if tick is not None and now >= next_tick:
                tick(now - began)
                next_tick = max(next_tick + tick_seconds, time.monotonic())
                continue
            until = deadline if tick is None else min(deadline, next_tick)
            try:
                reports.append(results.get(timeout=max(until - now, 0.001)))
            except queue.Empty:
                pass  # a tick is due, or the deadline has passed: both handled above
        stop.set()
        reports += [results.get(timeout=30) for _ in server_procs]
    except queue.Empty:
        raise RuntimeError("storm: a worker did not report in time") from None
    finally:
        stop.set()
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():  # only our own children, by their handle
                p.terminate()
                p.join()
        listener.close()

    clients = [r for r in reports if r[0] == "client"]
    server_side = [r for r in reports if r[0] == "server"]
    connections = sum(r[1] for r in clients)
    duration = max(r[3] for r in clients)
    return {
        "port": port,
        "workers": workers,
        "servers": servers,
        "payload_bytes": payload_size,
        "connections": connections,  # counted by the clients
        "accepted": sum(r[1] for r in server_side),  # counted by the server(s)
        "client_errors": sum(r[2] for r in clients),
        "server_errors": sum(r[2] for r in server_side),
        "sessions": 2 * connections,  # both ends are on this machine
        "duration_s": round(duration, 3),
        "conn_per_s": round(connections / duration, 1) if duration else 0.0,
        "rate": rate,  # the target, conn/s over all clients; None: as fast as possible
        "max_lag_s": round(max(r[4] for r in clients), 3),  # behind schedule, worst client (0 without rate)
        "max_connections": max_connections,  # the cap
        "capped": any(r[1] >= limit for r in clients),  # a client stopped at its share of the cap
    }


def add_storm_arguments(parser: argparse.ArgumentParser) -> None:
    """--workers, --servers, --bytes (dest payload_size): the storm's shape, for every bench."""
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                        help="storm client processes (default: 2 per CPU, %(default)s)")
    parser.add_argument("--servers", type=int, default=DEFAULT_SERVERS,
                        help="storm server processes (default: 1 per CPU, %(default)s)")
    parser.add_argument("--bytes", type=int, default=16, dest="payload_size",
                        help="bytes sent each way per connection, 0 for none (default %(default)s)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Loopback TCP connection storm (127.0.0.1 only).")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration (default %(default)s)")
    add_storm_arguments(parser)
    parser.add_argument("--port", type=int, default=0, help="server port (default: any free one)")
    parser.add_argument("--max-connections", type=int, default=DEFAULT_MAX_CONNECTIONS,
                        help="stop after this many connections in all (default %(default)s)")
    parser.add_argument("--rate", type=float, default=None, metavar="CONN_PER_S",
                        help="connections a second over all clients, each client paced at rate/workers "
                             "(default: as fast as possible)")
    args = parser.parse_args(argv)
    try:
        result = run_storm(args.seconds, args.workers, args.servers, args.port,
                           args.payload_size, args.max_connections, args.rate)
    except (ValueError, OSError, RuntimeError) as exc:
        print(f"storm: error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
