"""The per-session counters behind `ccctl statusline`: lanes, refusals, offloaded tokens, LRU bound."""

from __future__ import annotations

from typing import Any

from ccmitm.logs.usage import UsageRecord
from ccmitm.supervisor.sessions import MAX_MODELS, REFUSED, SessionCounters, estimate_savings


def record(session: str | None, lane: str | None, **fields: Any) -> UsageRecord:
    base: dict[str, Any] = dict(
        ts="2026-01-01T00:00:00+00:00",
        id="r",
        listener="reverse",
        lane=lane,
        rule=None,
        reason="rule",
        method="POST",
        path="/v1/messages",
        model="claude-haiku-4-5",
        upstream_model=None,
        status=200,
        stream=False,
        ttfb_ms=1.0,
        duration_ms=2.0,
        input_tokens=10,
        output_tokens=5,
        cache_read_input_tokens=0,
        cache_creation_input_tokens=0,
        header_mode="x-api-key",
        http_version="HTTP/1.1",
        upstream_http_version="HTTP/1.1",
        session=session,
        error=None,
    )
    base.update(fields)
    return UsageRecord(**base)


def counters(limit: int = 256) -> SessionCounters:
    return SessionCounters(lambda: "anthropic", limit)


def test_calls_per_lane_last_lane_and_offloaded_tokens_of_one_session() -> None:
    sessions = counters()
    sessions.observe(record("a", "zai"))
    sessions.observe(record("a", "zai", input_tokens=100, output_tokens=None))
    sessions.observe(record("a", "anthropic", model="claude-sonnet-4-5", input_tokens=999))
    sessions.observe(record("b", "zai"))
    tally = sessions.get("a")
    assert tally is not None
    assert tally.calls == {"zai": 2, "anthropic": 1}
    assert tally.last_lane == "anthropic"
    offloaded = tally.offloaded["claude-haiku-4-5"]
    # The default lane's tokens are not offloaded; a missing count counts as 0.
    assert (offloaded.calls, offloaded.input_tokens, offloaded.output_tokens) == (2, 110, 5)
    assert sessions.get("b").calls == {"zai": 1}  # type: ignore[union-attr]


def test_a_call_ccmitm_answered_itself_counts_as_refused_and_offloads_nothing() -> None:
    sessions = counters()
    sessions.observe(record("a", None, reason="unauthenticated", status=407, input_tokens=None))
    tally = sessions.get("a")
    assert tally is not None
    assert tally.calls == {REFUSED: 1} and tally.last_lane is None and tally.errors == 1
    assert tally.offloaded == {}


def test_records_without_a_session_are_not_kept() -> None:
    sessions = counters()
    sessions.observe(record(None, "zai"))
    sessions.observe(record("", "zai"))
    assert len(sessions) == 0


def test_the_least_recently_active_session_is_dropped_first() -> None:
    sessions = counters(limit=3)
    for name in ("a", "b", "c"):
        sessions.observe(record(name, "zai"))
    sessions.observe(record("a", "zai"))  # a is active again: b is now the oldest
    sessions.observe(record("d", "zai"))
    assert len(sessions) == 3
    assert sessions.get("b") is None
    assert all(sessions.get(name) is not None for name in ("a", "c", "d"))


def test_models_per_session_are_bounded() -> None:
    sessions = counters()
    for index in range(MAX_MODELS + 5):
        sessions.observe(record("a", "zai", model=f"haiku-{index}"))
    tally = sessions.get("a")
    assert tally is not None
    assert len(tally.offloaded) == MAX_MODELS + 1  # the rest share "other"
    assert tally.offloaded["other"].calls == 5


def test_the_default_lane_is_read_per_record_so_a_reload_applies() -> None:
    default = ["anthropic"]
    sessions = SessionCounters(lambda: default[0])
    sessions.observe(record("a", "zai"))
    default[0] = "zai"
    sessions.observe(record("a", "zai"))
    assert sessions.get("a").offloaded["claude-haiku-4-5"].calls == 1  # type: ignore[union-attr]


def test_savings_use_the_config_pricing_first_then_the_builtin_estimate() -> None:
    sessions = counters()
    sessions.observe(record("a", "zai", input_tokens=1_000_000, output_tokens=1_000_000))
    sessions.observe(record("a", "zai", model="mystery", input_tokens=1_000_000, output_tokens=0))
    offloaded = sessions.get("a").offloaded  # type: ignore[union-attr]
    assert estimate_savings(offloaded, {}) == 6.0  # built in: Haiku at 1 in / 5 out per Mtok
    configured = {
        "*haiku*": {"input_per_mtok": 0.5, "output_per_mtok": 1.5},
        "mys*": {"input_per_mtok": 2, "output_per_mtok": 2},
    }
    assert estimate_savings(offloaded, configured) == 4.0
    assert estimate_savings({"mystery": offloaded["mystery"]}, {}) is None
