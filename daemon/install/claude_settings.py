"""Claude Code's ``settings.json``: add ccmitm's ``statusLine`` and take it out again.

The file is the user's: every other key is kept in its order, the indentation is kept, a user's
own ``statusLine`` is replaced only when asked (``--force``), a copy of the previous file is kept
next to it, and an unreadable file is refused with a message rather than overwritten. The file
may hold secrets (``env`` often carries API keys): the new file keeps the old one's mode, the
backup is owner-only, and nothing of its content is ever printed.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ccmitm import paths

BACKUP_SUFFIX = ".ccmitm-backup"
SUBCOMMAND = "statusline"


class SettingsError(Exception):
    """The settings file cannot be changed as asked; the message says why and what to do."""


def settings_path(environ: Mapping[str, str] = os.environ) -> Path:
    """``$CLAUDE_CONFIG_DIR/settings.json`` (Claude Code's own override), else ~/.claude/settings.json."""
    base = environ.get("CLAUDE_CONFIG_DIR")
    if base:
        return paths.expand(base, environ) / "settings.json"
    return paths.expand("~/.claude", environ) / "settings.json"


def own_command(executable: str = sys.executable) -> str:
    """The command Claude Code should run: this install's ccctl by absolute path (the one next to
    this Python: a venv's or pipx's bin), so it works without PATH; else the ccctl on PATH;
    else this Python running the package."""
    beside = Path(executable).parent / "ccctl"
    if beside.is_file() and os.access(beside, os.X_OK):
        ccctl = str(beside.absolute())
    else:
        found = shutil.which("ccctl")
        if found:
            ccctl = str(Path(found).absolute())
        else:
            return f"{shlex.quote(executable)} -m ccmitm.cli {SUBCOMMAND}"
    return f"{shlex.quote(ccctl)} {SUBCOMMAND}"


def is_ours(status_line: Any) -> bool:
    """A statusLine that runs `ccctl statusline` (any path to ccctl, or python -m ccmitm.cli)."""
    if not isinstance(status_line, Mapping):
        return False
    command = status_line.get("command")
    if not isinstance(command, str):
        return False
    try:
        words = shlex.split(command)
    except ValueError:
        return False
    if len(words) < 2 or words[-1] != SUBCOMMAND:
        return False
    return Path(words[0]).name == "ccctl" or words[-2:-1] == ["ccmitm.cli"]


def read(path: Path) -> tuple[dict[str, Any], str | None]:
    """The settings and the file's text (None when there is no file)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}, None
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if not text.strip():
        return {}, text
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        # Only the position: the file may hold secrets, so no excerpt of it.
        raise SettingsError(
            f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}); "
            "fix it, then run this again (nothing was changed)"
        ) from None
    if not isinstance(data, dict):
        raise SettingsError(f"{path} does not hold a JSON object; nothing was changed")
    return data, text


def _indent(text: str | None) -> int | str:
    """The file's indentation, so a rewrite does not reformat the user's file (2 by default)."""
    for raw in (text or "").splitlines()[1:]:
        stripped = raw.lstrip(" \t")
        if stripped and len(stripped) < len(raw):
            lead = raw[: len(raw) - len(stripped)]
            return "\t" if lead.startswith("\t") else len(lead)
    return 2


def _write(path: Path, data: dict[str, Any], original: str | None) -> Path | None:
    """Write the settings atomically, keeping the old file as a backup; the backup's path."""
    if not path.parent.exists():
        paths.ensure_private_dir(path.parent)
    mode = 0o600
    backup: Path | None = None
    if original is not None:
        mode = path.stat().st_mode & 0o777
        backup = path.with_name(path.name + BACKUP_SUFFIX)
        paths.write_atomic(backup, original.encode("utf-8"), 0o600)
    body = json.dumps(data, indent=_indent(original), ensure_ascii=False) + "\n"
    paths.write_atomic(path, body.encode("utf-8"), mode)
    return backup


def install(path: Path, command: str, force: bool = False) -> str:
    """Put ``{"type": "command", "command": command}`` in ``statusLine``; what happened, one line."""
    data, original = read(path)
    current = data.get("statusLine")
    wanted = {"type": "command", "command": command, "padding": 0}
    if current == wanted:
        return f"{path}: the status line already runs `{command}`"
    if current is not None and not is_ours(current) and not force:
        raise SettingsError(
            f"{path} already has a statusLine of your own; `ccctl statusline install --force` replaces "
            "it (the old file is kept as a backup)"
        )
    data["statusLine"] = wanted
    backup = _write(path, data, original)
    kept = f" (previous file: {backup})" if backup else ""
    return f"{path}: the status line runs `{command}`{kept}"


def uninstall(path: Path) -> str:
    data, original = read(path)
    current = data.get("statusLine")
    if current is None:
        return f"{path}: no status line set; nothing to do"
    if not is_ours(current):
        raise SettingsError(f"{path}: the statusLine is not ccmitm's; left as it is")
    del data["statusLine"]
    backup = _write(path, data, original)
    return f"{path}: ccmitm's status line removed (previous file: {backup})"
