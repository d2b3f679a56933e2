"""Reading the usage log: its files in order, and the small readings of one record every report shares.

:class:`UsageLines` is the only part of ``reports/`` that reads the usage log; every report takes
any iterable of records (dicts, one per log line), so the daemon, ccctl and the bundle share one
implementation and the tests feed hand-made lines.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ccmitm.logs.files import all_files, read_lines
from ccmitm.logs.usage import USAGE_FILE

Record = Mapping[str, Any]


class UsageLines:
    """Iterate the records of ``<logs_dir>/usage.jsonl`` and its rotated files (.gz too), oldest first.

    ``logs_dir`` may also name one usage file (plain or .gz): then only that file is read.

    Unparseable lines (a torn last line after a crash, a foreign line) are skipped and counted in
    ``skipped`` once iteration has passed them. Iterating again re-reads the files.
    """

    def __init__(self, logs_dir: Path):
        self.logs_dir = Path(logs_dir)
        self.live = self.logs_dir / USAGE_FILE
        self.skipped = 0
        self.files: list[Path] = []

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self.skipped = 0
        # A file is read on its own (a usage.jsonl or .gz out of a bundle); a dir with its rotations.
        self.files = [self.logs_dir] if self.logs_dir.is_file() else all_files(self.live)
        for path in self.files:
            for raw in read_lines(path):
                if not raw.strip():
                    continue
                try:
                    record = json.loads(raw)
                except ValueError:
                    self.skipped += 1
                    continue
                if not isinstance(record, dict):
                    self.skipped += 1
                    continue
                yield record


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> timedelta:
    """``"24h"``, ``"7d"``, ``"30m"``, ``"1h30m"``, ``"2w"`` -> timedelta. ValueError otherwise."""
    compact = text.strip().lower().replace(" ", "")
    if not compact:
        raise ValueError("empty duration")
    position, seconds = 0, 0.0
    for match in _DURATION_PART.finditer(compact):
        if match.start() != position:
            break
        seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    if position != len(compact):
        raise ValueError(f"{text!r} is not a duration like 30m, 24h, 7d or 1h30m")
    if seconds <= 0:
        raise ValueError(f"{text!r} is not a positive duration")
    return timedelta(seconds=seconds)


def parse_ts(value: Any) -> datetime | None:
    """A record's ``ts`` as an aware datetime (naive stamps are UTC); None when missing or invalid."""
    if not isinstance(value, str):
        return None
    try:
        stamp = datetime.fromisoformat(value)
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def since_filter(records: Iterable[Record], since: datetime | None) -> Iterator[Record]:
    """Records at or after ``since``; with a ``since``, undated records are dropped (can't place them)."""
    if since is None:
        yield from records
        return
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    for record in records:
        stamp = parse_ts(record.get("ts"))
        if stamp is not None and stamp >= since:
            yield record


def number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def integer(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def is_error(record: Record) -> bool:
    """Failed: an HTTP error status, an error text (drop, abort, connect failure), or no response."""
    status = record.get("status")
    if record.get("error") is not None:
        return True
    if not isinstance(status, int) or isinstance(status, bool):
        return True
    return status >= 400


def key_of(value: Any) -> str:
    return "unknown" if value is None or value == "" else str(value)


def iso(stamp: datetime | None) -> str | None:
    return stamp.astimezone(UTC).isoformat(timespec="seconds") if stamp else None
