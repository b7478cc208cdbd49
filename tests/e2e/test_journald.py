"""--format journald against a real journald: sessions the test makes come back from `journalctl -o json`
with their fields; no journal is one line and exit 2; what journald does not take is counted."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time

import pytest

from otel_tcplife.output.journal_native import SOCKET_PATH, SOCKET_PATH_ENV

JOURNALD = "/lib/systemd/systemd-journald"


def journal_accepts() -> bool:
    """Whether a journald takes datagrams at its socket now."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        try:
            s.connect(SOCKET_PATH)
        except OSError:
            return False
    return True


@pytest.fixture(scope="module")
def journald():
    """The running journald, or one started here, standalone (and ended here by its pid). Without a
    persistent journal directory it writes to /run/log/journal, where journalctl reads too."""
    if journal_accepts():
        yield
        return
    if not os.path.exists(JOURNALD):
        pytest.skip(f"no {JOURNALD}")
    os.makedirs(os.path.dirname(SOCKET_PATH), exist_ok=True)
    process = subprocess.Popen([JOURNALD], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not journal_accepts():
            assert process.poll() is None, f"{JOURNALD} exited with status {process.returncode}"
            assert time.monotonic() < deadline, f"{JOURNALD} does not take datagrams at {SOCKET_PATH}"
            time.sleep(0.05)
        yield
    finally:
        process.terminate()
        process.wait(10)


def journal_entries(count: int, *matches: str, timeout: float = 10) -> list[dict]:
    """Entries of the agent (SYSLOG_IDENTIFIER) matching FIELD=value matches, once `count` are there.
    --all: fields of more than 4096 bytes are shown too."""
    argv = ["journalctl", "-o", "json", "--all", "--no-pager", "SYSLOG_IDENTIFIER=otel-tcplife", *matches]
    deadline = time.monotonic() + timeout
    while True:
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        entries = [json.loads(line) for line in out.splitlines()]
        if len(entries) >= count or time.monotonic() > deadline:
            return entries
        time.sleep(0.2)


def test_sessions_come_back_from_journalctl_with_their_fields(journald, traffic, start_agent):
    server, port = traffic.server(name="tl-server", count=3, recv=1023, send=1024 * 1024)
    agent = start_agent("--format", "journald", "-L", str(port), "--resource", "agent")
    client = traffic.client(name="tl-client", port=port, count=3, send=1023, recv=1024 * 1024)
    closed = [e for e in client.events() if e["event"] == "closed"]
    server.events()

    # The agent's sessions on the test's port (the journal may hold older runs' with the same port).
    entries = journal_entries(3, f"_PID={agent.pid}", f"NETWORK_LOCAL_PORT={port}")
    status, stdout, _ = agent.stop()
    assert (status, stdout) == (0, [])  # nothing on stdout
    stats = agent.summary()
    assert (stats["sessions_observed"], stats["journald_dropped"]) == (3, 0)

    assert len(entries) == 3
    for entry in entries:
        assert (entry["PRIORITY"], entry["SYSLOG_IDENTIFIER"], entry["OTEL_EVENT_NAME"]) == (
            "6", "otel-tcplife", "tcplife.session")
        assert re.fullmatch("[0-9a-f]{32}", entry["TRACE_ID"]) and re.fullmatch("[0-9a-f]{16}", entry["SPAN_ID"])
        assert (entry["TCPLIFE_BYTES_SENT"], entry["TCPLIFE_BYTES_RECEIVED"]) == (str(1024 * 1024), "1023")
        assert (entry["PROCESS_PID"], entry["THREAD_NAME"], entry["TCPLIFE_ROLE"]) == (
            str(server.pid), "tl-server", "server")
        assert (entry["SERVICE_NAME"], entry["NETWORK_TYPE"]) == ("otel-tcplife", "ipv4")
        assert entry["MESSAGE"] == (f"tl-server 127.0.0.1:{entry['NETWORK_PEER_PORT']} -> 127.0.0.1:{port} "
                                    f"tx=1.0MiB rx=1023B {float(entry['TCPLIFE_DURATION_MS']):.2f}ms")
    assert sorted(entry["NETWORK_PEER_PORT"] for entry in entries) == sorted(str(e["lport"]) for e in closed)
    assert len({entry["TRACE_ID"] for entry in entries}) == 3


def test_with_otlp_export_the_same_sessions_are_exported_with_the_same_ids(journald, traffic, start_agent,
                                                                            receiver):
    server, port = traffic.server(name="tl-server", count=2)
    agent = start_agent("--format", "journald", "-L", str(port), "--otlp-endpoint", receiver.endpoint,
                        "--flush-interval", "0.2")
    traffic.client(name="tl-client", port=port, count=2).events()
    server.events()
    entries = journal_entries(2, f"_PID={agent.pid}", f"NETWORK_LOCAL_PORT={port}")
    assert receiver.wait_for(lambda r: len(r.log_records()) == 2 and len(r.spans()) == 2)
    assert agent.stop()[0] == 0
    assert {entry["TRACE_ID"] for entry in entries} == {r.trace_id.hex() for r in receiver.log_records()} == {
        s.trace_id.hex() for s in receiver.spans()}
    assert {entry["SPAN_ID"] for entry in entries} == {r.span_id.hex() for r in receiver.log_records()}


def test_an_entry_too_large_for_a_datagram_arrives_by_memfd(journald, traffic, start_agent):
    # Two values of ~120 kB (an environment string holds at most 128 KiB): an entry over the
    # socket's 208 KiB send buffer, which journald gets in a memfd.
    big, name = "b" * 120_000, "n" * 100_000
    server, port = traffic.server(name="tl-server", count=1)
    agent = start_agent("--format", "journald", "-L", str(port), "--resource", "agent",
                        env={"OTEL_RESOURCE_ATTRIBUTES": f"test.big={big}", "OTEL_SERVICE_NAME": name})
    traffic.client(name="tl-client", port=port, count=1).events()
    server.events()
    (entry,) = journal_entries(1, f"_PID={agent.pid}", f"NETWORK_LOCAL_PORT={port}")
    assert agent.stop()[0] == 0
    assert (entry["TEST_BIG"], entry["SERVICE_NAME"], entry["PROCESS_PID"]) == (big, name, str(server.pid))
    assert agent.summary()["journald_dropped"] == 0


def test_no_journal_socket_is_one_line_and_exit_status_2(tmp_path):
    path = str(tmp_path / "no-journal")
    run = subprocess.run([sys.executable, "-m", "otel_tcplife", "--format", "journald"], capture_output=True,
                         text=True, timeout=30, env={**os.environ, SOCKET_PATH_ENV: path})
    assert run.returncode == 2
    assert run.stderr == (f"otel-tcplife: error: --format journald: cannot send to the journal at {path}: "
                          "No such file or directory; is systemd-journald running?\n")
    assert run.stdout == ""


def test_a_burst_waits_for_journald_rather_than_being_dropped(journald, traffic, start_agent):
    """journald's socket takes fewer than a hundred entries it has not read: the rest of a burst waits in
    the agent's queue."""
    server, port = traffic.server(name="tl-server", count=1000)
    agent = start_agent("--format", "journald", "-L", str(port))
    traffic.client(name="tl-client", port=port, count=1000).events(timeout=60)
    server.events(timeout=60)
    entries = journal_entries(1000, f"_PID={agent.pid}", f"NETWORK_LOCAL_PORT={port}", timeout=30)
    assert agent.stop()[0] == 0
    stats = agent.summary()
    assert (stats["sessions_observed"], stats["journald_dropped"], len(entries)) == (1000, 0, 1000)


def test_what_journald_does_not_take_is_counted_and_never_waited_for(tmp_path, traffic, start_agent):
    """A socket nobody reads stands for a journald that stopped reading: what it cannot hold waits in the
    agent's queue until the shutdown deadline, then is dropped and counted."""
    path = str(tmp_path / "socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as journal:
        journal.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        journal.bind(path)
        server, port = traffic.server(name="tl-server", count=300)
        agent = start_agent("--format", "journald", "-L", str(port), "--shutdown-timeout", "1",
                            env={SOCKET_PATH_ENV: path})
        traffic.client(name="tl-client", port=port, count=300).events(timeout=60)
        server.events(timeout=60)
        time.sleep(0.5)  # the agent has read every session (its poll interval is 0.1 s)
        started = time.monotonic()
        status, _, stderr = agent.stop()
        stopping = time.monotonic() - started
        received = []
        while True:
            try:
                received.append(journal.recv(1 << 20, socket.MSG_DONTWAIT))
            except BlockingIOError:
                break
    assert status == 0 and stopping < 1 + 1 + 2  # the deadline, one send's wait (1 s), slack
    stats = agent.summary()
    assert stats["sessions_observed"] == 300
    assert stats["journald_dropped"] > 0 and len(received) + stats["journald_dropped"] == 300
    assert all(entry.startswith(b"MESSAGE=tl-server ") for entry in received)
    assert "sessions not sent to journald: journald did not take them by the shutdown deadline" in stderr
