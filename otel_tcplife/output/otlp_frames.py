"""The probe's events straight to framed OTLP LogRecords and Spans: the agent's OTLP hot path.

`SessionFrames.encode` writes, for each event (a closed session), the bytes of one ScopeLogs.log_records entry
and one ScopeSpans.spans entry (tag 0x12, length, message): what ProtoEncoder would serialize
for the SessionRecord RecordBuilder makes of its Session, byte for byte (tests/unit/test_otlp_frames.py),
without building the record. `WireEncoder.requests` then wraps a batch of them in a request.

Why not records: building a SessionRecord's attribute pairs and encoding them again costs more
than all of this. Here every attribute is one cached piece (constant keys and values,
addresses, the process, the error), or a key head plus the value's varint / double. The
attributes are encoded once and joined twice, once per signal: a KeyValue is the same message in
a LogRecord and a Span, only the field tag in front differs. Field layouts: otlp_wire.py.

The loop is generated from the contract's table (contract.SESSION_ATTRIBUTES, in its order) when
this module loads (codegen.py): per role, the list of a record's pieces, written out.
"""

from __future__ import annotations

import functools
import struct
from typing import Callable, Sequence

from .. import abi, contract, session
from ..abi import address_text, comm_text
from ..caches import Formatted, port_cache
from ..codegen import (
    OWNER, ROLES, Generated, GeneratedEncoder, Item, Values, event_expression, generate, identifier, indent, local_name,
    loop_source, role_items, role_switch,
)
from ..contract import DURATION_MS, ERROR_NAME, PROCESS_FACTS, Constant, Field, Lookup
from ..enrich import ProcessNames
from ..record import BODY_NAMESPACE, body_code
from .otlp_wire import (
    EVENT_NAME_FIELD, GROUPS, LOG_ATTRIBUTES, LOG_FIXED_SIZE, SPAN_ATTRIBUTES, VARINTS, bool_piece, delimited,
    double_head, fixed64, int64_varint, int_heads, log_record, pack_log_head, pack_log_tail, span_name_kind,
    span_status, string_piece, varint,
)

_pack_double = struct.Struct("<d").pack


def piece_maker(key: str, type: contract.Type) -> Callable[[object], bytes]:
    """value -> the attribute as a KeyValue without its field tag: the piece the generated code joins."""
    if type is contract.STRING:
        return lambda value: string_piece(key, value)
    if type is contract.BOOL:
        return lambda value: bool_piece(key, value)
    if type is contract.DOUBLE:
        head = double_head(key)
        return lambda value: head + _pack_double(value)
    heads = int_heads(key)

    def int_piece(value: int) -> bytes:
        value = int64_varint(value)
        return heads[len(value)] + value
    return int_piece


# An event's number field -> its varint, by the field's C type (abi.EVENT_CODES): a lookup when
# small, 14 bits at a time from otlp_wire's tables when the type allows it, else int64_varint
# (which refuses what int64 cannot hold, as protobuf does). x is the field's name.
VARINT_EXPRESSIONS = {
    "B": "varints[{x}]",
    "H": "varints[{x}] if {x} < 16384 else groups[{x} & 16383] + varints[{x} >> 14]",
    "I": "varints[{x}] if {x} < 16384 else int64_varint({x})",
    "Q": "varints[{x}] if {x} < 16384 else int64_varint({x})",
}


