"""The one redactor: exact known values (glued to anything), and the decoded view of a text
(percent-escapes, control characters, their JSON escapes) besides the patterns."""

from __future__ import annotations

import json

import pytest

from ccmitm.core.redact import decoded_view, redact_text, scan_text
from ccmitm.logs.usage import clean_text
from tests.helpers import CLIENT_API_KEY, CLIENT_OAUTH_TOKEN, ZAI_KEY

ODD_KEY = "oddClientKeyWithoutAnyShape_0042xyz"
KNOWN = frozenset({ZAI_KEY, ODD_KEY})


def leaks(text: str) -> list[str]:
    """The planted secrets still readable in ``text``, decoded or not."""
    views = [text, decoded_view(text) or text]
    return [s for s in (CLIENT_API_KEY, CLIENT_OAUTH_TOKEN, ZAI_KEY, ODD_KEY) if any(s in v for v in views)]


@pytest.mark.parametrize(
    "text",
    [
        "haikubad" + ZAI_KEY,  # glued to letters: the Z.AI pattern needs a boundary before it
        "upstream error event: bad" + ZAI_KEY + "x",
        "bad" + ODD_KEY,  # no pattern at all
        "prefix" + ODD_KEY + ZAI_KEY,
    ],
)
def test_known_values_are_removed_wherever_they_sit(text: str) -> None:
    redacted = redact_text(text, KNOWN)
    assert leaks(redacted) == []
    assert "[REDACTED:known-secret]" in redacted
    assert scan_text(text, KNOWN) and scan_text(redacted, KNOWN) == {}


def test_labelled_values_keep_their_label() -> None:
    assert redact_text("x" + ZAI_KEY, {"zai": ZAI_KEY}) == "x[REDACTED:lane-key:zai]"


def test_short_values_are_not_scanned_for() -> None:
    # A 3-character "secret" would match everywhere; every real credential is far longer.
    assert redact_text("abc and abcdefg", {"abc", "abcdefg"}) == "abc and abcdefg"


@pytest.mark.parametrize(
    "text",
    [
        "/v1/messages?x=" + CLIENT_API_KEY.replace("-", "%2D"),
        "/v1/messages?x=" + CLIENT_API_KEY.replace("-", "%252D"),  # encoded twice
        CLIENT_API_KEY[:7] + "\x00" + CLIENT_API_KEY[7:],  # "sk-ant-\x00api03..."
        CLIENT_API_KEY[:20] + "\x00" + CLIENT_API_KEY[20:],  # the pattern sees the head only
        CLIENT_API_KEY[:7] + "\u200b" + CLIENT_API_KEY[7:],  # a zero-width space
        json.dumps({"model": CLIENT_API_KEY[:7] + "\x00" + CLIENT_API_KEY[7:]}),  # as \u0000
        "Bearer%20" + CLIENT_OAUTH_TOKEN.replace("-", "%2d"),
        "bad" + ZAI_KEY.replace(".", "%2E"),
    ],
)
def test_encoded_secrets_are_found_and_removed(text: str) -> None:
    assert any(secret not in text for secret in (CLIENT_API_KEY, CLIENT_OAUTH_TOKEN, ZAI_KEY))
    assert scan_text(text, KNOWN) != {}
    redacted = redact_text(text, KNOWN)
    assert leaks(redacted) == [], redacted
    assert "[REDACTED:" in redacted


def test_a_redacted_json_line_stays_json() -> None:
    line = json.dumps({"path": "/v1/x?q=%22quoted%22&k=" + CLIENT_API_KEY.replace("-", "%2D"), "n": "a\nb"})
    redacted = redact_text(line)
    assert leaks(redacted) == []
    assert json.loads(redacted)["path"].startswith("/v1/x?q=%22quoted%22&k=[REDACTED:")


@pytest.mark.parametrize(
    "text",
    [
        "plain 100% text",
        "GET /v1/messages?beta=true",
        "a path with %2F and %20 in it",
        "Traceback (most recent call last):\n  File x\n",
        "C:\\new\\dir",
        json.dumps({"model": "claude-haiku-4-5", "error": "line1\nline2"}),
    ],
)
def test_text_without_secrets_is_left_alone(text: str) -> None:
    assert redact_text(text, KNOWN) == text
    assert scan_text(text, KNOWN) == {}


def test_a_plain_secret_in_multiline_text_keeps_the_lines() -> None:
    # Only text hiding a secret comes back decoded; a plain one is replaced in place.
    text = f"Traceback:\n  key {CLIENT_API_KEY}\n  at 100%"
    assert redact_text(text) == "Traceback:\n  key [REDACTED:sk-ant-api03]\n  at 100%"


def test_clean_text_removes_known_values_and_nul_split_keys() -> None:
    assert clean_text("haikubad" + ZAI_KEY, known=KNOWN) == "haikubad[REDACTED:known-secret]"
    # Before the control characters become spaces, or "sk-ant- api03-..." would be written.
    split = CLIENT_API_KEY[:7] + "\x00" + CLIENT_API_KEY[7:]
    assert clean_text(split) == "[REDACTED:sk-ant-api03]"
    assert clean_text("a\x00b\nc") == "a b c"  # no secret: control characters become spaces
    # The cache keys on the known values too: another request's credentials are its own.
    assert clean_text("bad" + ODD_KEY, known=frozenset()) == "bad" + ODD_KEY
    assert clean_text("bad" + ODD_KEY, known=KNOWN) == "bad[REDACTED:known-secret]"
    long_text = "x" * 300 + ODD_KEY  # longer than what is cached
    assert ODD_KEY not in (clean_text(long_text, 1000, KNOWN) or "")
