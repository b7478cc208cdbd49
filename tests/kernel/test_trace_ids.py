"""One trace across both ends of a connection, from two agents that never talk.

Two network namespaces of this module's own, joined by a veth: a client in one, a server in the
other, and two agents, each filtered with -p to one end's process. The client's record and the
server's must share the trace id, the server span's parent must be the client span, and both must
be the ids trace_ids.py derives from the ISNs a packet capture on the link saw. The same through a
DNAT (nftables, in the client's namespace), which rewrites the address and port but not the ISNs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid

import pytest

from otel_tcplife.trace_ids import connection_ids

from ..support import TRAFFIC, Agent, NetnsPair, linked_namespaces, require_bpf

VIRTUAL_V4, VIRTUAL_PORT = "10.203.0.99", 80  # the DNAT's: the client connects here

# Run in the server's namespace: prints "ready", then the ISNs of the first connection to PORT (the
# client's SYN, the server's SYN-ACK) as JSON. AF_PACKET datagrams: IP packets, no link header.
CAPTURE = r"""
import json, socket, struct, sys
port = int(sys.argv[1])
sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0003))  # ETH_P_ALL: both directions
sock.settimeout(20)
print("ready", flush=True)
isns = {}
while len(isns) < 2:
    packet, (_, protocol, *_) = sock.recvfrom(65535)
    if protocol == 0x0800 and packet[9] == 6:  # IPv4, TCP
        tcp = packet[(packet[0] & 0x0F) * 4:]
    elif protocol == 0x86DD and packet[6] == 6:  # IPv6, TCP right after the fixed header
        tcp = packet[40:]
    else:
        continue
    sport, dport, seq = struct.unpack_from("!HHI", tcp)
    flags = tcp[13]
    if (flags & 0x12) == 0x02 and dport == port:  # SYN
        isns["client"] = seq
    elif (flags & 0x12) == 0x12 and sport == port:  # SYN-ACK
        isns["server"] = seq
print(json.dumps(isns), flush=True)
"""


@pytest.fixture(autouse=True)
def _needs_bpf():
    require_bpf()


@pytest.fixture(scope="module")
def link():
    with linked_namespaces("t", server_v4="10.203.0.1", client_v4="10.203.0.2", server_v6="fd00:203::1",
                           client_v6="fd00:203::2") as (pair, _, _):
        yield pair


def ndjson_of(agent: Agent, port: int, timeout: float = 10) -> dict:
    """The agent's first NDJSON row with `port` as its local or peer port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = agent.read_line(max(0.0, deadline - time.monotonic()))
        if line is None:
            break
        row = json.loads(line)
        if port in (row["network.local.port"], row["network.peer.port"]):
            return row
    raise AssertionError(f"no session with port {port}: {agent.stderr}")