class PieceValues(Values):
    """Values for the protobuf frames. A string source's value is a tuple: the pieces of every
    attribute it is the value of, then its text (for the log body); made once per raw value. A number's
    is a local of the number, or of its varint."""

    def __init__(self, process_local: str | None = None) -> None:
        super().__init__(process_local)
        self.namespace: dict[str, object] = {}  # constants of the generated code
        self._keys: dict[str, list[tuple[str, contract.Type]]] = {}  # string cache -> its pieces' keys

    def _string_cache(self, name: str, what: object, make_text: Callable,
                      key: tuple[str, contract.Type] | None) -> tuple[str, int | None]:
        """A cache of (pieces..., text) by raw value, text = make_text(raw value): its name, and the
        index of key's piece in its tuples."""
        def make(names):
            makers = [piece_maker(k, t) for k, t in keys]  # every key, by now

            def pieces(raw) -> tuple:
                text = make_text(raw)
                return (*[make_piece(text) for make_piece in makers], text)
            return Formatted(pieces)

        cache = self.cache(name, make, what)
        keys = self._keys.setdefault(cache, [])
        if key is None:
            return cache, None
        if key not in keys:
            keys.append(key)
        return cache, keys.index(key)

    def strings(self, source, key: tuple[str, contract.Type] | None = None) -> tuple[str, int | None]:
        """(an expression of the source's tuple, the index of key's piece in it), computed where it stands."""
        if isinstance(source, Field) and source.name in session.ADDRESS_FIELDS:
            index = None
            for family in (4, 6):
                _, index = self._string_cache(f"address_pieces_v{family}", ("address", family),
                                              lambda raw, family=family: address_text(family, raw), key)
            pieces = self.define("address pieces", "address_pieces",
                                 "address_pieces_v4 if family == 4 else address_pieces_v6")
            return f"{pieces}[{session.event_field(source.name)}]", index
        if isinstance(source, Field) and source.name == session.COMM_FIELD:
            cache, index = self._string_cache("comm_pieces", "comm", comm_text, key)
            return f"{cache}[comm]", index
        if isinstance(source, Lookup):
            cache, index = self._string_cache(identifier(f"{source.function.__name__}_pieces"), source.function,
                                              source.function, key)
            return f"{cache}[{session.event_field(source.field)}]", index
        raise TypeError(f"no string pieces for {source}")

    def strings_local(self, source, key: tuple[str, contract.Type] | None = None) -> tuple[str, int | None]:
        """strings(), as a local computed once per event."""
        expression, index = self.strings(source, key)
        return self.define(source, local_name(source), expression), index

    def number(self, source) -> str:
        """A local holding a number source's value."""
        if isinstance(source, Field):
            return session.event_field(source.name)
        return self.define(source, local_name(source), event_expression(source.expression))

    def varint(self, source) -> str:
        """A local holding an int source's varint."""
        number = self.number(source)
        template = "int64_varint({x})"
        if isinstance(source, Field):
            template = VARINT_EXPRESSIONS.get(abi.EVENT_CODES[number], template)
        return self.define(("varint", source), f"{local_name(source)}_varint", template.format(x=number))

    def constant(self, name: str, value: object) -> str:
        self.namespace[name] = value
        return name

    def attribute(self, attribute: contract.Attribute, source, inline: bool = False) -> str:
        """An expression of the attribute's piece. inline: its value computed there, not before (for
        an attribute only some records have: its value may not be defined for the others)."""
        key, type = attribute.key, attribute.type
        if isinstance(source, Constant):
            return repr(piece_maker(key, type)(source.value))
        if type is contract.STRING or type is contract.BOOL:  # from a cache by the raw value
            expression, index = (self.strings if inline else self.strings_local)(source, (key, type))
            return f"{expression}[{index}]"
        if inline:
            value = session.event_field(source.name) if isinstance(source, Field) else event_expression(
                source.expression)
            return f"{self.constant(f'{identifier(key)}_piece', piece_maker(key, type))}({value})"
        if type is contract.DOUBLE:
            head = self.constant(f"{identifier(key)}_head", double_head(key))
            return f"{head} + pack_double({self.number(source)})"
        heads = self.constant(f"{identifier(key)}_heads", int_heads(key))
        value = self.varint(source)
        return f"{heads}[len({value})] + {value}"

    def process_run(self, item: Item, inline: bool = False) -> str:
        """An expression of the run's pieces (a tuple), made once per (pid, comm)."""
        facts = [(piece_maker(a.key, a.type), PROCESS_FACTS[source.fact])
                 for a, source in zip(item.attributes, item.sources)]

        def make(names):
            def pieces(key: tuple[int, bytes]) -> tuple[bytes, ...]:
                pid, comm = key[0], comm_text(key[1])
                return tuple([make_piece(fact(pid, comm, names)) for make_piece, fact in facts])
            return Formatted(pieces)

        cache = self.cache("process_pieces", make, what=item)
        return self.process(cache, f"{cache}[pid, comm]", inline)


