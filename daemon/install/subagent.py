"""The `haiku-subagent` Claude Code agent definition: render it, install it, remove it.

Claude Code reads custom agents from ``~/.claude/agents/*.md`` (user scope) and
``<project>/.claude/agents/*.md`` (project scope): Markdown with YAML front matter. ``model: haiku``
makes every call the agent makes a Haiku call, which the proxy offloads.

The file carries a marker line with the SHA-256 of everything else in the file, so ccmitm can
tell three cases apart: its own file as it wrote it (rewritten or removed freely), its own file
edited since (kept, because the edits are the user's), and a file it never wrote (kept). ``force``
replaces or removes the last two, and first keeps a copy next to it (see :func:`backup_path`).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from ccmitm.paths import write_atomic

NAME = "haiku-subagent"
# Every marker line ccmitm ever wrote starts with this; the current one ends with the checksum.
MARKER = "<!-- written by ccmitm (ccctl subagent install)"
_MARKER_TAIL = "; `ccctl subagent remove` deletes it"
_CHECKSUM = re.compile(r"; sha256=([0-9a-f]{64}) -->$")
# Older releases wrote the marker without a checksum, so an edit cannot be told from their own
# text by the marker alone. Their text never varied: this is the SHA-256 of the whole file each of
# them wrote. A file with the old marker and this checksum is an unedited one; any other is
# treated as edited.
LEGACY_MARKER = f"{MARKER}{_MARKER_TAIL} -->"
LEGACY_SHA256 = frozenset({"848a468d88d8602c0189419078637772e900922d1ecb60b997645949254661f9"})

DESCRIPTION = (
    "Fast, cheap helper running on Haiku. Use it PROACTIVELY for read-mostly chores: scanning and "
    "grepping the codebase, listing files and call sites, building a repo map, summarising files, "
    "checking logs, and small minimal-diff refactors with a clear spec. Give it a precise task and "
    "the paths to look at; keep design decisions and final review in the main conversation."
)

BODY = """\
You are haiku-subagent, a focused helper for the main Claude Code session.

- Do exactly the task you were given: scans, greps, repo maps, file summaries, or a small refactor.
- Prefer reading and searching over guessing; quote file paths with line numbers.
- For edits, make the smallest diff that does the job; do not reformat or rename beyond it.
- Never print, copy or write credentials (API keys, tokens, .env contents) into your answer.
- Finish with a short, factual report: what you looked at, what you found or changed, what is left.
"""


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def marker_line(digest: str) -> str:
    return f"{MARKER}{_MARKER_TAIL}; edits are kept unless --force; sha256={digest} -->"


def render(body: str = BODY) -> str:
    """The agent file, byte for byte (front matter, marker, body); ``body`` is for tests that need
    another version of ccmitm's own file."""
    head = (
        "---\n"
        f"name: {NAME}\n"
        f"description: {json.dumps(DESCRIPTION)}\n"  # a JSON string is a valid YAML scalar
        "model: haiku\n"
        "---\n"
    )
    rest = f"\n{body}"
    return f"{head}{marker_line(_sha256(head + rest))}\n{rest}"


