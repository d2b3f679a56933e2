"""The Prometheus text: what a scrape shows for calls and for the daemon's state, read back with
prometheus_client's own parser; the /metrics server; the state read on the loop for its thread."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ccmitm import __version__
from ccmitm.config.load import LoadedConfig, validate
from ccmitm.control.protocol import LaneQuota
from ccmitm.core.refusals import Refusal, RefusalClass
from ccmitm.logs.usage import UsageRecord
from ccmitm.proxy.state import Runtime, Snapshot
from ccmitm.telemetry.measures import measure, provider_names
from ccmitm.telemetry.prometheus import MetricsServer, PrometheusMetrics
from ccmitm.telemetry.state import StateReading, StateSource, read_state
from ccmitm.testing.ports import free_port
from tests.helpers import ZAI_KEY
from tests.reports.lines import anthropic_line, line

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(found: Samples, name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


def runtime() -> Runtime:
    config = validate({})
    return Runtime(
        Snapshot.build(LoadedConfig(config, "test", datetime.now(UTC)), environ={"ZAI_API_KEY": ZAI_KEY})
    )


METER: LaneQuota = {
    "state": "ok",
    "five_hour": {"percent": 37.0, "resets_at": "2026-01-03T11:15:09+00:00"},
    "week": {"percent": 5.0, "resets_at": None},
    "checked_at": None,
}


def metrics_for(rt: Runtime, in_flight: int = 0) -> PrometheusMetrics:
    quota = {"zai": METER}
    return PrometheusMetrics(lambda: read_state(rt, quota.get, lambda: in_flight), __version__)


def feed(metrics: PrometheusMetrics, *records: dict[str, Any]) -> None:
    providers = provider_names(validate({}))
    for data in records:
        metrics.observe(measure(UsageRecord(**data), providers))


def test_calls_become_counters_and_histograms_by_lane() -> None:
    metrics = metrics_for(runtime())
    feed(
        metrics,
        line(),
        line(ttfb_ms=20.0, duration_ms=300.0, input_tokens=5, cache_read_input_tokens=2),
        anthropic_line(listener="intercept"),
        line(lane=None, rule=None, reason="rejected", status=400, input_tokens=None, output_tokens=None),
    )
    found = samples(generate_latest(metrics.registry).decode())
    requests = "ccmitm_requests_total"
    assert value(found, requests, lane="zai", reason="rule", status_class="2xx", listener="reverse") == 2
    assert (
        value(found, requests, lane="anthropic", reason="default", status_class="2xx", listener="intercept")
        == 1
    )
    assert value(found, requests, lane="none", reason="rejected", status_class="4xx", listener="reverse") == 1
    assert value(found, "ccmitm_tokens_total", lane="zai", type="input") == 16
    assert value(found, "ccmitm_tokens_total", lane="zai", type="output") == 14
    assert value(found, "ccmitm_tokens_total", lane="zai", type="cache_read") == 2
    assert value(found, "ccmitm_tokens_total", lane="anthropic", type="input") == 101
    assert value(found, "ccmitm_tokens_total", lane="none", type="input") is None
    assert value(found, "ccmitm_request_duration_seconds_count", lane="zai") == 2
    assert value(found, "ccmitm_request_duration_seconds_sum", lane="zai") == pytest.approx(0.4)
    assert value(found, "ccmitm_request_duration_seconds_bucket", lane="zai", le="0.25") == 1
    assert value(found, "ccmitm_ttfb_seconds_count", lane="zai") == 2
    assert value(found, "ccmitm_build_info", version=__version__, python=found_python(found)) == 1


def found_python(found: Samples) -> str:
    return next(dict(labels)["python"] for name, labels in found if name == "ccmitm_build_info")


def test_state_gauges_are_read_at_scrape_time() -> None:
    rt = runtime()
    metrics = metrics_for(rt, in_flight=3)
    found = samples(generate_latest(metrics.registry).decode())
    assert value(found, "ccmitm_state_available") == 1
    assert value(found, "ccmitm_paused") == 0
    assert value(found, "ccmitm_in_flight") == 3
    assert value(found, "ccmitm_lane_available", lane="zai") == 1
    assert value(found, "ccmitm_lane_available", lane="anthropic") == 1
    assert value(found, "ccmitm_breaker_state", lane="zai") == 0
    assert value(found, "ccmitm_breaker_state", lane="anthropic") is None  # a pass-through lane has none
    assert value(found, "ccmitm_lane_hold", lane="zai", **{"class": "quota"}) == 0
    assert value(found, "ccmitm_quota_used_percent", lane="zai", window="five_hour") == 37
    assert value(found, "ccmitm_quota_used_percent", lane="zai", window="week") == 5
    resets = value(found, "ccmitm_quota_resets_timestamp_seconds", lane="zai", window="five_hour")
    assert resets == datetime.fromisoformat("2026-01-03T11:15:09+00:00").timestamp()

    # The next scrape sees the change: pause, an open breaker, a quota hold.
    rt.set_paused(True, "test")
    breaker = rt.breakers["zai"]
    permit = breaker.acquire()
    assert permit is not None
    breaker.record_failure(permit, "connect")
    rt.holds["zai"].start(
        Refusal(RefusalClass.QUOTA, 429, "1308", "5-hour quota used up", "", time.time() + 3600)
    )
    found = samples(generate_latest(metrics.registry).decode())
    assert value(found, "ccmitm_paused") == 1
    assert value(found, "ccmitm_breaker_state", lane="zai") == 2
    assert value(found, "ccmitm_lane_available", lane="zai") == 0
    assert value(found, "ccmitm_lane_hold", lane="zai", **{"class": "quota"}) == 1
    assert value(found, "ccmitm_lane_hold", lane="zai", **{"class": "billing"}) == 0


def test_a_scrape_without_the_state_still_has_the_counters() -> None:
    metrics = PrometheusMetrics(lambda: None, __version__)
    feed(metrics, line())
    found = samples(generate_latest(metrics.registry).decode())
    assert value(found, "ccmitm_state_available") == 0
    assert value(found, "ccmitm_paused") is None
    assert (
        value(
            found, "ccmitm_requests_total", lane="zai", reason="rule", status_class="2xx", listener="reverse"
        )
        == 1
    )


def test_the_server_serves_metrics_only_and_stops() -> None:
    metrics = metrics_for(runtime())
    port = free_port()
    server = MetricsServer("127.0.0.1", port, metrics.wsgi_app())
    server.start()
    try:
        assert server.url == f"http://127.0.0.1:{port}/metrics"
        response = httpx.get(server.url, timeout=5)
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
        assert value(samples(response.text), "ccmitm_paused") == 0
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 404
        assert httpx.post(server.url, timeout=5).status_code == 405
    finally:
        server.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url, timeout=5)


def test_a_taken_port_is_an_oserror_at_start() -> None:
    first = MetricsServer("127.0.0.1", 0, metrics_for(runtime()).wsgi_app())
    first.start()
    try:
        with pytest.raises(OSError):
            MetricsServer("127.0.0.1", first.port, metrics_for(runtime()).wsgi_app()).start()
    finally:
        first.stop()


def test_the_state_is_read_on_the_loop_for_another_thread() -> None:
    """A scrape thread gets a reading made on the loop's thread; with the loop gone, None."""
    rt = runtime()
    readers: list[int] = []

    def read() -> StateReading:
        readers.append(threading.get_ident())
        return read_state(rt, lambda _: None, lambda: 0)

    async def scenario() -> tuple[StateReading | None, int]:
        source = StateSource(asyncio.get_running_loop(), read)
        reading = await asyncio.to_thread(source)
        return reading, threading.get_ident()

    loop = asyncio.new_event_loop()
    reading, loop_thread = loop.run_until_complete(scenario())
    assert reading is not None and [lane.name for lane in reading.lanes] == ["anthropic", "zai"]
    assert readers == [loop_thread]
    source = StateSource(loop, read)
    loop.close()
    result: list[StateReading | None] = []
    thread = threading.Thread(target=lambda: result.append(source()))
    thread.start()
    thread.join(10)
    assert result == [None]
