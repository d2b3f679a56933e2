"""The typed configuration: built-in defaults, loading, whole-file validation, env overrides.

One source of truth for defaults (``BUILTIN``); a user's file is deep-merged over it (mappings
merge, lists and scalars replace), then validated as a whole. Every problem is reported at once,
each with its path (``routing.rules[0].lane: unknown lane 'zia'``). Nothing here opens a socket
or reads a secret: lane keys are resolved separately by :func:`resolve_lane_keys`.
"""

from __future__ import annotations

import copy
import ipaddress
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ccmitm import paths

HeaderMode = Literal["x-api-key", "authorization"]

BUILTIN: dict[str, Any] = {
    "proxy": {
        "host": "127.0.0.1",
        "port": 8082,
        "reverse_port": 8083,
        "confdir": "~/.mitmproxy",
        "http2": True,
        "intercept_hosts": ["api.anthropic.com"],
        "drain_s": 30.0,
        "read_timeout_s": 300.0,
        "max_body_bytes": 32 * 1024 * 1024,
    },
    "routing": {
        "paused": False,
        "default_lane": "anthropic",
        "rules": [{"match": "*haiku*", "lane": "zai", "model": "glm-4.5-air"}],
    },
    "lanes": {
        "anthropic": {"url": "https://api.anthropic.com"},
        "zai": {
            "url": "https://api.z.ai/api/anthropic",
            "api_key_env": "ZAI_API_KEY",
            "header_mode": "x-api-key",
        },
    },
    "breaker": {
        "failures": 5,
        "window_s": 60.0,
        "cooldown_s": 30.0,
        "failover": True,
    },
    "logs": {
        "dir": "~/.local/state/ccmitm/logs",
        "rotate_bytes": 10 * 1024 * 1024,
        "keep": 10,
        "daily": True,
    },
    "bundle": {
        "dir": "~/Downloads",
        "prefix": "agentos_tmp_review",
        "schedule": "30 2 * * *",
        "timezone": None,
        "keep": 14,
        "enabled": True,
    },
    "pricing": {},
    "control": {"socket": None},
}

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$"
)
_PREFIX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


def _expand(value: str) -> str:
    return str(paths.expand(value))


class ProxyConfig(_Strict):
    host: str
    port: int = Field(ge=1, le=65535)
    reverse_port: int | None = Field(ge=1, le=65535)
    confdir: str
    http2: bool
    intercept_hosts: list[str] = Field(min_length=1)
    drain_s: float = Field(ge=0, le=3600)
    read_timeout_s: float = Field(gt=0, le=86400)
    max_body_bytes: int = Field(ge=1024)

    @field_validator("host")
    @classmethod
    def _loopback_only(cls, value: str) -> str:
        if value == "localhost":
            return value
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address or 'localhost'") from None
        if not address.is_loopback:
            raise ValueError(f"{value} is not a loopback address; ccmitm listens on loopback only")
        return value

    @field_validator("confdir")
    @classmethod
    def _expand_confdir(cls, value: str) -> str:
        return _expand(value)

    @field_validator("intercept_hosts")
    @classmethod
    def _hostnames(cls, value: list[str]) -> list[str]:
        bad = [host for host in value if not _HOSTNAME.match(host.lower())]
        if bad:
            raise ValueError(f"not a host name: {', '.join(map(repr, bad))}")
        return [host.lower() for host in value]


class RuleConfig(_Strict):
    match: str = Field(min_length=1)
    lane: str = Field(min_length=1)
    model: str | None = None
    enabled: bool = True  # a disabled rule still matches, so the log can say why it did not apply


class RoutingConfig(_Strict):
    paused: bool
    default_lane: str
    rules: list[RuleConfig]


class LaneConfig(_Strict):
    url: str
    api_key_env: str | None = None
    api_key_file: str | None = None
    header_mode: HeaderMode | None = None

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"{value!r}: the scheme must be http or https")
        if not parts.hostname:
            raise ValueError(f"{value!r} has no host")
        if parts.username or parts.password:
            raise ValueError("credentials do not belong in a lane URL; use api_key_env or api_key_file")
        if parts.query or parts.fragment:
            raise ValueError(f"{value!r}: a lane URL takes no query or fragment")
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError as exc:
            raise ValueError(f"{value!r}: {exc}") from None
        return value.rstrip("/")

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.match(value):
            raise ValueError(f"{value!r} is not an environment variable name")
        return value

    @field_validator("api_key_file")
    @classmethod
    def _expand_key_file(cls, value: str | None) -> str | None:
        return None if value is None else _expand(value)

    @property
    def keyed(self) -> bool:
        """A keyed lane sends its own key; an unkeyed lane passes the client's credentials."""
        return bool(self.api_key_env or self.api_key_file)

    @property
    def effective_header_mode(self) -> str:
        if not self.keyed:
            return "passthrough"
        return self.header_mode or "x-api-key"


class BreakerConfig(_Strict):
    failures: int = Field(ge=1, le=1000)
    window_s: float = Field(gt=0, le=86400)
    cooldown_s: float = Field(gt=0, le=86400)
    failover: bool


class LogsConfig(_Strict):
    dir: str
    rotate_bytes: int = Field(ge=1024)
    keep: int = Field(ge=1, le=1000)
    daily: bool

    @field_validator("dir")
    @classmethod
    def _expand_dir(cls, value: str) -> str:
        return _expand(value)


