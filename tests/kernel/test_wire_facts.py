"""What happened on the wire, on real traffic over a real impaired link: RTT, minimum RTT and
retransmits against the kernel's own TCP_INFO (read by each side just before it closes), who
closed first, the reset and the state before CLOSE; through the probe and through the agent.

The link: two network namespaces of this module's own joined by a veth, the client's end shaped
with tbf (this kernel has no netem) for the bulk transfers: its queue and drops make a few ms of
RTT and hundreds of retransmits on a 3 MB transfer.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time

import pytest

from otel_tcplife import abi

from ..support import linked_namespaces, require_bpf

MB = 1_000_000
SHAPING = ("tbf", "rate", "20mbit", "burst", "8kb", "limit", "12kb")


@pytest.fixture(autouse=True)
def _needs_bpf():
    require_bpf()


@pytest.fixture(scope="module")
def link():
    """(namespaces, the client's veth end): our own pair, so that shaping it touches no other test."""
    require_bpf()
    with linked_namespaces("w", server_v4="10.202.0.1", client_v4="10.202.0.2", server_v6="fd00:202::1",
                           client_v6="fd00:202::2") as (pair, _, client_dev):
        yield pair, client_dev


@contextlib.contextmanager
def shaped(link):
    """The client's egress through tbf, for the length of the block."""
    pair, dev = link
    subprocess.run(["ip", "netns", "exec", pair.client_ns, "tc", "qdisc", "add", "dev", dev, "root", *SHAPING],
                   check=True, capture_output=True)
    try:
        yield
    finally:
        subprocess.run(["ip", "netns", "exec", pair.client_ns, "tc", "qdisc", "del", "dev", dev, "root"],
                       capture_output=True)


def transfer(traffic, link, *, send: int, recv: int = 10, close: str = "server", family: str = "4"):
    """One connection from the client's namespace to the server's: the client sends `send` bytes, the
    server answers `recv`, then by default the server closes first and the client last. Returns (the
    client's closed event, the server's served event, server port), both events with the TCP_INFO
    their side read just before closing."""
    pair, _ = link
    host = pair.server_v4 if family == "4" else pair.server_v6
    server, port = traffic.server(netns=pair.server_ns, name="tl-server", family=family, host=host,
                                  recv=send, send=recv, close=close, tcp_info=1)
    client = traffic.client(netns=pair.client_ns, name="tl-client", family=family, host=host, port=port,
                            send=send, recv=recv, close=close, tcp_info=1,
                            hold_ms=50 if close == "rst-client" else 0)  # accepted before the reset
    closed = client.events(timeout=60)[0]
    served = [e for e in server.events(timeout=60) if e["event"] == "served"][0]
    assert closed["event"] == "closed", closed
    return closed, served, port


def sessions_of(collector, mark: int, closed: dict, port: int):
    """(the client's session, the server's session) of a transfer."""
    found = collector.wait_for({closed["lport"], port}, since=mark)
    (c,) = [s for s in found if s.lport == closed["lport"] and s.rport == port]
    (s,) = [s for s in found if s.lport == port and s.rport == closed["lport"]]
    return c, s


def assert_matches_tcp_info(session, info: dict, closed_last: bool = True) -> None:
    """Retransmits within 2 of what TCP_INFO said just before the close, and the minimum RTT at most
    what it said (it can only have fallen since). The RTT within 30% for the side that closed last:
    the ACK of its FIN comes at once from the peer's kernel, one more sample of the link's RTT. (The
    side that closes first has its FIN acked when the peer's application closes too: that sample is
    the application's latency, which the smoothed RTT then holds for an eighth.)"""
    if closed_last:
        assert abs(session.srtt_us - info["tcpi_rtt"]) <= 0.3 * info["tcpi_rtt"], (session, info)
    assert abs(session.retransmits - info["tcpi_total_retrans"]) <= 2, (session, info)
    assert 0 < session.rtt_min_us <= info["tcpi_min_rtt"], (session, info)
    assert session.rtt_min_us <= session.srtt_us


def test_a_shaped_bulk_transfer_reports_the_kernels_rtt_and_retransmits(traffic, collector, link):
    mark = collector.mark()
    with shaped(link):
        closed, served, port = transfer(traffic, link, send=3 * MB)
    c, s = sessions_of(collector, mark, closed, port)
    # The link is impaired: retransmits, and an RTT well above an idle veth's (tens of us).
    assert closed["tcpi_total_retrans"] >= 50 and closed["tcpi_rtt"] >= 200, closed
    assert_matches_tcp_info(c, closed)
    assert_matches_tcp_info(s, served, closed_last=False)
    assert (c.tx_bytes, s.rx_bytes) == (3 * MB, 3 * MB)  # every retransmitted byte counted once


@pytest.mark.parametrize("family", ["4", "6"])
def test_a_small_clean_transfer_has_no_retransmits(traffic, collector, link, family):
    mark = collector.mark()
    closed, served, port = transfer(traffic, link, send=1000, recv=2000, family=family)
    c, s = sessions_of(collector, mark, closed, port)
    assert closed["tcpi_total_retrans"] == served["tcpi_total_retrans"] == 0
    assert (c.retransmits, s.retransmits) == (0, 0)
    assert_matches_tcp_info(c, closed)
    assert_matches_tcp_info(s, served, closed_last=False)


# close mode -> (client's closed_by, reset, state before CLOSE), then the server's
CLOSES = {
    "client": ((abi.CLOSED_BY_LOCAL, abi.RESET_NONE, "FIN_WAIT2"), (abi.CLOSED_BY_PEER, abi.RESET_NONE, "LAST_ACK")),
    "server": ((abi.CLOSED_BY_PEER, abi.RESET_NONE, "LAST_ACK"), (abi.CLOSED_BY_LOCAL, abi.RESET_NONE, "FIN_WAIT2")),
    "rst-client": ((abi.CLOSED_BY_LOCAL, abi.RESET_SENT, "ESTABLISHED"),
                   (abi.CLOSED_BY_PEER, abi.RESET_RECEIVED, "ESTABLISHED")),
    "rst-server": ((abi.CLOSED_BY_PEER, abi.RESET_RECEIVED, "ESTABLISHED"),
                   (abi.CLOSED_BY_LOCAL, abi.RESET_SENT, "ESTABLISHED")),
}
STATES = {name: number for number, name in (
    (1, "ESTABLISHED"), (4, "FIN_WAIT1"), (5, "FIN_WAIT2"), (8, "CLOSE_WAIT"), (9, "LAST_ACK"))}


@pytest.mark.parametrize("close", CLOSES)
def test_who_closed_and_the_reset(traffic, collector, link, close):
    mark = collector.mark()
    closed, served, port = transfer(traffic, link, send=5000, recv=7000, close=close)
    c, s = sessions_of(collector, mark, closed, port)
    (client_by, client_reset, client_state), (server_by, server_reset, server_state) = CLOSES[close]
    assert (c.closed_by, c.reset, c.oldstate) == (client_by, client_reset, STATES[client_state])
    assert (s.closed_by, s.reset, s.oldstate) == (server_by, server_reset, STATES[server_state])
    assert (c.tx_bytes, c.rx_bytes, s.tx_bytes, s.rx_bytes) == (5000, 7000, 7000, 5000)
    assert c.srtt_us > 0 and s.srtt_us > 0


def test_a_refused_connect_was_reset_by_the_peer_without_an_rtt(traffic, collector, link):
    pair, _ = link
    mark = collector.mark()
    client = traffic.client(netns=pair.client_ns, name="tl-client", host=pair.server_v4, port=9)  # nobody listens
    failed = client.events()[0]
    assert failed["error"] == "ECONNREFUSED"
    (c,) = collector.wait_for({failed["lport"]}, since=mark)
    assert (c.closed_by, c.reset, c.oldstate) == (abi.CLOSED_BY_PEER, abi.RESET_RECEIVED, 2)  # SYN_SENT
    assert (c.srtt_us, c.rtt_min_us, c.retransmits) == (0, 0, 0)


def test_without_the_reset_programs_a_reset_close_sends_is_still_known(traffic, link, monkeypatch):
    """Attaching tcp:tcp_send_reset and tcp:tcp_receive_reset is optional: without them the agent says
    so once and goes on; the reset close() sends after CLOSE is known from the close itself."""
    from otel_tcplife.errors import LibbpfError
    from otel_tcplife.probe import CoreProbe, ProbeSettings, core
    from otel_tcplife.session import Decoder

    attach = core.CoreProbe._attach

    def refuse_resets(self, obj, name):
        if name in core.RESET_PROGRAMS:
            raise LibbpfError(f"attaching {name}", 2)
        return attach(self, obj, name)

    monkeypatch.setattr(core.CoreProbe, "_attach", refuse_resets)
    with CoreProbe(ProbeSettings()) as probe:
        assert [w for w in probe.warnings if "only resets sent by close() are reported" in w] and len(
            [w for w in probe.warnings if "reset" in w]) == 2, probe.warnings
        closed, served, port = transfer(traffic, link, send=100, recv=100, close="rst-client")
        time.sleep(0.2)
        sessions = Decoder().decode(probe.drain())
    (c,) = [s for s in sessions if s.lport == closed["lport"] and s.rport == port]
    (s,) = [s for s in sessions if s.lport == port and s.rport == closed["lport"]]
    assert (c.closed_by, c.reset) == (abi.CLOSED_BY_LOCAL, abi.RESET_SENT)
    assert (s.closed_by, s.reset) == (abi.CLOSED_BY_NONE, abi.RESET_NONE)  # a received reset goes unseen


# --- the agent, end to end --------------------------------------------------------------------------

def agent_lines(agent, want: int, accept, timeout: float = 15) -> list[str]:
    """The agent's stdout lines that accept() takes, once there are `want` of them."""
    found, deadline = [], time.monotonic() + timeout
    while len(found) < want and time.monotonic() < deadline:
        line = agent.read_line(0.2)
        if line is not None and accept(line):
            found.append(line)
    return found


def test_the_agents_ndjson_carries_the_wire_facts(traffic, link, start_agent):
    agent = start_agent("--format", "ndjson", "-x")
    with shaped(link):
        closed, served, port = transfer(traffic, link, send=3 * MB)
    reset_closed, reset_served, reset_port = transfer(traffic, link, send=100, recv=100, close="rst-server")
    ports = {port, reset_port}
    records = [json.loads(line) for line in agent_lines(agent, 4, lambda line: ports & {
        json.loads(line)["network.local.port"], json.loads(line)["network.peer.port"]})]
    by_end = {(r["tcplife.role"], r["server.port"]): r for r in records}
    client, server = by_end["client", port], by_end["server", port]
    # the client closed last (see assert_matches_tcp_info)
    assert abs(client["tcplife.rtt_ms"] - closed["tcpi_rtt"] / 1000) <= 0.3 * closed["tcpi_rtt"] / 1000, client
    for record, info in ((client, closed), (server, served)):
        assert abs(record["tcplife.retransmits"] - info["tcpi_total_retrans"]) <= 2, (record, info)
        assert 0 < record["tcplife.rtt_min_ms"] <= info["tcpi_min_rtt"] / 1000
        assert "tcplife.reset" not in record
    assert client["tcplife.retransmits"] >= 50
    assert (client["tcplife.closed_by"], client["tcplife.close_state"]) == ("peer", "LAST_ACK")
    assert (server["tcplife.closed_by"], server["tcplife.close_state"]) == ("local", "FIN_WAIT2")
    reset_client, reset_server = by_end["client", reset_port], by_end["server", reset_port]
    assert (reset_client["tcplife.closed_by"], reset_client["tcplife.reset"]) == ("peer", "received")
    assert (reset_server["tcplife.closed_by"], reset_server["tcplife.reset"]) == ("local", "sent")
    assert reset_client["tcplife.close_state"] == reset_server["tcplife.close_state"] == "ESTABLISHED"
    assert reset_client["error.type"] == "ECONNRESET"


@pytest.mark.parametrize("style", [[], ["-s"]])
def test_the_agents_table_with_x_shows_them_after_ms(traffic, link, start_agent, style):
    agent = start_agent("-x", *style)
    separator = "," if style else None
    assert agent.header.split(separator)[-7:] == ["MS", "RTT_MS", "MINRTT_MS", "RETRANS", "CLOSED_BY", "RESET",
                                                 "OLDSTATE"]
    with shaped(link):
        closed, served, port = transfer(traffic, link, send=3 * MB)
    reset_closed, _, reset_port = transfer(traffic, link, send=100, recv=100, close="rst-client")
    ports = {str(closed["lport"]), str(reset_closed["lport"])}
    rows = [line.split(separator) for line in agent_lines(agent, 2, lambda line: line.split(separator)[-12] in ports)]
    by_port = {row[-12]: row for row in rows}  # by LPORT: the clients' rows
    rtt_ms, min_rtt_ms, retransmits, closed_by, reset, state = by_port[str(closed["lport"])][-6:]
    assert abs(float(rtt_ms) - closed["tcpi_rtt"] / 1000) <= 0.3 * closed["tcpi_rtt"] / 1000
    assert 0 < float(min_rtt_ms) <= closed["tcpi_min_rtt"] / 1000 + 0.0005  # shown to the µs
    assert abs(int(retransmits) - closed["tcpi_total_retrans"]) <= 2 and int(retransmits) >= 50
    assert (closed_by, reset, state) == ("peer", "-" if not style else "", "LAST_ACK")
    assert by_port[str(reset_closed["lport"])][-3:] == ["local", "sent", "ESTABLISHED"]
