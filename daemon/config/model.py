"""The config schema: every key's type, limits, default and description, declared once.

This module is the single source of the configuration's shape. ``docs/CONFIG.md`` and the commented
``etc/config.yaml`` are generated from it (:mod:`ccmitm.config.doc`, ``make docs``), and a test
fails when either is stale, so a key cannot be added, renamed or re-defaulted without its
documentation following.

The models are frozen. A user's file is merged over :func:`builtin_defaults` and validated as a
whole by :mod:`ccmitm.config.load`; defaults themselves are not validated here (they are plain
data until a load validates them), which is why ``~`` in a default stays unexpanded until then.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from ccmitm import paths
from ccmitm.config.presets import PresetName, Provider, detect_provider

HeaderMode = Literal["x-api-key", "authorization"]

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$"
)
_PREFIX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class _Strict(BaseModel):
    # Unknown keys are errors (a typo must not be silently ignored); values are never changed
    # after validation, so a config can be shared by every request that started with it.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


def _expand(value: str) -> str:
    return str(paths.expand(value))


#: A path in the config: ``~`` is expanded against $HOME when the file is loaded.
UserPath = Annotated[str, AfterValidator(_expand)]


class ProxyConfig(_Strict):
    host: str = Field(
        "127.0.0.1",
        description='Address both listeners bind to: a loopback address or "localhost" (anything else is refused).',
    )
    port: int = Field(
        8082,
        ge=1,
        le=65535,
        description="Intercepting listener, for `HTTPS_PROXY=http://127.0.0.1:8082` (needs the CA).",
    )
    reverse_port: int | None = Field(
        8083,
        ge=1,
        le=65535,
        description="Reverse listener, for `ANTHROPIC_BASE_URL=http://127.0.0.1:8083`; `null` turns it off.",
    )
    confdir: UserPath = Field(
        "~/.mitmproxy",
        description="mitmproxy's directory: the CA (`mitmproxy-ca-cert.pem` is what `NODE_EXTRA_CA_CERTS` names).",
    )
    http2: bool = Field(
        True,
        description="Offer HTTP/2 to clients and upstreams; `false` = HTTP/1.1 only (the cure for HTTP/2 jitter).",
    )
    intercept_hosts: list[str] = Field(
        default_factory=lambda: ["api.anthropic.com"],
        min_length=1,
        description="Hosts the intercepting listener decrypts; every other CONNECT is tunnelled untouched.",
    )
    drain_s: float = Field(
        30.0, ge=0, le=3600, description="On stop, in-flight streams get this many seconds to finish."
    )
    read_timeout_s: float = Field(
        300.0,
        gt=0,
        le=86400,
        description="An upstream that sends nothing for this many seconds is cut off (logged as a stall).",
    )
    max_body_bytes: int = Field(
        32 * 1024 * 1024,
        ge=1024,
        description="Larger request bodies are answered with an Anthropic-shaped 413.",
    )
    upstream_proxy: str | None = Field(
        None,
        description="An HTTP forward proxy ccmitmd reaches its lanes through (e.g. a corporate "
        "`http://proxy.example:3128`, the `HTTPS_PROXY` you had before wiring); `null` = direct.",
        examples=["http://proxy.example:3128"],
    )

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

    @field_validator("upstream_proxy")
    @classmethod
    def _proxy_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{value!r}: use http://host:port (or https://host:port)")
        if parts.username or parts.password:
            raise ValueError("proxy credentials in the URL are not supported (they would sit in the config)")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(f"{value!r}: a proxy URL is just scheme://host:port")
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError as exc:
            raise ValueError(f"{value!r}: {exc}") from None
        return value.rstrip("/")

    @field_validator("intercept_hosts")
    @classmethod
    def _hostnames(cls, value: list[str]) -> list[str]:
        bad = [host for host in value if not _HOSTNAME.match(host.lower())]
        if bad:
            raise ValueError(f"not a host name: {', '.join(map(repr, bad))}")
        return [host.lower() for host in value]


class RuleConfig(_Strict):
    match: str = Field(
        min_length=1, description="Case-insensitive glob on the request's model, e.g. `*haiku*`."
    )
    lane: str = Field(
        min_length=1, description="The lane a matching request goes to (must exist under `lanes`)."
    )
    model: str | None = Field(
        None,
        description="Rewrite the model for that lane (e.g. `glm-4.5-air`); `null` keeps the client's model.",
    )
    # A disabled rule still matches, so the usage log can say why it did not apply.
    enabled: bool = Field(
        True, description="`false` keeps the rule matching but not applied (logged as `rule_disabled`)."
    )


class RoutingConfig(_Strict):
    paused: bool = Field(
        False,
        description="Kill-switch: `true` sends everything to `default_lane` (`ccctl pause`/`resume` override it).",
    )
    default_lane: str = Field(
        "anthropic",
        description="Where everything else, and every fallback, goes; must be a pass-through (unkeyed) lane.",
    )
    rules: list[RuleConfig] = Field(
        default_factory=lambda: [RuleConfig(match="*haiku*", lane="zai", model="glm-4.5-air")],
        description="First match wins; no match means `default_lane`.",
    )


class LaneConfig(_Strict):
    """One upstream. Without a key setting it is pass-through: the client's credentials go as sent."""

    url: str = Field(
        description="Base URL, http or https; its path prefix is kept (`<url>/v1/messages`); "
        "a `preset` fills it in.",
        examples=["https://api.z.ai/api/anthropic"],
    )
    api_key_env: str | None = Field(
        None, description="Environment variable holding this lane's key (makes the lane keyed)."
    )
    api_key_file: UserPath | None = Field(
        None,
        description="File holding this lane's key, chmod 600 (alternative to `api_key_env`).",
        examples=["~/.config/ccmitm/zai.key"],
    )
    header_mode: HeaderMode | None = Field(
        None,
        description="How a keyed lane's key is sent: `x-api-key`, or `authorization` (Bearer); "
        "`null` = `x-api-key`.",
    )
    preset: PresetName | None = Field(
        None,
        description="Fill in a known upstream: `zai` (https://api.z.ai/api/anthropic) or `zai-cn` "
        "(https://open.bigmodel.cn/api/anthropic) set `url`, `api_key_env: ZAI_API_KEY` (unless a key "
        "source is set), `header_mode: x-api-key` and `provider: zai`, and a rule to this lane without a "
        "`model` key rewrites to `glm-4.5-air`. Keys you set yourself win over the preset.",
        examples=["zai-cn"],
    )
    provider: Provider | None = Field(
        None,
        description="Who runs this upstream: `anthropic` or `zai` (Z.AI: enables the quota meter); "
        "`null` = detected from the URL (a z.ai or bigmodel.cn host is `zai`).",
    )
    quota_poll_s: float | None = Field(
        300.0,
        ge=0.5,
        le=86400,
        description="For a `zai` lane with a key: seconds between quota meter polls "
        "(`GET <origin>/api/monitor/usage/quota/limit`), made in the background only while the lane "
        "carried traffic in the last hour (and once soon after start); `null` = no meter.",
    )

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

    @property
    def keyed(self) -> bool:
        """A keyed lane sends its own key; an unkeyed lane passes the client's credentials."""
        return bool(self.api_key_env or self.api_key_file)

    @property
    def effective_header_mode(self) -> str:
        if not self.keyed:
            return "passthrough"
        return self.header_mode or "x-api-key"

    @property
    def effective_provider(self) -> str | None:
        """The provider as set, else as the URL's host says (None: unknown, treated as Anthropic-like)."""
        return self.provider or detect_provider(urlsplit(self.url).hostname)


