"""Bad input gets one clear line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import os
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
    # The CO-RE backend's own message; --backend auto's (bcc or what it lacks): tests/kernel/test_bcc.py
    assert cli.main(["--backend", "core"]) == 1
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


# --- OTLP and Resource settings: refused at start, one line, exit 2, never a secret (issue 17) ---

AGENT = os.path.join(os.path.dirname(sys.executable), "otel-tcplife")  # the installed entry point
SECRET = "s3cr3t-cli-token"
EXPORT = ("--format", "none", "--otlp-endpoint", "http://127.0.0.1:1")


def run_installed(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The real agent; env values may be bytes (what a non-UTF-8 environment holds)."""
    base = {k: v for k, v in os.environb.items() if not k.startswith((b"OTEL_", b"SSL_CERT"))}
    extra = {os.fsencode(k): v if isinstance(v, bytes) else os.fsencode(v) for k, v in (env or {}).items()}
    return subprocess.run([AGENT, *args], capture_output=True, env={**base, **extra}, timeout=30)


def assert_one_line(result: subprocess.CompletedProcess, message: str) -> None:
    stderr = result.stderr.decode("utf-8", "backslashreplace")
    assert result.returncode == 2, stderr
    assert result.stdout == b""
    assert stderr.startswith("otel-tcplife: error: ") and stderr.count("\n") == 1, stderr
    assert message in stderr, stderr
    assert "Traceback" not in stderr and SECRET not in stderr and "!!!" not in stderr


