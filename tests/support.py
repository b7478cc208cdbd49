"""Test helpers: real traffic processes, network namespaces, BPF availability."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TRAFFIC = str(Path(__file__).resolve().parent / "traffic.py")
IN_CI = os.environ.get("CI") == "true"


def bpf_unavailable_reason() -> str | None:
    """Why kernel tests cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "needs root for BPF"
    if not os.path.exists("/sys/kernel/btf/vmlinux"):
        return "kernel has no BTF (/sys/kernel/btf/vmlinux)"
    if not (ROOT / "otel_tcplife" / "bpf" / "tcplife.bpf.o").exists():
        return "BPF object not built (run make setup)"
    return None


@functools.cache
def python_for_other_users() -> str:
    """An interpreter that runs this checkout's agent (`PYTHON -m otel_tcplife`) as another user,
    who may not be able to read the checkout (a clone in a `mktemp -d` directory, mode 0700): the
    package and the one dependency the stdout formats import (orjson) are copied to a world-readable
    directory, run by the system's interpreter through a wrapper there. Removed at exit."""
    import atexit
    import shutil
    import tempfile

    import orjson

    directory = tempfile.mkdtemp(prefix="otel-tcplife-agent-")
    atexit.register(shutil.rmtree, directory, True)
    os.chmod(directory, 0o755)
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "otel_tcplife", os.path.join(directory, "otel_tcplife"), ignore=ignore)
    shutil.copytree(os.path.dirname(orjson.__file__), os.path.join(directory, "orjson"), ignore=ignore)
    wrapper = os.path.join(directory, "python")
    with open(wrapper, "w") as f:
        f.write(f'#!/bin/sh\nPYTHONPATH={directory} exec {os.path.realpath(sys.executable)} -s "$@"\n')
    os.chmod(wrapper, 0o755)
    return wrapper


def require_bpf() -> None:
    reason = bpf_unavailable_reason()
    if reason:
        if IN_CI:
            pytest.fail(f"kernel tests must run in CI: {reason}")
        pytest.skip(reason)


class Peer:
    """A traffic.py process; its stdout is a stream of JSON events."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=None if env is None else {**os.environ, **env})
        self.pid = self.proc.pid

    def next_event(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"traffic process ended: {self.proc.stderr.read()}")
        return json.loads(line)

    def events(self, timeout: float = 30) -> list[dict]:
        """Every remaining event, once the process has finished."""
        out, err = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0, err
        return [json.loads(line) for line in out.splitlines()]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()


@dataclass
class Traffic:
    """Starts servers and clients, optionally inside a network namespace."""

    started: list[Peer] = field(default_factory=list)

    def _run(self, role: str, netns: str | None, env: dict[str, str] | None = None, **options: object) -> Peer:
        """env: variables added to the process's environment."""
        argv = [sys.executable, TRAFFIC, role]
        for key, value in options.items():
            argv += [f"--{key.replace('_', '-')}", str(value)]
        if netns:
            argv = ["ip", "netns", "exec", netns] + argv
        peer = Peer(argv, env)
        self.started.append(peer)
        return peer

    def server(self, netns: str | None = None, env: dict[str, str] | None = None,
               **options: object) -> tuple[Peer, int]:
        peer = self._run("server", netns, env, **options)
        event = peer.next_event()
        assert event["event"] == "listening", event
        return peer, event["port"]

    def client(self, netns: str | None = None, env: dict[str, str] | None = None, **options: object) -> Peer:
        return self._run("client", netns, env, **options)

    def close(self) -> None:
        for peer in self.started:
            peer.kill()


@dataclass(frozen=True)
class NetnsPair:
    """Two namespaces joined by a veth pair, IPv4 and IPv6 addresses on each end."""

    server_ns: str
    client_ns: str
    server_v4: str = "10.201.0.1"
    client_v4: str = "10.201.0.2"
    server_v6: str = "fd00:201::1"
    client_v6: str = "fd00:201::2"


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@contextlib.contextmanager
def linked_namespaces(name: str, **addresses: str):
    """Two network namespaces of the caller's own, joined by a veth pair, IPv4 and IPv6 addresses on
    each end (NetnsPair's unless given), for the length of the block: (the pair, the server's veth
    end, the client's). name: a few letters telling the caller's apart."""
    tag = uuid.uuid4().hex[:6]
    pair = NetnsPair(server_ns=f"tl-{name}srv-{tag}", client_ns=f"tl-{name}cli-{tag}", **addresses)
    server_dev, client_dev = f"tl{name}s{tag}", f"tl{name}c{tag}"
    try:
        ip("netns", "add", pair.server_ns)
        ip("netns", "add", pair.client_ns)
        ip("link", "add", server_dev, "netns", pair.server_ns, "type", "veth",
           "peer", "name", client_dev, "netns", pair.client_ns)
        for ns, dev, v4, v6 in ((pair.server_ns, server_dev, pair.server_v4, pair.server_v6),
                                (pair.client_ns, client_dev, pair.client_v4, pair.client_v6)):
            ip("-n", ns, "link", "set", "lo", "up")
            ip("-n", ns, "addr", "add", f"{v4}/24", "dev", dev)
            ip("-n", ns, "addr", "add", f"{v6}/64", "dev", dev, "nodad")
            ip("-n", ns, "link", "set", dev, "up")
        yield pair, server_dev, client_dev
    finally:
        for ns in (pair.server_ns, pair.client_ns):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def lines_until_started(proc: subprocess.Popen) -> list[str]:
    """An agent's stderr lines (text mode) before its "tracing via" line: its warnings. Fails with
    what it said if it ends first."""
    lines = []
    while "tracing via" not in (line := proc.stderr.readline()):
        assert line, "".join(lines) + proc.stderr.read()
        lines.append(line)
    return lines


