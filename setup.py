"""Builds the BPF object into the package, so wheels ship it (see bpf/build.py)."""

import os
import sys

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "bpf"))
import build as bpf_build  # noqa: E402

BPF_OBJECT = os.path.join(HERE, "otel_tcplife", "bpf", "tcplife.bpf.o")


# The probe's C sources go beside the object: the bcc backend compiles them at start on hosts
# without BTF (probe/bcc_source.py finds them there).
BPF_SOURCES = ("tcplife.bpf.c", "tcplife.h", "kernel_types.h")


class BuildPyWithBpf(build_py):
    def run(self):
        if bpf_build.is_stale(BPF_OBJECT):
            bpf_build.build(BPF_OBJECT)
        super().run()
        target = os.path.join(self.build_lib, "otel_tcplife", "bpf")
        self.mkpath(target)  # an editable build's build_lib holds no package files
        for name in BPF_SOURCES:
            self.copy_file(os.path.join(HERE, "bpf", name), os.path.join(target, name))


setup(cmdclass={"build_py": BuildPyWithBpf})
