"""Hostile configs against the real daemon and ccctl: pasted secrets, huge, deep, FIFO, deleted.

Every surface a config error reaches (``ccctl config check``, ``status``, ``status --json``,
``reload``, ``start``, the daemon's own output) is checked with planted secrets; a config that
breaks or vanishes while the daemon runs must leave the running config serving.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest

from ccmitm.config.load import MAX_CONFIG_BYTES
from ccmitm.paths import LAST_GOOD_CONFIG
from tests.helpers import ALL_SECRETS, CLIENT_API_KEY, ZAI_KEY, Daemon, post, status, wait_for

MISSING = "config file missing: serving the last good config"


def with_pasted_secrets(config: dict[str, Any]) -> dict[str, Any]:
    """The realistic mistakes: the key itself pasted where its variable's name goes, and a key in
    the lane URL's query (as some upstreams document it)."""
    bad = copy.deepcopy(config)
    bad["lanes"]["zai"]["api_key_env"] = ZAI_KEY
    bad["lanes"]["anthropic"]["url"] += f"/v1?key={CLIENT_API_KEY}"
    return bad


def no_secret_in(*texts: str) -> None:
    for text in texts:
        for secret in ALL_SECRETS:
            assert secret not in text
        assert "Traceback" not in text


def reload_error(daemon: Daemon) -> str:
    return status(daemon)["config"]["last_reload_error"] or ""


def test_config_check_names_the_keys_but_never_a_pasted_secret(make_daemon) -> None:
    daemon = make_daemon(start=False)
    daemon.write_config(with_pasted_secrets(daemon.config))
    result = daemon.ccctl("config", "check")
    assert result.returncode == 1
    assert "lanes.zai.api_key_env: the value is not an environment variable name" in result.stderr
    # The URL is shown without its query, where the key was.
    assert "lanes.anthropic.url: 'http://127.0.0.1:" in result.stderr and "/v1'" in result.stderr
    no_secret_in(result.stdout, result.stderr)
    assert daemon.secret_findings() == []


def test_a_rejected_reload_never_shows_a_pasted_secret(daemon: Daemon, upstreams) -> None:
    good = daemon.config
    daemon.write_config(with_pasted_secrets(good))
    wait_for(lambda: "api_key_env" in reload_error(daemon), what="rejection", interval=0.5)
    human = daemon.ccctl("status", check=True).stdout
    assert "reload:    last error:" in human and "lanes.zai.api_key_env" in human
    as_json = daemon.ccctl("status", "--json", check=True).stdout
    reload = daemon.ccctl("reload")
    assert reload.returncode == 1 and "lanes.anthropic.url" in reload.stderr
    no_secret_in(human, as_json, reload.stdout, reload.stderr, daemon.stderr())
    assert post(daemon).status_code == 200  # the previous config keeps serving
    assert daemon.secret_findings() == []


def test_start_with_a_pasted_secret_fails_without_showing_it(make_daemon) -> None:
    daemon = make_daemon(start=False)
    daemon.write_config(with_pasted_secrets(daemon.config))
    result = daemon.ccctl("start", timeout=60)
    assert result.returncode == 1 and "api_key_env" in result.stderr
    no_secret_in(result.stdout, result.stderr)
    assert daemon.secret_findings() == []


def test_the_last_good_config_is_saved_validated_without_the_files_comments(daemon: Daemon) -> None:
    """The saved copy is data the schema knows, never the file's text (a key pasted into a
    comment stays in the user's file), and it is the user's alone."""
    daemon.ccctl("reload", check=True)
    text = daemon.config_path.read_text() + f"# my Z.AI key, for later: {ZAI_KEY}\n"
    daemon.config_path.write_text(text)
    wait_for(lambda: "# my Z.AI key" in daemon.config_path.read_text(), what="write")
    daemon.ccctl("reload", check=True)
    last_good = daemon.state_dir / LAST_GOOD_CONFIG
    assert ZAI_KEY not in last_good.read_text()
    assert "ZAI_API_KEY" in last_good.read_text()  # the variable's name, as configured
    assert last_good.stat().st_mode & 0o777 == 0o600
    assert daemon.secret_findings() == []


