"""otel_tcplife/abi.py agrees with bpf/tcplife.h and with the compiled object's BTF."""

from __future__ import annotations

import json
import struct
import re
import shutil
import subprocess

import pytest

from otel_tcplife import abi

from ..support import ROOT

OBJECT = ROOT / "otel_tcplife" / "bpf" / "tcplife.bpf.o"
HEADER = (ROOT / "bpf" / "tcplife.h").read_text()


@pytest.fixture(scope="module")
def btf():
    if not OBJECT.exists():
        pytest.fail(f"{OBJECT} missing: run make setup")
    if shutil.which("bpftool") is None:
        pytest.fail("bpftool missing: run make setup")
    out = subprocess.run(["bpftool", "-j", "btf", "dump", "file", str(OBJECT)],
                         check=True, capture_output=True, text=True).stdout
    return {t["id"]: t for t in json.loads(out)["types"]}


def type_size(types: dict, type_id: int) -> int:
    t = types[type_id]
    if t["kind"] in ("TYPEDEF", "VOLATILE", "CONST"):
        return type_size(types, t["type_id"])
    if t["kind"] == "ARRAY":
        return t["nr_elems"] * type_size(types, t["type_id"])
    return t["size"]


def struct_layout(types: dict, name: str) -> tuple[int, dict[str, tuple[int, int]]]:
    (t,) = [t for t in types.values() if t["kind"] == "STRUCT" and t["name"] == name]
    members = {m["name"]: (m["bits_offset"] // 8, type_size(types, m["type_id"])) for m in t["members"]}
    return t["size"], members


@pytest.mark.parametrize("name,fields,packed", [
    ("event", abi.EVENT_FIELDS, abi.EVENT),
    ("probe_config", abi.PROBE_CONFIG_FIELDS, abi.PROBE_CONFIG),
    ("pin_state", abi.PIN_STATE_FIELDS, abi.PIN_STATE),
])
def test_python_mirror_matches_btf(btf, name, fields, packed):
    size, members = struct_layout(btf, name)
    assert abi.field_offsets(fields) == members
    assert packed.size == size
    assert [n for n, _ in fields] == list(members)


def test_config_is_the_only_variable_in_rodata_at_offset_zero(btf):
    (rodata,) = [t for t in btf.values() if t["kind"] == "DATASEC" and t["name"] == ".rodata"]
    variables = [(btf[v["type_id"]]["name"], v["offset"]) for v in rodata["vars"]]
    assert variables == [("config", 0)]


def header_constant(name: str) -> int:
    match = re.search(rf"\b{name}\b\s*=?\s*(\d+)", HEADER)
    assert match, name
    return int(match.group(1))


@pytest.mark.parametrize("name", [
    "TASK_COMM_LEN", "MAX_PORTS", "OWNER_NONE", "OWNER_CONNECT", "OWNER_ACCEPT", "OWNER_CLOSE",
    "ROLE_UNKNOWN", "ROLE_CLIENT", "ROLE_SERVER", "CLOSED_BY_NONE", "CLOSED_BY_LOCAL", "CLOSED_BY_PEER",
    "RESET_NONE", "RESET_SENT", "RESET_RECEIVED", "COUNTER_LOST", "COUNTER_UNTRACKED", "NR_COUNTERS",
])
def test_constants_match_the_header(name):
    assert getattr(abi, name) == header_constant(name)


def test_pack_config_zero_terminates_and_refuses_to_truncate():
    data = abi.pack_config(42, 4, (80, 443), (), wakeup_bytes=4096, random_trace_ids=True)
    values = abi.PROBE_CONFIG.unpack(data)
    assert values[:2] == (42, 4)
    assert values[2:2 + abi.MAX_PORTS] == (80, 443) + (0,) * (abi.MAX_PORTS - 2)
    assert values[-2:] == (4096, 1)
    with pytest.raises(ValueError):
        abi.pack_config(0, 0, tuple(range(1, abi.MAX_PORTS + 2)), ())


def test_events_are_read_and_written_by_field_name():
    fields = {name: i + 1 for i, name in enumerate(abi.EVENT_NAMES)}
    fields.update(saddr=b"s" * 16, daddr=b"d" * 16, comm=b"c" * abi.TASK_COMM_LEN, span_ids=b"i" * 32)
    event = abi.EVENT.unpack(abi.pack_event(**fields))
    assert dict(zip(abi.EVENT_NAMES, event)) == fields
    assert abi.event_getter("comm", "pid", "sport")(event) == (fields["comm"], fields["pid"], fields["sport"])
    assert abi.EVENT_TARGET.split(", ") == list(abi.EVENT_NAMES)
    assert abi.EVENT_CODES["sport"] == "H"


def test_sock_info_mirror_matches_btf(btf):
    """The pins' version hashes this mirror: it must follow the kernel side's struct."""
    size, members = struct_layout(btf, "sock_info")
    fields = tuple(f for f in abi.SOCK_INFO_FIELDS if not f[1].endswith("x"))
    offsets = abi.field_offsets(abi.SOCK_INFO_FIELDS)
    assert {name: offsets[name] for name, _ in fields} == members
    assert struct.calcsize("<" + "".join(code for _, code in abi.SOCK_INFO_FIELDS)) == size
