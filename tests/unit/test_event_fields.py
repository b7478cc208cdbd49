"""The probe unpacks only the event fields the outputs read: each output gives the same bytes from
events holding just those as from whole events, and the pipeline asks for what its outputs need."""

from __future__ import annotations

import io

import pytest

from otel_tcplife import abi, codegen, contract
from otel_tcplife.cli import parse_config
from otel_tcplife.config import TableStyle
from otel_tcplife.enrich import ProcessNames
from otel_tcplife.output.journald import JournaldEncoder
from otel_tcplife.output.ndjson import NdjsonEncoder
from otel_tcplife.output.otlp_frames import SessionFrames
from otel_tcplife.output.otlp_json import OtlpJsonEncoder
from otel_tcplife.output.table import TableWriter
from otel_tcplife.pipeline import OWNER_FIELDS, Pipeline
from otel_tcplife.session import as_events

from .test_otlp_wire import varied_sessions

OBSERVED = 1_800_000_000_000_000_000


RAW = [abi.pack_event(**dict(zip(abi.EVENT_NAMES, event))) for event in as_events(varied_sessions(60))]


def read_for(fields: tuple[str, ...]) -> list[tuple]:
    """The events as a probe reading only these fields hands them over."""
    return [abi.event_struct(fields).unpack(raw) for raw in RAW]


def test_an_event_read_for_some_fields_holds_just_those():
    fields = abi.event_fields(["comm", "pid", "span_ids"])
    assert fields == ("pid", "comm", "span_ids")
    assert abi.event_struct(fields).size == abi.EVENT.size
    (event,) = read_for(fields)[:1]
    full = abi.EVENT.unpack(RAW[0])
    assert event == abi.event_getter(*fields)(full)
    assert abi.event_getter("span_ids", "pid", fields=fields)(event) == (full[-1], full[abi.EVENT_NAMES.index("pid")])
    with pytest.raises(ValueError):
        abi.event_fields(["pid", "no_such_field"])
    with pytest.raises(ValueError):
        abi.event_struct(("comm", "pid"))  # out of struct order


def encoders(extended: bool):
    names = ProcessNames(proc="/nonexistent")
    attributes = contract.attributes(extended=extended)
    yield "ndjson", NdjsonEncoder(names, attributes), lambda e, events: b"".join(e.encode(events, 0))
    for signal in ("logs", "traces"):
        yield f"otlp-json {signal}", OtlpJsonEncoder({}, {}, signal, names, attributes), \
            lambda e, events: b"".join(e.encode(events, 0, OBSERVED))
    yield "journald", JournaldEncoder("", names, attributes), \
        lambda e, events: b"".join(entry for chunk in e.encode(events) for entry in chunk)
    yield "frames", SessionFrames(names, attributes), lambda e, events: b"".join(map(b"".join, e.encode(events, 0, 0)))


@pytest.mark.parametrize("extended", [False, True])
def test_every_output_writes_the_same_from_the_fields_it_reads(extended):
    whole = [abi.EVENT.unpack(raw) for raw in RAW]
    for name, encoder, encode in encoders(extended):
        expected = encode(encoder, whole)
        fields = encoder.fields_read
        assert len(fields) < len(abi.EVENT_NAMES), name
        assert ("srtt_us" in fields) is extended and "cgroup_id" not in fields, name
        encoder.read_fields(fields)
        assert encode(encoder, read_for(fields)) == expected, name
        with pytest.raises(ValueError, match="reads event fields"):
            encoder.read_fields(fields[1:])


@pytest.mark.parametrize("extended", [False, True])
def test_the_table_writes_the_same_from_the_fields_it_reads(extended):
    def rows(events, fields):
        out = io.StringIO()
        table = TableWriter(out, TableStyle(extended=extended, timestamp=True))
        table.read_fields(fields)
        table.write(events)
        return out.getvalue()

    table = TableWriter(io.StringIO(), TableStyle(extended=extended))
    assert ("retransmits" in table.fields_read) is extended and "span_ids" not in table.fields_read
    assert rows(read_for(table.fields_read), table.fields_read) == rows(
        [abi.EVENT.unpack(raw) for raw in RAW], abi.EVENT_NAMES)


def test_a_loop_that_reads_a_field_its_events_lack_is_refused():
    with pytest.raises(ValueError, match="comm"):
        codegen.loop_source("f", "events", codegen.Values(), [], ["x = comm"], [], [], fields=("pid",))


@pytest.mark.parametrize("argv,has,lacks", [
    (["--format", "table"], {"comm", "tx_bytes"}, {"span_ids", "error", "srtt_us", "cgroup_id"}),
    (["--format", "table", "-x"], {"srtt_us", "oldstate"}, {"span_ids", "cgroup_id"}),
    (["--format", "ndjson", "--resource", "agent"], {"span_ids", "error", "role"}, {"srtt_us", "cgroup_id"}),
    (["--format", "ndjson", "--resource", "process"], set(OWNER_FIELDS), {"srtt_us"}),
    (["--format", "ndjson", "-x", "--resource", "agent"], {"retransmits", "closed_by"}, {"cgroup_id"}),
])
def test_the_pipeline_asks_for_what_its_outputs_read(argv, has, lacks):
    pipeline = Pipeline(parse_config(argv), io.TextIOWrapper(io.BytesIO()))
    fields = pipeline.read_fields()
    assert has <= set(fields) and not lacks & set(fields)
    assert fields == abi.event_fields(fields)
