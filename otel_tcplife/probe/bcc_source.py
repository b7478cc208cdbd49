"""The bcc program, generated from the one probe source: bpf/tcplife.bpf.c, bpf/tcplife.h and the
kernel types it reads (bpf/kernel_types.h), with the same filter settings (struct probe_config)
and the same struct event. Nothing here knows the event's fields or the probe's logic: the source
is transformed generically.

- The kernel structs declared for CO-RE (kernel_types.h, between its preserve_access_index
  pragmas) are re-declared with every field at the offset the running kernel has: from its BTF,
  or, without BTF, from the kernel headers (compiled by bcc, as bcc's own tools see them). Each
  offset is checked by a _Static_assert in the generated program.
- CO-RE macros become plain reads: BPF_CORE_READ(p, a, b) and bpf_core_read() are
  bpf_probe_read_kernel() calls, bpf_core_enum_value() and bpf_core_field_exists() constants.
- libbpf map definitions (SEC(".maps")) become bcc's BPF_F_TABLE forms; the ring buffer is a BPF
  ring buffer where the kernel has one (5.8+), else a perf buffer, with the ring buffer calls
  turned into a per-CPU slot that each program's wrapper hands to bpf_perf_event_output().
- `const volatile struct probe_config NAME` (.rodata for libbpf) becomes a constant initialised
  with the settings' bytes, so the filters fold into the program as they do in the CO-RE object.
- Programs: SEC("tracepoint/CATEGORY/EVENT") functions are kept (attached by probe/bcc.py);
  BTF-only ones (tp_btf, fentry, ...) are dropped: bcc cannot load them.
- What the sources leave out of a build without iterators or pins (`#ifndef TCPLIFE_NO_ITER`,
  `#ifndef TCPLIFE_NO_PINS`: the iterator programs, their types and maps, the pinned reader
  state) is cut from the text, and the macros are defined in the prelude.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass, field
from importlib import resources

from ..errors import ProbeError
from .btf import Btf, Field, Layout

SOURCES = ("tcplife.bpf.c", "tcplife.h", "kernel_types.h")
KEPT_PROGRAM_KINDS = ("tracepoint",)
TRACEFS_EVENTS = ("/sys/kernel/tracing/events", "/sys/kernel/debug/tracing/events")


def source_dir() -> str:
    """Where bpf/'s sources are: beside the package's BPF object when installed with them, else
    the checkout's bpf/."""
    candidates = [str(resources.files("otel_tcplife") / "bpf"),
                  os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "bpf")]
    for directory in candidates:
        if all(os.path.isfile(os.path.join(directory, name)) for name in SOURCES):
            return directory
    raise ProbeError(f"the bcc backend needs the probe's C sources ({', '.join(SOURCES)}), "
                     f"found in none of {', '.join(candidates)}")


def strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


# -- kernel types --------------------------------------------------------------------------------

@dataclass
class Member:
    type: str  # C type text, e.g. "__be32", "struct in6_addr", "struct sock *"
    name: str
    dims: str  # "[3]" or ""


@dataclass
class KernelStruct:
    name: str
    members: list[Member]


@dataclass
class KernelTypes:
    structs: list[KernelStruct]  # the CO-RE-relocated ones, in declaration order
    rest: str  # what follows them (fixed-layout tracepoint records, enums): kept as is


MEMBER = re.compile(r"^(?P<type>.*?)(?P<name>\w+)\s*(?P<dims>(\[\s*\w+\s*\])*)$")


# What the bcc build leaves out: `#ifndef NAME` blocks of the sources, for each NAME here.
BCC_DEFINES = ("TCPLIFE_NO_ITER", "TCPLIFE_NO_PINS")
CONDITIONAL = re.compile(r"^[ \t]*#[ \t]*(?P<directive>ifndef|ifdef|if|else|elif|endif)\b[ \t]*(?P<arg>\w*)[^\n]*\n?", re.M)


