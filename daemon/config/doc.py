"""docs/CONFIG.md, generated from the config model: every key, its type, default and meaning.

``python -m ccmitm.config.doc > docs/CONFIG.md`` (or ``make docs``) writes it; a test checks the
file equals this output and that every key of the model has a description here, so the
reference cannot drift from the code. Types and limits come from the pydantic model, defaults
from ``config.BUILTIN`` (or the model's own field default for keys inside lanes and rules).
"""

from __future__ import annotations

import json
import types
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from ccmitm.config.load import BUILTIN, Config

#: One line per key path. ``<name>`` stands for a lane name, ``<glob>`` for a pricing glob,
#: ``[]`` for every item of a list.
DESCRIPTIONS: dict[str, str] = {
    "proxy": "The two listeners, the CA and the limits of the data path.",
    "proxy.host": 'Address both listeners bind to: a loopback address or "localhost" (anything else is refused).',
    "proxy.port": "Intercepting listener, for `HTTPS_PROXY=http://127.0.0.1:8082` (needs the CA).",
    "proxy.reverse_port": "Reverse listener, for `ANTHROPIC_BASE_URL=http://127.0.0.1:8083`; `null` turns it off.",
    "proxy.confdir": "mitmproxy's directory: the CA (`mitmproxy-ca-cert.pem` is what `NODE_EXTRA_CA_CERTS` names).",
    "proxy.http2": "Offer HTTP/2 to clients and upstreams; `false` = HTTP/1.1 only (the cure for HTTP/2 jitter).",
    "proxy.intercept_hosts": "Hosts the intercepting listener decrypts; every other CONNECT is tunnelled untouched.",
    "proxy.drain_s": "On stop, in-flight streams get this many seconds to finish.",
    "proxy.read_timeout_s": "An upstream that sends nothing for this many seconds is cut off (logged as a stall).",
    "proxy.max_body_bytes": "Larger request bodies are answered with an Anthropic-shaped 413.",
    "routing": "Which lane each request goes to.",
    "routing.paused": "Kill-switch: `true` sends everything to `default_lane` (`ccctl pause`/`resume` override it).",
    "routing.default_lane": "Where everything else, and every fallback, goes; must be a pass-through (unkeyed) lane.",
    "routing.rules": "First match wins; no match means `default_lane`.",
    "routing.rules[].match": "Case-insensitive glob on the request's model, e.g. `*haiku*`.",
    "routing.rules[].lane": "The lane a matching request goes to (must exist under `lanes`).",
    "routing.rules[].model": "Rewrite the model for that lane (e.g. `glm-4.5-air`); `null` keeps the client's model.",
    "routing.rules[].enabled": "`false` keeps the rule matching but not applied (logged as `rule_disabled`).",
    "lanes": "Upstreams by name. Built in: `anthropic` (pass-through) and `zai` (keyed).",
    "lanes.<name>": "One upstream. Without a key setting it is pass-through: the client's credentials go as sent.",
    "lanes.<name>.url": "Base URL, http or https; its path prefix is kept (`<url>/v1/messages`).",
    "lanes.<name>.api_key_env": "Environment variable holding this lane's key (makes the lane keyed).",
    "lanes.<name>.api_key_file": "File holding this lane's key, chmod 600 (alternative to `api_key_env`).",
    "lanes.<name>.header_mode": "How a keyed lane's key is sent: `x-api-key`, or `authorization` (Bearer); "
    "`null` = `x-api-key`.",
    "breaker": "The offload lanes' circuit breaker and the single failover.",
    "breaker.failures": "This many failures (connect error, 429, 5xx, 401/403) ...",
    "breaker.window_s": "... within this many seconds open the lane's breaker.",
    "breaker.cooldown_s": "Seconds the lane's traffic goes to `default_lane` (or `Retry-After`, if longer).",
    "breaker.failover": "Retry a refused offload call once on `default_lane`, before the client saw a byte.",
    "logs": "The usage log (one JSON line per call).",
    "logs.dir": "Directory of `usage.jsonl` and its rotated `.gz` files; a change applies live.",
    "logs.rotate_bytes": "Rotate when the file would grow past this many bytes ...",
    "logs.keep": "... keeping this many rotated files.",
    "logs.daily": "Also rotate once a day (local time).",
    "bundle": "The nightly review bundle (usage, metrics, verify, REPORT.html, config, daemon log).",
    "bundle.dir": "Where bundles are written: `<dir>/<prefix>-YYYYmmdd-HHMMSS/` and `.tgz`.",
    "bundle.prefix": "File name prefix of bundles (letters, digits, `.`, `_`, `-`).",
    "bundle.schedule": "When the nightly run happens: a 5-field crontab (minute hour day month weekday).",
    "bundle.timezone": "Time zone of the schedule; `null` = this machine's local zone.",
    "bundle.keep": "Newest bundles kept; older ones ccmitm made are removed (nothing else is touched).",
    "bundle.enabled": "`false`: no nightly run (`ccctl bundle` still works).",
    "pricing": "Optional prices per model glob, for the savings estimate of `ccctl summarize`.",
    "pricing.<glob>": 'A model glob, e.g. `"*haiku*"`.',
    "pricing.<glob>.input_per_mtok": "Price of one million input tokens.",
    "pricing.<glob>.output_per_mtok": "Price of one million output tokens.",
    "control": "The control socket `ccctl` talks to.",
    "control.socket": "Socket path; `null` = `$XDG_RUNTIME_DIR/ccmitm/control.sock` (else the state dir).",
}

