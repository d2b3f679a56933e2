"""Client authentication end to end: the real daemon, real clients (Claude Code wired by
`ccctl env`, the anthropic SDK, httpx, raw sockets), fake upstreams that must never see the token
nor a refused call."""

from __future__ import annotations

import base64
import json
import socket
import ssl
import stat
from pathlib import Path

import anthropic
import httpx
import httpx2
import pytest

from ccmitm.reports.secretscan import scan_tree
from tests.e2e.test_claude_code import claude_bin  # noqa: F401 - the fixture
from tests.e2e.test_claude_wired import wired_bash
from tests.helpers import ALL_SECRETS, CLIENT_API_KEY, Daemon, post, wait_for

pytestmark = pytest.mark.e2e

HAIKU = "claude-haiku-4-5"
SONNET = "claude-sonnet-4-5"
MESSAGES = [{"role": "user", "content": "say ok"}]
WRONG = "not-the-client-token-0123456789"


def upstream_saw_no_token(daemon: Daemon, *fakes) -> None:
    """Neither header, nor the token's value anywhere, reached a fake upstream."""
    token = daemon.token
    assert token
    for fake in fakes:
        for received in fake.received:
            assert not received.has_header("x-ccmitm-token")
            assert not received.has_header("proxy-authorization")
            assert token not in json.dumps(received.headers) and token.encode() not in received.body


def connect(daemon: Daemon, headers: dict[str, str]) -> bytes:
    """One raw CONNECT to the intercepting listener: its whole answer (head and body)."""
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    request = f"CONNECT api.anthropic.com:443 HTTP/1.1\r\nHost: api.anthropic.com:443\r\n{lines}\r\n"
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=10) as sock:
        sock.sendall(request.encode())
        answer = b""
        while b"\r\n\r\n" not in answer and (chunk := sock.recv(65536)):
            answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        length = next(
            (
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ),
            0,
        )
        while len(body) < length and (chunk := sock.recv(65536)):
            body += chunk
        return head + b"\r\n\r\n" + body


def basic(token: str | None) -> str:
    return "Basic " + base64.b64encode(f"ccmitm:{token}".encode()).decode()


def intercepting_sdk(daemon: Daemon, proxy_url: str) -> anthropic.Anthropic:
    verify = ssl.create_default_context(cafile=str(daemon.ca_cert))
    client = httpx2.Client(proxy=proxy_url, verify=verify)
    return anthropic.Anthropic(http_client=client, max_retries=0, api_key=CLIENT_API_KEY)


