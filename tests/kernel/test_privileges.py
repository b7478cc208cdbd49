"""The agent as an unprivileged user with capabilities: the set the README names is enough, and
each missing capability is named."""

from __future__ import annotations

import os
import subprocess

import pytest

from otel_tcplife.probe.preflight import TRACEFS_MOUNTS

from ..support import python_for_other_users, row_of_one_connection


def as_nobody(caps: str, *args: str) -> list[str]:
    """argv running the agent as nobody with only these capabilities (comma list, e.g. "bpf,perfmon")."""
    granted = ",".join(f"+{cap}" for cap in caps.split(",")) if caps else "-all"
    return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", f"--inh-caps={granted}",
            f"--ambient-caps={granted}", "--bounding-set=-all" + (f",{granted}" if caps else ""),
            python_for_other_users(), "-m", "otel_tcplife", "--no-pin", *args]


@pytest.mark.parametrize("caps,missing", [
    ("", "missing CAP_BPF and CAP_PERFMON"),
    ("bpf", "missing CAP_PERFMON"),
    ("bpf,perfmon", "tracefs at /sys/kernel/tracing is not readable: missing CAP_DAC_READ_SEARCH"),
])
def test_each_missing_capability_is_named(caps, missing):
    if caps == "bpf,perfmon" and os.stat(TRACEFS_MOUNTS[0]).st_mode & 0o005:
        pytest.skip("tracefs here is world-readable: nothing to refuse")
    result = subprocess.run(as_nobody(caps), cwd="/", capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith("otel-tcplife: error: ") and missing in line, line


@pytest.mark.parametrize("caps", ["bpf,perfmon,dac_read_search", "bpf,perfmon,dac_read_search,sys_ptrace"])
def test_the_named_set_is_enough_and_sys_ptrace_gives_the_executable_name(caps, traffic):
    server, port = traffic.server(name="tl-server", linger_ms=300)
    lines, row = row_of_one_connection(as_nobody(caps, "--format", "ndjson", "-L", str(port)), traffic, server, port)
    assert row["process.pid"] == server.pid and row["thread.name"] == "tl-server"
    warned = any("without CAP_SYS_PTRACE" in line for line in lines)
    if "sys_ptrace" in caps:  # a root process's executable, read as nobody
        assert not warned and row["process.executable.name"].startswith("python")
    else:  # said at start, and the comm stands in
        assert warned and row["process.executable.name"] == "tl-server"
