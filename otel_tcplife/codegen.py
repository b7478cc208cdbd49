"""Code generated from the record contract when an output loads, as dataclasses and attrs generate
methods: source text, compiled once, kept in linecache so that tracebacks show its lines.

The outputs write records straight from the probe's events, in one flat loop per batch: values from
caches of their encoded form, every constant part written out, no call per attribute. Written by
hand, such a loop spells out every attribute once per output. Here each output says how it encodes
a value and what its record looks like around the attributes; this module does the rest from
contract.SESSION_ATTRIBUTES:
- role_items: per role (client, server, unknown), the attributes of its records, in order;
- Values: what the loop computes once per event, and the caches those values come from;
- JsonValues and json_parts: the attributes of the JSON outputs as f-string parts;
- loop_source and generate: the loop around it all, compiled.
The generated source is `Generated.source` (print it to read what an output runs).
"""

from __future__ import annotations

import ast
import functools
import linecache
import re
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, NamedTuple, Sequence

import orjson

from . import abi, contract, session
from .abi import address_text, comm_text
from .caches import Formatted, port_cache
from .contract import (
    BOOL, DOUBLE, PROCESS_FACTS, STRING, Attribute, Computed, Constant, Field, Lookup, ProcessFact, Type,
)

# The owner of an event as the kernel gave it: the key an output's records are grouped by, with
# --resource process (identity.ProcessResources resolves it to the process's Resource).
OWNER_FIELDS = ("pid", "comm", "start_ns", "cgroup_id")
OWNER = ", ".join(OWNER_FIELDS)  # as a generated loop names it

# The role branches of a generated loop: name, and the role its records have.
ROLES = (("client", abi.ROLE_CLIENT), ("server", abi.ROLE_SERVER), ("unknown", abi.ROLE_UNKNOWN))


def compile_function(source: str, name: str, namespace: dict, filename: str) -> Callable:
    """Compile generated source, run it in namespace and return the function it defines as `name`.
    The source goes into linecache under filename (generated_filename; made unique with a number when
    another source has it), so that tracebacks and inspect.getsource show it."""
    lines = source.splitlines(keepends=True)
    unique, n = filename, 1
    while unique in linecache.cache and linecache.cache[unique][2] != lines:
        n += 1
        unique = f"{filename[:-1]} {n}>"
    code = compile(source, unique, "exec")
    linecache.cache[unique] = (len(source), None, lines, unique)
    exec(code, namespace)
    return namespace[name]


def identifier(key: str) -> str:
    """A Python name for an attribute key: network.local.port -> network_local_port."""
    return re.sub(r"\W", "_", key)


def indent(lines: list[str], levels: int = 1) -> list[str]:
    return [" " * 4 * levels + line if line else line for line in lines]


# --- f-strings -------------------------------------------------------------------------------------

def literal(text: str) -> str:
    """text as the literal part of an f-string template (braces doubled)."""
    return text.replace("{", "{{").replace("}", "}}")


def fstring_lines(parts: list[str]) -> list[str]:
    """Source lines for f-string template parts: one f-string literal a line, which the compiler
    joins into one f-string."""
    return ["f" + repr(part) for part in parts if part]


# CPython builds an f-string of more than 30 parts (literal runs and fields) through a list and
# str.join (compile.c, STACK_USE_GUIDELINE); up to 30 take one BUILD_STRING, much faster.
FSTRING_PARTS = 30


@functools.cache
def _shape(part: str) -> tuple[int, bool, bool]:
    """An f-string template part's number of parts, and whether it starts and ends with literal text."""
    values = ast.parse("f" + repr(part), mode="eval").body.values
    return len(values), isinstance(values[0], ast.Constant), isinstance(values[-1], ast.Constant)


def _part_count(parts: list[str]) -> int:
    """The number of parts of the f-string of the template parts (literal text meeting literal text is one)."""
    shapes = [_shape(part) for part in parts if part]
    return sum(n for n, _, _ in shapes) - sum(1 for (_, _, ends), (_, starts, _) in zip(shapes, shapes[1:])
                                              if ends and starts)


def fstring(parts: list[str], name: str) -> tuple[list[str], list[str]]:
    """The string of f-string template parts, made by f-strings of at most FSTRING_PARTS parts each:
    (lines assigning the first pieces to locals name_1, name_2, ..., the source lines of the
    f-string that joins them and the rest)."""
    room = 4  # parts left in every piece for the last one's references to the others
    pieces: list[list[str]] = [[]]
    for part in parts:
        if pieces[-1] and _part_count(pieces[-1] + [part]) > FSTRING_PARTS - room:
            pieces.append([])
        pieces[-1].append(part)
    if len(pieces) > room + 1:
        raise ValueError(f"a record of {len(parts)} parts: too long for {room + 1} f-strings")
    lines = []
    for i, piece in enumerate(pieces[:-1], 1):
        lines += [f"{name}_{i} = (", *indent(fstring_lines(piece)), ")"]
    references = "".join(f"{{{name}_{i}}}" for i in range(1, len(pieces)))
    return lines, fstring_lines([references, *pieces[-1]])


