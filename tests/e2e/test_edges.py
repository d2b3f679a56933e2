"""Small edges of ccctl and ccmitmd against the real daemon: a fixed key file
without a reload, the kill-switch in `config show`, a busy port at start, `ccctl status` wording."""

from __future__ import annotations

import json
import re
import socket

import pytest

from ccmitm.cli.control import format_status
from tests.helpers import ZAI_KEY, Daemon, post, sha, status

pytestmark = pytest.mark.e2e


def test_a_fixed_key_file_makes_its_lane_available_without_a_reload(make_daemon, upstreams) -> None:
    _, zai = upstreams
    daemon = make_daemon(start=False)
    key_file = daemon.root / "zai.key"  # outside what the secret scan reads: it holds the key
    key_file.write_text(ZAI_KEY + "\n")
    key_file.chmod(0o644)
    config = daemon.config
    # null, not absent: the built-in zai lane's api_key_env would merge in (and find the key).
    config["lanes"]["zai"].update(api_key_env=None, api_key_file=str(key_file))
    daemon.write_config(config)
    daemon.start()  # the key file is refused: readable by others
    reloads = daemon.stderr().count("config reloaded")
    lane = status(daemon)["lanes"]["zai"]
    assert lane["available"] is False and "chmod 600" in (lane["problem"] or "")
    assert post(daemon).status_code == 200 and zai.messages() == []  # Haiku fell back

    key_file.chmod(0o600)
    lane = status(daemon)["lanes"]["zai"]  # status re-reads a waiting lane's key file
    assert lane["available"] is True and lane["problem"] is None
    assert post(daemon).status_code == 200
    [received] = zai.messages()
    assert sha(received.header("x-api-key")) == sha(ZAI_KEY)
    assert daemon.stderr().count("config reloaded") == reloads  # no reload happened
    assert "lane zai: its key file is usable now" in daemon.stderr()


def test_config_show_names_the_effective_kill_switch(daemon: Daemon) -> None:
    shown = daemon.ccctl("config", "show", check=True).stdout
    assert "# kill-switch: paused no (config routing.paused" in shown
    daemon.ccctl("pause", check=True)
    shown = daemon.ccctl("config", "show", check=True).stdout
    assert re.search(r"# kill-switch: paused yes \(ccctl pause at .* \(state file .*state\.json\)\)", shown)
    assert json.loads(daemon.ccctl("config", "show", "--json", check=True).stdout)["paused"] is True


def test_a_busy_port_at_start_is_one_clear_line_and_exit_3(make_daemon) -> None:
    daemon = make_daemon(start=False)
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", daemon.port))
        blocker.listen()
        daemon.start(wait=False)
        assert daemon.wait_exit(60) == 3
    output = daemon.stderr()
    assert "Traceback" not in output
    mentions = [line for line in output.splitlines() if str(daemon.port) in line]
    assert len(mentions) == 1, output
    assert "proxy.port" in mentions[0] and "already in use" in mentions[0]
    assert "ccctl config set proxy.port" in mentions[0]  # the fix


def test_status_speaks_yes_and_no_and_times_to_the_second(daemon: Daemon) -> None:
    human = daemon.ccctl("status", check=True).stdout
    assert not re.search(r"\b(True|False|None)\b", human), human
    assert "paused:    no (" in human and "available yes" in human
    assert not re.search(r"\d\d:\d\d:\d\d\.\d+", human), human  # no microseconds
    data = status(daemon)
    assert all(job["next_run"] is None or not re.search(r"\.\d+", job["next_run"]) for job in data["jobs"])
    # An older daemon's microseconds are cut on display, too.
    data["jobs"] = [{"id": "x", "name": "x", "next_run": "2026-01-01T02:30:00.123456+01:00"}]
    assert "next 2026-01-01T02:30:00+01:00" in format_status(data)
