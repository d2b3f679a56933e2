"""A usage record's measurements: the labels both exporters use, the same for every record shape."""

from __future__ import annotations

from typing import Any

import pytest

from ccmitm.config.load import validate
from ccmitm.logs.usage import UsageRecord
from ccmitm.telemetry.measures import NO_LANE, measure, provider_names, status_class
from tests.reports.lines import anthropic_line, line


def record(**overrides: Any) -> UsageRecord:
    return UsageRecord(**line(**overrides))


PROVIDERS = provider_names(validate({}))


def test_providers_come_from_the_lane_so_a_custom_upstream_is_named_by_its_host() -> None:
    config = validate({"lanes": {"other": {"url": "https://llm.example.net/anthropic"}}})
    assert provider_names(config) == {"anthropic": "anthropic", "zai": "z.ai", "other": "llm.example.net"}


def test_an_offloaded_call() -> None:
    m = measure(record(), PROVIDERS)
    assert (m.lane, m.reason, m.status_class, m.listener, m.provider) == (
        "zai",
        "rule",
        "2xx",
        "reverse",
        "z.ai",
    )
    assert (m.model, m.upstream_model) == ("claude-haiku-4-5-20251001", "glm-4.5-air")
    assert m.messages_call and not m.failed
    assert dict(m.tokens) == {"input": 11, "output": 7, "cache_read": 0, "cache_creation": 0}
    assert m.duration_s == pytest.approx(0.1) and m.ttfb_s == pytest.approx(0.01)


def test_a_call_answered_locally_counts_for_lane_none() -> None:
    m = measure(
        record(lane=None, reason="rejected", status=400, input_tokens=None, output_tokens=None, ttfb_ms=None),
        PROVIDERS,
    )
    assert (m.lane, m.provider, m.status_class, m.failed) == (NO_LANE, None, "4xx", True)
    assert dict(m.tokens) == {"cache_read": 0, "cache_creation": 0} and m.ttfb_s is None


def test_only_messages_calls_are_genai_operations() -> None:
    assert not measure(
        UsageRecord(**anthropic_line(method="GET", path="/api/claude_code/settings")), PROVIDERS
    ).messages_call
    assert not measure(record(path="/v1/messages/count_tokens"), PROVIDERS).messages_call
    assert measure(UsageRecord(**anthropic_line()), PROVIDERS).provider == "anthropic"


@pytest.mark.parametrize(
    ("status", "expected"),
    [(200, "2xx"), (302, "3xx"), (429, "4xx"), (529, "5xx"), (None, "error"), (0, "error")],
)
def test_status_classes(status: int | None, expected: str) -> None:
    assert status_class(status) == expected


def test_a_connect_failure_is_failed_without_a_status() -> None:
    m = measure(record(status=None, error="connect failed", input_tokens=None, output_tokens=None), PROVIDERS)
    assert m.status_class == "error" and m.failed
