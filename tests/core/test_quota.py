"""Z.AI's quota meter answer, parsed tolerantly, and when the meter is due (an injected clock)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from ccmitm.core.quota import ACTIVE_WINDOW_S, FIRST_POLL_S, MeterSchedule, parse_limits

RESET_MS = 1764612000000


def test_the_five_hour_and_weekly_windows_are_read() -> None:
    body = {
        "data": {
            "limits": [
                {"type": "TIME_LIMIT", "unit": 5, "percentage": 99},
                {"type": "TOKENS_LIMIT", "unit": 3, "percentage": 37, "nextResetTime": RESET_MS},
                {"type": "TOKENS_LIMIT", "unit": 6, "percentage": 12.5},
            ]
        }
    }
    reading = parse_limits(body)
    assert reading is not None and reading.five_hour is not None and reading.week is not None
    assert reading.five_hour.percent == 37
    assert reading.five_hour.resets_at == datetime.fromtimestamp(RESET_MS / 1000, UTC)
    assert reading.week.percent == 12.5 and reading.week.resets_at is None


def test_tokens_limit_wins_over_an_untyped_entry_and_time_limits_are_ignored() -> None:
    body = {
        "data": {
            "limits": [
                {"unit": 3, "percentage": 80},
                {"type": "TOKENS_LIMIT", "unit": 3, "percentage": 20},
                {"type": "TIME_LIMIT", "unit": 6, "percentage": 90},
            ]
        }
    }
    reading = parse_limits(body)
    assert reading is not None and reading.five_hour is not None
    assert reading.five_hour.percent == 20 and reading.week is None


def test_percentages_are_clamped() -> None:
    reading = parse_limits(
        {"data": {"limits": [{"unit": 3, "percentage": 140}, {"unit": 6, "percentage": -3}]}}
    )
    assert reading is not None and reading.five_hour and reading.week
    assert (reading.five_hour.percent, reading.week.percent) == (100, 0)


@pytest.mark.parametrize(
    "body",
    [
        None,
        "garbage",
        [],
        {},
        {"data": None},
        {"data": {"limits": "x"}},
        {"data": {"limits": []}},
        {"data": {"limits": [None, 3, "x"]}},
        {"data": {"limits": [{"unit": 3}]}},  # neither percentage nor reset
        {"data": {"limits": [{"unit": True, "percentage": 5}]}},
        {"data": {"limits": [{"unit": "3", "percentage": 5}]}},
        {"data": {"limits": [{"unit": 3, "percentage": "37", "nextResetTime": "soon"}]}},
        {"data": {"limits": [{"unit": 3, "percentage": float("nan"), "nextResetTime": 10**30}]}},
    ],
)
def test_anything_unreadable_is_no_reading(body: Any) -> None:
    assert parse_limits(body) is None


def test_first_poll_comes_soon_after_start_even_without_traffic() -> None:
    schedule = MeterSchedule(interval_s=300, started_at=1000.0)
    assert not schedule.due(1000.0 + FIRST_POLL_S - 1)
    assert schedule.due(1000.0 + FIRST_POLL_S)


def test_polls_only_while_the_lane_carried_traffic_in_the_last_hour() -> None:
    schedule = MeterSchedule(interval_s=300, started_at=0.0)
    schedule.last_poll_at = 10.0  # the first poll happened
    # No traffic at all: never due again, however long it waits.
    assert not schedule.due(10.0 + 300)
    assert not schedule.due(10.0 + 10 * ACTIVE_WINDOW_S)
    # Traffic at t=100: due one interval after the last poll, and again later...
    schedule.note_requests(1, 100.0)
    assert not schedule.due(10.0 + 299)
    assert schedule.due(10.0 + 300)
    schedule.last_poll_at = 400.0
    assert schedule.due(700.0)
    # ...until an hour has passed since that traffic.
    assert schedule.due(100.0 + ACTIVE_WINDOW_S)
    assert not schedule.due(100.0 + ACTIVE_WINDOW_S + 1)
    # The same counter again is no new traffic; a changed one is.
    schedule.note_requests(1, 5000.0)
    assert not schedule.due(5000.0)
    schedule.note_requests(2, 5000.0)
    assert schedule.due(5000.0)


def test_at_most_one_request_in_flight() -> None:
    schedule = MeterSchedule(interval_s=1, started_at=0.0)
    schedule.in_flight = True
    assert not schedule.due(100.0)
    schedule.in_flight = False
    assert schedule.due(100.0)