def test_an_oversized_config_is_refused_by_name_and_the_old_one_keeps_serving(daemon: Daemon) -> None:
    text = daemon.config_path.read_text()
    padding = ("# " + "x" * 1000 + "\n") * (MAX_CONFIG_BYTES // 1000 + 10)
    daemon.config_path.write_text(text + padding)
    wait_for(lambda: "1 MiB" in reload_error(daemon), what="refusal", interval=0.5)
    check = daemon.ccctl("config", "check")
    assert check.returncode == 1 and "larger than 1 MiB" in check.stderr
    assert post(daemon).status_code == 200


def test_a_fifo_in_place_of_the_config_hangs_nothing(daemon: Daemon) -> None:
    fifo = daemon.root / "config.fifo"
    os.mkfifo(fifo, 0o600)
    os.replace(fifo, daemon.config_path)
    # Bounded: before, every ccctl blocked forever opening the FIFO.
    wait_for(lambda: "not a regular file" in reload_error(daemon), what="refusal", timeout=20, interval=0.5)
    check = daemon.ccctl("config", "check", timeout=20)
    assert check.returncode == 1 and "not a regular file" in check.stderr
    assert post(daemon).status_code == 200


def deep_config(depth: int = 20_000) -> str:
    return "pricing:\n  x: " + "[" * depth + "]" * depth + "\n"


def test_a_deeply_nested_config_is_an_error_not_a_crash(make_daemon) -> None:
    daemon = make_daemon(start=False)
    daemon.config_path.write_text(deep_config())
    check = daemon.ccctl("config", "check")
    assert check.returncode == 1 and "nested too deeply" in check.stderr
    show = daemon.ccctl("config", "show")  # every ccctl reads the config: none may crash
    assert show.returncode == 0 and "nested too deeply" in show.stderr
    no_secret_in(check.stderr, show.stderr)
    daemon.start(wait=False)
    assert daemon.wait_exit(30) == 2
    assert "nested too deeply" in daemon.stderr() and "Traceback" not in daemon.stderr()


def test_a_deleted_config_keeps_the_running_one_and_status_says_so(daemon: Daemon, upstreams) -> None:
    _, zai = upstreams
    listeners = status(daemon)["listeners"]
    daemon.config_path.unlink()
    wait_for(lambda: MISSING in reload_error(daemon), what="missing config noticed", interval=0.5)
    data = status(daemon)
    assert (data["listeners"]["port"], data["listeners"]["reverse_port"]) == (
        listeners["port"],
        listeners["reverse_port"],
    )
    assert data["config"]["source"] == str(daemon.config_path)  # not the built-in defaults
    assert post(daemon).status_code == 200 and len(zai.messages()) == 1  # still the fake Z.AI
    # A dangling symlink is no different.
    daemon.config_path.symlink_to(daemon.root / "nowhere.yaml")
    result = daemon.ccctl("reload")
    assert result.returncode == 1 and "symlink to a missing file" in result.stderr
    assert post(daemon).status_code == 200 and len(zai.messages()) == 2
    # Putting the file back heals it.
    daemon.config_path.unlink()
    daemon.write_config(daemon.config)
    wait_for(lambda: reload_error(daemon) == "", what="error cleared", interval=0.5)


def test_a_start_without_the_config_file_serves_the_last_good_one(make_daemon, upstreams) -> None:
    _, zai = upstreams
    daemon = make_daemon()
    daemon.stop()
    daemon.config_path.unlink()
    daemon.start()
    data = status(daemon)
    assert MISSING in (data["config"]["last_reload_error"] or "")
    assert data["config"]["source"].endswith(LAST_GOOD_CONFIG)
    assert data["listeners"]["port"] == daemon.port
    assert MISSING in daemon.stderr()
    assert post(daemon).status_code == 200 and len(zai.messages()) == 1
    check = daemon.ccctl("config", "check", check=True)
    assert "does not exist; ccmitmd serves its last good config" in check.stdout


@pytest.mark.skipif(os.getuid() == 0, reason="root reads through any mode")
def test_an_unreadable_config_directory_is_an_error_for_every_ccctl(make_daemon, tmp_path: Path) -> None:
    """A config dir with mode 000: ccctl says so (path and reason) instead of a traceback."""
    daemon = make_daemon(start=False)
    config_dir = tmp_path / "conf"
    config_dir.mkdir()
    config_file = config_dir / "config.yaml"
    config_file.write_text(daemon.config_path.read_text())
    config_dir.chmod(0o000)
    try:
        for args in (["config", "check"], ["status"], ["config", "show"]):
            result = daemon.ccctl(*args, env={"CCMITM_CONFIG": str(config_file)})
            assert "Traceback" not in result.stderr, result.stderr
            assert f"{config_file}: 1 problem" in result.stderr
            assert "cannot read: Permission denied" in result.stderr
            assert result.returncode == (0 if args == ["config", "show"] else 1)
    finally:
        config_dir.chmod(0o700)


def test_control_socket_in_the_home_directory_leaves_its_mode_alone(make_daemon) -> None:
    daemon = make_daemon(start=False)
    config = copy.deepcopy(daemon.config)
    config["control"] = {"socket": str(daemon.home / "ccmitm.sock")}
    daemon.write_config(config)
    daemon.home.chmod(0o751)
    daemon.start()
    assert status(daemon)["control_socket"] == str(daemon.home / "ccmitm.sock")
    assert daemon.home.stat().st_mode & 0o777 == 0o751