def project_root(start: Path) -> Path:
    """The git work tree containing ``start`` (so a subdirectory installs for the whole repo), else
    ``start`` itself: Claude Code looks for ``.claude/agents`` at the project root it runs in."""
    try:
        result = subprocess.run(
            ["git", "-C", str(start), "rev-parse", "--show-toplevel"],
            capture_output=True,
            text=True,
            timeout=10,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        return start
    top = result.stdout.strip()
    return Path(top) if result.returncode == 0 and top else start


def agent_path(scope: str, home: Path, cwd: Path) -> Path:
    base = home if scope == "user" else project_root(cwd)
    return base / ".claude" / "agents" / f"{NAME}.md"


# --- whose file is it ------------------------------------------------------------------------------
Provenance = Literal["ours", "edited", "legacy-edited", "foreign"]


def provenance(text: str) -> Provenance:
    """``ours``: ccmitm's file exactly as it wrote it (any version); ``edited``: ccmitm's file,
    changed since; ``legacy-edited``: an older ccmitm's file (no checksum) that differs from what
    it wrote; ``foreign``: no marker line, so ccmitm never wrote it."""
    lines = text.splitlines(keepends=True)
    index = next((i for i, line in enumerate(lines) if line.startswith(MARKER)), None)
    if index is None:
        return "foreign"
    marker = lines[index].rstrip("\r\n")
    found = _CHECKSUM.search(marker)
    if found is None:
        # Only the one legacy marker is recognised; a marker line someone retyped counts as an edit.
        return "ours" if marker == LEGACY_MARKER and _sha256(text) in LEGACY_SHA256 else "legacy-edited"
    rest = "".join(lines[:index] + lines[index + 1 :])
    return "ours" if _sha256(rest) == found.group(1) else "edited"


def is_ours(text: str) -> bool:
    """Written by ccmitm and not edited since: safe to rewrite or delete without asking."""
    return provenance(text) == "ours"


# --- backups ---------------------------------------------------------------------------------------
_BACKUP_PATTERN = "{name}.<UTC time>.bak"


def backup_path(path: Path, now: datetime) -> Path:
    """``haiku-subagent.md.20260102T030405Z.bak`` beside the file. Timestamped so a second --force
    never overwrites the first backup; not ending in ``.md`` so Claude Code does not load the copy
    as a second agent of the same name."""
    return path.with_name(f"{path.name}.{now.astimezone(UTC):%Y%m%dT%H%M%SZ}.bak")


def _keep_copy(path: Path, now: datetime) -> Path:
    """Keep the current file under a new backup name (never replacing an existing file)."""
    first = backup_path(path, now)
    for n in range(100):
        target = first if n == 0 else first.with_name(f"{first.stem}-{n}.bak")
        try:
            # A hard link is an exact, atomic copy; write_atomic then swaps in a new inode.
            os.link(path, target)
            return target
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EMLINK):
                raise
        # No hard links on this file system: copy, refusing to overwrite.
        try:
            with path.open("rb") as src, target.open("xb") as dst:
                shutil.copyfileobj(src, dst)
            shutil.copymode(path, target)
            return target
        except FileExistsError:
            continue
    raise FileExistsError(f"{first}: too many backups already")


# --- install / remove ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Outcome:
    path: Path
    action: str  # "installed", "updated", "unchanged", "removed", "absent", "refused"
    message: str
    backup: Path | None = None  # where the replaced or removed file was kept (with --force)

    @property
    def ok(self) -> bool:
        return self.action != "refused"


def _why_kept(path: Path, state: Provenance) -> str:
    if state == "edited":
        return f"{path} was changed since ccmitm wrote it"
    if state == "legacy-edited":
        return (
            f"{path} was written by an older ccmitm that recorded no checksum, and differs from what "
            "it wrote, so it may hold your edits"
        )
    return f"{path} exists and was not written by ccmitm"


def install(path: Path, force: bool = False, now: datetime | None = None) -> Outcome:
    wanted = render()
    try:
        current: str | None = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        current = None
    if current == wanted:
        return Outcome(path, "unchanged", f"{path}: already installed, unchanged")
    state = None if current is None else provenance(current)
    backup = None
    if state not in (None, "ours"):
        assert state is not None
        if not force:
            return Outcome(
                path,
                "refused",
                f"{_why_kept(path, state)}; left as is. `--force` replaces it and keeps a copy as "
                f"{_BACKUP_PATTERN.format(name=path.name)}",
            )
        backup = _keep_copy(path, now or datetime.now(UTC))
    path.parent.mkdir(parents=True, exist_ok=True)
    # An agent definition is not a secret, and Claude Code must be able to read it.
    write_atomic(path, wanted.encode(), 0o644)
    action = "installed" if current is None else "updated"
    kept = f"; the previous file is kept as {backup}" if backup else ""
    return Outcome(path, action, f"{path}: {action}{kept}", backup)


def remove(path: Path, force: bool = False, now: datetime | None = None) -> Outcome:
    try:
        current = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Outcome(path, "absent", f"{path}: not installed, nothing to remove")
    state = provenance(current)
    if state == "ours":
        path.unlink()
        return Outcome(path, "removed", f"{path}: removed")
    if not force:
        return Outcome(
            path,
            "refused",
            f"{_why_kept(path, state)}; not removed. `--force` deletes it and keeps a copy as "
            f"{_BACKUP_PATTERN.format(name=path.name)}",
        )
    backup = _keep_copy(path, now or datetime.now(UTC))
    path.unlink()
    return Outcome(path, "removed", f"{path}: removed; a copy is kept as {backup}", backup)