def drop_excluded(text: str, defined: tuple[str, ...] = BCC_DEFINES) -> str:
    """The text without its `#ifndef NAME ... #endif` blocks for each NAME in `defined` (their
    `#else` branches kept), as the preprocessor would leave it with NAME defined: the generated
    program then never carries what bcc cannot use."""
    out, pos = [], 0
    stack: list[str] = []  # per open conditional: "drop", "keep" (an #else being kept), or "other"
    dropping = lambda: "drop" in stack  # noqa: E731
    for m in CONDITIONAL.finditer(text):
        directive, arg = m.group("directive"), m.group("arg")
        if not dropping():
            out.append(text[pos:m.start()])
        pos = m.end()
        if directive == "ifndef" and arg in defined:
            stack.append("drop")
            continue
        if directive in ("ifndef", "ifdef", "if"):
            stack.append("other")
        elif directive == "else" and stack and stack[-1] in ("drop", "keep"):
            stack[-1] = "keep" if stack[-1] == "drop" else "drop"
            continue
        elif directive == "elif" and stack and stack[-1] in ("drop", "keep"):
            raise ProbeError(f"#elif in an #ifndef of {', '.join(defined)}: the bcc generator takes #else only")
        elif directive == "endif":
            if not stack:
                raise ProbeError("unbalanced #endif")
            if stack.pop() in ("drop", "keep"):
                continue
        if not dropping():
            out.append(m.group(0))
    if stack:
        raise ProbeError("unterminated #if")
    if not dropping():
        out.append(text[pos:])
    return "".join(out)


def parse_kernel_types(text: str) -> KernelTypes:
    text = drop_excluded(strip_comments(text))
    push = re.search(r"#pragma\s+clang\s+attribute\s+push[^\n]*\n", text)
    pop = re.search(r"#pragma\s+clang\s+attribute\s+pop[^\n]*\n", text)
    if not push or not pop:
        raise ProbeError("kernel_types.h: no preserve_access_index region (#pragma clang attribute push/pop)")
    region = text[push.end():pop.start()]
    structs = []
    for match in re.finditer(r"struct\s+(\w+)\s*\{(.*?)\}\s*;", region, flags=re.S):
        body = match.group(2)
        if "{" in body:
            raise ProbeError(f"kernel_types.h: struct {match.group(1)} has a nested definition; "
                             "the bcc generator takes plain members only")
        members = []
        for decl in body.split(";"):
            decl = " ".join(decl.split())
            if not decl:
                continue
            m = MEMBER.match(decl)
            if not m:
                raise ProbeError(f"kernel_types.h: cannot read member {decl!r} of struct {match.group(1)}")
            members.append(Member(m.group("type").strip(), m.group("name"), m.group("dims").replace(" ", "")))
        structs.append(KernelStruct(match.group(1), members))
    rest = text[pop.end():]
    rest = re.sub(r"#endif[^\n]*\s*$", "", rest.rstrip())  # the include guard's
    return KernelTypes(structs, rest)


class Layouts:
    """Where kernel struct layouts and enum values come from."""

    description = ""

    def struct_layout(self, name: str) -> Layout | None:
        raise NotImplementedError

    def enum_value(self, enum: str, name: str) -> int | None:
        raise NotImplementedError

    def prepare(self, structs: list[KernelStruct], enums: list[tuple[str, str]]) -> None:
        """Called once with everything generate() will ask for (see probe.bcc.HeaderLayouts)."""


class BtfLayouts(Layouts):
    def __init__(self, path: str) -> None:
        self.btf = Btf.load(path)
        self.description = f"BTF ({path})"

    def struct_layout(self, name: str) -> Layout | None:
        return self.btf.struct_layout(name) or tracepoint_layout(name)

    def enum_value(self, enum: str, name: str) -> int | None:
        values = self.btf.enum_values(enum)
        return None if values is None else values.get(name)


def tracefs_format(event: str) -> str | None:
    for events in TRACEFS_EVENTS:
        for path in glob.glob(os.path.join(events, "*", event, "format")):
            with open(path) as f:
                return f.read()
    return None


FORMAT_FIELD = re.compile(r"field:(?P<decl>[^;]*);\s*offset:(?P<offset>\d+);\s*size:(?P<size>\d+);")


