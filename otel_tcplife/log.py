"""The agent's one way to write to stderr: every line starts with "otel-tcplife: ".

    otel-tcplife: error: ...       the agent stops (cli.main)
    otel-tcplife: warning: ...     it goes on, doing less
    otel-tcplife: <name>: ...      a component's report (an exporter, a spool, libbpf)
    {"sessions_observed":...}      the stats line: JSON alone on its line, for machines
"""

from __future__ import annotations

import sys
from collections.abc import Callable

PROG = "otel-tcplife"


def line(text: str) -> None:
    sys.stderr.write(f"{PROG}: {text}\n")
    sys.stderr.flush()


def error(message: str) -> None:
    line(f"error: {message}")


def warn(message: str) -> None:
    line(f"warning: {message}")


def named(name: str) -> Callable[[str], None]:
    """A log function for one component: lines "otel-tcplife: <name>: <message>"."""
    return lambda message: line(f"{name}: {message}")


def stats(json_line: str) -> None:
    sys.stderr.write(json_line)
    sys.stderr.flush()
