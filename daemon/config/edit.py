"""Edit one value of config.yaml in place (``ccctl config set``), keeping comments and layout.

Three rules make an edit safe for any input:

- **The schema types the value, never YAML guessing.** The key is looked up in
  :mod:`ccmitm.config.model`: a ``str`` key gets the text exactly as given (``*/5 * * * *``,
  ``*haiku*``, ``@foo``, ``yes``), an ``int`` key an integer, a ``bool`` key true/false/yes/no/
  on/off/1/0, ``null`` only where the key accepts None, and only list or mapping keys parse the
  text as YAML (``[a, b]``, ``{match: "*opus*", lane: zai}``).
- **Only the one node changes.** A round-trip parser (ruamel.yaml) keeps every comment and the
  formatting of the lines not touched. List items are addressed as ``routing.rules[0].match``;
  ``routing.rules[+]`` appends one item. A list the file does not have yet starts from its
  effective (built-in) value, because lists replace the defaults as a whole.
- **Nothing is written unless the whole result is valid** and reads back (with the same YAML
  loader the daemon uses) to exactly the value that was set; then it replaces the file atomically.
  Every failure is a :class:`ConfigError` naming the key path; messages never echo the value (it
  could be a key pasted into the wrong place).
"""

from __future__ import annotations

import copy
import io
import math
import re
import types
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from difflib import SequenceMatcher
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError as RuamelError
from ruamel.yaml.scalarstring import SingleQuotedScalarString

from ccmitm import paths
from ccmitm.config.errors import ConfigError, Problem
from ccmitm.config.load import deep_merge, validate
from ccmitm.config.model import Config, builtin_defaults

#: ``[3]`` addresses an item, ``[+]`` appends one.
APPEND = "+"
_TOKEN = re.compile(r"([^.\[\]]+)|\[(\d+|\+)\]|(\.)")
_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})
#: A value given as YAML may hold at most this many nodes (aliases could otherwise expand a short
#: text into an enormous document).
MAX_NODES = 10_000

Kind = Literal["model", "mapping", "list", "str", "int", "float", "bool", "any"]


@dataclass(frozen=True)
class Slot:
    """What the schema allows at one place of the config."""

    kind: Kind
    nullable: bool = False
    inner: Any = None  # the model class, or the annotation of a mapping's values / a list's items

    def describe(self) -> str:
        names = {
            "model": "a section (a YAML mapping)",
            "mapping": "a YAML mapping",
            "list": "a YAML list",
            "str": "text",
            "int": "an integer",
            "float": "a number",
            "bool": "true or false",
            "any": "a YAML value",
        }
        return names[self.kind] + (" or null" if self.nullable else "")


def slot_of(annotation: Any) -> Slot:
    """The :class:`Slot` of a type annotation from the model (Optional, Annotated, Literal unwrapped)."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return slot_of(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        members = [arg for arg in get_args(annotation) if arg is not type(None)]
        inner = slot_of(members[0]) if len(members) == 1 else Slot("any")
        nullable = len(members) < len(get_args(annotation))
        return Slot(inner.kind, inner.nullable or nullable, inner.inner)
    if origin is Literal:
        return Slot("str")
    if origin is list:
        return Slot("list", inner=get_args(annotation)[0])
    if origin is dict:
        return Slot("mapping", inner=get_args(annotation)[1])
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return Slot("model", inner=annotation)
    simple: dict[Any, Kind] = {str: "str", int: "int", float: "float", bool: "bool"}
    return Slot(simple.get(annotation, "any"))


# --- the key path ---------------------------------------------------------------------------------
Step = str | int  # a mapping key, a list index, or APPEND (the string "+" as a list step)


@dataclass(frozen=True)
class KeyPath:
    text: str
    steps: tuple[tuple[str, Step], ...]  # ("key", name) | ("index", n) | ("append", "+")

    def prefix(self, count: int) -> str:
        """The path text of the first ``count`` steps, for a problem's location."""
        out = ""
        for kind, step in self.steps[:count]:
            out += f"[{step}]" if kind != "key" else (f".{step}" if out else str(step))
        return out


