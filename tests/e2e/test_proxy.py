"""The data path end to end: the real ccmitmd subprocess, real clients, fake upstreams on loopback.

Every assertion is on what the fake upstreams actually received and on what the daemon wrote.
"""

from __future__ import annotations

import json
import ssl
import stat
import threading

import anthropic
import httpx
import httpx2
import pytest

from tests.helpers import ALL_SECRETS, CLIENT_API_KEY, CLIENT_OAUTH_TOKEN, ZAI_KEY, Daemon, sha

pytestmark = pytest.mark.e2e

HAIKU = "claude-haiku-4-5-20251001"
SONNET = "claude-sonnet-5"
MESSAGES = [{"role": "user", "content": "say ok"}]


def sdk(daemon: Daemon, listener: str, **credentials: str) -> anthropic.Anthropic:
    """The official SDK wired to one listener: reverse (base URL) or intercepting (HTTPS proxy)."""
    credentials = credentials or {"api_key": CLIENT_API_KEY}
    if listener == "reverse":
        return anthropic.Anthropic(
            base_url=daemon.reverse_url, max_retries=0, default_headers=daemon.auth_headers, **credentials
        )
    client = httpx2.Client(
        proxy=daemon.proxy_url, verify=ssl.create_default_context(cafile=str(daemon.ca_cert))
    )
    return anthropic.Anthropic(http_client=client, max_retries=0, **credentials)


def assert_no_secret_in_files(daemon: Daemon) -> None:
    written = [p for p in daemon.root.rglob("*") if p.is_file() and "mitmproxy" not in p.parts]
    for path in written:
        text = path.read_bytes()
        for secret in ALL_SECRETS:
            assert secret.encode() not in text, f"a secret leaked into {path}"


@pytest.mark.parametrize("listener", ["reverse", "intercept"])
@pytest.mark.parametrize("credential", ["api_key", "auth_token"])
def test_haiku_goes_to_zai_with_the_lane_key_only(
    daemon: Daemon, upstreams, listener: str, credential: str
) -> None:
    """Both client shapes: an API key, and a subscription (``Authorization: Bearer sk-ant-oat01-…``
    with ``anthropic-beta: oauth-…``). Z.AI sees the lane key and neither the token nor the beta."""
    anthropic_up, zai = upstreams
    secret = CLIENT_API_KEY if credential == "api_key" else CLIENT_OAUTH_TOKEN
    reply = sdk(daemon, listener, **{credential: secret}).messages.create(
        model=HAIKU, max_tokens=16, messages=MESSAGES, extra_headers={"anthropic-beta": "oauth-2025-04-20"}
    )
    assert reply.content[0].text == "ok"

    [received] = zai.messages()
    assert anthropic_up.messages() == []
    assert received.path.startswith("/api/anthropic/v1/messages")  # the lane's prefix is kept
    assert received.model == "glm-4.5-air"
    assert sha(received.header("x-api-key")) == sha(ZAI_KEY)
    assert not received.has_header("authorization")
    assert not received.has_header("anthropic-beta")
    assert all(secret.encode() not in received.body for secret in ALL_SECRETS)
    for _, value in received.headers:
        assert CLIENT_API_KEY not in value and CLIENT_OAUTH_TOKEN not in value

    [line] = daemon.wait_usage(1)
    assert line["lane"] == "zai" and line["reason"] == "rule" and line["rule"] == "*haiku*"
    assert line["model"] == HAIKU and line["upstream_model"] == "glm-4.5-air"
    assert line["header_mode"] == "x-api-key" and line["status"] == 200 and line["error"] is None
    assert (line["input_tokens"], line["output_tokens"]) == (11, 7)
    assert line["listener"] == listener and line["path"] == "/v1/messages"


