"""The wheel carries the compiled probe (and its C sources, for the bcc backend): installed without a
compiler, it traces."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest

from ..support import ROOT, Agent

OBJECT_IN_WHEEL = "otel_tcplife/bpf/tcplife.bpf.o"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    # sdist first, then the wheel from it: proves the sdist carries bpf/ and
    # that the build (not a file copied by hand) makes the object.
    subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
                   check=True, capture_output=True, text=True)
    (path,) = out.glob("*.whl")
    return path


@pytest.mark.slow
def test_wheel_contains_the_bpf_object(wheel):
    with zipfile.ZipFile(wheel) as archive:
        assert OBJECT_IN_WHEEL in archive.namelist()
        assert archive.read(OBJECT_IN_WHEEL)[:4] == b"\x7fELF"
        # and the C sources beside it, which the bcc backend compiles (the checkout's, byte for byte)
        for name in ("tcplife.bpf.c", "tcplife.h", "kernel_types.h"):
            assert archive.read(f"otel_tcplife/bpf/{name}") == (ROOT / "bpf" / name).read_bytes()


@pytest.mark.slow
def test_installed_wheel_traces_with_no_compiler_on_path(wheel, tmp_path, traffic):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(wheel)], check=True)
    server, port = traffic.server(name="tl-server")
    # No PATH at all: nothing is compiled or executed at run time.
    # The console script, not `python -m` (which would import from the cwd).
    agent = Agent("-s", "-L", str(port), prefix=("env", "-i", "PATH=/nonexistent"),
                  command=(str(venv / "bin" / "otel-tcplife"),))
    try:
        traffic.client(name="tl-client", port=port).events()
        server.events()
        row = agent.read_line(timeout=5)
        assert row is not None and row.split(",")[1:5] == ["tl-server", "4", "127.0.0.1", str(port)]
    finally:
        agent.kill()