def row_of_one_connection(argv: list[str], traffic: "Traffic", server, port: int) -> tuple[list[str], dict]:
    """Runs an NDJSON agent (argv, from /) while one client connects to the server at port: its
    warnings (lines_until_started) and its first row. The agent is ended either way."""
    proc = subprocess.Popen(argv, cwd="/", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = lines_until_started(proc)
        traffic.client(name="tl-client", port=port).events()
        server.events()
        return lines, json.loads(proc.stdout.readline())
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


class Agent:
    """The real otel-tcplife process, started once tracing has begun.

    Ready is the table's header line on stdout, or in other formats the
    agent's "tracing via ..." line on stderr.
    """

    def __init__(self, *args: str, prefix: tuple[str, ...] = (),
                 command: tuple[str, ...] = (sys.executable, "-m", "otel_tcplife"),
                 env: dict[str, str] | None = None, startup_timeout: float = 10) -> None:
        if not {"--pin-path", "--no-pin", "--unpin"} & set(args):
            args = (*args, "--no-pin")  # as before pins: a test's agent leaves no probe behind
        argv = [*prefix, *command, *args]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=None if env is None else {**os.environ, **env})
        self.pid = self.proc.pid
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.stderr_lines: list[str] = []
        self._stderr_ready = threading.Event()
        self._readers = [threading.Thread(target=self._read_stdout, daemon=True),
                         threading.Thread(target=self._read_stderr, daemon=True)]
        for reader in self._readers:
            reader.start()
        table = "--format" not in args or args[list(args).index("--format") + 1] == "table"
        if table:
            self.header = self.read_line(startup_timeout)
            ready = self.header is not None
        else:
            ready = self._stderr_ready.wait(startup_timeout) and self.proc.poll() is None
        if not ready:
            self.kill()
            raise AssertionError(f"agent did not start: {self.stderr}")

    def _read_stdout(self) -> None:
        for line in self.proc.stdout:
            self._lines.put(line.decode().rstrip("\n"))
        self._lines.put(None)

    def _read_stderr(self) -> None:
        for line in self.proc.stderr:
            self.stderr_lines.append(line.decode())
            if "tracing via" in self.stderr_lines[-1]:
                self._stderr_ready.set()
        self._stderr_ready.set()

    @property
    def stderr(self) -> str:
        return "".join(self.stderr_lines)

    def read_line(self, timeout: float) -> str | None:
        """The next line on stdout while the agent runs (None at its end or on timeout)."""
        try:
            return self._lines.get(timeout=timeout)
        except queue.Empty:
            return None

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30) -> tuple[int, list[str], str]:
        """Signal the agent; return its exit status, remaining stdout lines and stderr."""
        self.proc.send_signal(sig)
        returncode = self.proc.wait(timeout=timeout)
        self._join()
        lines = []
        while (line := self._lines.get_nowait()) is not None:
            lines.append(line)
        return returncode, lines, self.stderr

    def summary(self) -> dict:
        """The JSON stats line the agent printed last on stderr."""
        return json.loads([line for line in self.stderr_lines if line.startswith("{")][-1])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._join()

    def _join(self) -> None:
        for reader in self._readers:
            reader.join(5)
        self.proc.stdout.close()
        self.proc.stderr.close()


class FixedClock:
    """A WallClock stand-in: monotonic + a fixed offset."""

    offset_ns = 1_700_000_000_000_000_000

    def offset(self) -> int:
        return self.offset_ns


def sample_session(**changes):
    """A client session (curl to port 443), with any field changed."""
    from otel_tcplife import abi
    from otel_tcplife.session import Session
    base = Session(pid=4242, comm="curl", family=4, laddr="10.0.0.5", lport=51234, raddr="93.184.216.34",
                   rport=443, tx_bytes=1229, rx_bytes=49152, birth_ns=5_000_000_000, close_ns=5_091_790_000,
                   role=abi.ROLE_CLIENT, error=0, oldstate=4, owner=abi.OWNER_CONNECT)
    return base._replace(**changes)


def hex_ids_to_base64(obj):
    """OTLP/JSON uses hex ids where protobuf's JSON mapping expects base64."""
    import base64
    if isinstance(obj, dict):
        return {k: (base64.b64encode(bytes.fromhex(v)).decode() if k in ("traceId", "spanId") else
                    hex_ids_to_base64(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [hex_ids_to_base64(v) for v in obj]
    return obj
