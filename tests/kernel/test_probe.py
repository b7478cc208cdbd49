"""The probe reports every closed session with the right facts, on real traffic."""

from __future__ import annotations

import errno
import socket
import threading
import time

import pytest

from otel_tcplife import abi
from otel_tcplife.probe import CoreProbe, ProbeSettings
from otel_tcplife.probe.ring import RECORD_SIZE
from otel_tcplife.session import Decoder

MB = 1_000_000


def run_pair(traffic, collector, *, family="4", host="127.0.0.1", send=0, recv=0, close="client",
             netns_server=None, netns_client=None, server_bind=None, hold_ms=0):
    """One connection between a tl-server and a tl-client; returns (sessions, peers, timing)."""
    mark = collector.mark()
    server, port = traffic.server(netns=netns_server, name="tl-server", family=family,
                                  host=server_bind or host, recv=send, send=recv, close=close)
    client = traffic.client(netns=netns_client, name="tl-client", family=family, host=host, port=port,
                            send=send, recv=recv, close=close, hold_ms=hold_ms)
    closed = client.events()[0]
    server.events()
    assert closed["event"] == "closed", closed
    found = collector.wait_for({closed["lport"], port}, since=mark)
    client_side = [s for s in found if s.lport == closed["lport"] and s.rport == port]
    server_side = [s for s in found if s.lport == port and s.rport == closed["lport"]]
    assert len(client_side) == 1 and len(server_side) == 1, found
    return client_side[0], server_side[0], client, server, closed


SIZES = [(0, 0), (1, 0), (0, 1), (1023, 1024), (1024, 1023), (4 * MB, 3 * MB)]
CLOSES = ["client", "server", "rst-client", "rst-server"]


@pytest.mark.parametrize("close", CLOSES)
@pytest.mark.parametrize("send,recv", SIZES)
def test_loopback_ipv4_exact_bytes_owner_and_times(traffic, collector, send, recv, close):
    # A reset before the server's accept() would end the session before it
    # had an owner: give the server time to accept first.
    hold_ms = 50 if close == "rst-client" else 0
    c, s, client, server, timing = run_pair(traffic, collector, send=send, recv=recv, close=close,
                                            hold_ms=hold_ms)

    assert (c.tx_bytes, c.rx_bytes) == (send, recv)
    assert (s.tx_bytes, s.rx_bytes) == (recv, send)
    assert (c.pid, c.comm, c.role, c.owner) == (client.pid, "tl-client", abi.ROLE_CLIENT, abi.OWNER_CONNECT)
    assert (s.pid, s.comm, s.role, s.owner) == (server.pid, "tl-server", abi.ROLE_SERVER, abi.OWNER_ACCEPT)
    for session in (c, s):
        assert (session.family, session.laddr, session.raddr) == (4, "127.0.0.1", "127.0.0.1")
    # The kernel's clock is the test's CLOCK_MONOTONIC: birth follows the
    # client's connect() call; the client is told of nothing before birth.
    assert timing["start_ns"] <= c.birth_ns <= c.close_ns
    assert c.birth_ns <= s.birth_ns <= s.close_ns
    # Whoever receives a reset records it; a clean close has no error.
    if close == "rst-server":
        assert c.error == errno.ECONNRESET
    if close == "rst-client":
        assert s.error == errno.ECONNRESET
    if close in ("client", "server"):
        assert c.error == 0 and s.error == 0


def test_duration_matches_the_clients_own_clock(traffic, collector):
    c, s, _, _, timing = run_pair(traffic, collector, send=10, recv=10, close="client", hold_ms=300)
    measured_ms = (timing["end_ns"] - timing["start_ns"]) / 1e6
    # The client holds 300 ms, then closes first; the server closes on its FIN.
    # CLOSE comes when the peer answers the FIN, just after close() returns.
    assert 300 <= c.duration_ns / 1e6 <= measured_ms + 50
    assert timing["start_ns"] <= c.birth_ns < s.birth_ns
    assert 300 <= s.duration_ns / 1e6 <= measured_ms + 50


def test_loopback_ipv6(traffic, collector):
    c, s, client, server, _ = run_pair(traffic, collector, family="6", host="::1", send=100000, recv=200000)
    assert (c.family, c.laddr, c.raddr, c.tx_bytes, c.rx_bytes) == (6, "::1", "::1", 100000, 200000)
    assert (s.family, s.pid, s.tx_bytes, s.rx_bytes) == (6, server.pid, 200000, 100000)


def test_ipv4_mapped_ipv6_is_reported_as_ipv4(traffic, collector):
    c, s, *_ = run_pair(traffic, collector, family="6", host="::ffff:127.0.0.1", server_bind="::",
                        send=5, recv=7)
    for session in (c, s):
        assert (session.family, session.laddr, session.raddr) == (4, "127.0.0.1", "127.0.0.1")
    assert (c.tx_bytes, c.rx_bytes, s.tx_bytes, s.rx_bytes) == (5, 7, 7, 5)


