"""Spool: a persistent FIFO of opaque entries (payload bytes + a record count) in a directory.

Modelled on the OpenTelemetry Collector's persistent queue and Vector's disk buffer: entries survive
a restart or a crash and are delivered at least once; every entry lost is counted.

On-disk format
==============
A spool directory (mode 0700, ours: see check_directory) holds segments, each with a state log.
One Spool per directory, and per process: nothing locks it, and two spools writing one directory
would spoil each other's ids and marks (the crash tests open a second one only to read what the
first left).

    00000000000000000042.seg     entries, appended; named by the id of its first entry (20 digits)
    00000000000000000042.state   what became of them, appended

A segment is a sequence of entries, every integer little-endian:

    offset  size  field
         0     4  magic    b"TLSP"
         4     4  length   u32: the bytes after the crc field, 20 + len(payload)
         8     4  crc      u32: crc32c of those `length` bytes (id to the end of the payload)
        12     8  id       u64
        20     4  count    u32: telemetry records in the payload (what the accounting counts)
        24     8  created  u64: unix time in ns of the append
        32     …  payload  opaque bytes

A state log is a sequence of 13-byte marks: kind | id u64 | crc32c of kind and id, u32, where kind
is b"D" (dispatched: handed out by take), b"R" (released: given back undelivered) or b"A" (acked:
done, whether delivered or given up on).

Invariants
----------
* Ids increase from each entry to the next, by exactly 1 within a segment; every id of a segment
  is below the next segment's name. An id is used only once its entry is written whole: a failed
  append consumes none (and its partial bytes are cut off; if even that fails, the segment is
  closed, and its torn end is counted once more, as corrupted, at the next open).
* Entries are never rewritten. A segment of a previous run is never appended to: a run starts a new
  segment at its first append. Segments rotate before an append would take them past segment_bytes,
  and no entry is larger than that (max_payload is the largest payload: a larger one is dropped and
  counted in `dropped_full`; QueuedExporter splits its requests to fit), so no segment is either.
  After a failed write the segment is closed too, and the next append starts a new one.
* An entry is done once its state log has an A mark for it; a done entry is never handed out again.
  At open, every entry that is not done is replayed (counted in `replayed`), and also counted in
  `duplicated` when its last mark is D (not followed by an R): it may have reached the server
  already. Records are counted by the entries' counts.
* A segment and then its state log are deleted once all its entries are done, the segment being
  written included: space freed by the server taking the backlog is free at once, which is what
  lets appends work again after the disk was full. (Segment first: a crash in between leaves an
  orphan log, deleted at open.)
* The bytes of all segments stay within max_bytes (see full_policy).
* Bad data never raises. Open checks every entry (magic, length bounds, crc, increasing ids) and
  scans forward for the next magic after damage:
    - damage followed by a valid entry: the ids in between are known exactly (they are consecutive);
      those not done are counted in `corrupted_entries` and marked done, so the next open counts
      them no more;
    - damage at the end of a segment (typically an entry torn by a crash mid-append): cut off and
      counted as one entry in `corrupted_entries`, since how many entries it held cannot be known
      (unless the state log names more, below);
    - entries gone from the end of a segment (torn, cut off whole, or the segment emptied to 0
      bytes): those the state log names (taken before, and not done) are counted in
      `corrupted_entries` and marked done, and an empty segment counts at least its first entry, as
      its name says it was written. Entries never taken have no marks, so only an empty segment's
      first of them is known.
  `corrupted_entries` counts entries; `corrupted_records` the records in them, as far as it is still
  known: from the index for an entry damaged after open, else from a damaged entry's header when its
  magic, id and length still agree and its count is no more than its payload's bytes (its crc failed,
  so the count is checked for sense). An entry whose header is gone adds no records, so
  `corrupted_records` is a lower bound. Records damaged on disk before this open were never part of
  this run's accounting (the run that wrote them counted them as `spooled`); those found damaged when
  take() reads them back are, and are also counted in `dropped_io_error`.
  Garbage or torn marks in a state log are skipped. An unreadable segment is logged, counted as one
  corrupted entry and left alone. Otherwise, a truncation that falls exactly between entries of a
  segment that is not empty is indistinguishable from entries never written: that is the loss an OS
  crash may cause with fsync="interval" or "never" (see below).
* Every file the spool opens is opened without following a symbolic link (O_NOFOLLOW) or waiting
  on a FIFO, and must be a regular file; a file it reads at open must be at most read_limit bytes
  (the largest segment: max(segment_bytes, 4 MiB), so a smaller max_bytes still reads the segments
  of an earlier run). Anything else is refused: logged, counted in `refused_files` and left alone (a
  refused state log is as good as none: its entries are replayed, perhaps as duplicates).

Durability (fsync)
------------------
  "always"    fsync the segment after each append and the state log after each mark (and the
              directory after creating a file): once append() or ack() returns, it survives even
              an OS crash. The slowest: one fsync per request appended, taken and acked.
  "interval"  (default) fsync whatever was written at most every fsync_interval seconds, at the next
              write after the interval, and at close(). A killed process loses nothing (the page
              cache survives it); an OS crash or power loss may lose the writes of the last interval
              (or longer, if the spool went idle: the OS writes back dirty pages within ~30 s).
              A torn last entry is then counted as corrupted; entries that vanished whole are not.
  "never"     leave it to the OS.

Full policy
-----------
Only deleting a segment frees disk space, so the spool makes room by whole segments. When an append
would take the bytes of all segments past max_bytes:
  "drop_oldest"  delete the oldest segments with no entry in flight (dispatched, not yet acked or
                 released), counting their entries in `dropped_full`, until the entry fits; if all that
                 is left is in flight, drop the new entry instead.
  "drop_newest"  drop the new entry.
segment_bytes is capped at max_bytes // 4, so one eviction frees at most a quarter of the spool and a
small max_bytes still holds several entries. An OSError while writing (ENOSPC, EROFS, EIO) never
raises out of append: it is counted in `write_errors`, the entry's records in `dropped_io_error`, and a
rate-limited line is logged. Appends work again once the disk has room: the failed segment is closed,
and segments whose entries are all done are deleted (the segment being written too).
"""

