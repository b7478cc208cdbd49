"""The bcc backend beyond the shared kernel tests (conftest's collector runs those under bcc too):
its perf buffer reader, its offsets from kernel headers, and --backend auto on a host without BTF
(simulated by pointing the BTF path, and the kernel modules directory, elsewhere)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

from otel_tcplife.probe import CoreProbe, ProbeSettings, backend, bcc_source, preflight
from otel_tcplife.session import Decoder

from ..support import ROOT
from .conftest import require_bcc


@pytest.fixture(autouse=True)
def _needs_bcc():
    require_bcc()


def read_all(probe) -> list:
    events = []
    while batch := probe.read(0.05):
        events += batch
    return Decoder().decode(events)


def test_perf_buffer_and_ring_buffer_read_the_same_sessions_as_core(traffic):
    """Kernels before 5.8 have no ring buffer: the generated program then sends through a perf
    buffer. Forced here, beside the bcc ring buffer and the CO-RE probe, on the same sessions."""
    from otel_tcplife.probe.bcc import BccProbe, PerfReader

    server, port = traffic.server(name="tl-server", count=30, send=1000, recv=3000)
    probes = {"core": CoreProbe(ProbeSettings(local_ports=(port,), attach="tracepoint")).start(),
              "perf": BccProbe(ProbeSettings(backend="bcc", bcc_buffer="perf", local_ports=(port,))).start(),
              "ring": BccProbe(ProbeSettings(backend="bcc", bcc_buffer="ring", local_ports=(port,))).start()}
    try:
        assert isinstance(probes["perf"]._reader, PerfReader) and probes["perf"].buffer == "perf buffer"
        traffic.client(name="tl-client", port=port, count=30, send=3000, recv=1000).events()
        server.events()
        time.sleep(0.2)
        read = {name: read_all(probe) for name, probe in probes.items()}
        counters = {name: probe.counters() for name, probe in probes.items()}
    finally:
        for probe in probes.values():
            probe.close()
    assert len(read["core"]) == 30 and all((s.tx_bytes, s.rx_bytes) == (1000, 3000) for s in read["core"])
    # Each probe stamps birth and close itself, and random ids: every other field is the same.
    same = lambda sessions: sorted(s._replace(birth_ns=0, close_ns=0, **({"span_ids": b""} if hasattr(s, "span_ids") else {}))  # noqa: E731
                                   for s in sessions)
    assert same(read["perf"]) == same(read["core"])
    assert same(read["ring"]) == same(read["core"])
    assert counters["perf"] == counters["ring"] == {"lost": 0, "untracked": 0}


def fake_modules_dir(tmp_path) -> str:
    """/lib/modules/RELEASE/{build,source} for this kernel, pointing at the installed headers of
    another kernel: a host without BTF that has its headers, as far as the agent can tell."""
    headers = backend.find_kernel_headers(any_kernel=True)
    assert headers and headers.source, "no kernel headers installed"
    own = tmp_path / "modules" / os.uname().release
    own.mkdir(parents=True)
    build = next((flag[2:].split("/arch/")[0] for flag in headers.cflags if "/arch/" in flag), headers.source)
    (own / "build").symlink_to(build)
    (own / "source").symlink_to(headers.source)
    return str(tmp_path / "modules")


def test_header_offsets_are_the_headers_and_btf_offsets_the_kernels(tmp_path):
    """Without BTF the offsets come from the kernel headers, as bcc's own tools take them. Here the
    headers are another kernel's: fields that never moved agree with BTF, the others do not, which
    is why the backend takes BTF's whenever the kernel has BTF."""
    from otel_tcplife.probe.bcc import HeaderLayouts

    kernel = bcc_source.parse_kernel_types((ROOT / "bpf" / "kernel_types.h").read_text())
    from_headers = HeaderLayouts(backend.find_kernel_headers(any_kernel=True))
    from_headers.prepare(kernel.structs, [("sock_flags", "SOCK_DONE")])
    from_btf = bcc_source.BtfLayouts(preflight.KERNEL_BTF)
    stable = from_headers.struct_layout("sock_common"), from_btf.struct_layout("sock_common")
    for name in ("skc_daddr", "skc_rcv_saddr", "skc_dport", "skc_family"):
        assert stable[0].fields[name].offset == stable[1].fields[name].offset
    assert from_headers.enum_value("sock_flags", "SOCK_DONE") == from_btf.enum_value("sock_flags", "SOCK_DONE") == 1
    moved = [name for name in ("bytes_acked", "bytes_received", "snd_una")
             if from_headers.struct_layout("tcp_sock").fields[name].offset
             != from_btf.struct_layout("tcp_sock").fields[name].offset]
    if os.path.realpath(from_headers.headers.source).find(os.uname().release.split("-")[0]) < 0:
        assert moved, "the headers are another kernel's: some tcp_sock offset should differ"


