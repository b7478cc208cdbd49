"""The record contract is one table: an attribute added to it appears in every output, with no other
edit; and the code the outputs generate from it is tested like any other."""

from __future__ import annotations

import ast
import errno
import json
import traceback

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource

from otel_tcplife import abi, codegen, contract
from otel_tcplife.contract import INT, STRING, Attribute, ByRole, Computed, Constant, Field, Lookup
from otel_tcplife.enrich import ProcessNames
from otel_tcplife.output import ndjson, otlp_frames, otlp_json
from otel_tcplife.output.otlp_frames import SessionFrames
from otel_tcplife.output.otlp_wire import WireEncoder
from otel_tcplife.session import as_events

from ..support import sample_session
from .test_journald import assert_entries_match_records, parse_entry, records_and_entries, text
from .test_otlp_frames import assert_frames_match_records
from .test_otlp_wire import OBSERVED, RESOURCE, SCOPE, varied_sessions
from .test_records import assert_otlp_json_matches_protobuf, build_all


def owner_text(owner: int) -> str:
    """A test lookup whose text needs JSON escaping."""
    return f'owner "{owner}" \\ ñ'


# Test-only attributes: one of each kind of source, type and presence.
TEST_ATTRIBUTES = {
    "int field": Attribute("test.oldstate", INT, Field("oldstate")),
    "string lookup": Attribute("test.owner", STRING, Lookup("owner", owner_text)),
    "double computed": Attribute("test.rate", contract.DOUBLE, Computed("rate", "tx_bytes / (rport + 1.5)")),
    "int computed": Attribute("test.total", INT, Computed("total", "tx_bytes + rx_bytes - lport")),
    "constant": Attribute("test.constant", STRING, Constant("yes")),
    "by role": Attribute("test.side", STRING, ByRole(client=Field("raddr"), unknown=Constant("?"))),
    "on error only": Attribute("test.failed", INT, Field("error"), only_if="error"),
    "16-bit field on error": Attribute("test.port", INT, Field("rport"), only_if="error"),
    # computed only in the records that have it: elsewhere tx_bytes is 0
    "computed when present": Attribute("test.per_byte", contract.DOUBLE, Computed("per_byte", "rx_bytes / tx_bytes"),
                                       only_if="tx_bytes"),
    "comm": Attribute("test.comm", STRING, Field("comm")),
    "process fact": Attribute("test.pid", INT, contract.ProcessFact("pid")),
    # the JSON outputs write these from caches of their whole text
    "double computed from one field": Attribute("test.half", contract.DOUBLE, Computed("half", "retransmits / 2"),
                                                only_if="retransmits"),
    "lookup present when its field is": Attribute("test.reset", STRING, Lookup("reset", owner_text), only_if="reset"),
    "lookup present on another field": Attribute("test.owner_on_error", STRING, Lookup("owner", owner_text),
                                                 only_if="error"),
    "bool lookup": Attribute("test.accepted", contract.BOOL, Lookup("owner", lambda owner: owner == 2)),
    "bool constant": Attribute("test.traced", contract.BOOL, Constant(True)),
}

SESSIONS = [
    sample_session(srtt_us=1234, rtt_min_us=1000, retransmits=3, closed_by=abi.CLOSED_BY_LOCAL),
    sample_session(role=abi.ROLE_SERVER, error=errno.ECONNRESET, oldstate=7, owner=abi.OWNER_ACCEPT,
                   reset=abi.RESET_RECEIVED, closed_by=abi.CLOSED_BY_PEER, srtt_us=1),
    sample_session(role=abi.ROLE_UNKNOWN, family=6, laddr="::1", raddr="::2", comm='x"y\\z ñ'),
    sample_session(role=77, error=errno.ECONNREFUSED, tx_bytes=0, rx_bytes=2**40, rport=65535),
]


