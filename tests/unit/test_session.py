"""Decoder: raw event tuples -> Sessions, with its caches keyed so that families never mix."""

from __future__ import annotations

import socket

from otel_tcplife import abi
from otel_tcplife.session import Decoder, Session


def event(family: int, saddr: bytes, daddr: bytes, comm: bytes = b"curl") -> tuple:
    return abi.EVENT.unpack(abi.EVENT.pack(
        1_000, 3_000, 10, 20, saddr, daddr, 42, 0, 40000, 80, family, abi.ROLE_CLIENT, 1, 0, comm))


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
                              role=abi.ROLE_CLIENT, error=0, oldstate=1, owner=0)