def tracepoint_layout(name: str) -> Layout | None:
    """A tracepoint record's layout from tracefs, as bcc reads it: trace_event_raw_EVENT, and
    trace_entry (its common_* fields)."""
    if name == "trace_entry":
        text = tracefs_format("inet_sock_set_state") or ""
        common = {}
        for m in FORMAT_FIELD.finditer(text):
            fname = m.group("decl").split()[-1]
            if fname.startswith("common_"):
                common[fname[len("common_"):]] = Field(int(m.group("offset")) * 8, 0, int(m.group("size")))
        if not common:
            return None
        return Layout(max(f.offset + f.size for f in common.values()), common)
    if not name.startswith("trace_event_raw_"):
        return None
    text = tracefs_format(name[len("trace_event_raw_"):])
    if text is None:
        return None
    fields = {}
    end = 0
    for m in FORMAT_FIELD.finditer(text):
        fname = re.sub(r"\[.*\]", "", m.group("decl")).split()[-1]
        offset, size = int(m.group("offset")), int(m.group("size"))
        end = max(end, offset + size)
        if fname.startswith("common_"):
            fields.setdefault("ent", Field(0, 0, 0))
        else:
            fields[fname] = Field(offset * 8, 0, size)
    if "ent" in fields:
        fields["ent"] = Field(0, 0, min(f.offset for n, f in fields.items() if n != "ent"))
    return Layout((end + 7) & ~7, fields)


def emit_struct(struct: KernelStruct, layout: Layout | None, missing: set[tuple[str, str]]) -> str:
    """struct NAME with each member at the kernel's offset: a union of one anonymous struct per
    member (padding, then the member), sized as the kernel's struct."""
    if layout is None:
        raise ProbeError(f"struct {struct.name}: not in this kernel's types")
    lines = [f"struct {struct.name} {{", "\tunion {"]
    asserts = []
    for i, member in enumerate(struct.members):
        f = layout.fields.get(member.name)
        if f is None:
            missing.add((struct.name, member.name))
            f = Field(0, 0, 0)  # never read: bpf_core_field_exists() is 0 for it
        if f.bitfield_size:
            byte = f.bit_offset // 8
            lines.append(f"\t\tstruct __attribute__((packed)) {{ char __tl_pad{i}[{byte}]; "
                         f"unsigned long long : {f.bit_offset % 8}; "
                         f"unsigned long long {member.name} : {f.bitfield_size}; }};")
            continue
        pad = f"char __tl_pad{i}[{f.offset}]; " if f.offset else ""
        lines.append(f"\t\tstruct {{ {pad}{member.type} {member.name}{member.dims}; }};")
        if (struct.name, member.name) not in missing:
            asserts.append(f"_Static_assert(__builtin_offsetof(struct {struct.name}, {member.name}) == {f.offset}, "
                           f"\"struct {struct.name}.{member.name}\");")
            if f.size:
                asserts.append(f"_Static_assert(sizeof(((struct {struct.name} *)0)->{member.name}) == {f.size}, "
                               f"\"size of struct {struct.name}.{member.name}\");")
    lines.append(f"\t\tchar __tl_size[{layout.size}];")
    lines += ["\t};", "};"]
    asserts.append(f"_Static_assert(sizeof(struct {struct.name}) == {layout.size}, \"size of struct {struct.name}\");")
    return "\n".join(lines + asserts)


# -- the program ---------------------------------------------------------------------------------

PRELUDE = r"""
#define BPF_LICENSE Dual BSD/GPL
""" + "".join(f"#define {name} 1\n" for name in BCC_DEFINES) + r"""
#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif
/* CO-RE reads, as plain reads of kernel memory at the offsets declared above. */
#define __TL_READ(p, f) ({ __typeof__((p)->f) __tl_v; bpf_probe_read_kernel(&__tl_v, sizeof(__tl_v), &(p)->f); __tl_v; })
#define __TL_R1(p, a) __TL_READ(p, a)
#define __TL_R2(p, a, b) __TL_READ(__TL_R1(p, a), b)
#define __TL_R3(p, a, b, c) __TL_READ(__TL_R2(p, a, b), c)
#define __TL_R4(p, a, b, c, d) __TL_READ(__TL_R3(p, a, b, c), d)
#define __TL_R5(p, a, b, c, d, e) __TL_READ(__TL_R4(p, a, b, c, d), e)
#define __TL_PICK(_1, _2, _3, _4, _5, _6, NAME, ...) NAME
#define BPF_CORE_READ(...) __TL_PICK(__VA_ARGS__, __TL_R5, __TL_R4, __TL_R3, __TL_R2, __TL_R1, 0)(__VA_ARGS__)
#define bpf_core_read(dst, sz, src) bpf_probe_read_kernel(dst, sz, (const void *)(src))
#define BPF_CORE_READ_BITFIELD(p, f) ((p)->f)
"""

