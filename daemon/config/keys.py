"""Lane keys: read from the environment or a private file, never stored in the config model.

A key is resolved when a config snapshot is built, so the model itself (which is shown by
``ccctl config show`` and copied into bundles) can never hold one.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ccmitm import paths
from ccmitm.config.model import Config, LaneConfig


@dataclass(frozen=True)
class LaneKey:
    """A lane's resolved key, or why it has none. ``value`` must never reach a log or a reply."""

    value: str | None = field(repr=False)
    problem: str | None = None


#: A key file holds one key on its first line; anything longer is not a key file.
KEY_FILE_BYTES = 64 * 1024


def _read_key_file(path: Path) -> LaneKey:
    try:
        info = path.stat()
    except OSError as exc:
        return LaneKey(None, f"api_key_file {path}: {exc.strerror}")
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        return LaneKey(None, f"api_key_file {path} is readable by group or others; run chmod 600 on it")
    try:
        # Never waiting (a FIFO put there would hang the start) and bounded: a key is one line.
        text = paths.read_small_file(path, KEY_FILE_BYTES).decode("utf-8")
        first_line = text.strip().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        return LaneKey(None, f"api_key_file {path}: cannot read ({type(exc).__name__})")
    key = first_line[0].strip() if first_line else ""
    if not key:
        return LaneKey(None, f"api_key_file {path} is empty")
    return LaneKey(key)


def resolve_lane_key(lane: LaneConfig, environ: Mapping[str, str] = os.environ) -> LaneKey | None:
    """The key of a keyed lane (env var first, then file); None for a pass-through lane."""
    if not lane.keyed:
        return None
    if lane.api_key_env:
        value = environ.get(lane.api_key_env, "").strip()
        if value:
            return LaneKey(value)
        if not lane.api_key_file:
            return LaneKey(None, f"{lane.api_key_env} is not set")
    assert lane.api_key_file is not None
    return _read_key_file(Path(lane.api_key_file))


def resolve_lane_keys(config: Config, environ: Mapping[str, str] = os.environ) -> dict[str, LaneKey]:
    keys: dict[str, LaneKey] = {}
    for name, lane in config.lanes.items():
        key = resolve_lane_key(lane, environ)
        if key is not None:
            keys[name] = key
    return keys
