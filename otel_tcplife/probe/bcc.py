"""The bcc probe: the same probe as the CO-RE object (bpf/tcplife.bpf.c), generated for bcc
(probe/bcc_source.py) and compiled at start against this kernel's types: from its BTF when it has
one, else from its headers. For kernels without BTF, where the CO-RE object cannot load.

Same interface as CoreProbe: start(), read(), drain(), counters(), close(), attach_mode, warnings.
The events come through a BPF ring buffer, read by the same readers as CO-RE's (probe/ring.py),
on kernels that have one (5.8+), else through a perf buffer (PerfReader).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import struct
import tempfile
import time
from contextlib import ExitStack

from .. import abi, log
from ..config import ProbeSettings
from ..errors import LibbpfError, ProbeError
from . import backend, bcc_source, preflight
from .core import ACCEPT_PROGRAMS, RESET_PROGRAMS
from .ring import MAX_BATCH_RECORDS, RingReader, default_ring_reader

RING_BUFFER_KERNEL = (5, 8)


def kernel_version(release: str | None = None) -> tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", release or os.uname().release)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def config_bytes(s: ProbeSettings) -> bytes:
    """struct probe_config, as CoreProbe writes it into .rodata."""
    wakeup_bytes = s.ring_buffer_bytes // 4 if s.poll_interval > 0 else 0
    return abi.pack_config(s.pid, s.family, s.local_ports, s.remote_ports, wakeup_bytes, s.random_trace_ids)


@contextlib.contextmanager
def captured_output(verbose: bool):
    """bcc's compiler writes its diagnostics to fds 1 and 2: into a file, for the error message
    (and for stderr with --verbose)."""
    with tempfile.TemporaryFile(mode="w+b") as capture:
        saved = [os.dup(1), os.dup(2)]
        try:
            os.dup2(capture.fileno(), 1)
            os.dup2(capture.fileno(), 2)
            yield capture
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            capture.seek(0)
            capture.text = capture.read().decode(errors="replace")  # type: ignore[attr-defined]
            if verbose and capture.text.strip():  # type: ignore[attr-defined]
                for line in capture.text.rstrip().splitlines():  # type: ignore[attr-defined]
                    log.line("bcc: " + line)


def first_error(text: str) -> str:
    for line in text.splitlines():
        if "error:" in line or "Unable to find kernel headers" in line:
            return line.strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


@contextlib.contextmanager
def kernel_source(headers: backend.KernelHeaders):
    saved = os.environ.get("BCC_KERNEL_SOURCE")
    if headers.source:
        os.environ["BCC_KERNEL_SOURCE"] = headers.source
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("BCC_KERNEL_SOURCE", None)
        else:
            os.environ["BCC_KERNEL_SOURCE"] = saved


def compile_program(text: str, headers: backend.KernelHeaders, verbose: bool, what: str = "the probe"):
    try:
        from bcc import BPF
    except ImportError as exc:
        raise ProbeError(f"the bcc backend needs bcc's Python module (Debian: {backend.BCC_PACKAGE}): {exc}") from None
    with kernel_source(headers), captured_output(verbose) as out:
        try:
            return BPF(text=text.encode(), cflags=list(headers.cflags))
        except Exception as exc:  # bcc raises a bare Exception
            error = exc
    message = first_error(out.text) if out.text.strip() else str(error)
    raise BccCompileError(f"bcc could not compile {what}: {message}", out.text)


class BccCompileError(ProbeError):
    def __init__(self, message: str, output: str) -> None:
        super().__init__(message)
        self.output = output


class HeaderLayouts(bcc_source.Layouts):
    """Kernel struct layouts as the kernel headers give them, computed by bcc itself: a program
    of functions each returning one offsetof()/sizeof(), read back from their bytecode. Members
    the headers lack (or bitfields, which have no offset) come out as missing."""

    INCLUDES = ("linux/sched.h", "linux/fs.h", "linux/fdtable.h", "linux/net.h", "linux/in6.h",
                "linux/tcp.h", "net/sock.h", "net/inet_sock.h", "net/inet_connection_sock.h")
    MISSING = (re.compile(r"no member named '(\w+)' in 'struct (\w+)'"),
               re.compile(r"cannot compute offset of bit-field '(\w+)'"))

    def __init__(self, headers: backend.KernelHeaders, verbose: bool = False) -> None:
        self.headers = headers
        self.verbose = verbose
        self.description = f"kernel headers ({headers.describe()})"
        self._layouts: dict[str, bcc_source.Layout] = {}
        self._enums: dict[tuple[str, str], int] = {}

    def prepare(self, structs: list[bcc_source.KernelStruct], enums: list[tuple[str, str]]) -> None:
        wanted = [s for s in structs if bcc_source.tracepoint_layout(s.name) is None
                  and not s.name.startswith("trace_")]
        dropped: set[tuple[str, str]] = set()
        for _attempt in range(32):
            queries = []  # (function, kind, struct, member)
            for s in wanted:
                queries.append((f"__tl_size_{s.name}", "size", s.name, "", f"sizeof(struct {s.name})"))
                for m in s.members:
                    if (s.name, m.name) in dropped:
                        continue
                    queries.append((f"__tl_off_{s.name}__{m.name}", "offset", s.name, m.name,
                                    f"__builtin_offsetof(struct {s.name}, {m.name})"))
                    queries.append((f"__tl_len_{s.name}__{m.name}", "length", s.name, m.name,
                                    f"sizeof(((struct {s.name} *)0)->{m.name})"))
            for enum, name in enums:
                queries.append((f"__tl_enum_{enum}__{name}", "enum", enum, name, f"(int){name}"))
            text = "\n".join(f"#include <{h}>" for h in self.INCLUDES) + "\n" + "\n".join(
                f"int {fn}(void *ctx) {{ return {expr}; }}" for fn, _, _, _, expr in queries)
            try:
                bpf = compile_program(text, self.headers, self.verbose, "the kernel headers' layouts")
            except BccCompileError as exc:
                found = {(m.group(2) if len(m.groups()) > 1 else self._struct_of(exc.output, m.group(1), wanted), m.group(1))
                         for pattern in self.MISSING for m in pattern.finditer(exc.output)}
                found -= dropped
                if not found:
                    raise
                dropped |= found
                continue
            break
        else:
            raise ProbeError("bcc could not compile the kernel headers' layouts")
        fields: dict[str, dict[str, list[int]]] = {}
        sizes: dict[str, int] = {}
        for fn, kind, struct_name, member, _ in queries:
            value = returned_constant(bpf.dump_func(fn.encode()))
            if kind == "size":
                sizes[struct_name] = value
            elif kind == "enum":
                self._enums[(struct_name, member)] = value
            else:
                fields.setdefault(struct_name, {}).setdefault(member, [0, 0])[0 if kind == "offset" else 1] = value
        bpf.cleanup()
        for name, size in sizes.items():
            self._layouts[name] = bcc_source.Layout(size, {m: bcc_source.Field(off * 8, 0, length)
                                                           for m, (off, length) in fields.get(name, {}).items()})

    @staticmethod
    def _struct_of(output: str, member: str, structs) -> str:
        for s in structs:
            if any(m.name == member for m in s.members):
                return s.name
        return ""

    def struct_layout(self, name: str):
        return self._layouts.get(name) or bcc_source.tracepoint_layout(name)

    def enum_value(self, enum: str, name: str):
        return self._enums.get((enum, name))


def returned_constant(insns: bytes) -> int:
    """The constant a function `return CONSTANT;` compiles to: r0 = imm (mov or ld_imm64), exit."""
    op = insns[0]
    imm = int.from_bytes(insns[4:8], "little", signed=True)
    if op == 0xB7 or op == 0xB4:  # mov64/mov32 r0, imm
        return imm & 0xFFFFFFFF if op == 0xB4 else imm
    if op == 0x18:  # ld_imm64
        return (imm & 0xFFFFFFFF) | int.from_bytes(insns[12:16], "little") << 32
    raise ProbeError(f"unexpected bytecode for a layout constant: {insns[:16].hex()}")


class PerfReader:
    """Events from the perf buffer (kernels before 5.8): bcc's perf reader, polled then drained."""

    def __init__(self, bpf, map_name: str, settings: ProbeSettings) -> None:
        self._bpf = bpf
        self._unpack = abi.event_struct(settings.event_fields or abi.EVENT_NAMES).unpack
        self._events: list[tuple] = []
        self.lost = 0
        cpus = max(1, os.cpu_count() or 1)
        pages = 1
        while pages * 2 * 4096 * cpus <= settings.ring_buffer_bytes:
            pages *= 2
        # wakeup_events > 1: fewer wakeups; the reader drains every buffer on its timer anyway.
        wakeup = 1 if settings.poll_interval == 0 else 64
        bpf[map_name.encode()].open_perf_buffer(self._sample, page_cnt=max(pages, 8), lost_cb=self._lost,
                                       wakeup_events=wakeup)

    def _sample(self, _cpu: int, data: int, size: int) -> None:
        if size < abi.EVENT.size:
            raise ValueError(f"perf buffer record of {size} bytes, expected {abi.EVENT.size}")
        self._events.append(self._unpack(ctypes.string_at(data, abi.EVENT.size)))

    def _lost(self, count: int) -> None:
        self.lost += count

    def read(self, timeout: float) -> list[tuple]:
        if timeout > 0 and not self._events:
            self._bpf.perf_buffer_poll(max(1, int(timeout * 1000)))
        self._bpf.perf_buffer_consume()
        events = self._events[:MAX_BATCH_RECORDS]
        self._events = self._events[MAX_BATCH_RECORDS:]
        return events

    def close(self) -> None:
        pass


