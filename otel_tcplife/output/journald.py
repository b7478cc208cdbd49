"""--format journald: every session one journal entry with typed fields, sent over journald's native
protocol (journal_native.py), not through stdout.

An entry's fields, in this order:
    MESSAGE             the log body, as record.log_body: `comm client -> server tx= rx= ms [error]`
    PRIORITY            6 (info), the log record's severity
    SYSLOG_IDENTIFIER   otel-tcplife (`journalctl -t otel-tcplife`)
    OTEL_EVENT_NAME     tcplife.session, the log record's event name (NDJSON's otel.event.name). journald
                        has no field of its own for it. It tells session entries from the agent's own
                        stderr lines, which under systemd carry the same SYSLOG_IDENTIFIER, and lets a
                        forwarder give the event name back to an OTLP log record.
    TRACE_ID, SPAN_ID   hex, the same ids as the other outputs give the session
    PARENT_SPAN_ID      hex, a server span's parent: the client span (ids derived from the ISNs)
    then every attribute of the record contract (contract.SESSION_ATTRIBUTES) the record has, in the
    table's order, named by Attribute.journald_field (NETWORK_PEER_ADDRESS, TCPLIFE_BYTES_SENT,
    PROCESS_PID, ...), and last the Resource's attributes named the same way (SERVICE_NAME, HOST_NAME).
Values are text, as journald keeps them: numbers in decimal, doubles as NDJSON writes them. The session's
close time is the entry's own timestamp (when journald got it: a poll interval later at most, unless
the agent is behind); its start is that less TCPLIFE_DURATION_MS.

As NDJSON's, the loop that writes the entries is generated from the contract's table when this module
loads (codegen.py): one f-string per role straight from the probe's event tuples. Values that may hold
a newline (the process names, lookups) come from caches of their whole field, in text or binary form
(journal_native.field), made once per value.
"""

from __future__ import annotations

import functools
from typing import Iterable, Iterator, Mapping, Sequence

from .. import abi, contract, session
from ..abi import address_text, comm_text
from ..caches import Formatted, port_cache
from ..codegen import (
    ROLES, Generated, GeneratedEncoder, Item, Values, event_expression, fstring, generate, group_chunks,
    identifier, indent, literal, local_name, loop_source, role_items, role_switch,
)
from ..contract import DOUBLE, DURATION_MS, ERROR_NAME, PROCESS_FACTS, Computed, Constant, Field, Lookup
from ..enrich import ProcessNames
from ..record import BODY_NAMESPACE, body_code
from .journal_native import ENCODING, FIELD_NAME, attribute_fields, field

PRIORITY_INFO = 6
SYSLOG_IDENTIFIER = "otel-tcplife"
CHUNK_ENTRIES = 128  # entries made at a time: the unit the sender's queue takes


def value_text(type: contract.Type, value: object) -> str:
    """A value made once (constant, lookup, process fact) as its field's text, of the attribute's type."""
    value = type.python(value)
    if type is contract.BOOL:
        return "true" if value else "false"
    return repr(value) if type is DOUBLE else str(value)


def journald_field(attribute: contract.Attribute) -> str:
    """The attribute's field name; an attribute whose name journald would ignore is refused."""
    name = attribute.journald_field
    if not FIELD_NAME.fullmatch(name):
        raise ValueError(f"{attribute.key}: {name!r} is not a journald field name (A-Z, 0-9 and '_', "
                         f"first a letter, at most 64)")
    return name


