"""docs/CONFIG.md and etc/config.yaml, generated from the config schema.

``python -m ccmitm.config.doc`` writes the reference to stdout; ``--example`` writes the commented
example config instead (``make docs`` writes both files). A test checks that both files equal this
output, so neither can drift from :mod:`ccmitm.config.model`. Every key's type and limits come from
its annotation, its default from the model, its meaning from the field's ``description`` (and for a
``<name>`` or ``<glob>`` entry, from its model's docstring); a key without one stops the generator.
"""

from __future__ import annotations

import argparse
import json
import types
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo, PydanticUndefined

from ccmitm.config.model import Config, builtin_defaults


@dataclass(frozen=True)
class Key:
    path: str  # "proxy.port", "lanes.<name>.url", "routing.rules[].match"
    type: str
    default: Any  # PydanticUndefined when the key has none (required where it appears)
    description: str
    example: Any = PydanticUndefined

    @property
    def has_default(self) -> bool:
        return self.default is not PydanticUndefined


def type_name(annotation: Any) -> str:
    """A reader's name for a field type: ``int``, ``str | null``, ``list[str]``, ``"a" | "b"``."""
    if annotation is type(None):
        return "null"
    origin = get_origin(annotation)
    if origin is Annotated:  # a validated type, e.g. UserPath: shown as what it holds
        return type_name(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return " | ".join(type_name(arg) for arg in get_args(annotation))
    if origin is Literal:
        return " | ".join(f'"{arg}"' for arg in get_args(annotation))
    if origin is list:
        return f"list[{type_name(get_args(annotation)[0])}]"
    if origin is dict:
        key, value = get_args(annotation)
        return f"map {type_name(key)} → {type_name(value)}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping"
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation)


def _limits(metadata: list[Any]) -> str:
    words = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<", "min_length": "length ≥"}
    parts = []
    for item in metadata:
        for name, symbol in words.items():
            value = getattr(item, name, None)
            if value is not None:  # Field(ge=…, min_length=…) puts annotated_types limits here
                parts.append(f"{symbol} {value}")
    return ", ".join(parts)


def _plain(value: Any) -> Any:
    """A default as the data a YAML file would hold (models dumped without their own defaults)."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_defaults=True)
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def _default(field: FieldInfo) -> Any:
    if field.default_factory is not None:
        return _plain(field.default_factory())  # type: ignore[call-arg]
    return _plain(field.default)


def _description(path: str, text: str | None) -> str:
    if not text:
        raise KeyError(f"config doc: no description for {path}; add one to its Field in config/model.py")
    return " ".join(text.split())


def _model(annotation: Any) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def walk(model: type[BaseModel] = Config, prefix: str = "") -> Iterator[Key]:
    """Every key of ``model``, depth first, in the model's field order."""
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        annotation = field.annotation
        kind = type_name(annotation)
        limits = _limits(field.metadata)
        if limits:
            kind += f" ({limits})"
        example = field.examples[0] if field.examples else PydanticUndefined
        yield Key(path, kind, _default(field), _description(path, field.description), example)
        origin, args = get_origin(annotation), get_args(annotation)
        if (inner := _model(annotation)) is not None:
            yield from walk(inner, path + ".")
        elif origin is list and (item := _model(args[0])) is not None:
            yield from walk(item, path + "[].")
        elif origin is dict and (item := _model(args[1])) is not None:
            entry = f"{path}.{'<glob>' if name == 'pricing' else '<name>'}"
            yield Key(entry, "mapping", PydanticUndefined, _description(entry, item.__doc__))
            yield from walk(item, entry + ".")


# --- docs/CONFIG.md ----------------------------------------------------------------------------------
HEADER = """\
# Configuration reference

<!-- Generated by `python -m ccmitm.config.doc` (`make docs`) from the config schema in
daemon/config/model.py; tests/config/test_doc.py fails when this file and the schema disagree. -->

Every key of `config.yaml`, with its type, built-in default and meaning. A file only needs what
you change: it is merged over the defaults (mappings merge key by key, lists and scalars replace).
Where the file lives, validation, reloads and lane keys: [configuration.md](configuration.md).
The same keys with comments, ready to copy: [etc/config.yaml](../etc/config.yaml).

`<name>` stands for any lane name, `<glob>` for a model glob, `[]` for each item of a list. An
empty default means the key has none (it is required where it appears). Environment toggles read
at load: `OFFLOAD_PAUSED=1` (paused), `FORCE_HAIKU_TO_ZAI=0` (Haiku rules disabled),
`CCMITM_CONFIG` (the file's path).
"""


