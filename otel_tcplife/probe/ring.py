"""A BPF ring buffer read straight from its mmap-ed pages, a batch at a time.

Layout (kernel/bpf/ringbuf.c): page 0 holds the consumer position (we write
it), page 1 the producer position; the data pages follow. The kernel offers
them twice in a row, so that a record wrapping around the end is contiguous;
we map them once (half the resident memory) and join the two parts of a
batch that wraps. Each record is an 8-byte header (length with BUSY and
DISCARD bits, page offset) and the sample, padded to 8 bytes. Records are
committed in any order but consumed in order: reading stops at the first
one still BUSY.

The positions are shared with the kernel, which reads and writes them while
we do: each is read and written with ONE aligned 8-byte access (shared_u64),
never through struct (struct.pack_into zeroes the field, then writes it byte
by byte: a producer reading it meanwhile sees the ring full and drops the
session).

The kernel's side of the protocol pairs the producer position with a
store-release and the consumer position with a load-acquire; the reader must
load the producer position with acquire and store its own with release. On
x86 every aligned load is an acquire and every store a release (TSO), so plain
accesses are right there, and only there: RingReader is for x86-64.
LibbpfRingReader reads the same records through libbpf's ring_buffer__consume,
which uses the barriers of whatever CPU it runs on, at the cost of a call per
record; the probe uses it on every other architecture.
"""

from __future__ import annotations

import ctypes
import mmap
import platform
import select
import struct

from .. import abi

BUSY_BIT = 1 << 31
DISCARD_BIT = 1 << 30
HEADER_SIZE = 8
RECORD_SIZE = (HEADER_SIZE + abi.EVENT.size + 7) & ~7

MAX_BATCH_RECORDS = 4096  # per read: bounds memory (~0.4 MB of records, ~2 MB of NDJSON) and latency
TSO_MACHINES = ("x86_64", "amd64")  # where plain aligned accesses are acquire/release


def record_struct(event: struct.Struct = abi.EVENT) -> struct.Struct:
    """One struct per record: the header skipped by pad bytes, then the event's fields (of struct event,
    or those abi.event_struct reads), then the record's padding."""
    return struct.Struct("<" + "x" * HEADER_SIZE + event.format.lstrip("<")
                         + "x" * (RECORD_SIZE - HEADER_SIZE - event.size))


def default_ring_reader(machine: str | None = None) -> str:
    return "mmap" if (machine or platform.machine()) in TSO_MACHINES else "libbpf"


def shared_u64(buffer) -> memoryview:
    """The u64 at the start of buffer, as view[0]: read and written in one aligned 8-byte access,
    so the kernel never sees it half written (see the module docstring)."""
    return memoryview(buffer)[:8].cast("Q")