def connect_across(traffic, pair: NetnsPair, *, family: str = "4", nat: bool = False, trace_ids: str = "derived"):
    """One connection from the client's namespace to the server's, each end seen by its own agent
    (-p its process). Returns (the client agent's row, the server agent's row, the captured ISNs)."""
    host = pair.server_v4 if family == "4" else pair.server_v6
    server, port = traffic.server(netns=pair.server_ns, name="tl-server", family=family, host=host,
                                  recv=1000, send=3000)
    # The client waits for a line on stdin before it becomes traffic.py (exec keeps its pid): its
    # agent is filtering on that pid before it connects.
    target = (VIRTUAL_V4, VIRTUAL_PORT) if nat else (host, port)
    client = subprocess.Popen(
        ["ip", "netns", "exec", pair.client_ns, "sh", "-c",
         f'read go && exec "{sys.executable}" "{TRAFFIC}" client --name tl-client --family {family} '
         f"--host {target[0]} --port {target[1]} --send 1000 --recv 3000"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    capture = subprocess.Popen(["ip", "netns", "exec", pair.server_ns, sys.executable, "-c", CAPTURE, str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    agents = []
    try:
        assert capture.stdout.readline().strip() == "ready", capture.stderr.read()
        for pid in (client.pid, server.pid):
            agents.append(Agent("--format", "ndjson", "-p", str(pid), "--trace-ids", trace_ids))
        out, err = client.communicate("go\n", timeout=30)
        assert client.returncode == 0, err
        server.events()
        captured, capture_err = capture.communicate(timeout=30)
        assert capture.returncode == 0, capture_err
        isns = json.loads(captured)
        return ndjson_of(agents[0], VIRTUAL_PORT if nat else port), ndjson_of(agents[1], port), isns
    finally:
        for process in (client, capture):
            if process.poll() is None:
                process.kill()
                process.communicate()
        for agent in agents:
            agent.kill()


@pytest.fixture
def nat(link):
    """The client's namespace sends VIRTUAL_V4:VIRTUAL_PORT to the server's address and the port
    set_port() names (nftables DNAT on output)."""
    def set_port(port: int) -> None:
        rules = (f"table ip tl_nat {{\n  chain output {{\n    type nat hook output priority -100;\n"
                 f"    ip daddr {VIRTUAL_V4} tcp dport {VIRTUAL_PORT} dnat to {link.server_v4}:{port}\n  }}\n}}\n")
        done = subprocess.run(["ip", "netns", "exec", link.client_ns, "nft", "-f", "-"], input=rules, text=True,
                              capture_output=True)
        assert done.returncode == 0, done.stderr
    yield set_port
    subprocess.run(["ip", "netns", "exec", link.client_ns, "nft", "delete", "table", "ip", "tl_nat"],
                   capture_output=True)


def assert_one_trace(client: dict, server: dict, isns: dict) -> None:
    ids = connection_ids(isns["client"], isns["server"])
    assert client["trace_id"] == server["trace_id"] == ids.trace_id.hex()
    assert client["span_id"] == ids.client_span_id.hex() and "parent_span_id" not in client
    assert server["span_id"] == ids.server_span_id.hex()
    assert server["parent_span_id"] == client["span_id"]
    assert (client["tcplife.bytes_sent"], server["tcplife.bytes_received"]) == (1000, 1000)


@pytest.mark.parametrize("family", ["4", "6"])
def test_two_agents_put_both_ends_of_a_connection_in_one_trace(traffic, link, family):
    client, server, isns = connect_across(traffic, link, family=family)
    assert client["network.peer.address"] == (link.server_v4 if family == "4" else link.server_v6)
    assert_one_trace(client, server, isns)


def test_one_trace_through_a_dnat(traffic, link, nat):
    # The server's port is only known once it listens: connect_across starts it, so the DNAT rule
    # names a port fixed here, which the server then binds.
    port = 18000 + uuid.uuid4().int % 1000
    nat(port)
    original = traffic.server

    def server_on_port(**options):
        return original(port=port, **options)

    traffic.server = server_on_port
    try:
        client, server, isns = connect_across(traffic, link, nat=True)
    finally:
        traffic.server = original
    # Each end sees other addresses (the client the virtual one), and the same connection.
    assert (client["network.peer.address"], client["network.peer.port"]) == (VIRTUAL_V4, VIRTUAL_PORT)
    assert (server["network.local.port"], server["network.peer.address"]) == (port, link.client_v4)
    assert_one_trace(client, server, isns)


def test_random_trace_ids_when_asked(traffic, link):
    client, server, _ = connect_across(traffic, link, trace_ids="random")
    assert client["trace_id"] != server["trace_id"]
    assert "parent_span_id" not in client and "parent_span_id" not in server


def test_a_refused_connect_is_a_root_span_of_its_own(traffic):
    agent = Agent("--format", "ndjson", "-D", "1")  # nothing listens on port 1
    try:
        for _ in range(2):
            traffic.client(name="tl-client", port=1).events()
        rows = [ndjson_of(agent, 1), ndjson_of(agent, 1)]
    finally:
        agent.kill()
    assert all(row["error.type"] == "ECONNREFUSED" and "parent_span_id" not in row for row in rows)
    assert rows[0]["trace_id"] != rows[1]["trace_id"] and rows[0]["span_id"] != rows[1]["span_id"]