def _builtin_lanes() -> dict[str, LaneConfig]:
    return {
        "anthropic": LaneConfig(url="https://api.anthropic.com"),
        "zai": LaneConfig(
            url="https://api.z.ai/api/anthropic",
            api_key_env="ZAI_API_KEY",
            header_mode="x-api-key",
        ),
    }


class BreakerConfig(_Strict):
    failures: int = Field(
        5, ge=1, le=1000, description="This many failures (connect error, 429, 5xx, 401/403) ..."
    )
    window_s: float = Field(
        60.0, gt=0, le=86400, description="... within this many seconds open the lane's breaker."
    )
    cooldown_s: float = Field(
        30.0,
        gt=0,
        le=86400,
        description="Seconds the lane's traffic goes to `default_lane` (or `Retry-After`, if longer).",
    )
    failover: bool = Field(
        True, description="Retry a refused offload call once on `default_lane`, before the client saw a byte."
    )


class LogsConfig(_Strict):
    dir: UserPath = Field(
        "~/.local/state/ccmitm/logs",
        description="Directory of `usage.jsonl` and its rotated `.gz` files; a change applies live.",
    )
    rotate_bytes: int = Field(
        10 * 1024 * 1024, ge=1024, description="Rotate when the file would grow past this many bytes ..."
    )
    keep: int = Field(10, ge=1, le=1000, description="... keeping this many rotated files.")
    daily: bool = Field(True, description="Also rotate once a day (local time).")


