"""Fixtures shared by every test directory."""

from __future__ import annotations

import subprocess
import uuid

import pytest

from .support import Agent, NetnsPair, Traffic, ip


@pytest.fixture
def traffic():
    t = Traffic()
    yield t
    t.close()


@pytest.fixture(scope="session")
def netns_pair():
    tag = uuid.uuid4().hex[:6]
    pair = NetnsPair(server_ns=f"tl-srv-{tag}", client_ns=f"tl-cli-{tag}")
    try:
        ip("netns", "add", pair.server_ns)
        ip("netns", "add", pair.client_ns)
        ip("link", "add", f"tls{tag}", "netns", pair.server_ns, "type", "veth",
            "peer", "name", f"tlc{tag}", "netns", pair.client_ns)
        for ns, dev, v4, v6 in ((pair.server_ns, f"tls{tag}", pair.server_v4, pair.server_v6),
                                (pair.client_ns, f"tlc{tag}", pair.client_v4, pair.client_v6)):
            ip("-n", ns, "link", "set", "lo", "up")
            ip("-n", ns, "addr", "add", f"{v4}/24", "dev", dev)
            ip("-n", ns, "addr", "add", f"{v6}/64", "dev", dev, "nodad")
            ip("-n", ns, "link", "set", dev, "up")
        yield pair
    finally:
        for ns in (pair.server_ns, pair.client_ns):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.fixture
def start_agent():
    """Starts agents (see support.Agent); kills any still running at the end."""
    agents = []

    def start(*args: str, **options) -> Agent:
        agent = Agent(*args, **options)
        agents.append(agent)
        return agent

    yield start
    for agent in agents:
        agent.kill()
