"""The Router's promises, for any request: random header sets, paths and bodies on both listeners.

Whatever a client sends, either ccmitm answers it itself (one usage line, no lane) or it forwards
it, and then: to a configured lane's host only; a keyed lane (Z.AI) gets no client credential, by
name or by value, and exactly one lane key; an unkeyed lane never gets a lane key; no header
carries CR, LF or NUL; the body has exactly one framing; and the call ends in one usage line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mitmproxy import http
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.test import taddons, tflow, tutils

from ccmitm.proxy.addon import FLOW_KEY
from ccmitm.proxy.flow import FlowState
from tests.helpers import CLIENT_API_KEY, CLIENT_OAUTH_TOKEN, ZAI_KEY
from tests.proxy.test_addon import HAIKU, SONNET, Fixture, answer

PLANTED = (CLIENT_API_KEY, CLIENT_OAUTH_TOKEN)
CREDENTIAL_NAMES = {b"x-api-key", b"authorization", b"cookie", b"proxy-authorization", b"x-ccmitm-token"}
NAMES = [
    "x-api-key",
    "authorization",
    "cookie",
    "proxy-authorization",
    "x-ccmitm-token",
    "anthropic-beta",
    "content-type",
    "x-custom",
    "x-claude-code-session-id",
    "user-agent",
]
REVERSE = ProxyMode.parse("reverse:https://api.anthropic.com@8083")
REGULAR = ProxyMode.parse("regular@8082")


def any_case(name: str, mask: int) -> str:
    return "".join(c.upper() if (mask >> i) & 1 else c for i, c in enumerate(name))


header_names = st.one_of(
    st.builds(any_case, st.sampled_from(NAMES), st.integers(0, 2**24)),
    st.text(
        st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters=":"), min_size=1, max_size=12
    ),
).map(str.encode) | st.binary(min_size=1, max_size=10)
header_values = st.one_of(
    st.sampled_from([CLIENT_API_KEY, f"Bearer {CLIENT_OAUTH_TOKEN}", f"session={CLIENT_API_KEY}", "1"]).map(
        str.encode
    ),
    st.sampled_from([CLIENT_API_KEY, CLIENT_OAUTH_TOKEN]).map(
        lambda key: b"a\r\n x-api-key: " + key.encode()
    ),
    st.binary(max_size=24),
    st.text(max_size=24).map(lambda text: text.encode("utf-8", "surrogateescape")),
)
paths = st.one_of(
    st.sampled_from(
        [
            "/v1/messages",
            "/v1/messages?beta=true",
            "/v1/messages/count_tokens",
            "/v1/models",
            "/api/claude_code/settings",
            "@127.0.0.1:9/v1/messages",
            "//evil.example/v1/messages",
            "https://evil.example/v1/messages",
            "/\\evil.example/v1/messages",
            "*",
        ]
    ),
    st.text(max_size=20).map(lambda text: "/" + text),
).map(lambda path: path.encode("utf-8", "surrogateescape"))


def json_body(model: str | None) -> bytes:
    body: dict[str, Any] = {"max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    if model is not None:
        body["model"] = model
    return json.dumps(body).encode()


bodies = st.one_of(
    st.sampled_from([HAIKU, SONNET, "claude-opus-bearer", None]).map(json_body),
    st.binary(max_size=64),
    st.just(b'{"model":"' + HAIKU.encode() + b'","x":' + b"[" * 50_000 + b"]" * 50_000 + b"}"),
    st.just(b""),
)


@dataclass(frozen=True)
class Case:
    reverse: bool
    http2: bool
    method: str
    path: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    framing: str  # "length", "none" (HTTP/2 needs none) or "chunked"
    trailers: bool


cases = st.builds(
    Case,
    reverse=st.booleans(),
    http2=st.booleans(),
    method=st.sampled_from(["POST", "POST", "GET"]),
    path=paths,
    headers=st.lists(st.tuples(header_names, header_values), max_size=8),
    body=bodies,
    framing=st.sampled_from(["length", "none", "chunked"]),
    trailers=st.booleans(),
)


def flow_of(case: Case) -> http.HTTPFlow:
    fields = [(b"host", b"api.anthropic.com"), *case.headers]
    if case.framing == "length":
        fields.append((b"content-length", str(len(case.body)).encode()))
    elif case.framing == "chunked" and not case.http2:
        fields.append((b"transfer-encoding", b"chunked"))
    request = tutils.treq(
        host="api.anthropic.com",
        port=443,
        scheme=b"https",
        method=case.method.encode(),
        path=case.path,
        http_version=b"HTTP/2.0" if case.http2 else b"HTTP/1.1",
        content=case.body,
    )
    request.headers = http.Headers(fields)
    request.raw_content = case.body  # as read off the wire (the setter above may have added a length)
    request.headers = http.Headers(fields)
    if case.trailers:
        request.trailers = http.Headers(x_trailer="1")
    flow = tflow.tflow(req=request)
    flow.client_conn.proxy_mode = REVERSE if case.reverse else REGULAR
    return flow


def everything_in(fields: tuple[tuple[bytes, bytes], ...]) -> bytes:
    return b"\n".join(name + b":" + value for name, value in fields)


def check_forwarded(fixture: Fixture, flow: http.HTTPFlow) -> None:
    state: FlowState = flow.metadata[FLOW_KEY]
    request = flow.request
    lanes = fixture.runtime.active.lanes
    assert (request.scheme, request.host, request.port) in {
        (x.scheme, x.host, x.port) for x in lanes.values()
    }
    assert state.lane is lanes[state.route.lane]
    assert (request.scheme, request.host, request.port) == (
        state.lane.scheme,
        state.lane.host,
        state.lane.port,
    )
    assert request.path.startswith(state.lane.prefix + "/") and "@" not in request.path.partition("?")[0]
    fields = request.headers.fields
    for name, value in fields:
        for byte in (b"\r", b"\n", b"\x00"):
            assert byte not in name and byte not in value
    framing = [(n.lower(), v) for n, v in fields if n.lower() in (b"content-length", b"transfer-encoding")]
    body = request.raw_content or b""
    assert framing in ([(b"content-length", str(len(body)).encode())], *([[]] if not body else []))
    sent = everything_in(fields)
    if state.lane.keyed:
        assert fields[-1] == state.lane.auth_field
        credentials = [f for f in fields if f[0].lower() in CREDENTIAL_NAMES]
        assert credentials == [state.lane.auth_field]
        for secret in PLANTED:
            assert secret.encode() not in sent
    else:
        assert ZAI_KEY.encode() not in sent


def test_the_router_keeps_its_promises_for_any_request() -> None:
    fixture = Fixture()
    with taddons.context(fixture.router) as context:
        fixture.loop = context.master.event_loop

        @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(case=cases)
        def check(case: Case) -> None:
            fixture.records.clear()
            fixture.router.in_flight = 0  # an earlier failing example may have left one open
            flow = flow_of(case)
            fixture.router.requestheaders(flow)
            fixture.router.request(flow)
            if flow.response is not None:  # answered by ccmitm: no lane, one usage line
                assert FLOW_KEY not in flow.metadata and fixture.router.in_flight == 0
                (record,) = fixture.records
                assert (record.lane, record.reason) == (None, "rejected")
                assert record.status == flow.response.status_code in (400, 413)
                return
            check_forwarded(fixture, flow)
            answer(fixture, flow)
            (record,) = fixture.records
            assert record.lane == flow.metadata[FLOW_KEY].route.lane and fixture.router.in_flight == 0

        check()
