"""The disk spool: outages, kill -9 and a full spool, with the real agent and receiver."""

from __future__ import annotations

import signal
import time

import grpc

from ..otlp_receiver import OtlpReceiver


def session_keys(records) -> set[tuple[int, int]]:
    """(local port, peer port) of each server-side session received."""
    keys = set()
    for record in records:
        a = {kv.key: kv.value.int_value for kv in record.attributes if kv.key.endswith(".port")}
        keys.add((a["network.local.port"], a["network.peer.port"]))
    return keys


def make_sessions(traffic, count: int, server=None):
    server = server or traffic.server(name="tl-server", count=count)
    peer, port = server
    closed = [e for e in traffic.client(name="tl-client", port=port, count=count).events() if e["event"] == "closed"]
    peer.events()
    return port, {(port, e["lport"]) for e in closed}


def spool_agent(start_agent, endpoint, port, spool_dir, *extra):
    return start_agent("--format", "none", "--otlp-endpoint", endpoint, "-L", str(port), "--flush-interval", "0.2",
                       "--spool-dir", str(spool_dir), *extra)


def test_receiver_down_for_20_seconds_then_everything_arrives(traffic, start_agent, tmp_path):
    receiver = OtlpReceiver().start()
    try:
        receiver.stop()  # the collector is down; its port stays ours to reuse
        server = traffic.server(name="tl-server", count=40)
        agent = spool_agent(start_agent, receiver.endpoint, server[1], tmp_path / "spool")
        _, made = make_sessions(traffic, 40, server)
        time.sleep(20)
        receiver.start()
        assert receiver.wait_for(lambda r: session_keys(r.log_records()) >= made and
                                 session_keys(r.spans()) >= made, timeout=45)
        assert agent.stop()[0] == 0
        summary = agent.summary()
        for signal_name in ("logs", "traces"):
            assert summary[signal_name]["dropped"] == 0
            assert summary[signal_name]["retries"] >= 1
    finally:
        receiver.stop()


def test_kill_9_then_restart_delivers_every_spooled_session(traffic, start_agent, receiver, tmp_path):
    receiver.fail_for(grpc.StatusCode.UNAVAILABLE, seconds=3600)
    server = traffic.server(name="tl-server", count=30)
    first = spool_agent(start_agent, receiver.endpoint, server[1], tmp_path / "spool")
    port, made = make_sessions(traffic, 30, server)
    time.sleep(1)  # batches reach the spool
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait()

    receiver.clear_faults()
    second = spool_agent(start_agent, receiver.endpoint, port, tmp_path / "spool")
    assert receiver.wait_for(lambda r: session_keys(r.log_records()) >= made and
                             session_keys(r.spans()) >= made, timeout=30)
    assert second.stop()[0] == 0
    summary = second.summary()
    for signal_name in ("logs", "traces"):
        assert summary[signal_name]["replayed"] == 30
        assert summary[signal_name]["spool_records"] == 0
    assert second.summary()["sessions_observed"] == 0  # all came from the spool


def test_full_spool_counts_exactly_what_is_missing(traffic, start_agent, tmp_path):
    receiver = OtlpReceiver().start()
    receiver.stop()
    try:
        server = traffic.server(name="tl-server", count=300)
        agent = spool_agent(start_agent, receiver.endpoint, server[1], tmp_path / "spool",
                            "--spool-max-bytes", "65536", "--batch-size", "10", "--signals", "logs")
        _, made = make_sessions(traffic, 300, server)
        time.sleep(1)
        receiver.start()
        time.sleep(1)
        assert receiver.wait_for(lambda r: r.call_count("logs", "ok") > 0, timeout=40)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and agent.proc.poll() is None:
            time.sleep(0.5)
            if len(receiver.log_records()) and not _still_sending(receiver):
                break
        assert agent.stop()[0] == 0
        summary = agent.summary()["logs"]
        delivered = session_keys(receiver.log_records()) & made
        assert summary["dropped_spool_full"] > 0
        assert len(delivered) + summary["dropped_spool_full"] == len(made)
    finally:
        receiver.stop()


def _still_sending(receiver) -> bool:
    before = receiver.call_count("logs")
    time.sleep(1.5)
    return receiver.call_count("logs") != before


def test_unsafe_or_useless_spool_settings_exit_2(tmp_path):
    import os
    import subprocess
    import sys
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    cases = [
        (["--otlp-endpoint", "http://127.0.0.1:1", "--spool-dir", str(shared)], "writable by group or others"),
        (["--spool-dir", str(tmp_path / "alone")], "--spool-dir needs an OTLP endpoint"),
    ]
    for args, message in cases:
        result = subprocess.run([sys.executable, "-m", "otel_tcplife", "--format", "none", *args],
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1 and message in result.stderr


def test_a_second_agent_on_the_same_spool_is_refused(start_agent, receiver, tmp_path):
    import subprocess
    import sys
    first = spool_agent(start_agent, receiver.endpoint, 1, tmp_path / "spool")
    result = subprocess.run([sys.executable, "-m", "otel_tcplife", "--format", "none", "--otlp-endpoint",
                             receiver.endpoint, "--spool-dir", str(tmp_path / "spool")],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "is in use by another otel-tcplife" in result.stderr
    assert first.stop()[0] == 0
