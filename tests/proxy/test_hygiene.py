"""Request hygiene in process: the checks themselves, and the Router answering what fails them.

The end-to-end versions (real sockets, both listeners) are in tests/e2e/test_hostile_requests.py;
these pin each rule down quickly, with mitmproxy's test flows (see tests/proxy/test_addon.py).
"""

from __future__ import annotations

import json

import pytest
from mitmproxy import http
from mitmproxy.test import taddons

from ccmitm.proxy import hygiene
from ccmitm.proxy.failover import lane_url
from ccmitm.proxy.flow import FlowState
from tests.helpers import CLIENT_API_KEY, CLIENT_OAUTH_TOKEN, ZAI_KEY
from tests.proxy import test_addon
from tests.proxy.test_addon import CONFIG, HAIKU, LIMIT, SONNET, Fixture, answer, messages_flow, send

# test_addon's fixture (a Router in a taddons context): pytest finds fixtures by module attribute.
fx = test_addon.fx


def header_bytes(flow: http.HTTPFlow) -> bytes:
    return b"\n".join(name + b":" + value for name, value in flow.request.headers.fields)


def assert_rejected(fx: Fixture, flow: http.HTTPFlow, status: int = 400) -> None:
    """Answered by ccmitm: the status, Anthropic's error shape, a usage line with no lane, and the
    request left as it came (no lane's host, no lane key)."""
    assert flow.response is not None and flow.response.status_code == status
    assert json.loads(flow.response.content or b"")["type"] == "error"
    (record,) = fx.records
    assert (record.lane, record.reason, record.status) == (None, "rejected", status)
    assert flow.request.host == "api.anthropic.com" and ZAI_KEY.encode() not in header_bytes(flow)
    assert fx.router.in_flight == 0


# --- the checks ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "path", ["/v1/messages", "/v1/messages?beta=true", "/", "/v1/messages/count_tokens", "/a?b=c@d"]
)
def test_origin_form_paths_pass(path: str) -> None:
    assert hygiene.path_problem(path) is None


@pytest.mark.parametrize(
    "path",
    [
        "@127.0.0.1:9/v1/messages",
        "//evil.example/v1/messages",
        "http://evil.example/v1/messages",
        "*",
        "",
        "v1/messages",
        "/v1@evil.example/messages",
        "/\\evil.example/v1/messages",
        "/v1/messages x",
        "/v1/messages\r\nx-api-key: a",
        "/v1/messages\x00",
    ],
)
def test_paths_that_are_not_origin_form_are_refused(path: str) -> None:
    assert hygiene.path_problem(path) is not None


@pytest.mark.parametrize(
    "fields",
    [
        ((b"x-foo", b"a\r\n x-api-key: " + CLIENT_API_KEY.encode()),),
        ((b"x-foo", b"a\nb"),),
        ((b"x-foo", b"a\x00b"),),
        ((b"x-foo\r\nx-api-key", b"a"),),
    ],
)
def test_header_names_and_values_with_cr_lf_or_nul_are_refused(fields: hygiene.HeaderFields) -> None:
    assert hygiene.header_problem(fields) is not None
    assert CLIENT_API_KEY not in (hygiene.header_problem(fields) or "")  # plain words, no values


@pytest.mark.parametrize(
    ("fields", "refused"),
    [
        (((b"content-length", b"5"),), False),
        (((b"Content-Length", b"5"), (b"content-length", b"5")), False),
        (((b"transfer-encoding", b"chunked"),), False),
        (((b"content-length", b"5"), (b"Transfer-Encoding", b"chunked")), True),
        (((b"content-length", b"5"), (b"content-length", b"6")), True),
        (((b"content-length", b"5, 5"),), True),
        (((b"content-length", b"-1"),), True),
    ],
)
def test_ambiguous_framing_is_refused(fields: hygiene.HeaderFields, refused: bool) -> None:
    assert (hygiene.framing_problem(fields) is not None) is refused


def test_a_lane_url_is_built_from_the_lanes_parts(fx: Fixture) -> None:
    lane = fx.runtime.active.lanes["zai"]
    url = lane_url(lane, "/v1/messages?beta=true")
    assert (url.scheme, url.host, url.path, url.query) == (
        "https",
        "zai.test",
        "/api/anthropic/v1/messages",
        b"beta=true",
    )
    with pytest.raises(ValueError):
        lane_url(lane, "@evil.example/v1/messages")


# --- the Router answers them -------------------------------------------------------------------------
def test_a_folded_header_is_answered_400_before_routing(fx: Fixture) -> None:
    flow = messages_flow(headers=[(b"x-foo", b"a\r\n x-api-key: " + CLIENT_API_KEY.encode())])
    send(fx.router, flow)
    assert_rejected(fx, flow)