def parse_key(text: str) -> KeyPath:
    """``routing.rules[0].match`` → its steps; ConfigError for anything else."""
    bad = ConfigError(
        "key", [Problem(_safe(text), "not a key path like proxy.http2 or routing.rules[0].match")]
    )
    if not text.isprintable() or any(ch.isspace() for ch in text):
        raise bad  # names in a config are printable and have no spaces
    steps: list[tuple[str, Step]] = []
    position, want_key = 0, True
    while position < len(text):
        found = _TOKEN.match(text, position)
        if found is None:
            raise bad
        name, index, dot = found.groups()
        if dot:
            if want_key:  # ".." or a leading "."
                raise bad
            want_key = True
        elif name is not None:
            if not want_key:
                raise bad
            steps.append(("key", name))
            want_key = False
        else:
            if want_key:  # "[0]" at the start or after a "."
                raise bad
            steps.append(("append", APPEND) if index == APPEND else ("index", int(index)))
        position = found.end()
    if not steps or want_key:
        raise bad
    if any(kind == "append" for kind, _ in steps[:-1]):
        raise ConfigError("key", [Problem(_safe(text), "[+] appends one item; it must end the key")])
    return KeyPath(text, tuple(steps))


def _safe(text: str) -> str:
    """A key path as it may appear in a message: printable, short (a key is not a secret, but a
    mistyped command line might put the value there)."""
    shown = "".join(ch if ch.isprintable() else "?" for ch in text)
    return shown if len(shown) <= 80 else shown[:77] + "..."


def resolve(key: KeyPath) -> Slot:
    """The schema's slot at ``key``; ConfigError (unknown key, not a section) otherwise."""
    slot = Slot("model", inner=Config)
    for count, (kind, step) in enumerate(key.steps):
        where = key.prefix(count + 1)
        if kind == "key":
            if slot.kind == "model":
                fields = slot.inner.model_fields
                if step not in fields:
                    known = ", ".join(fields)
                    raise ConfigError("key", [Problem(_safe(where), f"unknown key (known here: {known})")])
                slot = slot_of(fields[step].annotation)
            elif slot.kind == "mapping":
                slot = slot_of(slot.inner)
            else:
                above = key.prefix(count) or "the config"
                raise ConfigError(
                    "key", [Problem(_safe(where), f"{_safe(above)} is {slot.describe()}, not a section")]
                )
        else:
            if slot.kind != "list":
                above = key.prefix(count)
                raise ConfigError(
                    "key", [Problem(_safe(where), f"{_safe(above)} is {slot.describe()}, not a list")]
                )
            slot = slot_of(slot.inner)
    return slot


# --- the value ------------------------------------------------------------------------------------
def typed_value(text: str, slot: Slot, where: str) -> Any:
    """The command-line ``text`` as the value the schema wants at ``slot``."""

    def wrong(expected: str) -> ConfigError:
        return ConfigError("value", [Problem(where, f"expects {expected}")])

    if slot.nullable and text.strip() == "null":
        return None
    if slot.kind == "str":
        return text
    if slot.kind == "bool":
        word = text.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        raise wrong("true or false (also yes/no, on/off, 1/0)")
    if slot.kind == "int":
        if not re.fullmatch(r"[+-]?[0-9]{1,30}", text.strip()):
            raise wrong("an integer")
        return int(text.strip())
    if slot.kind == "float":
        try:
            number = float(text.strip())
        except ValueError:
            raise wrong("a number") from None
        if not math.isfinite(number):
            raise wrong("a finite number")
        return number
    # Lists, mappings and sections are given as YAML (JSON is YAML too), parsed the way the daemon
    # parses its file.
    try:
        parsed = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(
            "value", [Problem(where, f"is not valid YAML{at}; expects {slot.describe()}")]
        ) from None
    except (RecursionError, ValueError, OverflowError):
        raise ConfigError("value", [Problem(where, "is not valid YAML")]) from None
    if parsed is None and not slot.nullable and slot.kind != "any":
        raise wrong(slot.describe())
    if slot.kind in ("model", "mapping") and parsed is not None and not isinstance(parsed, dict):
        raise wrong(slot.describe() + ', e.g. {match: "*opus*", lane: zai}')
    if slot.kind == "list" and parsed is not None and not isinstance(parsed, list):
        raise wrong(slot.describe() + ", e.g. [a, b]")
    _check_plain(parsed, where, [0], set())
    return parsed


