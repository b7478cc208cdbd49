"""The session record contract, in one table: what the span and log record of a closed TCP session hold.

SESSION_ATTRIBUTES lists every attribute a record can carry, in the order every output writes
them: its key, its type, where its value comes from, and when a record has it. The outputs are
made from it, not written out beside it:
- record.RecordBuilder reads it as it stands: the readable reference, from decoded Sessions;
- output/ndjson.py, output/otlp_json.py and output/otlp_frames.py generate their per-session loops
  from it when they load (codegen.py), straight from the probe's raw events;
- output/journald.py names its fields by Attribute.journald_field.
Tests check every output against RecordBuilder's records.

Sources name Session fields (session.py), the readable form of an event; the generated loops read
the same values from the raw events (session.event_field says which event field each one is).
The record's other parts (span name and kind, log body, event name) follow the table.
"""

from __future__ import annotations

import errno
import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, NamedTuple, Union

from . import abi

if TYPE_CHECKING:
    from .enrich import ProcessNames
    from .session import Session


class Type(NamedTuple):
    """An attribute value's type: OTLP's AnyValue member, and the Python type of the value in a record."""

    name: str
    python: type


STRING = Type("string", str)
INT = Type("int", int)  # int64 in OTLP: values beyond its range are refused, as protobuf does
DOUBLE = Type("double", float)
BOOL = Type("bool", bool)  # only from a Lookup or a Constant: the outputs write its cached text


# --- where a value comes from ----------------------------------------------------------------------

@dataclass(frozen=True)
class Constant:
    """The same value in every record."""

    value: object

    def value_of(self, session: Session, names: ProcessNames) -> object:
        return self.value


@dataclass(frozen=True)
class Field:
    """A Session field as it is: addresses and the comm as text, the other fields as numbers."""

    name: str

    def value_of(self, session: Session, names: ProcessNames) -> object:
        return getattr(session, self.name)


@dataclass(frozen=True)
class Lookup:
    """function(a number field): text from a number with few values, made once per value in the fast paths
    (for a one-byte field, for all its 256 values at once: the function takes any value of the field)."""

    field: str
    function: Callable[[int], str]

    def value_of(self, session: Session, names: ProcessNames) -> object:
        return self.function(getattr(session, self.field))


@dataclass(frozen=True)
class Computed:
    """Arithmetic on number fields: a Python expression over Session field names, written inline in
    the fast paths; `name` names its variable there."""

    name: str
    expression: str

    def value_of(self, session: Session, names: ProcessNames) -> object:
        function, fields = _function(self.expression)
        return function(*[getattr(session, field) for field in fields])


@functools.cache
def _function(expression: str) -> tuple[Callable, tuple[str, ...]]:
    """A Computed expression as a function of the Session fields it reads, and their names."""
    fields = compile(expression, "<contract>", "eval").co_names
    return eval(f"lambda {', '.join(fields)}: {expression}", {}), fields


# The facts of the process that owns the socket, from its pid and comm (both as the event gives them).
PROCESS_FACTS: dict[str, Callable[[int, str, ProcessNames], object]] = {
    "pid": lambda pid, comm, names: pid,
    "comm": lambda pid, comm, names: comm,
    "executable_name": lambda pid, comm, names: names.executable_name(pid, comm),
}


@dataclass(frozen=True)
class ProcessFact:
    """A fact of PROCESS_FACTS. The fast paths make the attributes of a run of them once per (pid, comm)."""

    fact: str

    def value_of(self, session: Session, names: ProcessNames) -> object:
        return PROCESS_FACTS[self.fact](session.pid, session.comm, names)


Source = Union[Constant, Field, Lookup, Computed, ProcessFact]


@dataclass(frozen=True)
class ByRole:
    """A source per role of the session's socket: records of the roles without one lack the attribute.
    'unknown' is every role but client and server."""

    client: Source | None = None
    server: Source | None = None
    unknown: Source | None = None


def role_name(role: int) -> str:
    """The ByRole member for a session's role (abi.ROLE_*): client, server, or unknown for any other."""
    return "client" if role == abi.ROLE_CLIENT else "server" if role == abi.ROLE_SERVER else "unknown"


# --- the table -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Attribute:
    """One attribute of the session record: its key, the type of its value, where the value comes
    from (for each role, with ByRole), and in which records it is."""

    key: str
    type: Type
    source: Source | ByRole
    only_if: str | None = None  # a Session field: in a record only when that field is not 0
    extended: bool = False  # only in the extended mode's records

    def source_for(self, role: int) -> Source | None:
        """Where the value comes from in a record of this role (abi.ROLE_*); None: not in such records."""
        if isinstance(self.source, ByRole):
            return getattr(self.source, role_name(role))
        return self.source

    @property
    def journald_field(self) -> str:
        """The journald field name: upper case, '.' -> '_' (journald allows A-Z, 0-9 and '_' only)."""
        return self.key.upper().replace(".", "_")


def network_type(family: int) -> str:
    """ipv4, ipv6 (the number for any other: the probe reports no other)."""
    return {4: "ipv4", 6: "ipv6"}.get(family, str(family))


def errno_name(error: int) -> str:
    """The errno's symbol (ECONNREFUSED), or its number when Python knows no name for it."""
    return errno.errorcode.get(error, str(error))