def run_agent_without_btf(tmp_path, modules: str, hide_bcc: bool = False, seconds: float = 0) -> subprocess.CompletedProcess:
    script = textwrap.dedent(f"""
        import signal, sys, threading, os
        from otel_tcplife.probe import backend, preflight
        preflight.KERNEL_BTF = {str(tmp_path / "no-btf" / "vmlinux")!r}
        backend.MODULES_DIR = {modules!r}
        if {hide_bcc!r}:
            sys.modules["bcc"] = None  # as if python3-bpfcc were not installed
        if {seconds!r}:
            threading.Timer({seconds!r}, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
        from otel_tcplife.cli import main
        sys.exit(main(["--format", "ndjson", "--verbose", "-L", "1"]))
    """)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_auto_without_btf_chooses_bcc_with_offsets_from_the_headers(tmp_path):
    done = run_agent_without_btf(tmp_path, fake_modules_dir(tmp_path), seconds=1.0)
    assert done.returncode == 0, done.stderr
    assert "bcc: offsets from kernel headers" in done.stderr
    assert "tracing via tracepoint" in done.stderr


@pytest.mark.parametrize("hide_bcc,modules,missing", [
    (False, "empty", "kernel headers for " + os.uname().release),
    (True, "fake", "bcc's Python module (Debian: python3-bpfcc)"),
    (True, "empty", "bcc's Python module (Debian: python3-bpfcc) and kernel headers"),
])
def test_auto_without_btf_or_bcc_says_what_is_missing(tmp_path, hide_bcc, modules, missing):
    directory = fake_modules_dir(tmp_path) if modules == "fake" else str(tmp_path / "empty")
    done = run_agent_without_btf(tmp_path, directory, hide_bcc=hide_bcc)
    assert done.returncode == 1
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"otel-tcplife: error: no kernel BTF at {tmp_path}/no-btf/vmlinux")
    assert missing in line
    assert "Traceback" not in done.stderr


def test_the_core_agent_does_not_import_bcc():
    script = ("import sys; from otel_tcplife.probe import open_probe, ProbeSettings\n"
              "p = open_probe(ProbeSettings()).start(); p.close()\n"
              "print(type(p).__name__, 'bcc' in sys.modules, 'otel_tcplife.probe.bcc' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.stdout.split() == ["CoreProbe", "False", "False"], done.stderr


def test_the_generated_program_has_no_iterators_or_pinned_state():
    """The bcc build defines TCPLIFE_NO_ITER and TCPLIFE_NO_PINS: the iterator programs, their
    types and listen_ports, and agent_state, are cut from the text (the CO-RE object keeps them)."""
    from otel_tcplife.probe.bcc import config_bytes

    generated = bcc_source.generate(bcc_source.BtfLayouts(preflight.KERNEL_BTF), config_bytes(ProbeSettings()))
    assert {p.section.split("/", 1)[0] for p in generated.programs} == {"tracepoint"}
    for name in ("find_sockets", "find_owners", "bpf_iter", "___iter", "listen_ports", "agent_state"):
        assert name not in generated.text
    assert "#define TCPLIFE_NO_ITER 1" in generated.text
    source = (ROOT / "bpf" / "tcplife.bpf.c").read_text()
    assert "listen_ports" in source and "agent_state" in source and "find_sockets" in source
    # An #else branch is what the preprocessor would keep; other conditionals stay as they are.
    text = "a\n#ifndef TCPLIFE_NO_ITER\nb\n#ifdef X\nc\n#endif\n#else\nd\n#endif\n#ifdef Y\ne\n#endif\n"
    assert bcc_source.drop_excluded(text) == "a\nd\n#ifdef Y\ne\n#endif\n"


@pytest.mark.parametrize("fmt,warned", [("ndjson", True), ("table", False)])
def test_bcc_says_it_finds_no_sessions_open_before_the_start(fmt, warned):
    """--pre-existing (the default but for the classic table) needs the socket iterator, which
    the bcc backend does not have: said once at start rather than silently ignored."""
    script = ("import os, signal, sys, threading\n"
              "threading.Timer(1.0, lambda: os.kill(os.getpid(), signal.SIGINT)).start()\n"
              "from otel_tcplife.cli import main\n"
              f"sys.exit(main(['--backend', 'bcc', '--format', {fmt!r}, '--no-pin', '-L', '1']))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    message = "the bcc backend has no socket iterator: sessions open before the start are not reported"
    assert (message in done.stderr) == warned, done.stderr
    assert "pins nothing" not in done.stderr


def test_forced_bcc_says_tp_btf_is_core_only():
    done = subprocess.run([sys.executable, "-m", "otel_tcplife", "--backend", "bcc", "--attach", "tp_btf"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 1
    assert done.stderr.strip() == ("otel-tcplife: error: --attach tp_btf needs the CO-RE backend: "
                                   "the bcc backend attaches the classic tracepoint")
