"""What the bundle remembers and finds between runs: the last run (``bundle-state.json`` in the
state dir), its own bundles by name (for retention), and where ``ccctl endurance`` left its newest
evidence."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ccmitm.paths import ensure_private_dir, write_private
from ccmitm.reports.records import parse_ts

STATE_FILE = "bundle-state.json"
STAMP_FORMAT = "%Y%m%d-%H%M%S"
# Where `ccctl endurance` says its newest evidence is (in the state dir), and the files taken from it.
ENDURANCE_POINTER = "endurance-last.json"
ENDURANCE_FILES = ("SUMMARY.md", "TESTS.md", "METRICS.json", "VERIFY.txt")


# --- last-run state ------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunRecord:
    """One bundle run as remembered in ``<state dir>/bundle-state.json``."""

    at: datetime  # when the run started (the ``now`` it was given)
    path: str | None  # the bundle directory; None when the run failed
    ok: bool
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"at": self.at.isoformat(), "path": self.path, "ok": self.ok, "error": self.error}

    to_dict = as_dict

    @classmethod
    def from_dict(cls, data: Any) -> RunRecord | None:
        if not isinstance(data, Mapping):
            return None
        stamp = parse_ts(data.get("at"))
        if stamp is None:
            return None
        path = data.get("path")
        error = data.get("error")
        return cls(
            at=stamp,
            path=path if isinstance(path, str) else None,
            ok=data.get("ok") is True,
            error=error if isinstance(error, str) else None,
        )


def _read_state(state_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((Path(state_dir) / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # missing or damaged: behave as if no bundle was ever made
    return data if isinstance(data, dict) else {}


def load_last_run(state_dir: Path) -> RunRecord | None:
    """The most recent run, successful or not (None if there never was one)."""
    return RunRecord.from_dict(_read_state(state_dir).get("last_run"))


def load_last_success(state_dir: Path) -> RunRecord | None:
    """The most recent successful run: where the next bundle's usage window starts."""
    return RunRecord.from_dict(_read_state(state_dir).get("last_success"))


def record_run(
    state_dir: Path, *, at: datetime, path: str | Path | None, ok: bool, error: str | None = None
) -> RunRecord:
    """Remember a run (atomically: temp file + rename, 0600). A failure keeps the last success."""
    state_dir = ensure_private_dir(Path(state_dir))
    run = RunRecord(at=at, path=str(path) if path is not None else None, ok=ok, error=error)
    state = _read_state(state_dir)
    state["last_run"] = run.as_dict()
    if ok:
        state["last_success"] = run.as_dict()
    write_private(state_dir / STATE_FILE, (json.dumps(state, indent=2) + "\n").encode())
    return run


# --- names and retention -------------------------------------------------------------------------
def bundle_name(prefix: str, stamp: datetime) -> str:
    return f"{prefix}-{stamp.strftime(STAMP_FORMAT)}"


def _name_pattern(prefix: str) -> re.Pattern[str]:
    return re.compile(rf"^{re.escape(prefix)}-(\d{{8}}-\d{{6}})(\.tgz)?$")


def list_bundles(directory: Path, prefix: str) -> dict[str, list[Path]]:
    """Bundles this module made in ``directory``: stamp -> [dir and/or .tgz]. Nothing else matches.

    A directory counts only as a real directory and a .tgz only as a regular file (never a
    symlink), and the stamp must be a real date: a stray file that merely looks similar is left.
    """
    pattern = _name_pattern(prefix)
    found: dict[str, list[Path]] = {}
    if not directory.is_dir():
        return found
    for entry in directory.iterdir():
        match = pattern.match(entry.name)
        if not match or entry.is_symlink():
            continue
        try:
            datetime.strptime(match.group(1), STAMP_FORMAT)
        except ValueError:
            continue
        is_archive = match.group(2) is not None
        if (is_archive and entry.is_file()) or (not is_archive and entry.is_dir()):
            found.setdefault(match.group(1), []).append(entry)
    return found


def prune_bundles(directory: Path, prefix: str, keep: int, protect: str | None = None) -> list[Path]:
    """Remove all but the newest ``keep`` bundles (dir + .tgz). ``protect`` (a name) is never removed."""
    bundles = list_bundles(directory, prefix)
    removed: list[Path] = []
    protected_stamp = protect.removeprefix(f"{prefix}-") if protect else None
    for stamp in sorted(bundles, reverse=True)[max(keep, 0) :]:
        if stamp == protected_stamp:  # a clock that went backwards must not eat the new bundle
            continue
        for path in bundles[stamp]:
            remove_entry(path)
            removed.append(path)
    return removed


def remove_entry(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def latest_endurance_evidence(state_dir: Path) -> Path | None:
    """The newest `ccctl endurance` evidence folder (from the pointer the last run left), if it
    still exists."""
    try:
        pointer = json.loads((state_dir / ENDURANCE_POINTER).read_text(encoding="utf-8"))
        folder = Path(pointer["folder"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return folder if (folder / "SUMMARY.md").is_file() else None
