"""The probe's kernel state pinned in bpffs, so that it outlives the agent.

    ROOT/                       /sys/fs/bpf/otel-tcplife by default (--pin-path)
      VERSION/                  the layout version (layout_version): one per event/table layout
        socks events counters agent_state    the maps (struct pin_state in agent_state)
        links/PROGRAM           the attached programs' links: the probe stays attached

A restarted agent of the same layout reuses the maps (libbpf reuses a map pinned at its pin path),
attaches its programs and pins their links in place of the old ones (a rename over the old pin:
the old link goes when the new one is in, so the probe is never detached, and the two programs
share the socket table, so a session is reported by one of them). Its reader starts at the ring
buffer's consumer position, which only ever passes records already durable in the outputs.

A VERSION other than ours is an agent of another layout: its ring buffer cannot be read by this
one. Its links are removed first (no more records come), its unread records are counted (their
headers give their number, whatever their layout), and its pins are removed. The sessions its
socket table held are found again by the socket iterator, with an unknown start.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import re
import shutil

from .. import abi
from ..errors import ProbeError

DEFAULT_ROOT = "/sys/fs/bpf/otel-tcplife"
BPFFS = "/sys/fs/bpf"
PINNED_MAPS = ("socks", "events", "counters", "agent_state")
LINKS = "links"
NEW_SUFFIX = "_new"  # a link being pinned, before it is renamed over the old one (bpffs names have no dots)
VERSION_ENV = "OTEL_TCPLIFE_PIN_VERSION"  # tests: an agent of another layout, without a second build
# A version's directory, as layout_version names it: nothing else under the root is ours to remove.
VERSION_NAME = re.compile(r"v\d+-[A-Za-z0-9-]+")


def layout_version(maps: dict[str, tuple[int, int, int, int]]) -> str:
    """The pins' version: a hash of everything a reader of the pinned maps depends on (struct event,
    struct sock_info, struct pin_state, and each pinned map's type, key size, value size and flags;
    not the ring buffer's size, which a new agent takes from the pinned one)."""
    if os.environ.get(VERSION_ENV):
        return os.environ[VERSION_ENV]
    described = repr((abi.EVENT_FIELDS, abi.SOCK_INFO_FIELDS, abi.PIN_STATE_FIELDS, sorted(maps.items())))
    return "v1-" + hashlib.sha256(described.encode()).hexdigest()[:12]


def _mount_point(path: str) -> tuple[str, str]:
    """The mount point holding path and its file system type, from /proc/self/mounts."""
    best, kind = "/", ""
    path = os.path.abspath(path)
    with open("/proc/self/mounts") as mounts:
        for line in mounts:
            fields = line.split()
            if len(fields) < 3:
                continue
            point = fields[1].replace("\\040", " ")
            if (path == point or path.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
                best, kind = point, fields[2]
    return best, kind


def check_root(root: str) -> None:
    """The pin root is a directory of its own: not a mount point (/sys/fs/bpf holds other tools' pins)
    nor the file system's root."""
    if os.path.abspath(root) in (BPFFS, "/") or _mount_point(root)[0] == os.path.abspath(root):
        raise ProbeError(f"pin path {root} is a mount point: give a directory of its own under it, "
                         f"e.g. {DEFAULT_ROOT}")


def ensure_bpffs(root: str) -> None:
    """The pin root must be on bpffs: mounts it at /sys/fs/bpf when nothing is mounted there."""
    check_root(root)
    point, kind = _mount_point(root)
    if kind == "bpf":
        return
    if not os.path.abspath(root).startswith(BPFFS + "/") or point == BPFFS:
        raise ProbeError(f"pin path {root} is not on a BPF file system (bpffs): give a directory under a "
                         f"bpffs mount with --pin-path, or --no-pin")
    import ctypes
    import ctypes.util

    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
    if libc.mount(b"bpf", BPFFS.encode(), b"bpf", 0, b"mode=0700") != 0:
        err = ctypes.get_errno()
        raise ProbeError(f"bpffs is not mounted at {BPFFS} and mounting it failed ({os.strerror(err)}): run "
                         f"`mount -t bpf bpf {BPFFS}`, or start with --no-pin")


class PinsInUse(ProbeError):
    """Another running agent holds the pins."""


class PinDir:
    """One version's pin directory, locked (flock) by one agent at a time."""

    def __init__(self, root: str, version: str) -> None:
        self.root = root
        self.version = version
        self.path = os.path.join(root, version)
        self._lock = -1

    def open(self) -> "PinDir":
        ensure_bpffs(self.root)
        try:
            os.makedirs(os.path.join(self.path, LINKS), mode=0o700, exist_ok=True)
            self._lock = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise ProbeError(f"cannot use the pin directory {self.path}: {exc.strerror}") from None
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock)
            self._lock = -1
            raise PinsInUse(f"the pins at {self.path} are in use by another otel-tcplife "
                            "(give each agent its own --pin-path, or --no-pin)") from None
        return self

    def map_path(self, name: str) -> str:
        return os.path.join(self.path, name)

    def link_path(self, program: str) -> str:
        return os.path.join(self.path, LINKS, program)

    def pinned_links(self) -> list[str]:
        try:
            return [name for name in os.listdir(os.path.join(self.path, LINKS)) if not name.endswith(NEW_SUFFIX)]
        except FileNotFoundError:
            return []

    def remove_link(self, program: str) -> None:
        try:
            os.unlink(self.link_path(program))
        except FileNotFoundError:
            pass

    def close(self) -> None:
        if self._lock >= 0:
            os.close(self._lock)
            self._lock = -1


