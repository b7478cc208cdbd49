"""The ring buffer positions are shared with the kernel: never seen half written."""

from __future__ import annotations

import mmap
import multiprocessing
import os
import struct
import time

from otel_tcplife.probe.ring import shared_u64

# Two values with no byte in common, and neither zero: a half-written field is neither.
A, B = 0x0123456789ABCDEF, 0xFEDCBA9876543210
WATCH_SECONDS = 1.0


def watch(fd: int, ready, results) -> None:
    """In another process, on another CPU if there is one: read the field as fast as possible."""
    with mmap.mmap(fd, mmap.PAGESIZE, mmap.MAP_SHARED, mmap.PROT_READ) as m:
        view = shared_u64(m)
        seen, torn = 0, set()
        ready.set()
        deadline = time.monotonic() + WATCH_SECONDS
        while time.monotonic() < deadline:
            for _ in range(1000):
                value = view[0]
                if value != A and value != B:
                    torn.add(value)
                seen += 1
        view.release()
    results.put((seen, sorted(torn)[:5]))


def run_writer(write) -> tuple[int, list[int]]:
    fd = os.memfd_create("position")
    try:
        os.ftruncate(fd, mmap.PAGESIZE)
        with mmap.mmap(fd, mmap.PAGESIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE) as m:
            struct.pack_into("=Q", m, 0, A)
            ctx = multiprocessing.get_context("fork")
            ready, results = ctx.Event(), ctx.Queue()
            watcher = ctx.Process(target=watch, args=(fd, ready, results))
            watcher.start()
            assert ready.wait(10)
            while watcher.is_alive():
                for _ in range(1000):
                    write(m, B)
                    write(m, A)
            outcome = results.get(timeout=10)
            watcher.join()
            return outcome
    finally:
        os.close(fd)


def test_positions_are_written_in_one_store():
    def write(m, value):
        view = shared_u64(m)
        view[0] = value
        view.release()

    seen, torn = run_writer(write)
    assert seen > 10_000
    assert torn == [], f"the watcher saw half-written positions: {[hex(v) for v in torn]}"
