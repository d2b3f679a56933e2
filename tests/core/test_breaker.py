"""The circuit breaker as a state machine, driven by a fake clock."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from ccmitm.config.load import validate
from ccmitm.core.breaker import (
    AUTH,
    CONNECT,
    DROP,
    RATE_LIMIT,
    SERVER,
    TIMEOUT,
    BreakerState,
    CircuitBreaker,
    Permit,
    is_breaker_failure,
    parse_retry_after,
)

WALL_START = 1_760_000_000.0  # 2025-10-09T08:53:20Z


@dataclass
class FakeClock:
    """Monotonic and wall clocks that move together, only when told to."""

    mono: float = 1000.0
    wall_offset: float = WALL_START - 1000.0

    def monotonic(self) -> float:
        return self.mono

    def wall(self) -> float:
        return self.mono + self.wall_offset

    def advance(self, seconds: float) -> None:
        self.mono += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make(clock: FakeClock, **kwargs: object) -> CircuitBreaker:
    settings: dict[str, object] = {"failures": 3, "window_s": 60.0, "cooldown_s": 30.0}
    settings.update(kwargs)
    return CircuitBreaker("zai", label="Z.AI", clock=clock.monotonic, wall=clock.wall, **settings)  # type: ignore[arg-type]


def fail(
    breaker: CircuitBreaker, kind: str = SERVER, status: int | None = 503, retry_after: str | None = None
):
    permit = breaker.acquire()
    assert permit is not None, "the breaker refused a permit"
    return breaker.record_failure(permit, kind, status, retry_after)


def trip(breaker: CircuitBreaker) -> None:
    for _ in range(breaker.threshold):
        fail(breaker)
    assert breaker.state() is BreakerState.OPEN


# --- classifier -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("status", "error", "expected"),
    [
        (200, None, None),
        (201, None, None),
        (400, None, None),  # the request's fault, not the lane's
        (404, None, None),
        (413, None, None),
        (401, None, AUTH),
        (403, None, AUTH),
        (429, None, RATE_LIMIT),
        (500, None, SERVER),
        (502, None, SERVER),
        (503, None, SERVER),
        (529, None, SERVER),
        (None, "connect failure: [Errno 111] Connection refused", CONNECT),
        (None, "Name or service not known", CONNECT),
        (None, "connect failure: TimeoutError", CONNECT),  # a connect timeout: nothing answered
        (None, "Connection timed out", TIMEOUT),
        (200, "upstream drop: peer closed connection without sending complete message body", DROP),
        (200, "read timeout after 300 s", TIMEOUT),
        (200, "client abort", None),
        (None, "Client disconnected.", None),
        (200, None, None),
        (None, None, None),
        (None, "", None),
        (429, "client abort", RATE_LIMIT),  # the status was already a failure
    ],
)
def test_is_breaker_failure(status: int | None, error: str | None, expected: str | None) -> None:
    assert is_breaker_failure(status, error) == expected


# --- Retry-After ------------------------------------------------------------------------------------
NOW = datetime(2025, 10, 9, 8, 53, 20, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("   ", None),
        ("0", 0.0),
        ("120", 120.0),
        (" 45 ", 45.0),
        ("1.5", 1.5),
        ("-5", None),
        ("soon", None),
        ("1e9", None),
        ("Thu, 09 Oct 2025 08:55:20 GMT", 120.0),  # IMF-fixdate
        ("Thursday, 09-Oct-25 08:55:20 GMT", 120.0),  # obsolete RFC 850 form
        ("Thu Oct  9 08:55:20 2025", 120.0),  # asctime: read as UTC
        ("Thu, 09 Oct 2025 08:50:20 GMT", 0.0),  # in the past: no wait
        ("Thu, 32 Oct 2025 08:55:20 GMT", None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, NOW) == expected


# --- the state machine ------------------------------------------------------------------------------
def test_starts_closed_and_grants_plain_permits(clock: FakeClock) -> None:
    breaker = make(clock)
    assert breaker.state() is BreakerState.CLOSED
    assert breaker.allows_request()
    permit = breaker.acquire()
    assert permit == Permit("zai", 0, trial=False)
    assert breaker.record_success(permit) is None


def test_one_connect_failure_opens_at_once(clock: FakeClock) -> None:
    # An unreachable lane is known at the first refused/DNS/TLS/connect-timeout failure,
    # so Claude Code's own retry of that call already lands on the default lane.
    breaker = make(clock)
    assert fail(breaker, CONNECT, None) is BreakerState.OPEN
    assert not breaker.allows_request()
    snap = breaker.snapshot()
    assert snap["open_reason"] == CONNECT
    assert snap["message"] == "Z.AI unreachable (connect failure)"
    clock.advance(snap["retry_in_s"] or 0)
    trial = breaker.acquire()
    assert trial is not None and trial.trial
    assert breaker.record_success(trial) is BreakerState.CLOSED


def test_opens_at_threshold_within_window(clock: FakeClock) -> None:
    breaker = make(clock)
    assert fail(breaker) is None
    clock.advance(10)
    assert fail(breaker, RATE_LIMIT, 429) is None
    assert breaker.allows_request()
    clock.advance(10)
    assert fail(breaker, SERVER, 503) is BreakerState.OPEN
    assert breaker.state() is BreakerState.OPEN
    assert not breaker.allows_request()
    assert breaker.acquire() is None
    snap = breaker.snapshot()
    assert snap["state"] == "open"
    assert snap["open_reason"] == SERVER
    assert snap["message"] == "3 failures in 60 s (last: 503 server error)"
    assert snap["retry_in_s"] == 30.0


def test_failures_outside_the_window_age_out(clock: FakeClock) -> None:
    breaker = make(clock)
    fail(breaker)
    fail(breaker)
    clock.advance(61)  # both are now older than window_s
    assert breaker.failures_in_window() == 0
    assert fail(breaker) is None
    assert fail(breaker) is None
    assert breaker.state() is BreakerState.CLOSED
    assert fail(breaker) is BreakerState.OPEN


def test_successes_do_not_clear_the_window(clock: FakeClock) -> None:
    """A lane failing every other call is sick: successes in between must not hide that."""
    breaker = make(clock)
    for _ in range(2):
        fail(breaker)
        permit = breaker.acquire()
        assert permit is not None
        breaker.record_success(permit)
    assert breaker.failures_in_window() == 2
    assert fail(breaker) is BreakerState.OPEN


def test_half_open_lets_exactly_one_trial_through(clock: FakeClock) -> None:
    breaker = make(clock)
    trip(breaker)
    clock.advance(29.9)
    assert breaker.state() is BreakerState.OPEN
    assert breaker.acquire() is None
    clock.advance(0.1)
    assert breaker.state() is BreakerState.HALF_OPEN
    assert breaker.allows_request()
    trial = breaker.acquire()
    assert trial is not None and trial.trial
    # Everyone else keeps going to the default lane until the trial's outcome is known.
    assert not breaker.allows_request()
    assert breaker.acquire() is None
    assert breaker.snapshot()["trial_in_flight"] is True


def test_allows_request_has_no_side_effect(clock: FakeClock) -> None:
    breaker = make(clock)
    trip(breaker)
    clock.advance(30)
    for _ in range(5):
        assert breaker.allows_request()
    assert breaker.acquire() is not None


def test_trial_success_closes_and_clears(clock: FakeClock) -> None:
    breaker = make(clock)
    trip(breaker)
    clock.advance(30)
    trial = breaker.acquire()
    assert trial is not None
    assert breaker.record_success(trial) is BreakerState.CLOSED
    assert breaker.state() is BreakerState.CLOSED
    assert breaker.failures_in_window() == 0
    snap = breaker.snapshot()
    assert snap["opened_at"] is None and snap["retry_at"] is None and snap["message"] is None
    assert snap["last_failure"]["kind"] == SERVER  # history stays for status
    # A fresh count: it takes `threshold` new failures to open again.
    assert fail(breaker) is None


def test_trial_failure_reopens_for_another_cooldown(clock: FakeClock) -> None:
    breaker = make(clock)
    trip(breaker)
    clock.advance(30)
    trial = breaker.acquire()
    assert trial is not None
    assert breaker.record_failure(trial, TIMEOUT, None) is BreakerState.OPEN
    assert breaker.state() is BreakerState.OPEN
    assert breaker.snapshot()["message"] == "trial request failed (timeout)"
    clock.advance(29)
    assert not breaker.allows_request()
    clock.advance(1)
    assert breaker.allows_request()
    assert breaker.opens == 2


def test_auth_failure_opens_at_once_and_says_why(clock: FakeClock) -> None:
    breaker = make(clock, failures=5)
    assert fail(breaker, AUTH, 401) is BreakerState.OPEN
    snap = breaker.snapshot()
    assert snap["state"] == "open"
    assert snap["open_reason"] == AUTH
    assert snap["message"] == "Z.AI rejected the key (401)"
    assert breaker.open_reason == AUTH


def test_auth_failure_on_trial_keeps_the_key_message(clock: FakeClock) -> None:
    breaker = make(clock)
    fail(breaker, AUTH, 403)
    clock.advance(30)
    trial = breaker.acquire()
    assert trial is not None
    breaker.record_failure(trial, AUTH, 403)
    assert breaker.snapshot()["message"] == "Z.AI rejected the key (403)"


def test_retry_after_longer_than_cooldown_wins(clock: FakeClock) -> None:
    breaker = make(clock, failures=1)
    assert fail(breaker, RATE_LIMIT, 429, retry_after="120") is BreakerState.OPEN
    clock.advance(119)
    assert not breaker.allows_request()
    clock.advance(1)
    assert breaker.allows_request()


def test_retry_after_shorter_than_cooldown_is_ignored(clock: FakeClock) -> None:
    breaker = make(clock, failures=1)
    fail(breaker, RATE_LIMIT, 429, retry_after="5")
    clock.advance(5)
    assert not breaker.allows_request()
    clock.advance(25)
    assert breaker.allows_request()


def test_retry_after_http_date(clock: FakeClock) -> None:
    breaker = make(clock, failures=1)
    when = datetime.fromtimestamp(clock.wall() + 90, UTC)
    fail(breaker, RATE_LIMIT, 429, retry_after=format_datetime(when, usegmt=True))
    clock.advance(89)
    assert not breaker.allows_request()
    clock.advance(1)
    assert breaker.allows_request()


def test_retry_after_is_capped(clock: FakeClock) -> None:
    breaker = make(clock, failures=1, max_retry_after_s=600)
    fail(breaker, RATE_LIMIT, 429, retry_after="999999999")
    assert breaker.snapshot()["retry_in_s"] == 600.0


def test_retry_after_of_an_earlier_failure_is_remembered(clock: FakeClock) -> None:
    breaker = make(clock, failures=2)
    fail(breaker, RATE_LIMIT, 429, retry_after="100")  # does not open: 1 of 2
    clock.advance(10)
    fail(breaker, SERVER, 503)  # opens; the 429 asked for 90 more seconds
    clock.advance(89)
    assert not breaker.allows_request()
    clock.advance(1)
    assert breaker.allows_request()


def test_stale_outcomes_are_ignored(clock: FakeClock) -> None:
    breaker = make(clock)
    old = breaker.acquire()  # a long stream that began while closed
    assert old is not None
    trip(breaker)
    # Its failure arrives while open: old news, no new open, no change of retry time.
    retry_at = breaker.snapshot()["retry_at"]
    assert breaker.record_failure(old, SERVER, 500) is None
    assert breaker.snapshot()["retry_at"] == retry_at
    clock.advance(30)
    trial = breaker.acquire()
    assert trial is not None
    breaker.record_success(trial)
    # Nor may an old success or failure touch the newly closed breaker's count.
    assert breaker.record_success(old) is None
    assert breaker.record_failure(old, SERVER, 500) is None
    assert breaker.failures_in_window() == 0
    # And the trial's permit is stale once it has done its job.
    assert breaker.record_failure(trial, SERVER, 500) is None
    assert breaker.state() is BreakerState.CLOSED


def test_a_lost_trial_gives_its_slot_back_after_the_timeout(clock: FakeClock) -> None:
    breaker = make(clock, trial_timeout_s=60)
    trip(breaker)
    clock.advance(30)
    first = breaker.acquire()
    assert first is not None
    clock.advance(59)
    assert breaker.acquire() is None
    clock.advance(1)
    second = breaker.acquire()
    assert second is not None and second.trial
    # A late verdict from the first trial still counts: it is news about this open period.
    assert breaker.record_success(first) is BreakerState.CLOSED
    assert breaker.record_failure(second, SERVER, 500) is None  # now stale


def test_release_frees_the_trial_slot(clock: FakeClock) -> None:
    breaker = make(clock)
    trip(breaker)
    clock.advance(30)
    trial = breaker.acquire()
    assert trial is not None
    breaker.release(trial)
    assert breaker.state() is BreakerState.HALF_OPEN
    assert breaker.acquire() is not None
    breaker.release(Permit("zai", 0))  # a closed-state permit: nothing to release


def test_reset_closes_and_forgets(clock: FakeClock) -> None:
    breaker = make(clock)
    fail(breaker, AUTH, 401)
    breaker.reset()
    assert breaker.state() is BreakerState.CLOSED
    snap = breaker.snapshot()
    assert snap["last_failure"] is None and snap["open_reason"] is None


def test_reconfigure_keeps_state_and_newest_failures(clock: FakeClock) -> None:
    breaker = make(clock, failures=5)
    for _ in range(4):
        fail(breaker)
    breaker.reconfigure(failures=3, window_s=60, cooldown_s=10)
    assert breaker.failures_in_window() == 3
    assert fail(breaker) is BreakerState.OPEN
    clock.advance(10)
    assert breaker.allows_request()
    with pytest.raises(ValueError):
        breaker.reconfigure(failures=0, window_s=60, cooldown_s=10)


def test_memory_is_bounded_by_the_threshold(clock: FakeClock) -> None:
    breaker = make(clock, failures=3, window_s=1)
    for _ in range(1000):
        fail(breaker)
        clock.advance(2)  # never 3 within a second
    assert len(breaker._failures) == 3
    assert breaker.state() is BreakerState.CLOSED


def test_snapshot_times_are_wall_clock_iso_utc(clock: FakeClock) -> None:
    breaker = make(clock)
    trip(breaker)
    clock.advance(10)
    snap = breaker.snapshot()
    opened = datetime.fromisoformat(snap["opened_at"])
    retry = datetime.fromisoformat(snap["retry_at"])
    assert opened.tzinfo is not None and opened.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert opened.timestamp() == pytest.approx(WALL_START, abs=1)
    assert (retry - opened).total_seconds() == pytest.approx(30, abs=1)
    assert snap["retry_in_s"] == 20.0
    assert snap["last_failure"] == {
        "kind": SERVER,
        "status": 503,
        "at": snap["opened_at"],
        "text": "503 server error",
    }
    assert set(snap) >= {"state", "failures", "opened_at", "retry_at", "last_failure", "message"}


def test_from_config(clock: FakeClock) -> None:
    config = validate({"breaker": {"failures": 2, "window_s": 10, "cooldown_s": 5}})
    breaker = CircuitBreaker.from_config("zai", config.breaker, clock=clock.monotonic, wall=clock.wall)
    assert (breaker.threshold, breaker.window_s, breaker.cooldown_s) == (2, 10.0, 5.0)
    assert breaker.label == "zai"


@pytest.mark.parametrize(
    "kwargs", [{"failures": 0}, {"window_s": 0}, {"cooldown_s": -1}, {"trial_timeout_s": 0}]
)
def test_rejects_nonsense_settings(clock: FakeClock, kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        make(clock, **kwargs)


# A table of whole scenarios: (events, expected state at the end). Events: "f" a 503, "a" a 401,
# "s" a success, "+N" advance N seconds, "t" acquire the trial and record success, "x" acquire the
# trial and record a 503.
@pytest.mark.parametrize(
    ("script", "state"),
    [
        ("", "closed"),
        ("f f", "closed"),
        ("f f f", "open"),
        ("f s f s f", "open"),
        ("f +30 f +31 f", "closed"),  # the first one aged out
        ("f f f +29", "open"),
        ("f f f +30", "half_open"),
        ("f f f +30 t", "closed"),
        ("f f f +30 x", "open"),
        ("f f f +30 x +30", "half_open"),
        ("f f f +30 x +30 t", "closed"),
        ("a", "open"),
        ("a +30 t", "closed"),
        ("a +30 t f f", "closed"),
    ],
)
def test_scenarios(clock: FakeClock, script: str, state: str) -> None:
    breaker = make(clock)
    for step in script.split():
        if step.startswith("+"):
            clock.advance(float(step[1:]))
        elif step == "f":
            fail(breaker)
        elif step == "a":
            fail(breaker, AUTH, 401)
        elif step == "s":
            permit = breaker.acquire()
            assert permit is not None
            breaker.record_success(permit)
        elif step in ("t", "x"):
            trial = breaker.acquire()
            assert trial is not None and trial.trial
            if step == "t":
                breaker.record_success(trial)
            else:
                breaker.record_failure(trial, SERVER, 503)
    assert str(breaker.state()) == state
    assert breaker.allows_request() == (state != "open")