class BundleConfig(_Strict):
    dir: str
    prefix: str
    schedule: str
    timezone: str | None
    keep: int = Field(ge=1, le=1000)
    enabled: bool

    @field_validator("dir")
    @classmethod
    def _expand_dir(cls, value: str) -> str:
        return _expand(value)

    @field_validator("prefix")
    @classmethod
    def _safe_prefix(cls, value: str) -> str:
        if not _PREFIX.match(value):
            raise ValueError("use letters, digits, '.', '_' and '-' only (a file name prefix)")
        return value

    @field_validator("schedule")
    @classmethod
    def _crontab(cls, value: str) -> str:
        from apscheduler.triggers.cron import CronTrigger

        try:
            CronTrigger.from_crontab(value, timezone="UTC")
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a 5-field crontab expression: {exc}") from None
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value


class PriceConfig(_Strict):
    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)


class ControlConfig(_Strict):
    socket: str | None

    @field_validator("socket")
    @classmethod
    def _expand_socket(cls, value: str | None) -> str | None:
        return None if value is None else _expand(value)


class Config(_Strict):
    proxy: ProxyConfig
    routing: RoutingConfig
    lanes: dict[str, LaneConfig] = Field(min_length=1)
    breaker: BreakerConfig
    logs: LogsConfig
    bundle: BundleConfig
    pricing: dict[str, PriceConfig]
    control: ControlConfig

    @property
    def default_lane(self) -> LaneConfig:
        return self.lanes[self.routing.default_lane]

    def socket_path(self, environ: Mapping[str, str] = os.environ) -> Path:
        if self.control.socket:
            return Path(self.control.socket)
        return paths.runtime_dir(environ) / "control.sock"

    def redacted(self) -> dict[str, Any]:
        """The config as plain data. It holds no secret: keys are never part of the model."""
        return self.model_dump(mode="json")


@dataclass(frozen=True)
class Problem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(Exception):
    """The file is not a valid config. ``problems`` lists every error found, each with its path."""

    def __init__(self, source: str, problems: list[Problem]):
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(map(str, problems)))


@dataclass(frozen=True)
class LoadedConfig:
    """A validated config plus where it came from and which env overrides applied."""

    config: Config
    source: str  # the file path, or "built-in defaults"
    loaded_at: datetime
    overrides: tuple[str, ...] = ()


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


def _relation_problems(raw: Mapping[str, Any]) -> list[Problem]:
    """Checks that span fields. Runs on the merged raw data so they show up even beside type errors."""
    problems: list[Problem] = []
    lanes = raw.get("lanes") if isinstance(raw.get("lanes"), Mapping) else {}
    routing = raw.get("routing") if isinstance(raw.get("routing"), Mapping) else {}
    proxy = raw.get("proxy") if isinstance(raw.get("proxy"), Mapping) else {}

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
    merged = deep_merge(BUILTIN, raw)
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
    """The pilot's environment toggles, applied at load: FORCE_HAIKU_TO_ZAI=0, OFFLOAD_PAUSED=1."""
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


def load(path: Path, environ: Mapping[str, str] = os.environ) -> LoadedConfig:
    """Load the file at ``path`` (built-in defaults when it does not exist) and apply env overrides."""
    if path.exists():
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(str(path), [Problem("", f"cannot read: {exc}")]) from None
        config = validate(parse_yaml(text, str(path)), str(path))
        source = str(path)
    else:
        config = validate({}, "built-in defaults")
        source = "built-in defaults"
    config, overrides = apply_env_overrides(config, environ)
    return LoadedConfig(config, source, datetime.now(UTC), overrides)


def check_file(path: Path) -> list[Problem]:
    """Every problem in the file at ``path`` (empty when valid). Opens no socket."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return [Problem("", f"cannot read {path}: {exc}")]
    try:
        validate(parse_yaml(text, str(path)), str(path))
    except ConfigError as exc:
        return exc.problems
    return []


@dataclass(frozen=True)
class LaneKey:
    """A lane's resolved key, or why it has none. ``value`` must never reach a log or a reply."""

    value: str | None
    problem: str | None = None

    @property
    def available(self) -> bool:
        return self.value is not None


def _read_key_file(path: Path) -> LaneKey:
    try:
        info = path.stat()
    except OSError as exc:
        return LaneKey(None, f"api_key_file {path}: {exc.strerror}")
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        return LaneKey(None, f"api_key_file {path} is readable by group or others; run chmod 600 on it")
    try:
        first_line = path.read_text(encoding="utf-8").strip().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        return LaneKey(None, f"api_key_file {path}: cannot read ({exc})")
    key = first_line[0].strip() if first_line else ""
    if not key:
        return LaneKey(None, f"api_key_file {path} is empty")
    return LaneKey(key)


def resolve_lane_key(lane: LaneConfig, environ: Mapping[str, str] = os.environ) -> LaneKey | None:
    """The key of a keyed lane (env var first, then file); None for a pass-through lane."""
    if not lane.keyed:
        return None
    if lane.api_key_env:
        value = environ.get(lane.api_key_env, "").strip()
        if value:
            return LaneKey(value)
        if not lane.api_key_file:
            return LaneKey(None, f"{lane.api_key_env} is not set")
    assert lane.api_key_file is not None
    return _read_key_file(Path(lane.api_key_file))


def resolve_lane_keys(config: Config, environ: Mapping[str, str] = os.environ) -> dict[str, LaneKey]:
    keys: dict[str, LaneKey] = {}
    for name, lane in config.lanes.items():
        key = resolve_lane_key(lane, environ)
        if key is not None:
            keys[name] = key
    return keys
