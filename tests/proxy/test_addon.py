"""The Router in process, with mitmproxy's own test flows: fast table tests of the adapter.

Each test builds a flow with ``tflow``/``tutils``, runs the Router's hooks in mitmproxy's order
inside a ``taddons`` context, and looks at what would have gone upstream and at the usage record.
The failover hop goes to an ``httpx.MockTransport``. The end-to-end tests (tests/e2e/) cover the
same behaviour through a real daemon and real sockets.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from mitmproxy import http
from mitmproxy.test import taddons, tflow, tutils

from ccmitm.config.load import LoadedConfig, validate
from ccmitm.logs.usage import UsageRecord
from ccmitm.proxy import addon as addon_module
from ccmitm.proxy.addon import Router, _error_text
from ccmitm.proxy.failover import DefaultLaneClient
from ccmitm.proxy.flow import FlowState
from ccmitm.proxy.state import Runtime, Snapshot
from tests.helpers import CLIENT_API_KEY, CLIENT_OAUTH_TOKEN, ZAI_KEY

HAIKU = "claude-haiku-4-5"
SONNET = "claude-sonnet-4-5"
LIMIT = 4096

CONFIG: dict[str, Any] = {
    "proxy": {"max_body_bytes": LIMIT, "read_timeout_s": 100.0},
    "lanes": {
        "anthropic": {"url": "https://anthropic.test"},
        "zai": {"url": "https://zai.test/api/anthropic", "api_key_env": "ZAI_API_KEY"},
        "bearer": {
            "url": "https://bearer.test",
            "api_key_env": "ZAI_API_KEY",
            "header_mode": "authorization",
        },
    },
    "routing": {
        "rules": [
            {"match": "*haiku*", "lane": "zai", "model": "glm-4.5-air"},
            {"match": "*opus-bearer*", "lane": "bearer"},
        ]
    },
}


class Fixture:
    """A Router over a runtime with the planted Z.AI key, its records, and a mock default lane."""

    def __init__(self, config: dict[str, Any] | None = None, default_lane: httpx.MockTransport | None = None):
        loaded = LoadedConfig(validate(config or CONFIG), "test", datetime.now(UTC))
        self.runtime = Runtime(Snapshot.build(loaded, {"ZAI_API_KEY": ZAI_KEY}))
        self.records: list[UsageRecord] = []
        self.seen: list[httpx.Request] = []
        transport = default_lane or httpx.MockTransport(self._default_lane)
        self.router = Router(self.runtime, self.records.append, DefaultLaneClient(transport))
        self.loop: asyncio.AbstractEventLoop | None = None  # the taddons context's event loop

    def run(self, coro: Any) -> Any:
        assert self.loop is not None, "use inside a taddons context"
        return self.loop.run_until_complete(coro)

    def _default_lane(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        body = {"type": "message", "content": [], "usage": {"input_tokens": 5, "output_tokens": 2}}
        return httpx.Response(200, json=body)


@pytest.fixture
def fx() -> Iterator[Fixture]:
    fixture = Fixture()
    with taddons.context(fixture.router) as context:
        fixture.loop = context.master.event_loop
        yield fixture


def messages_flow(
    model: str = HAIKU,
    path: bytes = b"/v1/messages",
    headers: list[tuple[bytes, bytes]] | None = None,
    body: dict[str, Any] | None = None,
) -> http.HTTPFlow:
    content = json.dumps(body or {"model": model, "max_tokens": 8, "messages": []}).encode()
    fields = [
        (b"host", b"api.anthropic.com"),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(content)).encode()),
        (b"x-api-key", CLIENT_API_KEY.encode()),
        *(headers or []),
    ]
    request = tutils.treq(
        host="api.anthropic.com", port=443, scheme=b"https", method=b"POST", path=path, content=content
    )
    request.headers = http.Headers(fields)
    return tflow.tflow(req=request)


def send(router: Router, flow: http.HTTPFlow) -> None:
    """requestheaders and request, as mitmproxy calls them before it connects upstream."""
    router.requestheaders(flow)
    router.request(flow)


def answer(fx: Fixture, flow: http.HTTPFlow, status: int = 200, body: bytes | None = None) -> None:
    """The upstream's whole JSON answer through responseheaders and response."""
    body = (
        body if body is not None else json.dumps({"usage": {"input_tokens": 3, "output_tokens": 1}}).encode()
    )
    flow.response = tutils.tresp(
        status_code=status,
        content=b"",
        headers=[(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
    )
    fx.router.responseheaders(flow)
    flow.response.content = body
    fx.run(fx.router.response(flow))


def header_names(flow: http.HTTPFlow) -> list[str]:
    return [name.decode().lower() for name, _ in flow.request.headers.fields]


# --- the credential swap ---------------------------------------------------------------------------
def test_a_keyed_lane_gets_the_destination_first_and_the_lane_key_last(fx: Fixture) -> None:
    flow = messages_flow(headers=[(b"authorization", f"Bearer {CLIENT_OAUTH_TOKEN}".encode())])
    send(fx.router, flow)
    request = flow.request
    assert (request.scheme, request.host, request.port) == ("https", "zai.test", 443)
    assert request.path == "/api/anthropic/v1/messages"
    assert json.loads(request.content or b"")["model"] == "glm-4.5-air"
    # The client's credentials are gone and the lane key is the last field, exactly once.
    assert request.headers.fields[-1] == (b"x-api-key", ZAI_KEY.encode())
    assert header_names(flow).count("x-api-key") == 1 and "authorization" not in header_names(flow)
    assert CLIENT_API_KEY.encode() not in b"".join(v for _, v in request.headers.fields)


def test_the_authorization_header_mode_sends_a_bearer_lane_key(fx: Fixture) -> None:
    flow = messages_flow(model="claude-opus-bearer")
    send(fx.router, flow)
    assert flow.request.headers.fields[-1] == (b"authorization", f"Bearer {ZAI_KEY}".encode())
    assert "x-api-key" not in header_names(flow)


def test_a_failure_part_way_answers_502_and_sends_no_key(
    fx: Fixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(_: Any) -> bytes:
        raise RuntimeError("serialiser bug")

    monkeypatch.setattr(addon_module, "_serialise", broken)  # the model rewrite fails
    flow = messages_flow()
    send(fx.router, flow)
    assert flow.response is not None and flow.response.status_code == 502
    assert ZAI_KEY.encode() not in b"".join(v for _, v in flow.request.headers.fields)
    assert fx.router.in_flight == 0


# --- header stripping per lane ---------------------------------------------------------------------
STRIPPED = [
    (b"anthropic-beta", b"oauth-2025-04-20"),
    (b"cookie", b"session=1"),
    (b"authorization", f"Bearer {CLIENT_OAUTH_TOKEN}".encode()),
]
# ccmitm's own client token (proxy credentials or its header) leaves on no lane.
CLIENT_TOKEN_HEADERS = [
    (b"proxy-authorization", b"Basic dXNlcjpwYXNz"),
    (b"x-ccmitm-token", b"planted-client-token-0123456789"),
]


@pytest.mark.parametrize(("model", "kept"), [(HAIKU, False), (SONNET, True)])
def test_client_headers_are_stripped_on_keyed_lanes_only(fx: Fixture, model: str, kept: bool) -> None:
    flow = messages_flow(model=model, headers=[*STRIPPED, (b"x-custom", b"1")])
    flow.request.headers.fields = (*flow.request.headers.fields, *CLIENT_TOKEN_HEADERS)
    before = flow.request.headers.fields[: -len(CLIENT_TOKEN_HEADERS)]
    raw_before = flow.request.raw_content
    send(fx.router, flow)
    names = header_names(flow)
    assert "x-custom" in names
    for name, _ in STRIPPED:
        assert (name.decode() in names) is kept
    for name, _ in CLIENT_TOKEN_HEADERS:
        assert name.decode() not in names
    if kept:  # the default lane gets the client's request as it was (but ccmitm's token): headers and bytes
        assert flow.request.headers.fields[1:] == before[1:] and flow.request.raw_content == raw_before
        assert flow.request.headers.fields[0] == (b"host", b"anthropic.test")  # only Host follows the lane


# --- the 413 refusal -------------------------------------------------------------------------------
def test_an_oversize_body_is_refused_by_its_content_length(fx: Fixture) -> None:
    flow = messages_flow()
    flow.request.headers["content-length"] = str(LIMIT + 1)
    fx.router.requestheaders(flow)
    assert flow.response is not None and flow.response.status_code == 413
    error = json.loads(flow.response.content or b"")
    assert error["type"] == "error" and error["error"]["type"] == "request_too_large"
    fx.router.request(flow)  # already answered: not routed, not counted
    assert fx.router.in_flight == 0 and flow.request.host == "api.anthropic.com"


def test_an_oversize_chunked_body_is_refused_once_read(fx: Fixture) -> None:
    flow = messages_flow(body={"model": HAIKU, "messages": [], "pad": "x" * LIMIT})
    del flow.request.headers["content-length"]
    send(fx.router, flow)
    assert flow.response is not None and flow.response.status_code == 413


# --- count_tokens ------------------------------------------------------------------------------------
def test_count_tokens_stays_on_the_default_lane_even_for_haiku(fx: Fixture) -> None:
    flow = messages_flow(path=b"/v1/messages/count_tokens")
    send(fx.router, flow)
    assert flow.request.host == "anthropic.test" and "x-api-key" in header_names(flow)
    assert flow.request.headers["x-api-key"] == CLIENT_API_KEY
    answer(fx, flow)
    assert [(r.lane, r.reason) for r in fx.records] == [("anthropic", "count_tokens")]


# --- error classification ---------------------------------------------------------------------------
def state_for(flow: http.HTTPFlow, started: float, last_byte: float | None = None) -> FlowState:
    return FlowState(
        route=None,  # type: ignore[arg-type]  # not read by the classification
        lane=None,  # type: ignore[arg-type]
        listener="reverse",
        path="/v1/messages",
        model=HAIKU,
        stream_requested=True,
        started=started,
        last_byte=last_byte,
    )


@pytest.mark.parametrize(
    ("message", "has_response", "idle_s", "expected"),
    [
        ("connection closed", True, 95.0, "upstream stalled: no data for 95s"),
        ("Client disconnected.", True, 1.0, "client abort"),
        ("Connection refused", False, 1.0, "connect failure: Connection refused"),
        ("peer closed connection", True, 1.0, "upstream drop: peer closed connection"),
    ],
)
def test_error_text_tells_a_stall_an_abort_a_connect_failure_and_a_drop(
    message: str, has_response: bool, idle_s: float, expected: str
) -> None:
    flow = tflow.tflow(resp=has_response)
    flow.error = tflow.terr(message)
    now = time.time()
    text = _error_text(flow, state_for(flow, now - idle_s - 1, now - idle_s), read_timeout_s=100.0)
    assert text == expected


def test_error_text_is_none_without_an_error() -> None:
    flow = tflow.tflow(resp=True)
    assert _error_text(flow, state_for(flow, time.time()), 100.0) is None


# --- the failover ------------------------------------------------------------------------------------
@pytest.mark.parametrize("status", [429, 500, 401])
def test_a_refused_offload_call_is_answered_once_by_the_default_lane(fx: Fixture, status: int) -> None:
    flow = messages_flow(headers=[(b"authorization", f"Bearer {CLIENT_OAUTH_TOKEN}".encode())])
    send(fx.router, flow)
    answer(fx, flow, status=status, body=b'{"type":"error","error":{"type":"rate_limit_error"}}')
    # The client sees the default lane's answer, never the refusal.
    assert flow.response is not None and flow.response.status_code == 200
    assert [str(r.url) for r in fx.seen] == ["https://anthropic.test/v1/messages"]
    sent = fx.seen[0]
    assert sent.headers["x-api-key"] == CLIENT_API_KEY  # the client's own credentials, as sent
    assert sent.headers["authorization"] == f"Bearer {CLIENT_OAUTH_TOKEN}"
    assert ZAI_KEY not in str(sent.headers.raw) and json.loads(sent.content)["model"] == HAIKU
    refused, retried = fx.records
    assert (refused.lane, refused.status, retried.lane, retried.reason) == (
        "zai",
        status,
        "anthropic",
        "failover",
    )
    assert retried.attempt_of == refused.id and retried.input_tokens == 5
    assert fx.router.in_flight == 0


def test_no_failover_when_it_is_switched_off() -> None:
    config = json.loads(json.dumps(CONFIG))
    config["breaker"] = {"failover": False}
    fixture = Fixture(config)
    with taddons.context(fixture.router) as context:
        fixture.loop = context.master.event_loop
        flow = messages_flow()
        send(fixture.router, flow)
        answer(fixture, flow, status=429)
    assert flow.response is not None and flow.response.status_code == 429 and fixture.seen == []
    assert [r.status for r in fixture.records] == [429]


def test_the_router_closes_its_failover_client_when_mitmproxy_is_done(fx: Fixture) -> None:
    flow = messages_flow()
    send(fx.router, flow)
    answer(fx, flow, status=503)
    client = fx.router.failover_client
    assert client._client is not None
    fx.run(fx.router.done())
    assert client._client is None


# --- thinking across lanes ----------------------------------------------------------------------------
GLM_SIGNATURE = "glm-sig-" + "a" * 64


def test_the_offload_lanes_thinking_never_reaches_the_default_lane(fx: Fixture) -> None:
    fx.runtime.foreign_signatures.add(GLM_SIGNATURE)
    body = {
        "model": SONNET,
        "max_tokens": 8,
        "messages": [
            {"role": "user", "content": "hi"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "from GLM", "signature": GLM_SIGNATURE},
                    {"type": "text", "text": "hello"},
                ],
            },
            {"role": "user", "content": "and now?"},
        ],
    }
    flow = messages_flow(model=SONNET, body=body)
    send(fx.router, flow)
    forwarded = json.loads(flow.request.content or b"")
    assert GLM_SIGNATURE not in json.dumps(forwarded)
    assert forwarded["messages"][1]["content"][-1] == {"type": "text", "text": "hello"}
    answer(fx, flow)
    assert fx.records[0].thinking_stripped == 1 and fx.records[0].lane == "anthropic"
