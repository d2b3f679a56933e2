"""What a lane's refusal means, and the hold it puts on the lane.

An offload lane (Z.AI) refuses calls for very different reasons: a busy moment (try again soon),
an exhausted 5-hour or weekly quota (nothing helps until the reset time), no balance, a wrong key
or model (nothing helps until the user acts), or unsafe content (the request's fault, not the
lane's). :func:`classify` maps a refusal (HTTP status, the error envelope, its code and message)
to one :class:`RefusalClass` through one table (:data:`ZAI_CODES`), not a chain of branches.

Z.AI sends two envelopes: the older one puts the numeric code in ``error.type``
(``{"type":"error","error":{"type":"1113","message":"..."}}``), the newer one keeps an
Anthropic-like ``error.type`` and adds ``error.code``. A quota message names the reset time in
Beijing time (UTC+8), e.g. "Your limit will reset at 2026-12-01 23:15:09"; some refusals carry
``retry-after-ms`` instead of ``Retry-After``.

:class:`LaneHold` is the hold a ``quota``/``billing``/``auth``/``config`` refusal puts on a lane:
no call goes to the lane until the hold ends (the reset time for ``quota``; :meth:`LaneHold.clear`
for the others, on ``ccctl lane reset`` or a change of the lane's key or config), then one trial
call decides. Nothing here does I/O or reads a global clock (the wall clock is injected).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from enum import StrEnum
from typing import Any, TypedDict

from ccmitm.core.breaker import parse_retry_after

#: A quota reset further away than this is not believed (a bug or a hostile message).
MAX_HOLD_S = 8 * 24 * 3600.0
#: A quota refusal that names no reset time is tried again after this long.
QUOTA_RETRY_S = 300.0
#: A trial whose outcome never arrives gives its slot back after this long.
TRIAL_TIMEOUT_S = 120.0
BEIJING = timezone(timedelta(hours=8))
_RESET_AT = re.compile(r"reset at (\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(?::\d{2})?)", re.IGNORECASE)


class RefusalClass(StrEnum):
    QUOTA = "quota"  # a usage window is used up: held until its reset time
    BILLING = "billing"  # no balance / account problem: held until the user acts
    AUTH = "auth"  # the key is wrong or not allowed: held until the user acts
    CONFIG = "config"  # the rule's model or parameters are wrong: held until the user acts
    CONTENT = "content"  # the request's own fault (unsafe content): not the lane's
    TRANSIENT = "transient"  # busy or broken for a moment: the circuit breaker decides


#: Classes that take the lane out of rotation at the first refusal.
HOLDING = frozenset({RefusalClass.QUOTA, RefusalClass.BILLING, RefusalClass.AUTH, RefusalClass.CONFIG})


@dataclass(frozen=True)
class CodeRange:
    first: int
    last: int
    cls: RefusalClass
    words: str  # plain words for status, e.g. "5-hour quota used up"


#: Z.AI's business codes (its docs and public issue threads), as data.
ZAI_CODES: tuple[CodeRange, ...] = (
    CodeRange(1000, 1004, RefusalClass.AUTH, "key rejected"),
    CodeRange(1113, 1113, RefusalClass.BILLING, "insufficient balance"),
    CodeRange(1110, 1121, RefusalClass.BILLING, "account problem"),
    CodeRange(1210, 1210, RefusalClass.CONFIG, "bad request parameters"),
    CodeRange(1211, 1211, RefusalClass.CONFIG, "model does not exist"),
    CodeRange(1301, 1301, RefusalClass.CONTENT, "unsafe content refused"),
    CodeRange(1302, 1302, RefusalClass.TRANSIENT, "too many concurrent calls"),
    CodeRange(1303, 1303, RefusalClass.TRANSIENT, "too many calls"),
    CodeRange(1305, 1305, RefusalClass.TRANSIENT, "overloaded"),
    CodeRange(1308, 1308, RefusalClass.QUOTA, "5-hour quota used up"),
    CodeRange(1310, 1310, RefusalClass.QUOTA, "weekly/monthly quota used up"),
    CodeRange(1316, 1321, RefusalClass.QUOTA, "quota used up"),
)

#: Without a known code, the HTTP status decides (the Anthropic-shaped default for every lane).
STATUS_CLASSES: Mapping[int, tuple[RefusalClass, str]] = {
    401: (RefusalClass.AUTH, "key rejected"),
    403: (RefusalClass.AUTH, "key not allowed"),
    429: (RefusalClass.TRANSIENT, "rate limit"),
}


@dataclass(frozen=True)
class Refusal:
    cls: RefusalClass
    status: int
    code: str | None
    words: str  # plain words, e.g. "5-hour quota used up"
    message: str  # the upstream's own message (short, cleaned by the caller before logging)
    until: float | None = None  # wall-clock epoch seconds the quota resets (quota only)


def _envelope(body: bytes | None) -> tuple[str | None, str | None, str]:
    """(code, error.type, message) from an Anthropic/Z.AI error body; Nones when not one."""
    if not body or len(body) > 64 * 1024:
        return None, None, ""
    try:
        data: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None, None, ""
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return None, None, ""
    kind = error.get("type")
    kind = str(kind) if isinstance(kind, (str, int)) else None
    code = error.get("code")
    code = str(code) if isinstance(code, (str, int)) else None
    if code is None and kind is not None and kind.isdigit():  # the older envelope
        code = kind
    message = error.get("message")
    return code, kind, message[:300] if isinstance(message, str) else ""


def reset_time(message: str, headers: Mapping[str, str], now_wall: float) -> float | None:
    """When a quota resets (epoch seconds, UTC): the message's Beijing time, else retry-after-ms,
    else Retry-After; capped at :data:`MAX_HOLD_S` from now; None if nothing usable."""
    until: float | None = None
    match = _RESET_AT.search(message)
    if match:
        try:
            stamp = datetime.fromisoformat(match.group(1).replace(" ", "T"))
            until = stamp.replace(tzinfo=BEIJING).astimezone(UTC).timestamp()
        except ValueError:
            until = None
    if until is None:
        millis = headers.get("retry-after-ms", "").strip()
        try:
            value = float(millis)
            if math.isfinite(value) and value >= 0:
                until = now_wall + value / 1000.0
        except ValueError:
            pass
    if until is None:
        wait = parse_retry_after(headers.get("retry-after"), now_wall)
        if wait is not None:
            until = now_wall + wait
    if until is None:
        return None
    return min(max(until, now_wall), now_wall + MAX_HOLD_S)


def classify(status: int, body: bytes | None, headers: Mapping[str, str], now_wall: float) -> Refusal | None:
    """The class of a lane's refusal, or None if ``status`` is no refusal (< 400) or is the
    request's plain fault (another 4xx without a known code)."""
    if status < 400:
        return None
    code, _kind, message = _envelope(body)
    found: tuple[RefusalClass, str] | None = None
    if code is not None and code.isdigit():
        number = int(code)
        for entry in ZAI_CODES:  # first match wins: 1113 before the 1110-1121 range
            if entry.first <= number <= entry.last:
                found = (entry.cls, entry.words)
                break
    if found is None:
        found = STATUS_CLASSES.get(status)
        if found is None and status >= 500:
            found = (RefusalClass.TRANSIENT, "server error")
    if found is None:
        return None
    cls, words = found
    until = None
    if cls is RefusalClass.QUOTA:
        until = reset_time(message, headers, now_wall)
        if until is None:
            until = now_wall + QUOTA_RETRY_S
    return Refusal(cls, status, code, words, message, until)