@pytest.mark.parametrize("family", ["4", "6"])
def test_between_network_namespaces(traffic, collector, netns_pair, family):
    server_addr = netns_pair.server_v4 if family == "4" else netns_pair.server_v6
    client_addr = netns_pair.client_v4 if family == "4" else netns_pair.client_v6
    c, s, client, server, _ = run_pair(
        traffic, collector, family=family, host=server_addr, send=100000, recv=2 * MB, close="server",
        netns_server=netns_pair.server_ns, netns_client=netns_pair.client_ns)
    assert (c.laddr, c.raddr, c.tx_bytes, c.rx_bytes) == (client_addr, server_addr, 100000, 2 * MB)
    assert (s.laddr, s.raddr, s.tx_bytes, s.rx_bytes) == (server_addr, client_addr, 2 * MB, 100000)
    # `ip netns exec` execs the command: the pids are the traffic processes'.
    assert (c.pid, c.comm, s.pid, s.comm) == (client.pid, "tl-client", server.pid, "tl-server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_refused_connect_is_reported_with_zero_bytes(traffic, collector):
    mark = collector.mark()
    client = traffic.client(name="tl-client", host="127.0.0.1", port=free_port())
    failed = client.events()[0]
    assert failed["error"] == "ECONNREFUSED"
    (c,) = collector.wait_for({failed["lport"]}, since=mark)
    assert (c.pid, c.comm, c.tx_bytes, c.rx_bytes) == (client.pid, "tl-client", 0, 0)
    assert (c.error, c.role) == (errno.ECONNREFUSED, abi.ROLE_CLIENT)


def test_timed_out_connect_is_reported_with_zero_bytes(traffic, collector, netns_pair):
    # No host answers at .99 on the namespace's link: the SYN goes unanswered.
    mark = collector.mark()
    client = traffic.client(netns=netns_pair.client_ns, name="tl-client", host="10.201.0.99", port=80,
                            syn_timeout_ms=500)
    failed = client.events()[0]
    assert failed["event"] == "failed"
    (c,) = collector.wait_for({failed["lport"]}, since=mark)
    assert (c.pid, c.tx_bytes, c.rx_bytes, c.role) == (client.pid, 0, 0, abi.ROLE_CLIENT)
    assert c.error in (errno.ETIMEDOUT, errno.EHOSTUNREACH)
    assert c.raddr == "10.201.0.99"


def on_port(sessions, port: int) -> int:
    """How many of sessions have port at either end."""
    return sum(port in (s.lport, s.rport) for s in sessions)


def test_a_slow_reader_waits_for_the_poll_interval_not_for_the_next_trickle():
    """Records made while a batch is handled wait for the next interval: reading them at once
    would make many small batches, each with a batch's fixed costs."""
    interval, handling, seconds, connections = 0.2, 0.03, 1.0, 300
    probe = CoreProbe(ProbeSettings(poll_interval=interval)).start()
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def accept_all() -> None:
        for _ in range(connections):
            listener.accept()[0].close()

    def connect_all() -> None:
        for _ in range(connections):
            socket.create_connection(("127.0.0.1", port)).close()
            time.sleep(seconds / connections)

    threads = [threading.Thread(target=accept_all), threading.Thread(target=connect_all)]
    decoder = Decoder()
    ours = reads = 0
    try:
        started = time.monotonic()
        for thread in threads:
            thread.start()
        while threads[1].is_alive():
            sessions = decoder.decode(probe.read())
            if sessions:
                reads += 1
                ours += on_port(sessions, port)
                time.sleep(handling)  # a batch being handled
        elapsed = time.monotonic() - started
        for thread in threads:
            thread.join()
        time.sleep(0.05)
        ours += on_port(decoder.decode(probe.drain()), port)
    finally:
        listener.close()
        probe.close()
    assert ours == 2 * connections  # nothing left behind
    # One read per interval (+1 for the partial first and last); reading at once after each
    # batch would make one per `handling`, about 7 times as many.
    assert reads <= elapsed / interval + 2, (reads, elapsed)


def test_without_a_poll_interval_each_session_wakes_the_reader_at_once():
    """--poll-interval 0: the kernel wakes the reader for every event (edge-triggered waits
    must not miss one), so a read returns at once, not at its timeout."""
    probe = CoreProbe(ProbeSettings(poll_interval=0)).start()
    decoder = Decoder()
    try:
        for _ in range(3):  # each wait is woken anew
            with socket.create_server(("127.0.0.1", 0)) as listener:
                port = listener.getsockname()[1]
                socket.create_connection(("127.0.0.1", port)).close()
                listener.accept()[0].close()
            started = time.monotonic()
            ours = 0
            while ours < 2 and time.monotonic() - started < 5.0:
                ours += on_port(decoder.decode(probe.read(5.0)), port)
            waited = time.monotonic() - started
            assert ours == 2 and waited < 1.0, (ours, waited)
    finally:
        probe.close()


def test_ipv4_addresses_are_zero_padded_after_the_ring_buffer_wraps():
    """An IPv4 event's addresses fill 4 of their 16 bytes; the other 12 are zero, also where the
    ring buffer's space held older records: user space keys its caches by all 16 bytes."""
    probe = CoreProbe(ProbeSettings(ring_buffer_bytes=4096)).start()  # wraps every ~36 records
    events = []
    try:
        for round_ in range(8):
            for family, host in ((socket.AF_INET6, "::1"), (socket.AF_INET, "127.0.0.1")):
                with socket.create_server((host, 0), family=family) as listener:
                    for _ in range(5):
                        socket.create_connection((host, listener.getsockname()[1])).close()
                        listener.accept()[0].close()
            time.sleep(0.05)
            events += probe.drain()
    finally:
        probe.close()
    fields = [name for name, _ in abi.EVENT_FIELDS]
    family, saddr, daddr = fields.index("family"), fields.index("saddr"), fields.index("daddr")
    ipv4 = [e for e in events if e[family] == 4]
    assert len(ipv4) >= 8 * 10 and len(events) > 2 * 4096 // RECORD_SIZE  # wrapped at least twice
    assert [e for e in ipv4 if e[saddr][4:] != bytes(12) or e[daddr][4:] != bytes(12)] == []
