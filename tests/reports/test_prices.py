"""What the offload saved: the dated list prices, config overrides, the lane's own price, and the
savings per day, session and request class in summarize (text, JSON) and REPORT.html."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ccmitm.config.load import validate
from ccmitm.reports.audit import verify
from ccmitm.reports.html import render_report
from ccmitm.reports.prices import (
    ANTHROPIC_LIST_PRICES,
    PRICES_CHECKED,
    PRICES_SOURCE,
    Price,
    PriceTable,
    cost,
)
from ccmitm.reports.summary import summarize
from ccmitm.reports.text import format_summary
from tests.reports.lines import anthropic_line, line
from tests.reports.test_reports import ccctl, write_config, write_log

DAY1 = datetime(2025, 6, 1, 10, tzinfo=UTC)
DAY2 = datetime(2025, 6, 2, 10, tzinfo=UTC)
MILLION = 1_000_000


def test_cost_is_per_million_tokens_for_each_kind() -> None:
    price = Price(1.0, 5.0, 0.1, 1.25)
    assert cost(price, MILLION, 0, 0, 0) == 1.0
    assert cost(price, 0, MILLION) == 5.0
    assert cost(price, 0, 0, MILLION, 0) == pytest.approx(0.1)
    assert cost(price, 0, 0, 0, MILLION) == 1.25
    assert cost(price, 2 * MILLION, MILLION, MILLION, MILLION) == pytest.approx(2 + 5 + 0.1 + 1.25)


def test_the_default_table_matches_by_family_anywhere_in_the_name() -> None:
    table = PriceTable()
    for model, family in (
        ("claude-haiku-4-5-20251001", "haiku"),
        ("Claude-3-5-HAIKU-latest", "haiku"),
        ("claude-sonnet-4-5", "sonnet"),
        ("claude-opus-4-5-20251101", "opus"),
    ):
        priced = table.anthropic(model)
        assert priced is not None and priced.price == ANTHROPIC_LIST_PRICES[family], model
    assert ANTHROPIC_LIST_PRICES["haiku"] == Price(1.0, 5.0, 0.10, 1.25)
    assert ANTHROPIC_LIST_PRICES["sonnet"] == Price(3.0, 15.0, 0.30, 3.75)
    assert ANTHROPIC_LIST_PRICES["opus"] == Price(5.0, 25.0, 0.50, 6.25)
    for model in ("glm-4.5-air", "", None, ["haiku"]):
        assert table.anthropic(model) is None
    assert PRICES_SOURCE == "https://www.anthropic.com/pricing"
    assert datetime.fromisoformat(PRICES_CHECKED)  # a real date


def test_config_pricing_comes_first_and_fills_cache_prices_from_the_input_price() -> None:
    config = validate(
        {
            "pricing": {"claude-3-5-haiku*": {"input_per_mtok": 0.8, "output_per_mtok": 4.0}},
            "lanes": {"zai": {"pricing": {"glm-*": {"input_per_mtok": 0.2, "output_per_mtok": 1.1}}}},
        }
    )
    table = PriceTable.from_config(config)
    old = table.anthropic("claude-3-5-haiku-20241022")
    assert old is not None and old.source == "claude-3-5-haiku*"
    assert old.price == Price(0.8, 4.0, pytest.approx(0.08), pytest.approx(1.0))  # type: ignore[arg-type]
    new = table.anthropic("claude-haiku-4-5")
    assert new is not None and new.source == "*haiku*" and new.price == ANTHROPIC_LIST_PRICES["haiku"]
    assert table.lane("zai", "glm-4.5-air").price.input == 0.2
    assert table.lane("zai", "other-model").source == "subscription"
    assert table.lane("anthropic", "x").price == Price(0, 0, 0, 0)
    # One offloaded Haiku call: a million input tokens, a million output.
    assert table.saving("claude-haiku-4-5", "zai", "glm-4.5-air", MILLION, MILLION) == pytest.approx(
        (6.0, 1.3)
    )
    assert table.saving("glm-5", "zai", "glm-5", MILLION) is None


def savings_log() -> list[dict]:
    """Haiku offloaded over two days and two sessions, Sonnet offloaded by a rule, one unpriced
    model, calls at home (never part of the savings)."""
    return [
        line(ts=DAY1.isoformat(), session="s-a", request_class="subagent", input_tokens=MILLION,
             output_tokens=0, cache_read_input_tokens=MILLION, cache_creation_input_tokens=0),
        line(ts=DAY1.isoformat(), session="s-b", request_class="main", input_tokens=0,
             output_tokens=MILLION, cache_read_input_tokens=0, cache_creation_input_tokens=MILLION),
        line(ts=DAY2.isoformat(), session="s-a", request_class="subagent", model="claude-sonnet-4-5",
             rule="claude-sonnet-*", input_tokens=MILLION, output_tokens=0),
        line(ts=DAY2.isoformat(), session="s-a", model="glm-5-direct", rule="glm-*", input_tokens=MILLION),
        anthropic_line(ts=DAY2.isoformat(), session="s-a", input_tokens=MILLION, output_tokens=MILLION),
    ]  # fmt: skip


def test_savings_per_day_session_and_request_class() -> None:
    result = summarize(savings_log(), default_lane="anthropic")
    savings = result["offload"]["savings"]
    # Day 1: Haiku 1M in ($1) + 1M cache read ($0.10); 1M out ($5) + 1M cache write ($1.25).
    # Day 2: Sonnet 1M in ($3). The lane is a subscription: it costs 0. glm-5-direct has no price.
    assert savings["by_day"] == {
        "2025-06-01": {"calls": 2, "anthropic_cost_usd": 7.35, "offload_cost_usd": 0.0, "saved_usd": 7.35},
        "2025-06-02": {"calls": 1, "anthropic_cost_usd": 3.0, "offload_cost_usd": 0.0, "saved_usd": 3.0},
    }
    assert {k: v["saved_usd"] for k, v in savings["by_request_class"].items()} == {
        "main": 6.25,
        "subagent": 4.1,
    }
    assert [(row["session"], row["saved_usd"]) for row in savings["by_session"]["top"]] == [
        ("s-b", 6.25),
        ("s-a", 4.1),
    ]
    assert (savings["calls"], savings["saved_usd"]) == (3, 10.35)
    assert result["offload"]["estimated_cost_avoided_usd"] == 10.35
    assert result["offload"]["unpriced_models"] == {"glm-5-direct": 1}
    assert savings["prices"]["anthropic_list"]["checked"] == PRICES_CHECKED
    assert savings["prices"]["lanes"] == {"zai": "subscription (0 per call)"}


def test_the_lane_price_is_subtracted() -> None:
    config = validate({"lanes": {"zai": {"pricing": {"*": {"input_per_mtok": 0.5, "output_per_mtok": 2.0}}}}})
    result = summarize(savings_log(), prices=PriceTable.from_config(config))
    savings = result["offload"]["savings"]
    # The lane's own cache prices: 0.05 read, 0.625 write (0.1x and 1.25x its input price).
    assert savings["by_day"]["2025-06-01"] == {
        "calls": 2,
        "anthropic_cost_usd": 7.35,
        "offload_cost_usd": pytest.approx(0.5 + 0.05 + 2.0 + 0.625),
        "saved_usd": pytest.approx(7.35 - 3.175),
    }
    assert savings["prices"]["lanes"] == {"zai": ["*"]}


def test_summarize_text_json_and_report_show_savings_with_their_date_and_source(tmp_path: Path) -> None:
    write_log(tmp_path / "logs", savings_log())
    config_path = write_config(tmp_path, pricing={})
    text = ccctl(config_path, "summarize").output
    assert "saved: $10.35 over 3 priced calls" in text
    assert f"as published by Anthropic at {PRICES_SOURCE}, checked {PRICES_CHECKED}" in text
    assert "offload lane cost: $0.00 (zai: subscription (0 per call))" in text
    assert "savings by day (UTC)" in text and "2025-06-01" in text
    assert "savings by request class" in text and "savings by Claude Code session" in text
    data = json.loads(ccctl(config_path, "summarize", "--json").output)
    assert data["offload"]["savings"]["prices"]["anthropic_list"]["source"] == PRICES_SOURCE

    records = savings_log()
    config = validate({})
    summary = summarize(records)
    page = render_report(
        records, verify(records, config).to_dict(), DAY1, DAY2, "anthropic", savings=summary["offload"]
    )
    assert 'id="savings"' in page and 'data-saved="10.35"' in page and "$10.35" in page
    assert f"checked {PRICES_CHECKED}" in page and "By day (UTC)" in page and "2025-06-02" in page
    # Named without a scheme: REPORT.html holds no URL.
    assert "www.anthropic.com/pricing" in page and "https://" not in page and "http://" not in page
    assert format_summary(summary).count("$10.35") >= 1
