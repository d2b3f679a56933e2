"""A per-lane circuit breaker: when an offload lane keeps failing, its traffic goes to the default
lane for a while, then one trial request decides whether the lane is back.

States (``half_open`` is not stored; it is ``open`` whose retry time has passed)::

    closed ──[failures in window ≥ threshold, or one 401/403 or connect failure]──► open
      ▲                                                           │ cooldown (or Retry-After, if longer)
      │                                                           ▼
      └──────────── trial succeeds ◄──── half_open ──── trial fails ──► open again

Choices, and why:

- Failures are counted in a sliding time window (``window_s``); a success in the closed state does
  not clear them. This is LiteLLM's choice (allowed failures per minute, successes do not reset
  the count) and the "threshold within a window" breaker of cockroachdb/circuitbreaker. A lane
  that answers every other call with 429 is sick even though half its calls succeed, and Claude
  Code's own retries (ten per call) would hide it from a consecutive-failures breaker. Failures
  simply age out of the window.
- 401/403 open the breaker at once: the lane's key is wrong or revoked, and no amount of waiting
  within a window makes it right. The reason is kept so status can say so.
- Every request sent to the lane holds a :class:`Permit` from :meth:`CircuitBreaker.acquire`. The
  permit carries the breaker's *epoch*, which changes at every open and close; an outcome
  reported with a permit from an older epoch is stale (a long stream that started before the
  breaker opened) and is ignored, so it can neither re-open a breaker a trial just closed nor
  close one on old news.
- In half-open exactly one request (the trial) is let through; everyone else keeps going to the
  default lane until the trial's outcome is known. A trial whose outcome never arrives (a lost
  flow) gives its slot back after ``trial_timeout_s``; a caller that knows the outcome will never
  come (client abort before the status) calls :meth:`CircuitBreaker.release`.
- ``Retry-After`` (delta-seconds or HTTP-date) lengthens the cooldown, never shortens it, and is
  capped (``max_retry_after_s``) so a hostile or buggy header cannot take a lane away for days.
  A Retry-After seen on a failure that did not open the breaker is remembered until it passes
  and honoured if the breaker opens before then.

Nothing here does I/O or reads a global clock: both clocks are injectable, so tests drive time.
Everything runs on the event loop thread; no locking.
"""

from __future__ import annotations

import math
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypedDict

if TYPE_CHECKING:
    from ccmitm.config.model import BreakerConfig

# The kinds of failure that count against a lane (is_breaker_failure returns one of these).
CONNECT = "connect"  # no response at all: refused, DNS, TLS, reset before the status line
TIMEOUT = "timeout"  # connect or read timeout
DROP = "drop"  # the response started, then the upstream went away mid-body
RATE_LIMIT = "rate_limit"  # 429 (Z.AI also uses it for an exhausted quota, code 1113)
SERVER = "server"  # 5xx, including Anthropic-style 529 overloaded
AUTH = "auth"  # 401/403: the lane's key is wrong or not allowed
FAILURE_KINDS = frozenset({CONNECT, TIMEOUT, DROP, RATE_LIMIT, SERVER, AUTH})

_DELTA_SECONDS = re.compile(r"^\d{1,12}(\.\d{1,6})?$")


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


def is_breaker_failure(status: int | None, error: str | None) -> str | None:
    """The failure kind this outcome counts as against the lane, or None if it does not count.

    ``status`` is the upstream's HTTP status (None when no response arrived); ``error`` is the
    flow's error text, if any. Client errors other than 401/403 (400, 404, 413, ...) are the
    request's fault, not the lane's, and a client abort is nobody's.
    """
    if status is not None:
        if status in (401, 403):
            return AUTH
        if status == 429:
            return RATE_LIMIT
        if 500 <= status <= 599:
            return SERVER
    if not error:
        return None
    text = error.lower()
    if "client" in text and ("disconnect" in text or "abort" in text):
        return None
    if status is None and text.startswith("connect failure"):
        return CONNECT  # refused, DNS, TLS handshake or connect timeout: nothing was answered
    if "timeout" in text or "timed out" in text:
        return TIMEOUT
    # Before any response it is a connect-level failure; after the status line, a dropped body.
    return CONNECT if status is None else DROP


