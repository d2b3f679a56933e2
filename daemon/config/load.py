"""Loading a config: parse the YAML once, merge it over the built-in defaults, validate it whole.

A user's file is deep-merged over :func:`~ccmitm.config.model.builtin_defaults` (mappings merge,
lists and scalars replace), then validated as a whole. Every problem is reported at once, each with
its path (``routing.rules[0].lane: unknown lane 'zia'``), never with the offending value. Nothing
here opens a socket or reads a secret: lane keys are resolved by :mod:`ccmitm.config.keys`.

The file itself is read defensively, because whatever sits at the config path is read by the
running daemon on every save and by every ``ccctl``: only a regular file (a FIFO would block the
reader forever), at most :data:`MAX_CONFIG_BYTES`, and every way reading or parsing can fail (no
permission, not UTF-8, nested too deeply for the parser, an alias bomb) is a :class:`ConfigError`
naming the path, never a traceback.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from pydantic import ValidationError

from ccmitm import paths
from ccmitm.config.errors import ConfigError, ConfigMissing, Problem
from ccmitm.config.model import Config, builtin_defaults
from ccmitm.config.presets import apply_presets, fill_rule_models

BUILTIN_SOURCE = "built-in defaults"

#: A config is a few kilobytes; anything past this is a mistake or an attack, refused before parsing
#: (a 50 MB file took the parser many seconds of CPU on every save).
MAX_CONFIG_BYTES = paths.MAX_CONFIG_BYTES
#: Values in the parsed file with YAML aliases expanded: a few kilobytes of ``&a [*a, *a, ...]``
#: would otherwise expand into billions of values for the validator to walk.
MAX_CONFIG_VALUES = 100_000
#: How long the daemon waits for a reload's read, parse and validation (run in a worker thread).
LOAD_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class LoadedConfig:
    """A validated config plus where it came from and which env overrides applied."""

    config: Config
    source: str  # the file path, or "built-in defaults"
    loaded_at: datetime
    overrides: tuple[str, ...] = ()
    #: The file's config before the environment overrides: what is saved as the last good config.
    validated: Config | None = None
    #: sha256 of the file's bytes (None for the built-in defaults): `ccctl env` compares it with
    #: the file on disk to know the daemon's answer describes that file, without validating it.
    digest: str | None = None


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _section(raw: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = raw.get(name)
    return value if isinstance(value, Mapping) else {}


def _relation_problems(raw: Mapping[str, Any]) -> list[Problem]:
    """Checks that span fields. Runs on the merged raw data so they show up even beside type errors."""
    problems: list[Problem] = []
    lanes = _section(raw, "lanes")
    routing = _section(raw, "routing")
    proxy = _section(raw, "proxy")

    def is_keyed(lane: Any) -> bool:
        return isinstance(lane, Mapping) and bool(lane.get("api_key_env") or lane.get("api_key_file"))

    for name, lane in lanes.items():
        if not isinstance(lane, Mapping):
            continue
        if lane.get("header_mode") is not None and not is_keyed(lane):
            problems.append(
                Problem(
                    f"lanes.{_safe_key(name)}.header_mode",
                    "only a keyed lane (api_key_env or api_key_file) has a header mode; "
                    "an unkeyed lane passes the client's own credentials",
                )
            )

    default_lane = routing.get("default_lane")
    if isinstance(default_lane, str):
        if default_lane not in lanes:
            problems.append(Problem("routing.default_lane", f"unknown lane {_named(default_lane)}"))
        elif is_keyed(lanes[default_lane]):
            problems.append(
                Problem(
                    "routing.default_lane",
                    f"lane {_named(default_lane)} is keyed; the default lane must pass the client's "
                    "own credentials (it is where traffic falls back to)",
                )
            )

    rules = routing.get("rules")
    if isinstance(rules, list):
        for index, rule in enumerate(rules):
            lane = rule.get("lane") if isinstance(rule, Mapping) else None
            if isinstance(lane, str) and lane not in lanes:
                problems.append(Problem(f"routing.rules[{index}].lane", f"unknown lane {_named(lane)}"))

    port, reverse_port = proxy.get("port"), proxy.get("reverse_port")
    if isinstance(port, int) and port == reverse_port:
        problems.append(Problem("proxy.reverse_port", f"same as proxy.port ({port})"))
    return problems


def shown_value(value: str) -> str:
    """How a config value may appear in an error: a URL without its userinfo, query and fragment
    (where a pasted key would sit) and with long path segments elided; anything else not at all
    (it may be the key itself, pasted into ``api_key_env``)."""
    try:
        parts = urlsplit(value)
        host = parts.hostname
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "the value"
    if not (parts.scheme and host):
        return "the value"
    host = f"[{host}]" if ":" in host else host
    path = "/".join(segment if len(segment) <= 24 else "..." for segment in parts.path.split("/"))
    return repr(f"{parts.scheme}://{host}{port}{path}")


def _without_input(message: str, value: Any) -> str:
    """``message`` with every spelling of the offending ``value`` replaced (see :func:`shown_value`).

    Validators and pydantic itself write the input into their messages; a value in the wrong key
    is the one place a secret gets into a config, so no message repeats it."""
    values = [value] if isinstance(value, str) else []
    if isinstance(value, (list, tuple)):
        values = [item for item in value if isinstance(item, str)]
    spellings = {}
    for text in values:
        if text:
            spellings[repr(text)] = spellings[text] = shown_value(text)
    if not spellings:
        return message
    # One pass, longest spelling first: a replacement is never searched again.
    pattern = re.compile("|".join(re.escape(text) for text in sorted(spellings, key=len, reverse=True)))
    return pattern.sub(lambda match: spellings[match.group(0)], message)


_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_.*?\[\]/:@-]{1,40}$")


def _safe_key(part: Any, noun: str = "key") -> str:
    """A key (or lane name) of the user's file as shown in an error: one that is not a plain
    short word or glob (an unknown key could be a pasted secret) is shown by its length only."""
    text = str(part)
    if _PLAIN_KEY.match(text) and not text.lower().startswith("sk-"):
        return text
    return f"<a {len(text)}-character {noun}>"


def _named(name: str) -> str:
    """A lane name from the user's file, quoted, as safely as :func:`_safe_key` shows a key."""
    safe = _safe_key(name, "name")
    return repr(name) if safe == name else safe


