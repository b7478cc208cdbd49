"""journald's native protocol (https://systemd.io/JOURNAL_NATIVE_PROTOCOL/): a journal entry's
fields as bytes, and how entries reach journald without the kernel reader ever waiting for it.

An entry is one datagram to /run/systemd/journal/socket (AF_UNIX, SOCK_DGRAM), its fields one after
the other: `NAME=value\\n`, or, when the value holds a newline, `NAME\\n`, the value's length in bytes
(64-bit little-endian), the value, `\\n`. An entry too large for a datagram (EMSGSIZE) goes in a
sealed memfd, passed with SCM_RIGHTS in an empty datagram.

The outputs build an entry as text and encode it once, with ENCODING. The length in a binary field
is bytes, not text: field() gives it as the code points surrogateescape decodes those bytes to, and
encoding with surrogateescape turns them back into exactly those bytes. (Our text never holds such
code points otherwise: the system's text is decoded with "replace".)

The kernel reader never waits for journald: it queues the entries (JournalSender.offer), and a thread
of their own sends them, waiting for room in journald's socket up to SEND_TIMEOUT an entry. What
journald does not take is dropped and counted: entries that find the queue full, that journald
leaves waiting for longer than SEND_TIMEOUT, that it refuses (ENOBUFS; ECONNREFUSED: journald went
away), and those still queued at the shutdown deadline. journald's own rate limit
(RateLimitIntervalSec=/RateLimitBurst=, per service) drops entries silently after it took them: that
is not counted here (the systemd unit turns it off).
"""

from __future__ import annotations

import array
import collections
import errno
import fcntl
import os
import re
import select
import socket
import struct
import threading
import time
from typing import Callable, Collection, Mapping

import orjson

from .. import log
from ..errors import UsageError
from ..ratelimit import RateLimitedLog

SOCKET_PATH = "/run/systemd/journal/socket"
# Another socket path, for tests only (a socket of their own, or none).
SOCKET_PATH_ENV = "OTEL_TCPLIFE_JOURNAL_SOCKET"

ENCODING = ("utf-8", "surrogateescape")  # entry text -> bytes: see above

# What journald accepts as a field name: A-Z, 0-9 and '_', not first a digit or '_' (those are its
# own trusted fields), at most 64 characters. It ignores a field with any other name.
FIELD_NAME = re.compile(r"[A-Z][A-Z0-9_]{0,63}")

_le64 = struct.Struct("<Q").pack


def field(name: str, value: str) -> str:
    """One field of an entry, as text to encode with ENCODING."""
    if "\n" not in value:
        return f"{name}={value}\n"
    data = value.encode(*ENCODING)
    return f"{name}\n" + (_le64(len(data)) + data).decode(*ENCODING) + "\n"


def field_name(key: str) -> str | None:
    """An attribute key as a field name: upper case, any other character than A-Z, 0-9 and '_' as
    '_' (service.name -> SERVICE_NAME); None when no valid name comes of it."""
    name = re.sub(r"[^A-Z0-9_]", "_", key.upper())
    return name if FIELD_NAME.fullmatch(name) else None


def attribute_fields(attributes: Mapping[str, object], taken: Collection[str] = ()) -> tuple[str, list[str]]:
    """Attributes (the Resource's) as fields: (their text, the keys left out for want of a field name,
    or because their name is taken). Strings as they are, other values as JSON (true, 3, ["a"])."""
    text, left_out = [], []
    for key, value in attributes.items():
        name = field_name(key)
        if name is None or name in taken:
            left_out.append(key)
            continue
        text.append(field(name, value if isinstance(value, str) else orjson.dumps(value).decode()))
    return "".join(text), left_out


# Errors that mean journald is not there (any more): the socket is connected again, at most once a
# RECONNECT_INTERVAL, so that a journald that restarted gets the entries again.
GONE = {errno.ECONNREFUSED, errno.ENOTCONN, errno.ENOENT, errno.EDESTADDRREQ}
RECONNECT_INTERVAL = 1.0
SEND_TIMEOUT = 1.0  # how long the sender waits for room in journald's socket before it drops an entry
# Entries waiting for the sender: a burst this large waits rather than being dropped (~1 KB each).
QUEUE_ENTRIES = 8192
SHUTDOWN = "shutdown"  # why entries were dropped, besides an errno
_MEMFD_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL


def drop_reason(why: int | str) -> str:
    """Why entries were dropped (an errno or SHUTDOWN), for the warning line."""
    if why == SHUTDOWN:
        return "journald did not take them by the shutdown deadline"
    if why == errno.ETIMEDOUT:
        return f"journald took none for {SEND_TIMEOUT:g} s (it is behind)"
    if why in GONE:
        return "journald is not running"
    return f"{errno.errorcode.get(why, why)} ({os.strerror(why)})"


