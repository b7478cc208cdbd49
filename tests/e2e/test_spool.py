"""The disk spool: outages, kill -9 and a full spool, with the real agent and receiver."""

from __future__ import annotations

import json
import os
import signal
import time

import grpc

from ..otlp_receiver import OtlpReceiver
from ..tinyfs import tiny_tmpfs


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


def stats_lines(agent) -> list[dict]:
    return [json.loads(line) for line in list(agent.stderr_lines) if line.startswith("{")]


def wait_for_stats(agent, predicate, timeout: float) -> dict:
    """The first stats line (--stats-interval) for which predicate holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for stats in stats_lines(agent):
            if predicate(stats):
                return stats
        time.sleep(0.1)
    raise AssertionError(f"no such stats line within {timeout} s: {stats_lines(agent)[-1:]}")


def assert_balanced(stats: dict) -> None:
    """A stats line's identity, per signal (with a spool)."""
    for name in ("logs", "traces"):
        s = stats[name]
        assert s["accepted"] == stats["sessions_observed"], stats
        assert (s["accepted"] + s["replayed"] == s["exported"] + s["rejected"] + s["dropped"] + s["queued"]
                + s["in_flight"] + s["spool_records"]), stats


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


def test_an_outage_longer_than_the_retry_budget_keeps_the_spooled_sessions(traffic, start_agent, receiver,
                                                                          tmp_path):
    receiver.fail_for(grpc.StatusCode.UNAVAILABLE, seconds=8)
    server = traffic.server(name="tl-server", count=20)
    agent = spool_agent(start_agent, receiver.endpoint, server[1], tmp_path / "spool", "--retry-max-elapsed", "1")
    _, made = make_sessions(traffic, 20, server)
    assert receiver.wait_for(lambda r: session_keys(r.log_records()) >= made and
                             session_keys(r.spans()) >= made, timeout=40)
    returncode, _, stderr = agent.stop()
    assert returncode == 0
    summary = agent.summary()
    for signal_name in ("logs", "traces"):
        assert summary[signal_name]["dropped"] == 0
        assert summary[signal_name]["exported"] == 20
    assert "records kept in the spool, to be sent again: UNAVAILABLE" in stderr


def test_a_small_spool_limit_delivers_large_batches_split(traffic, start_agent, receiver, tmp_path):
    # 1,000,000 bytes over two signals: segments of 125,000 bytes, where a batch of 2,048 sessions
    # is more than 1 MB a signal.
    server = traffic.server(name="tl-server", count=2500)
    agent = spool_agent(start_agent, receiver.endpoint, server[1], tmp_path / "spool", "--spool-max-bytes", "1000000",
                        "--batch-size", "2048", "--flush-interval", "3")
    _, made = make_sessions(traffic, 2500, server)
    assert receiver.wait_for(lambda r: session_keys(r.log_records()) >= made and
                             session_keys(r.spans()) >= made, timeout=40)
    returncode, _, stderr = agent.stop()
    assert returncode == 0
    summary = agent.summary()
    for signal_name in ("logs", "traces"):
        assert (summary[signal_name]["exported"], summary[signal_name]["dropped"]) == (2500, 0)
    assert max(c.items for c in receiver.call_log) < 2048  # requests were split to fit
    assert "larger than" not in stderr


