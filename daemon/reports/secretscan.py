"""Scan files, gzip files and tarballs for credentials that should never have been written.

Used by the bundle (scrub, then scan what was written and refuse to keep it on any finding), by
endurance evidence, and by the test suite's check of everything its daemons wrote. A
:class:`Finding` names the file, the line and the kind of secret, never the secret itself: a
scanner's report must be safe to print and to paste. The patterns are the redactor's
(:mod:`ccmitm.core.redact`).
"""

from __future__ import annotations

import gzip
import io
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from ccmitm.core.redact import Extra, exact_values, scan_text_with


@dataclass(frozen=True)
class Finding:
    """One secret found: where and what kind. Deliberately carries no part of the secret."""

    file: str  # a path; inside an archive "archive.tgz!member/name"
    pattern: str  # a pattern name, "lane key value (<label>)", or "unscannable"
    line: int | None = None  # 1-based line number when known
    count: int = 1  # matches of this pattern on that line

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        times = f" x{self.count}" if self.count > 1 else ""
        return f"{where}: {self.pattern}{times}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- files ----------------------------------------------------------------------------------------
_TAR_SUFFIXES = (".tgz", ".tar.gz", ".tar", ".tar.bz2", ".tar.xz", ".tbz2", ".txz")


def _is_tar_name(name: str) -> bool:
    return name.lower().endswith(_TAR_SUFFIXES)


def _scan_stream(
    stream: IO[bytes] | gzip.GzipFile, label: str, extras: list[tuple[str, str]]
) -> list[Finding]:
    findings: list[Finding] = []
    for number, raw in enumerate(stream, start=1):
        # latin-1 maps every byte to one character, so ASCII secrets match even in binary files.
        text = raw.decode("latin-1")
        for kind, hits in scan_text_with(text, extras).items():
            findings.append(Finding(label, kind, number, hits))
    return findings


def _scan_member_bytes(
    stream: IO[bytes], name: str, label: str, extras: list[tuple[str, str]], depth: int
) -> list[Finding]:
    """Scan one file's content, unwrapping .gz and (nested) tarballs by name."""
    lower = name.lower()
    if _is_tar_name(lower) and depth < 4:
        findings: list[Finding] = []
        # Stream mode ("r|*") works on non-seekable members of an outer tarball too.
        with tarfile.open(fileobj=stream, mode="r|*") as archive:
            for member in archive:
                if not member.isfile():
                    continue
                inner = archive.extractfile(member)
                if inner is None:
                    continue
                with inner:
                    findings += _scan_member_bytes(
                        inner, member.name, f"{label}!{member.name}", extras, depth + 1
                    )
        return findings
    if lower.endswith(".gz"):
        with gzip.GzipFile(fileobj=stream, mode="rb") as unzipped:
            return _scan_stream(unzipped, label, extras)
    return _scan_stream(stream, label, extras)


def _scan_file(path: Path, extras: list[tuple[str, str]], label: str | None = None) -> list[Finding]:
    name = label or str(path)
    try:
        with open(path, "rb") as handle:
            return _scan_member_bytes(handle, path.name, name, extras, 0)
    except (OSError, EOFError, tarfile.TarError, zlib.error, gzip.BadGzipFile) as exc:
        # Fail closed: a file we cannot read may hold anything.
        return [Finding(name, f"unscannable ({type(exc).__name__})")]


def iter_files(root: Path) -> Iterator[Path]:
    """Regular files under ``root`` (or ``root`` itself), sorted; symlinks are not followed."""
    if root.is_symlink():
        return
    if root.is_file():
        yield root
        return
    if not root.is_dir():
        return
    for entry in sorted(root.rglob("*")):
        if entry.is_symlink() or not entry.is_file():
            continue
        yield entry


def scan_tree(path: Path, extra: Extra = None) -> list[Finding]:
    """Scan every regular file under ``path`` (a file or a directory), .gz and tarballs included."""
    extras = exact_values(extra)
    findings: list[Finding] = []
    for file in iter_files(Path(path)):
        findings += _scan_file(file, extras)
    return findings


def scan_bytes(data: bytes, name: str, extra: Extra = None) -> list[Finding]:
    """Scan in-memory content as if it were a file called ``name`` (handy for tests and pipes)."""
    extras = exact_values(extra)
    try:
        return _scan_member_bytes(io.BytesIO(data), name, name, extras, 0)
    except (OSError, EOFError, tarfile.TarError, zlib.error, gzip.BadGzipFile) as exc:
        return [Finding(name, f"unscannable ({type(exc).__name__})")]
