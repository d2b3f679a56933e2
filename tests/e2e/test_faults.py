"""Reliability under faults, each injected against the real daemon: a sick offload lane, stops,
crashes, stalls, cross-lane conversations and hostile input."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time

import httpx
import pytest

from ccmitm.testing.ports import free_port, wait_port
from tests.helpers import CLIENT_API_KEY, ZAI_KEY, BackgroundStream, Daemon, post, sha, status, wait_for

pytestmark = pytest.mark.e2e

HAIKU = "claude-haiku-4-5"
SONNET = "claude-sonnet-5"


def breaker_config(failures: int = 2, cooldown_s: float = 1.0, failover: bool = True):
    def mutate(config: dict) -> None:
        config["breaker"] = {
            "failures": failures,
            "window_s": 60,
            "cooldown_s": cooldown_s,
            "failover": failover,
        }

    return mutate


# --- the offload lane is sick -----------------------------------------------------------------------
def test_failover_answers_from_anthropic_then_the_breaker_opens_and_closes(make_daemon, upstreams) -> None:
    anthropic_up, zai = upstreams
    # A cooldown long enough that the breaker is still open when the test looks, however slow
    # the machine; the test then waits for it to half-open.
    daemon = make_daemon(breaker_config(failures=2, cooldown_s=6.0))
    zai.behaviour = "status:529"

    hints = {"x-claude-code-session-id": "sess-1", "x-claude-code-request-class": "subagent"}
    for _ in range(2):  # each refusal is retried once on Anthropic; the client sees only success
        response = post(daemon, stream=True, headers=hints)
        assert response.status_code == 200 and b"message_stop" in response.content
    assert len(zai.messages()) == 2 and len(anthropic_up.messages()) == 2
    for call in anthropic_up.messages():  # the failover carries the client's own request
        assert call.model == HAIKU and sha(call.header("x-api-key")) == sha(CLIENT_API_KEY)
        assert ZAI_KEY not in json.dumps(call.headers)

    lines = daemon.wait_usage(4)
    refused, failover = lines[0], lines[1]
    assert refused["lane"] == "zai" and refused["status"] == 529 and "failed over" in refused["error"]
    assert failover["lane"] == "anthropic" and failover["reason"] == "failover"
    assert failover["attempt_of"] == refused["id"] and failover["header_mode"] == "passthrough"
    assert failover["input_tokens"] == 101
    for line in (refused, failover):  # both attempts say which Claude Code call they served
        assert line["session"] == "sess-1" and line["request_class"] == "subagent"

    breaker = status(daemon)["lanes"]["zai"]["breaker"]
    assert breaker["state"] == "open" and breaker["retry_at"]

    post(daemon)  # breaker open: straight to Anthropic, Z.AI untouched
    assert len(zai.messages()) == 2
    assert daemon.wait_usage(5)[-1]["reason"] == "breaker"

    zai.behaviour = "ok"
    wait_for(
        lambda: status(daemon)["lanes"]["zai"]["breaker"]["state"] == "half_open",
        timeout=30,
        what="half open",
    )
    post(daemon)  # the trial
    assert len(zai.messages()) == 3
    assert status(daemon)["lanes"]["zai"]["breaker"]["state"] == "closed"
    assert daemon.wait_usage(6)[-1]["lane"] == "zai"


def test_a_401_from_the_offload_lane_opens_the_breaker_at_once(make_daemon, upstreams) -> None:
    _, zai = upstreams
    daemon = make_daemon(breaker_config(failures=5, cooldown_s=60))
    zai.behaviour = "status:401"
    assert post(daemon).status_code == 200  # Claude Code never sees the lane's 401
    lane = status(daemon)["lanes"]["zai"]
    assert lane["breaker"]["state"] == "open"
    assert "rejected the key (401)" in lane["breaker"]["message"]
    assert "rejected the key" in daemon.ccctl("status", check=True).stdout
    post(daemon)
    assert len(zai.messages()) == 1


def test_without_failover_the_refusal_reaches_the_client_unchanged(make_daemon, upstreams) -> None:
    anthropic_up, zai = upstreams
    daemon = make_daemon(breaker_config(failures=5, failover=False))
    zai.behaviour = "status:429"
    response = post(daemon)
    assert response.status_code == 429 and response.json()["error"]["type"] == "rate_limit_error"
    assert anthropic_up.messages() == []  # no retry loop of ours on top of Claude Code's
    assert len(zai.messages()) == 1


def test_an_unreachable_offload_lane_fails_fast_and_trips_the_breaker(make_daemon, upstreams) -> None:
    anthropic_up, _ = upstreams
    dead = free_port()
    daemon = make_daemon(
        lambda c: (c["lanes"]["zai"].update(url=f"http://127.0.0.1:{dead}"), breaker_config(2, 60)(c))
    )
    assert post(daemon).status_code == 502  # mitmproxy's answer; Claude Code retries it
    lines = daemon.wait_usage(1)
    assert lines[0]["error"].startswith("connect failure")
    # One connect failure is enough: the retry already goes to Anthropic.
    assert post(daemon).status_code == 200
    assert daemon.wait_usage(2)[-1]["reason"] == "breaker"
    assert len(anthropic_up.messages()) == 1


def test_a_stalled_upstream_ends_the_client_stream(make_daemon, upstreams) -> None:
    _, zai = upstreams
    daemon = make_daemon(lambda c: c["proxy"].update(read_timeout_s=2))
    zai.behaviour = "stall"
    zai.stall_s = 60
    received = b""
    # Not a ReadTimeout: ccmitm ends the stream long before the client's own 30 s timeout.
    with (
        pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)),
        httpx.stream(
            "POST",
            daemon.reverse_url + "/v1/messages",
            json={"model": HAIKU, "max_tokens": 8, "stream": True, "messages": []},
            headers=daemon.auth_headers,
            timeout=httpx.Timeout(30),
        ) as response,
    ):
        for chunk in response.iter_raw():
            received += chunk
    assert b"message_start" in received
    [line] = daemon.wait_usage(1)
    assert line["error"].startswith("upstream stalled") and line["input_tokens"] == 11


# --- conversations that cross lanes ------------------------------------------------------------------
def test_glm_thinking_blocks_are_stripped_on_the_way_to_anthropic(daemon: Daemon, upstreams) -> None:
    anthropic_up, zai = upstreams
    glm_signature = "glm-sig-" + "x" * 40
    zai.thinking_signature = glm_signature
    first = post(daemon, stream=True)
    assert glm_signature.encode() in first.content
    daemon.wait_usage(1)

    daemon.ccctl("pause", check=True)  # the conversation moves to Anthropic mid-way
    anthropic_signed = "EqQBCkYIBRgCKkA" + "a" * 60
    conversation = [
        {"role": "user", "content": "hi"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "hm", "signature": glm_signature},
                {"type": "text", "text": "ok"},
            ],
        },
        {"role": "user", "content": "and?"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "claude thought", "signature": anthropic_signed},
                {"type": "text", "text": "sure"},
            ],
        },
        {"role": "user", "content": "go on"},
    ]
    response = httpx.post(
        daemon.reverse_url + "/v1/messages",
        json={"model": HAIKU, "max_tokens": 8, "messages": conversation},
        headers={"x-api-key": CLIENT_API_KEY, **daemon.auth_headers},
        timeout=30,
    )
    assert response.status_code == 200
    sent = anthropic_up.messages()[-1].json()["messages"]
    assert sent[1]["content"] == [{"type": "text", "text": "ok"}]  # the GLM block is gone
    assert sent[3] == conversation[3]  # Anthropic's own block is untouched
    line = daemon.wait_usage(2)[-1]
    assert line["reason"] == "paused" and line["thinking_stripped"] == 1


# --- stop, crash, restart ----------------------------------------------------------------------------
def test_sigterm_drains_in_flight_streams_and_refuses_new_connections(daemon: Daemon, upstreams) -> None:
    _, zai = upstreams
    zai.behaviour = "gated"
    stream = BackgroundStream(daemon.reverse_url, headers=daemon.auth_headers)

    daemon.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: "draining 1 in-flight" in daemon.stderr(), what="drain")
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", daemon.port), timeout=2).close()
    assert daemon.proc.poll() is None  # still serving the stream

    zai.release()
    assert b"message_stop" in stream.join() and stream.errors == []
    assert daemon.proc.wait(30) == 0
    [line] = daemon.usage_lines()
    assert line["error"] is None and line["output_tokens"] == 7


def test_a_second_sigterm_closes_the_rest_at_once(daemon: Daemon, upstreams) -> None:
    _, zai = upstreams
    zai.behaviour = "gated"
    stream = BackgroundStream(daemon.reverse_url, headers=daemon.auth_headers)
    daemon.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: "draining 1 in-flight" in daemon.stderr(), what="drain")
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(20) == 0
    stream.join()
    assert stream.errors and not isinstance(stream.errors[0], httpx.TimeoutException)
    zai.release()


def test_kill_9_mid_stream_fails_the_client_fast_and_a_restart_binds_at_once(
    daemon: Daemon, upstreams
) -> None:
    _, zai = upstreams
    zai.behaviour = "gated"
    stream = BackgroundStream(daemon.reverse_url, headers=daemon.auth_headers)
    daemon.proc.kill()
    daemon.proc.wait(10)
    stream.join()
    assert stream.errors and not isinstance(stream.errors[0], httpx.TimeoutException)  # failed, did not hang
    zai.release()
    zai.behaviour = "ok"

    daemon.start()  # same ports, right away: no "address already in use"
    assert "address already in use" not in daemon.stderr().lower()
    assert post(daemon).status_code == 200


# --- hostile and broken input ------------------------------------------------------------------------
def raw_exchange(port: int, data: bytes, read: bool = True) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        if not read:
            return b""
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b'{"model": 42, "messages": []}',
        b'{"model": ["claude-haiku"], "messages": []}',
        b'["model", "claude-haiku"]',
        b"\x00\xff\xfe binary \x89PNG",
        b'{"model": "claude-haiku-\\ud800", "messages": []}',
        b"",
    ],
)
def test_broken_bodies_pass_through_to_the_default_lane(daemon: Daemon, upstreams, body: bytes) -> None:
    anthropic_up, zai = upstreams
    response = httpx.post(
        daemon.reverse_url + "/v1/messages",
        content=body,
        headers={"x-api-key": CLIENT_API_KEY, **daemon.auth_headers},
        timeout=20,
    )
    assert response.status_code in (200, 400)
    if b"ud800" in body:  # valid JSON with a lone surrogate: a Haiku model, routed and rewritten
        assert zai.messages()[-1].model == "glm-4.5-air"
    else:
        assert zai.received == [] and anthropic_up.received[-1].body == body
    assert post(daemon, model=SONNET).status_code == 200  # and the daemon keeps serving


def test_a_too_large_body_gets_an_anthropic_shaped_413(make_daemon, upstreams) -> None:
    anthropic_up, _ = upstreams
    daemon = make_daemon(lambda c: c["proxy"].update(max_body_bytes=4096))
    response = post(daemon, padding="x" * 10_000)
    assert response.status_code == 413
    assert response.json() == {
        "type": "error",
        "error": {
            "type": "request_too_large",
            "message": "request body is larger than ccmitm's limit of 4096 bytes",
        },
    }
    chunked = httpx.post(
        daemon.reverse_url + "/v1/messages",
        content=iter([b"x" * 3000] * 4),
        headers={"x-api-key": CLIENT_API_KEY, **daemon.auth_headers},
    )
    assert chunked.status_code >= 400  # no content-length: mitmproxy's own limit stops it
    assert anthropic_up.received == []
    assert post(daemon).status_code == 200


def test_garbage_on_the_wire_never_wedges_the_daemon(daemon: Daemon) -> None:
    attacks = [
        b"GET /v1/messages HTTP/1.1\r\nHost: x\r\nX-Evil: a\rb\r\n\r\n",  # bare CR in a header
        b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nx-api-key: a\nInjected: 1\r\n\r\n",
        b"\x16\x03\x01\x00\xff" + b"\x00" * 64,  # TLS garbage on a plain listener
        b"NOT HTTP AT ALL\r\n\r\n",
        b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    ]
    # With the client token, so the attacks get past the client check to the parts behind it.
    token_line = b"".join(b"%s: %s\r\n" % (k.encode(), v.encode()) for k, v in daemon.auth_headers.items())
    for attack in attacks:
        raw_exchange(daemon.reverse_port, attack.replace(b"Host: x\r\n", b"Host: x\r\n" + token_line))
        raw_exchange(daemon.port, attack)
    # A client that aborts mid-upload.
    raw_exchange(
        daemon.reverse_port,
        b'POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{"model": ',
        read=False,
    )
    assert post(daemon).status_code == 200
    assert daemon.proc.poll() is None


def test_unknown_paths_and_http2_clients_are_served(daemon: Daemon, upstreams) -> None:
    anthropic_up, _ = upstreams
    assert (
        httpx.get(
            daemon.reverse_url + "/v1/unknown/thing", headers=daemon.auth_headers, timeout=10
        ).status_code
        == 200
    )
    assert anthropic_up.received[-1].path == "/v1/unknown/thing"
    result = subprocess.run(
        ["curl", "-sS", "--http2", "-x", daemon.proxy_url, "--cacert", str(daemon.ca_cert), "-o", "/dev/null",
         "-w", "%{http_version} %{http_code}", "https://api.anthropic.com/v1/models"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.stdout == "2 200", result.stderr


def test_only_intercept_hosts_are_decrypted(daemon: Daemon, upstreams) -> None:
    """A CONNECT to any other host is a blind tunnel: the bytes reach it untouched, unlogged."""
    _, elsewhere = upstreams  # any host that is not an intercept host (nor the reverse target)
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=10) as sock:
        target = f"127.0.0.1:{elsewhere.port}"
        credentials = "".join(f"{k}: {v}\r\n" for k, v in daemon.proxy_auth_headers.items())
        sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{credentials}\r\n".encode())
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        sock.sendall(
            b"GET /tunnelled HTTP/1.1\r\nHost: elsewhere\r\nx-api-key: "
            + CLIENT_API_KEY.encode()
            + b"\r\n\r\n"
        )
        assert b"200" in sock.recv(65536)
    received = elsewhere.received[-1]
    assert received.path == "/tunnelled" and received.header("host") == "elsewhere"
    assert sha(received.header("x-api-key")) == sha(CLIENT_API_KEY)  # bytes untouched
    time.sleep(0.3)
    assert daemon.usage_lines() == []


def test_listeners_bind_the_configured_loopback_host_only(daemon: Daemon) -> None:
    listeners = status(daemon)["listeners"]["bound"]
    assert {
        tuple(address[0]) if isinstance(address[0], list) else address[0]
        for entry in listeners
        for address in entry["addresses"]
    } == {"127.0.0.1"}
    wait_port(daemon.port)


def test_ca_private_key_and_confdir_are_repaired_to_owner_only(daemon: Daemon) -> None:
    confdir = daemon.ca_cert.parent
    key = confdir / "mitmproxy-ca.pem"
    assert key.exists() and (key.stat().st_mode & 0o077) == 0
    daemon.stop()
    key.chmod(0o644)
    confdir.chmod(0o755)
    daemon.start()
    assert (key.stat().st_mode & 0o777) == 0o600 and (confdir.stat().st_mode & 0o777) == 0o700
    assert "tightened permissions" in daemon.stderr()


def test_everything_ccmitm_writes_is_owner_only(daemon: Daemon) -> None:
    post(daemon)
    post(daemon, model=SONNET)
    daemon.ccctl("rotate", check=True)
    daemon.ccctl("bundle", check=True, timeout=120)
    daemon.ccctl("pause", check=True)
    daemon.stop()
    checked = 0
    for place in daemon.written_by_ccmitm():
        for path in [place, *place.rglob("*")] if place.is_dir() else [place]:
            if path == daemon.stderr_path:
                continue  # the test harness created that one
            mode = path.stat().st_mode & 0o777
            assert mode & 0o077 == 0, f"{path} is {oct(mode)}"
            checked += 1
    assert checked > 10
