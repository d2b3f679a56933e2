"""Z.AI as it really is, against the real daemon and the fake's Z.AI flavour: its stream
shape, its refusals (a hold at the first quota/billing refusal, one trial after the reset), and an
unreachable lane known at once."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest

from ccmitm.cli.control import format_status
from ccmitm.testing.ports import free_port
from tests.e2e.test_claude_code import claude_bin, run_claude
from tests.helpers import Daemon, post, status, wait_for

__all__ = ["claude_bin"]  # a fixture shared with test_claude_code.py

pytestmark = pytest.mark.e2e

BEIJING = timezone(timedelta(hours=8))


@pytest.mark.parametrize("stream", [False, True])
def test_usage_from_a_zai_shaped_reply_takes_the_message_delta_counts(
    daemon: Daemon, upstreams, stream
) -> None:
    _, zai = upstreams
    zai.flavour = "zai"
    response = post(daemon, stream=stream)
    assert response.status_code == 200
    if stream:
        assert b'"service_tier"' in response.content and b"event: ping" in response.content
    line = daemon.wait_usage(1)[-1]
    assert line["lane"] == "zai" and line["reason"] == "rule"
    # Not the zeros of message_start: the final message_delta's counts, cache reads included.
    assert (line["input_tokens"], line["output_tokens"], line["cache_read_input_tokens"]) == (11, 7, 3)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("code", "words"),
    [
        ("1308", "5-hour quota used up (1308) — Haiku stays on anthropic until "),
        ("1310", "weekly/monthly quota used up (1310) — Haiku stays on anthropic until "),
        ("1113", "insufficient balance (1113) — top up, then `ccctl lane reset zai`"),
    ],
)
def test_a_sticky_refusal_reaches_zai_once_in_six_calls(
    daemon: Daemon, upstreams, code: str, words: str, stream: bool
) -> None:
    anthropic, zai = upstreams
    zai.zai_refusal = code
    for _ in range(6):
        response = post(daemon, stream=stream)
        assert response.status_code == 200  # Claude Code's side sees six answers
        if stream:
            assert b"message_stop" in response.content
    assert len(zai.messages()) == 1  # Z.AI receives exactly one of them
    assert len(anthropic.messages()) == 6
    lines = daemon.wait_usage(7)
    assert [line["reason"] for line in lines[2:]] == ["lane_hold"] * 5
    assert lines[0]["refusal"] in {"quota", "billing"} and lines[2]["hold"] == lines[0]["refusal"]
    assert all(line["stream"] == stream for line in lines[2:])
    report = status(daemon)
    hold = report["lanes"]["zai"]["hold"]
    assert hold["code"] == code
    assert (hold["until"] is not None) == (code != "1113")
    assert f"zai: {words}" in format_status(report)  # status names the cause (and the resume time)
    audit = daemon.ccctl("verify")  # the holds are explained routing
    assert audit.returncode == 0, audit.stdout + audit.stderr
    if code == "1113":  # held until the user acts
        assert "top up" in daemon.ccctl("status", check=True).stdout
        zai.zai_refusal = None
        assert "hold ended" in daemon.ccctl("lane", "reset", "zai", check=True).stdout
        assert post(daemon).status_code == 200
        assert len(zai.messages()) == 2 and status(daemon)["lanes"]["zai"]["hold"] is None


def test_after_a_short_quota_reset_one_trial_brings_the_lane_back(daemon: Daemon, upstreams) -> None:
    _, zai = upstreams
    zai.zai_refusal = "1308"
    zai.zai_reset_at = datetime.now(BEIJING) + timedelta(seconds=2)
    assert post(daemon).status_code == 200
    assert post(daemon).status_code == 200
    assert len(zai.messages()) == 1
    zai.zai_refusal = None
    # The reset time passes: the next call is the trial, it succeeds, the lane is back.
    wait_for(lambda: datetime.now(BEIJING) > zai.zai_reset_at + timedelta(seconds=1), what="reset time")
    assert post(daemon).status_code == 200
    assert len(zai.messages()) == 2
    assert status(daemon)["lanes"]["zai"]["hold"] is None
    assert post(daemon).status_code == 200
    assert len(zai.messages()) == 3
    # The daemon log: one line when the hold started, one when it ended, not one per call.
    wait_for(lambda: "hold ended" in daemon.stderr(), what="the hold's end in the log")
    log = daemon.stderr()
    assert log.count("lane zai HOLD") == 1 and log.count("hold ended") == 1


@pytest.mark.parametrize("code", ["1302", "1305"])
def test_transient_codes_keep_todays_breaker(make_daemon, upstreams, code: str) -> None:
    _, zai = upstreams
    daemon = make_daemon(
        lambda config: config.update(breaker={"failures": 2, "window_s": 60, "cooldown_s": 60})
    )
    zai.zai_refusal = code
    for _ in range(4):
        assert post(daemon).status_code == 200
    assert len(zai.messages()) == 2  # the breaker counted to its threshold, as before
    lane = status(daemon)["lanes"]["zai"]
    assert lane["hold"] is None and lane["breaker"]["state"] == "open"


def test_unsafe_content_does_not_count_against_the_lane(make_daemon, upstreams) -> None:
    _, zai = upstreams
    daemon = make_daemon(
        lambda config: config.update(breaker={"failures": 2, "window_s": 60, "cooldown_s": 60})
    )
    zai.zai_refusal = "1301"
    for _ in range(4):
        post(daemon)
    assert len(zai.messages()) == 4
    lane = status(daemon)["lanes"]["zai"]
    assert lane["hold"] is None and lane["breaker"]["state"] == "closed" and lane["breaker"]["failures"] == 0


def test_an_unreachable_lane_is_known_at_the_first_call(make_daemon, upstreams) -> None:
    anthropic, _ = upstreams
    closed = free_port()  # nothing listens here
    daemon = make_daemon(lambda config: config["lanes"]["zai"].update(url=f"http://127.0.0.1:{closed}"))
    first = post(daemon)
    assert first.status_code in (200, 502)  # it fails (or fails over)
    second = post(daemon)
    assert second.status_code == 200
    assert len(anthropic.messages()) >= 1
    lines = daemon.wait_usage(2)
    assert lines[-1]["lane"] == "anthropic" and lines[-1]["reason"] == "breaker"
    breaker = status(daemon)["lanes"]["zai"]["breaker"]
    assert breaker["state"] == "open" and breaker["open_reason"] == "connect"


@pytest.mark.claude
def test_claude_code_succeeds_when_the_offload_lane_is_unreachable(
    claude_bin, make_daemon, upstreams
) -> None:
    anthropic, _ = upstreams
    anthropic.reply_text = "ok from the Anthropic lane"
    closed = free_port()
    daemon = make_daemon(lambda config: config["lanes"]["zai"].update(url=f"http://127.0.0.1:{closed}"))
    started = time.monotonic()
    result = run_claude(claude_bin, daemon, "haiku", daemon.reverse_env)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok from the Anthropic lane"
    haiku = [line for line in daemon.usage_lines() if "haiku" in (line["model"] or "")]
    # One connect failure, then Claude Code's own retry already lands on Anthropic.
    assert sum(1 for line in haiku if line["lane"] == "zai") == 1, haiku
    assert any(line["lane"] == "anthropic" and line["reason"] == "breaker" for line in haiku)
    print(f"Claude Code answered in {elapsed:.1f} s with the offload lane unreachable")