def with_attribute(monkeypatch, attribute: Attribute, where: str) -> tuple[str, ...]:
    """The table with the attribute added (first, in the middle or last): the keys in order."""
    table = contract.SESSION_ATTRIBUTES
    at = {"first": 0, "middle": len(table) // 2, "last": len(table)}[where]
    monkeypatch.setattr(contract, "SESSION_ATTRIBUTES", table[:at] + (attribute,) + table[at:])
    return tuple(a.key for a in contract.SESSION_ATTRIBUTES)


def expected_value(attribute: Attribute, s):
    source = attribute.source_for(s.role)
    if source is None or (attribute.only_if and not getattr(s, attribute.only_if)):
        return None
    return attribute.type.python(source.value_of(s, ProcessNames(proc="/nonexistent")))


@pytest.mark.parametrize("where", ["first", "middle", "last"])
@pytest.mark.parametrize("kind", TEST_ATTRIBUTES)
def test_an_attribute_added_to_the_table_appears_in_every_output(monkeypatch, kind, where):
    attribute = TEST_ATTRIBUTES[kind]
    if where == "first" and attribute.only_if:
        pytest.skip("a record's first attribute must be in every record (OTLP/JSON's commas)")
    keys = with_attribute(monkeypatch, attribute, where)
    resource = Resource.create({"service.name": "test"})

    # RecordBuilder, NDJSON and OTLP/JSON, all made with no table given: they read the changed one.
    records, rows, otlp_json_lines = build_all(*SESSIONS, resource=resource)
    logs, traces = assert_otlp_json_matches_protobuf(records, otlp_json_lines, resource)
    for s, record, row in zip(SESSIONS, records, rows):
        expected = expected_value(attribute, s)
        attributes = dict(record.attributes)
        assert attributes.get(attribute.key) == expected
        # in the table's order, in the records and in the NDJSON lines
        assert [k for k, _ in record.attributes] == [k for k in keys if k in attributes]
        assert list(row)[5:] == [k for k, _ in record.attributes]
        assert row.get(attribute.key) == expected
    for message in (logs.resource_logs[0].scope_logs[0].log_records, traces.resource_spans[0].scope_spans[0].spans):
        assert [flat(r.attributes).get(attribute.key) for r in message] == [expected_value(attribute, s)
                                                                            for s in SESSIONS]

    # journald entries: field for field the records, the attribute as its journald field.
    assert_entries_match_records(SESSIONS)
    _, entries = records_and_entries(SESSIONS)
    assert [dict(parse_entry(entry)).get(attribute.journald_field) for entry in entries] == [
        None if expected_value(attribute, s) is None else text(expected_value(attribute, s)) for s in SESSIONS]

    # OTLP protobuf frames: byte for byte ProtoEncoder's, and decoded with the generated classes.
    assert_frames_match_records(SESSIONS)
    assert_frames_match_records(varied_sessions(60))
    events = as_events(SESSIONS)
    log_records, spans = SessionFrames(ProcessNames(proc="/nonexistent")).encode(
        events, 0, OBSERVED)
    wire = WireEncoder(RESOURCE, SCOPE)
    (logs_request, _), = wire.requests(log_records)
    (traces_request, _), = wire.requests(spans)
    decoded_logs = ExportLogsServiceRequest.FromString(logs_request).resource_logs[0].scope_logs[0].log_records
    decoded_spans = ExportTraceServiceRequest.FromString(traces_request).resource_spans[0].scope_spans[0].spans
    for message in (decoded_logs, decoded_spans):
        assert [flat(r.attributes).get(attribute.key) for r in message] == [expected_value(attribute, s)
                                                                            for s in SESSIONS]


def flat(attributes) -> dict:
    return {kv.key: getattr(kv.value, kv.value.WhichOneof("value")) for kv in attributes}


def test_the_generated_code_is_made_once_per_table(monkeypatch):
    default = ndjson.NdjsonEncoder().generated
    assert ndjson.NdjsonEncoder().generated is default  # made when the module loaded
    with_attribute(monkeypatch, TEST_ATTRIBUTES["int field"], "last")
    changed = ndjson.NdjsonEncoder().generated
    assert changed is not default and "test.oldstate" in changed.source and "test.oldstate" not in default.source


def test_extended_attributes_are_in_extended_mode_only(monkeypatch):
    extended = Attribute("test.extended", INT, Field("oldstate"), extended=True)
    monkeypatch.setattr(contract, "SESSION_ATTRIBUTES", contract.SESSION_ATTRIBUTES + (extended,))
    assert extended not in contract.attributes()
    assert contract.attributes(extended=True)[-1] is extended
    events = as_events([sample_session()])
    for attributes, present in ((None, False), (contract.attributes(extended=True), True)):
        line = b"".join(ndjson.NdjsonEncoder(attributes=attributes).encode(events, 0))
        assert (b'"test.extended":4' in line) is present


def test_journald_field_names():
    assert [a.journald_field for a in contract.SESSION_ATTRIBUTES[:4]] == [
        "NETWORK_TRANSPORT", "NETWORK_TYPE", "NETWORK_LOCAL_ADDRESS", "NETWORK_LOCAL_PORT"]


def test_a_table_without_roles_makes_one_branch_but_for_the_servers_parent():
    table = tuple(a for a in contract.SESSION_ATTRIBUTES if not isinstance(a.source, ByRole))
    assert codegen.role_switch({"client": ["x"], "server": ["x"], "unknown": ["x"]}) == ["x"]
    source = ndjson.generated_encoder(table).source
    assert "role ==" in source and source.count("parent_span_id") == 1  # only the server's branch differs
    sessions = [sample_session(role=role) for role in (abi.ROLE_CLIENT, abi.ROLE_SERVER, abi.ROLE_UNKNOWN)]
    events = as_events(sessions)
    rows = b"".join(ndjson.NdjsonEncoder(attributes=table).encode(events, 0)).splitlines()
    assert [json.loads(row)["tcplife.bytes_sent"] for row in rows] == [1229] * 3


def test_a_conditional_first_attribute_is_refused_where_it_cannot_be_written():
    table = (Attribute("error.type", STRING, contract.ERROR_NAME, only_if="error"),) + contract.SESSION_ATTRIBUTES
    with pytest.raises(ValueError, match="first attribute"):
        otlp_json.generated_encoder(table, "traces")


def generated_sources():
    table = contract.attributes()
    return {"ndjson": ndjson.generated_encoder(table).source,
            "otlp_json logs": otlp_json.generated_encoder(table, "logs").source,
            "otlp_json traces": otlp_json.generated_encoder(table, "traces").source,
            "otlp_frames": otlp_frames.generated_encoder(table).source}


@pytest.mark.parametrize("name", ["ndjson", "otlp_json logs", "otlp_json traces", "otlp_frames"])
def test_generated_fstrings_stay_within_one_build_string(name):
    """Past codegen.FSTRING_PARTS parts an f-string is built through a list and str.join: slower."""
    tree = ast.parse(generated_sources()[name])
    sizes = [len(node.values) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr)]
    assert sizes and max(sizes) <= codegen.FSTRING_PARTS


