"""The real daemon's /metrics: scraped by a real Prometheus server (Debian's `prometheus`), and
started, moved and stopped by config reloads."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ccmitm.testing.ports import free_port, free_ports
from tests.helpers import Daemon, post, status, wait_for

pytestmark = pytest.mark.e2e

PROMETHEUS = "/usr/bin/prometheus"
SONNET = "claude-sonnet-4-5"


def listen_on(port: int) -> Any:
    def mutate(config: dict[str, Any]) -> None:
        config["metrics"] = {"listen": f"127.0.0.1:{port}"}

    return mutate


class Prometheus:
    """A Prometheus server in a temp dir that scrapes one target every second."""

    def __init__(self, root: Path, target: str):
        self.port = free_port()
        config = root / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: ccmitm\n    metrics_path: /metrics\n"
            f"    static_configs:\n      - targets: ['{target}']\n"
        )
        self.log = root / "prometheus.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={root / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=out,
                stderr=out,
                stdin=subprocess.DEVNULL,
            )

    def query(self, expression: str) -> list[dict[str, Any]]:
        try:
            response = httpx.get(
                f"http://127.0.0.1:{self.port}/api/v1/query", params={"query": expression}, timeout=5
            )
        except httpx.HTTPError:
            return []
        if response.status_code != 200:
            return []
        result: list[dict[str, Any]] = response.json()["data"]["result"]
        return result

    def by_lane(self, expression: str) -> dict[str, float]:
        return {item["metric"].get("lane", ""): float(item["value"][1]) for item in self.query(expression)}

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def prometheus_binary() -> str:
    if not Path(PROMETHEUS).exists() and shutil.which("prometheus") is None:
        pytest.skip("prometheus is not installed (.ci/run installs Debian's package)")
    return PROMETHEUS


def test_a_real_prometheus_scrapes_the_calls_per_lane(
    make_daemon, prometheus_binary: str, tmp_path: Path
) -> None:
    port = free_port()
    daemon: Daemon = make_daemon(listen_on(port))
    for _ in range(3):
        assert post(daemon).status_code == 200  # Haiku: offloaded to zai
    for _ in range(2):
        assert post(daemon, model=SONNET).status_code == 200  # everything else: anthropic
    (tmp_path / "prom").mkdir()
    server = Prometheus(tmp_path / "prom", f"127.0.0.1:{port}")
    try:
        wanted = {"zai": 3.0, "anthropic": 2.0}
        requests = "sum by (lane) (ccmitm_requests_total)"
        wait_for(lambda: server.by_lane(requests) == wanted, timeout=60, what=f"prometheus: {requests}")
        tokens = server.by_lane('sum by (lane) (ccmitm_tokens_total{type="output"})')
        assert tokens == {"zai": 3 * 7.0, "anthropic": 2 * 17.0}  # the fake upstreams' counts
        assert server.by_lane("ccmitm_lane_available") == {"zai": 1.0, "anthropic": 1.0}
        assert server.by_lane("ccmitm_breaker_state") == {"zai": 0.0}
        assert server.by_lane("ccmitm_paused") == {"": 0.0}
        assert server.by_lane("sum by (lane) (ccmitm_request_duration_seconds_count)") == wanted
        # The same calls, the same numbers as `ccctl summarize` reads from the usage log.
        summary = json.loads(daemon.ccctl("summarize", "--json", check=True).stdout)["lanes"]
        assert {lane: float(v["calls"]) for lane, v in summary.items()} == wanted
        for kind in ("input", "output", "cache_read", "cache_creation"):
            scraped = server.by_lane(f'sum by (lane) (ccmitm_tokens_total{{type="{kind}"}})')
            logged = {lane: float(v["tokens"][kind]) for lane, v in summary.items()}
            # A counter never added to has no series: zero on both sides.
            assert {lane: n for lane, n in scraped.items() if n} == {
                lane: n for lane, n in logged.items() if n
            }, kind
        assert any(summary[lane]["tokens"]["cache_read"] for lane in summary)  # not all zeros
        # A pause shows on the next scrapes (state is read at scrape time, not at the last call).
        daemon.ccctl("pause", check=True)
        wait_for(lambda: server.by_lane("ccmitm_paused") == {"": 1.0}, timeout=30, what="paused gauge")
    finally:
        server.stop()
    assert status(daemon)["telemetry"]["prometheus"] == f"http://127.0.0.1:{port}/metrics"


def scrape(port: int) -> dict[str, float] | None:
    """ccmitm_requests_total by lane from the daemon's /metrics, or None when nothing listens."""
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    except httpx.ConnectError:
        return None
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == "ccmitm_requests_total":
                counts[sample.labels["lane"]] = counts.get(sample.labels["lane"], 0) + sample.value
    return counts


def test_reload_starts_moves_and_stops_the_server(make_daemon) -> None:
    first, second = free_ports(2)
    daemon: Daemon = make_daemon()
    assert scrape(first) is None and "prometheus" not in daemon.ccctl("status").stdout  # off by default
    assert post(daemon).status_code == 200

    config = daemon.config
    config["metrics"] = {"listen": f"127.0.0.1:{first}"}
    daemon.write_config(config)
    daemon.ccctl("reload", check=True)
    assert scrape(first) == {}  # started now: it counts from here
    assert post(daemon).status_code == 200
    assert scrape(first) == {"zai": 1.0}
    assert f"prometheus http://127.0.0.1:{first}/metrics" in daemon.ccctl("status").stdout

    config["metrics"] = {"listen": f"127.0.0.1:{second}"}
    daemon.write_config(config)
    daemon.ccctl("reload", check=True)
    assert scrape(first) is None
    assert scrape(second) == {"zai": 1.0}  # moved: the counters carry on

    config["metrics"] = {"listen": None}
    daemon.write_config(config)
    daemon.ccctl("reload", check=True)
    assert scrape(second) is None
    assert status(daemon)["telemetry"]["prometheus"] is None


def test_a_taken_metrics_port_leaves_the_proxy_serving(make_daemon) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        daemon: Daemon = make_daemon(listen_on(port))
        assert post(daemon).status_code == 200
        telemetry = status(daemon)["telemetry"]
        assert telemetry["prometheus"] is None and "cannot listen" in (telemetry["prometheus_error"] or "")
        assert "not served: cannot listen" in daemon.ccctl("status").stdout