# --- wired clients work ---------------------------------------------------------------------------
@pytest.mark.claude
@pytest.mark.parametrize("mode", ["intercept", "reverse"])
def test_claude_code_wired_by_ccctl_env_just_works(
    claude_bin: Path,  # noqa: F811
    daemon: Daemon,
    upstreams,
    mode: str,
) -> None:
    anthropic_up, zai = upstreams
    zai.reply_text, anthropic_up.reply_text = "ok from the GLM lane", "ok from the Anthropic lane"
    wire = "ccctl env" + (" --reverse" if mode == "reverse" else "")
    script = (
        f'eval "$({wire} 2>/dev/null)"; claude -p "say ok" --model haiku; claude -p "say ok" --model sonnet'
    )
    result = wired_bash(claude_bin, daemon, script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["ok from the GLM lane", "ok from the Anthropic lane"]
    lines = daemon.usage_lines()
    assert all(line["reason"] != "unauthenticated" for line in lines), lines
    assert {line["listener"] for line in lines} == {mode}
    upstream_saw_no_token(daemon, anthropic_up, zai)


@pytest.mark.claude
def test_claude_code_with_a_stale_token_says_why_at_once_instead_of_retrying(
    claude_bin: Path,  # noqa: F811
    daemon: Daemon,
    upstreams,
) -> None:
    """A shell wired before `ccctl token rotate`: Claude Code shows ccmitm's message after one
    attempt (the 401 says retrying cannot help), instead of retrying for minutes in silence."""
    anthropic_up, zai = upstreams
    script = (
        'eval "$(ccctl env --reverse 2>/dev/null)"; '
        f'ANTHROPIC_CUSTOM_HEADERS="x-ccmitm-token: {WRONG}" claude -p "say ok" --model haiku'
    )
    result = wired_bash(claude_bin, daemon, script)
    assert result.returncode != 0
    assert (
        "wrong client token" in result.stdout + result.stderr and "ccctl env" in result.stdout + result.stderr
    )
    refused = [line for line in daemon.usage_lines() if line["reason"] == "unauthenticated"]
    assert len(refused) == 1, f"Claude Code tried {len(refused)} times"
    assert not anthropic_up.messages() and not zai.messages()


def test_the_sdk_with_the_token_in_both_modes(daemon: Daemon, upstreams) -> None:
    anthropic_up, zai = upstreams
    reverse = anthropic.Anthropic(
        base_url=daemon.reverse_url,
        max_retries=0,
        api_key=CLIENT_API_KEY,
        default_headers=daemon.auth_headers,
    )
    for client in (reverse, intercepting_sdk(daemon, daemon.proxy_url)):
        for model in (HAIKU, SONNET):
            client.messages.create(model=model, max_tokens=8, messages=MESSAGES)
    lines = daemon.wait_usage(4)
    assert [line["lane"] for line in lines] == ["zai", "anthropic", "zai", "anthropic"]
    assert [line["listener"] for line in lines] == ["reverse", "reverse", "intercept", "intercept"]
    upstream_saw_no_token(daemon, anthropic_up, zai)


# --- everybody else is refused --------------------------------------------------------------------
def test_unauthenticated_calls_get_407_or_401_and_reach_no_lane(daemon: Daemon, upstreams) -> None:
    anthropic_up, zai = upstreams
    assert daemon.token and stat.S_IMODE(daemon.token_path.stat().st_mode) == 0o600

    # Intercepting: a CONNECT without credentials, and one with a wrong password.
    for headers in (
        {},
        {
            "Proxy-Authorization": "Basic "
            + __import__("base64").b64encode(f"ccmitm:{WRONG}".encode()).decode()
        },
    ):
        answer = connect(daemon, headers)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 407"), answer
        assert b'Proxy-Authenticate: Basic realm="ccmitm"' in head
        assert b'eval "$(ccctl env)"' in body and b"ccctl shell init" in body
    # A real client through the bare proxy: the tunnel is refused.
    with pytest.raises(anthropic.APIConnectionError):
        intercepting_sdk(daemon, daemon.bare_proxy_url).messages.create(
            model=HAIKU, max_tokens=8, messages=MESSAGES
        )
    # A plain proxied request (no CONNECT) needs the credentials too.
    with httpx.Client(proxy=daemon.bare_proxy_url) as client:
        assert client.post("http://api.anthropic.com/v1/messages", json={"model": HAIKU}).status_code == 407

    # Reverse: no header, a wrong one, and the proxy credentials (which do not count there).
    for headers in ({}, {"x-ccmitm-token": WRONG}):
        response = httpx.post(
            daemon.reverse_url + "/v1/messages",
            json={"model": HAIKU, "max_tokens": 8, "messages": MESSAGES},
            headers={"x-api-key": CLIENT_API_KEY, **headers},
            timeout=30,
        )
        assert response.status_code == 401
        error = response.json()
        assert error["type"] == "error" and error["error"]["type"] == "authentication_error"
        assert 'eval "$(ccctl env)"' in error["error"]["message"]
    sdk = anthropic.Anthropic(base_url=daemon.reverse_url, max_retries=0, api_key=CLIENT_API_KEY)
    with pytest.raises(anthropic.AuthenticationError):
        sdk.messages.create(model=HAIKU, max_tokens=8, messages=MESSAGES)

    assert zai.received == [] and anthropic_up.received == []
    lines = daemon.wait_usage(7)
    assert {line["lane"] for line in lines} == {None}
    assert {line["reason"] for line in lines} == {"unauthenticated"}
    assert [line["error"] for line in lines] == [
        "no client token",
        "wrong client token",
        "no client token",
        "no client token",
        "no client token",
        "wrong client token",
        "no client token",
    ]
    assert [line["status"] for line in lines] == [407, 407, 407, 407, 401, 401, 401]
    assert "authentication_error" not in daemon.stderr()  # one usage line each, no log noise
    status = json.loads(daemon.ccctl("status", "--json", check=True).stdout)
    assert daemon.token not in json.dumps(status)
    assert status["lanes"]["zai"]["requests"] == 0  # refused calls count for no lane
    # The audit checks every one of those lines (a refused CONNECT names its authority as path).
    assert {line["path"] for line in lines if line["method"] == "CONNECT"} == {"api.anthropic.com:443"}
    verify = daemon.ccctl("verify", "--json")
    assert verify.returncode == 0, verify.stdout
    assert json.loads(verify.stdout)["answered_locally"] == {"unauthenticated": 7}


# --- rotation ------------------------------------------------------------------------------------
def test_token_rotate_takes_effect_at_once_and_the_old_token_stops_working(daemon: Daemon, upstreams) -> None:
    anthropic_up, zai = upstreams
    old, old_proxy, old_headers = daemon.token, daemon.proxy_url, daemon.auth_headers
    assert post(daemon).status_code == 200
    # A client that keeps its connection (and so its tunnel) across the rotation.
    verify = ssl.create_default_context(cafile=str(daemon.ca_cert))
    kept = httpx.Client(proxy=old_proxy, verify=verify, timeout=30)
    body = {"model": HAIKU, "max_tokens": 8, "messages": MESSAGES}
    assert kept.post("https://api.anthropic.com/v1/messages", json=body).status_code == 200

    path = daemon.ccctl("token", "path", check=True).stdout.strip()
    assert path == str(daemon.token_path) and old not in path
    rotated = daemon.ccctl("token", "rotate", check=True)
    assert "ccmitmd uses it from now on" in rotated.stdout and old not in rotated.stdout
    new = daemon.token
    assert new and new != old and stat.S_IMODE(daemon.token_path.stat().st_mode) == 0o600
    assert daemon.ccctl("token", "show", check=True).stdout.strip() == new

    assert post(daemon, headers=old_headers).status_code == 401
    assert connect(daemon, {"Proxy-Authorization": basic(old)}).startswith(b"HTTP/1.1 407")
    try:
        refused = kept.post("https://api.anthropic.com/v1/messages", json=body).status_code
    except httpx.ProxyError:
        refused = 407  # a new tunnel, asked for with the old token
    finally:
        kept.close()
    assert refused in (401, 407)

    assert post(daemon).status_code == 200  # the new token (daemon.auth_headers reads the file)
    intercepting_sdk(daemon, daemon.proxy_url).messages.create(model=SONNET, max_tokens=8, messages=MESSAGES)
    assert (
        "client token replaced" in daemon.stderr()
        and old not in daemon.stderr()
        and new not in daemon.stderr()
    )
    upstream_saw_no_token(daemon, anthropic_up, zai)
    assert old not in json.dumps([r.headers for r in zai.received + anthropic_up.received])


def test_token_rotate_with_the_daemon_stopped_is_used_at_the_next_start(make_daemon) -> None:
    daemon = make_daemon()
    daemon.stop()
    old = daemon.token
    result = daemon.ccctl("token", "rotate", check=True)
    assert "not running" in result.stdout
    daemon.start()
    assert daemon.token != old
    assert post(daemon).status_code == 200
    assert post(daemon, headers={"x-ccmitm-token": old or ""}).status_code == 401


# --- client_auth: false, and turning it on without a restart ---------------------------------------
def test_client_auth_off_is_the_old_behaviour_and_a_reload_turns_it_on(make_daemon, upstreams) -> None:
    anthropic_up, zai = upstreams
    daemon = make_daemon(lambda config: config["proxy"].update(client_auth=False))
    assert daemon.token is None  # no token made while none is needed
    assert post(daemon).status_code == 200
    intercepting_sdk(daemon, daemon.bare_proxy_url).messages.create(
        model=HAIKU, max_tokens=8, messages=MESSAGES
    )
    env = daemon.ccctl("env", "--shell", "bash", check=True).stdout
    assert f"export HTTPS_PROXY='http://127.0.0.1:{daemon.port}'" in env and "ccmitm:" not in env
    reverse = daemon.ccctl("env", "--reverse", "--shell", "bash", check=True).stdout
    assert "ANTHROPIC_CUSTOM_HEADERS" not in reverse

    daemon.write_config({**daemon.config, "proxy": {**daemon.config["proxy"], "client_auth": True}})
    wait_for(lambda: daemon.token is not None and post(daemon, headers={"x-ccmitm-token": ""}).status_code == 401,
             what="client_auth on")  # fmt: skip
    assert post(daemon).status_code == 200  # with the token the reload made
    env = daemon.ccctl("env", "--shell", "bash", check=True).stdout
    assert f"export HTTPS_PROXY='http://ccmitm:{daemon.token}@127.0.0.1:{daemon.port}'" in env
    assert len(zai.messages()) == 3
    upstream_saw_no_token(daemon, anthropic_up, zai)


# --- the token is a secret ------------------------------------------------------------------------
def test_the_token_is_in_no_file_the_daemon_wrote_and_the_bundle_scrubs_it(daemon: Daemon, upstreams) -> None:
    token = daemon.token
    assert token
    post(daemon)
    post(daemon, headers={"x-ccmitm-token": WRONG})
    daemon.ccctl("reload", check=True)
    daemon.ccctl("token", "rotate", check=True)
    rotated = daemon.token
    assert rotated and post(daemon).status_code == 200
    # A usage line that somehow holds the token (planted here): the bundle must scrub it.
    usage = daemon.logs_dir / "usage.jsonl"
    original = usage.read_text()
    usage.write_text(original + json.dumps({"ts": "2099-01-01T00:00:00+00:00", "note": rotated}) + "\n")
    try:
        bundled = json.loads(daemon.ccctl("bundle", "--json", check=True).stdout)
    finally:
        usage.write_text(original)
    assert bundled["ok"], bundled
    folder = Path(bundled["path"])
    assert scan_tree(folder.parent, {"client-token": rotated, "old": token}) == []
    # Everything else ccmitm wrote: the token only in its own file.
    for place in daemon.written_by_ccmitm():
        findings = scan_tree(place, {"client-token": rotated, "old": token})
        assert [f.file for f in findings] in ([], [str(daemon.token_path)]), findings
    assert daemon.secret_findings((*ALL_SECRETS, token)) == []


@pytest.mark.parametrize("shell", ["bash", "fish"])
def test_ccsub_keeps_the_token_on_another_port_and_never_prints_it(daemon: Daemon, shell: str) -> None:
    import os
    import shutil
    import subprocess
    import sys

    from tests.helpers import REPO_ROOT

    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed (.ci/run installs it)")
    habits = REPO_ROOT / "etc" / "shell" / ("ccmitm.fish" if shell == "fish" else "ccmitm.sh")
    env = {**daemon.env(), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("NODE_EXTRA_CA_CERTS", None)
    script = f'source {habits}; ccsub 9999; echo "proxy=$HTTPS_PROXY"'
    result = subprocess.run([shell, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    printed, proxy = result.stdout.strip().splitlines()
    assert proxy == f"proxy=http://ccmitm:{daemon.token}@127.0.0.1:9999"
    assert printed == "wired: HTTPS_PROXY points at 127.0.0.1:9999"
    assert daemon.token not in result.stderr
