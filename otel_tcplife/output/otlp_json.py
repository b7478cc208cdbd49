"""OTLP/JSON lines, the OpenTelemetry file-exporter format.

Each line is one LogsData (or one TracesData) object per batch (per LINE_RECORDS
sessions of a batch with each process's Resource): lowerCamelCase keys, hex trace
and span ids, 64-bit integers as decimal strings, enums as integers. One signal
per stream.

Written from the probe's event tuples by a loop generated from the contract's
table when this module loads (codegen.py), as NDJSON's is: the records are the
ones RecordBuilder describes (tests parse the lines back into the protobuf
messages ProtoEncoder builds from those records and compare). Only process names
can need JSON escaping; they are escaped once per (pid, comm).
"""

from __future__ import annotations

import functools
from typing import Iterable, Iterator, Mapping, Sequence

import orjson

from .. import abi, contract
from ..caches import Formatted
from ..codegen import (
    OWNER, ROLES, Generated, GeneratedEncoder, JsonValues, fstring, generate, group_chunks, indent, json_escaped,
    json_parts, literal, loop_source, role_items, role_switch,
)
from ..contract import DURATION_MS, ERROR_NAME, Field
from ..enrich import ProcessNames
from ..record import BODY_NAMESPACE, body_code

CHUNK_RECORDS = 32  # per piece of output: ~60 KB of log records (~2 KB each), less of spans
# Sessions per line when each record has its process's Resource: a line's records are all made
# before it is written (a Resource's records must be together); ~0.5 MB stays in the caches, where a
# larger line's does not.
LINE_RECORDS = 256
STATUS_CODE_ERROR = 2
GROUP_END = "]}]}"  # a ResourceLogs' end: its records' list, its ScopeLogs, their list, itself
LINE_END = "]}\n"  # the line's: the ResourceLogs list, the LogsData
SIGNALS = ("logs", "traces")


def _json(value: object) -> str:
    return orjson.dumps(value).decode()


# An AnyValue, by the attribute's type, around its value's text (a string's escaped).
ANY_VALUES = {
    contract.STRING: ('{"stringValue":"', '"}'),
    contract.INT: ('{"intValue":"', '"}'),  # int64 as a decimal string
    contract.DOUBLE: ('{"doubleValue":', '}'),
    contract.BOOL: ('{"boolValue":', '}'),
}


def attribute_text(key: str, type: contract.Type, text: str) -> str:
    """A KeyValue, its value's text given."""
    before, after = ANY_VALUES[type]
    return f'{{"key":"{json_escaped(key)}","value":{before}{text}{after}}}'


def record_lines(signal: str, role: int, attributes: list[str], values: JsonValues) -> list[str]:
    """The code appending a log record or span of the role (abi.ROLE_*), given its attributes' f-string
    template parts."""
    if signal == "logs":
        # log_body's line: the client's end first
        client, server = ("raddr", "rport"), ("laddr", "lport")
        if role != abi.ROLE_SERVER:
            client, server = server, client
        body = body_code(values.local(Field("comm")), *(values.local(Field(name)) for name in (*client, *server)),
                         values.local(DURATION_MS))
        parts = ['{{"timeUnixNano":"{close_ns + offset}","observedTimeUnixNano":"{observed_text}",',
                 f'"severityNumber":{contract.SEVERITY_INFO},',
                 '"body":{{"stringValue":"{body}{error_suffix}"}},',
                 '"attributes":[', *attributes,
                 '],"traceId":"{hex_ids[:32]}","spanId":"{hex_ids[32:48]}",',
                 literal(f'"eventName":"{json_escaped(contract.EVENT_NAME)}"}}')]
        pieces, record = fstring(parts, "record")
        return [*body, *pieces, "records.append(", *indent(record), ")"]
    name, kind = contract.SPANS[role]
    parent = []
    if role == abi.ROLE_SERVER:  # a child of the client's span when the probe derived the ids
        parent = ['parent = f\'"parentSpanId":"{hex_ids[48:]}",\' if span_ids[24:] != NO_PARENT else ""']
    parts = ['{{"traceId":"{hex_ids[:32]}","spanId":"{hex_ids[32:48]}",' + ("{parent}" if parent else ""),
             literal(f'"name":"{json_escaped(name)}","kind":{kind},'),
             '"startTimeUnixNano":"{birth_ns + offset}","endTimeUnixNano":"{close_ns + offset}",',
             '"attributes":[', *attributes, ']{status}}}']
    pieces, record = fstring(parts, "record")
    return [*parent, *pieces, "records.append(", *indent(record), ")"]


@functools.lru_cache(maxsize=None)
def generated_encoder(attributes: tuple[contract.Attribute, ...], signal: str,
                      fields: tuple[str, ...] = abi.EVENT_NAMES, by_owner: bool = False) -> Generated:
    """The loop writing a piece of a line's log records or spans for a table of attributes (made once per
    table): groups of events, each with its (prefix, suffix), the JSON around its records. by_owner:
    instead, a line's events in the order they came, each record appended to owned[its owner], (its
    records, its process run's text)."""
    values = JsonValues(process_local="process" if by_owner else None)
    items = role_items(attributes)
    branches = {branch: record_lines(signal, role, json_parts(items[branch], values, attribute_text, ",", False),
                                     values)
                for branch, role in ROLES}
    # A failed session's error.type, also after the log body and as the span's status.
    error_name = "{" + values.expression(ERROR_NAME) + "}"
    if signal == "logs":
        per_event = [f'error_suffix = f" {error_name}" if error else ""']
    else:
        status = literal(f',"status":{{"code":{STATUS_CODE_ERROR},"message":"') + error_name + literal('"}')
        per_event = [f'status = f{status!r} if error else ""']
    setup = ["observed_text = str(observed)  # the same for the batch: converted once"]
    if by_owner:
        source = loop_source(
            "encode_records", "events, offset, observed, owned", values, setup=setup,
            per_event=[f"records, process = owned[{OWNER}]", "hex_ids = span_ids.hex()", *per_event],
            record=role_switch(branches), after=[], fields=fields)
    else:
        source = loop_source(
            "encode_records", "groups, offset, observed", values, setup=[*setup, "items = []"],
            per_event=["hex_ids = span_ids.hex()", *per_event],
            record=role_switch(branches),
            after=['return "".join(items)'], fields=fields,
            group="(prefix, suffix)", group_setup=("records = []",),
            group_after=('items.append(prefix + ",".join(records) + suffix)',))
    return generate("encode_records", source, values, {**BODY_NAMESPACE, "NO_PARENT": abi.NO_PARENT},
                    __name__, f"{signal}, by owner" if by_owner else signal)


