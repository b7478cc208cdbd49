"""Checks run before the probe loads, each failing with one line that says what to do."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os

from ..errors import ProbeError

KERNEL_BTF = "/sys/kernel/btf/vmlinux"
TRACEFS_MOUNTS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")

# The capabilities the agent uses (linux/capability.h), besides root's uid 0 which it never needs:
#   CAP_BPF              load the probe, create its maps
#   CAP_PERFMON          attach it to tracepoints, read kernel memory in it
#   CAP_DAC_READ_SEARCH  read tracepoint ids in tracefs, which is mode 0700
#   CAP_SYS_PTRACE       read /proc/PID/exe of other users' processes (process.executable.name)
#   CAP_SYS_ADMIN        only to mount tracefs where it is not mounted; also stands in for BPF and PERFMON
CAP_DAC_READ_SEARCH, CAP_SYS_PTRACE, CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF = 2, 19, 21, 38, 39
CAPABILITY_NAMES = {CAP_DAC_READ_SEARCH: "CAP_DAC_READ_SEARCH", CAP_SYS_PTRACE: "CAP_SYS_PTRACE",
                    CAP_SYS_ADMIN: "CAP_SYS_ADMIN", CAP_PERFMON: "CAP_PERFMON", CAP_BPF: "CAP_BPF"}
# What deploy/ grants (systemd unit, DaemonSet, Containerfile): tests check them against this list.
CAPABILITIES = ("CAP_BPF", "CAP_PERFMON", "CAP_DAC_READ_SEARCH", "CAP_SYS_PTRACE")
GRANT = f"run as root, or grant {', '.join(CAPABILITIES[:-1])} and {CAPABILITIES[-1]}"


def effective_capabilities(status_path: str = "/proc/self/status") -> int:
    with open(status_path) as status:
        for line in status:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def has_capability(cap: int) -> bool:
    return bool(effective_capabilities() & (1 << cap))


def check_privileges() -> list[str]:
    """Raises when the probe cannot load; returns warnings for what works less well."""
    if not has_capability(CAP_SYS_ADMIN):
        missing = [CAPABILITY_NAMES[cap] for cap in (CAP_BPF, CAP_PERFMON) if not has_capability(cap)]
        if missing:
            raise ProbeError(f"permission denied: missing {' and '.join(missing)}: {GRANT}")
    if not has_capability(CAP_SYS_PTRACE):
        return ["without CAP_SYS_PTRACE, processes this user may not inspect get the comm as "
                "process.executable.name, and no service.name from their environment"]
    return []


def check_kernel_btf() -> None:
    if not os.path.exists(KERNEL_BTF):
        raise ProbeError(
            f"kernel BTF not found at {KERNEL_BTF}: this kernel lacks CONFIG_DEBUG_INFO_BTF, "
            "which the CO-RE probe needs"
        )


def ensure_tracefs() -> None:
    """Classic tracepoints are found through tracefs; mount it when it is missing."""
    for path in TRACEFS_MOUNTS:
        try:
            os.stat(os.path.join(path, "events"))
            return
        except PermissionError:  # mounted, but mode 0700
            raise ProbeError(f"tracefs at {path} is not readable: missing CAP_DAC_READ_SEARCH: {GRANT}") from None
        except OSError:
            continue
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_void_p]
    target = TRACEFS_MOUNTS[0]
    if libc.mount(b"nodev", target.encode(), b"tracefs", 0, None) != 0:
        err = ctypes.get_errno()
        needs = "; that needs CAP_SYS_ADMIN" if err == errno.EPERM else ""
        raise ProbeError(
            f"tracefs is not mounted and mounting it failed ({os.strerror(err)}{needs}): "
            f"run `mount -t tracefs nodev {target}`"
        )


def run_all() -> list[str]:
    """The checks, in order; returns warnings."""
    warnings = check_privileges()
    check_kernel_btf()
    ensure_tracefs()
    return warnings
