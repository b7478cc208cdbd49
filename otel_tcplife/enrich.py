"""Per-process facts for session records, cached per (pid, comm)."""

from __future__ import annotations

import os

CACHE_LIMIT = 8192


class ProcessNames:
    """process.executable.name: basename of /proc/PID/exe, else the comm.

    Keyed by (pid, comm) so a reused pid with another name is looked up anew;
    short-lived processes may be gone by the time their session closes, and
    then the comm is all there is.
    """

    def __init__(self, proc: str = "/proc") -> None:
        self.proc = proc
        self._names: dict[tuple[int, str], str] = {}

    def executable_name(self, pid: int, comm: str) -> str:
        key = (pid, comm)
        name = self._names.get(key)
        if name is None:
            try:
                name = os.path.basename(os.readlink(f"{self.proc}/{pid}/exe")) or comm
            except OSError:
                name = comm
            if name.endswith(" (deleted)"):
                name = name[: -len(" (deleted)")]
            if len(self._names) >= CACHE_LIMIT:
                self._names.clear()
            self._names[key] = name
        return name
