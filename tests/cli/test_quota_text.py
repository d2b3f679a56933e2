"""How a Z.AI lane's quota meter reads in `ccctl status` and `top`: percentages and local times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from ccmitm.cli.control import format_quota
from ccmitm.cli.top import render
from tests.cli.test_top import fake_status, lane, text_of

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC).astimezone()


def quota(**overrides: Any) -> dict[str, Any]:
    soon = (NOW + timedelta(hours=1)).astimezone(UTC).isoformat()
    later = (NOW + timedelta(days=3)).astimezone(UTC).isoformat()
    base = {
        "state": "ok",
        "five_hour": {"percent": 37.4, "resets_at": soon},
        "week": {"percent": 12, "resets_at": later},
        "checked_at": NOW.isoformat(),
    }
    return {**base, **overrides}


def test_percentages_and_reset_times_in_local_time() -> None:
    soon = (NOW + timedelta(hours=1)).strftime("%H:%M")
    later = (NOW + timedelta(days=3)).strftime("%a %H:%M")
    assert format_quota(quota(), NOW) == f"5h 37% (resets {soon}), week 12% (resets {later})"


def test_unknown_missing_and_partial_meters() -> None:
    assert format_quota(None) is None
    assert format_quota(quota(state="unknown", five_hour=None, week=None)) == "unknown"
    assert format_quota(quota(five_hour=None, week={"percent": 50, "resets_at": None})) == "week 50%"
    assert format_quota(quota(five_hour={"percent": None, "resets_at": "junk"}, week=None)) == "5h ?%"


def test_top_shows_the_meter_under_the_table() -> None:
    status = fake_status()
    status["lanes"]["zai"]["quota"] = quota(state="unknown", five_hour=None, week=None)
    status["lanes"]["anthropic"]["quota"] = None
    text = text_of(render(status, live=False), width=80)
    assert "zai quota: unknown" in text and "anthropic quota" not in text
    plain = fake_status(lanes={"zai": lane()})
    assert "quota" not in text_of(render(plain, live=False))