class BundleConfig(_Strict):
    dir: UserPath = Field(
        "~/Downloads", description="Where bundles are written: `<dir>/<prefix>-YYYYmmdd-HHMMSS/` and `.tgz`."
    )
    prefix: str = Field(
        "agentos_tmp_review", description="File name prefix of bundles (letters, digits, `.`, `_`, `-`)."
    )
    schedule: str = Field(
        "30 2 * * *",
        description="When the nightly run happens: a 5-field crontab (minute hour day month weekday).",
    )
    timezone: str | None = Field(
        None,
        description="Time zone of the schedule; `null` = this machine's local zone.",
        examples=["Europe/Berlin"],
    )
    keep: int = Field(
        14,
        ge=1,
        le=1000,
        description="Newest bundles kept; older ones ccmitm made are removed (nothing else is touched).",
    )
    enabled: bool = Field(True, description="`false`: no nightly run (`ccctl bundle` still works).")

    @field_validator("prefix")
    @classmethod
    def _safe_prefix(cls, value: str) -> str:
        if not _PREFIX.match(value):
            raise ValueError("use letters, digits, '.', '_' and '-' only (a file name prefix)")
        return value

    @field_validator("schedule")
    @classmethod
    def _crontab(cls, value: str) -> str:
        from apscheduler.triggers.cron import CronTrigger  # only a config load pays for it

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
    """A model glob, e.g. `"*haiku*"`."""

    input_per_mtok: float = Field(ge=0, description="Price of one million input tokens.")
    output_per_mtok: float = Field(ge=0, description="Price of one million output tokens.")


class ControlConfig(_Strict):
    socket: UserPath | None = Field(
        None,
        description="Socket path; `null` = `$XDG_RUNTIME_DIR/ccmitm/control.sock` (else the state dir).",
        examples=["~/.local/state/ccmitm/control.sock"],
    )


class WiringConfig(_Strict):
    when_down: Literal["start", "stock", "fail"] = Field(
        "start",
        description="What a wired shell's `claude` (and `ccctl run`) does when ccmitmd does not answer: "
        "`start` it (the service if installed, else `ccctl start`), run that call `stock` (a warning on "
        "stderr), or `fail` with the fix.",
    )
    start_timeout_s: float = Field(
        15.0,
        gt=0,
        le=300,
        description="With `when_down: start`: seconds to wait until the started daemon listens.",
    )