from __future__ import annotations

import bisect
import errno
import os
import stat
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from ..errors import UsageError
from .. import log as stderr
from ..ratelimit import RateLimitedLog


def crc32c(data) -> int:
    """The CRC-32C of data. The package is imported here, only when a spool is used: its import
    pulls in importlib.metadata, ~4 MB of resident memory in every agent otherwise."""
    from crc32c import crc32c as compute
    return compute(data)


MAGIC = b"TLSP"
_HEAD = struct.Struct("<4sII")  # magic, length, crc
_BODY = struct.Struct("<QIQ")  # id, count, created_ns
HEADER_BYTES = _HEAD.size + _BODY.size  # 32: the bytes of an entry besides its payload
_MARK = struct.Struct("<cQI")  # kind, id, crc
DISPATCHED, RELEASED, ACKED = b"D", b"R", b"A"
_MAX_LENGTH = 2**32 - 1  # the length field is a u32
_NAME_DIGITS = 20  # a u64 in decimal
DEFAULT_SEGMENT_BYTES = 4 << 20

FsyncPolicy = Literal["always", "interval", "never"]
FullPolicy = Literal["drop_oldest", "drop_newest"]


class SpoolDirectoryError(UsageError):
    """The spool directory cannot be used safely; the message is one line for the user."""


@dataclass(frozen=True, slots=True)
class Entry:
    id: int
    payload: bytes
    count: int  # telemetry records in the payload
    created_ns: int  # unix time of the append, ns
    replayed: bool  # found on disk at open (written by an earlier run)


