"""OTLP/JSON lines, the OpenTelemetry file-exporter format.

Each line is one LogsData (or one TracesData) object per batch: lowerCamelCase
keys, hex trace and span ids, 64-bit integers as decimal strings, enums as
integers. One signal per stream.
"""

from __future__ import annotations

from typing import Sequence

import orjson

from ..record import EVENT_NAME, SEVERITY_INFO, SessionRecord, log_body
from ..resource import json_value

STATUS_CODE_ERROR = 2


def _attributes(attributes: tuple[tuple[str, object], ...]) -> list[dict]:
    return [{"key": key, "value": json_value(value)} for key, value in attributes]


class OtlpJsonEncoder:
    def __init__(self, resource: dict, scope: dict, signal: str = "logs") -> None:
        self.resource = resource
        self.scope = scope
        self.signal = signal

    def encode(self, records: Sequence[SessionRecord]) -> bytes:
        if not records:
            return b""
        if self.signal == "logs":
            data = {"resourceLogs": [{"resource": self.resource, "scopeLogs": [
                {"scope": self.scope, "logRecords": [self._log(r) for r in records]}]}]}
        else:
            data = {"resourceSpans": [{"resource": self.resource, "scopeSpans": [
                {"scope": self.scope, "spans": [self._span(r) for r in records]}]}]}
        return orjson.dumps(data, option=orjson.OPT_APPEND_NEWLINE)

    @staticmethod
    def _log(r: SessionRecord) -> dict:
        return {
            "timeUnixNano": str(r.end_ns),
            "observedTimeUnixNano": str(r.observed_ns),
            "severityNumber": SEVERITY_INFO,
            "body": {"stringValue": log_body(r)},
            "attributes": _attributes(r.attributes),
            "traceId": r.trace_id.hex(),
            "spanId": r.span_id.hex(),
            "eventName": EVENT_NAME,
        }

    @staticmethod
    def _span(r: SessionRecord) -> dict:
        span = {
            "traceId": r.trace_id.hex(),
            "spanId": r.span_id.hex(),
            "name": r.name,
            "kind": r.kind,
            "startTimeUnixNano": str(r.start_ns),
            "endTimeUnixNano": str(r.end_ns),
            "attributes": _attributes(r.attributes),
        }
        if r.error_type:
            span["status"] = {"code": STATUS_CODE_ERROR, "message": r.error_type}
        return span
