"""Flat NDJSON: one object per session per line, for jq, Fluent Bit and journald.

Keys: time, start_time (RFC 3339, ns, UTC), otel.event.name, trace_id, span_id
(hex), then every attribute of the record contract as a flat dotted key.
"""

from __future__ import annotations

import time
from typing import Sequence

import orjson

from ..record import EVENT_NAME, SessionRecord


class Rfc3339:
    """Unix ns -> '2026-11-26T08:15:42.123456789Z', the seconds part cached."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, unix_ns: int) -> str:
        second, nanos = divmod(unix_ns, 1_000_000_000)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{nanos:09d}Z"


class NdjsonEncoder:
    def __init__(self) -> None:
        self.rfc3339 = Rfc3339()

    def encode(self, records: Sequence[SessionRecord]) -> bytes:
        rfc3339 = self.rfc3339
        objects = []
        for r in records:
            obj = {
                "time": rfc3339(r.end_ns),
                "start_time": rfc3339(r.start_ns),
                "otel.event.name": EVENT_NAME,
                "trace_id": r.trace_id.hex(),
                "span_id": r.span_id.hex(),
            }
            obj.update(r.attributes)
            objects.append(obj)
        return to_lines(objects)


def to_lines(objects: list[dict]) -> bytes:
    """One JSON object per line. orjson serializes a whole list several times
    faster than object by object; its compact output separates elements with
    `},{`, which is safe to split on unless a string holds those characters too."""
    if not objects:
        return b""
    array = orjson.dumps(objects)
    if array.count(b"},{") == len(objects) - 1:
        return array[1:-1].replace(b"},{", b"}\n{") + b"\n"
    return b"".join(orjson.dumps(obj, option=orjson.OPT_APPEND_NEWLINE) for obj in objects)