class BccLibbpfRingReader:
    """The ring buffer through bcc's ring_buffer_consume() where plain memory accesses are not
    acquire/release (see probe/ring.py): what LibbpfRingReader does for CO-RE."""

    def __init__(self, bpf, map_name: str, event: struct.Struct = abi.EVENT) -> None:
        self._bpf = bpf
        self._unpack = event.unpack
        self._events: list[tuple] = []
        bpf[map_name.encode()].open_ring_buffer(self._sample)

    def _sample(self, _ctx, data, size) -> int:
        self._events.append(self._unpack(ctypes.string_at(data, abi.EVENT.size)))
        return 0

    def read(self, timeout: float) -> list[tuple]:
        if timeout > 0:
            self._bpf.ring_buffer_poll(max(1, int(timeout * 1000)))
        self._bpf.ring_buffer_consume()
        events, self._events = self._events, []
        return events

    def close(self) -> None:
        pass


class BccProbe:
    """Generates, compiles, loads and attaches the probe with bcc; reads its events."""

    def __init__(self, settings: ProbeSettings) -> None:
        self.settings = settings
        self.attach_mode = ""
        self.backend = "bcc"
        self.warnings: list[str] = []
        self.offsets_from = ""
        self.buffer = ""
        self.source = ""  # the generated program
        self.timings: dict[str, float] = {}
        self._stack = ExitStack()
        self._bpf = None
        self._reader = None

    def start(self) -> "BccProbe":
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def _start(self) -> None:
        s = self.settings
        if s.attach == "tp_btf":
            raise ProbeError("--attach tp_btf needs the CO-RE backend: the bcc backend attaches the classic tracepoint")
        self.warnings += preflight.check_privileges()
        if s.pin_root:
            self.warnings.append("the bcc backend pins nothing: a restart loses the sessions unread or open then")
        if s.pre_existing:
            self.warnings.append("the bcc backend has no socket iterator: sessions open before the start are not reported")
        preflight.ensure_tracefs()
        btf = backend.kernel_btf_present()
        missing = backend.bcc_missing(btf)
        if missing:
            raise ProbeError(f"the bcc backend needs {' and '.join(missing)}")
        headers = backend.find_kernel_headers(any_kernel=btf)
        started = time.monotonic()
        if btf:
            layouts: bcc_source.Layouts = bcc_source.BtfLayouts(preflight.KERNEL_BTF)
        else:
            layouts = HeaderLayouts(headers, s.verbose)
        self.offsets_from = layouts.description
        if s.bcc_buffer == "auto":
            ring = kernel_version() >= RING_BUFFER_KERNEL
        else:
            ring = s.bcc_buffer == "ring"
        self.buffer = "ring buffer" if ring else "perf buffer"
        generated = bcc_source.generate(layouts, config_bytes(s), ring_buffer=ring, ring_bytes=s.ring_buffer_bytes)
        self.source = generated.text
        self.timings["generate"] = time.monotonic() - started
        if s.verbose:
            log.line(f"bcc: offsets from {self.offsets_from}; events through the {self.buffer}")
        self._bpf = compile_program(generated.text, headers, s.verbose)
        self._stack.callback(self._bpf.cleanup)
        self.timings["compile"] = time.monotonic() - started - self.timings["generate"]

        optional = {name: "accepted sessions are attributed to the task that closes them" for name in ACCEPT_PROGRAMS}
        optional.update({name: "only resets sent by close() are reported" for name in RESET_PROGRAMS})
        for program in generated.programs:
            try:
                with captured_output(s.verbose) as out:
                    try:
                        self._bpf.attach_tracepoint(tp=program.tracepoint.encode(), fn_name=program.name.encode())
                        error = None
                    except Exception as exc:  # bcc raises a bare Exception
                        error = exc
                if error is not None:
                    raise ProbeError(f"attaching {program.name} ({program.tracepoint}) failed: {error}"
                                     f"{': ' + first_error(out.text) if out.text.strip() else ''}")
            except ProbeError as exc:
                if program.name not in optional:
                    raise
                self.warnings.append(f"{exc}: {optional[program.name]}")
        self.attach_mode = "tracepoint"
        self.timings["attach"] = time.monotonic() - started - self.timings["generate"] - self.timings["compile"]

        table = self._bpf[generated.event_map.encode()]
        event = abi.event_struct(s.event_fields or abi.EVENT_NAMES)
        if not ring:
            self._reader = PerfReader(self._bpf, generated.event_map, s)
        else:
            reader = s.ring_reader if s.ring_reader != "auto" else default_ring_reader()
            if reader == "libbpf":
                self._reader = BccLibbpfRingReader(self._bpf, generated.event_map, event)
            else:
                try:
                    self._reader = RingReader(table.map_fd, s.ring_buffer_bytes, event=event)
                except OSError as exc:
                    raise LibbpfError("mapping ring buffer", exc.errno or errno.EIO) from exc
        self._stack.callback(self._reader.close)
        self._counters = self._bpf[b"counters"]

    def read(self, timeout: float | None = None) -> list[tuple]:
        return self._reader.read(self.settings.poll_interval or 0.1 if timeout is None else timeout)

    def drain(self) -> list[tuple]:
        return self._reader.read(0)

    def counters(self) -> dict[str, int]:
        def read(index: int) -> int:
            return sum(self._counters[ctypes.c_int(index)])
        lost = read(abi.COUNTER_LOST) + getattr(self._reader, "lost", 0)
        return {"lost": lost, "untracked": read(abi.COUNTER_UNTRACKED)}

    def close(self) -> None:
        self._stack.close()
        self._reader = None
        self._bpf = None

    def __enter__(self) -> "BccProbe":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
