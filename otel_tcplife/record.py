"""SessionRecord: a closed session as OpenTelemetry sees it (the record contract).

Built once per session, then encoded by every output (NDJSON, OTLP-JSON, OTLP
protobuf). Attribute names follow the semantic conventions; see
README.md "Record contract".
"""

from __future__ import annotations

import errno
import os
import time
from typing import NamedTuple, Sequence

from . import abi
from .clock import WallClock
from .enrich import ProcessNames
from .session import Session

EVENT_NAME = "tcplife.session"
SEVERITY_INFO = 9
# Span kinds (opentelemetry.proto.trace.v1.Span.SpanKind)
KIND_INTERNAL, KIND_SERVER, KIND_CLIENT = 1, 2, 3

# role -> (span name, span kind, tcplife.role)
ROLES = {
    abi.ROLE_CLIENT: ("tcp connect", KIND_CLIENT, "client"),
    abi.ROLE_SERVER: ("tcp accept", KIND_SERVER, "server"),
    abi.ROLE_UNKNOWN: ("tcp session", KIND_INTERNAL, "unknown"),
}


class SessionRecord(NamedTuple):
    trace_id: bytes  # 16 random bytes: every session is a root span
    span_id: bytes  # 8 random bytes
    start_ns: int  # birth, Unix ns
    end_ns: int  # close, Unix ns
    observed_ns: int  # when the agent read it, Unix ns
    name: str  # span name
    kind: int  # span kind
    body: str  # log body, one display line
    error_type: str  # errno name for failed connects and resets, else ""
    attributes: tuple[tuple[str, object], ...]


def format_bytes(n: int) -> str:
    if n < 1024:
        return f"{n}B"
    for unit in ("KiB", "MiB", "GiB"):
        n /= 1024
        if n < 1024 or unit == "GiB":
            return f"{n:.1f}{unit}"
    raise AssertionError("unreachable")


def endpoint(address: str, port: int, family: int) -> str:
    return f"[{address}]:{port}" if family == 6 else f"{address}:{port}"


class RecordBuilder:
    def __init__(self, clock: WallClock | None = None, names: ProcessNames | None = None) -> None:
        self.clock = clock or WallClock()
        self.names = names or ProcessNames()

    def build(self, sessions: Sequence[Session]) -> list[SessionRecord]:
        offset = self.clock.offset()
        observed = time.time_ns()
        ids = os.urandom(24 * len(sessions))
        executable_name = self.names.executable_name
        records = []
        for i, s in enumerate(sessions):
            name, kind, role = ROLES.get(s.role, ROLES[abi.ROLE_UNKNOWN])
            duration_ms = (s.close_ns - s.birth_ns) / 1e6
            local, peer = (s.laddr, s.lport), (s.raddr, s.rport)
            attributes: list[tuple[str, object]] = [
                ("network.transport", "tcp"),
                ("network.type", "ipv4" if s.family == 4 else "ipv6"),
                ("network.local.address", s.laddr),
                ("network.local.port", s.lport),
                ("network.peer.address", s.raddr),
                ("network.peer.port", s.rport),
            ]
            if kind != KIND_INTERNAL:
                client, server = (local, peer) if kind == KIND_CLIENT else (peer, local)
                attributes += [
                    ("client.address", client[0]),
                    ("client.port", client[1]),
                    ("server.address", server[0]),
                    ("server.port", server[1]),
                ]
            else:
                client, server = local, peer
            attributes += [
                ("process.pid", s.pid),
                ("process.executable.name", executable_name(s.pid, s.comm)),
                ("thread.name", s.comm),
                ("tcplife.role", role),
                ("tcplife.bytes_sent", s.tx_bytes),
                ("tcplife.bytes_received", s.rx_bytes),
                ("tcplife.duration_ms", duration_ms),
            ]
            error_type = errno.errorcode.get(s.error, str(s.error)) if s.error else ""
            if error_type:
                attributes.append(("error.type", error_type))
            body = (f"{s.comm} {endpoint(*client, s.family)} -> {endpoint(*server, s.family)} "
                    f"tx={format_bytes(s.tx_bytes)} rx={format_bytes(s.rx_bytes)} {duration_ms:.2f}ms")
            if error_type:
                body += f" {error_type}"
            records.append(SessionRecord(
                ids[24 * i: 24 * i + 16], ids[24 * i + 16: 24 * i + 24],
                s.birth_ns + offset, s.close_ns + offset, observed,
                name, kind, body, error_type, tuple(attributes),
            ))
        return records
