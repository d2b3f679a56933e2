"""Reading the usage log: its files in order, and the small readings of one record every report shares.

:class:`UsageLines` is the only part of ``reports/`` that reads the usage log; every report takes
any iterable of records (dicts, one per log line), so the daemon, ccctl and the bundle share one
implementation and the tests feed hand-made lines.
"""

from __future__ import annotations

import gzip
import operator
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ccmitm.logs.files import all_files, rotated_at
from ccmitm.logs.usage import USAGE_FILE

# orjson parses a 100 MB log several times faster; the stdlib is only the fallback for a machine
# without its wheel. Both raise a ValueError on a line that is not JSON.
loads: Callable[[bytes], Any]
try:
    import orjson

    loads = orjson.loads
except ImportError:  # pragma: no cover - the wheel is a declared dependency
    import json

    loads = json.loads

Record = Mapping[str, Any]

#: Unparseable lines kept as text (for verify's proof); the count is always exact.
DEFAULT_KEEP_UNPARSEABLE = 200
_UNPARSEABLE_CHARS = 300
#: A rotated file's name has its rotation time to the second; its lines may carry the same
#: second's milliseconds, so a file counts as older than ``since`` only this much before it.
_NAME_STAMP_SLACK = timedelta(seconds=1)
_TS_PREFIX = b'{"ts":"'


class UsageLines:
    """Iterate the records of ``<logs_dir>/usage.jsonl`` and its rotated files (.gz too), oldest first.

    ``logs_dir`` may also name one usage file (plain or .gz): then only that file is read.

    With ``since``, only records at or after it are yielded, and rotated files that hold nothing
    that recent are not opened at all: ccmitm names a rotated file after the moment it rotated it
    (``usage.jsonl.<UTC stamp>``), and no line in it can be newer; a file with another name (an
    external logrotate's ``.1``) is judged by its mtime, which is just as much an upper bound.

    Unparseable lines (a torn last line after a crash, a foreign line) are counted in ``skipped``
    and the first few kept as text in ``unparseable`` once iteration has passed them. With
    ``since`` such a line cannot be placed by itself: it counts when the dated line before or after
    it is in the window. Iterating again re-reads the files.
    """

    def __init__(
        self,
        logs_dir: Path,
        since: datetime | None = None,
        keep_unparseable: int = DEFAULT_KEEP_UNPARSEABLE,
    ):
        self.logs_dir = Path(logs_dir)
        self.live = self.logs_dir / USAGE_FILE
        self.since = since if since is None or since.tzinfo else since.replace(tzinfo=UTC)
        self.keep_unparseable = keep_unparseable
        self.skipped = 0
        self.undated = 0  # with ``since``: parseable lines without a valid ts (left out)
        self.unparseable: list[str] = []
        self.files: list[Path] = []
        self.files_not_read: list[Path] = []

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return map(_second, self.with_text())  # in C: no second generator per line

    def _bad(self, raw: bytes) -> None:
        self.skipped += 1
        if len(self.unparseable) < self.keep_unparseable:
            self.unparseable.append(raw.decode("utf-8", "replace").strip()[:_UNPARSEABLE_CHARS])

    def _older(self, path: Path) -> bool:
        """Nothing in this rotated file is at or after ``since``."""
        assert self.since is not None
        stamp = rotated_at(path)
        if stamp is not None:
            return stamp + _NAME_STAMP_SLACK < self.since
        try:
            return datetime.fromtimestamp(path.stat().st_mtime, UTC) < self.since
        except OSError:
            return False

    def with_text(self) -> Iterator[tuple[bytes, dict[str, Any]]]:
        """(the line as read, its record) for every record in the window, oldest first."""
        self.skipped = self.undated = 0
        self.unparseable = []
        since = self.since
        # A file is read on its own (a usage.jsonl or .gz out of a bundle); a dir with its rotations.
        files = [self.logs_dir] if self.logs_dir.is_file() else all_files(self.live)
        self.files, self.files_not_read = [], []
        if since is not None and len(files) > 1:
            *rotated, live = files
            self.files_not_read = [path for path in rotated if self._older(path)]
            files = [path for path in rotated if path not in self.files_not_read] + [live]
        self.files = files
        # With a window, an unparseable line waits for the next dated line to say where it is.
        pending: list[bytes] = []
        previous_in_window: bool | None = False if self.files_not_read else None
        for path in files:
            for raw in _read_lines(path):
                if since is not None and raw.startswith(_TS_PREFIX):
                    # Lines older than the window are dropped on their timestamp, unparsed.
                    end = raw.find(b'"', 7)
                    stamp = _stamp(raw[7:end]) if end > 0 else None
                    if stamp is not None and stamp < since:
                        previous_in_window = False
                        pending.clear()
                        continue
                try:
                    record = loads(raw)
                except ValueError:
                    record = None
                if not isinstance(record, dict):
                    if not raw.strip():
                        continue
                    if since is None or previous_in_window:
                        self._bad(raw)
                    else:
                        pending.append(raw)
                    continue
                if since is not None:
                    stamp = parse_ts(record.get("ts"))
                    if stamp is None:
                        self.undated += 1  # an undated line cannot be placed in the window
                        continue
                    in_window = stamp >= since
                    if in_window:
                        for held in pending:
                            self._bad(held)
                    pending.clear()
                    previous_in_window = in_window
                    if not in_window:
                        continue
                yield raw, record
        if previous_in_window is None:  # no dated line at all: nothing says they are older
            for held in pending:
                self._bad(held)


_CHUNK = 1 << 20
_second = operator.itemgetter(1)


def _read_lines(path: Path) -> Iterator[bytes]:
    """The lines of a usage file (plain or .gz), without their line break. Read in large chunks
    and split in one call each: line by line, a gzip file costs several Python calls per line."""
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            tail = b""
            while chunk := handle.read(_CHUNK):
                lines = (tail + chunk).split(b"\n")
                tail = lines.pop()
                yield from lines
            if tail:
                yield tail
    except FileNotFoundError:  # rotated away between listing and reading
        return


def _stamp(text: bytes) -> datetime | None:
    try:
        stamp = datetime.fromisoformat(text.decode("ascii"))
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


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