class RingReader:
    """Reads records in batches. With auto_commit (the default), each read releases what it read to
    the producer; without, read() only moves the reader's own cursor (`position`), and the space is
    released by commit(position) once the caller has made those records durable: the consumer
    position the kernel keeps (and that outlives us in a pinned ring buffer) is then never past a
    record the outputs have not kept."""

    def __init__(self, map_fd: int, data_size: int, auto_commit: bool = True,
                 event: struct.Struct = abi.EVENT) -> None:
        """event: what each record holds, as the outputs read it (abi.event_struct)."""
        self._event, self._record = event, record_struct(event)
        page = mmap.PAGESIZE
        self._mask = data_size - 1
        self._data_start = page  # data follows the producer page in the second mapping
        self._data_end = page + data_size
        self._consumer = mmap.mmap(map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self._producer = mmap.mmap(map_fd, page + data_size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        self._consumer_pos = shared_u64(self._consumer)
        self._producer_pos = shared_u64(self._producer)
        # Records are parsed in place, not copied out: a copy of a large batch is a fresh mmap-ed
        # block (interpreter.tune_malloc), whose page faults cost more than the copy.
        self._pages = memoryview(self._producer)
        # Edge-triggered: a wait ends at the kernel's next wakeup (or the timeout), even with
        # records already waiting; level-triggered, it would end at once whenever any are.
        self._epoll = select.epoll()
        self._epoll.register(map_fd, select.EPOLLIN | select.EPOLLET)
        self._behind = False  # the last read stopped at MAX_BATCH_RECORDS
        self._auto_commit = auto_commit
        self.position = self._consumer_pos[0]  # where the next read starts

    @property
    def committed(self) -> int:
        """The consumer position: records before it are released to the producer."""
        return self._consumer_pos[0]

    @property
    def produced(self) -> int:
        return self._producer_pos[0]

    def commit(self, position: int) -> None:
        """Releases the space of the records before position (one the reader has read past)."""
        if self._consumer_pos[0] < position <= self.position:
            self._consumer_pos[0] = position

    def count(self, start: int, end: int) -> int:
        """Records (not discarded) between two positions at or after the consumer position, ending at
        the first one still being written; their headers are read, never their contents."""
        count = 0
        pos = start
        end = min(end, self._producer_pos[0])
        while pos + HEADER_SIZE <= end:
            offset = self._data_start + (pos & self._mask)
            length = struct.unpack_from("<I", self._producer, offset)[0]
            if length & BUSY_BIT:
                break
            if not length & DISCARD_BIT:
                count += 1
            pos += (HEADER_SIZE + (length & ~(BUSY_BIT | DISCARD_BIT)) + 7) & ~7
        return count

    def read(self, timeout: float) -> list[tuple]:
        """Event tuples (abi.EVENT field order): with timeout > 0, the records there after waiting
        up to timeout for the kernel's wakeup, unless the last read left records behind; with
        timeout 0, those there now.

        Waiting even when some records are there already keeps batches large: reading again as
        soon as a batch is handled would return the few records made meanwhile, and at 5,000
        connections/s two reads in three were such trickles, each paying a batch's fixed costs."""
        consumer = self.position
        producer = self._producer_pos[0]
        if timeout > 0 and not self._behind:
            try:
                self._epoll.poll(timeout)
            except InterruptedError:
                pass
            producer = self._producer_pos[0]
        if consumer == producer:
            return []
        start = self._data_start + (consumer & self._mask)
        self._behind = producer - consumer > MAX_BATCH_RECORDS * RECORD_SIZE
        end = start + min(producer - consumer, MAX_BATCH_RECORDS * RECORD_SIZE)
        if end <= self._data_end:
            with self._pages[start:end] as chunk:
                events, consumed = self._parse(chunk)
        else:  # wraps around: the rest is at the start of the data
            wrapped = end - self._data_end
            chunk = self._producer[start:self._data_end] + self._producer[self._data_start:self._data_start + wrapped]
            events, consumed = self._parse(chunk)
        self.position = consumer + consumed
        if self._auto_commit:  # release the space: the producer may reuse it from now on
            self._consumer_pos[0] = self.position
        return events

    def _parse(self, chunk: bytes | memoryview) -> tuple[list[tuple], int]:
        if len(chunk) % RECORD_SIZE == 0:
            with memoryview(chunk).cast("I") as words:
                lengths = words[::RECORD_SIZE // 4].tolist()
            if lengths.count(abi.EVENT.size) == len(lengths):  # all committed, none discarded
                return list(self._record.iter_unpack(chunk)), len(chunk)
        events = []
        pos = 0
        while pos + HEADER_SIZE <= len(chunk):
            length = struct.unpack_from("<I", chunk, pos)[0]
            if length & BUSY_BIT:
                break
            size = length & ~(BUSY_BIT | DISCARD_BIT)
            if not length & DISCARD_BIT:
                if size != abi.EVENT.size:
                    raise ValueError(f"ring buffer record of {size} bytes, expected {abi.EVENT.size}")
                events.append(self._event.unpack_from(chunk, pos + HEADER_SIZE))
            pos += (HEADER_SIZE + size + 7) & ~7
        return events, pos

    def close(self) -> None:
        self._consumer_pos.release()
        self._producer_pos.release()
        self._pages.release()
        self._epoll.close()
        self._consumer.close()
        self._producer.close()


SAMPLE_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
STOP_BATCH = -1  # returned by the sample callback once a batch is full: libbpf stops there


class LibbpfRingReader:
    """RingReader's reads through libbpf's ring_buffer__consume (see the module docstring)."""

    def __init__(self, libbpf, map_fd: int, event: struct.Struct = abi.EVENT) -> None:
        self._unpack = event.unpack
        self._lib = libbpf.lib
        self._events: list[tuple] = []
        self._callback = SAMPLE_FN(self._sample)  # referenced for as long as libbpf may call it
        self._rb = libbpf.check_ptr("opening ring buffer", self._lib.ring_buffer__new(map_fd, self._callback, None, None))
        self._epoll = select.epoll()
        self._epoll.register(map_fd, select.EPOLLIN | select.EPOLLET)  # as RingReader's
        self._behind = False

    def _sample(self, _ctx: int, data: int, size: int) -> int:
        if size != abi.EVENT.size:
            raise ValueError(f"ring buffer record of {size} bytes, expected {abi.EVENT.size}")
        self._events.append(self._unpack(ctypes.string_at(data, size)))
        return STOP_BATCH if len(self._events) >= MAX_BATCH_RECORDS else 0

    def read(self, timeout: float) -> list[tuple]:
        """As RingReader.read."""
        if timeout > 0 and not self._behind:
            try:
                self._epoll.poll(timeout)
            except InterruptedError:
                pass
        self._lib.ring_buffer__consume(self._rb)  # the record that stopped a full batch is consumed too
        events, self._events = self._events, []
        self._behind = len(events) >= MAX_BATCH_RECORDS
        return events

    def close(self) -> None:
        self._lib.ring_buffer__free(self._rb)
        self._epoll.close()