def json_value(value: Any) -> str:
    """A value as the reference shows it: strings bare, everything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render() -> str:
    sections: list[str] = [HEADER]
    for key in walk():
        default = json_value(key.default) if key.has_default else ""
        example = json_value(key.example) if key.example is not PydanticUndefined else ""
        if "." not in key.path:
            sections.append(f"\n## `{key.path}`\n\n{key.description}\n")
            if key.path in ("lanes", "pricing"):  # the other sections' defaults are their keys'
                sections.append(f"\nDefault: `{default}`.\n")
            if example:
                sections.append(f"Example: `{example}`.\n")
            sections.append("\n| key | type | default | description |\n|---|---|---|---|\n")
            continue
        shown = f"`{_cell(default)}`" if default else ""
        description = key.description + (f" Example: `{_cell(example)}`." if example else "")
        sections.append(f"| `{key.path}` | {_cell(key.type)} | {shown} | {_cell(description)} |\n")
    return "".join(sections)


# --- etc/config.yaml ---------------------------------------------------------------------------------
EXAMPLE_HEADER = """\
# ccmitm configuration: every key, with its built-in default.
#
# Generated from the schema (daemon/config/model.py; `make docs` writes etc/config.yaml, and
# `ccctl config init` writes this same text to the config path); the full reference is
# docs/CONFIG.md.
#
# Lives at ~/.config/ccmitm/config.yaml (or wherever --config / $CCMITM_CONFIG point); keep only
# what you change: a file is merged over these defaults (mappings merge, lists replace).
# Check a file without starting anything:   ccctl config check FILE
# The running daemon reloads this file within ~2 s of a save; a bad edit is rejected as a whole
# (the old config keeps serving and `ccctl status` shows the error).
"""


def yaml_scalar(value: Any) -> str:
    """A scalar as YAML, quoted only where plain text would read back as something else."""
    if isinstance(value, str):
        try:
            plain_ok = value != "" and yaml.safe_load(value) == value
        except yaml.YAMLError:
            plain_ok = False
        return value if plain_ok and ": " not in value and " #" not in value else json.dumps(value)
    return json.dumps(value)


def _comment(text: str, indent: str) -> list[str]:
    return [f"{indent}# {line}" for line in _wrap(text, 96 - len(indent))]


def _wrap(text: str, width: int) -> list[str]:
    lines: list[str] = []
    current = ""
    for word in text.split():
        if current and len(current) + 1 + len(word) > width:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    return [*lines, current] if current else lines


def _yaml_lines(value: Any, indent: str, keys: dict[str, Key], path: str) -> list[str]:
    """``value`` (a default) as block YAML under ``path``, each key preceded by its description."""
    out: list[str] = []
    if isinstance(value, dict):
        for name, item in value.items():
            child = f"{path}.{name}" if path else name
            key = keys.get(child) or keys.get(_generic(child))
            if key is not None and "<" in key.path and key.path.endswith(">"):
                key = None  # a named entry (a lane): its keys carry the descriptions
            if key is not None:
                out += _comment(key.description, indent)
            out += _item(f"{indent}{yaml_scalar(name)}:", item, indent, keys, child)
        return out
    for item in value:  # a list of mappings (the routing rules)
        lines = _yaml_lines(item, indent + "  ", keys, path + "[]")
        first = next(i for i, line in enumerate(lines) if not line.lstrip().startswith("#"))
        lines[first] = f"{indent}- " + lines[first].lstrip()
        out += lines
    return out


def _item(head: str, value: Any, indent: str, keys: dict[str, Key], path: str) -> list[str]:
    if isinstance(value, dict) and value:
        return [head, *_yaml_lines(value, indent + "  ", keys, path)]
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return [head, *_yaml_lines(value, indent + "  ", keys, path)]
    if isinstance(value, list) and value:
        return [head, *[f"{indent}  - {yaml_scalar(item)}" for item in value]]
    text = "{}" if value == {} else "[]" if value == [] else yaml_scalar(value)
    return [f"{head} {text}"]


def _generic(path: str) -> str:
    """``lanes.zai.url`` -> ``lanes.<name>.url`` (how the schema names keys inside lanes)."""
    parts = path.split(".")
    if parts[0] in ("lanes", "pricing") and len(parts) > 1:
        parts[1] = "<name>" if parts[0] == "lanes" else "<glob>"
    return ".".join(parts)


def render_example() -> str:
    keys = {key.path: key for key in walk()}
    # Sections show every key with its default; lanes show only what the built-in lanes set.
    defaults = builtin_defaults()
    out = [EXAMPLE_HEADER]
    for key in walk():
        if "." in key.path:
            continue
        value = key.default if key.path == "lanes" else defaults[key.path]
        out.append("")
        out += _comment(key.description, "")
        out += _item(f"{key.path}:", value, "", keys, key.path)
        if key.example is not PydanticUndefined:
            out.append("# for example:")
            out += ["# " + line for line in _item(f"{key.path}:", key.example, "", keys, key.path)]
        if key.path == "lanes":
            # The optional lane keys that the built-in lanes leave unset, shown once for reference.
            out.append("#   <name>:")
            for name in ("api_key_file", "header_mode"):
                lane_key = keys[f"lanes.<name>.{name}"]
                sample = lane_key.example if lane_key.example is not PydanticUndefined else "x-api-key"
                out += _comment(lane_key.description, "#     ")
                out.append(f"#     {name}: {yaml_scalar(sample)}")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Write docs/CONFIG.md (or, with --example, etc/config.yaml)."
    )
    parser.add_argument("--example", action="store_true", help="the commented example config instead")
    args = parser.parse_args(argv)
    print(render_example() if args.example else render(), end="")


if __name__ == "__main__":  # pragma: no cover
    main()
