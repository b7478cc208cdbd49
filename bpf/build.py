"""Compile bpf/tcplife.bpf.c into the BPF object the package loads.

Used by the Makefile and by setup.py (so wheels carry the object); needs
clang and libbpf's headers (libbpf-dev), nothing from the running kernel.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys

BPF_DIR = os.path.dirname(os.path.abspath(__file__))
SOURCES = ("tcplife.bpf.c", "tcplife.h", "kernel_types.h")
TARGET_ARCH = {"x86_64": "x86", "aarch64": "arm64", "arm64": "arm64", "s390x": "s390", "ppc64le": "powerpc"}


def is_stale(output: str) -> bool:
    if not os.path.exists(output):
        return True
    built = os.path.getmtime(output)
    return any(os.path.getmtime(os.path.join(BPF_DIR, name)) > built for name in SOURCES)


def build(output: str) -> None:
    clang = shutil.which("clang")
    if clang is None:
        raise SystemExit("clang not found: building the BPF object needs clang and libbpf-dev")
    arch = TARGET_ARCH.get(platform.machine(), platform.machine())
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    tmp = output + ".tmp"
    subprocess.run(
        [clang, "-g", "-O2", "-Wall", "-Werror", "-target", "bpf", f"-D__TARGET_ARCH_{arch}",
         "-I", BPF_DIR, "-c", os.path.join(BPF_DIR, "tcplife.bpf.c"), "-o", tmp],
        check=True,
    )
    os.replace(tmp, output)


if __name__ == "__main__":
    target = sys.argv[1]
    if is_stale(target):
        build(target)
