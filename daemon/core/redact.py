"""The one redactor: find and scrub credentials in text (patterns, plus exact known values).

Everything ccmitm writes that could carry a secret passes through :func:`redact_text`: the usage
record's text fields, the daemon log, bundles, reports and endurance evidence. Scanning files for
what slipped through is :mod:`ccmitm.reports.secretscan`'s job; both use the same patterns.

The patterns aim at credentials Claude Code and the lanes actually use; exact known values (the
configured lane keys, the credentials a request carried) are scanned for as well, because a key in
an unexpected format, or glued to letters (``haikubad<key>``), slips past any pattern.

Text is also looked at the way a reader would decode it: percent-escapes of token characters
decoded (``sk%2Dant%2D...``), control and invisible characters dropped (``sk-ant-\x00api03...``,
or its JSON escape ``\u0000``). When only that decoded view holds a secret, the decoded view is
what comes back, redacted: such text was hiding something, and its original form is not kept.
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

# --- the decoded view -------------------------------------------------------------------------------
# Percent-escapes of characters a token can contain (and of space and controls), decoded. Only
# those: "%22" stays "%22", so a JSON line decoded this way is still valid JSON.
_PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")
_TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/= :%")
# Control characters, zero-width and bidi marks, soft hyphen, BOM: invisible in a log, and what
# splits a key so no pattern sees it whole. Their JSON escapes (\u0000, \n) too, as a JSON log
# has them; not after a backslash, which would make the escape an escaped backslash.
_INVISIBLE = (
    r"[\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]"
    r"|(?<!\\)\\(?:u00[01][0-9A-Fa-f]|u007[Ff]|u00[89][0-9A-Fa-f]|u00[Aa][Dd]"
    r"|u200[B-Fb-f]|u202[A-Ea-e]|u206[0-4]|u[Ff][Ee][Ff][Ff]|[nrt])"
)
_INVISIBLE_RE = re.compile(_INVISIBLE)
_MAX_UNQUOTE_ROUNDS = 3  # "%252D" is "%2D" after one round, "-" after two


def _decode_percent(match: re.Match[str]) -> str:
    char = chr(int(match.group(1), 16))
    if char in _TOKEN_CHARS or char < " " or char == "\x7f":
        return char
    return match.group(0)


def decoded_view(text: str) -> str | None:
    """``text`` as a reader would see it (see the module doc), or None when that is ``text`` itself.

    Cheap for ordinary text: a printable string without "%" or "\\" is returned as None at C speed."""
    if text.isprintable() and "%" not in text and "\\" not in text:
        return None
    view = text
    for _ in range(_MAX_UNQUOTE_ROUNDS):
        decoded = _PERCENT.sub(_decode_percent, view) if "%" in view else view
        decoded = _INVISIBLE_RE.sub("", decoded)
        if decoded == view:
            break
        view = decoded
    return None if view == text else view


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
    """:func:`scan_text` with prepared exact values; the decoded view is scanned too."""
    counts = _scan_plain(text, extras)
    view = decoded_view(text)
    if view is not None:
        # Per kind the larger count: a key that is plain in both views is one finding, not two.
        for kind, hits in _scan_plain(view, extras).items():
            counts[kind] = max(hits, counts.get(kind, 0))
    return counts


def _scan_plain(text: str, extras: list[tuple[str, str]]) -> dict[str, int]:
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
    """``text`` with every secret replaced by ``[REDACTED:<kind>]`` (exact values first).

    ``extra`` are exact values to remove besides the patterns: a mapping {label: value} marks them
    ``[REDACTED:lane-key:<label>]``, plain values ``[REDACTED:known-secret]``. If a secret shows
    only in the decoded view (percent-escaped, split by a control character), the redacted decoded
    view is returned."""
    markers = _markers(extra)
    redacted = _redact_plain(text, markers)
    view = decoded_view(text)
    if view is None:
        return redacted
    decoded = _redact_plain(view, markers)
    # Redacting the plain text must leave nothing that redacting the decoded view removes (a key
    # split by a NUL after its first 8 characters would otherwise keep its tail): if it does, the
    # text was hiding something, and only its decoded, redacted form is kept.
    if (decoded_view(redacted) or redacted) != decoded:
        return decoded
    return redacted


def _markers(extra: Extra) -> list[tuple[str, str]]:
    """(value, marker) pairs, longest value first."""
    labelled = isinstance(extra, Mapping)
    return [
        (value, f"[REDACTED:lane-key:{label}]" if labelled else "[REDACTED:known-secret]")
        for label, value in exact_values(extra)
    ]


def _redact_plain(text: str, markers: list[tuple[str, str]]) -> str:
    for value, marker in markers:
        if value in text:
            text = text.replace(value, marker)
    for pattern in PATTERNS:
        if pattern.keep_group:
            text = pattern.regex.sub(_keeping_prefix(pattern), text)
        else:
            text = pattern.regex.sub(f"[REDACTED:{pattern.name}]", text)
    return text