# --- a record's attributes, per role ---------------------------------------------------------------

@dataclass(frozen=True)
class Item:
    """One step of a record's attributes: an attribute, or a run of process facts (written from one
    cache per (pid, comm))."""

    attributes: tuple[Attribute, ...]
    sources: tuple  # each attribute's source for the role
    only_if: str | None = None

    @property
    def process_run(self) -> bool:
        return isinstance(self.sources[0], ProcessFact)


def role_items(attributes: tuple[Attribute, ...]) -> dict[str, tuple[Item, ...]]:
    """Per role branch (ROLES): what its records hold, in order."""
    result = {}
    for branch, role in ROLES:
        items: list[Item] = []
        for attribute in attributes:
            source = attribute.source_for(role)
            if source is None:
                continue
            last = items[-1] if items else None
            if (isinstance(source, ProcessFact) and attribute.only_if is None
                    and last is not None and last.process_run and last.only_if is None):
                items[-1] = Item(last.attributes + (attribute,), last.sources + (source,))
            else:
                items.append(Item((attribute,), (source,), attribute.only_if))
        result[branch] = tuple(items)
    return result


def role_switch(code: dict[str, list[str]]) -> list[str]:
    """Each role branch's code, chosen by the event's role; just one when they are all the same."""
    if code["client"] == code["server"] == code["unknown"]:
        return code["client"]
    return [f"if role == {abi.ROLE_CLIENT}:  # client", *indent(code["client"]),
            f"elif role == {abi.ROLE_SERVER}:  # server", *indent(code["server"]),
            "else:  # unknown (any other role)", *indent(code["unknown"])]


def event_expression(expression: str) -> str:
    """A Computed expression over Session fields, as one over the event fields they come from."""
    tree = ast.parse(expression, mode="eval")
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            if node.id in session.ADDRESS_FIELDS or node.id == session.COMM_FIELD:
                raise ValueError(f"{expression!r}: computed values take number fields only, not {node.id}")
            node.id = session.event_field(node.id)
    return ast.unparse(tree)


# --- values computed once per event, and their caches ---------------------------------------------

class Values:
    """The values a generated loop computes for each event before it writes the record (`lines`, in
    order), and the caches they come from: name -> make(names), called by each new encoder for its
    own (names: enrich.ProcessNames). Subclasses say how their output encodes each kind of source."""

    def __init__(self, process_local: str | None = None) -> None:
        """process_local: a local that the output's own per-event code sets to its record's process run
        (from the run's cache, by owner: with the Resource's text, say), instead of a lookup of its own."""
        self.lines: list[str] = []
        self.caches: dict[str, Callable] = {}
        self.process_local = process_local
        self._locals: dict[object, str] = {}  # what a local holds -> its name
        self._caches: dict[object, str] = {}  # what a cache holds -> its name
        self._process_caches: set[str] = set()

    def _unique(self, name: str) -> str:
        taken = {*self._locals.values(), *abi.EVENT_NAMES, *self.caches}
        unique, n = name, 1
        while unique in taken:
            n += 1
            unique = f"{name}_{n}"
        return unique

    def define(self, what: object, name: str, expression: str) -> str:
        """A local holding `what`, computed once per event (added the first time it is asked for): its name."""
        if what not in self._locals:
            self._locals[what] = unique = self._unique(name)
            self.lines.append(f"{unique} = {expression}")
        return self._locals[what]

    def cache(self, name: str, make: Callable, what: object = None) -> str:
        """A cache of `what` (by default, of what its name says), added the first time: its name."""
        what = name if what is None else what
        if what not in self._caches:
            self._caches[what] = unique = self._unique(name)
            self.caches[unique] = make
        return self._caches[what]

    def process(self, cache: str, expression: str, inline: bool = False) -> str:
        """What holds a record's process run, from its cache (expression: the lookup there): process_local,
        or a local (inline: the expression itself) computed once per event."""
        self._process_caches.add(cache)
        if self.process_local is None:
            return expression if inline else self.define(cache, "process", expression)
        if len(self._process_caches) > 1:
            raise ValueError(f"records of two process runs: {self.process_local} holds one")
        return self.process_local

    def names(self) -> set[str]:
        """The names of the values' locals and of the caches."""
        return {*self._locals.values(), *self.caches}

    def cache_lines(self) -> list[str]:
        """The loop's locals for its caches, from its `caches` argument."""
        return [f"{name} = caches[{name!r}]" for name in self.caches]