def _check_plain(value: Any, where: str, count: list[int], open_containers: set[int]) -> None:
    """Only what a config can hold: text, numbers, booleans, null, lists, mappings with text keys;
    a bounded tree (YAML aliases can make a text expand enormously, or contain itself)."""
    count[0] += 1
    if count[0] > MAX_NODES:
        raise ConfigError("value", [Problem(where, f"is too large (more than {MAX_NODES} YAML nodes)")])
    if isinstance(value, (dict, list)):
        if id(value) in open_containers:
            raise ConfigError("value", [Problem(where, "contains itself (a YAML alias to its own anchor)")])
        open_containers.add(id(value))
        items = value.values() if isinstance(value, dict) else value
        if isinstance(value, dict) and not all(isinstance(key, str) for key in value):
            raise ConfigError("value", [Problem(where, "mapping keys must be text")])
        for item in items:
            _check_plain(item, where, count, open_containers)
        open_containers.discard(id(value))
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError("value", [Problem(where, "holds a number that is not finite")])
    elif value is not None and not isinstance(value, (str, int, bool)):
        raise ConfigError(
            "value", [Problem(where, "holds a value a config cannot have (a date, binary or set)")]
        )


_PYYAML_RESOLVER = yaml.resolver.Resolver()


def _to_node(value: Any) -> Any:
    """Plain data as ruamel nodes. A string the daemon's YAML 1.1 loader would read as something
    else (``yes``, ``on``, ``1_000``, ``2024-01-01``, ``null``) is single-quoted."""
    if isinstance(value, dict):
        mapping = CommentedMap()
        for key, item in value.items():
            mapping[key] = _to_node(item)
        return mapping
    if isinstance(value, list):
        return CommentedSeq(_to_node(item) for item in value)
    if isinstance(value, str):
        tag = _PYYAML_RESOLVER.resolve(yaml.ScalarNode, value, (True, False))
        return SingleQuotedScalarString(value) if tag != "tag:yaml.org,2002:str" else value
    return value


# --- the edit -------------------------------------------------------------------------------------
def _round_trip(text: str = "") -> YAML:
    round_trip = YAML()
    round_trip.preserve_quotes = True
    # ruamel writes every block with one indentation: take the file's own, so that the lines an
    # edit does not touch are written back as they were.
    mapping, sequence, offset = _guess_indent(text)
    round_trip.indent(mapping=mapping, sequence=sequence, offset=offset)
    round_trip.width = 4096  # never fold a long line the file has in one
    # `null` written out (ruamel's default is an empty value, which reads the same but hides it).
    round_trip.representer.add_representer(
        type(None), lambda representer, _: representer.represent_scalar("tag:yaml.org,2002:null", "null")
    )
    return round_trip


_INDENTED_KEY = re.compile(r"^( +)[^\s#-]")
_SEQUENCE_ITEM = re.compile(r"^( *)- ")


