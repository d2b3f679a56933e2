"""The client-auth addon in process: which requests pass, which are refused and how, and that the
token never travels on. The end-to-end side (real daemon, real clients) is tests/e2e/test_auth.py."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from mitmproxy import http
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.test import tflow

from ccmitm.config.load import LoadedConfig, validate
from ccmitm.core.routing import Reason
from ccmitm.logs.usage import UsageRecord
from ccmitm.proxy.addon import Router
from ccmitm.proxy.auth import ClientAuth, basic_password, matches
from ccmitm.proxy.state import Runtime, Snapshot
from tests.helpers import CLIENT_API_KEY, ZAI_KEY
from tests.proxy.test_addon import messages_flow

TOKEN = "planted-client-token-" + "t" * 30
CONFIG: dict[str, Any] = {
    "lanes": {
        "anthropic": {"url": "https://anthropic.test"},
        "zai": {"url": "https://zai.test/api/anthropic", "api_key_env": "ZAI_API_KEY"},
    },
    "routing": {"rules": [{"match": "*haiku*", "lane": "zai", "model": "glm-4.5-air"}]},
}


def basic(password: str, user: str = "ccmitm") -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class Fixture:
    def __init__(self, client_auth: bool = True):
        config = json.loads(json.dumps(CONFIG))
        config["proxy"] = {"client_auth": client_auth}
        loaded = LoadedConfig(validate(config), "test", datetime.now(UTC))
        self.runtime = Runtime(Snapshot.build(loaded, {"ZAI_API_KEY": ZAI_KEY}))
        self.runtime.client_token = TOKEN
        self.records: list[UsageRecord] = []
        self.router = Router(self.runtime, self.records.append)
        self.auth = ClientAuth(self.runtime, self.router.answer_locally)

    def send(self, flow: http.HTTPFlow) -> http.HTTPFlow:
        """requestheaders and request of both addons, in the daemon's order (auth first)."""
        for hook in ("requestheaders", "request"):
            for addon in (self.auth, self.router):
                method = getattr(addon, hook, None)
                if method is not None:
                    method(flow)
        return flow


def request_flow(
    listener: str = "reverse", headers: dict[str, str] | None = None, tunnel: bool = False
) -> http.HTTPFlow:
    """A Haiku Messages call (the Router tests' flow) as it reaches the given listener."""
    flow = messages_flow(headers=[(k.encode(), v.encode()) for k, v in (headers or {}).items()])
    if listener == "reverse":
        flow.client_conn.proxy_mode = ProxyMode.parse("reverse:https://api.anthropic.com@8083")
    elif not tunnel:
        flow.client_conn.timestamp_tls_setup = None  # a plain proxied request: no TLS from the client
    return flow


def connect_flow(headers: dict[str, str] | None = None) -> http.HTTPFlow:
    request = http.Request.make("CONNECT", "http://api.anthropic.com:443/", headers=headers or {})
    request.authority, request.path = "api.anthropic.com:443", ""
    flow = tflow.tflow(req=request)
    flow.client_conn.timestamp_tls_setup = None
    return flow


# --- the small parts --------------------------------------------------------------------------
def test_basic_password_takes_any_user_and_refuses_what_is_not_basic() -> None:
    assert basic_password(basic(TOKEN)) == TOKEN
    assert basic_password(basic(TOKEN, user="someone")) == TOKEN
    assert basic_password(basic("with:colon")) == "with:colon"
    for value in (None, "", "Bearer " + TOKEN, "Basic !!!", "Basic " + base64.b64encode(b"nocolon").decode()):
        assert basic_password(value) is None


def test_matches_is_exact() -> None:
    assert matches(TOKEN, TOKEN)
    assert not matches(TOKEN[:-1], TOKEN) and not matches(TOKEN + "x", TOKEN) and not matches(None, TOKEN)


# --- the reverse listener ---------------------------------------------------------------------
def test_reverse_with_the_token_is_routed_and_the_header_does_not_travel_on() -> None:
    fx = Fixture()
    flow = fx.send(request_flow(headers={"x-ccmitm-token": TOKEN}))
    assert flow.response is None  # routed: on its way upstream
    assert flow.request.host == "zai.test"
    assert "x-ccmitm-token" not in flow.request.headers
    assert TOKEN not in json.dumps(list(map(list, flow.request.headers.items(multi=True))))


@pytest.mark.parametrize(
    ("headers", "error"),
    [({}, "no client token"), ({"x-ccmitm-token": "wrong-token-value-123"}, "wrong client token")],
)
def test_reverse_without_the_right_token_is_refused_with_401_and_one_usage_line(
    headers: dict[str, str], error: str
) -> None:
    fx = Fixture()
    flow = fx.send(request_flow(headers=headers))
    assert flow.response is not None and flow.response.status_code == 401
    body = json.loads(flow.response.content or b"")
    assert body["type"] == "error" and body["error"]["type"] == "authentication_error"
    assert (
        'eval "$(ccctl env)"' in body["error"]["message"] and "ccctl shell init" in body["error"]["message"]
    )
    assert flow.request.host == "api.anthropic.com"  # never rewritten towards a lane
    [record] = fx.records
    assert record.lane is None and record.reason == str(Reason.UNAUTHENTICATED) and record.status == 401
    assert record.error == error and record.listener == "reverse"
    assert fx.router.in_flight == 0


def test_the_proxy_credentials_do_not_count_on_the_reverse_listener() -> None:
    fx = Fixture()
    flow = fx.send(request_flow(headers={"proxy-authorization": basic(TOKEN)}))
    assert flow.response is not None and flow.response.status_code == 401


