"""OTLP/JSON lines, the OpenTelemetry file-exporter format.

Each line is one LogsData (or one TracesData) object per batch: lowerCamelCase
keys, hex trace and span ids, 64-bit integers as decimal strings, enums as
integers. One signal per stream.

Written from the probe's event tuples through f-strings, as NDJSON is: the
records are the ones RecordBuilder describes (tests parse the lines back into
the protobuf messages ProtoEncoder builds from those records and compare).
Only process names can need JSON escaping; they are escaped once per (pid, comm).
"""

from __future__ import annotations

import errno
from typing import Iterator, Sequence

import orjson

from .. import abi
from ..enrich import ProcessNames
from ..record import EVENT_NAME, NETWORK_TYPE, ROLES, SEVERITY_INFO, TRANSPORT, body_text
from ..session import Formatted, address_caches, comm_text, port_cache

CHUNK_RECORDS = 32  # per piece of output: ~60 KB of log records (~2 KB each), less of spans
STATUS_CODE_ERROR = 2


def _json(value: object) -> str:
    return orjson.dumps(value).decode()


def _string_attribute(key: str, value: str) -> str:
    return _json({"key": key, "value": {"stringValue": value}})


NETWORK_TYPES = {family: _string_attribute(*attribute) for family, attribute in NETWORK_TYPE.items()}
# role -> (span name and kind, tcplife.role attribute)
SPAN_ROLES = {role: ('"name":%s,"kind":%d' % (_json(name), kind), _string_attribute("tcplife.role", role_name))
              for role, (name, kind, role_name) in ROLES.items()}

TRANSPORT_ATTRIBUTE = _string_attribute(*TRANSPORT)


