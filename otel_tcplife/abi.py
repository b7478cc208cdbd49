"""Python mirror of bpf/tcplife.h, the kernel/user-space event ABI.

tests/unit/test_abi.py checks every size and offset here against the BTF of
the compiled object, so the two cannot drift apart silently.
"""

from __future__ import annotations

import functools
import operator
import socket
import struct
from typing import Callable, Iterable

TASK_COMM_LEN = 16
MAX_PORTS = 16

# enum owner
OWNER_NONE, OWNER_CONNECT, OWNER_ACCEPT, OWNER_CLOSE, OWNER_HOLDER = 0, 1, 2, 3, 4
# enum role
ROLE_UNKNOWN, ROLE_CLIENT, ROLE_SERVER = 0, 1, 2
# enum closer
CLOSED_BY_NONE, CLOSED_BY_LOCAL, CLOSED_BY_PEER = 0, 1, 2
# enum reset
RESET_NONE, RESET_SENT, RESET_RECEIVED = 0, 1, 2
NO_PARENT = bytes(8)  # struct span_ids' parent_span_id of a root span
# enum event_flags
EVENT_START_UNKNOWN = 1
# enum counter
COUNTER_LOST, COUNTER_UNTRACKED, NR_COUNTERS = 0, 1, 2

# struct event, field by field, in order.
EVENT_FIELDS = (
    ("birth_ns", "Q"),
    ("close_ns", "Q"),
    ("tx_bytes", "Q"),
    ("rx_bytes", "Q"),
    ("saddr", "16s"),
    ("daddr", "16s"),
    ("pid", "I"),
    ("error", "i"),
    ("sport", "H"),
    ("dport", "H"),
    ("family", "B"),
    ("role", "B"),
    ("oldstate", "B"),
    ("owner", "B"),
    ("comm", f"{TASK_COMM_LEN}s"),
    ("srtt_us", "I"),
    ("rtt_min_us", "I"),
    ("retransmits", "I"),
    ("closed_by", "B"),
    ("reset", "B"),
    ("flags", "B"),  # EVENT_* bits
    ("reserved", "x"),  # padding: no value in the tuples
    ("cgroup_id", "Q"),
    ("start_ns", "Q"),
    ("span_ids", "32s"),  # struct span_ids: trace id (16), span id (8), parent span id (8, zeros: none)
)
EVENT = struct.Struct("<" + "".join(code for _, code in EVENT_FIELDS))
# The probe hands events over as plain tuples (EVENT.unpack): these names say what each position holds.
EVENT_NAMES = tuple(name for name, code in EVENT_FIELDS if not code.endswith("x"))
EVENT_CODES = dict(EVENT_FIELDS)  # name -> struct code: its C type, so the range of its values
# A for loop's target naming every field of an event, for code generated over events:
# `for birth_ns, close_ns, ... in events:` (unpacking costs less than indexing a tuple by name).
EVENT_TARGET = ", ".join(EVENT_NAMES)


def event_fields(names: Iterable[str]) -> tuple[str, ...]:
    """The event fields named, in struct event's order: the fields of event tuples read for just
    those (event_struct). Unknown names: ValueError."""
    wanted = set(names)
    unknown = wanted - set(EVENT_NAMES)
    if unknown:
        raise ValueError(f"no such event fields: {', '.join(sorted(unknown))}")
    return tuple(name for name in EVENT_NAMES if name in wanted)


@functools.lru_cache(maxsize=None)
def event_struct(fields: tuple[str, ...] = EVENT_NAMES) -> struct.Struct:
    """struct event read for `fields` only (event_fields' order): the other fields are skipped as pad
    bytes, so its tuples hold just these. The reader unpacks what the outputs use: each field costs
    an object per event, used or not."""
    if event_fields(fields) != fields:
        raise ValueError(f"event fields out of struct order: {fields}")
    return struct.Struct("<" + "".join(code if name in fields or code.endswith("x") else f"{struct.calcsize(code)}x"
                                       for name, code in EVENT_FIELDS))


