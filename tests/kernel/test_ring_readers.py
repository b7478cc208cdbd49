"""Both ring buffer readers, on the same real sessions: the mmap reader (x86-64) and the one through
libbpf's ring_buffer__consume (every other architecture) must read the same records, in batches of
at most MAX_BATCH_RECORDS, none lost."""

from __future__ import annotations

import time

import pytest

from otel_tcplife.probe import CoreProbe, ProbeSettings, ring
from otel_tcplife.session import Decoder


def test_auto_picks_the_mmap_reader_only_where_plain_accesses_are_acquire_release():
    assert ring.default_ring_reader("x86_64") == "mmap"
    for machine in ("aarch64", "ppc64le", "s390x", "riscv64"):
        assert ring.default_ring_reader(machine) == "libbpf"


@pytest.mark.parametrize("max_batch", [ring.MAX_BATCH_RECORDS, 7])
def test_both_readers_read_the_same_sessions(traffic, monkeypatch, max_batch):
    monkeypatch.setattr(ring, "MAX_BATCH_RECORDS", max_batch)
    server, port = traffic.server(name="tl-server", count=40)
    probes = {name: CoreProbe(ProbeSettings(local_ports=(port,), ring_reader=name)).start()
              for name in ("mmap", "libbpf")}
    try:
        assert isinstance(probes["libbpf"]._ring, ring.LibbpfRingReader)
        assert isinstance(probes["mmap"]._ring, ring.RingReader)
        traffic.client(name="tl-client", port=port, count=40).events()
        server.events()
        time.sleep(0.2)
        read = {}
        for name, probe in probes.items():
            batches = []
            while batch := probe.read(0.05):
                batches.append(batch)
            assert batches and max(len(b) for b in batches) <= max_batch
            read[name] = Decoder().decode([event for batch in batches for event in batch])
    finally:
        for probe in probes.values():
            probe.close()
    assert len(read["mmap"]) == 40
    # Each probe stamps birth and close itself, a moment apart: every other field is the same.
    same = lambda sessions: [s._replace(birth_ns=0, close_ns=0) for s in sessions]  # noqa: E731
    assert same(read["libbpf"]) == same(read["mmap"])
