"""Flag values refused for what they are: negative values are not taken for options (-4 and -6
are options), and limits are checked before anything starts."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("args,message", [
    (["-p", "-5"], "argument -p/--pid: invalid PID '-5': expected a positive integer"),
    (["--poll-interval", "-1"], "argument --poll-interval: invalid value '-1': expected a number >= 0"),
    (["-4", "--stats-interval", "-.5"], "argument --stats-interval: invalid value '-.5': expected a number >= 0"),
    (["-D", "-443"], "argument -D/--remoteport: invalid port '-443' in '-443': expected 1-65535"),
    (["--otlp-endpoint", "http://127.0.0.1:4317", "--spool-dir", "/tmp", "--spool-max-bytes", "1"],
     "argument --spool-max-bytes: invalid value '1': expected a number >= 65536"),
])
def test_a_bad_value_is_one_line_naming_the_value(args, message):
    result = subprocess.run([sys.executable, "-m", "otel_tcplife", *args], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 2
    assert result.stderr == f"otel-tcplife: error: {message}\n"


def test_the_family_flags_still_work_after_an_option_with_a_value():
    from otel_tcplife.cli import parse_config
    config = parse_config(["-p", "5", "-4"])
    assert (config.probe.pid, config.probe.family) == (5, 4)


@pytest.mark.parametrize("args,pin_root", [
    ([], None),  # the classic table leaves nothing attached behind it
    (["--pin"], "/sys/fs/bpf/otel-tcplife"),
    (["--pin-path", "/sys/fs/bpf/mine"], "/sys/fs/bpf/mine"),
    (["--format", "ndjson"], "/sys/fs/bpf/otel-tcplife"),
    (["--format", "journald", "--no-pin"], None),
    (["--format", "none", "--pin-path", "/sys/fs/bpf/x", "--no-pin"], None),
])
def test_what_is_pinned_by_default(args, pin_root):
    from otel_tcplife.cli import parse_config
    assert parse_config(args).probe.pin_root == pin_root