def parse_listen(value: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:9464`` for IPv6) as (host, port); ValueError saying what is wrong."""
    host, sep, port_text = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"{value!r}: use host:port, e.g. 127.0.0.1:9464")
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"{value!r}: the host must be an IP address or 'localhost'") from None
    return host, int(port_text)


def _is_loopback(host: str) -> bool:
    return host == "localhost" or ipaddress.ip_address(host).is_loopback


class MetricsConfig(_Strict):
    # Declared before `listen` so that the check of `listen` can see it.
    allow_remote: bool = Field(
        False,
        description="Let `listen` be a non-loopback address (e.g. `0.0.0.0:9464` for a team's Prometheus). "
        "`/metrics` shows counts only, never content or credentials, but anyone who reaches the port reads them.",
    )
    listen: str | None = Field(
        None,
        description="Serve Prometheus `/metrics` on this `host:port` (loopback unless `allow_remote`); "
        "`null` = off. A change applies live.",
        examples=["127.0.0.1:9464"],
    )

    @field_validator("listen", mode="before")
    @classmethod
    def _empty_is_off(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("listen")
    @classmethod
    def _address(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        host, _ = parse_listen(value.strip())
        if not _is_loopback(host) and not info.data.get("allow_remote", False):
            raise ValueError(
                f"{host} is not a loopback address; set metrics.allow_remote: true to serve metrics beyond this machine"
            )
        return value.strip()

    @property
    def address(self) -> tuple[str, int] | None:
        return parse_listen(self.listen) if self.listen else None


class TelemetryConfig(_Strict):
    otlp: bool = Field(
        False,
        description="Export metrics over OTLP/HTTP (protobuf) to the collector the standard `OTEL_EXPORTER_OTLP_*` "
        "variables name; `OTEL_METRICS_EXPORTER=otlp` in ccmitmd's environment turns it on too. A change applies live.",
    )
    include_session: bool = Field(
        False,
        description="Add Claude Code's session id (`session.id`) to the OTLP points. Off by default: it "
        "identifies a conversation, and every session becomes a new series.",
    )


class Config(_Strict):
    proxy: ProxyConfig = Field(
        default_factory=ProxyConfig, description="The two listeners, the CA and the limits of the data path."
    )
    routing: RoutingConfig = Field(
        default_factory=RoutingConfig, description="Which lane each request goes to."
    )
    lanes: dict[str, LaneConfig] = Field(
        default_factory=_builtin_lanes,
        min_length=1,
        description="Upstreams by name. Built in: `anthropic` (pass-through) and `zai` (keyed).",
    )
    breaker: BreakerConfig = Field(
        default_factory=BreakerConfig,
        description="The offload lanes' circuit breaker and the single failover.",
    )
    logs: LogsConfig = Field(
        default_factory=LogsConfig, description="The usage log (one JSON line per call)."
    )
    bundle: BundleConfig = Field(
        default_factory=BundleConfig,
        description="The nightly review bundle (usage, metrics, verify, REPORT.html, config, daemon log).",
    )
    pricing: dict[str, PriceConfig] = Field(
        default_factory=dict,
        description="Optional prices per model glob, for the savings estimate of `ccctl summarize`.",
        examples=[{"*haiku*": {"input_per_mtok": 1.0, "output_per_mtok": 5.0}}],
    )
    control: ControlConfig = Field(
        default_factory=ControlConfig, description="The control socket `ccctl` talks to."
    )
    wiring: WiringConfig = Field(
        default_factory=WiringConfig,
        description="Wired shells (`ccctl env`, `ccsub`) and `ccctl run`: what happens when ccmitmd is down.",
    )

    metrics: MetricsConfig = Field(
        default_factory=MetricsConfig, description="The Prometheus `/metrics` endpoint (off by default)."
    )
    telemetry: TelemetryConfig = Field(
        default_factory=TelemetryConfig,
        description="OpenTelemetry export (OTLP) of the same measurements, for a team's collector.",
    )

    @property
    def default_lane(self) -> LaneConfig:
        return self.lanes[self.routing.default_lane]

    def socket_path(self, environ: Mapping[str, str] = os.environ) -> Path:
        if self.control.socket:
            return Path(self.control.socket)
        return paths.default_socket_path(environ)

    def redacted(self) -> dict[str, Any]:
        """The config as plain data. It holds no secret: keys are never part of the model."""
        return self.model_dump(mode="json")


def builtin_defaults() -> dict[str, Any]:
    """The built-in config as plain data (a new copy each call): what a user's file is merged over.

    Made from the model's own defaults, unvalidated (``~`` is still unexpanded), so it is exactly
    what an empty file means."""
    return Config().model_dump(mode="json")
