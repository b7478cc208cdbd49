"""The deployment examples are valid as written."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from ..support import ROOT

UNIT = ROOT / "deploy" / "otel-tcplife.service"


def test_systemd_unit_passes_systemd_analyze_verify(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    # Point ExecStart at this checkout's agent: verify checks that it exists.
    agent = ROOT / ".venv" / "bin" / "otel-tcplife"
    unit = tmp_path / "otel-tcplife.service"
    unit.write_text(UNIT.read_text().replace("/opt/otel-tcplife/.venv/bin/otel-tcplife", str(agent)))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "otel-tcplife.service" not in result.stderr, result.stderr  # no warnings about our unit


def test_systemd_unit_runs_the_documented_flags():
    exec_start = next(line for line in UNIT.read_text().splitlines() if line.startswith("ExecStart="))
    args = [a for a in exec_start.split()[1:] if a != "$OTEL_TCPLIFE_ARGS"]
    documented = ["--spool-dir", "/var/lib/otel-tcplife/spool"]  # OTEL_TCPLIFE_ARGS in the header
    from otel_tcplife.cli import build_parser
    parsed = build_parser().parse_args(args + documented)
    assert (parsed.format, parsed.stats_interval, parsed.spool_dir) == ("ndjson", 60, documented[1])