def local_name(source: object) -> str:
    """What to call a local holding a source's value."""
    if isinstance(source, Field):
        return "comm_name" if source.name == session.COMM_FIELD else source.name
    if isinstance(source, Lookup):
        return identifier(source.function.__name__)
    if isinstance(source, Computed):
        return source.name
    raise TypeError(f"no local for {source}")


# --- the JSON outputs ------------------------------------------------------------------------------

def json_escaped(text: str) -> str:
    """text as it stands inside a JSON string, quotes left out."""
    return orjson.dumps(text).decode()[1:-1]


def json_text(type: Type) -> Callable[[object], str]:
    """value -> its text in the JSON outputs: strings escaped (without their quotes), doubles as repr,
    booleans as true or false."""
    if type is BOOL:
        return lambda value: "true" if value else "false"
    return json_escaped if type is STRING else repr if type is DOUBLE else str


PLACEHOLDER = "\0"  # where a value's text goes in an attribute's template; JSON text never holds it raw


class JsonValues(Values):
    """Values for the JSON outputs: strings as their escaped text, made once per raw value; numbers as
    they are, 16-bit ones as their text (a cache of all 65,536 costs less than formatting each)."""

    def expression(self, source) -> str:
        """An expression of the source's value, computed where it stands (`local`: once per event)."""
        if isinstance(source, Field):
            field = session.event_field(source.name)
            if source.name in session.ADDRESS_FIELDS:
                for family in (4, 6):
                    self.cache(f"address_text_v{family}", lambda names, family=family: Formatted(
                        lambda raw: json_escaped(address_text(family, raw))))
                texts = self.define("address texts", "address_text",
                                    "address_text_v4 if family == 4 else address_text_v6")
                return f"{texts}[{field}]"
            if source.name == session.COMM_FIELD:
                self.cache("comm_text", lambda names: Formatted(lambda raw: json_escaped(comm_text(raw))))
                return f"comm_text[{field}]"
            if abi.EVENT_CODES[field] == "H":
                self.cache("port_text", lambda names: port_cache())
                return f"port_text[{field}]"
            return field
        if isinstance(source, Lookup):
            function = source.function
            cache = self.cache(identifier(f"{function.__name__}_text"),
                               lambda names: Formatted(lambda value: json_escaped(function(value))), what=function)
            return f"{cache}[{session.event_field(source.field)}]"
        if isinstance(source, Computed):
            return event_expression(source.expression)
        raise TypeError(f"no JSON expression for {source}")

    def local(self, source) -> str:
        """A local holding the source's value, computed once per event: its name."""
        expression = self.expression(source)
        if expression.isidentifier():  # a number as the event holds it
            return expression
        return self.define(source, local_name(source), expression)

    def process_run(self, item: Item, attribute_text: Callable, separator: str) -> str:
        """A local holding a run of process facts as their attributes' text (made once per (pid, comm))."""
        # The run's text with PLACEHOLDER for each value, split there: the values' text goes between.
        template = separator.join(attribute_text(a.key, a.type, PLACEHOLDER) for a in item.attributes)
        head, *tails = template.split(PLACEHOLDER)
        facts = [(json_text(a.type), PROCESS_FACTS[source.fact], tail)
                 for a, source, tail in zip(item.attributes, item.sources, tails)]

        def make(names):
            def text(key: tuple[int, bytes]) -> str:
                pid, comm = key[0], comm_text(key[1])
                return head + "".join([value_text(fact(pid, comm, names)) + tail for value_text, fact, tail in facts])
            return Formatted(text)

        cache = self.cache("process_text", make, what=item)
        return self.process(cache, f"{cache}[pid, comm]")

    def cached_text(self, cached: CachedAttribute, attribute_text: Callable[[str, Type, str], str]) -> str:
        """An expression of the attribute's text, from a cache by its field. A one-byte field's cache is
        a plain dict of all 256 values ("" where only_if is 0): a lookup in a dict subclass (Formatted)
        costs about half as much again. Another field's, with only_if, is a local: "" where it is 0,
        tested first (most such fields are 0 in most records)."""
        field = session.event_field(cached.field)
        one_byte = abi.EVENT_CODES[field] == "B"

        def make(names):
            if one_byte:
                return {raw: cached.text(raw, attribute_text) for raw in range(256)}
            return Formatted(lambda raw: cached.text(raw, attribute_text))

        name = identifier(cached.attribute.key)
        what = ("attribute", cached.attribute.key, cached.separator)
        cache = self.cache(f"{name}_text", make, what)
        if one_byte or cached.only_if is None:
            return f"{cache}[{field}]"
        return self.define(what, f"{name}_attribute", f'{cache}[{field}] if {field} else ""')


