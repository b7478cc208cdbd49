"""The CO-RE probe: the precompiled BPF object loaded through libbpf, no compiler needed.

Lifecycle: open -> write filters into .rodata -> size maps -> load -> attach
-> read the ring buffer in batches -> close. Everything acquired is released by
one ExitStack, on success and on every failure path.
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading
from collections import deque
from contextlib import ExitStack
from importlib import resources

from .. import abi
from ..config import ProbeSettings
from ..errors import LibbpfError, ProbeError
from . import pins, preflight
from .libbpf import Libbpf, map_info
from .ring import LibbpfRingReader, RingReader, default_ring_reader

SET_STATE_PROGRAMS = {"tp_btf": "set_state_btf", "tracepoint": "set_state_tracepoint"}
# Optional: without them the owner of an accepted session is the task that
# closes it (as close()/shutdown() run in the owning task).
ACCEPT_PROGRAMS = ("sys_exit_accept4", "sys_exit_accept")
# Optional: without them a record's reset is only the one the close itself shows (a reset that
# close() sends), not one received or sent by a timer.
RESET_PROGRAMS = ("tcp_send_reset", "tcp_receive_reset")
# Run once at start, in this order, to find the sessions open before tracing (bpf/tcplife.bpf.c).
ITER_PROGRAMS = ("find_sockets", "find_owners")

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
        self.reader = settings.ring_reader  # mmap or libbpf, once started
        self.warnings: list[str] = []
        self._stack = ExitStack()
        self._ring: RingReader | LibbpfRingReader | None = None
        self._counters_fd = -1
        self._links: list[tuple[str, int]] = []  # (program, link) attached by this load
        # Pinned state (settings.pin_root): see pins.py. pin_root is None once pins turn out unusable
        # here (no bpffs, a read-only /sys): the agent then runs without them, and says so.
        self.pin_root = settings.pin_root
        self.pins: pins.PinDir | None = None
        self.discarded: dict[str, int] = {}  # other layout versions removed at start -> their unread records
        self.duplicated = 0  # records re-read that an earlier agent had handed to a durable output
        self.pre_existing = 0  # sessions found open at start (the socket iterator)
        self._state_fd = -1
        self._state = dict.fromkeys(name for name, _ in abi.PIN_STATE_FIELDS)
        self._seq = 0  # sequence number of the next record read
        self._batches: deque[tuple[int, int]] = deque()  # (seq after, position after) of reads not committed
        self._commit_lock = threading.Lock()
        self._closed = False

    # -- setup -------------------------------------------------------------

    @property
    def pinned(self) -> bool:
        return self.pins is not None

    def start(self) -> "CoreProbe":
        """Loads and attaches the probe; on any failure, what was made is closed (links, maps, the
        pins' lock) before the error goes on."""
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def _start(self) -> None:
        self.warnings += preflight.run_all()
        self.libbpf = Libbpf(verbose=self.settings.verbose)
        path = object_path()
        self.reader = self.settings.ring_reader
        if self.reader == "auto":
            self.reader = default_ring_reader()
        if self.pin_root and self.reader == "libbpf":
            # Pins hold records back until they are durable: libbpf's reader releases them as it reads.
            self._without_pins(ProbeError("the ring buffer reader of this architecture (libbpf's) cannot "
                                          "hold records back until they are durable"))
        if self.pin_root:
            try:
                pins.ensure_bpffs(self.pin_root)
            except ProbeError as exc:
                self._without_pins(exc)
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
        if self.settings.pre_existing:
            try:
                self.pre_existing = self._find_open_sessions()
            except LibbpfError as exc:
                self.warnings.append(f"{exc}: sessions open before the start are not reported")

    def _without_pins(self, exc: ProbeError) -> None:
        self.warnings.append(f"{exc}; running without pins: a restart loses the sessions unread or open then")
        self.pin_root = None

    def _open_pins(self, obj: int) -> pins.PinDir:
        lib = self.libbpf
        described = {}
        for name in pins.PINNED_MAPS:
            m = lib.find_map(obj, name)
            described[name] = (lib.lib.bpf_map__type(m), lib.lib.bpf_map__key_size(m),
                               lib.lib.bpf_map__value_size(m), lib.lib.bpf_map__map_flags(m))
        root = self.pin_root
        version = pins.layout_version(described)
        # Ours locked first: an agent of another layout starting now cannot remove it.
        pin_dir = pins.PinDir(root, version).open()
        try:
            for other in pins.other_versions(root, version):
                self.discarded[other] = pins.discard_version(lib, root, other)
                self.warnings.append(f"removed the pins of another probe layout ({other}): "
                                     f"{self.discarded[other]} sessions it had not read were discarded")
        except BaseException:
            pin_dir.close()
            raise
        return pin_dir

    def _pin_maps(self, obj: int) -> int:
        """Points the maps at their pins (libbpf reuses a pinned map, or pins the one it creates);
        returns the ring buffer's size: the pinned one's, when there is one."""
        lib = self.libbpf
        ring_bytes = self.settings.ring_buffer_bytes
        for name in pins.PINNED_MAPS:
            m = lib.find_map(obj, name)
            path = self.pins.map_path(name)
            if name == "events" and os.path.exists(path):
                fd = lib.lib.bpf_obj_get(path.encode())
                if fd < 0:
                    raise LibbpfError(f"opening pinned map {path}", ctypes.get_errno() or 1)
                try:
                    pinned = map_info(lib, fd).max_entries
                finally:
                    os.close(fd)
                if pinned != ring_bytes:
                    self.warnings.append(f"keeping the pinned ring buffer's size ({pinned} bytes, not {ring_bytes}): "
                                         "`otel-tcplife --unpin` first to change it")
                    lib.check_int("sizing ring buffer", lib.lib.bpf_map__set_max_entries(m, pinned))
                    ring_bytes = pinned
            lib.check_int(f"pinning map {name}", lib.lib.bpf_map__set_pin_path(m, path.encode()))
        return ring_bytes

    def _pin_links(self) -> None:
        """Pins this load's links in place of the old ones: each pinned beside its old pin, then
        renamed over it (the old link is released only once the new one holds its place); then the
        old pins of programs not attached this time (another attach mode) are removed."""
        lib = self.libbpf
        for name, link in self._links:
            final = self.pins.link_path(name)
            temporary = final + pins.NEW_SUFFIX
            if os.path.exists(temporary):
                os.unlink(temporary)
            lib.check_int(f"pinning link {name}", lib.lib.bpf_link__pin(link, temporary.encode()))
            os.rename(temporary, final)
            lib.lib.bpf_link__disconnect(link)  # closing it no longer detaches: the pin holds it
        attached = {name for name, _ in self._links}
        for name in self.pins.pinned_links():
            if name not in attached:
                self.pins.remove_link(name)

    def _find_open_sessions(self) -> int:
        """Runs the iterators once: the TCP sockets open now enter the socket table (those it has
        not already), then their owners are found. Returns the sessions found."""
        lib = self.libbpf
        socks_fd = lib.check_int("finding socks", lib.lib.bpf_map__fd(lib.find_map(self._obj, "socks")))
        before = _count_keys(lib, socks_fd)
        for name in ITER_PROGRAMS:
            link = lib.check_ptr(f"attaching iterator {name}",
                                 lib.lib.bpf_program__attach_iter(lib.find_program(self._obj, name), None))
            try:
                fd = lib.check_int(f"running iterator {name}", lib.lib.bpf_iter_create(lib.lib.bpf_link__fd(link)))
                try:
                    while os.read(fd, 65536):
                        pass
                finally:
                    os.close(fd)
            finally:
                lib.lib.bpf_link__destroy(link)
        return max(0, _count_keys(lib, socks_fd) - before)

    def _libbpf_hint(self) -> str:
        last = [m.strip() for m in self.libbpf.messages if m.strip()]
        return f" (libbpf: {last[-1]})" if last else ""

    def _load_and_attach(self, path: str, mode: str) -> None:
        lib = self.libbpf
        obj = lib.open_object(path)
        self._obj = obj
        self._links = []
        self._stack.callback(lib.lib.bpf_object__close, obj)
        self._write_filter(obj)
        events = lib.find_map(obj, "events")
        ring_bytes = self.settings.ring_buffer_bytes
        lib.check_int("sizing ring buffer", lib.lib.bpf_map__set_max_entries(events, ring_bytes))
        if self.pin_root and self.pins is None:
            try:
                self.pins = self._open_pins(obj)
            except pins.PinsInUse:
                raise
            except ProbeError as exc:
                self._without_pins(exc)
        if self.pins is not None:
            ring_bytes = self._pin_maps(obj)
        wanted = SET_STATE_PROGRAMS[mode]
        for name in SET_STATE_PROGRAMS.values():
            lib.lib.bpf_program__set_autoload(lib.find_program(obj, name), name == wanted)
        for name in ITER_PROGRAMS:
            lib.lib.bpf_program__set_autoload(lib.find_program(obj, name), self.settings.pre_existing)
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
        event = abi.event_struct(self.settings.event_fields or abi.EVENT_NAMES)  # what the outputs read
        if self.reader == "libbpf":  # consumes as it reads: never with pins (start)
            self._ring = LibbpfRingReader(lib, events_fd, event)
        else:
            try:
                self._ring = RingReader(events_fd, ring_bytes, auto_commit=not self.pins, event=event)
            except OSError as exc:
                raise LibbpfError("mapping ring buffer", exc.errno or errno.EIO) from exc
        self._stack.callback(self._ring.close)
        if self.pins:
            self._state_fd = lib.check_int("finding agent_state",
                                           lib.lib.bpf_map__fd(lib.find_map(obj, "agent_state")))
            self._resume()
            self._pin_links()

    # -- the reader's place in a pinned ring buffer -----------------------------

    def _read_state(self) -> dict[str, int]:
        buf = ctypes.create_string_buffer(abi.PIN_STATE.size)
        key = ctypes.c_uint32(0)
        if self.libbpf.lib.bpf_map_lookup_elem(self._state_fd, ctypes.byref(key), buf) < 0:
            raise LibbpfError("reading agent_state", ctypes.get_errno() or 1)
        return dict(zip(self._state, abi.PIN_STATE.unpack(buf.raw)))

    def _write_state(self) -> None:
        buf = ctypes.create_string_buffer(abi.PIN_STATE.pack(*self._state.values()), abi.PIN_STATE.size)
        key = ctypes.c_uint32(0)
        if self.libbpf.lib.bpf_map_update_elem(self._state_fd, ctypes.byref(key), buf, 0) < 0:
            raise LibbpfError("writing agent_state", ctypes.get_errno() or 1)

    def _resume(self) -> None:
        """Where this agent starts reading, and how many of the records from there an earlier agent
        had already handed to a durable output (`duplicated`: it was killed before it committed)."""
        ring = self._ring
        state = self._read_state()
        consumer = ring.committed
        if consumer < state["commit_pos"]:  # killed between writing the state and the consumer position
            seq = state["commit_seq"] - ring.count(consumer, state["commit_pos"])
        else:
            seq = state["commit_seq"]
        if state["starts"]:
            self.duplicated = max(0, min(state["handed_seq"] - seq, ring.count(consumer, ring.produced)))
        self._seq = seq
        state.update(commit_pos=consumer, commit_seq=seq, handed_seq=max(seq, state["handed_seq"]),
                     starts=state["starts"] + 1)
        self._state = state
        self._write_state()

    def hand(self, seq: int) -> None:
        """Records before seq are about to be made durable in an output: a restarted agent that
        reads them again counts them as duplicated."""
        with self._commit_lock:
            if self.pins is None or self._closed or seq <= self._state["handed_seq"]:
                return
            self._state["handed_seq"] = seq
            self._write_state()

    def commit(self, seq: int) -> None:
        """Records before seq are durable in every output that keeps them: the ring buffer's space
        up to the last batch read that they cover is released (the state first, then the consumer
        position: see _resume)."""
        with self._commit_lock:
            if self.pins is None or self._closed:
                return
            position = None
            while self._batches and self._batches[0][0] <= seq:
                end_seq, position = self._batches.popleft()
            if position is None:
                return
            self._state.update(commit_pos=position, commit_seq=end_seq)
            self._write_state()
            self._ring.commit(position)

    @property
    def read_seq(self) -> int:
        """The sequence number after the last record read."""
        return self._seq

    def seen_counters(self) -> dict[str, int]:
        """The counters' values an earlier agent reported last (0 without pins)."""
        if self.pins is None:
            return {"lost": 0, "untracked": 0}
        return {"lost": self._state["lost_seen"], "untracked": self._state["untracked_seen"]}

    def counters_seen(self, counters: dict[str, int]) -> None:
        """Remembers the counters' values reported, in the pinned state."""
        with self._commit_lock:
            if self.pins is None or self._closed:
                return
            self._state.update(lost_seen=counters["lost"], untracked_seen=counters["untracked"])
            self._write_state()

    def _attach(self, obj: int, name: str) -> None:
        lib = self.libbpf
        link = lib.check_ptr(f"attaching {name}", lib.lib.bpf_program__attach(lib.find_program(obj, name)))
        self._stack.callback(lib.lib.bpf_link__destroy, link)
        self._links.append((name, link))

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
        return self._track(self._ring.read(self.settings.poll_interval or 0.1 if timeout is None else timeout))

    def drain(self) -> list[tuple]:
        """Every event already in the ring buffer, without waiting."""
        return self._track(self._ring.read(0))

    def _track(self, events: list[tuple]) -> list[tuple]:
        if events and self.pins is not None:
            with self._commit_lock:
                self._seq += len(events)
                self._batches.append((self._seq, self._ring.position))
        return events

    def counters(self) -> dict[str, int]:
        read = lambda index: self.libbpf.lookup_percpu_u64(self._counters_fd, index)  # noqa: E731
        return {"lost": read(abi.COUNTER_LOST), "untracked": read(abi.COUNTER_UNTRACKED)}

    # -- teardown ----------------------------------------------------------

    def close(self) -> None:
        with self._commit_lock:
            self._closed = True
        self._stack.close()
        self._ring = None
        if self.pins is not None:
            self.pins.close()

    def __enter__(self) -> "CoreProbe":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()



def _count_keys(lib: Libbpf, map_fd: int) -> int:
    """Entries of a hash map keyed by u64 (bpf_map_get_next_key over it)."""
    get_next = lib.lib.bpf_map_get_next_key
    key, next_key = ctypes.c_uint64(), ctypes.c_uint64()
    count = 0
    previous = None
    while get_next(map_fd, previous, ctypes.byref(next_key)) == 0:
        count += 1
        key.value = next_key.value
        previous = ctypes.byref(key)
    return count
