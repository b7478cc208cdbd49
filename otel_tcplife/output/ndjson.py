"""Flat NDJSON: one object per session per line, for jq, Fluent Bit and journald.

Keys, in this order: time, start_time (RFC 3339, ns, UTC), otel.event.name,
trace_id, span_id (hex), parent_span_id (a server's whose ids were derived from the
connection's ISNs: its parent is the client's span), then every attribute of the record contract
(contract.SESSION_ATTRIBUTES) as a flat dotted key, in the table's order.

This is the hot path of the default output, so the loop that writes the lines is
generated from the contract's table when this module loads (codegen.py): one
f-string per role straight from the probe's event tuples, no Session, no dict,
no attribute tuples. Addresses, ports and the process come from caches of their
text; only the process names can need JSON escaping, and they are escaped once
per (pid, comm).
"""

from __future__ import annotations

import functools
import time
from typing import Iterable, Iterator, Mapping, Sequence

import orjson

from .. import abi, contract
from ..caches import Formatted
from ..codegen import (
    OWNER, Generated, GeneratedEncoder, JsonValues, fstring, generate, indent, json_escaped, json_parts,
    literal, loop_source, role_items, role_switch,
)
from ..enrich import ProcessNames

# Lines per chunk of output: ~100 KB, under the size malloc serves from fresh mmap-ed pages
# (cli.tune_malloc), whose page faults cost more than the extra write calls.
CHUNK_LINES = 128


class Rfc3339:
    """Unix ns -> '2026-11-26T08:15:42.123456789Z', the seconds part cached.

    Works on the decimal digits of the time: the last nine are the nanoseconds, already
    zero-padded, and the rest (the second) is the cache key. Cheaper than divmod and
    '%09d' on the hot path; right for any time after 1970-01-01T00:00:01Z."""

    def __init__(self) -> None:
        self.seconds: dict[str, str] = {}  # "1764144942" -> "2026-11-26T08:15:42"

    def second(self, digits: str) -> str:
        text = self.seconds.get(digits)
        if text is None:
            if len(self.seconds) >= 16:  # a batch spans a few seconds at most
                self.seconds.clear()
            text = self.seconds[digits] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(int(digits)))
        return text

    def __call__(self, unix_ns: int) -> str:
        digits = str(unix_ns)
        return f"{self.second(digits[:-9])}.{digits[-9:]}Z"


def attribute_text(key: str, type: contract.Type, text: str) -> str:
    """An attribute as a flat key of the line, its value's text given (a string's escaped)."""
    key = json_escaped(key)
    return f'"{key}":"{text}"' if type is contract.STRING else f'"{key}":{text}'


# The line up to its attributes, and after them. Rfc3339 is inlined: end and start are the times'
# decimal digits, hex_ids the event's span_ids in hex; a server's line has its parent span id when the
# probe derived the ids (parent: empty otherwise).
LINE_HEAD = ('{{"time":"{seconds.get(end[:-9]) or second(end[:-9])}.{end[-9:]}Z",',
             '"start_time":"{seconds.get(start[:-9]) or second(start[:-9])}.{start[-9:]}Z",',
             '"otel.event.name":' + literal(f'"{contract.EVENT_NAME}"') + ',',
             '"trace_id":"{hex_ids[:32]}","span_id":"{hex_ids[32:48]}"')
PARENT = 'parent = f\',"parent_span_id":"{hex_ids[48:]}"\' if span_ids[24:] != NO_PARENT else ""'
LINE_TAIL = "{tail}}}\n"  # tail: the Resource's keys (resource_tail), or nothing


@functools.lru_cache(maxsize=None)
def generated_encoder(attributes: tuple[contract.Attribute, ...], fields: tuple[str, ...] = abi.EVENT_NAMES,
                      by_owner: bool = False) -> Generated:
    """The loop writing a chunk's lines for a table of attributes (made once per table). Every line
    ends with `tail`; by_owner: each line's own, its process's Resource, which owner_texts[owner] holds
    with the text of the line's process run (one lookup for both)."""
    values = JsonValues(process_local="process" if by_owner else None)
    branches = {}
    for branch, items in role_items(attributes).items():
        server = branch == "server"
        parts = [*LINE_HEAD, "{parent}" if server else "",
                 *json_parts(items, values, attribute_text, ",", leading=True), LINE_TAIL]
        pieces, line = fstring(parts, "line")
        branches[branch] = [*([PARENT] if server else []), *pieces, "append(", *indent(line), ")"]
    source = loop_source(
        "encode_chunk", f"rfc3339, events, offset, {'owner_texts' if by_owner else 'tail'}", values,
        setup=["seconds, second = rfc3339.seconds, rfc3339.second",
               "lines = []",
               "append = lines.append"],
        per_event=["end = str(close_ns + offset)",
                   "start = str(birth_ns + offset)",
                   "hex_ids = span_ids.hex()",
                   *([f"process, tail = owner_texts[{OWNER}]"] if by_owner else [])],
        record=role_switch(branches),
        after=['return "".join(lines).encode()'], fields=fields)
    return generate("encode_chunk", source, values, {"NO_PARENT": abi.NO_PARENT}, __name__)


generated_encoder(contract.attributes())  # the default table's, made as the module loads


class NdjsonEncoder(GeneratedEncoder):
    def __init__(self, names: ProcessNames | None = None, attributes: tuple[contract.Attribute, ...] | None = None,
                 tails: Mapping[tuple, str] | None = None) -> None:
        """tails: each line's tail by its owner (codegen.OWNER_FIELDS, as the event holds them: a mapping
        that makes what it lacks), for the process's Resource; else encode's one tail."""
        make = generated_encoder if tails is None else functools.partial(generated_encoder, by_owner=True)
        self.tails = tails
        super().__init__(make, attributes, names or ProcessNames())
        self.rfc3339 = Rfc3339()

    def read_fields(self, fields: tuple[str, ...]) -> None:
        super().read_fields(fields)
        if self.tails is not None:  # owner -> (its process run's text, its tail)
            process_text, tails = self.caches["process_text"], self.tails
            self.owner_texts = Formatted(lambda owner: (process_text[owner[0], owner[1]], tails[owner]))

    def encode(self, events: Sequence[tuple], offset: int, tail: str = "") -> Iterator[bytes]:
        """Lines for events (abi.EVENT tuples), made and yielded CHUNK_LINES at a time (only one chunk
        is in memory); offset turns their monotonic times into Unix ns (as RecordBuilder.build); tail
        ends every line (resource_tail), or with tails each line its owner's. Lines stay in the events'
        order."""
        encode_chunk, caches, rfc3339 = self.generated.function, self.caches, self.rfc3339
        tail = tail if self.tails is None else self.owner_texts
        return (encode_chunk(caches, rfc3339, events[i:i + CHUNK_LINES], offset, tail)
                for i in range(0, len(events), CHUNK_LINES))


def resource_tail(resource: Iterable[tuple[str, object]]) -> str:
    """The Resource's attributes as a line's last keys: all but the telemetry.sdk.* ones (they describe
    the agent's SDK) and those the record already has (process.pid, process.executable.name)."""
    have = {a.key for a in contract.SESSION_ATTRIBUTES}
    return "".join(f",{orjson.dumps(key).decode()}:{orjson.dumps(value).decode()}" for key, value in resource
                   if key not in have and not key.startswith("telemetry.sdk."))
