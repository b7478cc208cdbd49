"""The errors otel-tcplife reports to its user.

    TcplifeError            one clear line for the user; exit status 1
    ├── UsageError          bad flag or environment value; exit status 2
    └── ProbeError          the kernel probe could not be set up
        └── LibbpfError     a libbpf call failed: names the step and the errno
"""

from __future__ import annotations

import errno as _errno
import os


class TcplifeError(Exception):
    exit_status = 1


class UsageError(TcplifeError):
    exit_status = 2


class ProbeError(TcplifeError):
    pass


class LibbpfError(ProbeError):
    def __init__(self, step: str, err: int):
        err = abs(err)
        name = _errno.errorcode.get(err, str(err))
        super().__init__(f"{step} failed: {name} ({os.strerror(err)})")
        self.step = step
        self.errno = err
