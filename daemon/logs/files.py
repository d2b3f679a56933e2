"""Append-only log files that rotate by rename + reopen, never by copy-and-truncate.

A file is written by one owner with one ``os.write`` per line on an ``O_APPEND`` descriptor, so a
line is never split or interleaved. Rotation renames the live file to a timestamped name, opens a
fresh one (0600) and gzips the renamed one; nothing is lost or doubled because the same owner does
both, in order. ``reopen()`` serves an external logrotate that has already renamed the file.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

from ccmitm.paths import atomic_file, ensure_private_dir

FILE_MODE = 0o600
#: A rotated file is named ``<name>.<UTC time of the rotation>[-N][.gz]``: no line in it is newer.
ROTATED_STAMP = "%Y%m%dT%H%M%SZ"
_ROTATED_NAME = re.compile(r"\.(\d{8}T\d{6}Z)(?:-\d+)?(?:\.gz)?$")


class RotatingAppendFile:
    """One log file with size/daily rotation. Thread-safe; callers may share it."""

    def __init__(self, path: Path, rotate_bytes: int, keep: int, daily: bool = True):
        self.path = path
        self.rotate_bytes = rotate_bytes
        self.keep = keep
        self.daily = daily
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._size = 0
        self._opened_day: date | None = None

    # --- settings --------------------------------------------------------------------------
    def configure(self, rotate_bytes: int, keep: int, daily: bool) -> None:
        with self._lock:
            self.rotate_bytes, self.keep, self.daily = rotate_bytes, keep, daily

    # --- writing ---------------------------------------------------------------------------
    def _open(self) -> None:
        ensure_private_dir(self.path.parent)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        info = os.fstat(fd)
        if info.st_mode & 0o077:
            os.fchmod(fd, FILE_MODE)
        self._fd = fd
        self._size = info.st_size
        self._opened_day = datetime.fromtimestamp(info.st_mtime if info.st_size else _now_ts()).date()

    def write(self, data: bytes) -> None:
        """Append ``data`` (one or more whole lines) with a single write, rotating first if due."""
        with self._lock:
            if self._fd is None:
                self._open()
            if self._due(len(data)):
                self._rotate_locked()
            assert self._fd is not None
            view = memoryview(data)
            while view:  # a regular file takes it all at once; loop only for the exotic case
                written = os.write(self._fd, view)
                view = view[written:]
            self._size += len(data)

    def _due(self, incoming: int) -> bool:
        if self._size == 0:
            return False
        if self._size + incoming > self.rotate_bytes:
            return True
        return self.daily and self._opened_day is not None and _today() != self._opened_day

    def rotate_if_due(self) -> Path | None:
        with self._lock:
            if self._fd is None:
                if not self.path.exists():
                    return None
                self._open()
            if not self._due(0):
                return None
            return self._rotate_locked()

    def rotate(self) -> Path | None:
        """Rotate now (if the live file has anything in it). Returns the compressed file."""
        with self._lock:
            return self._rotate_locked()

    def reopen(self) -> None:
        """Close and reopen by name: after an external logrotate renamed the file."""
        with self._lock:
            self._close_locked()
            self._open()

    def move_to(self, path: Path) -> None:
        """Write to ``path`` from now on (a changed logs.dir); the old file stays where it is."""
        with self._lock:
            self._close_locked()
            self.path = path
            self._open()

    def close(self) -> None:
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _rotate_locked(self) -> Path | None:
        if not self.path.exists() or self.path.stat().st_size == 0:
            return None
        self._close_locked()
        target = self._rotated_name()
        os.rename(self.path, target)
        self._open()  # new lines go to the fresh file from here on
        compressed = _gzip_file(target)
        self._prune()
        return compressed

    def _rotated_name(self) -> Path:
        stamp = datetime.now(UTC).strftime(ROTATED_STAMP)
        candidate = self.path.with_name(f"{self.path.name}.{stamp}")
        counter = 1
        while candidate.exists() or candidate.with_name(candidate.name + ".gz").exists():
            candidate = self.path.with_name(f"{self.path.name}.{stamp}-{counter}")
            counter += 1
        return candidate

    def _prune(self) -> None:
        rotated = rotated_files(self.path)
        for old in rotated[: max(0, len(rotated) - self.keep)]:
            old.unlink(missing_ok=True)


def _gzip_file(path: Path) -> Path:
    target = path.with_name(path.name + ".gz")
    with (
        open(path, "rb") as source,
        atomic_file(target, FILE_MODE) as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as sink,
    ):
        shutil.copyfileobj(source, sink, 1024 * 1024)
    path.unlink()
    return target


def _now_ts() -> float:
    return datetime.now().timestamp()


def _today() -> date:
    return datetime.now().date()


def rotated_files(live: Path) -> list[Path]:
    """Rotated siblings of ``live``, oldest first. A plain file wins over its (unfinished) .gz twin."""
    if not live.parent.is_dir():
        return []
    found: dict[str, Path] = {}
    prefix = live.name + "."
    for entry in live.parent.iterdir():
        name = entry.name
        if not name.startswith(prefix) or name.endswith(".tmp"):
            continue
        stem = name.removesuffix(".gz")
        if stem in found and not found[stem].name.endswith(".gz"):
            continue
        found[stem] = entry
    return [found[stem] for stem in sorted(found)]


def rotated_at(path: Path) -> datetime | None:
    """When ccmitm rotated this file, from its name (UTC, to the second); None for other names
    (an external logrotate's ``.1``, ``-20250101``). Every line in the file was written before it."""
    match = _ROTATED_NAME.search(path.name)
    if match is None:
        return None
    return datetime.strptime(match.group(1), ROTATED_STAMP).replace(tzinfo=UTC)


def all_files(live: Path) -> list[Path]:
    """Rotated files oldest first, then the live file."""
    files = rotated_files(live)
    if live.exists():
        files.append(live)
    return files


def read_lines(path: Path) -> Iterator[bytes]:
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:  # type: ignore[operator]
            yield from handle
    except FileNotFoundError:  # rotated away between listing and reading
        return