class CachedAttribute(NamedTuple):
    """An attribute whose whole text (with the separator before it) a cache by one number field holds."""

    attribute: Attribute
    field: str  # the Session field
    function: Callable[[int], object]  # the value, of the field's
    only_if: str | None  # None or that field
    separator: str

    @classmethod
    def of(cls, attribute: Attribute, source, only_if: str | None, separator: str) -> CachedAttribute | None:
        """For a Lookup (few values), or a double Computed from one field (a double's repr costs several
        lookups), whose only_if, if any, is that field; else None."""
        if isinstance(source, Lookup):
            field, function = source.field, source.function
        elif isinstance(source, Computed) and attribute.type is DOUBLE:
            function, fields = contract._function(source.expression)
            if len(fields) != 1:
                return None
            field = fields[0]
        else:
            return None
        if only_if not in (None, field) or field in session.ADDRESS_FIELDS or field == session.COMM_FIELD:
            return None
        return cls(attribute, field, function, only_if, separator)

    def text(self, raw: int, attribute_text: Callable[[str, Type, str], str]) -> str:
        if self.only_if is not None and not raw:
            return ""
        key, type = self.attribute.key, self.attribute.type
        return self.separator + attribute_text(key, type, json_text(type)(type.python(self.function(raw))))


def json_parts(items: tuple[Item, ...], values: JsonValues, attribute_text: Callable[[str, Type, str], str],
               separator: str, leading: bool) -> list[str]:
    """A record's attributes as f-string template parts, one per item, for a JSON output that writes
    an attribute as attribute_text(key, type, its value's text) and puts separator before every
    attribute (leading) or between them. An attribute only some records have is a local of the loop:
    its text with the separator, or "". An attribute made from one number field (CachedAttribute.of)
    comes whole from a cache by that field."""
    parts = []
    for item in items:
        first = not parts and not leading
        sep = "" if first else separator
        if item.process_run:
            parts.append(sep + "{" + values.process_run(item, attribute_text, separator) + "}")
            continue
        (attribute,), (source,) = item.attributes, item.sources
        if isinstance(source, Constant):
            parts.append(sep + literal(attribute_text(attribute.key, attribute.type,
                                                      json_text(attribute.type)(source.value))))
            continue
        if item.only_if is not None and first:
            raise ValueError(f"{attribute.key}: a record's first attribute must be in every record")
        cached = CachedAttribute.of(attribute, source, item.only_if, sep)
        if cached:
            parts.append("{" + values.cached_text(cached, attribute_text) + "}")
            continue
        field = "{%s!r}" if attribute.type is DOUBLE else "{%s}"
        template = sep + literal(attribute_text(attribute.key, attribute.type, PLACEHOLDER))
        if item.only_if is None:
            parts.append(template.replace(PLACEHOLDER, field % values.local(source)))
            continue
        text = "f" + repr(template.replace(PLACEHOLDER, field % f"({values.expression(source)})"))
        name = values.define(item, identifier(attribute.key) + "_attribute",
                             f'{text} if {session.event_field(item.only_if)} else ""')
        parts.append("{" + name + "}")
    return parts


# --- the loop --------------------------------------------------------------------------------------

def loop_source(name: str, arguments: str, values: Values, setup: list[str], per_event: list[str],
                record: list[str], after: list[str], fields: tuple[str, ...] = abi.EVENT_NAMES,
                group: str | None = None, group_setup: tuple[str, ...] = (), group_after: tuple[str, ...] = ()) -> str:
    """def name(caches, arguments): setup; for each event: values' lines, per_event, record; after.
    The events are tuples of `fields` (abi.event_struct), each a local of the loop by its abi name;
    the loop may read no other event field. A value's local may not have the name of one the output's
    own code uses (a Computed named `end`, say). Either: ValueError.
    group: the name of a value per group of events (a Resource's text, say): the loop then runs over
    `groups`, pairs of (that value, events), in one call however many groups a batch holds, with
    group_setup before each group's events and group_after after them."""
    depth = 2 if group is None else 3
    lines = [f"def {name}(caches, {arguments}):",
             *indent(values.cache_lines()),
             *indent(setup),
             *([] if group is None else [f"    for {group}, events in groups:", *indent(list(group_setup), 2)]),
             *indent([f"for {', '.join(fields)}{',' if len(fields) == 1 else ''} in events:"], depth - 1),
             *indent(values.lines, depth),
             *indent(per_event, depth),
             *indent(record, depth),
             *indent(list(group_after), depth - 1),
             *indent(after)]
    source = "\n".join(lines) + "\n"
    function = ast.parse(source).body[0]
    assigned = Counter(_assigned_names(function.body))
    arguments = {a.arg for a in function.args.args}
    clash = sorted(local for local in values.names() if assigned[local] > 1 or local in arguments)
    if clash:
        raise ValueError(f"generated {name}: {', '.join(clash)} named both by a value and by the output's code")
    missing = set(event_fields_read(source)) - set(fields)
    if missing:
        raise ValueError(f"generated {name} reads event fields its events do not hold: {', '.join(sorted(missing))}")
    return source


