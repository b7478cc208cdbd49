"""SessionFrames writes, straight from the probe's events, what ProtoEncoder serializes for the
records RecordBuilder makes of the same events decoded into Sessions."""

from __future__ import annotations

import errno

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from otel_tcplife import abi
from otel_tcplife.enrich import ProcessNames
from otel_tcplife import caches
from otel_tcplife.output.otlp_frames import SessionFrames
from otel_tcplife.output.otlp_proto import ProtoEncoder
from otel_tcplife.output.otlp_wire import WireEncoder
from otel_tcplife.record import RecordBuilder
from otel_tcplife.session import Decoder, Session, as_events

from ..support import FixedClock
from .test_otlp_wire import OBSERVED, RESOURCE, SCOPE, varied_sessions


def assert_frames_match_records(sessions, frames: SessionFrames | None = None, offset=FixedClock.offset_ns) -> None:
    events = as_events(sessions)
    names = ProcessNames(proc="/nonexistent")
    records = RecordBuilder(names=names).build(Decoder().decode(events), offset, OBSERVED)
    frames = frames or SessionFrames(names)
    logs, spans = frames.encode(events, offset, OBSERVED)
    wire, proto = WireEncoder(RESOURCE, SCOPE), ProtoEncoder(RESOURCE, SCOPE)
    assert wire.requests(logs) == [(proto.logs_request(records).SerializeToString(), len(records))]
    assert wire.requests(spans) == [(proto.traces_request(records).SerializeToString(), len(records))]


def test_varied_sessions_byte_equal_cold_and_warm():
    sessions = varied_sessions(600)  # clients, servers, unknown, IPv6, errors, huge counters
    frames = SessionFrames(ProcessNames(proc="/nonexistent"))
    assert_frames_match_records(sessions, frames)
    assert_frames_match_records(sessions, frames)  # every cache warm


def test_long_bodies_zero_times_and_unknown_roles():
    long = varied_sessions(1)[0]._replace(
        family=6, laddr="2606:2800:220:1:248:1893:25c8:1946", raddr="2606:2800:220:1:248:1893:25c8:1947",
        comm="x" * 15, tx_bytes=2**50, rx_bytes=2**50, error=errno.ECONNREFUSED)  # a body over 125 bytes
    odd_role = varied_sessions(1)[0]._replace(role=77)
    assert_frames_match_records([long, odd_role])
    assert_frames_match_records([long._replace(birth_ns=0, close_ns=0)], offset=0)  # times left out (proto3)


def test_full_caches_are_cleared_and_refilled(monkeypatch):
    monkeypatch.setattr(caches, "CACHE_LIMIT", 3)
    frames = SessionFrames(ProcessNames(proc="/nonexistent"))
    assert_frames_match_records(varied_sessions(50), frames)
    assert all(len(cache) <= 3 for name, cache in frames.caches.items() if name != "port_text")  # ports: never


@pytest.mark.parametrize("logs,spans", [(True, False), (False, True)])
def test_only_the_signals_asked_for(logs, spans):
    log_records, span_records = SessionFrames().encode(as_events(varied_sessions(5)), 0, OBSERVED,
                                                       logs, spans)
    assert (len(log_records), len(span_records)) == (5 if logs else 0, 5 if spans else 0)


# Ports at the varint table's edges (otlp_wire.VARINTS) as well as anywhere.
PORTS = st.integers(0, 65535) | st.sampled_from([127, 128, 16383, 16384, 65535])
ADDRESSES = st.one_of(st.ip_addresses(v=4).map(lambda a: (4, str(a))), st.ip_addresses(v=6).map(lambda a: (6, str(a))))


@st.composite
def sessions(draw) -> Session:
    family, laddr = draw(ADDRESSES)
    raddr = draw(st.ip_addresses(v=family).map(str))
    birth = draw(st.integers(0, 2**62))
    return Session(
        pid=draw(st.integers(0, 2**22)), comm=draw(st.text(max_size=16)), family=family,
        laddr=laddr, lport=draw(PORTS), raddr=raddr, rport=draw(PORTS),
        tx_bytes=draw(st.integers(0, 2**63 - 1) | st.sampled_from([0, 1023, 1024, 16383, 16384, 2**32, 2**32 + 1])),
        rx_bytes=draw(st.integers(0, 2**63 - 1)), birth_ns=birth, close_ns=birth + draw(st.integers(0, 2**40)),
        role=draw(st.sampled_from([abi.ROLE_CLIENT, abi.ROLE_SERVER, abi.ROLE_UNKNOWN, 9])),
        error=draw(st.sampled_from([0, errno.ECONNREFUSED, errno.ECONNRESET, errno.ETIMEDOUT, 4242])),
        oldstate=draw(st.integers(0, 255)), owner=abi.OWNER_CONNECT,
        srtt_us=draw(st.integers(0, 2**32 - 1) | st.sampled_from([0, 1])),
        rtt_min_us=draw(st.integers(0, 2**32 - 1) | st.sampled_from([0, 1])),
        retransmits=draw(st.integers(0, 2**32 - 1) | st.sampled_from([0, 127, 128, 16384])),
        closed_by=draw(st.integers(0, 255) | st.sampled_from([0, 1, 2])),
        reset=draw(st.integers(0, 255) | st.sampled_from([0, 1, 2])),
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(sessions(), max_size=8))
def test_generated_sessions_byte_equal(generated):
    assert_frames_match_records(generated)
