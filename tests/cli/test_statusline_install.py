"""`ccctl statusline install|uninstall`: merging ccmitm's statusLine into Claude Code's settings.json."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from ccmitm.install import claude_settings
from ccmitm.install.claude_settings import (
    BACKUP_SUFFIX,
    SettingsError,
    install,
    is_ours,
    own_command,
    uninstall,
)
from tests.helpers import CLIENT_API_KEY

COMMAND = "/opt/ccmitm/bin/ccctl statusline"


def settings(tmp_path: Path, text: str | None) -> Path:
    path = tmp_path / ".claude" / "settings.json"
    if text is not None:
        path.parent.mkdir(parents=True)
        path.write_text(text)
        path.chmod(0o600)
    return path


def test_install_into_a_missing_file_creates_it(tmp_path: Path) -> None:
    path = settings(tmp_path, None)
    message = install(path, COMMAND)
    assert json.loads(path.read_text()) == {
        "statusLine": {"type": "command", "command": COMMAND, "padding": 0}
    }
    assert "previous file" not in message
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not path.with_name(path.name + BACKUP_SUFFIX).exists()


def test_install_keeps_every_other_setting_their_order_and_the_indentation(tmp_path: Path) -> None:
    original = json.dumps(
        {
            "model": "opus",
            "env": {"ANTHROPIC_API_KEY": CLIENT_API_KEY},
            "permissions": {"allow": ["Bash(ls)"]},
        },
        indent=4,
    )
    path = settings(tmp_path, original)
    path.chmod(0o640)
    message = install(path, COMMAND)
    data = json.loads(path.read_text())
    assert list(data) == ["model", "env", "permissions", "statusLine"]
    assert data["env"] == {"ANTHROPIC_API_KEY": CLIENT_API_KEY}
    assert '\n    "model": "opus"' in path.read_text()  # still 4 spaces
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # the user's mode is kept
    backup = path.with_name(path.name + BACKUP_SUFFIX)
    assert backup.read_text() == original and stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert CLIENT_API_KEY not in message  # nothing of the file's content is printed
    assert "already" in install(path, COMMAND)  # a second install changes nothing


def test_a_users_own_status_line_is_replaced_only_with_force(tmp_path: Path) -> None:
    theirs = {"statusLine": {"type": "command", "command": "~/bin/my-line.sh"}, "theme": "dark"}
    path = settings(tmp_path, json.dumps(theirs))
    with pytest.raises(SettingsError, match="--force"):
        install(path, COMMAND)
    assert json.loads(path.read_text()) == theirs  # untouched
    install(path, COMMAND, force=True)
    assert json.loads(path.read_text())["statusLine"]["command"] == COMMAND
    assert json.loads(path.with_name(path.name + BACKUP_SUFFIX).read_text()) == theirs
    # An older ccmitm line (another path to ccctl) is ours: replaced without --force.
    path.write_text(
        json.dumps({"statusLine": {"type": "command", "command": "/old/venv/bin/ccctl statusline"}})
    )
    install(path, COMMAND)
    assert json.loads(path.read_text())["statusLine"]["command"] == COMMAND


@pytest.mark.parametrize("text", ["{not json", '{"a": 1,}', "[1, 2]", '"text"'])
def test_an_unreadable_settings_file_is_refused_and_left_alone(tmp_path: Path, text: str) -> None:
    path = settings(tmp_path, text)
    with pytest.raises(SettingsError, match="nothing was changed"):
        install(path, COMMAND)
    assert path.read_text() == text
    assert not path.with_name(path.name + BACKUP_SUFFIX).exists()


def test_uninstall_removes_only_ours(tmp_path: Path) -> None:
    path = settings(tmp_path, json.dumps({"theme": "dark"}, indent=2))
    install(path, COMMAND)
    uninstall(path)
    assert json.loads(path.read_text()) == {"theme": "dark"}
    assert "nothing to do" in uninstall(path)
    theirs = {"statusLine": {"type": "command", "command": "my-line"}}
    path.write_text(json.dumps(theirs))
    with pytest.raises(SettingsError, match="not ccmitm's"):
        uninstall(path)
    assert json.loads(path.read_text()) == theirs


@pytest.mark.parametrize(
    ("command", "ours"),
    [
        ("/x/bin/ccctl statusline", True),
        ("'/path with space/ccctl' statusline", True),
        ("/usr/bin/python3 -m ccmitm.cli statusline", True),
        ("ccctl statusline --format '{lane}'", False),  # the user's own variant: theirs to keep
        ("my-ccctl statusline", False),
        ("ccctl status", False),
        ("echo 'unclosed", False),
    ],
)
def test_what_counts_as_ours(command: str, ours: bool) -> None:
    assert is_ours({"type": "command", "command": command}) is ours


def test_the_command_is_this_installs_ccctl_by_absolute_path() -> None:
    command = own_command()
    ccctl = Path(sys.executable).parent / "ccctl"
    assert command == f"{ccctl} statusline"
    assert is_ours({"command": command})
    assert own_command("/nowhere/bin/python").endswith("statusline")


def test_the_command_line_install_and_a_broken_file(tmp_path: Path) -> None:
    env = {**os.environ, "HOME": str(tmp_path)}
    env.pop("CLAUDE_CONFIG_DIR", None)
    run = [sys.executable, "-m", "ccmitm.cli", "statusline"]
    done = subprocess.run([*run, "install"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    path = claude_settings.settings_path(env)
    assert json.loads(path.read_text())["statusLine"]["command"] == own_command()
    path.write_text("{broken")
    broken = subprocess.run([*run, "uninstall"], env=env, capture_output=True, text=True, timeout=60)
    assert broken.returncode == 1
    assert "Traceback" not in broken.stderr and "not valid JSON" in broken.stderr
    assert path.read_text() == "{broken"
