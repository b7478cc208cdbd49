"""An independent OTLP collector for tests: the rotel-agent binary from the rotel package.

    with OtlpReceiver() as rx, RotelRelay(rx.port) as relay:
        ... export to relay.endpoint; rotel forwards over OTLP/gRPC to rx ...
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import rotel

ROTEL_AGENT = Path(rotel.__file__).parent / "rotel-agent"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _accepts(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class RotelRelay:
    """rotel-agent receiving OTLP/gRPC on 127.0.0.1 and exporting it to 127.0.0.1:receiver_port.

    Batching is off by default so each request is forwarded at once; pass
    batch_timeout (e.g. "50ms") to have rotel batch instead. extra_args go
    to `rotel-agent start` as they are (e.g. retry backoff flags).
    """

    def __init__(self, receiver_port: int, *, batch_timeout: str | None = None,
                 retry_initial_backoff: str = "50ms", retry_max_backoff: str = "500ms",
                 extra_args: tuple[str, ...] = (), startup_timeout: float = 10) -> None:
        self.receiver_port = receiver_port
        self.batch_timeout = batch_timeout
        self.retry_initial_backoff = retry_initial_backoff
        self.retry_max_backoff = retry_max_backoff
        self.extra_args = tuple(extra_args)
        self.startup_timeout = startup_timeout
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self._dir: tempfile.TemporaryDirectory | None = None
        self._output = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        work = Path(self._dir.name)
        batching = (["--disable-batching"] if self.batch_timeout is None
                    else ["--batch-timeout", self.batch_timeout])
        return [str(ROTEL_AGENT), "start",
                "--otlp-grpc-endpoint", f"127.0.0.1:{self.port}",
                "--otlp-http-endpoint", f"127.0.0.1:{free_port()}",
                "--exporter", "otlp",
                "--otlp-exporter-protocol", "grpc",
                "--otlp-exporter-endpoint", f"http://127.0.0.1:{self.receiver_port}",
                "--otlp-exporter-retry-initial-backoff", self.retry_initial_backoff,
                "--otlp-exporter-retry-max-backoff", self.retry_max_backoff,
                "--pid-file", str(work / "rotel.pid"),
                "--log-file", str(work / "rotel.log"),
                *batching, *self.extra_args]

    def start(self, attempts: int = 3) -> RotelRelay:
        """Start rotel-agent and wait until its gRPC port accepts connections. A free port can be
        taken by another process before rotel binds it: then try again on other ports."""
        for attempt in range(attempts):
            try:
                return self._start_once()
            except RuntimeError as exc:
                if "Address already in use" not in str(exc) or attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    def _start_once(self) -> RotelRelay:
        if self.proc is not None:
            raise RuntimeError("relay already started")
        self._dir = tempfile.TemporaryDirectory(prefix="rotel-relay-")
        self._output = open(Path(self._dir.name) / "output.txt", "w+b")
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROTEL_")}
        env["NO_COLOR"] = "1"
        self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=self._output,
                                     stderr=subprocess.STDOUT, env=env, cwd=self._dir.name)
        deadline = time.monotonic() + self.startup_timeout
        while not _accepts(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                state = (f"exited with {self.proc.returncode}" if self.proc.poll() is not None
                         else f"not listening after {self.startup_timeout}s")
                output = self.output()
                self.stop()
                raise RuntimeError(f"rotel-agent {state}; output:\n{output}")
            time.sleep(0.02)
        return self

    def output(self) -> str:
        """What rotel-agent printed so far (stdout and stderr)."""
        if self._output is None:
            return ""
        self._output.flush()
        return (Path(self._dir.name) / "output.txt").read_text(errors="replace")

    def stop(self, timeout: float = 5) -> None:
        """SIGTERM rotel-agent (SIGKILL after timeout) and remove its files; safe to call twice.

        rotel spends up to ~3 s on SIGTERM while exports are still being retried;
        timeout=0 kills it at once.
        """
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        if self._output is not None:
            self._output.close()
            self._output = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> RotelRelay:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