for _signal in SIGNALS:  # the default table's, made as the module loads
    generated_encoder(contract.attributes(), _signal)


class OtlpJsonEncoder(GeneratedEncoder):
    def __init__(self, resource: dict, scope: dict, signal: str = "logs", names: ProcessNames | None = None,
                 attributes: tuple[contract.Attribute, ...] | None = None,
                 resources: Mapping[tuple, str] | None = None) -> None:
        """resource: the Resource of every record (resource_json()). resources: instead, each record's by
        its owner (codegen.OWNER_FIELDS as the event holds them -> the Resource's JSON text: a mapping that
        makes what it lacks), for the process's Resource."""
        make = functools.partial(generated_encoder, signal=signal, by_owner=resources is not None)
        super().__init__(make, attributes, names or ProcessNames())
        self.resources = resources
        self.signal = signal
        self.resource = _json(resource)
        self._open = ('{"resourceLogs":[' if signal == "logs" else '{"resourceSpans":[')
        self._group = ('{"resource":%s,"scopeLogs":[{"scope":' if signal == "logs"
                       else '{"resource":%s,"scopeSpans":[{"scope":') + _json(scope) + (
                           ',"logRecords":[' if signal == "logs" else ',"spans":[')

    def encode(self, events: Sequence[tuple], offset: int, observed: int) -> Iterator[bytes]:
        """Lines for the events (abi.EVENT tuples), nothing for none: one, all of the encoder's Resource,
        or with resources, one per LINE_RECORDS events, a ResourceLogs (ResourceSpans) per owner's
        Resource. offset turns monotonic times into Unix ns, observed is the log records' observed time
        (as RecordBuilder.build)."""
        if self.resources is None:
            return self.encode_groups([(self.resource, events)], offset, observed)
        return self._encode_owned(events, offset, observed)

    def _encode_owned(self, events: Sequence[tuple], offset: int, observed: int) -> Iterator[bytes]:
        # The records are made in the events' order and kept per owner: grouping the events first
        # would walk them out of order, which costs more than the owner lookup.
        encode_records, caches, resources = self.generated.function, self.caches, self.resources
        process_text = caches["process_text"]
        for start in range(0, len(events), LINE_RECORDS):
            # owner -> (its records, its process run's text); never full: a line has at most LINE_RECORDS owners
            owned = Formatted(lambda owner: ([], process_text[owner[0], owner[1]]), limit=LINE_RECORDS)
            encode_records(caches, events[start:start + LINE_RECORDS], offset, observed, owned)
            # One group per Resource: owners can share one (threads of a process with names of their own).
            groups: dict[str, list[str]] = {}
            for owner, (records, _) in owned.items():
                resource = resources[owner]
                if resource in groups:
                    groups[resource] += records
                else:
                    groups[resource] = records
            yield from self._line(groups.items())

    def _line(self, groups: Iterable[tuple[str, list[str]]]) -> Iterator[bytes]:
        """One line of (the Resource's JSON, its records) groups, made and yielded in pieces of
        CHUNK_RECORDS records (the last one fewer), however many groups each piece holds."""
        parts, count, head = [], 0, self._open
        for resource, records in groups:
            parts.append(head + self._group % resource)
            head = GROUP_END + ","  # before the next group's head
            start = 0
            while start < len(records):
                piece = records[start:start + CHUNK_RECORDS - count]
                parts.append(("," if start else "") + ",".join(piece))
                start += len(piece)
                count += len(piece)
                if count == CHUNK_RECORDS:
                    yield "".join(parts).encode()
                    parts, count = [], 0
        if head != self._open:
            parts.append(GROUP_END + LINE_END)
            yield "".join(parts).encode()

    def encode_groups(self, groups: Sequence[tuple[str, Sequence[tuple]]], offset: int,
                      observed: int) -> Iterator[bytes]:
        """One line for groups of events, a ResourceLogs (ResourceSpans) each: (the Resource's JSON,
        events). Made and yielded in pieces of CHUNK_RECORDS records whatever the groups' sizes (one call
        each, not one per group: small groups are common): only one piece is in memory at a
        time (under the size malloc serves from fresh pages, interpreter.tune_malloc)."""
        encode_records, caches = self.generated.function, self.caches
        groups = [group for group in groups if group[1]]
        written = [0] * len(groups)  # each group's records so far
        head = self._open
        for chunk in group_chunks(((g, events) for g, (_, events) in enumerate(groups)), CHUNK_RECORDS):
            parts = []
            for g, events in chunk:  # a group's records: its head first, its end last
                resource, whole = groups[g]
                prefix = head + self._group % resource if not written[g] else ","
                head = ""
                written[g] += len(events)
                suffix = GROUP_END + (LINE_END if g == len(groups) - 1 else ",") if written[g] == len(whole) else ""
                parts.append(((prefix, suffix), events))
            yield encode_records(caches, parts, offset, observed).encode()