def pack_event(**fields) -> bytes:
    """The bytes of struct event, from every field by name (tests and benchmarks); flags default to 0."""
    fields = {"flags": 0, **fields}
    return EVENT.pack(*(fields[name] for name in EVENT_NAMES))


def event_getter(*names: str, fields: tuple[str, ...] = EVENT_NAMES) -> Callable[[tuple], tuple]:
    """event tuple (of these fields) -> the named fields' values, in the order asked for (two names or
    more: a tuple)."""
    return operator.itemgetter(*(fields.index(name) for name in names))


# struct pin_state: the reader's place in a pinned ring buffer (probe/pins.py)
PIN_STATE_FIELDS = (
    ("commit_pos", "Q"),
    ("commit_seq", "Q"),
    ("handed_seq", "Q"),
    ("starts", "Q"),
    ("lost_seen", "Q"),
    ("untracked_seen", "Q"),
)
PIN_STATE = struct.Struct("<" + "".join(code for _, code in PIN_STATE_FIELDS))

# struct sock_info (bpf/tcplife.bpf.c): not read by user space, but a pinned socket table outlives
# the agent, so its layout is part of what the pins' version names.
SOCK_INFO_FIELDS = (
    ("birth_ns", "Q"),
    ("pid", "I"),
    ("states", "I"),
    ("owner", "B"),
    ("reset", "B"),
    ("flags", "B"),
    ("comm", f"{TASK_COMM_LEN}s"),
    ("_pad", "5x"),
    ("cgroup_id", "Q"),
    ("start_ns", "Q"),
)

# struct probe_config
PROBE_CONFIG_FIELDS = (
    ("pid", "I"),
    ("family", "I"),
    ("sports", f"{MAX_PORTS}H"),
    ("dports", f"{MAX_PORTS}H"),
    ("wakeup_bytes", "I"),
    ("random_trace_ids", "I"),
)
PROBE_CONFIG = struct.Struct("<" + "".join(code for _, code in PROBE_CONFIG_FIELDS))


def field_offsets(fields: tuple[tuple[str, str], ...]) -> dict[str, tuple[int, int]]:
    """Offset and size of each field of a little-endian, packed-as-C struct."""
    result = {}
    offset = 0
    for name, code in fields:
        size = struct.calcsize("<" + code)
        result[name] = (offset, size)
        offset += size
    return result


def pack_config(pid: int, family: int, sports: tuple[int, ...], dports: tuple[int, ...],
                wakeup_bytes: int = 0, random_trace_ids: bool = False) -> bytes:
    """The bytes of struct probe_config; zero means "off", port lists zero-terminated."""
    if len(sports) > MAX_PORTS or len(dports) > MAX_PORTS:
        raise ValueError(f"at most {MAX_PORTS} ports per list")
    pad = lambda ports: tuple(ports) + (0,) * (MAX_PORTS - len(ports))  # noqa: E731
    return PROBE_CONFIG.pack(pid, family, *pad(sports), *pad(dports), wakeup_bytes, random_trace_ids)


# How an event's bytes read as text.
def address_text(family: int, raw: bytes) -> str:
    """An event's address (16 bytes, IPv4 in the first 4) as text."""
    if family == 4:
        return socket.inet_ntop(socket.AF_INET, raw[:4])
    return socket.inet_ntop(socket.AF_INET6, raw)


def address_bytes(family: int, text: str) -> bytes:
    """address_text's inverse: an address as an event holds it (16 bytes, IPv4 in the first 4)."""
    return socket.inet_pton(socket.AF_INET if family == 4 else socket.AF_INET6, text).ljust(16, b"\0")


def comm_text(raw: bytes) -> str:
    """An event's comm (NUL-padded, not always valid UTF-8) as text."""
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")
