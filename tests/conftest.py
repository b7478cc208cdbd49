"""Fixtures shared by every test directory."""

from __future__ import annotations


import pytest

from .support import Agent, Traffic, linked_namespaces


@pytest.fixture
def traffic():
    t = Traffic()
    yield t
    t.close()


@pytest.fixture(scope="session")
def netns_pair():
    with linked_namespaces("") as (pair, _, _):
        yield pair


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