def check_directory(path: str) -> None:
    """Creates the spool directory (mode 0700) if missing, or raises SpoolDirectoryError when it is
    not a directory, not ours, writable by group or others, or not readable and writable by us.

    The spool holds telemetry: another user able to write in it could inject or delete records."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except FileExistsError:
        pass  # not a directory: stat() below says so
    except OSError as error:
        raise SpoolDirectoryError(f"spool directory {path}: cannot create it: {error.strerror}") from None
    try:
        st = os.stat(path)
    except OSError as error:
        raise SpoolDirectoryError(f"spool directory {path}: {error.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise SpoolDirectoryError(f"spool directory {path} is not a directory")
    if st.st_uid != os.geteuid():
        raise SpoolDirectoryError(f"spool directory {path} is owned by uid {st.st_uid}, "
                                  f"not by this process's uid {os.geteuid()}")
    if st.st_mode & 0o022:
        raise SpoolDirectoryError(f"spool directory {path} is writable by group or others "
                                  f"(mode {stat.S_IMODE(st.st_mode):04o}): chmod go-w it")
    if not os.access(path, os.R_OK | os.W_OK | os.X_OK):  # also false on a read-only file system
        raise SpoolDirectoryError(f"spool directory {path} is not readable and writable")


class _Refused(OSError):
    """A file the spool will not use: not a regular file (a symbolic link, a device, a FIFO, a
    directory), or larger than it could have written."""

    def __init__(self, reason: str):
        super().__init__(errno.EINVAL, reason)


def _open_regular(path: str, flags: int) -> tuple[int, os.stat_result]:
    """Opens a regular file, never following a symbolic link nor blocking on a FIFO (O_NONBLOCK has
    no effect on regular files); raises _Refused for anything else."""
    try:
        fd = os.open(path, flags | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY, 0o600)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise _Refused("a symbolic link") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _Refused("not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd, st


# Every file the spool writes goes through these three: a seam for fault injection in tests.

def _open(path: str, flags: int) -> int:
    return _open_regular(path, flags)[0]


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _fsync(fd: int) -> None:
    os.fsync(fd)


# Reading segments and state logs.

@dataclass(frozen=True, slots=True)
class _Found:
    """A valid entry at `offset` in a segment, `end` the offset just past it."""
    id: int
    count: int
    created_ns: int
    offset: int
    end: int


@dataclass(frozen=True, slots=True)
class _Damage:
    """Bytes [start, end) of a segment that hold no valid entry, between valid entries prev_id and
    next_id (prev_id is first_id - 1 at the start of the segment; next_id is None at its end)."""
    start: int
    end: int
    prev_id: int
    next_id: int | None


def _parse_at(data: bytes, pos: int) -> _Found | None:
    """The entry at data[pos:], or None if there is none whole and intact."""
    if pos + HEADER_BYTES > len(data):
        return None
    magic, length, crc = _HEAD.unpack_from(data, pos)
    end = pos + _HEAD.size + length
    if magic != MAGIC or length < _BODY.size or end > len(data):
        return None
    if crc32c(memoryview(data)[pos + _HEAD.size:end]) != crc:
        return None
    entry_id, count, created_ns = _BODY.unpack_from(data, pos + _HEAD.size)
    return _Found(entry_id, count, created_ns, pos, end)


def _scan(data: bytes, first_id: int, end_id: int) -> tuple[list[_Found], list[_Damage]]:
    """The valid entries of a segment and its damaged ranges, in file order.

    Valid entries must have increasing ids in [first_id, end_id); an entry that does not is damage
    too (say, one quoted inside a payload). After damage, scanning resumes at the next magic."""
    found: list[_Found] = []
    damaged: list[_Damage] = []
    pos, bad_start, last_id = 0, None, first_id - 1
    while pos < len(data):
        entry = _parse_at(data, pos)
        if entry is not None and last_id < entry.id < end_id:
            if bad_start is not None:
                damaged.append(_Damage(bad_start, pos, last_id, entry.id))
                bad_start = None
            found.append(entry)
            last_id, pos = entry.id, entry.end
            continue
        if bad_start is None:
            bad_start = pos
        resync = data.find(MAGIC, pos + 1)
        pos = len(data) if resync < 0 else resync
    if bad_start is not None:
        damaged.append(_Damage(bad_start, len(data), last_id, None))
    return found, damaged


def _mark(kind: bytes, entry_id: int) -> bytes:
    head = kind + entry_id.to_bytes(8, "little")
    return head + crc32c(head).to_bytes(4, "little")


def _headers_in(data: bytes, start: int, end: int, next_id: int) -> dict[int, int]:
    """id -> record count of the entries whose headers still chain in the damaged bytes [start, end):
    magic right, ids consecutive from next_id, each length leading to the next header (the last may
    run past `end`: a torn entry). Their crc failed, so a count is taken only if it is no more than
    the entry's payload bytes, as every record takes at least one."""
    counts: dict[int, int] = {}
    pos = start
    while pos + HEADER_BYTES <= end:
        magic, length, _ = _HEAD.unpack_from(data, pos)
        entry_id, count, _ = _BODY.unpack_from(data, pos + _HEAD.size)
        if magic != MAGIC or entry_id != next_id or length < _BODY.size:
            break
        if count <= length - _BODY.size:
            counts[entry_id] = count
        pos += _HEAD.size + length
        next_id += 1
    return counts


