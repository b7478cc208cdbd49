"""The part of libbpf (the system's libbpf.so.1) that the probe uses, via ctypes.

Every function that returns a pointer has restype c_void_p; libbpf 1.x returns
NULL and sets errno on failure, so the library is loaded with use_errno=True.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from ctypes import POINTER, c_char_p, c_int, c_size_t, c_uint, c_void_p

from .. import log
from ..errors import LibbpfError, ProbeError

LIBBPF_NAMES = ("libbpf.so.1", "libbpf.so")

# libbpf_print_level
LIBBPF_WARN, LIBBPF_INFO, LIBBPF_DEBUG = 0, 1, 2

PRINT_FN = ctypes.CFUNCTYPE(c_int, c_int, c_char_p, c_void_p)

_SIGNATURES = {
    # name: (restype, argtypes)
    "libbpf_set_print": (c_void_p, [PRINT_FN]),
    "libbpf_num_possible_cpus": (c_int, []),
    "bpf_object__open_file": (c_void_p, [c_char_p, c_void_p]),
    "bpf_object__load": (c_int, [c_void_p]),
    "bpf_object__close": (None, [c_void_p]),
    "bpf_object__find_map_by_name": (c_void_p, [c_void_p, c_char_p]),
    "bpf_object__find_program_by_name": (c_void_p, [c_void_p, c_char_p]),
    "bpf_map__set_max_entries": (c_int, [c_void_p, ctypes.c_uint32]),
    "bpf_map__initial_value": (c_void_p, [c_void_p, POINTER(c_size_t)]),
    "bpf_map__fd": (c_int, [c_void_p]),
    "bpf_map_lookup_elem": (c_int, [c_int, c_void_p, c_void_p]),
    "bpf_program__set_autoload": (c_int, [c_void_p, ctypes.c_bool]),
    "bpf_program__attach": (c_void_p, [c_void_p]),
    "bpf_link__destroy": (c_int, [c_void_p]),
    "bpf_map_update_elem": (c_int, [c_int, c_void_p, c_void_p, ctypes.c_uint64]),
    "bpf_map__set_pin_path": (c_int, [c_void_p, c_char_p]),
    "bpf_map__type": (c_int, [c_void_p]),
    "bpf_map__key_size": (ctypes.c_uint32, [c_void_p]),
    "bpf_map__value_size": (ctypes.c_uint32, [c_void_p]),
    "bpf_map__map_flags": (ctypes.c_uint32, [c_void_p]),
    "bpf_obj_get": (c_int, [c_char_p]),
    "bpf_obj_get_info_by_fd": (c_int, [c_int, c_void_p, POINTER(ctypes.c_uint32)]),
    "bpf_link__pin": (c_int, [c_void_p, c_char_p]),
    "bpf_link__fd": (c_int, [c_void_p]),
    "bpf_link__disconnect": (None, [c_void_p]),
    "bpf_map_get_next_key": (c_int, [c_int, c_void_p, c_void_p]),
    "bpf_program__attach_iter": (c_void_p, [c_void_p, c_void_p]),
    "bpf_iter_create": (c_int, [c_int]),
    "ring_buffer__new": (c_void_p, [c_int, c_void_p, c_void_p, c_void_p]),
    "ring_buffer__consume": (c_int, [c_void_p]),
    "ring_buffer__free": (None, [c_void_p]),
}


def _load_library() -> ctypes.CDLL:
    for name in LIBBPF_NAMES:
        try:
            return ctypes.CDLL(name, use_errno=True)
        except OSError:
            continue
    raise ProbeError("libbpf not found (libbpf.so.1): install it, e.g. `apt-get install libbpf1`")


class Libbpf:
    """libbpf's functions with checked results: failures raise LibbpfError(step, errno)."""

    def __init__(self, verbose: bool = False) -> None:
        self.lib = _load_library()
        for name, (restype, argtypes) in _SIGNATURES.items():
            fn = getattr(self.lib, name)
            fn.restype = restype
            fn.argtypes = argtypes
        self._libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self._libc.vsnprintf.argtypes = [c_char_p, c_size_t, c_char_p, c_void_p]
        self.verbose = verbose
        self.messages: list[str] = []
        # libbpf keeps the pointer: keep the callback alive as long as we are.
        self._print_fn = PRINT_FN(self._print)
        self.lib.libbpf_set_print(self._print_fn)

    def _print(self, level: int, fmt: bytes, args: int) -> int:
        buf = ctypes.create_string_buffer(1 << 16)  # verifier logs are long
        self._libc.vsnprintf(buf, len(buf), fmt, args)
        text = buf.value.decode(errors="replace")
        if level == LIBBPF_DEBUG and not self.verbose:
            return 0
        # Kept for error messages; shown only with -v (or debug).
        self.messages.append(text)
        if self.verbose:
            log.line("libbpf: " + text.rstrip("\n"))
        return 0

    def check_ptr(self, step: str, ptr: int | None) -> int:
        if not ptr:
            raise LibbpfError(step, ctypes.get_errno() or 1)
        return ptr

    def check_int(self, step: str, ret: int) -> int:
        if ret < 0:
            raise LibbpfError(step, -ret)
        return ret

    def open_object(self, path: str) -> int:
        return self.check_ptr(f"opening BPF object {path}", self.lib.bpf_object__open_file(os.fsencode(path), None))

    def find_map(self, obj: int, name: str) -> int:
        return self.check_ptr(f"finding map {name}", self.lib.bpf_object__find_map_by_name(obj, name.encode()))

    def find_program(self, obj: int, name: str) -> int:
        return self.check_ptr(f"finding program {name}", self.lib.bpf_object__find_program_by_name(obj, name.encode()))

    def map_initial_value(self, bpf_map: int, step: str) -> tuple[int, int]:
        size = c_size_t()
        ptr = self.check_ptr(step, self.lib.bpf_map__initial_value(bpf_map, ctypes.byref(size)))
        return ptr, size.value

    def lookup_percpu_u64(self, map_fd: int, key: int) -> int:
        """Sum of a per-CPU u64 array element over all possible CPUs."""
        ncpus = self.check_int("counting CPUs", self.lib.libbpf_num_possible_cpus())
        values = (ctypes.c_uint64 * ncpus)()
        k = c_uint(key)
        ret = self.lib.bpf_map_lookup_elem(map_fd, ctypes.byref(k), values)
        if ret < 0:
            raise LibbpfError("reading counters", ctypes.get_errno() or -ret)
        return sum(values)


class BpfMapInfo(ctypes.Structure):
    """The head of struct bpf_map_info (linux/bpf.h): the kernel fills as much as it is given."""

    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32), ("key_size", ctypes.c_uint32),
                ("value_size", ctypes.c_uint32), ("max_entries", ctypes.c_uint32), ("map_flags", ctypes.c_uint32)]


def map_info(lib: Libbpf, fd: int) -> BpfMapInfo:
    info = BpfMapInfo()
    size = ctypes.c_uint32(ctypes.sizeof(info))
    ret = lib.lib.bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size))
    if ret < 0:
        raise LibbpfError("reading map info", ctypes.get_errno() or -ret)
    return info
