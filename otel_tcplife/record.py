"""SessionRecord: a closed session as OpenTelemetry sees it; RecordBuilder makes it from the contract.

RecordBuilder reads contract.SESSION_ATTRIBUTES as it stands, from decoded Sessions: the record
contract in readable form. The outputs write the same records straight from the probe's events,
in code generated from the same table (NDJSON, OTLP/JSON, OTLP protobuf: per session, building the
record first would cost as much as encoding it); tests check every output against RecordBuilder's
records.
"""

from __future__ import annotations

import time
from typing import NamedTuple, Sequence

from . import abi, contract
from .clock import WallClock
from .contract import KIND_SERVER, SPANS, errno_name
from .enrich import ProcessNames
from .session import Session, random_span_ids


class SessionRecord(NamedTuple):
    session: Session
    trace_id: bytes  # 16 bytes: derived from the connection's ISNs (trace_ids.py), or random
    span_id: bytes  # 8 bytes
    parent_span_id: bytes  # 8 bytes: a server span's with derived ids (the client span's); b"": a root span
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


# log_body for the outputs' generated loops (a call per record would cost about as much as the line).
_SMALL_BYTES = tuple(format_bytes(n) for n in range(1024))  # "0B" .. "1023B", the usual counts
BODY_NAMESPACE = {"SMALL_BYTES": _SMALL_BYTES, "format_bytes": format_bytes}  # what body_code's lines use


def body_code(comm: str, client: str, client_port: str, server: str, server_port: str, duration_ms: str) -> list[str]:
    """Lines of generated code setting `body` to log_body's line without its error suffix, from
    expressions of its parts (the client end first; the process name as the output writes it: OTLP/JSON
    has it escaped; ports as their text) and the event's family, tx_bytes and rx_bytes."""
    def line(bracket: bool) -> str:
        o, c = ("[", "]") if bracket else ("", "")
        return (f'f"{{{comm}}} {o}{{{client}}}{c}:{{{client_port}}} -> {o}{{{server}}}{c}:{{{server_port}}} '
                f'tx={{sent}} rx={{received}} {{{duration_ms}:.2f}}ms"')
    return ["sent = SMALL_BYTES[tx_bytes] if tx_bytes < 1024 else format_bytes(tx_bytes)",
            "received = SMALL_BYTES[rx_bytes] if rx_bytes < 1024 else format_bytes(rx_bytes)",
            f"body = {line(True)} if family == 6 else {line(False)}"]


class RecordBuilder:
    def __init__(self, clock: WallClock | None = None, names: ProcessNames | None = None,
                 attributes: tuple[contract.Attribute, ...] | None = None) -> None:
        self.clock = clock or WallClock()
        self.names = names or ProcessNames()
        self.attributes = contract.attributes() if attributes is None else attributes
        # Per role: the attributes its records can have, with their sources for it.
        self._by_role = {contract.role_name(role): [(a, a.source_for(role)) for a in self.attributes
                                                    if a.source_for(role) is not None]
                         for role in (abi.ROLE_CLIENT, abi.ROLE_SERVER, abi.ROLE_UNKNOWN)}

    def attributes_of(self, s: Session) -> tuple[tuple[str, object], ...]:
        """The session's (key, value) pairs: the table's attributes that its record has, in order,
        each value of its attribute's type."""
        pairs = []
        for attribute, source in self._by_role[contract.role_name(s.role)]:
            if attribute.only_if is None or getattr(s, attribute.only_if):
                pairs.append((attribute.key, attribute.type.python(source.value_of(s, self.names))))
        return tuple(pairs)

    def build(self, sessions: Sequence[Session], offset: int | None = None,
              observed: int | None = None) -> list[SessionRecord]:
        """Records for sessions, with their span ids (random ones for a session without); the clock
        offset and the observed time may be given, so other outputs can share them."""
        offset = self.clock.offset() if offset is None else offset
        observed = time.time_ns() if observed is None else observed
        records = []
        for s in sessions:
            name, kind = SPANS.get(s.role) or SPANS[abi.ROLE_UNKNOWN]
            error_type = errno_name(s.error) if s.error else ""
            ids = s.span_ids or random_span_ids()
            parent = ids[24:32] if s.role == abi.ROLE_SERVER and ids[24:32] != abi.NO_PARENT else b""
            records.append(SessionRecord(
                s, ids[:16], ids[16:24], parent, s.birth_ns + offset, s.close_ns + offset, observed,
                name, kind, error_type, self.attributes_of(s),
            ))
        return records