class JournalSocket:
    """Sends entries (bytes) to journald, one datagram each, waiting up to SEND_TIMEOUT for room in its
    socket. `dropped` counts the entries journald did not take."""

    def __init__(self, path: str | None = None, warn: Callable[[str], None] = log.warn) -> None:
        self.path = path or os.environ.get(SOCKET_PATH_ENV) or SOCKET_PATH
        self.dropped = 0
        self.stopped = False  # set at shutdown: the entries not sent yet are dropped
        self.warn = RateLimitedLog(warn)
        self._next_connect = 0.0
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            self.socket.connect(self.path)
        except OSError as exc:
            self.socket.close()
            raise UsageError(f"--format journald: cannot send to the journal at {self.path}: "
                             f"{os.strerror(exc.errno) if exc.errno else exc}; is systemd-journald running?") from None
        # Non-blocking: a send that finds no room waits in poll() (_send_again). A timeout on the socket
        # would poll() before every send.
        self.socket.setblocking(False)
        self._writable = select.poll()
        self._writable.register(self.socket, select.POLLOUT)

    def send(self, entries: list[bytes]) -> None:
        """Each entry as a datagram."""
        send = self.socket.send
        failed: dict[int | str, int] = {}  # why -> entries dropped
        for i, entry in enumerate(entries):
            if self.stopped:
                failed[SHUTDOWN] = len(entries) - i
                break
            try:
                send(entry)
            except OSError as exc:
                why = self._send_again(entry, exc)
                if why:
                    failed[why] = failed.get(why, 0) + 1
        for why, count in failed.items():
            self.dropped += count
            self.warn_dropped(why, count)

    def warn_dropped(self, why: int | str, count: int, reason: str = "") -> None:
        self.warn(str(why), count, "{n} sessions not sent to journald", reason or drop_reason(why))

    def _send_again(self, entry: bytes, exc: OSError) -> int:
        """After a failed send: the entry again once journald's socket has room (waiting SEND_TIMEOUT at
        most), by memfd when it was too large for a datagram, or again once connected anew when journald
        had gone. The errno that cost the entry, or 0 when it was sent."""
        try:
            if exc.errno == errno.EAGAIN:
                return self._send_when_writable(entry)
            if exc.errno == errno.EMSGSIZE:
                self._send_memfd(entry)
                return 0
            if exc.errno in GONE and self._connect_again():
                self.socket.send(entry)
                return 0
        except OSError as again:
            exc = again
        return exc.errno or errno.EIO

    def _send_when_writable(self, entry: bytes) -> int:
        """Sends the entry once journald's socket has room (other clients of journald may take it first),
        ETIMEDOUT when it has none for SEND_TIMEOUT."""
        deadline = time.monotonic() + SEND_TIMEOUT
        while True:
            wait = deadline - time.monotonic()
            if wait <= 0 or not self._writable.poll(wait * 1000):
                return errno.ETIMEDOUT
            try:
                self.socket.send(entry)
                return 0
            except BlockingIOError:
                continue

    def _connect_again(self) -> bool:
        now = time.monotonic()
        if now < self._next_connect:
            return False
        self._next_connect = now + RECONNECT_INTERVAL
        try:
            self.socket.connect(self.path)
        except OSError:
            return False
        return True

    def _send_memfd(self, entry: bytes) -> None:
        """The entry in a sealed memfd, the memfd in an empty datagram (as the protocol says)."""
        fd = os.memfd_create("otel-tcplife-journal-entry", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            view = memoryview(entry)
            while view:
                view = view[os.write(fd, view):]
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _MEMFD_SEALS)
            self.socket.sendmsg([], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])
        finally:
            os.close(fd)

    def close(self) -> None:
        """Writes the drop warnings held back, and closes the socket."""
        self.warn.flush()
        self.socket.close()


class JournalSender:
    """The kernel reader's way to journald: offer() queues a chunk of entries and returns at once; a
    thread of its own sends them (JournalSocket.send), waiting for journald as long as it takes them.
    journald's socket holds fewer than a hundred entries it has not read yet (the socket buffers): a
    larger burst waits here instead. A chunk that finds the queue full is dropped and counted."""

    def __init__(self, journal: JournalSocket, capacity: int = QUEUE_ENTRIES) -> None:
        self.journal = journal
        self.capacity = capacity
        self.dropped_queue_full = 0  # counted by the reader; the thread counts in journal.dropped
        self._chunks: collections.deque[list[bytes]] = collections.deque()
        self._queued = 0  # entries in _chunks and in the chunk being sent
        self._changed = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="journald", daemon=True)
        self._thread.start()

    @property
    def dropped(self) -> int:
        return self.dropped_queue_full + self.journal.dropped

    def offer(self, entries: list[bytes]) -> None:
        with self._changed:
            if self._queued + len(entries) <= self.capacity:
                self._chunks.append(entries)
                self._queued += len(entries)
                self._changed.notify()
                return
            self.dropped_queue_full += len(entries)
        self.journal.warn_dropped("queue full", len(entries),
                                  f"the queue of {self.capacity} entries is full (journald is behind)")

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._chunks and not self._closing:
                    self._changed.wait()
                if not self._chunks:
                    return
                entries = self._chunks.popleft()
            self.journal.send(entries)
            with self._changed:
                self._queued -= len(entries)

    def close(self, timeout: float) -> None:
        """Sends what is queued until now + timeout; what is left then is dropped and counted."""
        with self._changed:
            self._closing = True
            self._changed.notify()
        self._thread.join(timeout)
        self.journal.stopped = True  # the thread drops the rest, after its current send at most
        self._thread.join()
        self.journal.close()
