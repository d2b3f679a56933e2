"""Hand-made usage lines with every field the daemon writes (see ccmitm.logs.usage.UsageRecord),
for the report tests; a test changes only the fields it is about."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from ccmitm.logs.usage import UsageRecord

HAIKU = "claude-haiku-4-5-20251001"
SONNET = "claude-sonnet-4-5"
NOW = datetime.now(UTC)
_counter = iter(range(1_000_000))


def line(**overrides: Any) -> dict[str, Any]:
    """A usage line as the daemon writes it: a Haiku call offloaded to zai by the *haiku* rule."""
    record = UsageRecord(
        ts=(NOW - timedelta(minutes=5)).isoformat(timespec="milliseconds"),
        id=f"flow-{next(_counter)}",
        listener="reverse",
        lane="zai",
        rule="*haiku*",
        reason="rule",
        method="POST",
        path="/v1/messages",
        model=HAIKU,
        upstream_model="glm-4.5-air",
        status=200,
        stream=True,
        ttfb_ms=10.0,
        duration_ms=100.0,
        input_tokens=11,
        output_tokens=7,
        cache_read_input_tokens=0,
        cache_creation_input_tokens=0,
        header_mode="x-api-key",
        http_version="HTTP/1.1",
        upstream_http_version="HTTP/1.1",
        session="s-1",
        error=None,
    )
    data = json.loads(record.to_line())
    assert set(overrides) <= set(data), f"unknown fields {set(overrides) - set(data)}"
    data.update(overrides)
    return data


def anthropic_line(**overrides: Any) -> dict[str, Any]:
    base = {
        "lane": "anthropic",
        "rule": None,
        "reason": "default",
        "model": SONNET,
        "upstream_model": SONNET,
        "header_mode": "passthrough",
        "input_tokens": 101,
        "output_tokens": 17,
    }
    return line(**{**base, **overrides})
