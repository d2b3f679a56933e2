"""OTLP export of the real daemon to a receiver in the test: the points of the test's calls with
the GenAI attributes and nothing private; the session id only when asked; a collector that is
down breaks no call and shows up as failed exports in `ccctl status`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from ccmitm.core.redact import scan_text
from ccmitm.testing.ports import free_port
from tests.helpers import ALL_SECRETS, CLIENT_OAUTH_TOKEN, Daemon, post, status, wait_for
from tests.telemetry.otlp_receiver import OtlpReceiver, Point

pytestmark = pytest.mark.e2e

SONNET = "claude-sonnet-4-5"
SESSION = "6f1c2a9e-0d3b-4c55-9a7e-session-under-test"
FAST_EXPORT = {"OTEL_METRIC_EXPORT_INTERVAL": "300", "OTEL_EXPORTER_OTLP_TIMEOUT": "1"}


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    server = OtlpReceiver().start()
    try:
        yield server
    finally:
        server.stop()


def name_providers(config: dict[str, Any]) -> None:
    """The fake upstreams are on 127.0.0.1: say who they stand for, as a user would for a custom URL."""
    config["lanes"]["zai"]["provider"] = "zai"
    config["lanes"]["anthropic"]["provider"] = "anthropic"


def by_lane(found: list[Point]) -> dict[str, float]:
    totals: dict[str, float] = {}
    for point in found:
        lane = point.attributes["ccmitm.lane"]
        totals[lane] = totals.get(lane, 0) + (point.count if point.count is not None else point.value)
    return totals


def calls(daemon: Daemon) -> None:
    session = {"x-claude-code-session-id": SESSION}
    for _ in range(2):
        assert post(daemon, headers=session).status_code == 200
    assert post(daemon, model=SONNET, headers=session).status_code == 200


def test_points_arrive_with_genai_attributes_and_nothing_private(make_daemon, receiver: OtlpReceiver) -> None:
    env: dict[str, Any] = {
        **FAST_EXPORT,
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        # A collector's token travels as a header and is written nowhere by ccmitm.
        "OTEL_EXPORTER_OTLP_HEADERS": f"x-collector-token={CLIENT_OAUTH_TOKEN}",
        "OTEL_RESOURCE_ATTRIBUTES": "user.email=dev@example.com,team=platform",
    }
    daemon: Daemon = make_daemon(name_providers, env=env)
    calls(daemon)
    wait_for(
        lambda: by_lane(receiver.latest("ccmitm.requests")) == {"zai": 2, "anthropic": 1},
        timeout=30,
        what="ccmitm.requests points",
    )
    duration = {p.attributes["ccmitm.lane"]: p for p in receiver.latest("gen_ai.client.operation.duration")}
    assert duration["zai"].count == 2 and duration["anthropic"].count == 1
    assert duration["zai"].attributes == {
        "ccmitm.lane": "zai",
        "ccmitm.reason": "rule",
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "z.ai",
        "gen_ai.request.model": "claude-haiku-4-5",
        "gen_ai.response.model": "glm-4.5-air",
    }
    assert duration["anthropic"].attributes["gen_ai.provider.name"] == "anthropic"
    tokens = {
        (p.attributes["ccmitm.lane"], p.attributes["gen_ai.token.type"]): p.value
        for p in receiver.latest("gen_ai.client.token.usage")
    }
    # The fake upstreams: zai 11 in + 3 cache read, 7 out; anthropic 101 + 3 in, 17 out.
    assert tokens == {
        ("zai", "input"): 2 * 14,
        ("zai", "output"): 2 * 7,
        ("anthropic", "input"): 104,
        ("anthropic", "output"): 17,
    }
    available = {p.attributes["ccmitm.lane"]: p.value for p in receiver.latest("ccmitm.lane.available")}
    assert available == {"zai": 1, "anthropic": 1}

    resource = receiver.resources()[-1]
    assert resource["service.name"] == "ccmitm"
    assert resource["user.email"] == "dev@example.com" and resource["team"] == "platform"
    assert receiver.headers[-1]["x-collector-token"] == CLIENT_OAUTH_TOKEN
    everything = b"".join(receiver.bodies).decode("utf-8", "replace")
    assert SESSION not in everything  # no session id unless the user opts in
    assert not scan_text(everything, ALL_SECRETS)

    telemetry = status(daemon)["telemetry"]
    assert telemetry["otlp"] == f"{receiver.endpoint}/v1/metrics"
    assert telemetry["otlp_exports"] > 0 and telemetry["otlp_failed"] == 0


def test_the_session_id_is_added_when_asked_and_a_reload_stops_the_export(
    make_daemon, receiver: OtlpReceiver
) -> None:
    def mutate(config: dict[str, Any]) -> None:
        config["telemetry"] = {"otlp": True, "include_session": True}
        name_providers(config)

    env = {**FAST_EXPORT, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_SERVICE_NAME": "laptop-42"}
    daemon: Daemon = make_daemon(mutate, env=env)
    calls(daemon)
    wait_for(lambda: receiver.latest("gen_ai.client.operation.duration"), timeout=30, what="duration points")
    sessions = {p.attributes.get("session.id") for p in receiver.latest("gen_ai.client.operation.duration")}
    assert sessions == {SESSION}
    assert receiver.resources()[-1]["service.name"] == "laptop-42"  # the user's name wins

    config = daemon.config
    config["telemetry"] = {"otlp": False}
    daemon.write_config(config)
    daemon.ccctl("reload", check=True)
    assert status(daemon)["telemetry"]["otlp"] is None
    exports = len(receiver.requests)
    assert post(daemon).status_code == 200
    assert status(daemon)["telemetry"]["otlp"] is None and len(receiver.requests) == exports


def test_a_collector_that_is_down_breaks_no_call_and_counts_as_failed(make_daemon) -> None:
    closed = free_port()  # nothing listens there
    env = {
        **FAST_EXPORT,
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{closed}",
    }
    daemon: Daemon = make_daemon(env=env)
    for _ in range(5):
        assert post(daemon).status_code == 200
    wait_for(
        lambda: status(daemon)["telemetry"]["otlp_failed"] >= 2,
        timeout=30,
        interval=0.5,
        what="failed exports",
    )
    for _ in range(3):
        assert post(daemon, model=SONNET).status_code == 200
    telemetry = status(daemon)["telemetry"]
    assert telemetry["otlp_exports"] == 0 and telemetry["otlp_failed"] >= 2
    assert "failed/dropped" in daemon.ccctl("status").stdout
    assert daemon.stop() == 0
    # One line for the outage, not one per export.
    assert daemon.stderr().count("OTLP export to") == 1, daemon.stderr()