def pieces_lines(items: tuple[Item, ...], values: PieceValues) -> list[str]:
    """Code making `pieces`, the list of a record's attributes (b"" first: the field tag goes before
    each), one a line; attributes only some records have are appended under their condition."""
    lines: list[str] = []
    waiting: list[str] = ['b""']  # pieces not yet in a statement

    def flush() -> None:
        if lines:
            lines.extend(["pieces += (", *indent([p + "," for p in waiting]), ")"])
        else:
            lines.extend(["pieces = [", *indent([p + "," for p in waiting]), "]"])
        waiting.clear()

    for item in items:
        if item.only_if is None:
            if item.process_run:
                waiting.append("*" + values.process_run(item))
            else:
                waiting.append(values.attribute(item.attributes[0], item.sources[0]))
            continue
        if waiting or not lines:
            flush()
        if item.process_run:
            add = f"pieces += {values.process_run(item, inline=True)}"
        else:
            add = f"pieces.append({values.attribute(item.attributes[0], item.sources[0], inline=True)})"
        lines += [f"if {session.event_field(item.only_if)}:", "    " + add]
    if waiting or not lines:
        flush()
    return lines


# After a role's pieces, body and span head: the log record and the span, as otlp_wire lays them out.
RECORD_LINES = """\
if logs:
    block = log_tag.join(pieces)
    body = body.encode()
    n = len(body)
    if n < 126 and end > 0 and observed > 0:  # the fast path: one-byte body lengths
        size = LOG_FIXED_SIZE + n + len(block)
        log_out.append(b"".join((
            b"\\x12", varints[size] if size < 16384 else varint(size),
            pack_log_head(0x09, end, 0x10, SEVERITY_INFO, 0x2a, n + 2, 0x0a, n), body,
            block,
            pack_log_tail(0x4a, 16, trace_id, 0x52, 8, span_id, 0x59, observed),
            EVENT_NAME_FIELD,
        )))
    else:
        log_out.append(delimited(b"\\x12", log_record(end, observed, body, trace_id, span_id, block)))
if spans:
    block = span_tag.join(pieces)
    field, pack_head, head_size = span_head
    if start > 0 and end > 0:
        size = head_size + len(block) + len(status)
        span_out.append(b"".join((
            b"\\x12", varints[size] if size < 16384 else varint(size),
            pack_head(0x0a, 16, trace_id, 0x12, 8, span_id, field, 0x39, start, 0x41, end),
            block,
            status,
        )))
    else:  # a zero time is left out (proto3)
        span_out.append(delimited(b"\\x12", b"".join((
            b"\\x0a\\x10", trace_id, b"\\x12\\x08", span_id, field,
            fixed64(b"\\x39", start),
            fixed64(b"\\x41", end),
            block,
            status,
        ))))""".splitlines()

PARENT_TAG = b"\x22\x08"  # Span.parent_span_id (4), 8 bytes: between span_id and name


def child_span_head(name: str, kind: int) -> tuple[bytes, Callable[..., bytes], int]:
    """span_name_kind's for a span with a parent: the head packs PARENT_TAG + parent span id + the
    name and kind (which this returns) as its one field between span_id and start."""
    field, _, size = span_name_kind(name, kind)
    head = struct.Struct(f"<BB16sBB8s{len(PARENT_TAG) + 8 + len(field)}sBQBQ")
    return field, head.pack, head.size


NAMESPACE = {
    "varints": VARINTS, "groups": GROUPS, "int64_varint": int64_varint, "varint": varint, "pack_double": _pack_double,
    **BODY_NAMESPACE, "log_tag": LOG_ATTRIBUTES, "span_tag": SPAN_ATTRIBUTES, "LOG_FIXED_SIZE": LOG_FIXED_SIZE,
    "pack_log_head": pack_log_head, "pack_log_tail": pack_log_tail, "SEVERITY_INFO": contract.SEVERITY_INFO,
    "EVENT_NAME_FIELD": EVENT_NAME_FIELD, "delimited": delimited, "log_record": log_record, "fixed64": fixed64,
    "NO_PARENT": abi.NO_PARENT, "PARENT_TAG": PARENT_TAG,
}


