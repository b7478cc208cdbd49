"""SessionFrames writes, straight from sessions, what ProtoEncoder serializes for RecordBuilder's records."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from otel_tcplife.enrich import ProcessNames
from otel_tcplife.output import otlp_frames
from otel_tcplife.output.otlp_frames import SessionFrames
from otel_tcplife.output.otlp_proto import ProtoEncoder
from otel_tcplife.output.otlp_wire import WireEncoder
from otel_tcplife.record import RecordBuilder

from ..support import FixedClock
from .test_otlp_wire import RESOURCE, SCOPE, sessions, varied

OBSERVED = 1_800_000_000_123_456_789


def assert_frames_match_records(session_list, frames: SessionFrames | None = None) -> None:
    ids = os.urandom(24 * len(session_list))
    names = ProcessNames(proc="/nonexistent")
    records = RecordBuilder(clock=FixedClock(), names=names).build(session_list, ids, FixedClock.offset_ns, OBSERVED)
    frames = frames or SessionFrames(names)
    logs, spans = frames.encode(session_list, ids, FixedClock.offset_ns, OBSERVED)
    wire, proto = WireEncoder(RESOURCE, SCOPE), ProtoEncoder(RESOURCE, SCOPE)
    assert wire.requests(logs) == [(proto.logs_request(records).SerializeToString(), len(records))]
    assert wire.requests(spans) == [(proto.traces_request(records).SerializeToString(), len(records))]


def test_varied_sessions_byte_equal_cold_and_warm():
    session_list = [r.session for r in varied(600)]  # clients, servers, unknown, IPv6, errors, huge counters
    frames = SessionFrames(ProcessNames(proc="/nonexistent"))
    assert_frames_match_records(session_list, frames)
    assert_frames_match_records(session_list, frames)  # every cache warm


def test_full_caches_are_cleared_and_refilled(monkeypatch):
    monkeypatch.setattr(otlp_frames, "CACHE_LIMIT", 3)
    frames = SessionFrames(ProcessNames(proc="/nonexistent"))
    assert_frames_match_records([r.session for r in varied(50)], frames)
    assert len(frames._addresses) <= 3 and len(frames._processes) <= 3


@pytest.mark.parametrize("logs,spans", [(True, False), (False, True)])
def test_only_the_signals_asked_for(logs, spans):
    session_list = [r.session for r in varied(5)]
    log_records, span_records = SessionFrames().encode(session_list, os.urandom(120), 0, OBSERVED, logs, spans)
    assert (len(log_records), len(span_records)) == (5 if logs else 0, 5 if spans else 0)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(sessions(), max_size=8))
def test_generated_sessions_byte_equal(generated):
    assert_frames_match_records(generated)
