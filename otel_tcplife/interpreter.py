"""Interpreter and allocator settings for a long-running agent with a per-batch hot path."""

from __future__ import annotations

import ctypes
import gc

# glibc mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8


def tune_malloc(arenas: int = 2, mmap_bytes: int = 128 * 1024, keep_bytes: int = 4 * 1024 * 1024) -> None:
    """Keep glibc malloc from holding on to freed memory, without paying page faults for every
    batch. Must run before any thread starts; a no-op off glibc.
    - Arenas: glibc gives each thread that allocates its own arena (up to 8 per core) and keeps
      what is freed there. Two are plenty for threads that mostly wait for the GIL.
    - Blocks of mmap_bytes or more (OTLP requests and gRPC's copies of them) come from mmap and
      go back at free. By default glibc raises its mmap threshold after each such free, so these
      blocks end up in the heap and fragment it. The price is page faults on every fresh block,
      so the hot paths keep their per-batch buffers under mmap_bytes (ring.RingReader,
      ndjson.CHUNK_LINES, otlp_json.CHUNK_RECORDS).
    - Up to keep_bytes free at the top of the heap stay mapped: a batch's buffers are freed and
      allocated again ten times a second, and trimming them each time costs page faults.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(M_ARENA_MAX, arenas)
    mallopt(M_MMAP_THRESHOLD, mmap_bytes)  # also turns the threshold's adjustment off
    mallopt(M_TRIM_THRESHOLD, keep_bytes)


def tune_collector() -> None:
    """Each session makes a few short-lived tuples that reference counting frees; frequent
    cyclic collections would only rescan the long-lived objects. Collect rarely, and never
    rescan what start-up built. Call once start-up is done."""
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
