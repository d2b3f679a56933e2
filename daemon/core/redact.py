"""The one redactor: find and scrub credentials in text (patterns, plus exact known values).

Everything ccmitm writes that could carry a secret passes through :func:`redact_text`: the usage
record's text fields, the daemon log, bundles, reports and endurance evidence. Scanning files for
what slipped through is :mod:`ccmitm.reports.secretscan`'s job; both use the same patterns.

The patterns aim at credentials Claude Code and the lanes actually use; the exact values of the
configured lane keys are scanned for as well, because a key in an unexpected format would slip past
any pattern.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

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


def exact_values(extra: Extra) -> list[tuple[str, str]]:
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
    return scan_text_with(text, exact_values(extra))


def scan_text_with(text: str, extras: list[tuple[str, str]]) -> dict[str, int]:
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


def _keeping_prefix(pattern: Pattern) -> Callable[[re.Match[str]], str]:
    """The replacement for a pattern that keeps its prefix group (``Bearer ``, ``x-api-key: ``)."""
    marker = f"[REDACTED:{pattern.name}]"
    return lambda match: match.group(pattern.keep_group) + marker


def redact_text(text: str, extra: Extra = None) -> str:
    """``text`` with every secret replaced by ``[REDACTED:<kind>]`` (exact values first)."""
    for label, value in exact_values(extra):
        if value in text:
            text = text.replace(value, f"[REDACTED:lane-key:{label}]")
    for pattern in PATTERNS:
        if pattern.keep_group:
            text = pattern.regex.sub(_keeping_prefix(pattern), text)
        else:
            text = pattern.regex.sub(f"[REDACTED:{pattern.name}]", text)
    return text
