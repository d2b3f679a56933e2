"""The one place that turns a finished call's usage record into measurements.

Both exporters (Prometheus and OTLP) read these, so a label means the same thing in either. Only
values that are safe to show a team leave this module: lane, reason, status class, listener, token
counts, timings, model names (already cleaned by the usage record) and the provider. The session
id is carried for an exporter that the user told to include it; nothing else of the record
(paths, errors, ids) is used.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from ccmitm.config.model import Config
from ccmitm.logs.usage import UsageRecord

#: The lane label of a call ccmitm answered itself (no lane contacted).
NO_LANE = "none"
#: The usage record's token fields and the `type` label each one gets.
TOKEN_TYPES: Mapping[str, str] = {
    "input_tokens": "input",
    "output_tokens": "output",
    "cache_read_input_tokens": "cache_read",
    "cache_creation_input_tokens": "cache_creation",
}
#: ``gen_ai.provider.name`` (OpenTelemetry GenAI conventions) of the providers ccmitm knows.
PROVIDER_NAMES: Mapping[str, str] = {"anthropic": "anthropic", "zai": "z.ai"}


@dataclass(frozen=True)
class Measures:
    lane: str  # NO_LANE for a call answered locally
    reason: str
    status_class: str  # "2xx" … "5xx", or "error" (no response: connect failure, client abort)
    listener: str
    provider: str | None  # None for a call answered locally
    model: str | None  # what the client asked for
    upstream_model: str | None  # what the lane was asked for (after a rewrite)
    session: str | None
    messages_call: bool  # a Messages call (a GenAI "chat" operation), not settings or count_tokens
    failed: bool
    duration_s: float | None
    ttfb_s: float | None
    tokens: tuple[tuple[str, int], ...]  # (type, count) for each count the record has


def provider_names(config: Config) -> dict[str, str]:
    """Each lane's ``gen_ai.provider.name``: a known provider's, else the lane URL's host."""
    names = {}
    for name, lane in config.lanes.items():
        provider = lane.effective_provider
        names[name] = PROVIDER_NAMES.get(provider or "") or urlsplit(lane.url).hostname or name
    return names


def status_class(status: int | None) -> str:
    if status is None or not 100 <= status <= 599:
        return "error"
    return f"{status // 100}xx"


def _is_messages(method: str, path: str) -> bool:
    return method == "POST" and path.rstrip("/").endswith("/v1/messages")


def measure(record: UsageRecord, providers: Mapping[str, str]) -> Measures:
    lane = record.lane
    status = status_class(record.status)
    return Measures(
        lane=lane if lane is not None else NO_LANE,
        reason=record.reason,
        status_class=status,
        listener=record.listener,
        provider=providers.get(lane, lane) if lane is not None else None,
        model=record.model,
        upstream_model=record.upstream_model,
        session=record.session,
        messages_call=_is_messages(record.method, record.path),
        failed=status in ("error", "4xx", "5xx") or record.error is not None,
        duration_s=record.duration_ms / 1000 if record.duration_ms is not None else None,
        ttfb_s=record.ttfb_ms / 1000 if record.ttfb_ms is not None else None,
        tokens=tuple(
            (kind, count)
            for field, kind in TOKEN_TYPES.items()
            if (count := getattr(record, field)) is not None and count >= 0
        ),
    )
