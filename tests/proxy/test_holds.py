"""Holds in the Router, in process: the first quota/billing/auth/config refusal takes the lane out of
rotation; the refused call fails over, the next calls go straight to the default lane (reason
lane_hold, the class in the usage line); a trial after the hold ends brings the lane back."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from mitmproxy.test import taddons, tutils

from ccmitm.config.load import LoadedConfig, validate
from ccmitm.core.routing import OVERRIDE_REASONS
from ccmitm.proxy.state import Snapshot
from tests.helpers import ZAI_KEY
from tests.proxy.test_addon import CONFIG, HAIKU, Fixture, answer, messages_flow, send


class Wall:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC).timestamp()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def held() -> Iterator[tuple[Fixture, Wall]]:
    fixture = Fixture()
    wall = Wall()
    fixture.runtime.wall = wall
    for hold in fixture.runtime.holds.values():
        hold._wall = wall  # the fixture built its holds before the clock was planted
    with taddons.context(fixture.router) as context:
        fixture.loop = context.master.event_loop
        yield fixture, wall


def refusal(code: str, message: str = "refused", old: bool = False) -> bytes:
    error = (
        {"type": code, "message": message}
        if old
        else {"type": "rate_limit_error", "code": code, "message": message}
    )
    return json.dumps({"type": "error", "error": error}).encode()


QUOTA_5H = refusal("1308", "Usage limit reached for 5 hour. Your limit will reset at 2026-12-01 20:30:00")
WEEKLY = refusal("1310", "Weekly/Monthly Limit Exhausted")
BILLING = refusal("1113", "Insufficient balance or no resource package. Please recharge.", old=True)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("body", "cls", "until"),
    [(QUOTA_5H, "quota", "2026-12-01T12:30:00+00:00"), (WEEKLY, "quota", None), (BILLING, "billing", None)],
)
def test_six_calls_one_refusal_reaches_the_lane(
    held: tuple[Fixture, Wall], stream: bool, body: bytes, cls: str, until: str | None
) -> None:
    fx, _wall = held
    retry_ms = None
    if body is WEEKLY:  # 1310 with retry-after-ms (and no time in its message)
        retry_ms, until = "90000", "2026-12-01T12:01:30+00:00"
    hosts = [_call_with_headers(fx, stream, body, retry_ms) for _ in range(6)]
    assert hosts.count("zai.test") == 1, hosts  # Z.AI receives exactly one of the six
    reasons = [record.reason for record in fx.records]
    assert reasons[:2] == ["rule", "failover"]
    assert reasons[2:] == ["lane_hold"] * 5
    assert {record.hold for record in fx.records[2:]} == {cls}
    assert fx.records[0].refusal == cls
    assert "lane_hold" in {str(reason) for reason in OVERRIDE_REASONS}  # verify counts it as explained
    snap = fx.runtime.holds["zai"].snapshot()
    assert snap is not None and snap["cls"] == cls and snap["until"] == until
    # Held: the breaker counted nothing, it is the hold that keeps the lane out.
    assert fx.runtime.breakers["zai"].failures_in_window() == 0


def _call_with_headers(fx: Fixture, stream: bool, body: bytes, retry_ms: str | None = None) -> str:
    """One Haiku call, refused with ``body`` if it reaches Z.AI; the host it was routed to. The
    client must see a 200 either way (the refusal is answered by the default lane)."""
    flow = messages_flow(body={"model": HAIKU, "max_tokens": 8, "messages": [], "stream": stream})
    send(fx.router, flow)
    routed_to = flow.request.host
    if routed_to != "zai.test":
        answer(fx, flow)
    else:
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if retry_ms:
            headers.append((b"retry-after-ms", retry_ms.encode()))
        flow.response = tutils.tresp(status_code=429, content=b"", headers=headers)
        fx.router.responseheaders(flow)
        flow.response.content = body
        fx.run(fx.router.response(flow))
    assert flow.response is not None and flow.response.status_code == 200
    return routed_to


def test_after_the_reset_one_trial_goes_to_the_lane_and_brings_it_back(held: tuple[Fixture, Wall]) -> None:
    fx, wall = held
    assert _call_with_headers(fx, False, QUOTA_5H) == "zai.test"
    assert _call_with_headers(fx, False, QUOTA_5H) == "anthropic.test"
    wall.now += 31 * 60  # past 20:30 Beijing time
    trial = messages_flow()
    send(fx.router, trial)
    assert trial.request.host == "zai.test"
    other = messages_flow()
    send(fx.router, other)  # while the trial is out, everyone else stays on the default lane
    assert other.request.host == "anthropic.test"
    answer(fx, other)
    answer(fx, trial)  # the trial succeeds
    assert fx.runtime.holds["zai"].snapshot() is None
    after = messages_flow()
    send(fx.router, after)
    assert after.request.host == "zai.test"


def test_a_trial_refused_again_renews_the_hold(held: tuple[Fixture, Wall]) -> None:
    fx, wall = held
    _call_with_headers(fx, False, QUOTA_5H)
    wall.now += 31 * 60
    assert _call_with_headers(fx, False, refusal("1308", "reset at 2026-12-01 23:00:00")) == "zai.test"
    snap = fx.runtime.holds["zai"].snapshot()
    assert snap is not None and snap["until"] == "2026-12-01T15:00:00+00:00"
    assert _call_with_headers(fx, False, QUOTA_5H) == "anthropic.test"


def test_lane_reset_ends_a_billing_hold(held: tuple[Fixture, Wall]) -> None:
    fx, _wall = held
    _call_with_headers(fx, False, BILLING)
    assert _call_with_headers(fx, False, BILLING) == "anthropic.test"
    assert fx.runtime.reset_lane("zai") is True
    assert fx.runtime.reset_lane("nope") is False
    assert _call_with_headers(fx, False, BILLING) == "zai.test"


@pytest.mark.parametrize("code", ["1302", "1305"])
def test_transient_codes_keep_the_breaker(held: tuple[Fixture, Wall], code: str) -> None:
    fx, _wall = held
    hosts = [_call_with_headers(fx, False, refusal(code)) for _ in range(6)]
    threshold = fx.runtime.breakers["zai"].threshold
    assert hosts.count("zai.test") == threshold  # today's behaviour: the breaker counts to its threshold
    assert fx.runtime.holds["zai"].snapshot() is None
    assert fx.runtime.breakers["zai"].snapshot()["state"] == "open"


def test_unsafe_content_does_not_count_against_the_lane(held: tuple[Fixture, Wall]) -> None:
    fx, _wall = held
    hosts = [_call_with_headers(fx, False, refusal("1301", "unsafe")) for _ in range(6)]
    assert hosts == ["zai.test"] * 6
    assert fx.runtime.breakers["zai"].failures_in_window() == 0
    assert fx.runtime.holds["zai"].snapshot() is None
    assert fx.records[0].refusal == "content"


def test_a_plain_400_still_reaches_the_client_as_sent(held: tuple[Fixture, Wall]) -> None:
    fx, _wall = held
    flow = messages_flow()
    send(fx.router, flow)
    answer(fx, flow, 400, b'{"type":"error","error":{"type":"invalid_request_error","message":"bad"}}')
    assert flow.response is not None and flow.response.status_code == 400
    assert [record.reason for record in fx.records] == ["rule"]
    assert fx.seen == []


def _swap(fx: Fixture, mutate) -> None:
    config = copy.deepcopy(CONFIG)
    mutate(config)
    loaded = LoadedConfig(validate(config), "test", datetime.now(UTC))
    fx.runtime.swap(Snapshot.build(loaded, {"ZAI_API_KEY": ZAI_KEY}))


def test_a_config_hold_names_the_rules_model_and_a_fixed_rule_ends_it(held: tuple[Fixture, Wall]) -> None:
    fx, _wall = held
    wrong_model = json.dumps(
        {
            "type": "error",
            "error": {"type": "invalid_request_error", "code": "1211", "message": "Unknown Model"},
        }
    ).encode()
    flow = messages_flow()
    send(fx.router, flow)
    answer(fx, flow, 400, wrong_model)
    assert flow.response is not None and flow.response.status_code == 200  # failed over
    snap = fx.runtime.holds["zai"].snapshot()
    assert snap is not None and snap["cls"] == "config"
    assert snap["words"] == "model does not exist: glm-4.5-air (rule *haiku*)"
    _swap(fx, lambda config: config["lanes"]["zai"].update(url="https://zai.test/api/anthropic"))
    assert fx.runtime.holds["zai"].held  # nothing changed: still held
    _swap(fx, lambda config: config["routing"]["rules"][0].update(model="glm-4.6"))
    assert not fx.runtime.holds["zai"].held


def test_a_quota_hold_survives_a_rule_change_but_not_a_new_key(held: tuple[Fixture, Wall]) -> None:
    fx, _wall = held
    _call_with_headers(fx, False, QUOTA_5H)
    _swap(fx, lambda config: config["routing"]["rules"][0].update(model="glm-4.6"))
    assert fx.runtime.holds["zai"].held
    loaded = fx.runtime.active.loaded
    fx.runtime.swap(Snapshot.build(loaded, {"ZAI_API_KEY": ZAI_KEY + "-new"}))
    assert not fx.runtime.holds["zai"].held


def test_an_upstream_message_echoing_a_key_never_reaches_status(held: tuple[Fixture, Wall]) -> None:
    """Z.AI's message is shown by `ccctl status`: a key it echoes (the lane's, or any pattern)
    is scrubbed first, and control characters cannot break the line."""
    fx, _wall = held
    echoed = f"Insufficient balance for key bad{ZAI_KEY}\r\nx-api-key: sk-ant-api03-{'A' * 40}"
    _call_with_headers(fx, False, refusal("1113", echoed, old=True))
    snap = fx.runtime.holds["zai"].snapshot()
    assert snap is not None and snap["cls"] == "billing"
    shown = json.dumps(snap)
    assert ZAI_KEY not in shown and "sk-ant-api03-" not in shown and "\\r" not in shown
    assert "Insufficient balance" in snap["message"]