@pytest.mark.parametrize("listener", ["reverse", "intercept"])
@pytest.mark.parametrize("credential", ["api_key", "auth_token"])
def test_sonnet_goes_to_anthropic_byte_for_byte(
    daemon: Daemon, upstreams, listener: str, credential: str
) -> None:
    anthropic_up, zai = upstreams
    secret = CLIENT_API_KEY if credential == "api_key" else CLIENT_OAUTH_TOKEN
    body = json.dumps({"model": SONNET, "max_tokens": 16, "messages": MESSAGES}, indent=1).encode()
    client = sdk(daemon, listener, **{credential: secret})
    reply = client.messages.with_raw_response.create(
        model=SONNET, max_tokens=16, messages=MESSAGES, extra_headers={"anthropic-beta": "oauth-2025-04-20"}
    )
    assert reply.status_code == 200
    assert zai.received == []
    [received] = anthropic_up.messages()
    presented = received.header("x-api-key") or (received.header("authorization") or "").removeprefix(
        "Bearer "
    )
    assert sha(presented) == sha(secret)
    assert received.header("anthropic-beta") == "oauth-2025-04-20"
    assert ZAI_KEY not in json.dumps(received.headers) and ZAI_KEY.encode() not in received.body
    assert received.model == SONNET
    del body

    # Byte-for-byte: a body the proxy must not re-serialise arrives exactly as sent.
    raw = b'{"model":  "claude-sonnet-5" , "max_tokens":16,"messages":[{"role":"user","content":"h\\u00e9"}]}'
    target = daemon.reverse_url if listener == "reverse" else "https://api.anthropic.com"
    with httpx.Client(
        proxy=None if listener == "reverse" else daemon.proxy_url,
        verify=ssl.create_default_context(cafile=str(daemon.ca_cert)),
    ) as http:
        response = http.post(
            target + "/v1/messages?beta=true",
            content=raw,
            headers={"x-api-key": CLIENT_API_KEY, **daemon.auth_headers},
        )
    assert response.status_code == 200
    assert anthropic_up.messages()[-1].body == raw
    assert anthropic_up.messages()[-1].path == "/v1/messages?beta=true"
    lines = daemon.wait_usage(2)
    assert {line["header_mode"] for line in lines} == {"passthrough"}
    assert {line["lane"] for line in lines} == {"anthropic"}


@pytest.mark.parametrize("listener", ["reverse", "intercept"])
def test_streams_flow_event_by_event(daemon: Daemon, upstreams, listener: str) -> None:
    """The fake holds the rest of the stream until the client has seen the first text event.

    A proxy that buffered the response would show the client nothing, the fake would time out
    waiting, and ``gate_timed_out`` would be set.
    """
    _, zai = upstreams
    zai.behaviour = "gated"
    seen: list[str] = []
    with sdk(daemon, listener).messages.stream(model=HAIKU, max_tokens=16, messages=MESSAGES) as stream:
        for event in stream:
            seen.append(event.type)
            if event.type == "content_block_delta" and not zai._gate.is_set():
                zai.release()  # we saw an event before the upstream finished: it was not buffered
        final = stream.get_final_message()
    assert not zai.gate_timed_out
    assert seen[0] == "message_start" and seen[-1] == "message_stop"
    assert final.usage.output_tokens == 7
    [line] = daemon.wait_usage(1)
    assert line["stream"] is True and line["output_tokens"] == 7 and line["input_tokens"] == 11
    assert line["cache_read_input_tokens"] == 3 and line["ttfb_ms"] is not None


def test_split_events_still_give_usage(daemon: Daemon, upstreams) -> None:
    anthropic_up, _ = upstreams
    anthropic_up.behaviour = "slow"  # every event arrives in two pieces
    with sdk(daemon, "reverse").messages.stream(model=SONNET, max_tokens=16, messages=MESSAGES) as stream:
        text = stream.get_final_text()
    assert text == "ok"
    [line] = daemon.wait_usage(1)
    assert (line["input_tokens"], line["output_tokens"]) == (101, 17)


def test_authorization_header_mode(make_daemon, upstreams) -> None:
    _, zai = upstreams
    daemon = make_daemon(lambda c: c["lanes"]["zai"].update(header_mode="authorization"))
    sdk(daemon, "reverse").messages.create(model=HAIKU, max_tokens=16, messages=MESSAGES)
    [received] = zai.messages()
    assert sha(received.header("authorization")) == sha(f"Bearer {ZAI_KEY}")
    assert not received.has_header("x-api-key")
    assert daemon.wait_usage(1)[0]["header_mode"] == "authorization"


def test_missing_lane_key_keeps_claude_code_working_on_anthropic(make_daemon, upstreams) -> None:
    anthropic_up, zai = upstreams
    daemon = make_daemon(env={"ZAI_API_KEY": ""})
    reply = sdk(daemon, "reverse").messages.create(model=HAIKU, max_tokens=16, messages=MESSAGES)
    assert reply.content[0].text == "ok"
    assert zai.received == []
    [received] = anthropic_up.messages()
    assert received.model == HAIKU  # not rewritten for a lane it never went to
    [line] = daemon.wait_usage(1)
    assert line["lane"] == "anthropic" and line["reason"] == "lane_unavailable"
    assert line["header_mode"] == "passthrough"
    assert daemon.stderr().count("lane zai is unavailable (ZAI_API_KEY is not set)") == 1