def _read_marks(data: bytes, first_id: int, end_id: int) -> tuple[set[int], set[int], set[int]]:
    """(acked ids, ids whose last mark is D, every id marked) from a state log; garbage is skipped
    byte by byte."""
    acked: set[int] = set()
    dispatched: set[int] = set()
    marked: set[int] = set()
    pos = 0
    while pos + _MARK.size <= len(data):
        kind, entry_id, crc = _MARK.unpack_from(data, pos)
        if kind not in (DISPATCHED, RELEASED, ACKED) or crc32c(data[pos:pos + 9]) != crc \
                or not first_id <= entry_id < end_id:
            pos += 1
            continue
        marked.add(entry_id)
        if kind == ACKED:
            acked.add(entry_id)
        elif kind == DISPATCHED:
            dispatched.add(entry_id)
        else:
            dispatched.discard(entry_id)
        pos += _MARK.size
    return acked, dispatched - acked, marked


def _read_file(path: str, limit: int) -> bytes:
    """The contents of a regular file of at most `limit` bytes; raises _Refused otherwise."""
    fd, st = _open_regular(path, os.O_RDONLY)
    try:
        if st.st_size > limit:
            raise _Refused(f"larger than {limit} bytes")
        chunks, size = [], 0
        while size <= limit and (chunk := os.read(fd, min(1 << 20, limit + 1 - size))):
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:  # it grew after the fstat
            raise _Refused(f"larger than {limit} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)


# The index kept in memory: where each entry not yet done is, never its payload.

@dataclass(eq=False, slots=True)
class _Segment:
    first_id: int
    path: str
    state_path: str
    size: int = 0  # bytes on disk
    last_id: int = -1  # of the last entry in it
    live: int = 0  # entries not yet done
    in_flight: int = 0  # entries dispatched in this run, neither acked nor released
    state_fd: int | None = None


@dataclass(eq=False, slots=True)
class _Slot:
    id: int
    segment: _Segment
    offset: int  # of the entry in its segment
    size: int  # of the whole entry, header included
    count: int
    created_ns: int
    replayed: bool
    dispatched: bool = False  # in this run


def _segment_name(first_id: int) -> str:
    return f"{first_id:0{_NAME_DIGITS}d}"


def _parse_name(name: str, suffix: str) -> int | None:
    stem = name[:-len(suffix)]
    if name.endswith(suffix) and len(stem) == _NAME_DIGITS and stem.isdigit():
        return int(stem)
    return None


class Spool:
    """A persistent FIFO of entries in `directory`; see the module docstring. Thread-safe.

    append() adds an entry; take() hands out one not handed out yet (oldest or newest first) and
    marks it dispatched; ack() marks it done; release() gives it back, to be handed out again.
    """

    def __init__(self, directory: str, *, max_bytes: int, segment_bytes: int = DEFAULT_SEGMENT_BYTES,
                 fsync: FsyncPolicy = "interval", fsync_interval: float = 1.0,
                 full_policy: FullPolicy = "drop_oldest", clock: Callable[[], float] = time.time,
                 log: Callable[[str], None] | None = None):
        """Opens (creating it if need be) the spool in `directory` and recovers what is on disk.
        Raises SpoolDirectoryError if the directory is unsafe, ValueError for a bad option."""
        if max_bytes < 1 or segment_bytes < 1:
            raise ValueError("spool max_bytes and segment_bytes must be positive")
        if fsync not in ("always", "interval", "never"):
            raise ValueError(f"spool fsync must be always, interval or never, not {fsync!r}")
        if fsync_interval < 0:
            raise ValueError("spool fsync_interval must not be negative")
        if full_policy not in ("drop_oldest", "drop_newest"):
            raise ValueError(f"spool full_policy must be drop_oldest or drop_newest, not {full_policy!r}")
        check_directory(directory)
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = max(1, min(segment_bytes, max_bytes // 4, HEADER_BYTES + _MAX_LENGTH))
        self.max_payload = max(0, self.segment_bytes - HEADER_BYTES)  # the largest payload append() takes
        self.read_limit = max(self.segment_bytes, DEFAULT_SEGMENT_BYTES)  # the largest file read at open
        self.fsync = fsync
        self.fsync_interval = fsync_interval
        self.full_policy = full_policy
        self._clock = clock
        self._log = log or stderr.named("spool")
        self._warn = RateLimitedLog(self._log)
        self._lock = threading.Lock()
        # on_append(count, done): called before (done False) and after (done True) each append, in the
        # appending thread; the agent's probe uses it to know which sessions are durable (pipeline.py).
        self.on_append: Callable[[int, bool], None] | None = None
        self._closed = False

        self._segments: dict[int, _Segment] = {}  # by first id, in id order
        self._entries: dict[int, _Slot] = {}  # entries not done, by id, in id order
        self._pending: deque[int] = deque()  # ids not handed out, sorted; may hold ids since done
        self._active: _Segment | None = None  # the segment being written
        self._active_fd: int | None = None
        self._next_id = 0
        self._bytes = 0
        self._records = 0
        self._dirty: set[int] = set()  # fds written since the last fsync
        self._dirty_dir = False  # a file was created since the last fsync
        self._next_sync = time.monotonic() + fsync_interval
        self._counts = dict(replayed=0, duplicated=0, corrupted_entries=0, corrupted_records=0, dropped_full=0,
                            dropped_io_error=0, write_errors=0, refused_files=0)
        self._recover()

    # Public API.

    def append(self, payload: bytes, count: int) -> int:
        """Appends an entry; returns how many records (by count) were dropped to make room, plus
        `count` itself if the new entry was dropped (no room, or a write error). Never raises OSError."""
        if not isinstance(payload, (bytes, bytearray, memoryview)):
            raise TypeError(f"a spool entry's payload must be bytes, not {type(payload).__name__}")
        payload = bytes(payload)
        if not 0 <= count < 2**32:
            raise ValueError(f"record count out of range: {count}")
        hook = self.on_append
        if hook is None:
            return self._append(payload, count)
        hook(count, False)
        try:
            return self._append(payload, count)
        finally:
            hook(count, True)

    def _append(self, payload: bytes, count: int) -> int:
        size = HEADER_BYTES + len(payload)
        with self._lock:
            if self._closed:
                raise ValueError("append to a closed spool")
            if size > self.segment_bytes:
                self._counts["dropped_full"] += count
                self._warn("too_big", count, f"dropped {{n}} records: an entry larger than a spool segment "
                                             f"({self.segment_bytes} bytes)")
                return count
            evicted = self._make_room(size)
            if evicted:
                self._warn("evicted", evicted, f"spool full ({self.max_bytes} bytes): dropped the oldest {{n}} records")
            if self._bytes + size > self.max_bytes:
                self._counts["dropped_full"] += count
                self._warn("full", count, f"spool full ({self.max_bytes} bytes): dropped {{n}} new records")
                return evicted + count
            return evicted + self._write_entry(payload, count, size)

    def fits(self, payload_bytes: int) -> bool:
        """Whether an entry of this payload would fit now without dropping anything."""
        with self._lock:
            return self._bytes + HEADER_BYTES + payload_bytes <= self.max_bytes

    def take(self, prefer: Literal["oldest", "newest"] = "oldest") -> Entry | None:
        """Hands out the oldest (or newest) entry not handed out yet and marks it dispatched; None
        when there is none, or the spool is closed."""
        if prefer not in ("oldest", "newest"):
            raise ValueError(f"prefer must be oldest or newest, not {prefer!r}")
        with self._lock:
            while self._pending and not self._closed:
                entry_id = self._pending.popleft() if prefer == "oldest" else self._pending.pop()
                slot = self._entries.get(entry_id)
                if slot is None or slot.dispatched:
                    continue  # done since it was queued (evicted, or acked without being taken)
                payload = self._read_payload(slot)
                if payload is None:
                    continue  # unreadable: counted and dropped
                slot.dispatched = True
                slot.segment.in_flight += 1
                self._write_mark(slot.segment, DISPATCHED, entry_id)
                return Entry(entry_id, payload, slot.count, slot.created_ns, slot.replayed)
            return None

    def ack(self, entry_id: int) -> None:
        """Marks an entry done (delivered, or given up on): it is never handed out again.
        Unknown or already acked ids are ignored, as is everything after close()."""
        with self._lock:
            slot = self._entries.get(entry_id)
            if slot is not None and not self._closed:
                self._done(slot)

    def release(self, entry_id: int) -> None:
        """Gives back a dispatched entry undelivered: take() hands it out again, and so does the next
        run, without counting it as duplicated. Ignored unless the entry is dispatched."""
        with self._lock:
            slot = self._entries.get(entry_id)
            if slot is None or not slot.dispatched or self._closed:
                return
            slot.dispatched = False
            slot.segment.in_flight -= 1
            self._write_mark(slot.segment, RELEASED, entry_id)
            bisect.insort(self._pending, entry_id)

    def stats(self) -> dict[str, int | float]:
        """Gauges: `records` (sum of counts not done), `bytes` (of all segments), `oldest_age_s`.
        Counters since open: `replayed`, `duplicated` (records found at open, of which possibly
        delivered), `corrupted_entries` (damaged entries) and `corrupted_records` (the records known
        to be in them), `dropped_full`, `dropped_io_error` (records), `write_errors` (failed writes
        and fsyncs), `refused_files` (see the module docstring)."""
        with self._lock:
            oldest = next(iter(self._entries.values()), None)
            age = max(0.0, self._clock() - oldest.created_ns / 1e9) if oldest else 0.0
            return dict(records=self._records, bytes=self._bytes, oldest_age_s=age, **self._counts)

    def close(self) -> None:
        """Syncs (unless fsync="never") and closes the files. Entries still dispatched stay so on disk:
        the next run replays them as duplicated. Deletes the last segment if all its entries are done."""
        with self._lock:
            if self._closed:
                return
            if self.fsync != "never":
                self._sync()
            self._close_active()
            for segment in self._segments.values():
                self._close_state(segment)
            self._closed = True
        self._warn.flush()

    def _abandon(self) -> None:
        """For tests: the process was killed (kill -9). Closes the descriptors and writes nothing."""
        with self._lock:
            for fd in [self._active_fd] + [s.state_fd for s in self._segments.values()]:
                if fd is not None:
                    os.close(fd)
            self._active_fd = None
            for segment in self._segments.values():
                segment.state_fd = None
            self._closed = True

    # Opening.

    def _recover(self) -> None:
        names = os.listdir(self.directory)
        firsts = sorted(i for i in (_parse_name(n, ".seg") for n in names) if i is not None)
        for name in names:  # a crash between deleting a segment and its state log
            first = _parse_name(name, ".state")
            if first is not None and first not in firsts:
                self._unlink(os.path.join(self.directory, name))
        for i, first in enumerate(firsts):
            end_id = firsts[i + 1] if i + 1 < len(firsts) else 2**64
            self._recover_segment(first, end_id)
        if self._counts["corrupted_entries"]:
            self._log(f"found {self._counts['corrupted_entries']} damaged entries in {self.directory}: "
                      f"their records are lost ({self._counts['corrupted_records']} known from their headers)")

    def _recover_segment(self, first: int, end_id: int) -> None:
        base = os.path.join(self.directory, _segment_name(first))
        segment = _Segment(first, base + ".seg", base + ".state")
        try:
            data = _read_file(segment.path, self.read_limit)
        except _Refused as error:
            self._refused(segment.path, error)
            self._next_id = max(self._next_id, first + 1)
            return
        except OSError as error:
            self._log(f"cannot read {segment.path}: {error.strerror}: left as it is")
            self._counts["corrupted_entries"] += 1
            self._next_id = max(self._next_id, first + 1)
            return
        acked: set[int] = set()
        dispatched: set[int] = set()
        marked: set[int] = set()
        try:
            acked, dispatched, marked = _read_marks(_read_file(segment.state_path, self.read_limit), first, end_id)
        except FileNotFoundError:
            pass
        except _Refused as error:  # as if there were none: entries are replayed rather than lost
            self._refused(segment.state_path, error)
        except OSError as error:
            self._log(f"cannot read {segment.state_path}: {error.strerror}")
        found, damaged = _scan(data, first, end_id)
        segment.size = len(data)
        last_id = found[-1].id if found else first - 1
        lost_ids: list[int] = []  # lost entries not done: marked done below, so counted only once
        torn = False
        for damage in damaged:
            headers = _headers_in(data, damage.start, damage.end, damage.prev_id + 1)
            if damage.next_id is None:  # the end: cut it off (it can hold no valid entry)
                torn = True
                self._counts["corrupted_records"] += sum(n for i, n in headers.items() if i not in acked)
                try:
                    os.truncate(segment.path, damage.start)
                    segment.size = damage.start
                except OSError as error:
                    self._log(f"cannot cut the damaged end of {segment.path}: {error.strerror}")
            else:
                ids = [i for i in range(damage.prev_id + 1, damage.next_id) if i not in acked]
                lost_ids += ids
                self._counts["corrupted_records"] += sum(headers.get(i, 0) for i in ids)
        # Entries gone from the end (torn, cut off whole, or the segment emptied): those the state log
        # names, and an empty segment's first (its name says it was written).
        gone = {i for i in marked - acked if i > last_id} | ({first} - acked if not data else set())
        self._counts["corrupted_entries"] += len(lost_ids) + max(int(torn), len(gone))
        lost_ids += sorted(gone)
        self._next_id = max(self._next_id, first + 1, max(marked, default=-1) + 1, last_id + 1)
        segment.last_id = last_id
        for entry in found:
            if entry.id in acked:
                continue
            slot = _Slot(entry.id, segment, entry.offset, entry.end - entry.offset, entry.count, entry.created_ns,
                         replayed=True)
            self._entries[entry.id] = slot
            self._pending.append(entry.id)
            segment.live += 1
            self._records += entry.count
            self._counts["replayed"] += entry.count
            if entry.id in dispatched:
                self._counts["duplicated"] += entry.count
        self._segments[first] = segment
        self._bytes += segment.size
        if not segment.live:
            self._delete(segment)
            return
        for entry_id in lost_ids:  # so that the next open does not count them again
            self._write_mark(segment, ACKED, entry_id)

    def _refused(self, path: str, error: _Refused) -> None:
        self._counts["refused_files"] += 1
        self._log(f"refused {path}: {error.strerror}: left as it is")

    # Writing.

    def _make_room(self, size: int) -> int:
        """Rotates and evicts so that an entry of `size` bytes fits, as the policy allows; returns
        the records evicted. The caller checks whether it fits now."""
        active = self._active
        if active is not None and active.size and active.size + size > self.segment_bytes:
            self._close_active()
        evicted = 0
        while self._bytes + size > self.max_bytes and self.full_policy == "drop_oldest":
            # (Every segment holds an entry not done: those all done are deleted at once.)
            victim = next((s for s in self._segments.values() if not s.in_flight), None)
            if victim is None:
                break
            evicted += self._evict(victim)
        return evicted

    def _evict(self, segment: _Segment) -> int:
        records = 0
        for entry_id in range(segment.first_id, segment.last_id + 1):
            slot = self._entries.pop(entry_id, None)
            if slot is not None:
                records += slot.count
        self._records -= records
        self._counts["dropped_full"] += records
        self._delete(segment)
        return records

    def _write_entry(self, payload: bytes, count: int, size: int) -> int:
        """Writes an entry to the active segment, opening one if need be; returns the records dropped:
        0, or `count` after a write error."""
        if self._active is None and not self._open_segment(count):
            return count
        segment = self._active
        entry_id = self._next_id
        created_ns = max(0, round(self._clock() * 1e9))
        body = _BODY.pack(entry_id, count, created_ns) + payload
        try:
            _write_all(self._active_fd, _HEAD.pack(MAGIC, len(body), crc32c(body)) + body)
        except OSError as error:
            self._write_failed(error, segment.path, count)
            try:  # cut off a partial entry, so the segment holds only whole entries
                os.ftruncate(self._active_fd, segment.size)
            except OSError:
                pass  # its torn end is counted as corrupted at the next open
            # The next append starts a new segment, and this one goes once its entries are done
            # (now, if it has none): on a full disk, that is how space comes back.
            self._close_active()
            return count
        self._entries[entry_id] = _Slot(entry_id, segment, segment.size, size, count, created_ns, replayed=False)
        self._pending.append(entry_id)
        self._next_id += 1
        segment.size += size
        segment.last_id = entry_id
        segment.live += 1
        self._bytes += size
        self._records += count
        self._written(self._active_fd)
        return 0

    def _open_segment(self, count: int) -> bool:
        base = os.path.join(self.directory, _segment_name(self._next_id))
        try:
            fd = _open(base + ".seg", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND)
        except OSError as error:
            self._write_failed(error, base + ".seg", count)
            return False
        segment = _Segment(self._next_id, base + ".seg", base + ".state", last_id=self._next_id - 1)
        self._segments[segment.first_id] = segment
        self._active, self._active_fd = segment, fd
        self._dirty_dir = True
        return True

    def _write_mark(self, segment: _Segment, kind: bytes, entry_id: int) -> None:
        """Appends a mark to a state log. A failure is counted and logged, never raised: a lost mark
        at worst has an entry replayed (or counted as duplicated) after a restart."""
        try:
            if segment.state_fd is None:
                segment.state_fd = _open(segment.state_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
                self._dirty_dir = True
            _write_all(segment.state_fd, _mark(kind, entry_id))
        except OSError as error:
            self._counts["write_errors"] += 1
            self._warn("mark", 1, "could not record the state of {n} entries (they may be sent again after "
                       "a restart)", f"{segment.state_path}: {error.strerror}")
            return
        self._written(segment.state_fd)

    def _write_failed(self, error: OSError, path: str, count: int) -> None:
        self._counts["write_errors"] += 1
        self._counts["dropped_io_error"] += count
        self._warn("write", count, "write error: dropped {n} records", f"{path}: {error.strerror}")

    def _written(self, fd: int) -> None:
        """Applies the fsync policy after a write to fd."""
        if self.fsync == "never":
            return
        self._dirty.add(fd)
        if self.fsync == "always" or time.monotonic() >= self._next_sync:
            self._sync()

    def _sync(self) -> None:
        for fd in self._dirty:
            try:
                _fsync(fd)
            except OSError as error:
                self._counts["write_errors"] += 1
                self._warn("fsync", 1, "{n} fsyncs failed", error.strerror)
        self._dirty.clear()
        if self._dirty_dir:
            self._dirty_dir = False
            try:
                fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                try:
                    _fsync(fd)
                finally:
                    os.close(fd)
            except OSError as error:
                self._counts["write_errors"] += 1
                self._warn("fsync", 1, "{n} fsyncs failed", error.strerror)
        self._next_sync = time.monotonic() + self.fsync_interval

    # Reading back, and retiring.

    def _read_payload(self, slot: _Slot) -> bytes | None:
        """The payload of an entry, checked again; None if it cannot be read back intact, in which
        case the entry is done and its records counted in dropped_io_error."""
        try:
            fd, _ = _open_regular(slot.segment.path, os.O_RDONLY)
            try:
                data = os.pread(fd, slot.size, slot.offset)
            finally:
                os.close(fd)
        except OSError as error:
            problem = error.strerror
            if isinstance(error, _Refused):
                self._counts["refused_files"] += 1
        else:
            found = _parse_at(data, 0)
            if found is not None and found.id == slot.id and found.end == slot.size:
                return data[HEADER_BYTES:]
            problem = "damaged entry"
            self._counts["corrupted_entries"] += 1
            self._counts["corrupted_records"] += slot.count
        self._counts["dropped_io_error"] += slot.count
        self._warn("read", slot.count, "read error: dropped {n} records", f"{slot.segment.path}: {problem}")
        self._done(slot)
        return None

    def _done(self, slot: _Slot) -> None:
        del self._entries[slot.id]
        self._records -= slot.count
        segment = slot.segment
        segment.live -= 1
        if slot.dispatched:
            segment.in_flight -= 1
        if not segment.live:
            self._delete(segment)  # no need to mark the last one: its segment is gone
        else:
            self._write_mark(segment, ACKED, slot.id)

    def _close_active(self) -> None:
        segment, fd = self._active, self._active_fd
        if segment is None:
            return
        self._active = self._active_fd = None
        if fd is not None:
            if fd in self._dirty:  # make it durable now: it is never written again
                self._dirty.discard(fd)
                try:
                    _fsync(fd)
                except OSError as error:
                    self._counts["write_errors"] += 1
                    self._warn("fsync", 1, "{n} fsyncs failed", error.strerror)
            os.close(fd)
        if not segment.live:
            self._delete(segment)

    def _close_state(self, segment: _Segment) -> None:
        if segment.state_fd is not None:
            self._dirty.discard(segment.state_fd)
            os.close(segment.state_fd)
            segment.state_fd = None

    def _delete(self, segment: _Segment) -> None:
        """Deletes a segment, then its state log (in that order: see the module docstring)."""
        if segment is self._active:
            self._dirty.discard(self._active_fd)
            os.close(self._active_fd)
            self._active = self._active_fd = None
        self._close_state(segment)
        del self._segments[segment.first_id]
        self._bytes -= segment.size
        self._unlink(segment.path)
        self._unlink(segment.state_path)

    def _unlink(self, path: str) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as error:
            self._counts["write_errors"] += 1
            self._warn("unlink", 1, "could not delete {n} files", f"{path}: {error.strerror}")
