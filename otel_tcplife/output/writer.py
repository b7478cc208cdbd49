"""Stdout written from a thread of its own, for NDJSON and OTLP/JSON.

Why: write() releases the GIL, so while the kernel copies one chunk into a pipe, a file or the
journal, the reading thread encodes the next ones. At the maximum connection rate OTLP/JSON
spends a fifth of its CPU in those writes; written from the reading thread they added to the
time it was away from the ring buffer, which then overflowed in some runs (bench/run.py
--modes otlp-json --agent-defaults --seconds 20: sessions lost in 2 runs of 5 without this
thread, in none of 5 with it).

Bounded: writelines() blocks while max_chunks chunks wait, so a slow reader of stdout slows the
agent (the ring buffer absorbs that, and counts what it cannot) instead of growing memory. Order
is kept: one thread writes, first in, first out. A write error (the reader went away) is raised
in the caller's thread, by the next check(), writelines() or close().
"""

from __future__ import annotations

import queue
import threading
from typing import BinaryIO, Iterable

MAX_CHUNKS = 16  # ~1 MB of NDJSON or OTLP/JSON at most waiting


class ThreadedWriter:
    def __init__(self, stream: BinaryIO, max_chunks: int = MAX_CHUNKS) -> None:
        self._stream = stream
        self._chunks: queue.Queue[bytes | None] = queue.Queue(max_chunks)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="stdout-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        stream, chunks = self._stream, self._chunks
        while (chunk := chunks.get()) is not None:
            if self._error is not None:
                continue  # drop what follows a failed write; the caller is told
            try:
                stream.write(chunk)
                if chunks.empty():  # a batch's last chunk, or a pause: out it goes
                    stream.flush()
            except BaseException as error:  # BrokenPipeError above all
                self._error = error

    def check(self) -> None:
        """Raises the write error, if a write failed (once). The agent calls it between reads, so
        that it stops soon after stdout's reader went away even when no session comes."""
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def writelines(self, chunks: Iterable[bytes]) -> None:
        self.check()
        put = self._chunks.put
        for chunk in chunks:
            put(chunk)

    def close(self) -> None:
        """Writes everything queued, stops the thread, raises a write error if there was one."""
        if self._thread.is_alive():
            self._chunks.put(None)
            self._thread.join()
        self.check()
