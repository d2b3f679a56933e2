"""Control plane and hot config against the real daemon: real socket, real file edits."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import httpx
import pytest
import yaml

from ccmitm.testing.ports import free_port, wait_port
from tests.helpers import (
    CLIENT_API_KEY,
    REPO_ROOT,
    ZAI_KEY,
    BackgroundStream,
    Daemon,
    post,
    sha,
    status,
    wait_for,
)

pytestmark = pytest.mark.e2e

HAIKU = "claude-haiku-4-5"


def ca_context(daemon: Daemon):
    import ssl

    return ssl.create_default_context(cafile=str(daemon.ca_cert))


def reload_count(daemon: Daemon) -> int:
    return daemon.stderr().count("config reloaded")


def test_status_reports_the_running_daemon(daemon: Daemon) -> None:
    post(daemon)
    daemon.wait_usage(1)
    data = status(daemon)
    assert data["running"] is True and data["paused"] is False
    assert data["pid"] == daemon.proc.pid
    assert data["listeners"] == {
        **data["listeners"],
        "port": daemon.port,
        "reverse_port": daemon.reverse_port,
        "client_auth": True,
    }
    assert data["lanes"]["zai"]["requests"] == 1 and data["lanes"]["zai"]["available"] is True
    assert data["lanes"]["zai"]["header_mode"] == "x-api-key"
    assert data["lanes"]["anthropic"]["header_mode"] == "passthrough"
    assert data["config"]["source"] == str(daemon.config_path) and data["config"]["last_reload_error"] is None
    assert {job["id"] for job in data["jobs"]} >= {"rotate-logs", "nightly-bundle"}
    human = daemon.ccctl("status", check=True).stdout
    assert "running" in human and "zai" in human and "client token required" in human
    assert daemon.token and daemon.token not in human  # said to be required, never shown
    for secret in (ZAI_KEY, CLIENT_API_KEY):
        assert secret not in human and secret not in json.dumps(data)
    shown = daemon.ccctl("config", "show", check=True).stdout
    assert ZAI_KEY not in shown and "lane zai key: present" in shown


def test_pause_and_resume_route_at_once_and_persist_across_restart(make_daemon, upstreams) -> None:
    anthropic_up, zai = upstreams
    daemon = make_daemon()
    assert post(daemon).status_code == 200
    assert len(zai.messages()) == 1

    daemon.ccctl("pause", check=True)
    assert post(daemon).status_code == 200  # the very next request
    assert len(zai.messages()) == 1 and anthropic_up.messages()[-1].model == HAIKU
    lines = daemon.wait_usage(2)
    assert lines[-1]["reason"] == "paused" and lines[-1]["lane"] == "anthropic"
    assert status(daemon)["paused"] is True
    assert "ccctl pause" in status(daemon)["paused_source"]

    daemon.stop()
    daemon.start()  # a paused daemon restarted stays paused
    assert status(daemon)["paused"] is True
    post(daemon)
    assert len(zai.messages()) == 1

    daemon.ccctl("resume", check=True)
    post(daemon)
    assert len(zai.messages()) == 2
    daemon.stop()
    daemon.start()
    assert status(daemon)["paused"] is False


def test_editing_routing_paused_in_the_file_wins_over_an_earlier_ccctl(daemon: Daemon) -> None:
    daemon.ccctl("pause", check=True)
    config = daemon.config
    config["routing"]["paused"] = True
    before = reload_count(daemon)
    daemon.write_config(config)
    wait_for(lambda: reload_count(daemon) > before, what="reload")
    config["routing"]["paused"] = False
    daemon.write_config(config)
    wait_for(lambda: reload_count(daemon) > before + 1, what="second reload")
    data = status(daemon)
    assert data["paused"] is False and data["paused_source"].startswith("config routing.paused")


def test_atomic_rename_save_and_in_place_save_each_reload_once(daemon: Daemon) -> None:
    config = daemon.config
    config["lanes"]["zai"]["header_mode"] = "authorization"
    text = yaml.safe_dump(config)

    before = reload_count(daemon)
    temp = daemon.config_path.with_name(".config.yaml.swp")
    temp.write_text(text)
    os.replace(temp, daemon.config_path)  # how editors save
    wait_for(lambda: reload_count(daemon) == before + 1, what="rename save reload")
    time.sleep(1.0)  # a debounce window and more: no second reload may follow
    assert reload_count(daemon) == before + 1

    config["lanes"]["zai"]["header_mode"] = "x-api-key"
    with open(daemon.config_path, "w") as handle:  # in place, in several writes
        for line in yaml.safe_dump(config).splitlines(keepends=True):
            handle.write(line)
            handle.flush()
    wait_for(lambda: reload_count(daemon) == before + 2, what="in-place save reload")
    time.sleep(1.0)
    assert reload_count(daemon) == before + 2


def test_broken_save_is_rejected_and_requests_keep_succeeding(daemon: Daemon, upstreams) -> None:
    _, zai = upstreams
    good = daemon.config_path.read_text()
    daemon.config_path.write_text(good.replace("lane: zai", "lane: zia"))
    wait_for(lambda: "reload (file change) rejected" in daemon.stderr(), what="rejection")
    data = status(daemon)
    assert "routing.rules[0].lane: unknown lane 'zia'" in data["config"]["last_reload_error"]
    assert post(daemon).status_code == 200 and len(zai.messages()) == 1  # old config still routes

    daemon.config_path.write_text("proxy: [unclosed\n")
    wait_for(
        lambda: "invalid YAML" in (status(daemon)["config"]["last_reload_error"] or ""), what="yaml error"
    )
    assert post(daemon).status_code == 200 and len(zai.messages()) == 2

    result = daemon.ccctl("reload")
    assert result.returncode == 1 and "invalid YAML" in result.stderr

    daemon.config_path.write_text(good)
    wait_for(lambda: status(daemon)["config"]["last_reload_error"] is None, what="error cleared")


def negotiated_alpn(daemon: Daemon) -> str | None:
    """CONNECT through the intercepting listener and see which protocol its TLS picks for a client
    that prefers h2 (as curl and browsers do)."""
    import socket
    import ssl

    with socket.create_connection(("127.0.0.1", daemon.port), timeout=10) as raw:
        credentials = "".join(f"{k}: {v}\r\n" for k, v in daemon.proxy_auth_headers.items())
        raw.sendall(
            f"CONNECT api.anthropic.com:443 HTTP/1.1\r\nHost: api.anthropic.com:443\r\n{credentials}\r\n".encode()
        )
        assert raw.recv(4096).startswith(b"HTTP/1.1 200")
        context = ssl.create_default_context(cafile=str(daemon.ca_cert))
        context.set_alpn_protocols(["h2", "http/1.1"])
        with context.wrap_socket(raw, server_hostname="api.anthropic.com") as tls:
            return tls.selected_alpn_protocol()


def curl_http_version(daemon: Daemon) -> str:
    """One real HTTP/2-capable client call (curl prefers h2, as browsers do) through the proxy."""
    import subprocess

    result = subprocess.run(
        ["curl", "-sS", "--http2", "-x", daemon.proxy_url, "--cacert", str(daemon.ca_cert),
         "-o", "/dev/null", "-w", "%{http_version}", "-H", f"x-api-key: {CLIENT_API_KEY}",
         "-H", "content-type: application/json",
         "--data", json.dumps({"model": HAIKU, "max_tokens": 8, "messages": []}),
         "https://api.anthropic.com/v1/messages"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_header_mode_and_http2_flip_without_restart(daemon: Daemon, upstreams) -> None:
    _, zai = upstreams
    assert negotiated_alpn(daemon) == "h2"
    assert curl_http_version(daemon) == "2"
    assert sha(zai.messages()[-1].header("x-api-key")) == sha(ZAI_KEY)

    config = daemon.config
    config["lanes"]["zai"]["header_mode"] = "authorization"
    config["proxy"]["http2"] = False
    daemon.write_config(config)
    wait_for(lambda: status(daemon)["http2"] is False, what="reload")

    assert negotiated_alpn(daemon) == "http/1.1"  # h2 is no longer offered
    assert curl_http_version(daemon) == "1.1"
    received = zai.messages()[-1]
    assert sha(received.header("authorization")) == sha(f"Bearer {ZAI_KEY}")
    assert not received.has_header("x-api-key")
    lines = daemon.wait_usage(2)
    assert [line["http_version"] for line in lines] == ["HTTP/2.0", "HTTP/1.1"]
    assert [line["header_mode"] for line in lines] == ["x-api-key", "authorization"]


def test_port_change_rebinds_without_dropping_a_stream_in_flight(daemon: Daemon, upstreams) -> None:
    _, zai = upstreams
    zai.behaviour = "gated"
    old_base = daemon.reverse_url
    stream = BackgroundStream(old_base, headers=daemon.auth_headers)

    new_port = free_port()
    config = daemon.config
    config["proxy"]["reverse_port"] = new_port
    daemon.write_config(config)
    wait_for(lambda: status(daemon)["listeners"]["reverse_port"] == new_port, what="rebind")
    wait_port(new_port)
    with pytest.raises(httpx.ConnectError):
        httpx.get(old_base + "/", headers=daemon.auth_headers, timeout=2)

    zai.release()
    assert b"message_stop" in stream.join() and stream.errors == []
    zai.behaviour = "ok"
    assert post(daemon, base=f"http://127.0.0.1:{new_port}").status_code == 200


def test_taken_port_on_reload_is_refused_and_the_old_listeners_keep_serving(daemon: Daemon) -> None:
    import socket

    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    try:
        serving = daemon.reverse_url
        config = daemon.config
        config["proxy"]["reverse_port"] = blocker.getsockname()[1]
        daemon.write_config(config)
        wait_for(lambda: "listeners" in (status(daemon)["config"]["last_reload_error"] or ""), what="refusal")
        assert post(daemon, base=serving).status_code == 200
        assert status(daemon)["listeners"]["reverse_port"] == int(serving.rsplit(":", 1)[1])
    finally:
        blocker.close()


def test_ccctl_against_a_stopped_daemon_fails_cleanly(make_daemon) -> None:
    daemon = make_daemon(start=False)
    for command in (["status"], ["pause"], ["resume"], ["reload"]):
        result = daemon.ccctl(*command)
        assert result.returncode == 1
        assert result.stderr.strip().splitlines() == [
            "ccctl: ccmitmd is not running; start it with `ccctl start`, or run it as a service (`ccctl service install`)"
        ]
    # Stopping what is stopped is done already: a no-op that says so.
    result = daemon.ccctl("stop")
    assert result.returncode == 0 and result.stdout.strip() == "ccmitmd is not running; nothing to stop"


def test_control_socket_and_its_directory_are_owner_only(daemon: Daemon) -> None:
    socket_path = Path(status(daemon)["control_socket"])
    assert socket_path.parent == daemon.root / "run" / "ccmitm"
    assert stat.S_IMODE(socket_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(socket_path.parent.stat().st_mode) == 0o700
    assert stat.S_ISSOCK(socket_path.stat().st_mode)


def test_start_and_stop_without_a_service_manager(make_daemon, upstreams) -> None:
    daemon = make_daemon(start=False)
    result = daemon.ccctl("start", timeout=60)
    assert result.returncode == 0, result.stderr
    try:
        pid = status(daemon)["pid"]
        assert post(daemon).status_code == 200
        assert daemon.ccctl("start").stdout.strip() == "ccmitmd is already running"
    finally:
        result = daemon.ccctl("stop", timeout=60)
    assert result.returncode == 0 and f"pid {pid}" in result.stdout
    assert not (daemon.state_dir / "ccmitmd.pid").exists()
    assert daemon.ccctl("status").returncode == 1


def test_invalid_config_at_start_serves_the_last_good_one(make_daemon, upstreams) -> None:
    _, zai = upstreams
    daemon = make_daemon()
    daemon.stop()
    daemon.config_path.write_text(daemon.config_path.read_text().replace("lane: zai", "lane: nowhere"))
    daemon.start()
    data = status(daemon)
    assert "unknown lane 'nowhere'" in data["config"]["last_reload_error"]
    assert data["config"]["source"].endswith("last-good-config.yaml")
    assert post(daemon).status_code == 200 and len(zai.messages()) == 1


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            [],
            [
                "export HTTPS_PROXY='http://ccmitm:{token}@127.0.0.1:{port}'",
                "export NODE_EXTRA_CA_CERTS='{ca}'",
                "unset ANTHROPIC_BASE_URL",
            ],
        ),
        (
            ["--shell", "fish"],
            [
                "set -gx HTTPS_PROXY 'http://ccmitm:{token}@127.0.0.1:{port}'",
                "set -gx NODE_EXTRA_CA_CERTS '{ca}'",
                "set -e ANTHROPIC_BASE_URL",
            ],
        ),
        (
            ["--reverse"],
            [
                "export ANTHROPIC_BASE_URL='http://127.0.0.1:{reverse}'",
                "export ANTHROPIC_CUSTOM_HEADERS='x-ccmitm-token: {token}'",
            ],
        ),
        (
            ["--subagent"],
            [
                "export HTTPS_PROXY='http://ccmitm:{token}@127.0.0.1:{port}'",
                "export NODE_EXTRA_CA_CERTS='{ca}'",
                "unset ANTHROPIC_BASE_URL",
                "export CLAUDE_CODE_SUBAGENT_MODEL='haiku'",
                "export CLAUDE_CODE_GATEWAY_HINT_HEADERS='1'",
            ],
        ),
        (
            ["--subagent", "--reverse", "--shell", "fish"],
            [
                "set -gx ANTHROPIC_BASE_URL 'http://127.0.0.1:{reverse}'",
                "set -gx ANTHROPIC_CUSTOM_HEADERS 'x-ccmitm-token: {token}'",
                "set -gx CLAUDE_CODE_SUBAGENT_MODEL 'haiku'",
                "set -gx CLAUDE_CODE_GATEWAY_HINT_HEADERS '1'",
            ],
        ),
        # Unwiring a shell that ccctl env did not wire restores (and so changes) nothing.
        (["--stock"], []),
        (["--stock", "--shell", "fish"], []),
    ],
)
def test_env_wires_and_unwires_a_shell(make_daemon, args: list[str], expected: list[str]) -> None:
    daemon = make_daemon(start=False, env={"NODE_EXTRA_CA_CERTS": None})
    result = (
        daemon.ccctl("env", "--shell", "bash", *args) if "--shell" not in args else daemon.ccctl("env", *args)
    )
    assert result.returncode == 0, result.stderr
    # The wiring variables only (ccmitm's own saved state and the guard function: test_wiring.py).
    lines = [
        line
        for line in result.stdout.splitlines()
        if line.startswith(("export ", "unset ", "set -gx ", "set -e "))
        and "_CCMITM_" not in line
        and not line.startswith("unset -f")
    ]
    assert lines == [
        e.format(port=daemon.port, reverse=daemon.reverse_port, ca=daemon.ca_cert, token=daemon.token)
        for e in expected
    ]


def test_env_output_really_wires_bash(make_daemon) -> None:
    daemon = make_daemon(env={"NODE_EXTRA_CA_CERTS": None})
    import subprocess

    script = f'eval "$({os.sys.executable} -m ccmitm.cli env --shell bash)"; echo "$HTTPS_PROXY|$NODE_EXTRA_CA_CERTS"'
    out = subprocess.run(["bash", "-c", script], env=daemon.env(), capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == f"{daemon.proxy_url}|{daemon.ca_cert}"
    assert daemon.ca_cert.exists()


def test_shell_shortcuts_wrap_ccctl(daemon: Daemon, upstreams) -> None:
    import subprocess
    import sys

    _, zai = upstreams
    shortcuts = REPO_ROOT / "etc" / "shell" / "ccmitm.sh"
    env = {
        **daemon.env(),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "SHELL": "/bin/bash",
    }
    env.pop("NODE_EXTRA_CA_CERTS", None)  # the machine's own bundle would be combined
    script = f"""
        set -e
        source {shortcuts}
        ccsub >/dev/null; echo "proxy=$HTTPS_PROXY ca=$NODE_EXTRA_CA_CERTS sub=$CLAUDE_CODE_SUBAGENT_MODEL"
        ccstock >/dev/null; echo "after-stock=${{HTTPS_PROXY:-unset}} sub=${{CLAUDE_CODE_SUBAGENT_MODEL:-unset}}"
        ccpause >/dev/null; ccresume >/dev/null
        cczai_bearer >/dev/null
        cch1 >/dev/null
    """
    result = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"proxy={daemon.proxy_url} ca={daemon.ca_cert} sub=haiku" in result.stdout
    assert "after-stock=unset sub=unset" in result.stdout
    text = daemon.config_path.read_text()
    assert "header_mode: authorization" in text and "http2: false" in text
    wait_for(lambda: status(daemon)["http2"] is False, what="reload", interval=0.3)
    post(daemon)
    assert sha(zai.messages()[-1].header("authorization")) == sha(f"Bearer {ZAI_KEY}")
    assert "ccctl pause" in daemon.stderr() or "paused by ccctl" in daemon.stderr()


# --- a control socket in a shared directory ---------------------------------------------------------
def test_a_symlink_at_the_socket_path_is_refused(daemon: Daemon, tmp_path: Path) -> None:
    """Someone else's link in a shared runtime dir could lead ccctl to their own socket."""
    from ccmitm.control.client import call
    from ccmitm.control.protocol import ControlError

    link = tmp_path / "control.sock"
    link.symlink_to(daemon.socket_path)
    with pytest.raises(ControlError, match="symlink"):
        call(link, "ping", timeout=5)
    call(daemon.socket_path, "ping", timeout=5)  # the real one still answers