@pytest.mark.parametrize("path", [b"@127.0.0.1:9/v1/messages", b"//evil.example/v1/messages"])
def test_a_path_that_is_not_origin_form_is_answered_400(fx: Fixture, path: bytes) -> None:
    flow = messages_flow(path=path)
    send(fx.router, flow)
    assert_rejected(fx, flow)


def test_a_request_with_trailers_is_answered_400(fx: Fixture) -> None:
    flow = messages_flow()
    flow.request.trailers = http.Headers(x_trailer="1")
    send(fx.router, flow)
    assert_rejected(fx, flow)


def test_an_oversize_body_is_answered_locally_with_a_usage_line(fx: Fixture) -> None:
    flow = messages_flow()
    flow.request.headers["content-length"] = str(LIMIT + 1)
    send(fx.router, flow)
    assert_rejected(fx, flow, status=413)


def test_the_failover_never_builds_a_url_from_a_path_that_names_a_host(fx: Fixture) -> None:
    """Even a request that skipped the head check (requestheaders) cannot point the failover
    elsewhere: the URL is built from the lane's parts and the path is checked once more."""
    flow = messages_flow(path=b"@127.0.0.1:9/v1/messages")
    fx.router.request(flow)  # routed to Z.AI without the requestheaders check
    answer(fx, flow, status=429, body=b'{"type":"error","error":{"type":"rate_limit_error"}}')
    assert fx.seen == []  # the default lane's transport was never called
    assert fx.records[-1].error is not None and "failover" in fx.records[-1].error


# --- one framing on every forwarded request ------------------------------------------------------------
@pytest.mark.parametrize("model", [SONNET, HAIKU])
def test_an_h2_request_without_content_length_is_forwarded_with_one(fx: Fixture, model: str) -> None:
    flow = messages_flow(model=model)
    flow.request.http_version = "HTTP/2.0"
    del flow.request.headers["content-length"]
    send(fx.router, flow)
    framing = [
        (n.lower(), v)
        for n, v in flow.request.headers.fields
        if n.lower() in (b"content-length", b"transfer-encoding")
    ]
    assert framing == [(b"content-length", str(len(flow.request.raw_content or b"")).encode())]


@pytest.mark.parametrize("model", [SONNET, HAIKU])
def test_a_chunked_upload_is_forwarded_with_a_content_length_instead(fx: Fixture, model: str) -> None:
    flow = messages_flow(model=model)
    del flow.request.headers["content-length"]
    flow.request.headers["transfer-encoding"] = "chunked"
    send(fx.router, flow)
    assert "transfer-encoding" not in flow.request.headers
    assert flow.request.headers["content-length"] == str(len(flow.request.raw_content or b""))
    if model == HAIKU:  # the length takes the old header's place: the lane key stays last
        assert flow.request.headers.fields[-1] == (b"x-api-key", ZAI_KEY.encode())


def test_json_nested_too_deep_to_parse_goes_to_the_default_lane() -> None:
    config = json.loads(json.dumps(CONFIG))
    config["proxy"]["max_body_bytes"] = 1024 * 1024
    fixture = Fixture(config)
    deep = b'{"model":"' + HAIKU.encode() + b'","x":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with taddons.context(fixture.router) as context:
        fixture.loop = context.master.event_loop
        flow = messages_flow()
        flow.request.raw_content = deep
        flow.request.headers["content-length"] = str(len(deep))
        send(fixture.router, flow)
        assert flow.response is None and flow.request.host == "anthropic.test"
        assert flow.request.raw_content == deep  # the client's bytes, untouched
        answer(fixture, flow)
    assert [(r.lane, r.reason) for r in fixture.records] == [("anthropic", "default")]


# --- credentials by value -----------------------------------------------------------------------------
def test_a_keyed_lane_drops_any_header_carrying_a_client_credential(fx: Fixture) -> None:
    copied = [
        (b"x-custom", CLIENT_API_KEY.encode()),
        (b"x-other", b"token " + CLIENT_OAUTH_TOKEN.encode()),
        (b"x-ccmitm-token", b"client-token-value"),
        (b"x-kept", b"1"),
    ]
    flow = messages_flow(headers=[(b"authorization", f"Bearer {CLIENT_OAUTH_TOKEN}".encode()), *copied])
    send(fx.router, flow)
    state: FlowState = flow.metadata["ccmitm"]
    assert state.lane.keyed
    sent = header_bytes(flow)
    assert CLIENT_API_KEY.encode() not in sent and CLIENT_OAUTH_TOKEN.encode() not in sent
    assert b"x-ccmitm-token" not in sent and b"x-kept:1" in sent


def test_the_default_lane_keeps_the_clients_headers(fx: Fixture) -> None:
    flow = messages_flow(model=SONNET, headers=[(b"x-custom", CLIENT_API_KEY.encode())])
    send(fx.router, flow)
    assert (b"x-custom", CLIENT_API_KEY.encode()) in flow.request.headers.fields
