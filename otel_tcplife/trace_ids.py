"""How a connection's span ids follow from its two initial sequence numbers.

Both ends of a TCP connection see the same pair of ISNs (NAT rewrites addresses and ports, not
those), so two agents that never talk give the two ends the same trace: the client's span is the
root (`tcp connect`), the server's span (`tcp accept`) its child. The probe computes these ids in the
kernel (bpf/tcplife.bpf.c, fill_span_ids); this is the same function in Python, the reference the
tests check the kernel against and the way to find a connection's trace from a packet capture:

    message = client ISN, server ISN (little-endian u32 each: 8 bytes)
    trace id = SipHash-2-4(key (K, 1), message) || SipHash-2-4(key (K, 2), message)
    client span id = SipHash-2-4(key (K, 3), message); server span id = SipHash-2-4(key (K, 4), message)

each hash's u64 written little-endian, K = IDS_KEY; a span id that would be zero is 1. The keys are
public and fixed: they separate the four uses, they are not secrets.
"""

from __future__ import annotations

from typing import NamedTuple

IDS_KEY = 0x6F74656C2D746370  # "otel-tcp"
KEY_TRACE_HIGH, KEY_TRACE_LOW, KEY_CLIENT_SPAN, KEY_SERVER_SPAN = 1, 2, 3, 4
_MASK = (1 << 64) - 1


def _rotl(x: int, b: int) -> int:
    return ((x << b) | (x >> (64 - b))) & _MASK


def siphash_u64(k0: int, k1: int, message: int) -> int:
    """SipHash-2-4 of one 8-byte message (the u64 `message`, little-endian) under the key (k0, k1)."""
    v0, v1 = k0 ^ 0x736F6D6570736575, k1 ^ 0x646F72616E646F6D
    v2, v3 = k0 ^ 0x6C7967656E657261, k1 ^ 0x7465646279746573

    def rounds(n: int) -> None:
        nonlocal v0, v1, v2, v3
        for _ in range(n):
            v0 = (v0 + v1) & _MASK; v1 = _rotl(v1, 13); v1 ^= v0; v0 = _rotl(v0, 32)  # noqa: E702
            v2 = (v2 + v3) & _MASK; v3 = _rotl(v3, 16); v3 ^= v2  # noqa: E702
            v0 = (v0 + v3) & _MASK; v3 = _rotl(v3, 21); v3 ^= v0  # noqa: E702
            v2 = (v2 + v1) & _MASK; v1 = _rotl(v1, 17); v1 ^= v2; v2 = _rotl(v2, 32)  # noqa: E702

    last = 8 << 56  # the final block: the message's length, no bytes left
    v3 ^= message
    rounds(2)
    v0 ^= message
    v3 ^= last
    rounds(2)
    v0 ^= last
    v2 ^= 0xFF
    rounds(4)
    return v0 ^ v1 ^ v2 ^ v3


class ConnectionIds(NamedTuple):
    trace_id: bytes  # 16 bytes
    client_span_id: bytes  # 8 bytes: the client span's, and the server span's parent
    server_span_id: bytes  # 8 bytes


def connection_ids(client_isn: int, server_isn: int) -> ConnectionIds:
    """The ids both agents give the connection whose client and server chose these ISNs."""
    message = (server_isn & 0xFFFFFFFF) << 32 | (client_isn & 0xFFFFFFFF)

    def hashed(purpose: int, nonzero: bool = False) -> bytes:
        value = siphash_u64(IDS_KEY, purpose, message)
        return (value or (1 if nonzero else 0)).to_bytes(8, "little")

    return ConnectionIds(hashed(KEY_TRACE_HIGH) + hashed(KEY_TRACE_LOW),
                         hashed(KEY_CLIENT_SPAN, nonzero=True), hashed(KEY_SERVER_SPAN, nonzero=True))