RINGBUF_MAP = "BPF_RINGBUF_OUTPUT({name}, {pages});"

# The perf buffer stands in for the ring buffer: reserve gives this CPU's slot, submit marks it
# ready, and each program's wrapper sends a ready slot with bpf_perf_event_output() (which needs
# the program's context, that the functions reserving and submitting do not have).
PERF_PRELUDE = r"""
BPF_PERF_OUTPUT({name});
struct __tl_slot {{ __u64 state; struct event data; }};
BPF_PERCPU_ARRAY(__tl_slots, struct __tl_slot, 1);
#define __TL_FREE 0
#define __TL_RESERVED 1
#define __TL_READY 2
static __always_inline void *__tl_reserve(__u64 size)
{{
	__u32 zero = 0;
	struct __tl_slot *slot = __tl_slots.lookup(&zero);

	if (!slot || slot->state != __TL_FREE || size > sizeof(slot->data))
		return NULL;
	slot->state = __TL_RESERVED;
	return &slot->data;
}}
static __always_inline void __tl_mark(__u64 state)
{{
	__u32 zero = 0;
	struct __tl_slot *slot = __tl_slots.lookup(&zero);

	if (slot)
		slot->state = state;
}}
static __always_inline void __tl_flush(void *ctx)
{{
	__u32 zero = 0;
	struct __tl_slot *slot = __tl_slots.lookup(&zero);

	if (!slot || slot->state == __TL_FREE)
		return;
	if (slot->state == __TL_READY)
		{name}.perf_submit(ctx, &slot->data, sizeof(slot->data));
	slot->state = __TL_FREE;
}}
"""

MAP_TYPES = {"BPF_MAP_TYPE_HASH": "hash", "BPF_MAP_TYPE_ARRAY": "array", "BPF_MAP_TYPE_PERCPU_ARRAY": "percpu_array",
             "BPF_MAP_TYPE_PERCPU_HASH": "percpu_hash", "BPF_MAP_TYPE_LRU_HASH": "lru_hash",
             "BPF_MAP_TYPE_LRU_PERCPU_HASH": "lru_percpu_hash"}
MAP_DEF = re.compile(r"struct\s*\{(?P<body>[^{}]*)\}\s*(?P<name>\w+)\s+SEC\(\"\.maps\"\)\s*;", re.S)
PROGRAM = re.compile(r"SEC\(\"(?P<section>[^\"]+)\"\)\s*\n(?P<head>[^{;]*?\b(?P<name>\w+)\s*\((?P<params>[^)]*)\))\s*\{")
RODATA_CONFIG = re.compile(r"const\s+volatile\s+struct\s+probe_config\s+(?P<name>\w+)\s*=\s*\{[^;]*\}\s*;")


@dataclass
class Program:
    name: str
    section: str  # e.g. tracepoint/sock/inet_sock_set_state

    @property
    def tracepoint(self) -> str:
        _, category, event = self.section.split("/")
        return f"{category}:{event}"


@dataclass
class Generated:
    text: str
    programs: list[Program]
    event_map: str  # the ring buffer (or perf buffer) map's name
    ring_buffer: bool
    missing_fields: set[tuple[str, str]] = field(default_factory=set)