@pytest.mark.parametrize("args,env,message", [
    # 1. header values gRPC would refuse: named by key, never shown
    (EXPORT, {"OTEL_EXPORTER_OTLP_HEADERS": f"x-bin=!!!{SECRET}"}, "invalid header 'x-bin' in OTEL_EXPORTER_OTLP_"
                                                                    "HEADERS: a -bin header's value must be base64"),
    (EXPORT, {"OTEL_EXPORTER_OTLP_HEADERS": f"authorization=Bearer%20{SECRET}%0A"},
     "invalid header 'authorization' in OTEL_EXPORTER_OTLP_HEADERS: the value must be printable ASCII"),
    (EXPORT, {"OTEL_EXPORTER_OTLP_LOGS_HEADERS": b"x-key=" + SECRET.encode() + b"\xff"},
     "invalid header 'x-key' in OTEL_EXPORTER_OTLP_LOGS_HEADERS: the value must be printable ASCII"),
    (EXPORT, {"OTEL_EXPORTER_OTLP_HEADERS": f"x-key={SECRET}\u00e9"}, "invalid header 'x-key'"),
    # 2. endpoints
    (("--format", "none", "--otlp-endpoint", "garbage"), {},
     "invalid OTLP endpoint 'garbage' (--otlp-endpoint): expected http://host:port, https://host:port or host:port"),
    (("--format", "none", "--otlp-endpoint", "http://[::1"), {},
     "invalid OTLP endpoint 'http://[::1' (--otlp-endpoint): malformed URL"),
    (("--format", "none"), {"OTEL_EXPORTER_OTLP_ENDPOINT": b"http://h\xff:4317"},
     "(OTEL_EXPORTER_OTLP_ENDPOINT): invalid host name"),
    (("--format", "none", "--otlp-endpoint", f"https://u:{SECRET}@[::1"), {}, "credentials in the URL"),
    # 3. Resource and headers file text that is not UTF-8, or malformed
    (EXPORT, {"OTEL_SERVICE_NAME": b"edge\xff"}, "OTEL_SERVICE_NAME is not valid UTF-8"),
    (EXPORT, {"OTEL_RESOURCE_ATTRIBUTES": b"team=sre\xff"}, "OTEL_RESOURCE_ATTRIBUTES is not valid UTF-8"),
    (EXPORT, {"OTEL_RESOURCE_ATTRIBUTES": "=,,x"}, "malformed OTEL_RESOURCE_ATTRIBUTES: entry 1 has an empty key"),
    (("--format", "otlp-json"), {"OTEL_RESOURCE_ATTRIBUTES": "a=1,x"},
     "malformed OTEL_RESOURCE_ATTRIBUTES: entry 2 has no '='"),
    # 4. timeouts and booleans
    (EXPORT, {"OTEL_EXPORTER_OTLP_TIMEOUT": "nan"}, "invalid OTEL_EXPORTER_OTLP_TIMEOUT 'nan': expected milliseconds"),
    (EXPORT, {"OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "1e400"}, "invalid OTEL_EXPORTER_OTLP_TRACES_TIMEOUT '1e400'"),
    ((*EXPORT, "--otlp-timeout", "1e400"), {}, "invalid --otlp-timeout inf: expected seconds"),
    ((*EXPORT, "--otlp-timeout", "inf"), {}, "invalid --otlp-timeout inf: expected seconds"),
    ((*EXPORT, "--otlp-timeout", "nan"), {}, "invalid value 'nan'"),
    (("--format", "none", "--otlp-endpoint", "127.0.0.1:1"), {"OTEL_EXPORTER_OTLP_INSECURE": "maybe"},
     "invalid OTEL_EXPORTER_OTLP_INSECURE 'maybe': expected true or false"),
    # 5. a contradiction
    (("--format", "none", "--otlp-endpoint", "https://127.0.0.1:1", "--otlp-insecure"), {},
     "--otlp-insecure contradicts the https:// endpoint (--otlp-endpoint)"),
    # 6. the system's CA bundle named by SSL_CERT_FILE
    (("--format", "none", "--otlp-endpoint", "https://127.0.0.1:1"), {"SSL_CERT_FILE": "/nonexistent/ca.crt"},
     "cannot read OTLP CA bundle (SSL_CERT_FILE) /nonexistent/ca.crt: No such file or directory"),
    # 7. files that are not regular, read unbounded before
    (("--format", "none", "--otlp-endpoint", "https://127.0.0.1:1", "--otlp-certificate", "/dev/zero"), {},
     "OTLP certificate /dev/zero is not a regular file"),
    (("--format", "none", "--otlp-endpoint", "https://127.0.0.1:1", "--otlp-certificate", "/dev/null",
      "--otlp-client-key", "/dev/zero", "--otlp-client-certificate", "/dev/zero"), {},
     "OTLP certificate /dev/null is not a regular file"),
    ((*EXPORT, "--otlp-headers-file", "/dev/zero"), {}, "OTLP headers file /dev/zero is not a regular file"),
    ((*EXPORT, "--otlp-headers-file", "/"), {}, "OTLP headers file / is not a regular file"),
])
def test_bad_otlp_and_resource_settings_exit_2_with_one_line(args, env, message):
    assert_one_line(run_installed(*args, env=env), message)


def test_files_that_would_block_or_are_binary(tmp_path):
    fifo = tmp_path / "headers.fifo"
    os.mkfifo(fifo)  # opening it for reading would wait for a writer
    assert_one_line(run_installed(*EXPORT, "--otlp-headers-file", str(fifo)),
                    f"OTLP headers file {fifo} is not a regular file")
    binary = tmp_path / "headers.bin"
    binary.write_bytes(b"authorization=" + SECRET.encode() + b"\x00\xff\xfe")
    assert_one_line(run_installed(*EXPORT, "--otlp-headers-file", str(binary)),
                    f"OTLP headers file {binary} is not UTF-8 text")
    big = tmp_path / "ca.pem"
    with open(big, "wb") as f:
        f.truncate(5 * 1024 * 1024)
    assert_one_line(run_installed("--format", "none", "--otlp-endpoint", "https://127.0.0.1:1",
                                  "--otlp-certificate", str(big)),
                    f"OTLP certificate {big} is larger than 4 MiB")
