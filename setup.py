"""Builds the BPF object into the package, so wheels ship it (see bpf/build.py)."""

import os
import sys

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "bpf"))
import build as bpf_build  # noqa: E402

BPF_OBJECT = os.path.join(HERE, "otel_tcplife", "bpf", "tcplife.bpf.o")


class BuildPyWithBpf(build_py):
    def run(self):
        if bpf_build.is_stale(BPF_OBJECT):
            bpf_build.build(BPF_OBJECT)
        super().run()


setup(cmdclass={"build_py": BuildPyWithBpf})