class HoldSnapshot(TypedDict):
    """A hold as ``ccctl status --json`` shows it; ``until`` is ISO 8601 UTC (quota only)."""

    cls: str
    code: str | None
    status: int
    words: str
    message: str
    since: str
    until: str | None
    trial_in_flight: bool


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds")


class LaneHold:
    """One lane's hold. ``active`` → no call to the lane; ``due`` → one trial call may go."""

    def __init__(self, lane: str, wall: Callable[[], float] = time.time):
        self.lane = lane
        self._wall = wall
        self.refusal: Refusal | None = None
        self._since: float | None = None
        self._trial_started: float | None = None

    @property
    def held(self) -> bool:
        return self.refusal is not None

    def start(self, refusal: Refusal) -> bool:
        """Hold the lane for this refusal. True if a hold started (not merely renewed)."""
        fresh = self.refusal is None
        self.refusal = refusal
        self._since = self._wall()
        self._trial_started = None
        return fresh

    def clear(self) -> bool:
        """End the hold (trial succeeded, reset, new key or config). True if one was on."""
        was = self.refusal is not None
        self.refusal = None
        self._since = None
        self._trial_started = None
        return was

    def _due(self, now: float) -> bool:
        until = self.refusal.until if self.refusal else None
        return until is not None and now >= until

    def _trial_busy(self, now: float) -> bool:
        return self._trial_started is not None and now - self._trial_started < TRIAL_TIMEOUT_S

    def allows_request(self) -> bool:
        """Would :meth:`acquire` let a call through now? A pure check."""
        if self.refusal is None:
            return True
        now = self._wall()
        return self._due(now) and not self._trial_busy(now)

    def acquire(self) -> bool | None:
        """None: no hold, go ahead. True: you carry the trial call. False: stay off the lane."""
        if self.refusal is None:
            return None
        now = self._wall()
        if not self._due(now) or self._trial_busy(now):
            return False
        self._trial_started = now
        return True

    def release(self) -> None:
        """The trial's outcome will never be known: free its slot."""
        self._trial_started = None

    def snapshot(self) -> HoldSnapshot | None:
        refusal = self.refusal
        if refusal is None or self._since is None:
            return None
        return {
            "cls": str(refusal.cls),
            "code": refusal.code,
            "status": refusal.status,
            "words": refusal.words,
            "message": refusal.message,
            "since": _iso(self._since),
            "until": _iso(refusal.until) if refusal.until is not None else None,
            "trial_in_flight": self._trial_busy(self._wall()),
        }


