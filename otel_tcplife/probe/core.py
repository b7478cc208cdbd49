"""The CO-RE probe: the precompiled BPF object loaded through libbpf, no compiler needed.

Lifecycle: open -> write filters into .rodata -> size maps -> load -> attach
-> read the ring buffer in batches -> close. Everything acquired is released by
one ExitStack, on success and on every failure path.
"""

from __future__ import annotations

import ctypes
import errno
from contextlib import ExitStack
from importlib import resources

from .. import abi
from ..config import ProbeSettings
from ..errors import LibbpfError, ProbeError
from . import preflight
from .libbpf import Libbpf
from .ring import LibbpfRingReader, RingReader, default_ring_reader

SET_STATE_PROGRAMS = {"tp_btf": "set_state_btf", "tracepoint": "set_state_tracepoint"}
# Optional: without them the owner of an accepted session is the task that
# closes it (as close()/shutdown() run in the owning task).
ACCEPT_PROGRAMS = ("sys_exit_accept4", "sys_exit_accept")
# Optional: without them a record's reset is only the one the close itself shows (a reset that
# close() sends), not one received or sent by a timer.
RESET_PROGRAMS = ("tcp_send_reset", "tcp_receive_reset")

PAGE_SIZE = 4096


def object_path() -> str:
    path = resources.files("otel_tcplife") / "bpf" / "tcplife.bpf.o"
    if not path.is_file():
        raise ProbeError(f"BPF object missing at {path}: run `make setup` (or reinstall the package)")
    return str(path)


def check_ring_buffer_bytes(size: int) -> int:
    if size < PAGE_SIZE or size & (size - 1):
        raise ValueError(f"ring buffer size must be a power of two of at least {PAGE_SIZE} bytes")
    return size


class CoreProbe:
    """Loads and attaches the probe; `read()` returns raw `struct event` records."""

    def __init__(self, settings: ProbeSettings) -> None:
        self.settings = settings
        self.attach_mode = ""
        self.warnings: list[str] = []
        self._stack = ExitStack()
        self._ring: RingReader | LibbpfRingReader | None = None
        self._counters_fd = -1

    # -- setup -------------------------------------------------------------

    def start(self) -> "CoreProbe":
        self.warnings += preflight.run_all()
        self.libbpf = Libbpf(verbose=self.settings.verbose)
        path = object_path()
        modes = ("tp_btf", "tracepoint") if self.settings.attach == "auto" else (self.settings.attach,)
        for i, mode in enumerate(modes):
            try:
                self._load_and_attach(path, mode)
                self.attach_mode = mode
                break
            except LibbpfError as exc:
                self._stack.close()
                if i == len(modes) - 1:
                    raise ProbeError(f"{exc}{self._libbpf_hint()}") from exc
                self.warnings.append(f"{mode} unavailable ({exc}); falling back to the classic tracepoint")
        return self

    def _libbpf_hint(self) -> str:
        last = [m.strip() for m in self.libbpf.messages if m.strip()]
        return f" (libbpf: {last[-1]})" if last else ""

    def _load_and_attach(self, path: str, mode: str) -> None:
        lib = self.libbpf
        obj = lib.open_object(path)
        self._stack.callback(lib.lib.bpf_object__close, obj)
        self._write_filter(obj)
        events = lib.find_map(obj, "events")
        lib.check_int("sizing ring buffer", lib.lib.bpf_map__set_max_entries(events, self.settings.ring_buffer_bytes))
        wanted = SET_STATE_PROGRAMS[mode]
        for name in SET_STATE_PROGRAMS.values():
            lib.lib.bpf_program__set_autoload(lib.find_program(obj, name), name == wanted)
        lib.check_int("loading BPF object", lib.lib.bpf_object__load(obj))

        self._attach(obj, wanted)
        for name in ACCEPT_PROGRAMS:
            try:
                self._attach(obj, name)
            except LibbpfError as exc:
                self.warnings.append(f"{exc}: accepted sessions are attributed to the task that closes them")
        for name in RESET_PROGRAMS:
            try:
                self._attach(obj, name)
            except LibbpfError as exc:
                self.warnings.append(f"{exc}: only resets sent by close() are reported")

        self._counters_fd = lib.check_int("finding counters", lib.lib.bpf_map__fd(lib.find_map(obj, "counters")))
        events_fd = lib.check_int("finding ring buffer", lib.lib.bpf_map__fd(events))
        reader = self.settings.ring_reader
        if reader == "auto":
            reader = default_ring_reader()
        if reader == "libbpf":
            self._ring = LibbpfRingReader(lib, events_fd)
        else:
            try:
                self._ring = RingReader(events_fd, self.settings.ring_buffer_bytes)
            except OSError as exc:
                raise LibbpfError("mapping ring buffer", exc.errno or errno.EIO) from exc
        self._stack.callback(self._ring.close)

    def _attach(self, obj: int, name: str) -> None:
        lib = self.libbpf
        link = lib.check_ptr(f"attaching {name}", lib.lib.bpf_program__attach(lib.find_program(obj, name)))
        self._stack.callback(lib.lib.bpf_link__destroy, link)

    def _write_filter(self, obj: int) -> None:
        s = self.settings
        wakeup_bytes = s.ring_buffer_bytes // 4 if s.poll_interval > 0 else 0
        data = abi.pack_config(s.pid, s.family, s.local_ports, s.remote_ports, wakeup_bytes, s.random_trace_ids)
        rodata = self.libbpf.find_map(obj, ".rodata")
        ptr, size = self.libbpf.map_initial_value(rodata, "reading .rodata")
        if size < len(data):
            raise ProbeError(f".rodata is {size} bytes, smaller than struct probe_config ({len(data)})")
        # `config` is the only variable in .rodata, at offset 0 (checked by tests).
        ctypes.memmove(ptr, data, len(data))

    # -- reading -----------------------------------------------------------

    def read(self, timeout: float | None = None) -> list[tuple]:
        """Every event available (abi.EVENT tuples), waiting up to timeout seconds
        (default: the poll interval) when there is none."""
        return self._ring.read(self.settings.poll_interval or 0.1 if timeout is None else timeout)

    def drain(self) -> list[tuple]:
        """Every event already in the ring buffer, without waiting."""
        return self._ring.read(0)

    def counters(self) -> dict[str, int]:
        read = lambda index: self.libbpf.lookup_percpu_u64(self._counters_fd, index)  # noqa: E731
        return {"lost": read(abi.COUNTER_LOST), "untracked": read(abi.COUNTER_UNTRACKED)}

    # -- teardown ----------------------------------------------------------

    def close(self) -> None:
        self._stack.close()
        self._ring = None

    def __enter__(self) -> "CoreProbe":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

