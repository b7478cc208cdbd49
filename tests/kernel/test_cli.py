"""The otel-tcplife command at a terminal: formats, filters, signals, losses."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

# The classic formats, copied from the reference (bcc tools/tcplife.py).
REFERENCE = {
    "default": ("%-5s %-10.10s %s%-15s %-5s %-15s %-5s %5s %5s %s",
                "%-5d %-10.10s %s%-15s %-5d %-15s %-5d %5d %5d %.2f"),
    "wide": ("%-5s %-16.16s %-2s %-39s %-5s %-39s %-5s %6s %6s %s",
             "%-5d %-16.16s %-2s %-39s %-5s %-39s %-5d %6d %6d %.2f"),
    "csv": ("%s,%s,%s,%s,%s,%s,%s,%s,%s,%s", "%d,%s,%s,%s,%s,%s,%d,%d,%d,%.2f"),
}
COLUMNS = ("PID", "COMM", "LADDR", "LPORT", "RADDR", "RPORT", "TX_KB", "RX_KB", "MS")


def free_port(family=socket.AF_INET, host="127.0.0.1") -> int:
    with socket.socket(family) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def one_session(traffic, *, send=0, recv=0, close="client", family="4", host="127.0.0.1",
                client_port=0, server=None):
    """Runs one connection; returns (server peer, server port, client peer, client port)."""
    if server is None:
        server = traffic.server(name="tl-server", family=family, host=host, recv=send, send=recv, close=close)
    peer, port = server
    client = traffic.client(name="tl-client", family=family, host=host, port=port, send=send, recv=recv,
                            close=close, bind_port=client_port)
    closed = client.events()[0]
    peer.events()
    return peer, port, client, closed["lport"]


def rows_for(lines: list[str], *ports: int) -> list[str]:
    """Rows about our own sessions: other processes make loopback connections too."""
    wanted = {str(p) for p in ports}
    return [line for line in lines if wanted & set(re.split(r"[ ,]+", line))]


def settle_and_stop(agent, wait: float = 0.3):
    time.sleep(wait)  # the last CLOSE can follow the peers' exit by a moment
    returncode, lines, stderr = agent.stop()
    assert returncode == 0, stderr
    return lines, stderr


@pytest.mark.parametrize("flags", [
    [], ["-w"], ["-s"], ["-T"], ["-t"], ["-T", "-t"], ["-s", "-T", "-t"], ["-w", "-T", "-t"], ["-w", "-s"],
])
def test_every_format_matches_the_reference(traffic, start_agent, flags):
    server = traffic.server(name="tl-server", recv=3000, send=5000)
    agent = start_agent("-L", str(server[1]), *flags)
    started = time.time()
    peer, port, _, cport = one_session(traffic, server=server, send=3000, recv=5000)
    lines, _ = settle_and_stop(agent)
    finished = time.time()

    kind = "csv" if "-s" in flags else "wide" if "-w" in flags else "default"
    header_format, row_format = REFERENCE[kind]
    sep = "," if kind == "csv" else " "
    prefix = ""
    if "-T" in flags:
        prefix += "TIME," if kind == "csv" else "%-8s " % "TIME"
    if "-t" in flags:
        prefix += "TIME(s)," if kind == "csv" else "%-9s " % "TIME(s)"
    ip = "" if kind == "default" else "IP"
    assert agent.header == prefix + header_format % (COLUMNS[0], COLUMNS[1], ip, *COLUMNS[2:])

    (row,) = lines
    fields = row.split(sep) if kind == "csv" else row.split()
    row_prefix = ""
    if "-T" in flags:
        clock = fields.pop(0)
        assert time.strftime("%H:%M:%S", time.localtime(started)) <= clock <= \
            time.strftime("%H:%M:%S", time.localtime(finished + 1))
        row_prefix += clock + "," if kind == "csv" else "%-8s " % clock
    if "-t" in flags:
        assert fields.pop(0) == "0.000000"  # the first row starts the clock
        row_prefix += "0.000000," if kind == "csv" else "%-9.6f " % 0
    ms = float(fields[-1])
    assert 0 < ms < (finished - started) * 1000
    expected = row_prefix + row_format % (peer.pid, "tl-server", "" if kind == "default" else "4",
                                          "127.0.0.1", port, "127.0.0.1", cport, 4, 2, ms)
    assert row == expected


def test_rows_appear_while_running_through_a_pipe(traffic, start_agent):
    server = traffic.server(name="tl-server")
    agent = start_agent("-s", "-L", str(server[1]))
    one_session(traffic, server=server)
    row = agent.read_line(timeout=5)  # no exit, no flush request: output is line-buffered
    assert row is not None and row.split(",")[1] == "tl-server"
    assert agent.stop(signal.SIGTERM)[0] == 0


def server_rows_and_client_rows(lines, server_port, client_port):
    rows = [line.split(",") for line in rows_for(lines, server_port, client_port)]
    server_side = [r for r in rows if r[4] == str(server_port)]  # LPORT
    client_side = [r for r in rows if r[4] == str(client_port)]
    return server_side, client_side


@pytest.mark.parametrize("close", ["client", "server"])
def test_pid_filter_matches_the_accepting_process(traffic, start_agent, close):
    server = traffic.server(name="tl-server", recv=10, send=10, close=close)
    agent = start_agent("-s", "-p", str(server[0].pid))
    peer, port, client, cport = one_session(traffic, server=server, send=10, recv=10, close=close)
    lines, _ = settle_and_stop(agent)
    server_side, client_side = server_rows_and_client_rows(lines, port, cport)
    assert [(r[0], r[1]) for r in server_side] == [(str(peer.pid), "tl-server")]
    assert client_side == []


def test_pid_filter_excludes_other_processes(traffic, start_agent):
    server = traffic.server(name="tl-server")
    agent = start_agent("-s", "-p", str(server[0].pid + 1_000_000))  # no such process
    _, port, _, cport = one_session(traffic, server=server)
    lines, _ = settle_and_stop(agent)
    assert rows_for(lines, port, cport) == []


@pytest.mark.parametrize("flags,expect", [
    (lambda s, c: ["-L", str(s)], {"server"}),
    (lambda s, c: ["-L", f"{s + 1 if s < 65535 else s - 1}"], set()),
    (lambda s, c: ["-D", str(s)], {"client"}),
    (lambda s, c: ["-D", f"1,{s},2"], {"client"}),
    (lambda s, c: ["-L", str(c)], {"client"}),  # an ephemeral client port
    (lambda s, c: ["-L", str(s), "-D", str(c)], {"server"}),
    (lambda s, c: ["-L", str(s), "-D", str(s)], set()),  # both must match
])
def test_port_filters_against_real_traffic(traffic, start_agent, flags, expect):
    server = traffic.server(name="tl-server")
    client_port = free_port()
    agent = start_agent("-s", *flags(server[1], client_port))
    peer, port, client, cport = one_session(traffic, server=server, client_port=client_port)
    lines, _ = settle_and_stop(agent)
    server_side, client_side = server_rows_and_client_rows(lines, port, cport)
    assert ({"server"} if server_side else set()) | ({"client"} if client_side else set()) == expect
    for row in server_side:
        assert (row[0], row[1]) == (str(peer.pid), "tl-server")
    for row in client_side:
        assert (row[0], row[1]) == (str(client.pid), "tl-client")


@pytest.mark.parametrize("flag,expect", [("-4", {"4", "mapped"}), ("-6", {"6"}), (None, {"4", "6", "mapped"})])
def test_family_filters(traffic, start_agent, flag, expect):
    servers = {
        "4": traffic.server(name="tl-server", family="4", host="127.0.0.1"),
        "6": traffic.server(name="tl-server", family="6", host="::1"),
        "mapped": traffic.server(name="tl-server", family="6", host="::"),
    }
    ports = ",".join(str(s[1]) for s in servers.values())
    agent = start_agent("-s", "-L", ports, *([flag] if flag else []))
    one_session(traffic, server=servers["4"], family="4", host="127.0.0.1")
    one_session(traffic, server=servers["6"], family="6", host="::1")
    one_session(traffic, server=servers["mapped"], family="6", host="::ffff:127.0.0.1")
    lines, _ = settle_and_stop(agent)
    seen = {name for name, (_, port) in servers.items() for line in lines if line.split(",")[4] == str(port)}
    assert seen == expect
    families = {line.split(",")[4]: line.split(",")[2] for line in lines}
    if "mapped" in seen:
        assert families[str(servers["mapped"][1])] == "4"  # reported as IPv4, dotted
        assert "127.0.0.1" in [line.split(",")[3] for line in lines if line.split(",")[4] == str(servers["mapped"][1])]


def test_lost_events_are_counted_and_reported(traffic, start_agent):
    count = 300
    server = traffic.server(name="tl-server", count=count)
    agent = start_agent("-s", "--summary", "-L", str(server[1]), "--ring-buffer-size", "4096")
    agent.proc.send_signal(signal.SIGSTOP)  # the reader stalls; the kernel keeps reporting
    try:
        client = traffic.client(name="tl-client", host="127.0.0.1", port=server[1], count=count)
        client.events()
        server[0].events()
    finally:
        agent.proc.send_signal(signal.SIGCONT)
    lines, stderr = settle_and_stop(agent, wait=1.5)
    lost = int(re.search(r"(\d+) closed sessions lost: ring buffer full", stderr).group(1))
    assert lost > 0
    assert len(rows_for(lines, server[1])) + lost == count
    summary = json.loads(stderr.strip().splitlines()[-1])
    assert (summary["sessions_observed"], summary["lost_in_kernel"]) == (len(lines), lost)


def test_records_wrapping_around_a_small_ring_buffer_are_all_read(traffic, start_agent):
    # 4096 bytes hold 39 records of 104: 300 sessions wrap around it 7 times, a record split
    # at the end of the data each time but one (4096 is not a multiple of 104).
    count = 300
    server = traffic.server(name="tl-server", count=count, send=1000, recv=3000)
    agent = start_agent("-s", "--summary", "-L", str(server[1]), "--ring-buffer-size", "4096")
    client = traffic.client(name="tl-client", host="127.0.0.1", port=server[1], count=count, send=3000, recv=1000)
    client.events()
    server[0].events()
    lines, stderr = settle_and_stop(agent, wait=1.5)
    rows = rows_for(lines, server[1])
    assert len(rows) == count and "lost" not in stderr.replace('"lost_in_kernel":0', "")
    # every row whole: TX_KB/RX_KB of the server end (1000 bytes out, 3000 in), the right ports
    assert {(row.split(",")[4], row.split(",")[7], row.split(",")[8]) for row in rows} == {(str(server[1]), "0", "2")}


def test_tracefs_is_mounted_when_missing(start_agent):
    # In a private mount namespace, with tracefs unmounted there.
    script = ("umount /sys/kernel/tracing 2>/dev/null; umount /sys/kernel/debug/tracing 2>/dev/null; "
              "test ! -e /sys/kernel/tracing/events || exit 99; exec \"$@\"")
    agent = start_agent(prefix=("unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh"))
    returncode, _, stderr = agent.stop()
    assert returncode == 0
    assert "warning" not in stderr  # the accept tracepoints attached through tracefs


def test_sigterm_and_sigint_exit_zero(start_agent):
    for sig in (signal.SIGINT, signal.SIGTERM):
        agent = start_agent("-L", "1")
        assert agent.stop(sig)[0] == 0


def connect_until_exit(traffic, shell: subprocess.Popen) -> tuple[str, str]:
    """100 loopback connections while `shell` runs; its stdout and stderr once it has exited."""
    server, port = traffic.server(name="tl-server", count=100)
    client = traffic.client(name="tl-client", port=port, count=100)
    try:
        return shell.communicate(timeout=20)
    finally:
        client.kill()
        server.kill()


def test_a_closed_pipe_ends_the_agent_quietly(traffic):
    # `otel-tcplife | head -1`: head leaves after the header; the next row's write fails.
    shell = subprocess.Popen(
        ["bash", "-c", f'"{sys.executable}" -m otel_tcplife --no-pin -s | {{ head -1 >/dev/null; echo tracing; }}; '
                       'exit ${PIPESTATUS[0]}'],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert shell.stdout.readline() == "tracing\n"
    _, stderr = connect_until_exit(traffic, shell)
    assert shell.returncode == 0
    assert stderr == ""


def test_a_closed_pipe_ends_the_ndjson_agent_quietly(traffic):
    # The same with NDJSON: head reads the first session's line; a later write fails.
    shell = subprocess.Popen(
        ["bash", "-c", f'"{sys.executable}" -m otel_tcplife --no-pin --format ndjson | head -1; exit ${{PIPESTATUS[0]}}'],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert "tracing via" in shell.stderr.readline()
    stdout, stderr = connect_until_exit(traffic, shell)
    assert shell.returncode == 0
    assert stderr == ""
    assert json.loads(stdout)["network.transport"] == "tcp"