@pytest.mark.skipif(os.getuid() != 0, reason="giving a file to another user takes root")
def test_a_socket_owned_by_another_user_is_refused(daemon: Daemon) -> None:
    from ccmitm.control.client import call
    from ccmitm.control.protocol import ControlError

    os.chown(daemon.socket_path, 65534, 65534)
    try:
        with pytest.raises(ControlError, match="belongs to uid 65534"):
            call(daemon.socket_path, "status", timeout=5)
        result = daemon.ccctl("stop")  # never signals a pid it got from there
        assert result.returncode == 1 and "belongs to uid 65534" in result.stderr
    finally:
        os.chown(daemon.socket_path, 0, 0)
    assert daemon.proc is not None and daemon.proc.poll() is None


FOREIGN_SERVER = """
import os, socket, sys
path = sys.argv[1]
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.bind(path)
os.chmod(path, 0o666)
server.listen(1)
print("ready", flush=True)
server.settimeout(30)
connection, _ = server.accept()
connection.recv(65536)
connection.sendall(b'{"ok": true, "result": {"pid": 1}}\\n')
connection.close()
"""


@pytest.mark.skipif(os.getuid() != 0 or not Path("/usr/bin/python3").exists(), reason="needs root")
def test_a_reply_from_another_users_process_is_refused(tmp_path: Path) -> None:
    """A socket file that passes the owner check (here: given to us afterwards) but is served by
    another user's process: the peer credentials give it away."""
    import subprocess
    import tempfile

    from ccmitm.control.client import call
    from ccmitm.control.protocol import ControlError

    shared = Path(tempfile.mkdtemp(prefix="ccmitm-peer-"))
    shared.chmod(0o777)
    socket_path = shared / "control.sock"
    server = subprocess.Popen(
        ["/usr/bin/python3", "-c", FOREIGN_SERVER, str(socket_path)],
        user=65534,
        group=65534,
        extra_groups=[],
        stdout=subprocess.PIPE,
        text=True,
        cwd="/",
    )
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        os.chown(socket_path, 0, 0)
        with pytest.raises(ControlError, match="runs as uid 65534"):
            call(socket_path, "status", timeout=5)
    finally:
        server.kill()
        server.wait(10)
        socket_path.unlink(missing_ok=True)
        shared.rmdir()


def test_the_server_answers_only_its_own_user(tmp_path: Path) -> None:
    """The server's side of the same check, with the uid it serves set to someone else's."""
    import asyncio

    from ccmitm.control.client import call
    from ccmitm.control.protocol import ControlError
    from ccmitm.control.server import ControlServer

    async def pong(_: dict[str, object]) -> str:
        return "pong"

    async def scenario() -> tuple[str, str]:
        socket_path = tmp_path / "run" / "control.sock"
        answers = []
        for uid in (os.getuid(), os.getuid() + 1):
            server = ControlServer(socket_path, {"ping": pong}, allowed_uid=uid)
            await server.start()
            try:
                answers.append(await asyncio.to_thread(_ping, socket_path))
            finally:
                await server.stop()
        return answers[0], answers[1]

    def _ping(socket_path: Path) -> str:
        try:
            return str(call(socket_path, "ping", timeout=5))
        except ControlError as exc:
            return f"error: {exc}"

    own, other = asyncio.run(scenario())
    assert own == "pong"
    assert other == f"error: ccmitmd serves uid {os.getuid() + 1} only"