def test_count_tokens_and_other_paths_go_to_the_default_lane(daemon: Daemon, upstreams) -> None:
    anthropic_up, zai = upstreams
    client = sdk(daemon, "reverse")
    assert client.messages.count_tokens(model=HAIKU, messages=MESSAGES).input_tokens == 101
    with httpx.Client() as http:
        assert (
            http.get(
                daemon.reverse_url + "/api/claude_code/settings", headers=daemon.auth_headers
            ).status_code
            == 200
        )
    assert zai.received == []
    assert [r.path.split("?")[0] for r in anthropic_up.received] == [
        "/v1/messages/count_tokens",
        "/api/claude_code/settings",
    ]
    lines = daemon.wait_usage(2)
    assert [line["reason"] for line in lines] == ["count_tokens", "default"]


def test_environment_toggles(make_daemon, upstreams) -> None:
    anthropic_up, zai = upstreams
    daemon = make_daemon(env={"OFFLOAD_PAUSED": "1"}, name="paused")
    sdk(daemon, "reverse").messages.create(model=HAIKU, max_tokens=16, messages=MESSAGES)
    assert daemon.wait_usage(1)[0]["reason"] == "paused"
    daemon.stop()
    daemon = make_daemon(env={"FORCE_HAIKU_TO_ZAI": "0"}, name="forced")
    sdk(daemon, "reverse").messages.create(model=HAIKU, max_tokens=16, messages=MESSAGES)
    assert daemon.wait_usage(1)[0]["reason"] == "rule_disabled"
    assert zai.received == [] and len(anthropic_up.messages()) == 2


def test_upstream_drop_mid_stream_is_logged_and_ends_the_client_stream(daemon: Daemon, upstreams) -> None:
    _, zai = upstreams
    zai.behaviour = "drop"
    with (
        pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)),
        httpx.stream(
            "POST",
            daemon.reverse_url + "/v1/messages",
            json={"model": HAIKU, "max_tokens": 16, "stream": True, "messages": MESSAGES},
            headers=daemon.auth_headers,
            timeout=20,
        ) as response,
    ):
        for _ in response.iter_raw():
            pass
    [line] = daemon.wait_usage(1)
    assert line["error"].startswith("upstream drop")
    assert line["input_tokens"] == 11  # whatever usage was seen before the drop is kept


def test_usage_log_is_private_and_holds_no_secret(daemon: Daemon, upstreams) -> None:
    for listener in ("reverse", "intercept"):
        client = sdk(daemon, listener)
        client.messages.create(model=HAIKU, max_tokens=16, messages=MESSAGES)
        client.messages.create(model=SONNET, max_tokens=16, messages=MESSAGES)
        sdk(daemon, listener, auth_token=CLIENT_OAUTH_TOKEN).messages.create(
            model=SONNET, max_tokens=16, messages=MESSAGES
        )
    lines = daemon.wait_usage(6)
    expected_fields = {
        "ts", "id", "lane", "rule", "reason", "path", "model", "upstream_model", "status", "stream",
        "ttfb_ms", "duration_ms", "input_tokens", "output_tokens", "cache_read_input_tokens",
        "cache_creation_input_tokens", "header_mode", "http_version", "session", "error",
    }  # fmt: skip
    for line in lines:
        assert expected_fields <= set(line)
    usage = daemon.logs_dir / "usage.jsonl"
    assert stat.S_IMODE(usage.stat().st_mode) == 0o600
    daemon.stop()
    assert_no_secret_in_files(daemon)


def test_concurrent_calls_each_get_one_line(daemon: Daemon, upstreams) -> None:
    anthropic_up, zai = upstreams
    errors: list[BaseException] = []

    def worker(model: str) -> None:
        try:
            with httpx.Client(timeout=20) as http:
                for _ in range(5):
                    r = http.post(
                        daemon.reverse_url + "/v1/messages",
                        json={"model": model, "max_tokens": 8, "stream": True, "messages": MESSAGES},
                        headers={"x-api-key": CLIENT_API_KEY, **daemon.auth_headers},
                    )
                    assert r.status_code == 200
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(m,)) for m in (HAIKU, SONNET) * 3]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    lines = daemon.wait_usage(30)
    assert len(lines) == 30 and len({line["id"] for line in lines}) == 30
    assert len(zai.messages()) == 15 and len(anthropic_up.messages()) == 15
