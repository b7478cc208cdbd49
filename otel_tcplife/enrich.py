"""Per-process facts for session records, cached per (pid, comm).

Every text that comes from the system enters here, or in abi.comm_text, and leaves as
valid UTF-8: bytes that are not UTF-8 (a file named b"x\\xff") become U+FFFD, the Unicode
replacement character. Encoders can then encode any text without failing.
"""

from __future__ import annotations

import os

CACHE_LIMIT = 8192
DELETED = " (deleted)"  # what the kernel appends to the link of an unlinked executable


def system_text(raw: bytes) -> str:
    """Bytes from the kernel or a file as text: invalid UTF-8 becomes U+FFFD."""
    return raw.decode("utf-8", "replace")


class ProcessNames:
    """process.executable.name: basename of /proc/PID/exe, else the comm.

    Keyed by (pid, comm) so a reused pid with another name is looked up anew;
    short-lived processes may be gone by the time their session closes, and
    then the comm is all there is.
    """

    def __init__(self, proc: str = "/proc") -> None:
        self.proc = os.fsencode(proc)
        self._names: dict[tuple[int, str], str] = {}

    def executable_name(self, pid: int, comm: str) -> str:
        key = (pid, comm)
        name = self._names.get(key)
        if name is None:
            try:
                # Bytes in, bytes out: a str path would give surrogate escapes for non-UTF-8 names.
                name = system_text(os.path.basename(os.readlink(b"%s/%d/exe" % (self.proc, pid)))) or comm
            except OSError:
                name = comm
            if name.endswith(DELETED):
                name = name[: -len(DELETED)]
            if len(self._names) >= CACHE_LIMIT:
                self._names.clear()
            self._names[key] = name
        return name
