"""The one private-daemon harness: a daemon of its own, whatever the caller's shell says."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ccmitm.testing.harness import clean_environ
from tests.helpers import CLIENT_API_KEY, CLIENT_OAUTH_TOKEN, ZAI_KEY, status

SHELL = {
    "OFFLOAD_PAUSED": "1",
    "FORCE_HAIKU_TO_ZAI": "0",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "https_proxy": "http://127.0.0.1:9",
    "ALL_PROXY": "http://127.0.0.1:9",
    "ANTHROPIC_API_KEY": CLIENT_API_KEY,
    "ANTHROPIC_BASE_URL": "http://127.0.0.1:9",
    "ZAI_API_KEY": "the-users-own-key-0123456789",
    "CCMITM_CONFIG": "/nonexistent/config.yaml",
    "PATH": "/usr/bin",
}


def test_clean_environ_keeps_only_what_is_not_the_users_wiring() -> None:
    assert clean_environ(SHELL) == {"PATH": "/usr/bin"}


def test_a_paused_wired_shell_starts_an_unpaused_private_daemon(
    make_daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in SHELL.items():
        if name != "PATH":
            monkeypatch.setenv(name, value)
    daemon = make_daemon()
    reply = status(daemon)
    assert reply["paused"] is False and reply["config"]["overrides"] == []
    assert reply["lanes"]["zai"]["available"] is True
    assert daemon.env()["ZAI_API_KEY"] == ZAI_KEY  # the run's own key, not the shell's


@pytest.mark.e2e
def test_endurance_from_a_paused_shell_passes_its_not_paused_check(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "CCMITM_", "XDG_", "ZAI_"))}
    env.update(
        HOME=str(home),
        XDG_STATE_HOME=str(home / "state"),
        XDG_RUNTIME_DIR=str(home / "run"),
        CCMITM_CONFIG=str(tmp_path / "config.yaml"),
        OFFLOAD_PAUSED="1",
        FORCE_HAIKU_TO_ZAI="0",
        ANTHROPIC_AUTH_TOKEN=CLIENT_OAUTH_TOKEN,
    )
    out = tmp_path / "evidence"
    argv = ["endurance", "--minutes", "0.05", "--parallel", "2", "--burst", "4", "--out", str(out)]
    result = subprocess.run(
        [sys.executable, "-m", "ccmitm.cli", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    checks = {c["name"]: c for c in json.loads((out / "METRICS.json").read_text())["checks"]}
    assert checks["warm-up: not paused"]["ok"] is True
    assert checks["every Haiku call reached the offload upstream (zai) as glm-4.5-air"]["ok"] is True


def test_the_secret_scan_finds_the_client_token_outside_its_own_file(tmp_path: Path) -> None:
    """The token may sit in its file and in what `ccctl env` prints; anywhere else is a finding."""
    from ccmitm.testing.harness import PrivateDaemon, private_config

    daemon = PrivateDaemon(tmp_path, private_config(tmp_path, "http://127.0.0.1:9", "http://127.0.0.1:9"))
    assert daemon.token is None and daemon.auth_headers == {} and daemon.proxy_url == daemon.bare_proxy_url
    token = "planted-client-token-0123456789abcdef"
    daemon.token_path.parent.mkdir(parents=True)
    daemon.token_path.write_text(token + "\n")
    assert daemon.proxy_url == f"http://ccmitm:{token}@127.0.0.1:{daemon.port}"
    assert daemon.auth_headers == {"x-ccmitm-token": token}
    daemon.ccctl("env", "--shell", "bash")  # prints the token by design
    assert daemon.secret_findings(()) == []
    daemon.ccctl("token", "show")
    assert daemon.secret_findings(()) == []
    daemon.logs_dir.mkdir(parents=True)
    (daemon.logs_dir / "usage.jsonl").write_text(json.dumps({"leak": token}) + "\n")
    [finding] = daemon.secret_findings(())
    assert finding.startswith(f"{daemon.logs_dir / 'usage.jsonl'}:1:") and "client-token" in finding
