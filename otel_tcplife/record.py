"""SessionRecord: a closed session as OpenTelemetry sees it (the record contract).

RecordBuilder is the contract in readable form, from decoded Sessions. The
outputs write the same records straight from the probe's events, through
f-strings and precomputed bytes (NDJSON, OTLP-JSON, OTLP protobuf: per
session, building the record first would cost as much as encoding it); tests
check every output against RecordBuilder's records. Attribute names follow the semantic conventions;
see README.md "Record contract".
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
    session: Session
    trace_id: bytes  # 16 random bytes: every session is a root span
    span_id: bytes  # 8 random bytes
    start_ns: int  # birth, Unix ns
    end_ns: int  # close, Unix ns
    observed_ns: int  # when the agent read it, Unix ns
    name: str  # span name
    kind: int  # span kind
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


def log_body(r: SessionRecord) -> str:
    """The log record's one display line: `comm client -> server tx= rx= ms [error]`."""
    s = r.session
    local, peer = (s.laddr, s.lport, s.family), (s.raddr, s.rport, s.family)
    client, server = (peer, local) if r.kind == KIND_SERVER else (local, peer)
    body = (f"{s.comm} {endpoint(*client)} -> {endpoint(*server)} "
            f"tx={format_bytes(s.tx_bytes)} rx={format_bytes(s.rx_bytes)} {(s.close_ns - s.birth_ns) / 1e6:.2f}ms")
    return f"{body} {r.error_type}" if r.error_type else body


# log_body for the outputs' hot paths, from a session's parts (the client end first).
_SMALL_BYTES = tuple(format_bytes(n) for n in range(1024))  # "0B" .. "1023B", the usual counts


def body_text(family: int, comm: str, client: str, client_port: int | str, server: str, server_port: int | str,
              tx: int, rx: int, duration_ms: float) -> str:
    """log_body's line without its error suffix; comm as given (OTLP/JSON passes it escaped), ports
    as numbers or their text."""
    sent = _SMALL_BYTES[tx] if 0 <= tx < 1024 else format_bytes(tx)
    received = _SMALL_BYTES[rx] if 0 <= rx < 1024 else format_bytes(rx)
    if family == 6:
        return f"{comm} [{client}]:{client_port} -> [{server}]:{server_port} tx={sent} rx={received} {duration_ms:.2f}ms"
    return f"{comm} {client}:{client_port} -> {server}:{server_port} tx={sent} rx={received} {duration_ms:.2f}ms"


TRANSPORT = ("network.transport", "tcp")
NETWORK_TYPE = {4: ("network.type", "ipv4"), 6: ("network.type", "ipv6")}
ROLE_ATTRIBUTE = {kind: ("tcplife.role", role) for name, kind, role in ROLES.values()}
PROCESS_CACHE_LIMIT = 8192


class RecordBuilder:
    def __init__(self, clock: WallClock | None = None, names: ProcessNames | None = None) -> None:
        self.clock = clock or WallClock()
        self.names = names or ProcessNames()
        self._process: dict[tuple[int, str], tuple[tuple[str, object], ...]] = {}

    def _process_attributes(self, pid: int, comm: str) -> tuple[tuple[str, object], ...]:
        key = (pid, comm)
        attributes = self._process.get(key)
        if attributes is None:
            if len(self._process) >= PROCESS_CACHE_LIMIT:
                self._process.clear()
            attributes = self._process[key] = (
                ("process.pid", pid),
                ("process.executable.name", self.names.executable_name(pid, comm)),
                ("thread.name", comm),
            )
        return attributes

    def build(self, sessions: Sequence[Session], ids: bytes | None = None,
              offset: int | None = None, observed: int | None = None) -> list[SessionRecord]:
        """Records for sessions; ids (24 random bytes per session: trace id, span id),
        the clock offset and the observed time may be given, so other outputs can share them."""
        offset = self.clock.offset() if offset is None else offset
        observed = time.time_ns() if observed is None else observed
        ids = os.urandom(24 * len(sessions)) if ids is None else ids
        process_attributes = self._process_attributes
        roles = ROLES
        records = []
        for i, s in enumerate(sessions):
            name, kind, _ = roles.get(s.role) or roles[abi.ROLE_UNKNOWN]
            la, lp, ra, rp = s.laddr, s.lport, s.raddr, s.rport
            network = (TRANSPORT, NETWORK_TYPE[s.family], ("network.local.address", la), ("network.local.port", lp),
                       ("network.peer.address", ra), ("network.peer.port", rp))
            if kind == KIND_CLIENT:
                network += (("client.address", la), ("client.port", lp), ("server.address", ra), ("server.port", rp))
            elif kind == KIND_SERVER:
                network += (("client.address", ra), ("client.port", rp), ("server.address", la), ("server.port", lp))
            attributes = network + process_attributes(s.pid, s.comm) + (
                ROLE_ATTRIBUTE[kind],
                ("tcplife.bytes_sent", s.tx_bytes),
                ("tcplife.bytes_received", s.rx_bytes),
                ("tcplife.duration_ms", (s.close_ns - s.birth_ns) / 1e6),
            )
            error_type = ""
            if s.error:
                error_type = errno.errorcode.get(s.error, str(s.error))
                attributes += (("error.type", error_type),)
            j = 24 * i
            records.append(SessionRecord(
                s, ids[j:j + 16], ids[j + 16:j + 24], s.birth_ns + offset, s.close_ns + offset, observed,
                name, kind, error_type, attributes,
            ))
        return records
