"""The usage reader under hostile bodies: decompression bounded per step and per response,
floods of lines bounded, and the bytes never touched."""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Callable

import pytest
from mitmproxy.net import encoding as mitmproxy_encoding

from ccmitm.core import sse
from ccmitm.core.sse import DECODE_STEP_BYTES, MAX_DECODED_BYTES, UsageReader, decode_bounded
from ccmitm.testing.fakeupstream import FakeUpstream, gzip_bomb

STREAM = b"".join(FakeUpstream("z").events("m"))


def deflate(data: bytes) -> bytes:
    return zlib.compress(data)


ENCODERS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress,
    "deflate": deflate,
    # mitmproxy's own encoders (it depends on Brotli and zstd), as an upstream would send them.
    "br": lambda data: mitmproxy_encoding.encode(data, "br"),
    "zstd": lambda data: mitmproxy_encoding.encode(data, "zstd"),
}


def read(data: bytes, encoding: str, content_type: str = "text/event-stream", step: int = 0) -> sse.Usage:
    reader = UsageReader(content_type, encoding)
    for start in range(0, len(data), step or len(data) or 1):
        reader.feed(data[start : start + (step or len(data))])
    return reader.close()


@pytest.mark.parametrize("encoding", sorted(ENCODERS))
@pytest.mark.parametrize("step", [0, 1, 7, 1000])
def test_every_encoding_is_read_whatever_the_chunking(encoding: str, step: int) -> None:
    usage = read(ENCODERS[encoding](STREAM), encoding, step=step)
    assert (usage.input_tokens, usage.output_tokens, usage.unread) == (11, 7, None)


@pytest.mark.parametrize("encoding", sorted(ENCODERS))
def test_decompression_steps_are_bounded(encoding: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # One small input chunk that expands 1000-fold comes out in pieces of at most one step.
    big = b"data: x\n\n" * (4 * 1024 * 1024 // 9)
    pieces: list[int] = []
    real = UsageReader._feed_decoded

    def spy(self: UsageReader, data: bytes) -> None:
        pieces.append(len(data))
        real(self, data)

    monkeypatch.setattr(UsageReader, "_feed_decoded", spy)
    reader = UsageReader("text/event-stream", encoding)
    reader.feed(ENCODERS[encoding](big))
    reader.close()
    assert sum(pieces) == len(big)
    assert len(pieces) > 1 and max(pieces) <= DECODE_STEP_BYTES


@pytest.mark.parametrize("encoding", sorted(ENCODERS))
def test_a_bomb_stops_reading_at_the_bound_and_says_so(
    encoding: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sse, "MAX_DECODED_BYTES", 1024 * 1024)
    start = {"type": "message_start", "message": {"model": "m", "usage": {"input_tokens": 5}}}
    end = {"type": "message_delta", "usage": {"output_tokens": 9}}
    body = (
        f"event: message_start\ndata: {json.dumps(start)}\n\n".encode()
        + b": filler\n" * (4 * 1024 * 1024 // 9)
        + f"event: message_delta\ndata: {json.dumps(end)}\n\n".encode()
    )
    usage = read(ENCODERS[encoding](body), encoding, step=4096)
    assert usage.input_tokens == 5  # read before the bound
    assert usage.output_tokens is None  # past it: not read
    assert usage.unread == "decoded body over 1048576 bytes"


def test_a_json_bomb_stops_at_the_json_bound() -> None:
    bomb = FakeUpstream("z").bomb("json", 16)
    usage = read(bomb, "gzip", content_type="application/json", step=65536)
    assert usage.input_tokens is None and usage.unread == f"decoded body over {8 * 1024 * 1024} bytes"
    small = FakeUpstream("z").bomb("json", 1)  # the same shape within the bound: read
    assert read(small, "gzip", content_type="application/json").output_tokens == 7


def test_the_bound_is_per_response_and_identity_is_not_bounded() -> None:
    assert MAX_DECODED_BYTES == 64 * 1024 * 1024
    # An identity body costs its sender every byte: no amplification, no total bound.
    flood = b"event: ping\ndata: {}\n\n" * (3 * 1024 * 1024 // 22)
    end = b'event: message_delta\ndata: {"type":"message_delta","usage":{"output_tokens":3}}\n\n'
    assert read(flood + end, "identity", step=65536).output_tokens == 3


def test_a_flood_of_blank_lines_is_passed_over() -> None:
    events = FakeUpstream("z").events("m")
    body = events[0] + b"\n" * (2 * 1024 * 1024) + b"\r\n" * 1000 + b"".join(events[1:])
    for encoding in ("gzip", "identity"):
        encoded = gzip.compress(body) if encoding == "gzip" else body
        usage = read(encoded, encoding, step=65536)
        assert (usage.input_tokens, usage.output_tokens, usage.unread) == (11, 7, None)
        assert usage.events == len(events)


def test_the_lines_of_an_oversized_event_are_passed_over() -> None:
    huge = b"event: message_start\n" + b"data: x\n" * (300 * 1024 // 8) + b"\n"
    usage = read(huge + STREAM, "identity", step=8192)
    assert (usage.input_tokens, usage.output_tokens) == (11, 7)


def test_parsed_lines_per_stream_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sse, "_MAX_SSE_LINES", 1000)
    usage = read(b"data: x\n\n" * 600 + STREAM, "identity", step=512)
    assert usage.output_tokens is None and usage.unread == "stream over 1000 lines"
    assert read(STREAM, "identity").output_tokens == 7  # a real stream parses a few lines only


def test_decode_bounded() -> None:
    for encoding, encode in ENCODERS.items():
        assert decode_bounded(encode(STREAM), encoding, len(STREAM)) == STREAM
        assert decode_bounded(encode(STREAM), encoding, len(STREAM) - 1) is None
    assert decode_bounded(b"abc", None, 3) == b"abc" and decode_bounded(b"abc", None, 2) is None
    assert decode_bounded(b"abc", "compress", 100) is None  # unknown: nothing read
    assert decode_bounded(b"not gzip", "gzip", 100) is None  # corrupt: nothing read


def test_gzip_bomb_helper_is_valid_gzip() -> None:
    body = gzip_bomb(b"<", b"ab", 2, b">")
    data = gzip.decompress(body)
    assert data == b"<" + b"ab" * (2 * 1024 * 1024 // 2) + b">"
    assert len(body) < 5000
