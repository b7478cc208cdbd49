"""Bad input gets one clear line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from otel_tcplife import cli
from otel_tcplife.probe import libbpf, preflight


def run_agent(*args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, sys.executable, "-m", "otel_tcplife", *args],
                          capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("args,message", [
    (["-p", "abc"], "invalid PID 'abc'"),
    (["-p", "0"], "invalid PID '0'"),
    (["-L", "70000"], "invalid port '70000'"),
    (["-D", "80,,81"], "invalid port ''"),
    (["-L", ",".join(str(p) for p in range(1, 18))], "too many ports"),
    (["-4", "-6"], "not allowed with argument"),
    (["--ring-buffer-size", "5000"], "power of two"),
    (["--attach", "kprobe"], "invalid choice"),
    (["--no-such-flag"], "unrecognized arguments"),
])
def test_bad_flags_exit_2_with_one_line(args, message):
    result = run_agent(*args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("otel-tcplife: error: ")
    assert message in result.stderr


def test_help_lists_the_classic_flags():
    result = run_agent("-h")
    assert result.returncode == 0
    for flag in ("-T", "-t", "-w", "-s", "-p PID", "-L PORTS", "-D PORTS", "-4", "-6"):
        assert flag in result.stdout


def test_without_privileges_one_line_and_exit_1():
    # uid 0 with every capability dropped: the agent must refuse, not crash.
    result = run_agent(prefix=("setpriv", "--bounding-set=-all", "--inh-caps=-all"))
    assert result.returncode == 1
    assert result.stderr == ("otel-tcplife: error: permission denied: missing CAP_BPF and CAP_PERFMON: run as "
                             "root, or grant CAP_BPF, CAP_PERFMON, CAP_DAC_READ_SEARCH and CAP_SYS_PTRACE\n")


def test_no_kernel_btf(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(preflight, "check_privileges", lambda: [])
    monkeypatch.setattr(preflight, "KERNEL_BTF", str(tmp_path / "vmlinux"))
    assert cli.main([]) == 1
    assert capsys.readouterr().err.startswith("otel-tcplife: error: kernel BTF not found at ")


def test_libbpf_missing(monkeypatch, capsys):
    monkeypatch.setattr(preflight, "check_privileges", lambda: [])
    monkeypatch.setattr(preflight, "ensure_tracefs", lambda: None)
    monkeypatch.setattr(libbpf, "LIBBPF_NAMES", ("libbpf-does-not-exist.so.9",))
    assert cli.main([]) == 1
    assert capsys.readouterr().err == ("otel-tcplife: error: libbpf not found (libbpf.so.1): install it, "
                                       "e.g. `apt-get install libbpf1`\n")


def test_tracefs_that_cannot_be_mounted(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(preflight, "check_privileges", lambda: [])
    missing = str(tmp_path / "no" / "tracing")
    monkeypatch.setattr(preflight, "TRACEFS_MOUNTS", (missing,))
    assert cli.main([]) == 1
    err = capsys.readouterr().err
    assert err.startswith("otel-tcplife: error: tracefs is not mounted and mounting it failed")
    assert err.endswith(f"run `mount -t tracefs nodev {missing}`\n")
