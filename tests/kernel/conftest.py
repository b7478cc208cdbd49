"""Kernel tests: the real probe, loaded as root, watching real traffic."""

from __future__ import annotations

import threading
import time

import pytest

from otel_tcplife.probe import ProbeSettings, open_probe
from otel_tcplife.session import Decoder, Session

from ..support import IN_CI, require_bpf


def bcc_unavailable_reason() -> str | None:
    """Why the bcc backend cannot run here (make setup installs python3-bpfcc and kernel headers)."""
    from otel_tcplife.probe import backend

    missing = backend.bcc_missing(btf=backend.kernel_btf_present())
    return f"the bcc backend needs {' and '.join(missing)} (make setup installs them)" if missing else None


def require_bcc() -> None:
    reason = bcc_unavailable_reason()
    if reason:
        if IN_CI:
            pytest.fail(f"bcc tests must run in CI: {reason}")
        pytest.skip(reason)


@pytest.fixture(autouse=True)
def _needs_bpf():
    require_bpf()


class Collector:
    """A running probe whose sessions a background thread collects."""

    def __init__(self, settings: ProbeSettings) -> None:
        self.probe = open_probe(settings).start()
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

    def wait_for(self, lports: set[int], since: int, timeout: float = 15.0) -> list[Session]:
        """Sessions after mark `since` whose local port is in lports: wait until there is one per port
        (a loaded machine can take seconds: the wait ends as soon as they are there)."""
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


@pytest.fixture(scope="session", params=["tp_btf", "tracepoint", "bcc"])
def collector(request):
    """The CO-RE probe in each attach mode, and the bcc backend (compiled once per test session)."""
    require_bpf()
    if request.param == "bcc":
        require_bcc()
        c = Collector(ProbeSettings(backend="bcc"))
        assert (c.probe.backend, c.probe.attach_mode) == ("bcc", "tracepoint")
    else:
        c = Collector(ProbeSettings(attach=request.param))
        assert c.probe.attach_mode == request.param
    yield c
    c.close()
