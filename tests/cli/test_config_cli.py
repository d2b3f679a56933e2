"""`ccctl config check` without FILE (the active config), `config show` without a daemon, and shell
completion (`ccctl completion`, config keys, prompt names)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.shell_completion import ShellComplete, get_completion_class
from click.testing import CliRunner, Result

from ccmitm.cli.main import main


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No daemon to find, no user config: everything under tmp_path."""
    for name in ("CCMITM_CONFIG", "OFFLOAD_PAUSED", "FORCE_HAIKU_TO_ZAI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    return tmp_path


def ccctl(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def test_config_check_without_file_checks_the_active_config(isolated: Path, monkeypatch) -> None:
    xdg_file = isolated / "xdg" / "ccmitm" / "config.yaml"
    result = ccctl("config", "check")
    assert result.exit_code == 0
    assert result.output.strip() == f"{xdg_file}: does not exist; the built-in defaults are used (ok)"

    xdg_file.parent.mkdir(parents=True)
    xdg_file.write_text("proxy:\n  port: 0\n")
    result = ccctl("config", "check")
    assert (
        result.exit_code == 1 and f"{xdg_file}: 1 problem" in result.stderr and "proxy.port" in result.stderr
    )

    good = isolated / "good.yaml"
    good.write_text("proxy:\n  http2: false\n")
    monkeypatch.setenv("CCMITM_CONFIG", str(good))  # $CCMITM_CONFIG beats XDG ...
    assert ccctl("config", "check").output.strip() == f"{good}: ok"
    result = ccctl("--config", str(xdg_file), "config", "check")  # ... and --config beats both
    assert result.exit_code == 1 and "proxy.port" in result.stderr


def test_config_show_without_a_daemon_shows_the_kill_switch(isolated: Path, monkeypatch) -> None:
    path = isolated / "config.yaml"
    path.write_text("routing:\n  paused: true\n")
    result = ccctl("--config", str(path), "config", "show")
    assert result.exit_code == 0, result.output
    assert "# kill-switch: paused yes (config routing.paused; daemon not running" in result.output
    path.write_text("{}\n")
    monkeypatch.setenv("OFFLOAD_PAUSED", "1")
    result = ccctl("--config", str(path), "config", "show")
    assert "# kill-switch: paused yes (environment OFFLOAD_PAUSED=1)" in result.output


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_prints_clicks_script(shell: str) -> None:
    result = ccctl("completion", shell)
    assert result.exit_code == 0
    assert "_CCCTL_COMPLETE" in result.output and f"{shell}_complete" in result.output


def completions(args: list[str], incomplete: str) -> list[str]:
    completer_class = get_completion_class("bash")
    assert completer_class is not None
    completer: ShellComplete = completer_class(main, {}, "ccctl", "_CCCTL_COMPLETE")
    return [item.value for item in completer.get_completions(args, incomplete)]


def test_completion_offers_config_keys_from_the_schema_and_the_file(isolated: Path) -> None:
    assert "completion" in completions([], "comp")
    keys = completions(["config", "set"], "routing.")
    assert {
        "routing.paused",
        "routing.rules",
        "routing.rules[0]",
        "routing.rules[0].match",
        "routing.rules[+]",
    } <= set(keys)
    assert all(key.startswith("routing.") for key in keys)
    assert "lanes.zai.api_key_file" in completions(["config", "set"], "lanes.z")
    path = isolated / "config.yaml"
    path.write_text("lanes:\n  mine:\n    url: https://example.com\n")
    assert "lanes.mine.url" in completions(["--config", str(path), "config", "set"], "lanes.m")
    assert completions(["config", "set", "proxy.port"], "") == []  # the value is not completed


def test_completion_offers_prompt_names() -> None:
    assert completions(["prompt"], "") == ["review", "map", "audit", "explainer"]
    assert completions(["prompt"], "a") == ["audit"]
