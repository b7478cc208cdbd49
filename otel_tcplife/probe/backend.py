"""Which probe backend runs: CO-RE (the precompiled object, needs kernel BTF) or bcc (the same
probe compiled at start against this kernel's types). Imports neither bcc nor the bcc backend
unless it is chosen, so the CO-RE agent starts as fast as ever."""

from __future__ import annotations

import glob
import importlib.util
import os
import platform
from dataclasses import dataclass

from ..config import BACKENDS
from ..errors import ProbeError
from . import preflight

KHEADERS = "/sys/kernel/kheaders.tar.xz"
MODULES_DIR = "/lib/modules"  # read at each call: tests point it elsewhere
BCC_PACKAGE = "python3-bpfcc"
ARCH_DIRS = {"x86_64": "x86", "aarch64": "arm64", "s390x": "s390", "ppc64le": "powerpc", "riscv64": "riscv"}


def kernel_btf_present() -> bool:
    return os.path.exists(preflight.KERNEL_BTF)  # read at each call: tests point it elsewhere


def bcc_module_present() -> bool:
    try:
        return importlib.util.find_spec("bcc") is not None
    except (ImportError, ValueError):
        return False


@dataclass(frozen=True)
class KernelHeaders:
    """Headers bcc can compile with: `source` is None for those bcc finds itself (the running
    kernel's /lib/modules/RELEASE/{build,source}, or kheaders); else bcc is pointed at `source`
    (BCC_KERNEL_SOURCE) with `cflags` adding a split build tree's generated headers."""

    source: str | None
    cflags: tuple[str, ...] = ()
    release: str = ""

    def describe(self) -> str:
        return f"headers of {self.release}" if self.release else "kernel headers"


def _has_kconfig(directory: str) -> bool:
    return os.path.isfile(os.path.join(directory, "include", "linux", "kconfig.h"))


def _tree(build: str) -> KernelHeaders | None:
    if _has_kconfig(build):
        return KernelHeaders(os.path.realpath(build), (), os.path.basename(os.path.realpath(build)))
    return _split_tree(build)


def _split_tree(build: str) -> KernelHeaders | None:
    """A build directory whose sources are elsewhere (Debian: linux-headers-R-amd64 holds the
    generated headers, linux-headers-R-common the rest; /lib/modules/R/{build,source})."""
    sources = [os.path.join(os.path.dirname(build), "source")]
    makefile = os.path.join(build, "Makefile")
    if os.path.isfile(makefile):
        with open(makefile, errors="replace") as f:
            sources += [line.split(None, 1)[1].strip().rsplit("/Makefile", 1)[0]
                        for line in f if line.startswith("include ") and line.rstrip().endswith("/Makefile")]
    arch = ARCH_DIRS.get(platform.machine(), platform.machine())
    for source in sources:
        if _has_kconfig(source):
            generated = [f"{build}/arch/{arch}/include/generated", f"{build}/include",
                         f"{build}/arch/{arch}/include/generated/uapi", f"{build}/include/generated/uapi"]
            return KernelHeaders(os.path.realpath(source), tuple("-I" + d for d in generated),
                                 os.path.basename(os.path.realpath(build)))
    return None


def find_kernel_headers(any_kernel: bool) -> KernelHeaders | None:
    """The running kernel's headers; with any_kernel (offsets come from BTF, the headers only
    serve bcc's own includes), any installed kernel's."""
    release = os.uname().release
    own = _tree(f"{MODULES_DIR}/{release}/build") or _tree(f"{MODULES_DIR}/{release}/source")
    if own:
        return KernelHeaders(own.source, own.cflags, release)
    if os.path.exists(KHEADERS):  # CONFIG_IKHEADERS: bcc unpacks them itself
        return KernelHeaders(None, (), release)
    if not any_kernel:
        return None
    for build in sorted(glob.glob(f"{MODULES_DIR}/*/build")) + sorted(glob.glob("/usr/src/kernels/*")) \
            + sorted(glob.glob("/usr/src/linux-headers-*")):
        found = _tree(build)
        if found:
            return found
    return None


def bcc_missing(btf: bool) -> list[str]:
    """What the bcc backend lacks here, named as a user installs it."""
    missing = []
    if not bcc_module_present():
        missing.append(f"bcc's Python module (Debian: {BCC_PACKAGE})")
    if find_kernel_headers(any_kernel=btf) is None:
        release = os.uname().release
        missing.append(f"kernel headers for {release} ({MODULES_DIR}/{release}/build; Debian: linux-headers-{release})"
                       if not btf else "kernel headers (Debian: linux-headers-amd64)")
    return missing


def choose(backend: str) -> str:
    """auto -> core or bcc; raises ProbeError naming what is missing when neither can run."""
    if backend not in BACKENDS:
        raise ProbeError(f"unknown backend {backend!r}")
    if backend != "auto":
        return backend
    if kernel_btf_present():
        return "core"
    missing = bcc_missing(btf=False)
    if missing:
        raise ProbeError(f"no kernel BTF at {preflight.KERNEL_BTF} (needed by the CO-RE probe), and the bcc "
                         f"backend needs {' and '.join(missing)}")
    return "bcc"


def open_probe(settings):
    """The probe for settings.backend, not started yet."""
    if choose(settings.backend) == "core":
        from .core import CoreProbe
        return CoreProbe(settings)
    from .bcc import BccProbe
    return BccProbe(settings)
