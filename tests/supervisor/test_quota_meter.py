"""The quota meter poller against the fake Z.AI: the raw lane key, only zai lanes, only when due,
"unknown" (logged once, nothing secret) when the meter fails. The clock is injected."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from ccmitm.config.load import LoadedConfig, validate
from ccmitm.core.quota import FIRST_POLL_S
from ccmitm.proxy.state import LaneStats, Runtime, Snapshot
from ccmitm.supervisor.quota import QuotaMeter, meter_url
from ccmitm.testing.fakeupstream import FakeUpstream
from tests.helpers import ZAI_KEY

OTHER_KEY = "fedcba9876543210fedcba9876543210.OtherKey12345678"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fakes() -> Iterator[tuple[FakeUpstream, FakeUpstream]]:
    anthropic = FakeUpstream("anthropic").start()
    zai = FakeUpstream("zai").start()
    try:
        yield anthropic, zai
    finally:
        anthropic.stop()
        zai.stop()


def runtime_for(anthropic: FakeUpstream, zai: FakeUpstream, **zai_lane: object) -> Runtime:
    raw = {
        "lanes": {
            "anthropic": {"url": anthropic.url},
            "zai": {"url": zai.url + "/api/anthropic", "api_key_env": "ZAI_API_KEY", **zai_lane},
            # A keyed lane that is not Z.AI must never get a meter request.
            "other": {"url": anthropic.url + "/other", "api_key_env": "OTHER_KEY"},
        }
    }
    loaded = LoadedConfig(validate(raw), "<test>", datetime.now(UTC))
    return Runtime(Snapshot.build(loaded, {"ZAI_API_KEY": ZAI_KEY, "OTHER_KEY": OTHER_KEY}))


async def settle(meter: QuotaMeter) -> None:
    """Let the polls that tick() started finish (bounded)."""
    for _ in range(200):
        if not meter._tasks:
            return
        await asyncio.sleep(0.02)
    raise TimeoutError("quota poll did not finish")


def run_ticks(meter: QuotaMeter, clock: Clock, times: list[float]) -> None:
    async def go() -> None:
        try:
            for moment in times:
                clock.now = moment
                meter.tick()
                await settle(meter)
        finally:
            await meter.close()

    asyncio.run(go())


def test_meter_url_is_the_lane_origin() -> None:
    assert meter_url("https://api.z.ai/api/anthropic") == "https://api.z.ai/api/monitor/usage/quota/limit"
    assert meter_url("http://127.0.0.1:9/x/y") == "http://127.0.0.1:9/api/monitor/usage/quota/limit"


def test_a_zai_lane_is_read_with_its_raw_key_and_no_other_lane_is_asked(
    fakes: tuple[FakeUpstream, FakeUpstream],
) -> None:
    anthropic, zai = fakes
    clock = Clock()
    meter = QuotaMeter(runtime_for(anthropic, zai, provider="zai"), clock=clock)
    run_ticks(meter, clock, [1000.0, 1000.0 + FIRST_POLL_S])
    requests = zai.quota_requests()
    assert len(requests) == 1
    assert requests[0].method == "GET"
    assert requests[0].header("authorization") == ZAI_KEY  # raw: no "Bearer"
    assert not requests[0].has_header("x-api-key")
    assert anthropic.received == []
    status = meter.status("zai")
    assert status is not None and status["state"] == "ok"
    assert status["five_hour"] is not None and status["five_hour"]["percent"] == 37
    assert status["week"] is not None and status["week"]["percent"] == 12
    assert status["five_hour"]["resets_at"] and status["checked_at"]
    assert meter.status("other") is None and meter.status("anthropic") is None


def test_a_lane_that_is_not_zai_has_no_meter(fakes: tuple[FakeUpstream, FakeUpstream]) -> None:
    anthropic, zai = fakes  # a 127.0.0.1 URL is no z.ai host: no provider detected
    clock = Clock()
    meter = QuotaMeter(runtime_for(anthropic, zai), clock=clock)
    run_ticks(meter, clock, [1000.0, 1000.0 + FIRST_POLL_S, 2000.0])
    assert zai.received == [] and meter.status("zai") is None


def test_no_meter_when_quota_poll_s_is_null(fakes: tuple[FakeUpstream, FakeUpstream]) -> None:
    anthropic, zai = fakes
    clock = Clock()
    meter = QuotaMeter(runtime_for(anthropic, zai, provider="zai", quota_poll_s=None), clock=clock)
    run_ticks(meter, clock, [1000.0, 1000.0 + FIRST_POLL_S])
    assert zai.received == [] and meter.status("zai") is None


def test_it_polls_again_only_while_the_lane_carries_traffic(fakes: tuple[FakeUpstream, FakeUpstream]) -> None:
    anthropic, zai = fakes
    clock = Clock()
    runtime = runtime_for(anthropic, zai, provider="zai", quota_poll_s=60)
    meter = QuotaMeter(runtime, clock=clock)

    async def go() -> None:
        try:
            for moment in (1000.0, 1005.0, 1100.0, 1200.0):  # the first poll, then idle
                clock.now = moment
                meter.tick()
                await settle(meter)
            assert len(zai.quota_requests()) == 1
            runtime.stats["zai"] = LaneStats(requests=1)  # a call went through the lane
            clock.now = 1300.0
            meter.tick()
            await settle(meter)
            assert len(zai.quota_requests()) == 2
            clock.now = 1330.0  # within the interval: not yet
            meter.tick()
            await settle(meter)
            assert len(zai.quota_requests()) == 2
        finally:
            await meter.close()

    asyncio.run(go())


@pytest.mark.parametrize("mode", ["404", "garbage"])
def test_a_failing_meter_is_unknown_and_logged_once_without_secrets(
    fakes: tuple[FakeUpstream, FakeUpstream], mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    anthropic, zai = fakes
    zai.quota_mode = mode
    clock = Clock()
    runtime = runtime_for(anthropic, zai, provider="zai", quota_poll_s=10)
    runtime.stats["zai"] = LaneStats(requests=1)
    meter = QuotaMeter(runtime, clock=clock)
    with caplog.at_level(logging.DEBUG, logger="ccmitm"):
        run_ticks(meter, clock, [1000.0, 1010.0, 1020.0, 1030.0])
    assert len(zai.quota_requests()) >= 2  # it kept asking (quietly)
    status = meter.status("zai")
    assert status is not None and status["state"] == "unknown"
    assert status["five_hour"] is None and status["week"] is None
    lines = [r.getMessage() for r in caplog.records if "quota meter" in r.getMessage()]
    assert len(lines) == 1, lines
    assert ZAI_KEY not in caplog.text
    assert "<html" not in caplog.text and '{"error"' not in caplog.text  # never the body


def test_an_unreachable_meter_is_unknown(fakes: tuple[FakeUpstream, FakeUpstream]) -> None:
    anthropic, zai = fakes
    clock = Clock()
    runtime = runtime_for(anthropic, zai, provider="zai")
    zai.stop()  # the port closes: a connect error
    meter = QuotaMeter(runtime, clock=clock)
    run_ticks(meter, clock, [1000.0, 1000.0 + FIRST_POLL_S])
    status = meter.status("zai")
    assert status is not None and status["state"] == "unknown" and status["checked_at"]


def test_the_meter_goes_through_proxy_upstream_proxy(fakes: tuple[FakeUpstream, FakeUpstream]) -> None:
    anthropic, zai = fakes
    forward = FakeUpstream("forward-proxy").start()  # records the absolute-form request a proxy gets
    try:
        raw = {
            "proxy": {"upstream_proxy": forward.url},
            "lanes": {
                "anthropic": {"url": anthropic.url},
                "zai": {"url": zai.url + "/api/anthropic", "api_key_env": "ZAI_API_KEY", "provider": "zai"},
            },
        }
        loaded = LoadedConfig(validate(raw), "<test>", datetime.now(UTC))
        clock = Clock()
        meter = QuotaMeter(Runtime(Snapshot.build(loaded, {"ZAI_API_KEY": ZAI_KEY})), clock=clock)
        run_ticks(meter, clock, [1000.0, 1000.0 + FIRST_POLL_S])
        assert [r.path for r in forward.received] == [zai.url + "/api/monitor/usage/quota/limit"]
        assert zai.received == []  # it did not go direct
    finally:
        forward.stop()
