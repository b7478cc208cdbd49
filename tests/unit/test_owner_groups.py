"""With --resource process, OTLP/JSON and OTLP make each record in the events' order and keep it with its
owner's: the same records, under the same Resources and in the same order, as grouping the events by
Resource first (identity.ProcessResources.group) and encoding each group gives."""

from __future__ import annotations

import json
from itertools import chain

import pytest

from otel_tcplife import abi
from otel_tcplife.caches import Formatted
from otel_tcplife.codegen import OWNER_FIELDS
from otel_tcplife.enrich import ProcessNames
from otel_tcplife.identity import CgroupPaths, ProcessResources
from otel_tcplife.output import otlp_json
from otel_tcplife.output.otlp_frames import SessionFrames
from otel_tcplife.output.otlp_json import CHUNK_RECORDS, OtlpJsonEncoder
from otel_tcplife.output.otlp_wire import WireEncoder, resource_field
from otel_tcplife.resource import resource_json, resource_proto, scope_json, scope_proto
from otel_tcplife.session import as_events

from .test_otlp_wire import varied_sessions

OBSERVED = 1_800_000_000_000_000_000
OFFSET = 1_700_000_000_000_000_000
AGENT = {"host.name": "node-1", "os.type": "linux"}
owner_of = abi.event_getter(*OWNER_FIELDS)


def owned_events(n: int) -> list[tuple]:
    """Events of interleaved owners: pids, thread names (comm), a reused pid (another start) and
    cgroups; the pids do not exist here (/proc is not read), so each owner's Resource is what the
    kernel gave."""
    sessions = varied_sessions(n)
    return as_events([s._replace(pid=4_000_000 + i % 5, comm=("web", "worker-1", "worker-2")[i % 3],
                                 start_ns=(i % 4 == 0) * 7, cgroup_id=(i % 2) * 11)
                      for i, s in enumerate(sessions)])


@pytest.fixture
def identity() -> ProcessResources:
    return ProcessResources(AGENT, ProcessNames("/nonexistent"), proc="/nonexistent", cgroups=CgroupPaths(root=None))


def grouped_first(identity: ProcessResources, events: list[tuple]) -> list[tuple[tuple, list[tuple]]]:
    return identity.group(events, map(owner_of, events))


def json_groups(lines: list[bytes], signal: str) -> list[list[tuple[str, list[dict]]]]:
    """Per line: (the Resource's JSON, its records) per ResourceLogs (ResourceSpans)."""
    kind, scope, records = (("resourceLogs", "scopeLogs", "logRecords") if signal == "logs"
                            else ("resourceSpans", "scopeSpans", "spans"))
    result = []
    for line in lines:
        assert line.endswith(b"\n") and line.count(b"\n") == 1
        result.append([(json.dumps(group["resource"], sort_keys=True), group[scope][0][records])
                       for group in json.loads(line)[kind]])
    return result


@pytest.mark.parametrize("signal", ["logs", "traces"])
def test_otlp_json_by_owner_equals_grouping_first(identity, monkeypatch, signal):
    monkeypatch.setattr(otlp_json, "LINE_RECORDS", 40)  # several lines, each grouped on its own
    events = owned_events(100)

    def resource_text(owner):
        return json.dumps(resource_json(identity.owner_resource(owner)))

    by_owner = OtlpJsonEncoder({}, scope_json(), signal, resources=Formatted(resource_text))
    pieces = list(by_owner.encode(events, OFFSET, OBSERVED))
    assert [piece.count(b'"spanId"') for piece in pieces] == [CHUNK_RECORDS, 8, CHUNK_RECORDS, 8, 20]
    lines = b"".join(pieces).splitlines(keepends=True)
    expected_lines = []
    plain = OtlpJsonEncoder({}, scope_json(), signal)
    for start in range(0, len(events), 40):
        parts = [(json.dumps(resource_json(resource)), group)
                 for resource, group in grouped_first(identity, events[start:start + 40])]
        expected_lines += b"".join(plain.encode_groups(parts, OFFSET, OBSERVED)).splitlines(keepends=True)
    got, expected = json_groups(lines, signal), json_groups(expected_lines, signal)
    assert got == expected
    # Each line: one group per Resource, though several owners share one (a pid with other start times
    # and cgroups: gone, so the Resource has only what the kernel gave).
    for line in got:
        assert len({resource for resource, _ in line}) == len(line)
    assert sum(len(records) for line in got for _, records in line) == len(events)


def test_otlp_json_by_owner_merges_owners_of_one_resource(identity):
    """Two owners whose Resources are equal (the threads of one live process, each with its own comm)
    are one ResourceLogs, their records in the order of the owners' first appearance."""
    events = owned_events(30)
    same = json.dumps({"attributes": []})
    encoder = OtlpJsonEncoder({}, scope_json(), resources=Formatted(lambda owner: same))
    (line,) = json_groups(b"".join(encoder.encode(events, OFFSET, OBSERVED)).splitlines(keepends=True), "logs")
    assert len(line) == 1 and len(line[0][1]) == len(events)
    owners = list(dict.fromkeys(map(owner_of, events)))
    order = sorted(range(len(events)), key=lambda i: owners.index(owner_of(events[i])))
    assert [r["spanId"] for r in line[0][1]] == [events[i][abi.EVENT_NAMES.index("span_ids")][16:24].hex()
                                                 for i in order]


@pytest.mark.parametrize("signal", ["logs", "traces"])
def test_frames_by_owner_make_the_requests_grouping_first_makes(identity, signal):
    events = owned_events(90)
    wire = WireEncoder(resource_proto({}), scope_proto())
    fields = {}

    def field(resource):
        return fields.setdefault(resource, resource_field(resource_proto(resource)))

    owned = SessionFrames(by_owner=True).encode_owned(events, OFFSET, OBSERVED)
    which = 0 if signal == "logs" else 1
    runs = [(field(identity.owner_resource(owner)), len(frames[which])) for owner, frames in owned.items()]
    framed = list(chain.from_iterable(frames[which] for frames in owned.values()))
    assert len(framed) == len(events) and len(owned) == len(set(map(owner_of, events)))

    groups = grouped_first(identity, events)
    reference = SessionFrames().encode(list(chain.from_iterable(g for _, g in groups)), OFFSET, OBSERVED)[which]
    reference_runs = [(field(resource), len(group)) for resource, group in groups]
    assert wire.grouped_requests(framed, runs) == wire.grouped_requests(reference, reference_runs)
    assert sorted(framed) == sorted(reference)
