"""journald's native protocol (https://systemd.io/JOURNAL_NATIVE_PROTOCOL/): a journal entry's
fields as bytes, and the socket that sends entries without ever blocking.

An entry is one datagram to /run/systemd/journal/socket (AF_UNIX, SOCK_DGRAM), its fields one after
the other: `NAME=value\\n`, or, when the value holds a newline, `NAME\\n`, the value's length in bytes
(64-bit little-endian), the value, `\\n`. An entry too large for a datagram (EMSGSIZE) goes in a
sealed memfd, passed with SCM_RIGHTS in an empty datagram.

The outputs build an entry as text and encode it once, with ENCODING. The length in a binary field
is bytes, not text: field() gives it as the code points surrogateescape decodes those bytes to, and
encoding with surrogateescape turns them back into exactly those bytes. (Our text never holds such
code points otherwise: the system's text is decoded with "replace".)

What journald cannot take now is dropped and counted, never waited for: the socket is non-blocking,
so a full queue (EAGAIN; the queue holds net.unix.max_dgram_qlen datagrams), a lack of memory
(ENOBUFS) or a journald that went away (ECONNREFUSED) cost the entry, not the kernel reader's time.
journald's own rate limit (RateLimitIntervalSec=/RateLimitBurst=, per service) drops entries
silently after it took them: that is not counted here (the systemd unit turns it off).
"""

from __future__ import annotations

import array
import errno
import fcntl
import os
import re
import socket
import struct
import time
from typing import Callable, Iterable, Mapping

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


def attribute_fields(attributes: Mapping[str, object]) -> tuple[str, list[str]]:
    """Attributes (the Resource's) as fields: (their text, the keys left out for want of a field name).
    Strings as they are, other values as JSON (true, 3, ["a"])."""
    text, left_out = [], []
    for key, value in attributes.items():
        name = field_name(key)
        if name is None:
            left_out.append(key)
            continue
        text.append(field(name, value if isinstance(value, str) else orjson.dumps(value).decode()))
    return "".join(text), left_out


# Errors that mean journald is not there (any more): the socket is connected again, at most once a
# RECONNECT_INTERVAL, so that a journald that restarted gets the entries again.
GONE = {errno.ECONNREFUSED, errno.ENOTCONN, errno.ENOENT, errno.EDESTADDRREQ}
RECONNECT_INTERVAL = 1.0
_MEMFD_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL


def drop_reason(error: int) -> str:
    if error in (errno.EAGAIN, errno.EWOULDBLOCK):
        return "journald's socket queue is full (journald is behind)"
    if error in GONE:
        return "journald is not running"
    return f"{errno.errorcode.get(error, error)} ({os.strerror(error)})"


class JournalSocket:
    """Sends entries (bytes) to journald, one datagram each. `dropped` counts the entries it did not take."""

    def __init__(self, path: str | None = None, warn: Callable[[str], None] = log.warn) -> None:
        self.path = path or os.environ.get(SOCKET_PATH_ENV) or SOCKET_PATH
        self.dropped = 0
        self._warn = RateLimitedLog(warn)
        self._next_connect = 0.0
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        try:
            self.socket.connect(self.path)
        except OSError as exc:
            self.socket.close()
            raise UsageError(f"--format journald: cannot send to the journal at {self.path}: "
                             f"{os.strerror(exc.errno) if exc.errno else exc}; is systemd-journald running?") from None

    def send(self, entries: Iterable[bytes]) -> None:
        """Each entry as a datagram, at once or never."""
        send = self.socket.send
        failed: dict[int, int] = {}  # errno -> entries dropped
        for entry in entries:
            try:
                send(entry)
            except OSError as exc:
                error = self._send_again(entry, exc)
                if error:
                    failed[error] = failed.get(error, 0) + 1
        for error, count in failed.items():
            self.dropped += count
            self._warn(f"errno {error}", count, "{n} sessions not sent to journald", drop_reason(error))

    def _send_again(self, entry: bytes, exc: OSError) -> int:
        """After a failed send: the entry by memfd when it was too large for a datagram, or again once
        connected anew when journald had gone. The errno that cost the entry, or 0 when it was sent."""
        try:
            if exc.errno == errno.EMSGSIZE:
                self._send_memfd(entry)
                return 0
            if exc.errno in GONE and self._connect_again():
                self.socket.send(entry)
                return 0
        except OSError as again:
            exc = again
        return exc.errno or errno.EIO

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
        self._warn.flush()
        self.socket.close()