#: What a hold of each class means, for reports that only have the usage line's class.
HOLD_WORDS: Mapping[str, str] = {
    RefusalClass.QUOTA: "the offload lane's quota was used up",
    RefusalClass.BILLING: "the offload lane refused for its balance or account",
    RefusalClass.AUTH: "the offload lane rejected its key",
    RefusalClass.CONFIG: "the offload lane refused the rule's model or parameters",
}


def hold_line(cls: str, calls: int, first: str | None, last: str | None, default_lane: str) -> str:
    """One report line for the calls a hold sent to the default lane (times shown in local time)."""

    def local(stamp: str | None) -> str:
        try:
            return datetime.fromisoformat(stamp).astimezone().strftime("%Y-%m-%d %H:%M") if stamp else "-"
        except ValueError:
            return stamp or "-"

    why = HOLD_WORDS.get(cls, f"the offload lane was held ({cls})")
    return f"held ({cls}): {calls} calls went to {default_lane} from {local(first)} to {local(last)}: {why}"


def plain_words(lane: str, hold: Mapping[str, Any], default_lane: str = "anthropic") -> str:
    """One line for a human: what holds the lane and when (or how) the offload resumes.

    ``hold`` is a :class:`HoldSnapshot`; the resume time is shown in local time."""
    words = str(hold.get("words") or hold.get("cls") or "refused")
    code = hold.get("code")
    cause = f"{words} ({code})" if code and str(code) not in words else words
    until = hold.get("until")
    if hold.get("cls") == RefusalClass.QUOTA and isinstance(until, str):
        try:
            local = datetime.fromisoformat(until).astimezone()
            when = (
                local.strftime("%H:%M")
                if local.date() == datetime.now().astimezone().date()
                else local.strftime("%a %d %b %H:%M")
            )
        except ValueError:
            when = until
        return f"{lane}: {cause} — Haiku stays on {default_lane} until {when}"
    action = {
        RefusalClass.BILLING: "top up",
        RefusalClass.AUTH: "fix the lane's key",
        RefusalClass.CONFIG: "fix the rule's model",
    }.get(RefusalClass(hold["cls"]) if hold.get("cls") in set(RefusalClass) else RefusalClass.TRANSIENT)
    if action is None:
        return f"{lane}: {cause} — Haiku stays on {default_lane} for now"
    return f"{lane}: {cause} — {action}, then `ccctl lane reset {lane}`"


__all__ = [
    "HOLDING",
    "HOLD_WORDS",
    "MAX_HOLD_S",
    "STATUS_CLASSES",
    "ZAI_CODES",
    "CodeRange",
    "HoldSnapshot",
    "LaneHold",
    "Refusal",
    "RefusalClass",
    "classify",
    "hold_line",
    "plain_words",
    "reset_time",
]
