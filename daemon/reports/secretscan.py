"""Find and scrub credentials in text, files, gzip files and tarballs.

Used by the bundle (scrub, then scan what was written and refuse to keep it on any finding) and by
the CI check of everything the test daemons wrote. A :class:`Finding` names the file, the line and
the kind of secret, never the secret itself: a scanner's report must be safe to print and to paste.

The patterns aim at credentials Claude Code and the lanes actually use; the exact values of the
configured lane keys are scanned for as well, because a key in an unexpected format would slip past
any pattern.
"""

from __future__ import annotations

import gzip
import io
import re
import tarfile
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

#: Exact values shorter than this are not scanned for: a 3-character "key" would match everywhere,
#: and every real lane key is far longer.
MIN_EXTRA_LENGTH = 8

# Token characters of the Anthropic key families (base64url plus "-"/"_").
_SK_BODY = r"[A-Za-z0-9_\-]{8,}"


@dataclass(frozen=True)
class Pattern:
    name: str
    regex: re.Pattern[str]
    #: Group kept in the redacted text (e.g. the "Bearer " or header name prefix); 0 keeps nothing.
    keep_group: int = 0


# Order matters for redaction: the specific families first, so a token is labelled by what it is
# (an OAuth token after "Bearer " is reported as sk-ant-oat01, and the Bearer rule then finds
# only the marker, which it does not match).
PATTERNS: tuple[Pattern, ...] = (
    Pattern("sk-ant-api03", re.compile(r"sk-ant-api03-" + _SK_BODY)),
    Pattern("sk-ant-oat01", re.compile(r"sk-ant-oat01-" + _SK_BODY)),
    Pattern("sk-ant-admin01", re.compile(r"sk-ant-admin01-" + _SK_BODY)),
    # Other/future Anthropic families (refresh tokens sk-ant-ort01-…, new versions).
    Pattern("sk-ant-other", re.compile(r"sk-ant-[a-z]+[0-9]*-" + _SK_BODY)),
    # Z.AI keys: 32 hex digits, a dot, a secret part (16 characters in every key seen).
    Pattern(
        "zai-key",
        re.compile(r"(?<![0-9A-Za-z])[0-9a-fA-F]{32}\.[A-Za-z0-9_\-]{16,}(?![A-Za-z0-9])"),
    ),
    # A bearer credential. The token must be long and hold a digit, so prose such as
    # "Bearer authentication" in a README is not a finding; real tokens always qualify.
    Pattern(
        "bearer-token",
        re.compile(r"(?i)(\bBearer\s+)(?=[A-Za-z0-9._~+/=\-]*[0-9])[A-Za-z0-9._~+/=\-]{16,}"),
        keep_group=1,
    ),
    # An x-api-key header or assignment with a value, e.g. a dumped header list.
    Pattern(
        "x-api-key-value",
        re.compile(
            r"(?i)(\bx-api-key[\"']?\s*[:=]\s*[\"']?)(?=[A-Za-z0-9._~+/=\-]*[0-9])[A-Za-z0-9._~+/=\-]{16,}"
        ),
        keep_group=1,
    ),
)


#: Exact values to look for besides the patterns: {label: value} (the label is what a finding
#: shows) or just values.
Extra = Mapping[str, str] | Iterable[str] | None


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


def _extras(extra: Extra) -> list[tuple[str, str]]:
    """Normalise exact values to scan for into (label, value) pairs, dropping unusable ones."""
    if extra is None:
        return []
    if isinstance(extra, Mapping):
        pairs = [(str(label), value) for label, value in extra.items()]
    else:
        pairs = [(f"#{index + 1}", value) for index, value in enumerate(extra)]
    seen: set[str] = set()
    result: list[tuple[str, str]] = []
    for label, value in pairs:
        if not isinstance(value, str):
            continue
        value = value.strip()
        if len(value) < MIN_EXTRA_LENGTH or value in seen:
            continue
        seen.add(value)
        result.append((label, value))
    # Longest first: a value that contains another is redacted whole.
    return sorted(result, key=lambda pair: -len(pair[1]))


def scan_text(text: str, extra: Extra = None) -> dict[str, int]:
    """Kinds of secret in ``text`` -> number of matches. Empty means clean."""
    return _scan_text(text, _extras(extra))


def _scan_text(text: str, extras: list[tuple[str, str]]) -> dict[str, int]:
    # A secret is counted once, under the first (most specific) kind that covers it: an OAuth
    # token after "Bearer " is one sk-ant-oat01, not also a bearer-token and an sk-ant-other.
    counts: dict[str, int] = {}
    claimed: list[tuple[int, int]] = []

    def claim(name: str, start: int, end: int) -> None:
        if any(start < c_end and c_start < end for c_start, c_end in claimed):
            return
        claimed.append((start, end))
        counts[name] = counts.get(name, 0) + 1

    for label, value in extras:
        start = text.find(value)
        while start != -1:
            claim(f"lane key value ({label})", start, start + len(value))
            start = text.find(value, start + len(value))
    for pattern in PATTERNS:
        for match in pattern.regex.finditer(text):
            start = match.end(pattern.keep_group) if pattern.keep_group else match.start()
            claim(pattern.name, start, match.end())
    return counts


def redact_text(text: str, extra: Extra = None) -> str:
    """``text`` with every secret replaced by ``[REDACTED:<kind>]`` (exact values first)."""
    for label, value in _extras(extra):
        if value in text:
            text = text.replace(value, f"[REDACTED:lane-key:{label}]")
    for pattern in PATTERNS:
        if pattern.keep_group:
            text = pattern.regex.sub(
                lambda m, name=pattern.name, g=pattern.keep_group: m.group(g) + f"[REDACTED:{name}]",
                text,
            )
        else:
            text = pattern.regex.sub(f"[REDACTED:{pattern.name}]", text)
    return text


# --- files ----------------------------------------------------------------------------------------
_TAR_SUFFIXES = (".tgz", ".tar.gz", ".tar", ".tar.bz2", ".tar.xz", ".tbz2", ".txz")


def _is_tar_name(name: str) -> bool:
    return name.lower().endswith(_TAR_SUFFIXES)


def _scan_stream(stream: IO[bytes], label: str, extras: list[tuple[str, str]]) -> list[Finding]:
    findings: list[Finding] = []
    for number, raw in enumerate(stream, start=1):
        # latin-1 maps every byte to one character, so ASCII secrets match even in binary files.
        text = raw.decode("latin-1")
        for kind, hits in _scan_text(text, extras).items():
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


def scan_file(path: Path, extra: Extra = None, *, label: str | None = None) -> list[Finding]:
    """Scan one file (plain, .gz, or a tarball with its members). Unreadable = a finding."""
    return _scan_file(path, _extras(extra), label)


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
    extras = _extras(extra)
    findings: list[Finding] = []
    for file in iter_files(Path(path)):
        findings += _scan_file(file, extras)
    return findings


def scan_bytes(data: bytes, name: str, extra: Extra = None) -> list[Finding]:
    """Scan in-memory content as if it were a file called ``name`` (handy for tests and pipes)."""
    extras = _extras(extra)
    try:
        return _scan_member_bytes(io.BytesIO(data), name, name, extras, 0)
    except (OSError, EOFError, tarfile.TarError, zlib.error, gzip.BadGzipFile) as exc:
        return [Finding(name, f"unscannable ({type(exc).__name__})")]
