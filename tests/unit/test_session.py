"""Decoder: raw event tuples -> Sessions, with its caches keyed so that families never mix; and back."""

from __future__ import annotations

import socket

from otel_tcplife import abi
from otel_tcplife.session import Decoder, Session, as_events

from ..support import sample_session


SPAN_IDS = bytes(range(32))


def event(family: int, saddr: bytes, daddr: bytes, comm: bytes = b"curl") -> tuple:
    return abi.EVENT.unpack(abi.EVENT.pack(
        1_000, 3_000, 10, 20, saddr, daddr, 42, 0, 40000, 80, family, abi.ROLE_CLIENT, 1, 0, comm,
        250, 120, 3, abi.CLOSED_BY_PEER, abi.RESET_RECEIVED, 0, 7, 123_000_000, SPAN_IDS))


def test_the_same_raw_bytes_decode_by_family():
    # 127.0.0.1 padded to 16 bytes is also the IPv6 address 7f00:1::
    raw = socket.inet_aton("127.0.0.1") + bytes(12)
    other = socket.inet_pton(socket.AF_INET6, "2001:db8::1")
    decoder = Decoder()
    for _ in range(2):  # the second time from the caches
        v4, v6 = decoder.decode([event(4, raw, raw), event(6, raw, other)])
        assert (v4.laddr, v4.raddr) == ("127.0.0.1", "127.0.0.1")
        assert (v6.laddr, v6.raddr) == ("7f00:1::", "2001:db8::1")


def test_every_field_lands_in_place():
    raw = socket.inet_aton("10.0.0.1") + bytes(12)
    peer = socket.inet_aton("10.0.0.2") + bytes(12)
    (session,) = Decoder().decode([event(4, raw, peer, comm=b"nginx\0worker")])
    assert session == Session(pid=42, comm="nginx", family=4, laddr="10.0.0.1", lport=40000, raddr="10.0.0.2",
                              rport=80, tx_bytes=10, rx_bytes=20, birth_ns=1_000, close_ns=3_000,
                              role=abi.ROLE_CLIENT, error=0, oldstate=1, owner=0, srtt_us=250, rtt_min_us=120,
                              retransmits=3, closed_by=abi.CLOSED_BY_PEER, reset=abi.RESET_RECEIVED,
                              cgroup_id=7, start_ns=123_000_000, span_ids=SPAN_IDS)


def test_as_events_is_the_inverse_of_decode():
    sessions = [sample_session(span_ids=SPAN_IDS), sample_session(family=6, laddr="::1", raddr="2001:db8::7", comm="x" * 15,
                                                 role=abi.ROLE_SERVER, error=104, tx_bytes=2**64 - 1,
                                                 srtt_us=2**32 - 1, rtt_min_us=7, retransmits=300,
                                                 closed_by=abi.CLOSED_BY_LOCAL, reset=abi.RESET_SENT,
                                                 span_ids=SPAN_IDS)]
    events = as_events(sessions)
    assert Decoder().decode(events) == sessions
    assert Decoder().decode(as_events([sample_session()]))[0].span_ids[24:] == abi.NO_PARENT  # random ids: a root
    assert events[0][4] == socket.inet_aton("10.0.0.5") + bytes(12)  # IPv4 zero-padded, as the probe does
    # the kernel's comm holds 16 bytes: longer names are cut
    assert Decoder().decode(as_events([sample_session(comm="y" * 20)]))[0].comm == "y" * 16
