"""The refusal table: Z.AI's two envelopes, its codes, reset times; and the hold it puts on a lane."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from ccmitm.core.refusals import MAX_HOLD_S, LaneHold, RefusalClass, classify, plain_words

NOW = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC).timestamp()


def old(code: str, message: str = "refused") -> bytes:
    return json.dumps({"type": "error", "error": {"type": code, "message": message}}).encode()


def new(code: str, message: str = "refused", kind: str = "rate_limit_error") -> bytes:
    return json.dumps({"type": "error", "error": {"type": kind, "code": code, "message": message}}).encode()


@pytest.mark.parametrize(
    ("status", "body", "cls"),
    [
        (429, old("1113", "Insufficient balance or no resource package"), RefusalClass.BILLING),
        (429, new("1113"), RefusalClass.BILLING),
        (403, old("1120"), RefusalClass.BILLING),
        (401, new("1001", kind="authentication_error"), RefusalClass.AUTH),
        (400, new("1211", kind="invalid_request_error"), RefusalClass.CONFIG),
        (400, old("1210"), RefusalClass.CONFIG),
        (400, new("1301", kind="invalid_request_error"), RefusalClass.CONTENT),
        (429, new("1302"), RefusalClass.TRANSIENT),
        (429, new("1303"), RefusalClass.TRANSIENT),
        (529, new("1305", kind="overloaded_error"), RefusalClass.TRANSIENT),
        (429, new("1308"), RefusalClass.QUOTA),
        (429, new("1310"), RefusalClass.QUOTA),
        (429, old("1317"), RefusalClass.QUOTA),
        # Anthropic-shaped defaults: no code, the status decides.
        (429, new("", kind="rate_limit_error"), RefusalClass.TRANSIENT),
        (503, b"", RefusalClass.TRANSIENT),
        (401, b"not json", RefusalClass.AUTH),
    ],
)
def test_the_table_classes_every_code_and_envelope(status: int, body: bytes, cls: RefusalClass) -> None:
    refusal = classify(status, body, {}, NOW)
    assert refusal is not None and refusal.cls is cls


def test_no_refusal_for_a_success_or_a_plain_client_error() -> None:
    assert classify(200, new("1308"), {}, NOW) is None
    assert classify(400, b'{"type":"error","error":{"type":"invalid_request_error"}}', {}, NOW) is None


def test_the_reset_time_in_the_message_is_beijing_time() -> None:
    message = "Usage limit reached for 5 hour. Your limit will reset at 2026-12-01 23:15:09"
    refusal = classify(429, new("1308", message), {}, NOW)
    assert refusal is not None and refusal.until is not None
    assert datetime.fromtimestamp(refusal.until, UTC) == datetime(2026, 12, 1, 15, 15, 9, tzinfo=UTC)
    assert refusal.code == "1308" and refusal.words == "5-hour quota used up"


def test_retry_after_ms_then_retry_after_and_a_cap() -> None:
    refusal = classify(429, new("1310", "weekly limit"), {"retry-after-ms": "90000"}, NOW)
    assert refusal is not None and refusal.until == NOW + 90
    refusal = classify(429, old("1308"), {"retry-after": "120"}, NOW)
    assert refusal is not None and refusal.until == NOW + 120
    refusal = classify(429, new("1308", "reset at 2099-01-01 00:00:00"), {}, NOW)
    assert refusal is not None and refusal.until == NOW + MAX_HOLD_S


class Wall:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def test_a_quota_hold_ends_with_one_trial_after_the_reset_time() -> None:
    wall = Wall()
    hold = LaneHold("zai", wall)
    assert hold.acquire() is None and hold.allows_request()
    refusal = classify(429, new("1310"), {"retry-after-ms": "60000"}, wall())
    assert refusal is not None
    assert hold.start(refusal) is True
    assert not hold.allows_request() and hold.acquire() is False
    wall.now += 59
    assert hold.acquire() is False
    wall.now += 2
    assert hold.allows_request()
    assert hold.acquire() is True  # the one trial
    assert hold.acquire() is False  # everyone else waits for its outcome
    snap = hold.snapshot()
    assert snap is not None and snap["trial_in_flight"] and snap["cls"] == "quota"
    assert hold.clear() is True  # the trial succeeded
    assert hold.acquire() is None and hold.snapshot() is None


def test_a_billing_hold_waits_for_the_user() -> None:
    wall = Wall()
    hold = LaneHold("zai", wall)
    refusal = classify(429, old("1113"), {}, wall())
    assert refusal is not None and refusal.until is None
    hold.start(refusal)
    wall.now += 30 * 24 * 3600
    assert hold.acquire() is False
    assert hold.clear() and hold.acquire() is None


def test_plain_words() -> None:
    billing = {"cls": "billing", "code": "1113", "words": "insufficient balance", "until": None}
    assert (
        plain_words("zai", billing)
        == "zai: insufficient balance (1113) — top up, then `ccctl lane reset zai`"
    )
    until = datetime.fromtimestamp(NOW + 3600, UTC).isoformat()
    quota = {"cls": "quota", "code": "1308", "words": "5-hour quota used up", "until": until}
    line = plain_words("zai", quota)
    assert line.startswith("zai: 5-hour quota used up (1308) — Haiku stays on anthropic until ")
    assert datetime.fromtimestamp(NOW + 3600).astimezone().strftime("%H:%M") in line