#: Examples for keys whose default says little.
EXAMPLES: dict[str, Any] = {
    "lanes.<name>.api_key_file": "~/.config/ccmitm/zai.key",
    "lanes.<name>.url": "https://api.z.ai/api/anthropic",
    "pricing": {"*haiku*": {"input_per_mtok": 1.0, "output_per_mtok": 5.0}},
    "bundle.timezone": "Europe/Berlin",
    "control.socket": "~/.local/state/ccmitm/control.sock",
}


@dataclass(frozen=True)
class Key:
    path: str
    type: str
    default: str
    description: str
    example: str = ""


def _yaml_value(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value


def type_name(annotation: Any) -> str:
    """A reader's name for a field type: ``int``, ``str | null``, ``list[str]``, ``"a" | "b"``."""
    if annotation is type(None):
        return "null"
    origin = get_origin(annotation)
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
            if value is not None and isinstance(item, annotated_types.BaseMetadata):
                parts.append(f"{symbol} {value}")
    return ", ".join(parts)


def _builtin(path: list[str]) -> Any:
    node: Any = BUILTIN
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return PydanticUndefined
        node = node[part]
    return node


def walk(
    model: type[BaseModel] = Config, prefix: str = "", builtin_path: list[str] | None = None
) -> Iterator[Key]:
    """Every key of ``model``, depth first, in the model's field order. ``builtin_path`` is where
    the model sits in ``BUILTIN`` (None inside lanes, rules and prices, which have no one default)."""
    if model is Config and builtin_path is None:
        builtin_path = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        here = [*(builtin_path or []), name] if builtin_path is not None else None
        default = _builtin(here) if here is not None else PydanticUndefined
        if default is PydanticUndefined:
            default = field.default
        annotation = field.annotation
        kind = type_name(annotation)
        limits = _limits(field.metadata)
        if limits:
            kind += f" ({limits})"
        if path not in DESCRIPTIONS:
            raise KeyError(f"configdoc: no description for {path}; add one to DESCRIPTIONS")
        example = EXAMPLES.get(path)
        yield Key(
            path,
            kind,
            "" if default is PydanticUndefined else _yaml_value(default),
            DESCRIPTIONS[path],
            "" if example is None else _yaml_value(example),
        )
        origin, args = get_origin(annotation), get_args(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from walk(annotation, path + ".", here)
        elif origin is list and isinstance(args[0], type) and issubclass(args[0], BaseModel):
            yield from walk(args[0], path + "[].", None)
        elif origin is dict and isinstance(args[1], type) and issubclass(args[1], BaseModel):
            item = f"{path}.{'<glob>' if name == 'pricing' else '<name>'}"
            yield Key(item, "mapping", "", DESCRIPTIONS[item], "")
            yield from walk(args[1], item + ".", None)


HEADER = """\
# Configuration reference

<!-- Generated by `python -m ccmitm.config.doc` (`make docs`) from the config model in
daemon/config.py; tests/test_configdoc.py fails when this file and the model disagree. -->

Every key of `config.yaml`, with its type, built-in default and meaning. A file only needs what
you change: it is merged over the defaults (mappings merge key by key, lists and scalars replace).
Where the file lives, validation, reloads and lane keys: [configuration.md](configuration.md).
The same keys with comments, ready to copy: [etc/config.yaml](../etc/config.yaml).

`<name>` stands for any lane name, `<glob>` for a model glob, `[]` for each item of a list. An
empty default means the key has none (it is required where it appears). Environment toggles read
at load: `OFFLOAD_PAUSED=1` (paused), `FORCE_HAIKU_TO_ZAI=0` (Haiku rules disabled),
`CCMITM_CONFIG` (the file's path).
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render() -> str:
    sections: list[str] = [HEADER]
    for key in walk():
        if "." not in key.path:
            sections.append(f"\n## `{key.path}`\n\n{key.description}\n")
            if not key.default.startswith("{") or key.path in ("lanes", "pricing"):
                sections.append(f"\nDefault: `{key.default}`.\n")
            if key.example:
                sections.append(f"Example: `{key.example}`.\n")
            sections.append("\n| key | type | default | description |\n|---|---|---|---|\n")
            continue
        default = f"`{_cell(key.default)}`" if key.default else ""
        description = key.description + (f" Example: `{_cell(key.example)}`." if key.example else "")
        sections.append(f"| `{key.path}` | {_cell(key.type)} | {default} | {_cell(description)} |\n")
    return "".join(sections)


def main() -> None:
    print(render(), end="")


if __name__ == "__main__":  # pragma: no cover
    main()
