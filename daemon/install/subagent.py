"""The `haiku-subagent` Claude Code agent definition: render it, install it, remove it.

Claude Code reads custom agents from ``~/.claude/agents/*.md`` (user scope) and
``<project>/.claude/agents/*.md`` (project scope): Markdown with YAML front matter. ``model: haiku``
makes every call the agent makes a Haiku call, which the proxy offloads. The file carries a marker
line so ccmitm can tell its own file from one the user wrote: it rewrites only its own, and
removes only its own, unless told ``force``.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ccmitm.paths import write_atomic

NAME = "haiku-subagent"
MARKER = "<!-- written by ccmitm (ccctl subagent install); `ccctl subagent remove` deletes it -->"

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


def render() -> str:
    """The agent file, byte for byte (front matter, marker, body)."""
    return (
        "---\n"
        f"name: {NAME}\n"
        f"description: {json.dumps(DESCRIPTION)}\n"  # a JSON string is a valid YAML scalar
        "model: haiku\n"
        "---\n"
        f"{MARKER}\n\n"
        f"{BODY}"
    )


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


def is_ours(text: str) -> bool:
    return MARKER in text


@dataclass(frozen=True)
class Outcome:
    path: Path
    action: str  # "installed", "updated", "unchanged", "removed", "absent", "refused"
    message: str

    @property
    def ok(self) -> bool:
        return self.action != "refused"


def install(path: Path, force: bool = False) -> Outcome:
    wanted = render()
    try:
        current: str | None = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        current = None
    if current == wanted:
        return Outcome(path, "unchanged", f"{path}: already installed, unchanged")
    if current is not None and not is_ours(current) and not force:
        return Outcome(
            path, "refused", f"{path} exists and was not written by ccmitm; use --force to replace it"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    # An agent definition is not a secret, and Claude Code must be able to read it.
    write_atomic(path, wanted.encode(), 0o644)
    action = "installed" if current is None else "updated"
    return Outcome(path, action, f"{path}: {action}")


def remove(path: Path, force: bool = False) -> Outcome:
    try:
        current = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Outcome(path, "absent", f"{path}: not installed, nothing to remove")
    if not is_ours(current) and not force:
        return Outcome(path, "refused", f"{path} was not written by ccmitm; use --force to delete it")
    path.unlink()
    return Outcome(path, "removed", f"{path}: removed")