class JournaldValues(Values):
    """Values for journald entries: addresses, the comm and ports as their text, numbers as they are;
    other strings as their whole field (they may hold a newline)."""

    def text(self, source: Field) -> str:
        """A local holding the text of an address, the comm or a 16-bit number (a port), once per event."""
        name = source.name
        if name in session.ADDRESS_FIELDS:
            for family in (4, 6):
                self.cache(f"address_text_v{family}", lambda names, family=family: Formatted(
                    lambda raw: address_text(family, raw)))
            texts = self.define("address texts", "address_text", "address_text_v4 if family == 4 else address_text_v6")
            expression = f"{texts}[{session.event_field(name)}]"
        elif name == session.COMM_FIELD:
            expression = f"{self.cache('comm_text', lambda names: Formatted(comm_text))}[comm]"
        else:  # a port: a cache of all 65,536 costs less than formatting each
            expression = f"{self.cache('port_text', lambda names: port_cache())}[{session.event_field(name)}]"
        return self.define(source, local_name(source), expression)

    def number(self, source, inline: bool) -> str:
        """An expression of a number: the event's field, or a Computed one (a local unless inline)."""
        if isinstance(source, Field):
            return session.event_field(source.name)
        expression = event_expression(source.expression)
        return f"({expression})" if inline else self.define(source, local_name(source), expression)

    def field_cache(self, attribute: contract.Attribute, make_text) -> str:
        """A cache of the attribute's whole field by raw value, text = make_text(raw value): its name."""
        name = journald_field(attribute)
        return self.cache(f"{identifier(attribute.key)}_fields",
                          lambda names: Formatted(lambda raw: field(name, value_text(attribute.type, make_text(raw)))),
                          what=("field", attribute.key))

    def process_run(self, item: Item, inline: bool) -> str:
        """An expression of a run of process facts as their fields' text (made once per (pid, comm))."""
        facts = [(journald_field(a), a.type, PROCESS_FACTS[source.fact])
                 for a, source in zip(item.attributes, item.sources)]

        def make(names):
            def text(key: tuple[int, bytes]) -> str:
                pid, comm = key[0], comm_text(key[1])
                return "".join([field(name, value_text(type, fact(pid, comm, names))) for name, type, fact in facts])
            return Formatted(text)

        expression = f"{self.cache('process_fields', make, what=item)}[pid, comm]"
        return expression if inline else self.define(item, "process", expression)

    def part(self, attribute: contract.Attribute, source, inline: bool = False) -> str:
        """The attribute's field as an f-string template part. inline: its value computed there (for an
        attribute only some records have: its value may not be defined for the others)."""
        name = journald_field(attribute)
        if isinstance(source, Constant):
            return literal(field(name, value_text(attribute.type, source.value)))
        if isinstance(source, Field) and source.name == session.COMM_FIELD:
            return "{%s[comm]}" % self.field_cache(attribute, comm_text)
        if isinstance(source, Lookup):
            cache = self.field_cache(attribute, source.function)
            return "{%s[%s]}" % (cache, session.event_field(source.field))
        if isinstance(source, Field) and (source.name in session.ADDRESS_FIELDS  # never a newline
                                          or abi.EVENT_CODES[session.event_field(source.name)] == "H"
                                          and attribute.type is not DOUBLE):
            value = self.text(source)
        elif isinstance(source, (Field, Computed)):
            value = self.number(source, inline)
            if attribute.type is DOUBLE:
                value += "!r"
        else:
            raise TypeError(f"no journald field for {source}")
        return literal(f"{name}=") + "{" + value + "}\n"


def entry_parts(items: tuple[Item, ...], values: JournaldValues) -> list[str]:
    """A record's attributes as f-string template parts, one per item; an attribute only some records
    have is a local of the loop: its field, or ""."""
    parts = []
    for item in items:
        if item.only_if is None:
            parts.append("{%s}" % values.process_run(item, inline=False) if item.process_run else
                         values.part(item.attributes[0], item.sources[0]))
            continue
        if item.process_run:
            text = values.process_run(item, inline=True)
        else:
            text = "f" + repr(values.part(item.attributes[0], item.sources[0], inline=True))
        name = values.define(item, identifier(item.attributes[0].key) + "_field",
                             f'{text} if {session.event_field(item.only_if)} else ""')
        parts.append("{" + name + "}")
    return parts


def resource_fields(attributes: Mapping[str, object]) -> tuple[str, list[str]]:
    """The Resource's attributes as fields (their text), and the keys left out: without a valid field
    name, or with the name of one of the entry's own fields (MESSAGE, PROCESS_PID, ...)."""
    taken = {"MESSAGE", "PRIORITY", "SYSLOG_IDENTIFIER", "OTEL_EVENT_NAME", "TRACE_ID", "SPAN_ID", "PARENT_SPAN_ID",
             *(a.journald_field for a in contract.SESSION_ATTRIBUTES)}
    return attribute_fields(attributes, taken)