class OtlpJsonEncoder:
    def __init__(self, resource: dict, scope: dict, signal: str = "logs", names: ProcessNames | None = None) -> None:
        self.signal = signal
        self.names = names or ProcessNames()
        envelope = ('{"resourceLogs":[{"resource":%s,"scopeLogs":[{"scope":%s,"logRecords":['
                    if signal == "logs" else '{"resourceSpans":[{"resource":%s,"scopeSpans":[{"scope":%s,"spans":[')
        self._head = envelope % (_json(resource), _json(scope))
        self._ipv4, self._ipv6 = address_caches()
        self._ports = port_cache()
        self._processes = Formatted(self._process)  # (pid, raw comm) -> (attributes, comm escaped)
        self._errors = Formatted(self._error)  # errno -> (attribute, error.type, span status)

    def _process(self, key: tuple[int, bytes]) -> tuple[str, str]:
        pid, comm = key[0], comm_text(key[1])
        return (f'{{"key":"process.pid","value":{{"intValue":"{pid}"}}}},'
                f'{_string_attribute("process.executable.name", self.names.executable_name(pid, comm))},'
                f'{_string_attribute("thread.name", comm)}',
                _json(comm)[1:-1])

    @staticmethod
    def _error(error: int) -> tuple[str, str, str]:
        name = errno.errorcode.get(error, str(error))
        return ("," + _string_attribute("error.type", name), " " + name,
                ',"status":' + _json({"code": STATUS_CODE_ERROR, "message": name}))

    def encode(self, events: Sequence[tuple], ids: bytes, offset: int, observed: int) -> Iterator[bytes]:
        """One line for the events (abi.EVENT tuples), nothing for none, made and yielded in pieces
        of CHUNK_RECORDS records: only one piece is in memory at a time (under the size malloc
        serves from fresh pages, cli.tune_malloc). ids holds 24 random bytes per event (trace id,
        span id), offset turns monotonic times into Unix ns, observed is the log records' observed
        time (as RecordBuilder.build)."""
        for i in range(0, len(events), CHUNK_RECORDS):
            records = ",".join(self._records(events[i:i + CHUNK_RECORDS], ids[24 * i:24 * (i + CHUNK_RECORDS)],
                                             offset, observed))
            head = self._head if i == 0 else ","
            tail = "]}]}]}\n" if i + CHUNK_RECORDS >= len(events) else ""
            yield f"{head}{records}{tail}".encode()

    def _records(self, events: Sequence[tuple], ids: bytes, offset: int, observed: int) -> list[str]:
        """The events' log records or spans, as JSON objects, from f-strings (a fifth cheaper than
        %-templates, which are parsed again for every record), attributes in RecordBuilder's order.
        Addresses come from inet_ntop: nothing to escape."""
        logs = self.signal == "logs"
        observed_text = str(observed)  # the same for the batch: converted once
        hex_ids = ids.hex()
        ipv4, ipv6, ports, processes, errors = self._ipv4, self._ipv6, self._ports, self._processes, self._errors
        roles, unknown = SPAN_ROLES, SPAN_ROLES[abi.ROLE_UNKNOWN]
        transport, types = TRANSPORT_ATTRIBUTE, NETWORK_TYPES
        event_name, severity = _json(EVENT_NAME), SEVERITY_INFO
        CLIENT, SERVER = abi.ROLE_CLIENT, abi.ROLE_SERVER
        items = []
        append = items.append
        j = 0
        for birth, close, tx, rx, saddr, daddr, pid, error, sport, dport, family, role, _, _, comm in events:
            addresses = ipv4 if family == 4 else ipv6
            la, ra, lp, rp = addresses[saddr], addresses[daddr], ports[sport], ports[dport]
            process, comm_json = processes[pid, comm]
            error_attribute, error_suffix, status = errors[error] if error else ("", "", "")
            name_kind, role_attribute = roles.get(role) or unknown
            duration = (close - birth) / 1e6
            if role == SERVER:
                client, client_port, server, server_port = ra, rp, la, lp
            else:
                client, client_port, server, server_port = la, lp, ra, rp
            client_server = (
                f',{{"key":"client.address","value":{{"stringValue":"{client}"}}}},'
                f'{{"key":"client.port","value":{{"intValue":"{client_port}"}}}},'
                f'{{"key":"server.address","value":{{"stringValue":"{server}"}}}},'
                f'{{"key":"server.port","value":{{"intValue":"{server_port}"}}}}'
            ) if role == CLIENT or role == SERVER else ""
            attributes = (
                f'{transport},{types[family]},'
                f'{{"key":"network.local.address","value":{{"stringValue":"{la}"}}}},'
                f'{{"key":"network.local.port","value":{{"intValue":"{lp}"}}}},'
                f'{{"key":"network.peer.address","value":{{"stringValue":"{ra}"}}}},'
                f'{{"key":"network.peer.port","value":{{"intValue":"{rp}"}}}}'
                f'{client_server},{process},{role_attribute},'
                f'{{"key":"tcplife.bytes_sent","value":{{"intValue":"{tx}"}}}},'
                f'{{"key":"tcplife.bytes_received","value":{{"intValue":"{rx}"}}}},'
                f'{{"key":"tcplife.duration_ms","value":{{"doubleValue":{duration!r}}}}}{error_attribute}')
            if logs:
                body = body_text(family, comm_json, client, client_port, server, server_port, tx, rx, duration)
                append(f'{{"timeUnixNano":"{close + offset}","observedTimeUnixNano":"{observed_text}",'
                       f'"severityNumber":{severity},"body":{{"stringValue":"{body}{error_suffix}"}},'
                       f'"attributes":[{attributes}],"traceId":"{hex_ids[j:j + 32]}","spanId":"{hex_ids[j + 32:j + 48]}",'
                       f'"eventName":{event_name}}}')
            else:
                append(f'{{"traceId":"{hex_ids[j:j + 32]}","spanId":"{hex_ids[j + 32:j + 48]}",{name_kind},'
                       f'"startTimeUnixNano":"{birth + offset}","endTimeUnixNano":"{close + offset}",'
                       f'"attributes":[{attributes}]{status}}}')
            j += 48
        return items