def event_fields_read(source: str) -> tuple[str, ...]:
    """The event fields a generated loop reads (in struct event's order): what its events must hold."""
    return abi.event_fields({node.id for node in ast.walk(ast.parse(source))
                             if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)
                             and node.id in abi.EVENT_NAMES})


def _assigned_names(statements: list[ast.stmt]):
    """Every name the statements (and the blocks in them) assign to, once per assignment."""
    for statement in statements:
        targets = statement.targets if isinstance(statement, ast.Assign) else \
            [statement.target] if isinstance(statement, (ast.AugAssign, ast.For)) else []
        for target in targets:
            yield from (node.id for node in ast.walk(target) if isinstance(node, ast.Name))
        for block in ("body", "orelse"):
            yield from _assigned_names(getattr(statement, block, []))


@dataclass(frozen=True)
class Generated:
    """A generated function, its source, and the caches it takes (each encoder makes its own)."""

    function: Callable
    source: str
    caches: dict[str, Callable]

    @property
    def fields_read(self) -> tuple[str, ...]:
        """The event fields the function reads: the least its events can hold."""
        return event_fields_read(self.source)

    def new_caches(self, names) -> dict:
        return {name: make(names) for name, make in self.caches.items()}


def group_chunks(groups: Iterable[tuple[object, Sequence[tuple]]], size: int) -> Iterator[list[tuple]]:
    """(value, events) groups, in order, as chunks of at most `size` events each, every chunk a list of
    (value, events) pairs: small groups share a chunk, a large one is split (a loop made with `group`
    takes a chunk in one call)."""
    chunk: list[tuple] = []
    room = size
    for value, events in groups:
        start = 0
        while start < len(events):
            part = events[start:start + room]
            chunk.append((value, part))
            start += len(part)
            room -= len(part)
            if not room:
                yield chunk
                chunk, room = [], size
    if chunk:
        yield chunk


class GeneratedEncoder:
    """An output's encoder: a loop generated for its table of attributes and the fields its events
    hold (make(attributes, fields=...), cached per table), with caches of its own."""

    def __init__(self, make: Callable[..., Generated], attributes: tuple[Attribute, ...] | None, names) -> None:
        self._make = make
        self.attributes = contract.attributes() if attributes is None else attributes
        self.names = names
        self.read_fields(abi.EVENT_NAMES)

    @property
    def fields_read(self) -> tuple[str, ...]:
        """The event fields this encoder needs its events to hold."""
        return self.generated.fields_read

    def read_fields(self, fields: tuple[str, ...]) -> None:
        """Take events of these fields from now on (tuples of abi.event_struct(fields)): the probe reads
        only what the outputs use."""
        self.generated = self._make(self.attributes, fields=fields)
        self.caches = self.generated.new_caches(self.names)


def generated_filename(module: str, name: str) -> str:
    """The file name of code generated by a module: its path in it, so that profiles (bench/profile.py)
    count the code with the module's, e.g. '<generated otel_tcplife/output/ndjson.py: encode_chunk>'."""
    return f"<generated {module.replace('.', '/')}.py: {name}>"


def generate(name: str, source: str, values: Values, namespace: dict, module: str, variant: str = "") -> Generated:
    """Compile the source of a loop made with values (its globals namespace's), by the module named:
    as its function `name` (variant: which one of several)."""
    hidden = values.names() & namespace.keys()
    if hidden:
        raise ValueError(f"generated {name}: {', '.join(sorted(hidden))} would hide the output's own names")
    filename = generated_filename(module, f"{name} ({variant})" if variant else name)
    function = compile_function(source, name, dict(namespace), filename)
    return Generated(function, source, dict(values.caches))