def test_a_spool_that_filled_a_small_disk_works_again_once_the_collector_is_back(traffic, start_agent, receiver,
                                                                                   tmp_path):
    with tiny_tmpfs(tmp_path / "fs", "256k") as fs:
        receiver.fail_for(grpc.StatusCode.UNAVAILABLE, seconds=3600)
        peer, port = traffic.server(name="tl-server", count=700)
        agent = spool_agent(start_agent, receiver.endpoint, port, os.path.join(fs, "spool"),
                            "--stats-interval", "0.5")
        traffic.client(name="tl-client", port=port, count=600).events()  # ~700 KB of records: the disk fills up
        wait_for_stats(agent, lambda s: s["sessions_observed"] == 600 and s["logs"]["dropped_spool_io_error"] > 0
                       and s["traces"]["dropped_spool_io_error"] > 0 and not s["logs"]["queued"]
                       and not s["traces"]["queued"], timeout=20)
        receiver.clear_faults()  # the collector is back: the backlog goes, and with it the files
        drained = wait_for_stats(agent, lambda s: s["sessions_observed"] == 600 and all(
            s[k]["spool_records"] == 0 and s[k]["exported"] + s[k]["dropped"] == 600 for k in ("logs", "traces")),
            timeout=30)
        assert os.listdir(os.path.join(fs, "spool", "logs")) == ["lock"]

        closed = traffic.client(name="tl-client", port=port, count=100).events()
        peer.events()
        made = {(port, e["lport"]) for e in closed if e["event"] == "closed"}
        assert len(made) == 100
        assert receiver.wait_for(lambda r: session_keys(r.log_records()) >= made and
                                 session_keys(r.spans()) >= made, timeout=20)
        assert agent.stop()[0] == 0
        summary = agent.summary()
        assert_balanced(summary)
        for signal_name in ("logs", "traces"):
            s = summary[signal_name]
            # Everything lost was lost while the disk was full, and counted.
            assert s["dropped"] == s["dropped_spool_io_error"] == drained[signal_name]["dropped_spool_io_error"]
            assert s["exported"] == 700 - s["dropped"]


def test_an_emptied_segment_is_counted_as_corrupted(traffic, start_agent, receiver, tmp_path):
    receiver.fail_for(grpc.StatusCode.UNAVAILABLE, seconds=3600)
    server = traffic.server(name="tl-server", count=30)
    first = spool_agent(start_agent, receiver.endpoint, server[1], tmp_path / "spool", "--shutdown-timeout", "0.5")
    port, made = make_sessions(traffic, 30, server)
    time.sleep(1)
    assert first.stop()[0] == 0
    assert first.summary()["logs"]["spooled"] == 30
    logs_dir = tmp_path / "spool" / "logs"
    segments = [name for name in os.listdir(logs_dir) if name.endswith(".seg")]
    assert segments
    for name in segments:
        os.truncate(logs_dir / name, 0)  # the records are gone; the state logs and names remain

    receiver.clear_faults()
    second = spool_agent(start_agent, receiver.endpoint, port, tmp_path / "spool")
    assert receiver.wait_for(lambda r: session_keys(r.spans()) >= made, timeout=30)
    returncode, _, stderr = second.stop()
    assert returncode == 0
    summary = second.summary()
    assert summary["logs"]["corrupted_entries"] >= len(segments)  # not lost silently
    assert (summary["logs"]["replayed"], summary["traces"]["replayed"]) == (0, 30)
    assert "damaged entries" in stderr and "their records are lost" in stderr


def test_a_segment_that_is_a_symlink_to_dev_zero_is_refused(traffic, start_agent, receiver, tmp_path):
    logs_dir = tmp_path / "spool" / "logs"
    os.makedirs(logs_dir, mode=0o700)
    os.chmod(tmp_path / "spool", 0o700)
    os.symlink("/dev/zero", logs_dir / "00000000000000000000.seg")
    server = traffic.server(name="tl-server", count=5)
    agent = spool_agent(start_agent, receiver.endpoint, server[1], tmp_path / "spool")  # starts: no endless read
    _, made = make_sessions(traffic, 5, server)
    assert receiver.wait_for(lambda r: session_keys(r.log_records()) >= made, timeout=20)
    returncode, _, stderr = agent.stop()
    assert returncode == 0
    assert f"refused {logs_dir}/00000000000000000000.seg: a symbolic link: left as it is" in stderr
    summary = agent.summary()
    assert (summary["logs"]["spool_refused_files"], summary["logs"]["exported"]) == (1, 5)
    assert os.path.islink(logs_dir / "00000000000000000000.seg")