def other_versions(root: str, version: str) -> list[str]:
    """The versions pinned under root but this one: directories named as layout_version names them,
    holding an agent's state. Anything else there is left alone."""
    try:
        return sorted(name for name in os.listdir(root) if name != version and VERSION_NAME.fullmatch(name)
                      and os.path.exists(os.path.join(root, name, "agent_state")))
    except FileNotFoundError:
        return []


@contextlib.contextmanager
def locked(path: str, in_use: str):
    """A version's pin directory, held for the block (the lock a running agent holds); ProbeError
    with the in_use text when an agent holds it."""
    lock = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PinsInUse(f"the pins at {path} {in_use}: stop it first") from None
        yield
    finally:
        os.close(lock)


def discard_version(libbpf, root: str, version: str) -> int:
    """Removes another version's pins: its links first (so nothing more is written), then counts
    the records its ring buffer still holds, unread, and removes its maps. Returns that count."""
    from .libbpf import map_info
    from .ring import RingReader

    path = os.path.join(root, version)
    with locked(path, "(an agent of another version) are in use by a running otel-tcplife"):
        shutil.rmtree(os.path.join(path, LINKS), ignore_errors=True)
        unread = 0
        events = os.path.join(path, "events")
        if os.path.exists(events):
            fd = libbpf.lib.bpf_obj_get(events.encode())
            if fd >= 0:
                try:
                    size = map_info(libbpf, fd).max_entries
                    ring = RingReader(fd, size, auto_commit=False)
                    try:
                        unread = ring.count(ring.committed, ring.produced)
                    finally:
                        ring.close()
                except (OSError, ProbeError):
                    pass
                finally:
                    os.close(fd)
        shutil.rmtree(path, ignore_errors=True)
        return unread


def unpin(root: str) -> list[str]:
    """Removes every version's pins under root (detaching the probe); returns the versions removed.
    A root that is not a directory of its own on bpffs is refused: nothing else is removed."""
    if not os.path.isdir(root):
        return []
    check_root(root)
    if _mount_point(root)[1] != "bpf":
        raise ProbeError(f"pin path {root} is not on a BPF file system (bpffs): nothing to unpin there")
    removed = []
    for version in other_versions(root, ""):
        path = os.path.join(root, version)
        with locked(path, "are in use by a running otel-tcplife"):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(version)
    try:
        os.rmdir(root)
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.ENOTEMPTY):
            raise
    return removed
