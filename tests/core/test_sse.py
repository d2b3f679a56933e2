"""The usage reader: usage and thinking signatures from SSE and JSON bodies, whatever the chunking."""

from __future__ import annotations

import gzip
import json
import zlib
from typing import Any

import pytest

from ccmitm.core import sse
from ccmitm.core.sse import Usage, UsageReader
from ccmitm.testing.fakeupstream import FakeUpstream

SIG_A = "EqQBCkYIBxgCKkBn" + "A" * 200
SIG_B = "ErUBCkYIBxgCKkDx" + "B" * 150


def sse_bytes(events: list[dict[str, Any]], named: bool = True) -> bytes:
    out = b""
    for event in events:
        head = f"event: {event['type']}\n" if named else ""
        out += f"{head}data: {json.dumps(event)}\n\n".encode()
    return out


def read(
    data: bytes, content_type: str = "text/event-stream", encoding: str | None = None, step: int = 0
) -> Usage:
    reader = UsageReader(content_type, encoding)
    if step:
        for start in range(0, len(data), step):
            reader.feed(data[start : start + step])
    else:
        reader.feed(data)
    return reader.close()


def thinking_events(signature_parts: list[str], start_signature: str = "") -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": {"model": "claude-haiku-4-5", "usage": {"input_tokens": 20}}},
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "thinking", "thinking": "", "signature": start_signature},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "thinking_delta", "thinking": "Let me"},
        },
    ]
    events += [
        {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": part}}
        for part in signature_parts
    ]
    events += [
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "thinking done"}},
        {"type": "content_block_stop", "index": 1},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 30}},
        {"type": "message_stop"},
    ]
    return events


# --- usage (the behaviour the addon already relies on) -------------------------------------------
def test_fake_upstream_stream_usage() -> None:
    fake = FakeUpstream("zai")
    data = b"".join(fake.events("glm-4.5-air"))
    for step in (0, 1, 7, 64):
        usage = read(data, step=step)
        assert usage.as_fields() == {
            "input_tokens": 11,
            "output_tokens": 7,
            "cache_read_input_tokens": 3,
            "cache_creation_input_tokens": 0,
        }
        assert usage.model == "glm-4.5-air"
        assert usage.stop_reason == "end_turn"
        assert usage.events == 10
        assert usage.signatures == [] and usage.thinking_blocks == 0


def test_json_usage_and_error() -> None:
    fake = FakeUpstream("anthropic")
    body = json.dumps(fake._message("claude-haiku-4-5")).encode()
    usage = read(body, "application/json", step=5)
    assert (usage.input_tokens, usage.output_tokens, usage.model) == (11, 7, "claude-haiku-4-5")
    error = json.dumps({"type": "error", "error": {"type": "rate_limit_error", "message": "x"}}).encode()
    assert read(error, "application/json").error_type == "rate_limit_error"


def test_in_stream_error_event() -> None:
    data = b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"busy"}}\n\n'
    assert read(data).error_type == "overloaded_error"


def test_encodings() -> None:
    data = b"".join(FakeUpstream("z").events("m"))
    deflate = zlib.compressobj()
    for encoding, encoded in (
        ("gzip", gzip.compress(data)),
        ("deflate", deflate.compress(data) + deflate.flush()),
        ("identity", data),
    ):
        assert read(encoded, encoding=encoding, step=3).output_tokens == 7
    assert read(data, encoding="compress").input_tokens is None  # unknown: read nothing, never fail


# --- thinking signatures ------------------------------------------------------------------------------
@pytest.mark.parametrize("step", [0, 1, 5, 37])
def test_signature_from_signature_delta(step: int) -> None:
    usage = read(sse_bytes(thinking_events([SIG_A])), step=step)
    assert usage.thinking_blocks == 1
    assert usage.signatures == [SIG_A]
    assert usage.output_tokens == 30  # usage is still read


def test_signature_split_over_deltas_is_joined() -> None:
    usage = read(sse_bytes(thinking_events([SIG_A[:50], SIG_A[50:120], SIG_A[120:]])))
    assert usage.signatures == [SIG_A]


def test_signature_in_the_start_event() -> None:
    assert read(sse_bytes(thinking_events([], start_signature=SIG_B))).signatures == [SIG_B]
    # Deltas win over a start-event signature.
    assert read(sse_bytes(thinking_events([SIG_A], start_signature=SIG_B))).signatures == [SIG_A]


def test_unsigned_thinking_is_counted_but_has_no_signature() -> None:
    usage = read(sse_bytes(thinking_events([])))
    assert usage.thinking_blocks == 1 and usage.signatures == []


def test_redacted_thinking_data_counts_as_signature() -> None:
    events = [
        {"type": "message_start", "message": {"usage": {"input_tokens": 1}}},
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "redacted_thinking", "data": SIG_B},
        },
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "thinking", "thinking": ""}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "signature_delta", "signature": SIG_A}},
        {"type": "content_block_stop", "index": 1},
        {"type": "message_stop"},
    ]
    usage = read(sse_bytes(events))
    assert usage.thinking_blocks == 2
    assert usage.signatures == [SIG_B, SIG_A]


