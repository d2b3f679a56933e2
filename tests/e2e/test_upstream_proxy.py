"""proxy.upstream_proxy: ccmitmd reaches its lanes through the user's own forward proxy (what
HTTPS_PROXY named before the shell was wired). A real forward proxy, Debian's tinyproxy, on
loopback; its log and its Via header show which traffic went through it."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ccmitm.testing.ports import free_port
from tests.helpers import CLIENT_API_KEY, HAIKU, Daemon, post, wait_for

pytestmark = pytest.mark.e2e

PROXY_NAME = "ccmitm-test-forward-proxy"


class Tinyproxy:
    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.log = root / "tinyproxy.log"
        self.url = f"http://127.0.0.1:{self.port}"
        conf = root / "tinyproxy.conf"
        conf.write_text(
            f'Port {self.port}\nListen 127.0.0.1\nTimeout 60\nLogFile "{self.log}"\nLogLevel Info\n'
            f'PidFile "{root / "tinyproxy.pid"}"\nMaxClients 20\nAllow 127.0.0.1\n'
            f'ViaProxyName "{PROXY_NAME}"\n'
        )
        self.proc = subprocess.Popen(
            ["tinyproxy", "-d", "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )

    def text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def forward_proxy(tmp_path: Path) -> Iterator[Tinyproxy]:
    if shutil.which("tinyproxy") is None:
        pytest.skip("tinyproxy is not installed (.ci/run installs it)")
    root = tmp_path / "tinyproxy"
    root.mkdir()
    proxy = Tinyproxy(root)
    try:
        wait_for(
            lambda: "listening on" in proxy.text().lower() or proxy.proc.poll() is not None, what="tinyproxy"
        )
        assert proxy.proc.poll() is None, proxy.text()
        yield proxy
    finally:
        proxy.stop()


def _through(proxy: Tinyproxy) -> str:
    # tinyproxy logs each request line it handles; give it a moment to flush.
    time.sleep(0.2)
    return proxy.text()


def test_lanes_are_reached_through_the_upstream_proxy(
    make_daemon, upstreams, forward_proxy: Tinyproxy
) -> None:
    anthropic_up, zai = upstreams

    def through_proxy(config: dict) -> None:
        config["proxy"]["upstream_proxy"] = forward_proxy.url

    daemon: Daemon = make_daemon(through_proxy)
    assert post(daemon, HAIKU).status_code == 200  # the offload lane
    assert post(daemon, "claude-sonnet-4-5").status_code == 200  # the default lane
    assert zai.messages() and anthropic_up.messages()
    log = _through(forward_proxy)
    for lane in (zai, anthropic_up):
        port = lane.url.rsplit(":", 1)[1].rstrip("/")
        assert f"CONNECT 127.0.0.1:{port}" in log, (
            f"lane on port {port} not reached through the proxy:\n{log}"
        )


def test_the_failover_goes_through_the_upstream_proxy_too(
    make_daemon, upstreams, forward_proxy: Tinyproxy
) -> None:
    anthropic_up, zai = upstreams
    zai.behaviour = "status:529"

    def through_proxy(config: dict) -> None:
        config["proxy"]["upstream_proxy"] = forward_proxy.url

    daemon: Daemon = make_daemon(through_proxy)
    reply = post(daemon, HAIKU)
    assert reply.status_code == 200, reply.text  # answered by the default lane, after the refusal
    [failover] = anthropic_up.messages()
    # httpx forwards a plain-http request to the proxy (no tunnel), and tinyproxy marks it.
    assert PROXY_NAME in (failover.header("via") or ""), failover.headers


def test_without_upstream_proxy_nothing_goes_through_it(
    daemon: Daemon, upstreams, forward_proxy: Tinyproxy
) -> None:
    assert post(daemon, HAIKU).status_code == 200
    assert "CONNECT" not in _through(forward_proxy)


def test_a_reload_re_points_even_a_kept_alive_connection(
    daemon: Daemon, upstreams, forward_proxy: Tinyproxy
) -> None:
    """One client connection throughout: after the reload its next request must still go through
    the new proxy (mitmproxy cannot re-point an open server connection; the Router replaces it)."""
    _, zai = upstreams
    body = {"model": HAIKU, "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    headers = {"x-api-key": CLIENT_API_KEY, **daemon.auth_headers}
    with httpx.Client(base_url=daemon.reverse_url, timeout=30) as client:
        assert client.post("/v1/messages", json=body, headers=headers).status_code == 200
        assert "CONNECT" not in _through(forward_proxy)
        daemon.write_config(
            {**daemon.config, "proxy": {**daemon.config["proxy"], "upstream_proxy": forward_proxy.url}}
        )
        assert daemon.ccctl("reload").returncode == 0
        reply = client.post("/v1/messages", json=body, headers=headers)
        assert reply.status_code == 200, reply.text
    port = zai.url.rsplit(":", 1)[1].rstrip("/")
    assert f"CONNECT 127.0.0.1:{port}" in _through(forward_proxy)
    assert len(zai.messages()) == 2