def _guess_indent(text: str) -> tuple[int, int, int]:
    """(mapping indent, sequence indent, dash offset) of a YAML text; ruamel's defaults if unsure."""
    mapping, sequence, offset = 2, 2, 0
    parent: int | None = None  # indentation of the last line that opened a block ("key:")
    found_mapping = found_sequence = False
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        indent = len(line) - len(line.lstrip(" "))
        item = _SEQUENCE_ITEM.match(line)
        if parent is not None and indent > parent:
            if item and not found_sequence:
                offset = indent - parent
                sequence = offset + 2
                found_sequence = True
            elif not item and not found_mapping and _INDENTED_KEY.match(line):
                mapping = indent - parent
                found_mapping = True
        parent = indent if stripped.endswith(":") else None
        if found_mapping and found_sequence:
            break
    return mapping, max(sequence, offset + 2), offset


def _read_document(path: Path) -> tuple[Any, bytes | None, str]:
    """The file as a ruamel document (an empty mapping for a missing or empty file) and its bytes."""
    source = str(path)
    if not path.exists():
        return CommentedMap(), None, ""
    try:
        original = path.read_bytes()
        text = original.decode("utf-8")
    except OSError as exc:
        raise ConfigError(
            source, [Problem("", f"cannot read: {exc.strerror or type(exc).__name__}")]
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(source, [Problem("", "cannot read: not UTF-8 text")]) from None
    try:
        document = _round_trip().load(text)
    except (RuamelError, ValueError, RecursionError) as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(
            source, [Problem("", f"invalid YAML{at}; fix it by hand (`ccctl config check`)")]
        ) from None
    if document is None:
        document = CommentedMap()
    if not isinstance(document, CommentedMap):
        raise ConfigError(source, [Problem("", "the top level must be a mapping of sections")])
    return document, original, text


def _dump(original_text: str, document: Any) -> str:
    buffer = io.StringIO()
    _round_trip(original_text).dump(document, buffer)
    return buffer.getvalue()


def splice(original: str, base: str, new: str) -> str:
    """``new`` with every line the edit did not change taken from ``original``, as it was.

    ruamel keeps comments but re-writes what it parsed: ``True`` becomes ``true``, ``~`` becomes
    ``null``, extra spaces go, a ``---`` line is dropped. ``base`` is ruamel's writing of the file
    before the edit and ``new`` after it; the lines equal in both are the untouched ones, and they
    are put back in their original spelling (mapped through a line diff of ``original`` against
    ``base``). The result must read as exactly the same data as ``new``, else ``new`` is used."""
    if original == base or not original:
        return new
    orig_lines = original.splitlines(keepends=True)
    base_lines = base.splitlines(keepends=True)
    new_lines = new.splitlines(keepends=True)
    # Groups of original lines that ruamel wrote as a group of base lines (1:1 where the counts
    # agree, else the whole block); base lines without an original (None) are ruamel's own.
    groups: list[tuple[int, int]] = []
    owner: list[int | None] = [None] * len(base_lines)
    for tag, i1, i2, j1, j2 in SequenceMatcher(None, orig_lines, base_lines, autojunk=False).get_opcodes():
        if tag == "equal" or (tag == "replace" and i2 - i1 == j2 - j1):
            for offset in range(j2 - j1):
                owner[j1 + offset] = len(groups)
                groups.append((i1 + offset, i1 + offset + 1))
        elif tag == "replace":
            for index in range(j1, j2):
                owner[index] = len(groups)
            groups.append((i1, i2))
    edits = SequenceMatcher(None, base_lines, new_lines, autojunk=False).get_opcodes()
    touched = {
        owner[index]
        for tag, i1, i2, _, _ in edits
        if tag != "equal"
        for index in range(i1, i2)
        if owner[index] is not None
    }
    out: list[str] = []
    emitted = 0  # original lines before this index are written out or dropped

    def take_until(end: int) -> None:
        nonlocal emitted
        out.extend(orig_lines[emitted:end])
        emitted = max(emitted, end)

    def drop(group: int) -> None:
        nonlocal emitted
        start, end = groups[group]
        take_until(start)  # lines ruamel dropped (a "---") stay
        emitted = max(emitted, end)

    for tag, i1, i2, j1, j2 in edits:
        if tag == "equal":
            for index in range(i1, i2):
                group = owner[index]
                if group is None:
                    out.append(base_lines[index])
                elif group in touched:  # partly edited: ruamel's writing for all of it
                    drop(group)
                    out.append(base_lines[index])
                else:
                    take_until(groups[group][1])
        else:
            for index in range(i1, i2):
                group = owner[index]
                if group is not None:
                    drop(group)
            out.extend(new_lines[j1:j2])
    take_until(len(orig_lines))
    spliced = "".join(out)
    if spliced and not spliced.endswith("\n"):
        spliced += "\n"
    try:
        if yaml.safe_load(spliced) == yaml.safe_load(new):
            return spliced
    except (yaml.YAMLError, RecursionError, ValueError):
        pass
    return new


def _child(data: Any, kind: str, step: Step) -> Any:
    """Plain navigation of the effective data (None where there is nothing)."""
    if kind == "key" and isinstance(data, Mapping):
        return data.get(step)
    if kind == "index" and isinstance(data, list) and isinstance(step, int) and step < len(data):
        return data[step]
    return None


def _container_for(slot: Slot, effective: Any) -> Any:
    """A new container for a place the file does not have yet: a mapping merges over the defaults,
    but a list replaces them whole, so it starts as a copy of the effective list."""
    if slot.kind == "list":
        return _to_node(copy.deepcopy(effective) if isinstance(effective, list) else [])
    return CommentedMap()


def _apply(document: CommentedMap, key: KeyPath, value: Any) -> None:
    """Put ``value`` at ``key`` in the document, creating sections and entries on the way."""
    node: Any = document
    effective: Any = deep_merge(builtin_defaults(), _plain(document))
    slot = Slot("model", inner=Config)
    for count, (kind, step) in enumerate(key.steps):
        last = count == len(key.steps) - 1
        where = key.prefix(count + 1)
        if kind == "append":
            node.append(_to_node(value))
            return
        if kind == "index":
            assert isinstance(step, int)
            if step >= len(node):
                items = len(node)
                hint = f"the list has {items} item{'s' if items != 1 else ''}; [+] appends one"
                raise ConfigError("key", [Problem(where, f"no such item ({hint})")])
        # The slot of the child, to know what container it must be.
        if kind == "key":
            slot = (
                slot_of(slot.inner.model_fields[step].annotation)
                if slot.kind == "model"
                else slot_of(slot.inner)
            )
        else:
            slot = slot_of(slot.inner)
        effective = _child(effective, kind, step)
        if last:
            node[step] = _to_node(value)
            return
        child = node.get(step) if kind == "key" else node[step]
        wanted = CommentedSeq if slot.kind == "list" else CommentedMap
        if not isinstance(child, wanted):
            child = _container_for(slot, effective)
            node[step] = child
        node = child


def _plain(node: Any) -> Any:
    """A ruamel document as plain data (for the effective values and the read-back check)."""
    if isinstance(node, Mapping):
        return {str(key): _plain(item) for key, item in node.items()}
    if isinstance(node, list):
        return [_plain(item) for item in node]
    if isinstance(node, str):
        return str(node)
    return node


def value_at(data: Any, key: KeyPath) -> Any:
    """The value at ``key`` in plain config data (for ``[+]``: the last item); None if absent."""
    for kind, step in key.steps:
        if kind == "append":
            return data[-1] if isinstance(data, list) and data else None
        data = _child(data, kind, step)
    return data


def _scrub(error: ConfigError, text: str, value: Any) -> ConfigError:
    """``error`` without the value in it: validators quote what they reject, and the value could be
    a secret pasted into the wrong key."""
    needles: set[str] = set()

    def collect(item: Any) -> None:
        if isinstance(item, str) and item:
            needles.add(repr(item))
            if len(item) >= 8:
                needles.add(item)
        elif isinstance(item, dict):
            for sub in item.values():
                collect(sub)
        elif isinstance(item, list):
            for sub in item:
                collect(sub)

    collect(text)
    collect(value)
    ordered = sorted(needles, key=len, reverse=True)
    problems = []
    for problem in error.problems:
        message = problem.message
        for needle in ordered:
            message = message.replace(needle, "<the value>")
        problems.append(Problem(problem.path, message))
    return ConfigError(error.source, problems)


def set_value(path: Path, dotted_key: str, text: str) -> Any:
    """Set ``dotted_key`` to the command-line ``text`` (typed by the schema) in the file at ``path``.

    Returns the typed value. Raises :class:`ConfigError` (every problem, each with its path) and
    leaves the file untouched when the key, the value or the resulting config is not valid."""
    try:
        key = parse_key(dotted_key)
        slot = resolve(key)
        if "\x00" in text or not _encodable(text):
            raise ConfigError("value", [Problem(key.text, "is not valid text (NUL or broken UTF-8)")])
        value = typed_value(text, slot, key.text)
    except ConfigError as exc:
        raise ConfigError(str(path), exc.problems) from None
    document, original, original_text = _read_document(path)
    try:
        base_text = _dump(original_text, document)  # the file as ruamel writes it, unchanged
        _apply(document, key, value)
        new_text = _dump(original_text, document)
    except (RuamelError, ValueError):
        raise ConfigError(str(path), [Problem(key.text, "cannot be written as YAML")]) from None
    except RecursionError:  # an alias in the file to its own anchor
        raise ConfigError(
            str(path), [Problem("", "the file contains itself (a YAML alias); fix it by hand")]
        ) from None
    new_text = splice(original_text, base_text, new_text)
    try:
        raw = yaml.safe_load(new_text)
    except (yaml.YAMLError, RecursionError, ValueError):
        raw = None
        faithful = False
    else:
        faithful = value_at(raw, key) == value
    if not faithful:
        raise ConfigError(
            str(path),
            [Problem(key.text, "cannot be written so that it reads back the same; edit the file by hand")],
        )
    try:
        validate(raw, str(path))
    except ConfigError as exc:
        raise _scrub(exc, text, value) from None
    except RecursionError:
        raise ConfigError(
            str(path), [Problem("", "the file contains itself (a YAML alias); fix it by hand")]
        ) from None
    encoded = new_text.encode("utf-8")
    if encoded == original:
        return value
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # The file keeps its mode; a new one is the user's alone.
        mode = path.stat().st_mode & 0o777 if path.exists() else 0o600
        paths.write_atomic(path, encoded, mode)
    except OSError as exc:
        raise ConfigError(
            str(path), [Problem("", f"cannot write: {exc.strerror or type(exc).__name__}")]
        ) from None
    return value


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# --- the key paths, for shell completion -----------------------------------------------------------
def key_paths(effective: Mapping[str, Any] | None = None) -> Iterator[str]:
    """Every settable key path of the schema; mapping entries and list items from ``effective``
    (the built-in defaults when None), plus ``[+]`` for each list."""
    data = effective if effective is not None else builtin_defaults()
    yield from _walk(Slot("model", inner=Config), data, "")


def _walk(slot: Slot, data: Any, prefix: str) -> Iterator[str]:
    if slot.kind == "model":
        for name, field in slot.inner.model_fields.items():
            path = f"{prefix}.{name}" if prefix else name
            yield path
            yield from _walk(slot_of(field.annotation), _child(data, "key", name), path)
    elif slot.kind == "mapping" and isinstance(data, Mapping):
        for name in data:
            if "." in str(name) or "[" in str(name):
                continue
            path = f"{prefix}.{name}"
            yield path
            yield from _walk(slot_of(slot.inner), data[name], path)
    elif slot.kind == "list":
        items = data if isinstance(data, list) else []
        for index, item in enumerate(items):
            path = f"{prefix}[{index}]"
            yield path
            yield from _walk(slot_of(slot.inner), item, path)
        yield f"{prefix}[{APPEND}]"