def test_stream_cut_before_block_stop_still_reports_the_signature() -> None:
    data = sse_bytes(thinking_events([SIG_A])[:4])  # ends after the signature delta
    assert read(data).signatures == [SIG_A]


def test_unnamed_events_are_read_too() -> None:
    usage = read(sse_bytes(thinking_events([SIG_A]), named=False), step=9)
    assert usage.signatures == [SIG_A] and usage.output_tokens == 30


def test_crlf_line_endings() -> None:
    data = sse_bytes(thinking_events([SIG_A])).replace(b"\n", b"\r\n")
    usage = read(data, step=2)
    assert usage.signatures == [SIG_A] and usage.input_tokens == 20


def test_text_deltas_are_not_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hot path: only events that can carry usage or a signature reach json.loads."""
    parsed: list[bytes] = []
    real_loads = sse.json.loads

    def counting_loads(data: Any, *args: Any, **kwargs: Any) -> Any:
        parsed.append(data)
        return real_loads(data, *args, **kwargs)

    monkeypatch.setattr(sse.json, "loads", counting_loads)
    events = thinking_events([SIG_A])
    text_delta = {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "w"}}
    events[7:7] = [text_delta] * 50
    usage = read(sse_bytes(events))
    assert usage.signatures == [SIG_A]
    kinds = [real_loads(data)["type"] for data in parsed]
    assert "content_block_delta" in kinds  # the signature delta
    assert kinds.count("content_block_delta") == 1
    assert kinds.count("content_block_start") == 1  # the thinking block's, not the text block's
    assert len(parsed) <= 6


def test_json_body_signatures() -> None:
    body = {
        "type": "message",
        "model": "glm-4.5-air",
        "content": [
            {"type": "thinking", "thinking": "hm", "signature": SIG_A},
            {"type": "redacted_thinking", "data": SIG_B},
            {"type": "thinking", "thinking": "unsigned", "signature": ""},
            {"type": "text", "text": "answer", "signature": "not-a-thinking-block"},
        ],
        "usage": {"input_tokens": 3, "output_tokens": 4},
    }
    usage = read(json.dumps(body).encode(), "application/json", step=11)
    assert usage.thinking_blocks == 3
    assert usage.signatures == [SIG_A, SIG_B]
    assert usage.output_tokens == 4


def test_signatures_are_not_in_the_repr() -> None:
    usage = read(sse_bytes(thinking_events([SIG_A])))
    assert SIG_A not in repr(usage)


def test_signature_count_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sse, "_MAX_SIGNATURES", 3)
    events = [
        {
            "type": "content_block_start",
            "index": i,
            "content_block": {"type": "thinking", "signature": f"s{i}"},
        }
        for i in range(10)
    ]
    usage = read(sse_bytes(events))
    assert usage.signatures == ["s0", "s1", "s2"]
    assert usage.signatures_truncated
    assert usage.thinking_blocks == 10


def test_pending_signatures_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sse, "_MAX_SIGNATURES", 3)
    deltas = [
        {
            "type": "content_block_delta",
            "index": i,
            "delta": {"type": "signature_delta", "signature": f"p{i}"},
        }
        for i in range(10)
    ]
    reader = UsageReader("text/event-stream")
    reader.feed(sse_bytes(deltas))
    assert len(reader._pending_signatures) == 3
    usage = reader.close()
    assert usage.signatures == ["p0", "p1", "p2"] and usage.signatures_truncated


def test_signature_size_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sse, "_MAX_SIGNATURE_CHARS", 1000)
    delta = {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "signature_delta", "signature": "x" * 300},
    }
    usage = read(sse_bytes([*thinking_events([])[:2], *([delta] * 10)]))
    assert usage.signatures_truncated
    assert usage.signatures == ["x" * 900]


@pytest.mark.parametrize(
    "data",
    [
        b"event: content_block_start\ndata: {not json thinking\n\n",
        b'event: content_block_start\ndata: {"type":"content_block_start","content_block":"thinking"}\n\n',
        b'event: content_block_start\ndata: {"type":"content_block_start","index":true,'
        b'"content_block":{"type":"thinking","signature":"s"}}\n\n',
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":"0",'
        b'"delta":{"type":"signature_delta","signature":"s"}}\n\n',
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"signature_delta","signature":["s"]}}\n\n',
        b'event: content_block_stop\ndata: {"type":"content_block_stop","index":null}\n\n',
        b"data: [1, 2, 3]\n\n",
        b"\xff\xfe\x00garbage\n\n\n",
    ],
)
def test_odd_events_never_raise(data: bytes) -> None:
    usage = read(data, step=3)
    assert isinstance(usage.signatures, list)


def test_start_without_index_keeps_its_signature() -> None:
    event = {"type": "content_block_start", "content_block": {"type": "thinking", "signature": "lonely"}}
    assert read(sse_bytes([event])).signatures == ["lonely"]
