"""End to end: the real agent process, real sessions, real OTLP receivers."""

from __future__ import annotations

import pytest

from ..certs import make_certs
from ..otlp_receiver import OtlpReceiver
from ..support import require_bpf


@pytest.fixture(autouse=True)
def _needs_bpf():
    require_bpf()


@pytest.fixture
def receiver():
    with OtlpReceiver() as rx:
        yield rx


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("certs"))