# --- the intercepting listener ----------------------------------------------------------------
def test_a_connect_with_the_token_authenticates_the_requests_in_its_tunnel() -> None:
    fx = Fixture()
    connect = connect_flow({"Proxy-Authorization": basic(TOKEN)})
    fx.auth.http_connect(connect)
    assert connect.response is None  # mitmproxy answers 200 and opens the tunnel
    inside = request_flow("intercept", tunnel=True)
    inside.client_conn = connect.client_conn
    fx.send(inside)
    assert inside.response is None and inside.request.host == "zai.test"
    assert fx.records == []


@pytest.mark.parametrize(
    ("headers", "error"),
    [
        ({}, "no client token"),
        ({"Proxy-Authorization": basic("wrong-token-value-123")}, "wrong client token"),
        ({"Proxy-Authorization": "Bearer " + TOKEN}, "no client token"),
    ],
)
def test_a_connect_without_the_right_token_gets_407(headers: dict[str, str], error: str) -> None:
    fx = Fixture()
    connect = connect_flow(headers)
    fx.auth.http_connect(connect)
    assert connect.response is not None and connect.response.status_code == 407
    assert connect.response.headers["Proxy-Authenticate"] == 'Basic realm="ccmitm"'
    assert b'eval "$(ccctl env)"' in (connect.response.content or b"")
    [record] = fx.records
    assert record.lane is None and record.reason == "unauthenticated" and record.error == error
    assert record.method == "CONNECT" and record.status == 407
    assert record.path == "api.anthropic.com:443"  # a CONNECT's target: its authority


def test_a_plain_proxied_request_needs_the_proxy_credentials() -> None:
    fx = Fixture()
    refused = fx.send(request_flow("intercept"))
    assert refused.response is not None and refused.response.status_code == 407
    passed = fx.send(request_flow("intercept", headers={"proxy-authorization": basic(TOKEN)}))
    assert passed.response is None and "proxy-authorization" not in passed.request.headers


def test_a_tunnel_opened_with_a_rotated_token_stops_working() -> None:
    fx = Fixture()
    connect = connect_flow({"Proxy-Authorization": basic(TOKEN)})
    fx.auth.http_connect(connect)
    fx.runtime.client_token = "the-new-token-after-rotation-0123456789"
    inside = request_flow("intercept", tunnel=True)
    inside.client_conn = connect.client_conn
    fx.send(inside)
    assert inside.response is not None and inside.response.status_code == 401
    assert fx.records[-1].error == "wrong client token"


def test_a_tunnel_opened_while_auth_was_off_is_refused_once_it_is_on() -> None:
    fx = Fixture()
    inside = request_flow("intercept", tunnel=True)
    fx.send(inside)
    assert inside.response is not None and inside.response.status_code == 401
    assert fx.records[-1].error == "no client token"


def test_a_rotated_token_is_refused_and_the_new_one_accepted() -> None:
    fx = Fixture()
    fx.runtime.client_token = "the-new-token-after-rotation-0123456789"
    assert fx.send(request_flow(headers={"x-ccmitm-token": TOKEN})).response is not None
    ok = fx.send(request_flow(headers={"x-ccmitm-token": "the-new-token-after-rotation-0123456789"}))
    assert ok.response is None


def test_no_token_in_force_refuses_everything_when_auth_is_on() -> None:
    fx = Fixture()
    fx.runtime.client_token = None
    assert fx.send(request_flow(headers={"x-ccmitm-token": TOKEN})).response is not None
    connect = connect_flow({"Proxy-Authorization": basic(TOKEN)})
    fx.auth.http_connect(connect)
    assert connect.response is not None and connect.response.status_code == 407


# --- client_auth: false -----------------------------------------------------------------------
def test_with_client_auth_off_everything_passes_and_the_token_headers_still_go() -> None:
    fx = Fixture(client_auth=False)
    connect = connect_flow()
    fx.auth.http_connect(connect)
    assert connect.response is None
    for flow in (
        request_flow(),
        request_flow("intercept"),
        request_flow("intercept", tunnel=True),
        request_flow(headers={"x-ccmitm-token": TOKEN, "proxy-authorization": basic(TOKEN)}),
    ):
        fx.send(flow)
        assert flow.response is None
        assert (
            "x-ccmitm-token" not in flow.request.headers and "proxy-authorization" not in flow.request.headers
        )
    assert fx.records == []


def test_the_default_lane_gets_no_token_headers_either() -> None:
    """The pass-through lane forwards the client's headers as they are, except ccmitm's own."""
    fx = Fixture()
    flow = request_flow(headers={"x-ccmitm-token": TOKEN})
    flow.request.content = json.dumps({"model": "claude-sonnet-4-5", "messages": []}).encode()
    fx.send(flow)
    assert flow.response is None and flow.request.host == "anthropic.test"
    assert "x-ccmitm-token" not in flow.request.headers
    assert flow.request.headers["x-api-key"] == CLIENT_API_KEY


def test_the_secret_values_hold_the_token() -> None:
    fx = Fixture()
    assert fx.runtime.labelled_secrets() == {"zai": ZAI_KEY, "client-token": TOKEN}
    assert fx.runtime.secret_values() == {ZAI_KEY, TOKEN}
    assert fx.runtime.secret_values() is fx.runtime.secret_values()  # cached: a cache key downstream
    fx.runtime.client_token = None  # rotated away: the set follows at once
    assert fx.runtime.labelled_secrets() == {"zai": ZAI_KEY}
    assert fx.runtime.secret_values() == {ZAI_KEY}
