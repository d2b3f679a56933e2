"""Z.AI's quota meter, read: parsing its answer and deciding when to ask. Pure, no I/O.

``GET {origin}/api/monitor/usage/quota/limit`` answers ``{"data": {"limits": [...]}}``; each entry
may carry ``type`` (``TOKENS_LIMIT``, ``TIME_LIMIT``), ``unit`` (3 = the 5-hour window, 6 = the
week), ``percentage`` and ``nextResetTime`` (epoch milliseconds). The shape is reported, not
specified, so every field is optional and anything unreadable becomes "unknown" rather than an
error. The poller (:mod:`ccmitm.supervisor.quota`) owns the sockets; this module owns the rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

#: The meter's ``unit`` codes for the windows we show.
UNIT_FIVE_HOUR = 3
UNIT_WEEK = 6
#: Traffic older than this stops the polling (an idle lane's quota does not move).
ACTIVE_WINDOW_S = 3600.0
#: The first poll after start (or after a key appears) comes this soon, not a full interval later.
FIRST_POLL_S = 5.0


@dataclass(frozen=True)
class Window:
    percent: float | None
    resets_at: datetime | None  # UTC


@dataclass(frozen=True)
class QuotaReading:
    five_hour: Window | None
    week: Window | None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if value == value and abs(value) != float("inf") else None  # no NaN / inf


def _reset_time(value: Any) -> datetime | None:
    millis = _number(value)
    if millis is None or millis <= 0:
        return None
    try:
        return datetime.fromtimestamp(millis / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _window(entry: dict[str, Any]) -> Window | None:
    percent = _number(entry.get("percentage"))
    if percent is not None:
        percent = max(0.0, min(100.0, percent))
    window = Window(percent, _reset_time(entry.get("nextResetTime")))
    return window if window.percent is not None or window.resets_at is not None else None


def parse_limits(body: Any) -> QuotaReading | None:
    """The 5-hour and weekly windows in a meter answer; None when it says nothing usable.

    A ``TOKENS_LIMIT`` entry is preferred for a unit (the prompt budget); an entry without a
    ``type`` counts too. ``TIME_LIMIT`` entries (tool-time budgets) are not shown."""
    data = body.get("data") if isinstance(body, dict) else None
    limits = data.get("limits") if isinstance(data, dict) else None
    if not isinstance(limits, list):
        return None
    found: dict[int, tuple[int, Window]] = {}
    for entry in limits:
        if not isinstance(entry, dict):
            continue
        kind = entry.get("type")
        if kind not in (None, "TOKENS_LIMIT"):
            continue
        unit = entry.get("unit")
        if isinstance(unit, bool) or unit not in (UNIT_FIVE_HOUR, UNIT_WEEK):
            continue
        window = _window(entry)
        if window is None:
            continue
        rank = 0 if kind == "TOKENS_LIMIT" else 1
        if unit not in found or rank < found[unit][0]:
            found[unit] = (rank, window)
    if not found:
        return None
    five = found.get(UNIT_FIVE_HOUR)
    week = found.get(UNIT_WEEK)
    return QuotaReading(five[1] if five else None, week[1] if week else None)


@dataclass
class MeterSchedule:
    """When a lane's meter is due: once soon after start, then every ``interval_s`` while the lane
    carried traffic within the last hour. Times are the caller's clock (monotonic seconds), so a
    test drives it with plain numbers."""

    interval_s: float
    started_at: float
    last_traffic_at: float | None = None
    last_poll_at: float | None = None
    in_flight: bool = False
    _seen_requests: int = 0

    def note_requests(self, requests: int, now: float) -> None:
        """Feed the lane's request counter; a change means it carried traffic just now."""
        if requests != self._seen_requests:
            self._seen_requests = requests
            self.last_traffic_at = now

    def due(self, now: float) -> bool:
        if self.in_flight:
            return False  # at most one request in flight
        if self.last_poll_at is None:
            return now - self.started_at >= min(FIRST_POLL_S, self.interval_s)
        if self.last_traffic_at is None or now - self.last_traffic_at > ACTIVE_WINDOW_S:
            return False
        return now - self.last_poll_at >= self.interval_s