def parse_retry_after(value: str | None, now_wall: float) -> float | None:
    """Seconds to wait from a Retry-After value: delta-seconds or an HTTP-date; None if unusable."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if _DELTA_SECONDS.match(text):
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:  # pragma: no cover - older Pythons returned None instead of raising
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; a zone-less one is read as UTC
        when = when.replace(tzinfo=UTC)
    try:
        seconds = when.timestamp() - now_wall
    except (OverflowError, OSError, ValueError):
        return None
    return max(0.0, seconds) if math.isfinite(seconds) else None


class FailureSnapshot(TypedDict):
    kind: str
    status: int | None
    at: str | None
    text: str


class BreakerSnapshot(TypedDict):
    """A breaker as ``ccctl status`` shows it: plain data, wall-clock times in ISO 8601 UTC."""

    lane: str
    state: str  # "closed", "open" or "half_open"
    failures: int
    threshold: int
    window_s: float
    cooldown_s: float
    opened_at: str | None
    retry_at: str | None
    retry_in_s: float | None
    open_reason: str | None
    message: str | None
    trial_in_flight: bool
    opens: int
    last_failure: FailureSnapshot | None


@dataclass(frozen=True)
class Permit:
    """Leave to send one request to the lane. Hand it back with the outcome."""

    lane: str
    epoch: int
    trial: bool = False


@dataclass(frozen=True)
class Failure:
    kind: str
    status: int | None
    at: float  # monotonic


def describe_failure(kind: str, status: int | None) -> str:
    """Short human text for a failure, e.g. "429 rate limit", "connect failure"."""
    words = {
        CONNECT: "connect failure",
        TIMEOUT: "timeout",
        DROP: "upstream drop",
        RATE_LIMIT: "rate limit",
        SERVER: "server error",
        AUTH: "key rejected",
    }.get(kind, kind)
    return f"{status} {words}" if status is not None else words


class CircuitBreaker:
    """One lane's breaker. See the module doc for the state machine and its choices."""

    def __init__(
        self,
        lane: str,
        *,
        failures: int = 5,
        window_s: float = 60.0,
        cooldown_s: float = 30.0,
        label: str | None = None,
        trial_timeout_s: float = 120.0,
        max_retry_after_s: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ):
        if failures < 1 or window_s <= 0 or cooldown_s <= 0 or trial_timeout_s <= 0:
            raise ValueError("failures >= 1 and positive window_s, cooldown_s, trial_timeout_s")
        self.lane = lane
        self.label = label or lane  # for messages: "Z.AI rejected the key (401)"
        self.threshold = failures
        self.window_s = float(window_s)
        self.cooldown_s = float(cooldown_s)
        self.trial_timeout_s = float(trial_timeout_s)
        self.max_retry_after_s = float(max_retry_after_s)
        self._clock = clock
        self._wall = wall
        self._open = False
        self._epoch = 0
        # Only the newest `threshold` failure times matter: the breaker opens as soon as that many
        # fall inside one window, so the deque's bound is also the memory bound.
        self._failures: deque[float] = deque(maxlen=failures)
        self._retry_hint: float | None = None  # monotonic time a recent Retry-After asked us to wait until
        self._opened_at: float | None = None
        self._retry_at: float | None = None
        self._open_reason: Failure | None = None
        self._open_message: str | None = None
        self._trial_started: float | None = None
        self._last_failure: Failure | None = None
        self.opens = 0  # how many times it has opened since start (for status)

    @classmethod
    def from_config(cls, lane: str, config: BreakerConfig, **kwargs: Any) -> CircuitBreaker:
        """Build from the config's ``breaker`` section (failures, window_s, cooldown_s)."""
        return cls(
            lane,
            failures=config.failures,
            window_s=config.window_s,
            cooldown_s=config.cooldown_s,
            **kwargs,
        )

    def reconfigure(self, failures: int, window_s: float, cooldown_s: float) -> None:
        """New thresholds after a config reload; the current state (open, trial, ...) is kept."""
        if failures < 1 or window_s <= 0 or cooldown_s <= 0:
            raise ValueError("failures >= 1 and positive window_s, cooldown_s")
        self.threshold = failures
        self.window_s = float(window_s)
        self.cooldown_s = float(cooldown_s)
        self._failures = deque(self._failures, maxlen=failures)

    def reset(self) -> None:
        """Forget everything and close (e.g. the lane's key changed, so a 401 verdict is void)."""
        self._close()
        self._last_failure = None

    # --- state ------------------------------------------------------------------------------------
    def _now(self, now: float | None) -> float:
        return self._clock() if now is None else now

    def state(self, now: float | None = None) -> BreakerState:
        if not self._open:
            return BreakerState.CLOSED
        assert self._retry_at is not None
        return BreakerState.HALF_OPEN if self._now(now) >= self._retry_at else BreakerState.OPEN

    def _trial_busy(self, now: float) -> bool:
        return self._trial_started is not None and now - self._trial_started < self.trial_timeout_s

    def allows_request(self, now: float | None = None) -> bool:
        """Would :meth:`acquire` grant a permit now? A pure check: it changes nothing."""
        now = self._now(now)
        state = self.state(now)
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.OPEN:
            return False
        return not self._trial_busy(now)

    def acquire(self, now: float | None = None) -> Permit | None:
        """A permit for one request, or None if the lane must not be used now.

        Closed: always granted. Half-open: the first caller gets the trial permit, everyone else
        None until the trial's outcome is recorded (or it times out). Open: None.
        """
        now = self._now(now)
        state = self.state(now)
        if state is BreakerState.CLOSED:
            return Permit(self.lane, self._epoch)
        if state is BreakerState.OPEN or self._trial_busy(now):
            return None
        self._trial_started = now
        return Permit(self.lane, self._epoch, trial=True)

    def release(self, permit: Permit) -> None:
        """The permit's outcome will never be known (client aborted first): free the trial slot."""
        if permit.trial and permit.epoch == self._epoch and self._open:
            self._trial_started = None

    # --- outcomes ---------------------------------------------------------------------------------
    def record_success(self, permit: Permit, now: float | None = None) -> BreakerState | None:
        """The lane answered (not a breaker failure). Returns CLOSED if this closed the breaker."""
        if permit.epoch != self._epoch or not self._open:
            return None  # stale, or closed: successes do not clear the window (see module doc)
        if not permit.trial:  # pragma: no cover - no non-trial permits exist in an open epoch
            return None
        self._close()
        return BreakerState.CLOSED

    def record_failure(
        self,
        permit: Permit,
        kind: str,
        status: int | None = None,
        retry_after: str | None = None,
        now: float | None = None,
    ) -> BreakerState | None:
        """The lane failed (``kind`` from :func:`is_breaker_failure`). Returns OPEN if this opened
        (or re-opened) the breaker, else None."""
        if permit.epoch != self._epoch:
            return None  # began before the last open/close: old news
        now = self._now(now)
        failure = Failure(kind, status, now)
        self._last_failure = failure
        wait = parse_retry_after(retry_after, self._wall())
        if wait is not None:
            wait = min(wait, self.max_retry_after_s)
        if self._open:
            if not permit.trial:  # pragma: no cover - no non-trial permits exist in an open epoch
                return None
            verdict = (
                f"{self.label} rejected the key ({status})"
                if kind == AUTH
                else f"trial request failed ({describe_failure(kind, status)})"
            )
            self._trip(now, failure, verdict, wait)
            return BreakerState.OPEN
        self._failures.append(now)
        if wait is not None:
            until = now + wait
            self._retry_hint = until if self._retry_hint is None else max(self._retry_hint, until)
        if kind == AUTH:
            self._trip(now, failure, f"{self.label} rejected the key ({status})", wait)
            return BreakerState.OPEN
        if kind == CONNECT:
            # Unambiguous: the lane cannot be reached, so Claude Code's own retry of this very
            # call should already land on the default lane (not after five failed calls).
            self._trip(now, failure, f"{self.label} unreachable ({describe_failure(kind, status)})", wait)
            return BreakerState.OPEN
        count = self.failures_in_window(now)
        if count >= self.threshold:
            verdict = f"{count} failures in {self.window_s:g} s (last: {describe_failure(kind, status)})"
            self._trip(now, failure, verdict, wait)
            return BreakerState.OPEN
        return None

    def failures_in_window(self, now: float | None = None) -> int:
        now = self._now(now)
        horizon = now - self.window_s
        return sum(1 for at in self._failures if at > horizon)

    def _trip(self, now: float, failure: Failure, message: str, wait: float | None) -> None:
        cooldown = self.cooldown_s
        if wait is not None:
            cooldown = max(cooldown, wait)
        if self._retry_hint is not None:  # capped when it was recorded
            cooldown = max(cooldown, self._retry_hint - now)
        self._open = True
        self._epoch += 1
        self.opens += 1
        self._opened_at = now
        self._retry_at = now + cooldown
        self._open_reason = failure
        self._open_message = message
        self._trial_started = None
        self._retry_hint = None

    def _close(self) -> None:
        self._open = False
        self._epoch += 1
        self._failures.clear()
        self._retry_hint = None
        self._opened_at = None
        self._retry_at = None
        self._open_reason = None
        self._open_message = None
        self._trial_started = None

    # --- status -----------------------------------------------------------------------------------
    @property
    def open_reason(self) -> str | None:
        """The kind of failure that opened it (``"auth"`` for a rejected key), None when closed."""
        return self._open_reason.kind if self._open_reason else None

    def _iso(self, at: float | None, now: float) -> str | None:
        if at is None:
            return None
        wall = self._wall() - (now - at)
        return datetime.fromtimestamp(wall, UTC).isoformat(timespec="seconds")

    def snapshot(self, now: float | None = None) -> BreakerSnapshot:
        """Plain data for ``ccctl status``: no secrets, wall-clock times in ISO 8601 UTC."""
        now = self._now(now)
        state = self.state(now)
        last = self._last_failure
        return {
            "lane": self.lane,
            "state": str(state),
            "failures": self.failures_in_window(now),
            "threshold": self.threshold,
            "window_s": self.window_s,
            "cooldown_s": self.cooldown_s,
            "opened_at": self._iso(self._opened_at, now),
            "retry_at": self._iso(self._retry_at, now),
            "retry_in_s": round(max(0.0, self._retry_at - now), 1) if self._retry_at is not None else None,
            "open_reason": self.open_reason,
            "message": self._open_message,
            "trial_in_flight": self._open and self._trial_busy(now),
            "opens": self.opens,
            "last_failure": None
            if last is None
            else {
                "kind": last.kind,
                "status": last.status,
                "at": self._iso(last.at, now),
                "text": describe_failure(last.kind, last.status),
            },
        }


__all__ = [
    "AUTH",
    "CONNECT",
    "DROP",
    "FAILURE_KINDS",
    "RATE_LIMIT",
    "SERVER",
    "TIMEOUT",
    "BreakerState",
    "CircuitBreaker",
    "Failure",
    "Permit",
    "describe_failure",
    "is_breaker_failure",
    "parse_retry_after",
]
