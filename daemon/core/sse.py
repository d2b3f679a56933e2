"""Read token usage out of an Anthropic response as its bytes pass by, whatever the chunking.

The reader never changes or holds back the bytes: callers forward each chunk unchanged and feed a
copy here. It understands both a Server-Sent Events stream (``message_start`` / ``message_delta``
/ ``error`` events) and a plain JSON Messages response, optionally content-encoded.

It also collects the signatures of the thinking blocks in the response (``Usage.signatures``):
the daemon remembers those an offload lane produced, so that a conversation moved to Anthropic
later can have exactly those blocks removed (see :mod:`ccmitm.core.crosslane`). In a stream a
signature arrives in ``content_block_start`` (``content_block.signature``, or ``data`` for a
``redacted_thinking`` block) and/or in ``signature_delta`` deltas, which are joined per block.

Cost: it runs on the event loop for every chunk, so only the few events that can matter are
JSON-parsed; text deltas are passed over after a substring test on their raw bytes.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeGuard

USAGE_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
)

_INTERESTING_EVENTS = frozenset(
    {
        "message_start",
        "message_delta",
        "error",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
    }
)
_THINKING_TYPES = frozenset({"thinking", "redacted_thinking"})
_TEXT_DELTA_START = b"event: content_block_delta\n"
_MAX_EVENT_BYTES = 256 * 1024  # usage events are small; a huge event is content, not usage
_MAX_JSON_BYTES = 8 * 1024 * 1024  # a non-streamed reply larger than this is not parsed for usage
# Lines parsed one by one per stream, at most (text deltas and blank lines between events are
# passed over in C and do not count): a bound on the event loop's time for one response (a
# second or two for a flood of tiny events). A real stream parses a few dozen lines this way (a
# CRLF or unnamed one: three per event, and 128k output tokens are far fewer events than this).
_MAX_SSE_LINES = 500_000
_IDLE_LINES = re.compile(rb"[\r\n]+")  # blank lines (comments are parsed, and counted)
_EVENT_LINES = re.compile(rb"(?:[^\r\n][^\n]*\n)+")  # non-blank lines (an event's own)
# Bounds on what a single response may make us keep for signatures (a hostile stream could send
# endless signature deltas): beyond them collection stops and ``signatures_truncated`` is set.
_MAX_SIGNATURES = 256
_MAX_SIGNATURE_CHARS = 1024 * 1024  # over all signatures of one response, pending ones included


@dataclass
class Usage:
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    model: str | None = None  # the model the upstream says answered
    stop_reason: str | None = None
    error_type: str | None = None  # an in-stream or JSON error's type
    events: int = 0  # complete SSE events seen
    thinking_blocks: int = 0  # thinking / redacted_thinking blocks seen
    # Each thinking block's signature (a redacted_thinking block's ``data``), in block order; empty
    # ones are left out. Opaque tokens, not secrets, but bodies' content: never log them.
    signatures: list[str] = field(default_factory=list, repr=False)
    signatures_truncated: bool = False  # a bound was hit; some signatures were not kept
    # Why usage reading stopped part-way (a compressed body that decodes to more than a bound),
    # for the usage line; None when the body was read to its end (or could not be read at all).
    unread: str | None = None

    def merge(self, usage: Any) -> None:
        if not isinstance(usage, dict):
            return
        for name in USAGE_FIELDS:
            value = usage.get(name)
            # message_delta carries cumulative counts; a later value replaces an earlier one.
            if isinstance(value, int) and not isinstance(value, bool):
                setattr(self, name, value)

    def as_fields(self) -> dict[str, int | None]:
        return {name: getattr(self, name) for name in USAGE_FIELDS}


# --- content decoding, bounded ------------------------------------------------------------------
#: At most this many decoded bytes are read from one response; beyond it, usage reading stops
#: (the bytes still pass through untouched) and ``Usage.unread`` says why. A compressed reply can
#: expand a thousandfold (a 1 MB gzip body to 1 GB): without a bound that is the daemon's memory,
#: and the event loop every other client waits on.
MAX_DECODED_BYTES = 64 * 1024 * 1024
#: Bytes out per decompression step: memory per step is this plus the input chunk, whatever the
#: compression ratio.
DECODE_STEP_BYTES = 256 * 1024

# A decoder turns one input chunk into output pieces of at most DECODE_STEP_BYTES, on demand.
Decoder = Callable[[bytes], Iterator[bytes]]


def _zlib_decoder(wbits: int) -> Decoder:
    inflater = zlib.decompressobj(wbits)

    def pieces(data: bytes) -> Iterator[bytes]:
        # max_length bounds each step's output; what it did not consume waits in
        # unconsumed_tail (never more than this chunk) and is fed again.
        while data and not inflater.eof:
            out = inflater.decompress(data, DECODE_STEP_BYTES)
            tail = inflater.unconsumed_tail
            if out:
                yield out
            elif len(tail) >= len(data):  # no progress (cannot happen with valid input): stop
                return
            data = tail

    return pieces


def _brotli_decoder() -> Decoder | None:
    try:
        import brotli
    except ImportError:  # pragma: no cover - mitmproxy depends on Brotli
        return None
    decompressor = brotli.Decompressor()
    # The output buffer stops growing once it reaches the limit, so a piece can be up to about
    # twice it: half a step keeps pieces within a step.
    limit = DECODE_STEP_BYTES // 2
    try:  # output_buffer_limit came with Brotli 1.2: without it the output cannot be bounded
        decompressor.process(b"", output_buffer_limit=limit)
    except TypeError:  # pragma: no cover - depends on the installed Brotli
        return None

    def pieces(data: bytes) -> Iterator[bytes]:
        out = decompressor.process(data, output_buffer_limit=limit)
        # It keeps the input it could not turn into output yet: drain it with empty input until
        # a call yields nothing (and it is ready for input again).
        while out or not decompressor.can_accept_more_data():
            if out:
                yield out
            if decompressor.is_finished():
                return
            previous, out = out, decompressor.process(b"", output_buffer_limit=limit)
            if not out and not previous:  # no progress either way: stop rather than spin
                return

    return pieces


def _zstd_decoder() -> Decoder | None:
    try:
        from compression import zstd  # type: ignore[import-not-found]
    except ImportError:
        try:
            from backports import zstd  # type: ignore[import-not-found,no-redef]
        except ImportError:
            return None
    decompressor = zstd.ZstdDecompressor()

    def pieces(data: bytes) -> Iterator[bytes]:
        # Like zlib: max_length bounds a step; needs_input is False while output is held back.
        out = decompressor.decompress(data, DECODE_STEP_BYTES)
        while True:
            if out:
                yield out
            if decompressor.eof or decompressor.needs_input:
                return
            out = decompressor.decompress(b"", DECODE_STEP_BYTES)

    return pieces


def _identity(data: bytes) -> Iterator[bytes]:
    yield data


def _decoder_for(content_encoding: str | None) -> Decoder | None:
    """A bounded incremental decoder for the response's content-encoding; None if it is unknown
    (or cannot be bounded: then the body is passed through and not read)."""
    encoding = (content_encoding or "identity").strip().lower()
    if encoding in ("", "identity"):
        return _identity
    if encoding in ("gzip", "x-gzip"):
        return _zlib_decoder(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return _zlib_decoder(zlib.MAX_WBITS)
    if encoding == "br":
        return _brotli_decoder()
    if encoding == "zstd":
        return _zstd_decoder()
    return None


def decode_bounded(data: bytes, content_encoding: str | None, limit: int) -> bytes | None:
    """A whole body decoded, or None when its encoding is unknown or it decodes to more than
    ``limit`` bytes (never holding more than about ``limit`` bytes while finding out)."""
    decoder = _decoder_for(content_encoding)
    if decoder is None:
        return None
    if decoder is _identity:
        return data if len(data) <= limit else None
    out: list[bytes] = []
    size = 0
    try:
        for piece in decoder(data):
            size += len(piece)
            if size > limit:
                return None
            out.append(piece)
    except Exception:  # corrupt data: nothing to read
        return None
    return b"".join(out)


def is_event_stream(content_type: str | None) -> bool:
    """Whether a Content-Type names an SSE stream (parameters, case and spaces aside)."""
    return (content_type or "").split(";")[0].strip().lower() == "text/event-stream"


class UsageReader:
    """Feed it response body chunks as they pass; read ``usage`` at any time."""

    def __init__(self, content_type: str | None, content_encoding: str | None = None):
        self.usage = Usage()
        self.is_sse = is_event_stream(content_type)
        self._decode = _decoder_for(content_encoding)
        self._broken = self._decode is None  # unknown encoding: pass bytes, read nothing
        # Decoded bytes allowed: a JSON body beyond _MAX_JSON_BYTES is not parsed anyway, so it
        # is not decoded further either. An identity body is not bounded: it costs its sender
        # every byte, there is no amplification to guard against.
        self._encoded = self._decode is not None and self._decode is not _identity
        self._decode_limit = MAX_DECODED_BYTES if self.is_sse else _MAX_JSON_BYTES
        self._decoded = 0
        self._lines = 0  # SSE lines parsed one by one (see _MAX_SSE_LINES)
        self._line_buffer = b""
        self._event_name: str | None = None
        self._event_data: list[bytes] = []
        self._event_size = 0
        self._json_body: list[bytes] = []
        self._json_size = 0
        # Signatures of thinking blocks still streaming: block index -> parts seen so far. A
        # content_block_start signature is the fallback when no signature_delta follows.
        self._pending_signatures: dict[int, list[str]] = {}
        self._start_signatures: dict[int, str] = {}
        self._signature_chars = 0

    def feed(self, chunk: bytes) -> None:
        if self._broken or not chunk:
            return
        try:
            if not self._encoded:
                self._feed_decoded(chunk)
                return
            assert self._decode is not None
            for piece in self._decode(chunk):
                self._decoded += len(piece)
                if self._decoded > self._decode_limit:
                    self._give_up(f"decoded body over {self._decode_limit} bytes")
                    return
                self._feed_decoded(piece)
        except Exception:  # a reader bug or corrupt encoding must never touch the stream
            self._broken = True

    def _feed_decoded(self, data: bytes) -> None:
        if self.is_sse:
            self._feed_sse(data)
        else:
            self._feed_json(data)

    def _give_up(self, why: str) -> None:
        """Stop reading this body (and free what was kept of it); usage stays what was seen."""
        self._broken = True
        self.usage.unread = why
        self._line_buffer = b""
        self._event_data = []
        self._json_body = []

    def close(self) -> Usage:
        """End of body: dispatch what is pending and return the usage."""
        if not self._broken:
            try:
                if self.is_sse:
                    if self._line_buffer:
                        self._line(self._line_buffer)
                        self._line_buffer = b""
                    self._dispatch()
                    for index in sorted(self._pending_signatures.keys() | self._start_signatures.keys()):
                        self._finish_signature(index)
                else:
                    self._parse_json_body()
            except Exception:
                self._broken = True
        return self.usage

    # --- SSE -------------------------------------------------------------------------------
    def _feed_sse(self, data: bytes) -> None:
        buffer = self._line_buffer + data if self._line_buffer else data
        start = 0
        while True:
            if self._event_name is None and not self._event_data and not self._event_size:
                skipped = self._skip_text_delta(buffer, start)
                if skipped:
                    start = skipped
                    continue
                # Blank lines between events change nothing: passed over in C, so a flood of them
                # (a hostile or broken stream) costs no Python work per line.
                junk = _IDLE_LINES.match(buffer, start)
                if junk and junk.end() > start:
                    start = junk.end()
                    continue
            elif self._event_size > _MAX_EVENT_BYTES:
                # An event already too large to be read: its remaining lines too, up to the blank one.
                own = _EVENT_LINES.match(buffer, start)
                if own and own.end() > start:
                    start = own.end()
                    continue
            end = buffer.find(b"\n", start)
            if end < 0:
                break
            self._lines += 1
            if self._lines > _MAX_SSE_LINES:
                self._give_up(f"stream over {_MAX_SSE_LINES} lines")
                return
            self._line(buffer[start:end])
            start = end + 1
        rest = buffer[start:]
        if len(rest) > _MAX_EVENT_BYTES:  # an endless line: not an event we read
            rest = b""
            self._event_data.clear()
            self._event_size = _MAX_EVENT_BYTES + 1
        self._line_buffer = rest

    def _skip_text_delta(self, buffer: bytes, start: int) -> int:
        """The bulk of every stream, passed over whole: a complete ``content_block_delta`` event at
        ``start`` that the line parser would count and then ignore (no signature, no second
        ``event:`` line, no CR to normalise). Returns where the next event starts, or 0."""
        if not buffer.startswith(_TEXT_DELTA_START, start):
            return 0
        end = buffer.find(b"\n\n", start)
        if (
            end < 0
            or end - start > _MAX_EVENT_BYTES
            or buffer.find(b"signature_delta", start, end) >= 0
            or buffer.find(b"\r", start, end) >= 0
            or buffer.find(b"\nevent:", start, end) >= 0
        ):
            return 0
        self.usage.events += 1
        return end + 2

    def _line(self, line: bytes) -> None:
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line:
            self._dispatch()
            return
        if line.startswith(b":"):
            return  # comment / keep-alive
        name, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if name == b"event":
            self._event_name = value.decode("utf-8", "replace")
        elif name == b"data":
            self._event_size += len(value) + 1
            if self._event_size <= _MAX_EVENT_BYTES:
                self._event_data.append(value)

    def _dispatch(self) -> None:
        name, data, size = self._event_name, self._event_data, self._event_size
        self._event_name, self._event_data, self._event_size = None, [], 0
        if not data and name is None:
            return
        self.usage.events += 1
        if size > _MAX_EVENT_BYTES or (name is not None and name not in _INTERESTING_EVENTS):
            return
        payload = data[0] if len(data) == 1 else b"\n".join(data)
        if name == "content_block_delta":
            # The bulk of every stream: decided inline, without a call, as cheaply as possible.
            if b"signature_delta" not in payload:
                return
        elif not self._worth_parsing(name, payload):
            return
        try:
            event = json.loads(payload)
        except ValueError:
            return
        if isinstance(event, dict):
            self._event(event)

    def _worth_parsing(self, name: str | None, payload: bytes) -> bool:
        """A substring test on the raw event, so the many text deltas are never JSON-parsed."""
        if name == "content_block_start":
            return b"thinking" in payload  # also matches "redacted_thinking"
        if name == "content_block_stop":
            return bool(self._pending_signatures or self._start_signatures)
        if name is not None:
            return True  # message_start, message_delta, error
        # An event without an "event:" line: decide by the payload alone.
        if b'"message_' in payload or b'"error"' in payload:
            return True
        if b"signature_delta" in payload or b"thinking" in payload:
            return True
        return b"content_block_stop" in payload and bool(self._pending_signatures or self._start_signatures)

    def _event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message")
            if isinstance(message, dict):
                self.usage.merge(message.get("usage"))
                if isinstance(message.get("model"), str):
                    self.usage.model = message["model"]
        elif kind == "message_delta":
            self.usage.merge(event.get("usage"))
            delta = event.get("delta")
            if isinstance(delta, dict) and isinstance(delta.get("stop_reason"), str):
                self.usage.stop_reason = delta["stop_reason"]
        elif kind == "error":
            error = event.get("error")
            if isinstance(error, dict) and isinstance(error.get("type"), str):
                self.usage.error_type = error["type"]
        elif kind == "content_block_start":
            self._block_start(event)
        elif kind == "content_block_delta":
            self._block_delta(event)
        elif kind == "content_block_stop":
            index = event.get("index")
            if _is_index(index):
                self._finish_signature(index)

    # --- thinking signatures -----------------------------------------------------------------
    def _block_start(self, event: dict[str, Any]) -> None:
        block, index = event.get("content_block"), event.get("index")
        if not isinstance(block, dict) or block.get("type") not in _THINKING_TYPES:
            return
        self.usage.thinking_blocks += 1
        if not _is_index(index):
            # Without an index no delta can be matched to it: keep what the start carries.
            self._keep_signature(_signature_of(block))
            return
        signature = _signature_of(block)
        if signature and self._room_for(index, self._start_signatures) and self._budget(len(signature)):
            self._start_signatures[index] = signature

    def _block_delta(self, event: dict[str, Any]) -> None:
        delta, index = event.get("delta"), event.get("index")
        if not isinstance(delta, dict) or delta.get("type") != "signature_delta":
            return
        part = delta.get("signature")
        if not _is_index(index) or not isinstance(part, str) or not part:
            return
        if self._room_for(index, self._pending_signatures) and self._budget(len(part)):
            self._pending_signatures.setdefault(index, []).append(part)

    def _finish_signature(self, index: int) -> None:
        parts = self._pending_signatures.pop(index, None)
        start = self._start_signatures.pop(index, None)
        # Anthropic sends the signature as signature_delta(s) with an empty one in the start event;
        # a compatible lane may put it in the start event instead. Deltas win when both exist.
        self._keep_signature("".join(parts) if parts else start)

    def _keep_signature(self, signature: str | None) -> None:
        if not signature:
            return
        if len(self.usage.signatures) >= _MAX_SIGNATURES:
            self.usage.signatures_truncated = True
            return
        self.usage.signatures.append(signature)

    def _room_for(self, index: int, pending: dict[int, Any]) -> bool:
        # Many tiny signatures under distinct indexes must not grow the dict without bound either.
        if index in pending or len(pending) < _MAX_SIGNATURES:
            return True
        self.usage.signatures_truncated = True
        return False

    def _budget(self, chars: int) -> bool:
        if self._signature_chars + chars > _MAX_SIGNATURE_CHARS:
            self.usage.signatures_truncated = True
            return False
        self._signature_chars += chars
        return True

    # --- plain JSON ----------------------------------------------------------------------------
    def _feed_json(self, data: bytes) -> None:
        self._json_size += len(data)
        if self._json_size <= _MAX_JSON_BYTES:
            self._json_body.append(data)
        else:
            self._json_body.clear()

    def _parse_json_body(self) -> None:
        if not self._json_body or self._json_size > _MAX_JSON_BYTES:
            return
        try:
            body = json.loads(b"".join(self._json_body))
        except ValueError:
            return
        if not isinstance(body, dict):
            return
        if body.get("type") == "error":
            self._event(body)
            return
        self.usage.merge(body.get("usage"))
        if isinstance(body.get("model"), str):
            self.usage.model = body["model"]
        if isinstance(body.get("stop_reason"), str):
            self.usage.stop_reason = body["stop_reason"]
        content = body.get("content")
        if isinstance(content, list):
            for block in content:
                if isinstance(block, dict) and block.get("type") in _THINKING_TYPES:
                    self.usage.thinking_blocks += 1
                    signature = _signature_of(block)
                    if signature and self._budget(len(signature)):
                        self._keep_signature(signature)


def _is_index(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _signature_of(block: dict[str, Any]) -> str | None:
    """A thinking block's signature; for redacted_thinking the opaque ``data`` plays that role."""
    value = block.get("data") if block.get("type") == "redacted_thinking" else block.get("signature")
    return value if isinstance(value, str) and value else None
