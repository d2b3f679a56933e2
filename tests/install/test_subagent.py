"""`ccctl subagent install | remove` leave a user's edits alone: the marker line records a checksum
of what ccmitm wrote, and only --force replaces or removes anything else, keeping a copy first."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ccmitm.install import subagent

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
# What releases before the checksum wrote, byte for byte: the old marker line and the same body.
LEGACY_TEXT = subagent.render().replace(
    next(line for line in subagent.render().splitlines() if line.startswith(subagent.MARKER)),
    subagent.LEGACY_MARKER,
)


@pytest.fixture
def agent(tmp_path: Path) -> Path:
    return tmp_path / ".claude" / "agents" / "haiku-subagent.md"


def backups(agent: Path) -> list[Path]:
    return sorted(agent.parent.glob(f"{agent.name}.*.bak"))


def edited(agent: Path) -> str:
    text = agent.read_text().replace("Do exactly the task", "Do exactly the task (and mind our style guide)")
    agent.write_text(text)
    return text


def test_the_marker_records_a_checksum_of_the_rest_of_the_file() -> None:
    text = subagent.render()
    marker = [line for line in text.splitlines() if line.startswith(subagent.MARKER)]
    assert len(marker) == 1 and "sha256=" in marker[0]
    assert subagent.provenance(text) == "ours"
    assert subagent.provenance(subagent.render(body="another version\n")) == "ours"
    assert subagent.provenance(text.replace("Do exactly", "Do precisely")) == "edited"
    assert subagent.provenance(text + "\nmy own rule\n") == "edited"
    assert subagent.provenance("---\nname: haiku-subagent\n---\nmine\n") == "foreign"


def test_an_unedited_file_is_updated_and_removed_normally(agent: Path) -> None:
    assert subagent.install(agent, now=NOW).action == "installed"
    agent.write_text(subagent.render(body="what an older ccmitm wrote\n"))
    outcome = subagent.install(agent, now=NOW)
    assert (outcome.action, outcome.backup) == ("updated", None)
    assert agent.read_text() == subagent.render()
    assert subagent.install(agent, now=NOW).action == "unchanged"
    assert subagent.remove(agent, now=NOW).action == "removed"
    assert not agent.exists() and backups(agent) == []


def test_an_edited_file_is_kept_by_install_and_remove(agent: Path) -> None:
    subagent.install(agent, now=NOW)
    mine = edited(agent)
    refused = subagent.install(agent, now=NOW)
    assert not refused.ok and "changed since ccmitm wrote it" in refused.message
    assert "--force" in refused.message and "haiku-subagent.md.<UTC time>.bak" in refused.message
    assert agent.read_text() == mine
    refused = subagent.remove(agent, now=NOW)
    assert not refused.ok and "not removed" in refused.message
    assert agent.read_text() == mine
    assert backups(agent) == []


def test_force_replaces_an_edited_file_and_keeps_a_timestamped_backup(agent: Path) -> None:
    subagent.install(agent, now=NOW)
    mine = edited(agent)
    forced = subagent.install(agent, force=True, now=NOW)
    assert forced.action == "updated"
    assert forced.backup == agent.with_name("haiku-subagent.md.20260102T030405Z.bak")
    assert str(forced.backup) in forced.message
    assert agent.read_text() == subagent.render()
    assert forced.backup.read_text() == mine

    # A second forced run in the same second keeps both backups.
    edited(agent)
    again = subagent.install(agent, force=True, now=NOW)
    assert again.backup is not None and again.backup != forced.backup
    assert len(backups(agent)) == 2 and forced.backup.read_text() == mine
    # Claude Code loads every *.md in the folder: a backup must not look like an agent.
    assert sorted(agent.parent.glob("*.md")) == [agent]


def test_force_remove_of_an_edited_file_keeps_a_backup(agent: Path) -> None:
    subagent.install(agent, now=NOW)
    mine = edited(agent)
    removed = subagent.remove(agent, force=True, now=NOW)
    assert removed.action == "removed" and not agent.exists()
    assert removed.backup is not None and removed.backup.read_text() == mine
    assert oct(removed.backup.stat().st_mode & 0o777) == oct(0o644)


def test_force_over_a_foreign_file_keeps_it_too(agent: Path) -> None:
    agent.parent.mkdir(parents=True)
    mine = "---\nname: haiku-subagent\nmodel: haiku\n---\nmy own agent\n"
    agent.write_text(mine)
    refused = subagent.install(agent, now=NOW)
    assert not refused.ok and "not written by ccmitm" in refused.message
    forced = subagent.install(agent, force=True, now=NOW)
    assert forced.backup is not None and forced.backup.read_text() == mine
    assert agent.read_text() == subagent.render()


def test_an_old_marker_without_checksum_counts_as_ours_only_if_unchanged(agent: Path) -> None:
    """Older releases wrote one fixed text: that exact text is replaced quietly; anything else
    with the old marker may hold edits, so it is kept like an edited file."""
    assert subagent.provenance(LEGACY_TEXT) == "ours"
    agent.parent.mkdir(parents=True)
    agent.write_text(LEGACY_TEXT)
    upgraded = subagent.install(agent, now=NOW)
    assert (upgraded.action, upgraded.backup) == ("updated", None)
    assert agent.read_text() == subagent.render()

    changed = LEGACY_TEXT.replace("Do exactly", "Do precisely")
    agent.write_text(changed)
    refused = subagent.install(agent, now=NOW)
    assert not refused.ok and "older ccmitm" in refused.message
    assert agent.read_text() == changed
    assert not subagent.remove(agent, now=NOW).ok and agent.read_text() == changed
    forced = subagent.remove(agent, force=True, now=NOW)
    assert forced.backup is not None and forced.backup.read_text() == changed


def test_ccctl_reports_the_refusal_and_the_backup(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "CCMITM_", "XDG_"))}
    env.update(
        HOME=str(tmp_path), XDG_STATE_HOME=str(tmp_path / "state"), XDG_CONFIG_HOME=str(tmp_path / "cfg")
    )

    def ccctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ccmitm.cli", "subagent", *args],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )

    agent = tmp_path / ".claude" / "agents" / "haiku-subagent.md"
    assert ccctl("install").returncode == 0
    mine = edited(agent)
    refused = ccctl("install")
    assert refused.returncode == 1 and "changed since ccmitm wrote it" in refused.stderr
    assert agent.read_text() == mine
    forced = ccctl("install", "--force")
    assert forced.returncode == 0, forced.stderr
    (backup,) = backups(agent)
    assert str(backup) in forced.stdout and backup.read_text() == mine


def test_backup_is_a_copy_where_hard_links_are_refused(agent: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    subagent.install(agent, now=NOW)
    agent.chmod(0o600)
    mine = edited(agent)

    def no_links(src: object, dst: object) -> None:
        raise PermissionError(errno.EPERM, "hard links not supported here")

    monkeypatch.setattr(os, "link", no_links)
    forced = subagent.install(agent, force=True, now=NOW)
    assert forced.backup is not None and forced.backup.read_text() == mine
    assert forced.backup.stat().st_mode & 0o777 == 0o600, "the copy keeps the file's mode"
    assert agent.read_text() == subagent.render()