# TCP states by number (include/net/tcp_states.h), named as the classic tcpstates tool names them.
TCP_STATES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2", 6: "TIME_WAIT",
              7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING", 12: "NEW_SYN_RECV"}


def tcp_state_name(state: int) -> str:
    """A TCP state's name (FIN_WAIT1), or its number for one we do not know."""
    return TCP_STATES.get(state, str(state))


def closer_name(closed_by: int) -> str:
    """abi.CLOSED_BY_* as text: local, peer (the number for any other)."""
    return {abi.CLOSED_BY_LOCAL: "local", abi.CLOSED_BY_PEER: "peer"}.get(closed_by, str(closed_by))


def reset_name(reset: int) -> str:
    """abi.RESET_* as text: sent, received (the number for any other)."""
    return {abi.RESET_SENT: "sent", abi.RESET_RECEIVED: "received"}.get(reset, str(reset))


def start_unknown(flags: int) -> bool:
    """abi.EVENT_* bits as tcplife.start_unknown's value (present only when the bit is set)."""
    return bool(flags & abi.EVENT_START_UNKNOWN)


DURATION_MS = Computed("duration_ms", "(close_ns - birth_ns) / 1e6")
ERROR_NAME = Lookup("error", errno_name)

# The attributes of a session record (both its span and its log record), in output order.
# Keys follow the OpenTelemetry semantic conventions; the project's own are under tcplife.
SESSION_ATTRIBUTES: tuple[Attribute, ...] = (
    Attribute("network.transport", STRING, Constant("tcp")),
    Attribute("network.type", STRING, Lookup("family", network_type)),
    Attribute("network.local.address", STRING, Field("laddr")),
    Attribute("network.local.port", INT, Field("lport")),
    Attribute("network.peer.address", STRING, Field("raddr")),
    Attribute("network.peer.port", INT, Field("rport")),
    Attribute("client.address", STRING, ByRole(client=Field("laddr"), server=Field("raddr"))),
    Attribute("client.port", INT, ByRole(client=Field("lport"), server=Field("rport"))),
    Attribute("server.address", STRING, ByRole(client=Field("raddr"), server=Field("laddr"))),
    Attribute("server.port", INT, ByRole(client=Field("rport"), server=Field("lport"))),
    Attribute("process.pid", INT, ProcessFact("pid")),
    Attribute("process.executable.name", STRING, ProcessFact("executable_name")),
    Attribute("thread.name", STRING, ProcessFact("comm")),
    Attribute("tcplife.role", STRING,
              ByRole(client=Constant("client"), server=Constant("server"), unknown=Constant("unknown"))),
    Attribute("tcplife.bytes_sent", INT, Field("tx_bytes")),  # payload bytes acked by the peer
    Attribute("tcplife.bytes_received", INT, Field("rx_bytes")),  # payload bytes received
    Attribute("tcplife.duration_ms", DOUBLE, DURATION_MS),
    # A session open before the agent's first start (found by the socket iterator): its start, and so
    # its duration, count from when the agent found it. The only flag an event has (abi.EVENT_*).
    Attribute("tcplife.start_unknown", BOOL, Lookup("flags", start_unknown), only_if="flags"),
    # What happened on the wire, as the kernel knew it at close (-x / --extended: writing them in
    # every record costs more than the outputs' CPU budget). No semantic convention has these
    # (network.connection.state is the current state, which at close is always "close").
    Attribute("tcplife.retransmits", INT, Field("retransmits"), extended=True),
    Attribute("tcplife.close_state", STRING, Lookup("oldstate", tcp_state_name), extended=True),
    Attribute("tcplife.closed_by", STRING, Lookup("closed_by", closer_name), only_if="closed_by", extended=True),
    Attribute("tcplife.reset", STRING, Lookup("reset", reset_name), only_if="reset", extended=True),
    Attribute("tcplife.rtt_ms", DOUBLE, Computed("rtt_ms", "srtt_us / 1e3"), only_if="srtt_us", extended=True),
    Attribute("tcplife.rtt_min_ms", DOUBLE, Computed("rtt_min_ms", "rtt_min_us / 1e3"), only_if="rtt_min_us",
              extended=True),
    Attribute("error.type", STRING, ERROR_NAME, only_if="error"),  # failed connects and resets
)


def attributes(extended: bool = False) -> tuple[Attribute, ...]:
    """SESSION_ATTRIBUTES as the outputs write them: in the default mode, without the extended ones.
    (Read when an output is made, so a test may change the table first.)"""
    return tuple(a for a in SESSION_ATTRIBUTES if extended or not a.extended)


# --- the record's other parts ----------------------------------------------------------------------

EVENT_NAME = "tcplife.session"  # the log record's event name
SEVERITY_INFO = 9  # the log record's severity number
# Span kinds (opentelemetry.proto.trace.v1.Span.SpanKind)
KIND_INTERNAL, KIND_SERVER, KIND_CLIENT = 1, 2, 3
# role -> (span name, span kind); any other role is ROLE_UNKNOWN's
SPANS = {
    abi.ROLE_CLIENT: ("tcp connect", KIND_CLIENT),
    abi.ROLE_SERVER: ("tcp accept", KIND_SERVER),
    abi.ROLE_UNKNOWN: ("tcp session", KIND_INTERNAL),
}
