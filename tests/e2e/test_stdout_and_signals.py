"""A stdout that fails, and the signals a terminal or a session manager sends."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from ..support import Agent

AGENT = (sys.executable, "-m", "otel_tcplife", "--no-pin")  # pins: tests/kernel/test_pins.py


def start_raw(*args: str, stdout) -> subprocess.Popen:
    """The agent with its stdout where the test says; returns once it traces."""
    proc = subprocess.Popen([*AGENT, *args], stdout=stdout, stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()
    assert "tracing via" in line, line + proc.stderr.read()
    return proc


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> tuple[int, list[str]]:
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=30)
    return proc.returncode, stderr.splitlines()


def summary(stderr: list[str]) -> dict:
    return json.loads([line for line in stderr if line.startswith("{")][-1])


@pytest.mark.parametrize("broken", ["closed pipe", "/dev/full"])
def test_a_failing_stdout_stops_stdout_and_export_goes_on(traffic, receiver, broken):
    server, port = traffic.server(name="tl-server", count=200)
    args = ("--format", "ndjson", "-L", str(port), "--otlp-endpoint", receiver.endpoint, "--flush-interval", "0.2")
    if broken == "/dev/full":
        with open("/dev/full", "w") as full:
            proc = start_raw(*args, stdout=full)
    else:  # as `| head -1`: the reader takes one line and goes away
        proc = start_raw(*args, stdout=subprocess.PIPE)
    try:
        client = traffic.client(name="tl-client", port=port, count=200, hold_ms=0)
        if broken == "closed pipe":
            assert proc.stdout.readline()
            proc.stdout.close()
        client.events()
        server.events()
        assert receiver.wait_for(lambda r: len(r.log_records()) == 200 and len(r.spans()) == 200, timeout=20)
        status, stderr = stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert status == 0, stderr
    assert not any("Traceback" in line for line in stderr), stderr
    assert len([line for line in stderr if "stdout failed" in line]) == 1, stderr
    stats = summary(stderr)
    assert stats["sessions_observed"] == 200
    assert 0 < stats["stdout_dropped"] <= 200
    assert stats["logs"]["exported"] == stats["traces"]["exported"] == 200


def test_stdout_on_a_full_disk_without_export_is_one_line_and_status_1(traffic):
    with open("/dev/full", "w") as full:
        proc = subprocess.Popen([*AGENT], stdout=full, stderr=subprocess.PIPE, text=True)
    _, stderr = proc.communicate(timeout=30)  # the table's header already fails
    assert proc.returncode == 1
    assert stderr.splitlines() == ["otel-tcplife: error: writing to stdout failed: No space left on device"]


def test_a_closed_pipe_without_export_ends_the_agent_quietly(traffic):
    server, port = traffic.server(name="tl-server", count=1)
    proc = start_raw("--format", "ndjson", "-L", str(port), stdout=subprocess.PIPE)
    try:
        proc.stdout.close()  # the reader is gone before the first line: that write meets EPIPE
        traffic.client(name="tl-client", port=port).events()
        server.events()
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert "Traceback" not in stderr and "error" not in stderr


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM])
def test_sighup_ends_the_agent_like_sigterm_with_a_flush_and_the_stats(traffic, receiver, sig):
    server, port = traffic.server(name="tl-server", count=5)
    agent = Agent("--format", "none", "-L", str(port), "--otlp-endpoint", receiver.endpoint,
                  "--flush-interval", "30", command=AGENT)
    traffic.client(name="tl-client", port=port, count=5).events()
    server.events()
    time.sleep(0.5)  # read by the agent; the 30 s flush interval keeps them queued
    status, _, stderr = agent.stop(sig)
    assert status == 0, stderr
    stats = agent.summary()
    assert stats["sessions_observed"] == 5
    assert stats["logs"]["exported"] == 5  # flushed at exit, not lost
    assert len(receiver.log_records()) == 5