def _format_loc(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            name = _safe_key(part)
            text += f".{name}" if text else name
    return text


def validate(raw: Any, source: str = "<config>") -> Config:
    """Validate a user mapping (merged over the built-in defaults); raise ConfigError with all problems."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(source, [Problem("", "the top level must be a mapping of sections")])
    problems: list[Problem] = []
    config: Config | None = None
    try:
        # Presets expand in the user's own data (so they override the built-in lane, never the
        # user), then rules to a preset lane without a model get the preset's Haiku model.
        merged = fill_rule_models(deep_merge(builtin_defaults(), apply_presets(raw)))
        try:
            config = Config.model_validate(merged)
        except ValidationError as exc:
            for error in exc.errors():
                message = error["msg"].removeprefix("Value error, ")
                if error["type"] == "extra_forbidden":
                    message = "unknown key"
                problems.append(
                    Problem(_format_loc(error["loc"]), _without_input(message, error.get("input")))
                )
        problems.extend(_relation_problems(merged))
    except RecursionError:
        raise ConfigError(source, [Problem("", "nested too deeply to be a config")]) from None
    if problems or config is None:
        raise ConfigError(source, sorted(problems, key=lambda p: p.path))
    return config


def _count_values(data: Any, source: str) -> None:
    """Refuse a parsed file with more than MAX_CONFIG_VALUES values once aliases are expanded, or
    an alias that contains itself. Each shared node is sized once, so this never expands them."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: Any) -> int:
        if not isinstance(node, (dict, list)):
            return 1
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise ConfigError(source, [Problem("", "invalid YAML: an alias refers to itself")])
        open_nodes.add(key)
        children = list(node.items()) if isinstance(node, dict) else [(None, item) for item in node]
        total = 1 + sum(size(value) for _, value in children)
        open_nodes.discard(key)
        sizes[key] = total
        return total

    if size(data) > MAX_CONFIG_VALUES:
        raise ConfigError(
            source,
            [Problem("", f"more than {MAX_CONFIG_VALUES} values once YAML aliases are expanded")],
        )


def parse_yaml(text: str, source: str) -> Any:
    """The file's data; a ConfigError that says where the YAML is broken, without quoting it."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        # The problem ("mapping values are not allowed here"), never str(exc): that quotes the line.
        problem = getattr(exc, "problem", None) or "not parseable"
        problem = problem.split("'", 1)[0].strip() if "alias" in problem else problem
        raise ConfigError(source, [Problem("", f"invalid YAML: {where}{problem}")]) from None
    except RecursionError:
        raise ConfigError(source, [Problem("", "nested too deeply to be a config")]) from None
    try:
        _count_values(data, source)
    except RecursionError:
        raise ConfigError(source, [Problem("", "nested too deeply to be a config")]) from None
    return data


def apply_env_overrides(config: Config, environ: Mapping[str, str]) -> tuple[Config, tuple[str, ...]]:
    """The environment toggles, applied at load: FORCE_HAIKU_TO_ZAI=0, OFFLOAD_PAUSED=1."""
    applied: list[str] = []
    routing = config.routing
    if environ.get("FORCE_HAIKU_TO_ZAI", "").strip() == "0":
        rules = [
            rule.model_copy(update={"enabled": False}) if "haiku" in rule.match.lower() else rule
            for rule in routing.rules
        ]
        routing = routing.model_copy(update={"rules": rules})
        applied.append("FORCE_HAIKU_TO_ZAI=0 (Haiku rules disabled)")
    if environ.get("OFFLOAD_PAUSED", "").strip().lower() in ("1", "true", "yes", "on"):
        routing = routing.model_copy(update={"paused": True})
        applied.append("OFFLOAD_PAUSED=1 (paused)")
    if applied:
        config = config.model_copy(update={"routing": routing})
    return config, tuple(applied)


def _unreadable(source: str, exc: OSError | UnicodeDecodeError) -> ConfigError:
    if isinstance(exc, UnicodeDecodeError):
        return ConfigError(source, [Problem("", f"cannot read: not UTF-8 text (byte {exc.start})")])
    return ConfigError(source, [Problem("", f"cannot read: {exc.strerror or type(exc).__name__}")])


def read_bytes(path: Path) -> bytes:
    """The bytes of the config file at ``path``; ConfigMissing when nothing is there, ConfigError
    for anything else that is not a readable regular file of at most MAX_CONFIG_BYTES."""
    source = str(path)
    try:
        return paths.read_small_file(path, MAX_CONFIG_BYTES)
    except FileNotFoundError:
        if path.is_symlink():
            raise ConfigError(source, [Problem("", "cannot read: a symlink to a missing file")]) from None
        raise ConfigMissing(source) from None
    except paths.NotRegularFile:
        raise ConfigError(source, [Problem("", "cannot read: not a regular file")]) from None
    except paths.FileTooLarge:
        limit = f"{MAX_CONFIG_BYTES // 1024 // 1024} MiB"
        raise ConfigError(source, [Problem("", f"larger than {limit}, the limit for a config")]) from None
    except OSError as exc:
        raise _unreadable(source, exc) from None


def _decode(data: bytes, source: str) -> str:
    try:
        # Universal newlines, as Path.read_text would give.
        return data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
    except UnicodeDecodeError as exc:
        raise _unreadable(source, exc) from None


def _read(path: Path) -> tuple[Config, str]:
    """The config in the file at ``path``, validated, and the digest of the very bytes parsed."""
    data = read_bytes(path)
    source = str(path)
    return validate(parse_yaml(_decode(data, source), source), source), paths.file_digest(data)


def read_file(path: Path) -> Config:
    """The config in the file at ``path``, validated; ConfigError (every problem) otherwise."""
    return _read(path)[0]


def load(path: Path, environ: Mapping[str, str] = os.environ, missing_ok: bool = True) -> LoadedConfig:
    """Load the file at ``path`` and apply env overrides. No file there means the built-in
    defaults, or ConfigMissing with ``missing_ok=False`` (a running daemon keeps what it serves)."""
    digest: str | None = None
    try:
        config, digest = _read(path)
        source = str(path)
    except ConfigMissing:
        if not missing_ok:
            raise
        config = validate({}, BUILTIN_SOURCE)
        source = BUILTIN_SOURCE
    effective, overrides = apply_env_overrides(config, environ)
    return LoadedConfig(effective, source, datetime.now(UTC), overrides, validated=config, digest=digest)


def check_file(path: Path) -> ConfigError | None:
    """What is wrong with the file at ``path`` (None when it is valid). Opens no socket."""
    try:
        read_file(path)
    except ConfigError as exc:
        return exc
    return None
