"""Checks run before the probe loads, each failing with one line that says what to do."""

from __future__ import annotations

import ctypes
import ctypes.util
import os

from ..errors import ProbeError

KERNEL_BTF = "/sys/kernel/btf/vmlinux"
TRACEFS_MOUNTS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")

CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF = 21, 38, 39


def effective_capabilities(status_path: str = "/proc/self/status") -> int:
    with open(status_path) as status:
        for line in status:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def check_privileges() -> None:
    caps = effective_capabilities()
    has = lambda cap: bool(caps & (1 << cap))  # noqa: E731
    if has(CAP_SYS_ADMIN) or (has(CAP_BPF) and has(CAP_PERFMON)):
        return
    raise ProbeError("permission denied: run as root, or grant CAP_BPF and CAP_PERFMON (e.g. sudo otel-tcplife)")


def check_kernel_btf() -> None:
    if not os.path.exists(KERNEL_BTF):
        raise ProbeError(
            f"kernel BTF not found at {KERNEL_BTF}: this kernel lacks CONFIG_DEBUG_INFO_BTF, "
            "which the CO-RE probe needs"
        )


def ensure_tracefs() -> None:
    """Classic tracepoints are found through tracefs; mount it when it is missing."""
    for path in TRACEFS_MOUNTS:
        if os.path.isdir(os.path.join(path, "events")):
            return
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_void_p]
    target = TRACEFS_MOUNTS[0]
    if libc.mount(b"nodev", target.encode(), b"tracefs", 0, None) != 0:
        err = ctypes.get_errno()
        raise ProbeError(
            f"tracefs is not mounted and mounting it failed ({os.strerror(err)}): "
            f"run `mount -t tracefs nodev {target}`"
        )


def run_all() -> None:
    check_privileges()
    check_kernel_btf()
    ensure_tracefs()