def find_block_end(text: str, open_brace: int) -> int:
    """Index just past the brace matching text[open_brace]."""
    depth = 0
    for i in range(open_brace, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return i + 1
    raise ProbeError("tcplife.bpf.c: unbalanced braces")


def convert_maps(text: str, ring_buffer: bool, ring_bytes: int) -> tuple[str, str]:
    """libbpf map definitions -> bcc's; returns (text, the event map's name)."""
    event_map = ""

    def convert(m: re.Match) -> str:
        nonlocal event_map
        attrs = dict(re.findall(r"__(?:uint|type)\(\s*(\w+)\s*,\s*([^;]*?)\)\s*;", m.group("body")))
        name = m.group("name")
        kind = attrs.get("type", "")
        if kind == "BPF_MAP_TYPE_RINGBUF":
            event_map = name
            if ring_buffer:
                return RINGBUF_MAP.format(name=name, pages=max(1, ring_bytes // 4096))
            return PERF_PRELUDE.format(name=name)
        if kind not in MAP_TYPES:
            raise ProbeError(f"tcplife.bpf.c: map {name} of type {kind}: the bcc generator knows {', '.join(MAP_TYPES)}")
        return (f'BPF_F_TABLE("{MAP_TYPES[kind]}", {attrs["key"]}, {attrs["value"]}, {name}, '
                f'{attrs["max_entries"]}, {attrs.get("map_flags", "0")});')

    text = MAP_DEF.sub(convert, text)
    if not event_map:
        raise ProbeError("tcplife.bpf.c: no BPF_MAP_TYPE_RINGBUF map")
    return text, event_map


def split_args(text: str, open_paren: int) -> tuple[list[str], int]:
    """The top-level arguments of the call whose "(" is at open_paren, and the index past its ")"."""
    depth, start, args = 0, open_paren + 1, []
    for i in range(open_paren, len(text)):
        c = text[i]
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth == 0:
                args.append(text[start:i].strip())
                return [a for a in args if a], i + 1
        elif c == "," and depth == 1:
            args.append(text[start:i].strip())
            start = i + 1
    raise ProbeError("tcplife.bpf.c: unbalanced parentheses")


UPDATE_FLAGS = {"BPF_ANY": "update", "0": "update", "BPF_NOEXIST": "insert"}


def convert_map_calls(text: str, event_map: str, ring_buffer: bool) -> str:
    """Helper calls on a map (`bpf_map_lookup_elem(&socks, &key)`) -> bcc's map methods
    (`socks.lookup(&key)`): bcc gives a map its file descriptor only there."""
    out, pos = [], 0
    for m in re.finditer(r"\b(bpf_map_(?:lookup|update|delete)_elem|bpf_ringbuf_(?:reserve|submit|discard|query))\s*\(", text):
        if m.start() < pos:
            continue
        helper = m.group(1)
        args, end = split_args(text, m.end() - 1)
        out.append(text[pos:m.start()])
        pos = end
        if helper.startswith("bpf_map_"):
            if not args[0].startswith("&"):
                raise ProbeError(f"tcplife.bpf.c: {helper}() on {args[0]}: the bcc generator takes &MAP only")
            name = args[0][1:].strip()
            if helper == "bpf_map_lookup_elem":
                out.append(f"{name}.lookup({args[1]})")
            elif helper == "bpf_map_delete_elem":
                out.append(f"{name}.delete({args[1]})")
            else:
                if args[3] not in UPDATE_FLAGS:
                    raise ProbeError(f"tcplife.bpf.c: bpf_map_update_elem() with {args[3]}: bcc has no such update")
                out.append(f"{name}.{UPDATE_FLAGS[args[3]]}({args[1]}, {args[2]})")
        elif helper == "bpf_ringbuf_query":
            out.append("0")  # bcc has no such method: the reader polls on its timer instead
        elif ring_buffer:
            method = helper[len("bpf_"):]
            if helper == "bpf_ringbuf_reserve":
                out.append(f"{event_map}.ringbuf_reserve({args[1]})")
            else:
                out.append(f"{event_map}.{method}({args[0]}, {args[1]})")
        elif helper == "bpf_ringbuf_reserve":
            out.append(f"__tl_reserve({args[1]})")
        else:
            out.append("__tl_mark(__TL_READY)" if helper == "bpf_ringbuf_submit" else "__tl_mark(__TL_FREE)")
    out.append(text[pos:])
    return "".join(out)


def config_initializer(name: str, config: bytes) -> str:
    data = ", ".join(str(b) for b in config)
    return (f"static const union {{ struct probe_config value; unsigned char bytes[{len(config)}]; }} "
            f"__tl_{name} = {{ .bytes = {{ {data} }} }};\n"
            f"_Static_assert(sizeof(struct probe_config) == {len(config)}, \"struct probe_config\");\n"
            f"#define {name} (__tl_{name}.value)")


def generate(layouts: Layouts, config: bytes, *, ring_buffer: bool = True, ring_bytes: int = 8 << 20,
             directory: str | None = None) -> Generated:
    directory = directory or source_dir()

    def read(name: str) -> str:
        with open(os.path.join(directory, name)) as f:
            return f.read()

    kernel = parse_kernel_types(read("kernel_types.h"))
    header = drop_excluded(strip_comments(read("tcplife.h")))
    text = drop_excluded(strip_comments(read("tcplife.bpf.c")))

    enum_re = r"bpf_core_enum_value\(\s*enum\s+(\w+)\s*,\s*(\w+)\s*\)"
    layouts.prepare(kernel.structs, sorted(set(re.findall(enum_re, text))))
    missing: set[tuple[str, str]] = set()
    kernel_decls = "\n\n".join(emit_struct(s, layouts.struct_layout(s.name), missing) for s in kernel.structs)

    # Includes: kernel_types.h is replaced by the generated types, tcplife.h is inlined, libbpf's are not used.
    text = re.sub(r'#include\s+"kernel_types\.h"[^\n]*', "", text)
    text = re.sub(r"#include\s+<bpf/[^>]+>[^\n]*", "", text)
    text = re.sub(r'#include\s+"tcplife\.h"[^\n]*', lambda _: header, text)

    text, event_map = convert_maps(text, ring_buffer, ring_bytes)
    text = convert_map_calls(text, event_map, ring_buffer)

    m = RODATA_CONFIG.search(text)
    if not m:
        raise ProbeError("tcplife.bpf.c: no `const volatile struct probe_config` settings")
    text = text[:m.start()] + config_initializer(m.group("name"), config) + text[m.end():]
    text = re.sub(r"\bconst\s+volatile\b", "const", text)

    # CO-RE questions, answered now.
    def enum_value(m: re.Match) -> str:
        value = layouts.enum_value(m.group(1), m.group(2))
        if value is None:
            raise ProbeError(f"enum {m.group(1)} has no {m.group(2)} in this kernel's types")
        return str(value)

    text = re.sub(enum_re, enum_value, text)
    missing_names = {name for _, name in missing}
    text = re.sub(r"bpf_core_field_exists\(([^()]*?)(\w+)\s*\)",
                  lambda m: "0" if m.group(2) in missing_names else "1", text)

    # Programs: keep what bcc loads, drop the rest; SEC() goes (bcc places functions itself).
    programs = []
    out, pos = [], 0
    for m in PROGRAM.finditer(text):
        if m.start() < pos:
            continue
        end = find_block_end(text, m.end() - 1)
        out.append(text[pos:m.start()])
        kind = m.group("section").split("/", 1)[0]
        if kind in KEPT_PROGRAM_KINDS:
            program = Program(m.group("name"), m.group("section"))
            programs.append(program)
            body = text[m.start("head"):end]
            if not ring_buffer:
                body = wrap_for_perf(body, m.group("name"), m.group("params"))
            out.append(body)
        pos = end
    out.append(text[pos:])
    text = "".join(out)
    text = re.sub(r"char\s+\w+\[\]\s+SEC\(\"license\"\)\s*=\s*\"[^\"]*\"\s*;", "", text)
    text = re.sub(r"^[^\n;{}]*__attribute__\(\(unused\)\)\s*;", "", text, flags=re.M)  # globals bcc cannot keep

    parts = [f"/* Generated by otel_tcplife.probe.bcc_source from {directory}/tcplife.bpf.c; offsets: "
             f"{layouts.description}. */", PRELUDE, "/* Kernel types */", kernel_decls,
             strip_comments(kernel.rest), text]
    return Generated("\n".join(parts), programs, event_map, ring_buffer, missing)


def wrap_for_perf(body: str, name: str, params: str) -> str:
    """int NAME(ctx) {...} -> the same body under another name, and NAME calling it and then
    sending what it submitted (see PERF_PRELUDE)."""
    ctx = params.replace("*", " ").split()[-1]
    inner = f"__tl_body_{name}"
    head, rest = body.split("{", 1)
    head = "static __always_inline " + head.replace(f"{name}(", f"{inner}(", 1)
    return (f"{head}{{{rest}\n\nint {name}({params})\n{{\n\tint ret = {inner}({ctx});\n\n"
            f"\t__tl_flush({ctx});\n\treturn ret;\n}}\n")