@functools.lru_cache(maxsize=None)
def generated_encoder(attributes: tuple[contract.Attribute, ...],
                      fields: tuple[str, ...] = abi.EVENT_NAMES, by_owner: bool = False) -> Generated:
    """The loop framing a batch's log records and spans for a table of attributes (made once per table).
    by_owner: each event's go to owned[its owner], (its log records, its spans, its process run's pieces)."""
    values = PieceValues(process_local="process" if by_owner else None)
    branches = {}
    for branch, role in ROLES:
        local, peer = ("laddr", "sport"), ("raddr", "dport")
        client, server = (peer, local) if role == abi.ROLE_SERVER else (local, peer)
        comm, _ = values.strings(Field("comm"))
        ends = [part for address, port in (client, server)
                for part in (f"{values.strings_local(Field(address))[0]}[-1]", f"port_text[{port}]")]
        span_head = values.constant(f"span_{branch}", span_name_kind(*contract.SPANS[role]))
        if role == abi.ROLE_SERVER:  # a child of the client's span when the probe derived the ids
            field, pack_head, size = child_span_head(*contract.SPANS[role])
            child_head = values.constant("span_child", (pack_head, size))
            choose_head = ["if span_ids[24:] == NO_PARENT:", f"    span_head = {span_head}",
                           "else:", f"    span_head = (PARENT_TAG + span_ids[24:] + {field!r}, *{child_head})"]
        else:
            choose_head = [f"span_head = {span_head}"]
        branches[branch] = [
            *pieces_lines(role_items(attributes)[branch], values),
            "if logs:", *indent(body_code(f"{comm}[-1]", *ends, values.number(DURATION_MS))),
            "else:", '    body = ""',
            *choose_head,
        ]
    values.cache("port_text", lambda names: port_cache())  # for the log body
    values.cache("span_statuses", lambda names: Formatted(lambda error: span_status(contract.errno_name(error))))
    error_name, _ = values.strings(ERROR_NAME)
    source = loop_source(
        "encode", f"events, offset, observed, logs, spans{', owned' if by_owner else ''}", values,
        setup=[] if by_owner else ["log_out = []", "span_out = []"],
        per_event=[*([f"log_out, span_out, process = owned[{OWNER}]"] if by_owner else []),
                   "trace_id, span_id = span_ids[:16], span_ids[16:24]",
                   "start, end = birth_ns + offset, close_ns + offset"],
        record=[*role_switch(branches),
                "if error:",
                "    status = span_statuses[error]",
                f'    body = f"{{body}} {{{error_name}[-1]}}"',
                "else:",
                '    status = b""',
                *RECORD_LINES],
        after=["return owned" if by_owner else "return log_out, span_out"], fields=fields)
    return generate("encode", source, values, {**NAMESPACE, **values.namespace}, __name__,
                    "by owner" if by_owner else "")


generated_encoder(contract.attributes())  # the default table's, made as the module loads


class SessionFrames(GeneratedEncoder):
    def __init__(self, names: ProcessNames | None = None,
                 attributes: tuple[contract.Attribute, ...] | None = None, by_owner: bool = False) -> None:
        """by_owner: encode_owned, not encode."""
        super().__init__(functools.partial(generated_encoder, by_owner=by_owner), attributes, names or ProcessNames())

    def encode(self, events: Sequence[tuple], offset: int, observed: int,
               logs: bool = True, spans: bool = True) -> tuple[list[bytes], list[bytes]]:
        """(framed log records, framed spans) for events (abi.EVENT tuples, their ids in span_ids), each
        list empty when not asked for. offset: monotonic -> Unix ns; observed: the log records'
        observed time, Unix ns (as RecordBuilder.build)."""
        return self.generated.function(self.caches, events, offset, observed, logs, spans)

    def encode_owned(self, events: Sequence[tuple], offset: int, observed: int, logs: bool = True,
                     spans: bool = True) -> dict[tuple, tuple[list[bytes], list[bytes], tuple]]:
        """encode's, per owner (codegen.OWNER_FIELDS as the event holds them), in order of first appearance
        (and the owner's process run's pieces, which its records hold).
        The events are framed in their order and the frames kept per owner: grouping the events first
        would walk them out of order, which costs more than the owner lookup."""
        process_pieces = self.caches["process_pieces"]
        # never cleared: a batch has at most as many owners as events
        owned = Formatted(lambda owner: ([], [], process_pieces[owner[0], owner[1]]), limit=len(events) + 1)
        return self.generated.function(self.caches, events, offset, observed, logs, spans, owned)
