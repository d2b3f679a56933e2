"""Loading a config: parse the YAML once, merge it over the built-in defaults, validate it whole.

A user's file is deep-merged over :func:`~ccmitm.config.model.builtin_defaults` (mappings merge,
lists and scalars replace), then validated as a whole. Every problem is reported at once, each with
its path (``routing.rules[0].lane: unknown lane 'zia'``), never with the offending value. Nothing
here opens a socket or reads a secret: lane keys are resolved by :mod:`ccmitm.config.keys`.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ccmitm import paths
from ccmitm.config.errors import ConfigError, Problem
from ccmitm.config.model import Config, builtin_defaults
from ccmitm.config.presets import apply_presets, fill_rule_models

BUILTIN_SOURCE = "built-in defaults"


@dataclass(frozen=True)
class LoadedConfig:
    """A validated config plus where it came from and which env overrides applied."""

    config: Config
    source: str  # the file path, or "built-in defaults"
    loaded_at: datetime
    overrides: tuple[str, ...] = ()
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


def _format_loc(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


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
                    f"lanes.{name}.header_mode",
                    "only a keyed lane (api_key_env or api_key_file) has a header mode; "
                    "an unkeyed lane passes the client's own credentials",
                )
            )

    default_lane = routing.get("default_lane")
    if isinstance(default_lane, str):
        if default_lane not in lanes:
            problems.append(Problem("routing.default_lane", f"unknown lane {default_lane!r}"))
        elif is_keyed(lanes[default_lane]):
            problems.append(
                Problem(
                    "routing.default_lane",
                    f"lane {default_lane!r} is keyed; the default lane must pass the client's "
                    "own credentials (it is where traffic falls back to)",
                )
            )

    rules = routing.get("rules")
    if isinstance(rules, list):
        for index, rule in enumerate(rules):
            lane = rule.get("lane") if isinstance(rule, Mapping) else None
            if isinstance(lane, str) and lane not in lanes:
                problems.append(Problem(f"routing.rules[{index}].lane", f"unknown lane {lane!r}"))

    port, reverse_port = proxy.get("port"), proxy.get("reverse_port")
    if isinstance(port, int) and port == reverse_port:
        problems.append(Problem("proxy.reverse_port", f"same as proxy.port ({port})"))
    return problems


def validate(raw: Any, source: str = "<config>") -> Config:
    """Validate a user mapping (merged over the built-in defaults); raise ConfigError with all problems."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(source, [Problem("", "the top level must be a mapping of sections")])
    # Presets expand in the user's own data (so they override the built-in lane, never the user),
    # then rules to a preset lane without a model get the preset's Haiku model.
    merged = fill_rule_models(deep_merge(builtin_defaults(), apply_presets(raw)))
    problems: list[Problem] = []
    config: Config | None = None
    try:
        config = Config.model_validate(merged)
    except ValidationError as exc:
        for error in exc.errors():
            message = error["msg"].removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                message = "unknown key"
            problems.append(Problem(_format_loc(error["loc"]), message))
    problems.extend(_relation_problems(merged))
    if problems or config is None:
        raise ConfigError(source, sorted(problems, key=lambda p: p.path))
    return config


def parse_yaml(text: str, source: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(source, [Problem("", f"invalid YAML: {where}{problem}")]) from None


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


def _read(path: Path) -> tuple[Config, str]:
    """The config in the file at ``path``, validated, and the digest of the very bytes parsed."""
    try:
        data = path.read_bytes()
        # Universal newlines, as Path.read_text would give.
        text = data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ConfigError(str(path), [Problem("", f"cannot read: {reason}")]) from None
    return validate(parse_yaml(text, str(path)), str(path)), paths.file_digest(data)


def read_file(path: Path) -> Config:
    """The config in the file at ``path``, validated; ConfigError (every problem) otherwise."""
    return _read(path)[0]


def load(path: Path, environ: Mapping[str, str] = os.environ) -> LoadedConfig:
    """Load the file at ``path`` (built-in defaults when it does not exist) and apply env overrides."""
    digest: str | None = None
    if path.exists():
        config, digest = _read(path)
        source = str(path)
    else:
        config = validate({}, BUILTIN_SOURCE)
        source = BUILTIN_SOURCE
    config, overrides = apply_env_overrides(config, environ)
    return LoadedConfig(config, source, datetime.now(UTC), overrides, digest)


def check_file(path: Path) -> ConfigError | None:
    """What is wrong with the file at ``path`` (None when it is valid). Opens no socket."""
    try:
        read_file(path)
    except ConfigError as exc:
        return exc
    return None
