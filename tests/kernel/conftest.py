"""Kernel tests: the real probe, loaded as root, watching real traffic."""

from __future__ import annotations

import threading
import time

import pytest

from otel_tcplife.probe import CoreProbe, ProbeSettings
from otel_tcplife.session import Decoder, Session

from ..support import require_bpf


@pytest.fixture(autouse=True)
def _needs_bpf():
    require_bpf()


class Collector:
    """A running probe whose sessions a background thread collects."""

    def __init__(self, settings: ProbeSettings) -> None:
        self.probe = CoreProbe(settings).start()
        self.sessions: list[Session] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        decoder = Decoder()
        while not self._stop.is_set():
            batch = decoder.decode(self.probe.read(0.02))
            if batch:
                with self._lock:
                    self.sessions.extend(batch)

    def mark(self) -> int:
        """How many sessions were collected so far: wait_for(since=mark) skips them. The collector
        lives for the whole test session, and a port number comes back (in another namespace, or
        once freed), so an earlier test's session could otherwise match."""
        with self._lock:
            return len(self.sessions)

    def wait_for(self, lports: set[int], since: int, timeout: float = 5.0) -> list[Session]:
        """Sessions after mark `since` whose local port is in lports: wait until there is one per port."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                found = [s for s in self.sessions[since:] if s.lport in lports]
            if len({s.lport for s in found}) >= len(lports) or time.monotonic() > deadline:
                return found
            time.sleep(0.01)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.probe.close()


@pytest.fixture(scope="session", params=["tp_btf", "tracepoint"])
def collector(request):
    require_bpf()
    c = Collector(ProbeSettings(attach=request.param))
    assert c.probe.attach_mode == request.param
    yield c
    c.close()
