"""A real, tiny file system for tests of a full disk: a tmpfs mounted in a temporary directory."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator

import pytest


@contextlib.contextmanager
def tiny_tmpfs(directory, size: str) -> Iterator[str]:
    """Mounts a tmpfs of `size` (e.g. "256k", mode 0700) on `directory`, unmounted on exit; skips the
    test where mounting is not allowed (not root, no CAP_SYS_ADMIN)."""
    path = str(directory)
    os.makedirs(path, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", path],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", path], check=True, capture_output=True)


def fill_up(path: str) -> str:
    """Fills the file system holding `path` with one file; returns that file's path (delete it to
    free the space)."""
    ballast = os.path.join(path, "ballast")
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        while os.write(fd, b"\1" * 4096):
            pass
    except OSError:  # ENOSPC: full
        pass
    finally:
        os.close(fd)
    return ballast
