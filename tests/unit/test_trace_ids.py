"""trace_ids.py: SipHash-2-4 as its authors give it, and the ids a connection's ISN pair makes."""

from __future__ import annotations

from otel_tcplife.trace_ids import connection_ids, siphash_u64


def test_siphash_matches_the_reference_vector():
    # The SipHash paper's test key 00..0f and the 8-byte message 00..07 (vectors.h: 0x93f5f5799a932462).
    key = bytes(range(16))
    message = int.from_bytes(bytes(range(8)), "little")
    assert siphash_u64(int.from_bytes(key[:8], "little"), int.from_bytes(key[8:], "little"), message) == \
        0x93F5F5799A932462


def test_ids_follow_from_the_pair_in_order_and_nothing_else():
    ids = connection_ids(1_000_000, 4_000_000_000)
    assert ids == connection_ids(1_000_000 + 2**32, 4_000_000_000)  # sequence numbers are 32 bits
    assert (len(ids.trace_id), len(ids.client_span_id), len(ids.server_span_id)) == (16, 8, 8)
    assert len({ids.trace_id[:8], ids.trace_id[8:], ids.client_span_id, ids.server_span_id}) == 4
    swapped = connection_ids(4_000_000_000, 1_000_000)  # the client's ISN comes first
    assert swapped.trace_id != ids.trace_id
    assert len({connection_ids(1, n).trace_id for n in range(1000)}) == 1000