@pytest.mark.parametrize("name", ["ndjson", "otlp_json logs", "otlp_json traces", "otlp_frames"])
def test_generated_loops_read_events_by_field_name(name):
    assert f"for {abi.EVENT_TARGET} in events:" in generated_sources()[name]


def test_a_traceback_through_generated_code_shows_its_line():
    events = as_events([sample_session(tx_bytes=2**63)])  # beyond int64: refused, as protobuf does
    with pytest.raises(ValueError) as raised:
        SessionFrames().encode(events, 0, OBSERVED)
    frames = traceback.extract_tb(raised.value.__traceback__)
    (generated,) = [f for f in frames if f.filename == "<generated otel_tcplife/output/otlp_frames.py: encode>"]
    assert "int64_varint(tx_bytes)" in generated.line
    assert generated.line in otlp_frames.generated_encoder(contract.attributes()).source


def test_computed_expressions_read_the_event_fields_they_come_from():
    assert codegen.event_expression("rport - lport") == "dport - sport"
    with pytest.raises(ValueError):
        codegen.event_expression("laddr + 1")


@pytest.mark.parametrize("name", ["span_head", "body", "varints"])
def test_a_value_named_like_the_outputs_own_locals_is_refused(name):
    """A silent clash would write the wrong value; the generator refuses it instead."""
    table = contract.attributes() + (Attribute("test.clash", INT, Computed(name, "close_ns + 1")),)
    with pytest.raises(ValueError, match=name):
        otlp_frames.generated_encoder(table)


def test_json_outputs_write_a_value_of_one_number_field_from_a_cache_of_its_whole_attribute():
    """A Lookup, or a double computed from one field: its attribute's text comes whole from a cache by
    that field, with no formatting per record. A one-byte field's cache is a plain dict of all 256
    values ("" where the attribute is absent): no test per record either."""
    extended = contract.attributes(extended=True)  # the wire facts are -x's
    source = ndjson.generated_encoder(extended).source
    assert "srtt_us / 1000.0" not in source and "tcplife_rtt_ms_text[srtt_us] if srtt_us else" in source
    assert "{tcplife_reset_text[reset]}" in source and "if reset" not in source
    caches = ndjson.NdjsonEncoder(attributes=extended).caches
    assert type(caches["tcplife_reset_text"]) is dict and len(caches["tcplife_reset_text"]) == 256
    assert caches["tcplife_reset_text"][0] == "" and caches["tcplife_reset_text"][1] == ',"tcplife.reset":"sent"'