# An entry up to its attributes; the Resource's fields (`resource`) come last.
ENTRY_HEAD = ("{message}",
              literal(f"PRIORITY={PRIORITY_INFO}\nSYSLOG_IDENTIFIER={SYSLOG_IDENTIFIER}\n"
                      f"OTEL_EVENT_NAME={contract.EVENT_NAME}\n"),
              "TRACE_ID={hex_ids[:32]}\nSPAN_ID={hex_ids[32:48]}\n")
# A server span's parent, when the probe derived the ids (a child of the client's span).
PARENT_FIELD = 'parent = f"PARENT_SPAN_ID={hex_ids[48:]}\\n" if span_ids[24:] != NO_PARENT else ""'


@functools.lru_cache(maxsize=None)
def generated_encoder(attributes: tuple[contract.Attribute, ...],
                      fields: tuple[str, ...] = abi.EVENT_NAMES) -> Generated:
    """The loop writing a chunk's entries for a table of attributes (made once per table)."""
    values = JournaldValues()
    error_text = values.cache("error_text", lambda names: Formatted(ERROR_NAME.function))
    branches = {}
    for branch, role in ROLES:
        # log_body's line: the client's end first
        local, peer = ("laddr", "lport"), ("raddr", "rport")
        client, server = (peer, local) if role == abi.ROLE_SERVER else (local, peer)
        ends = [values.text(Field(name)) for name in (*client, *server)]
        server = role == abi.ROLE_SERVER
        pieces, entry = fstring([*ENTRY_HEAD, "{parent}" if server else "",
                                 *entry_parts(role_items(attributes)[branch], values), "{resource}"], "entry")
        branches[branch] = [
            *([PARENT_FIELD] if server else []),
            *body_code(values.text(Field("comm")), *ends, values.number(DURATION_MS, inline=False)),
            "if error:",
            f'    body = f"{{body}} {{{error_text}[error]}}"',
            'message = f"MESSAGE={body}\\n" if "\\n" not in body else field("MESSAGE", body)',
            *pieces,
            "append((", *indent(entry), f").encode{ENCODING!r})"]
    source = loop_source(
        "encode_entries", "groups", values,
        setup=["entries = []",
               "append = entries.append"],
        per_event=["hex_ids = span_ids.hex()"],
        record=role_switch(branches),
        after=["return entries"], fields=fields, group="resource")
    return generate("encode_entries", source, values, {**BODY_NAMESPACE, "field": field,
                                                       "NO_PARENT": abi.NO_PARENT}, __name__)


generated_encoder(contract.attributes())  # the default table's, made as the module loads


class JournaldEncoder(GeneratedEncoder):
    def __init__(self, resource_fields: str = "", names: ProcessNames | None = None,
                 attributes: tuple[contract.Attribute, ...] | None = None) -> None:
        """resource_fields: the Resource's attributes as fields (resource_fields())."""
        super().__init__(generated_encoder, attributes, names or ProcessNames())
        self.resource = resource_fields

    def encode(self, events: Sequence[tuple], resource: str | None = None) -> Iterator[list[bytes]]:
        """The entries for events (abi.EVENT tuples), made and yielded CHUNK_ENTRIES at a time;
        resource: the events' Resource as fields (resource_fields()), else the encoder's."""
        return self.encode_groups([(self.resource if resource is None else resource, events)])

    def encode_groups(self, groups: Iterable[tuple[str, Sequence[tuple]]]) -> Iterator[list[bytes]]:
        """encode's entries for groups of events, (Resource's fields, events) each, in order, CHUNK_ENTRIES
        at a time whatever the groups' sizes."""
        encode_entries, caches = self.generated.function, self.caches
        return (encode_entries(caches, chunk) for chunk in group_chunks(groups, CHUNK_ENTRIES))
