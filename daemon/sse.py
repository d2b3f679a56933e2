"""Read token usage out of an Anthropic response as its bytes pass by, whatever the chunking.

The reader never changes or holds back the bytes: callers forward each chunk unchanged and feed a
copy here. It understands both a Server-Sent Events stream (``message_start`` / ``message_delta``
/ ``error`` events) and a plain JSON Messages response, optionally content-encoded.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

USAGE_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
)

_INTERESTING_EVENTS = frozenset({"message_start", "message_delta", "error"})
_MAX_EVENT_BYTES = 256 * 1024  # usage events are small; a huge event is content, not usage
_MAX_JSON_BYTES = 8 * 1024 * 1024  # a non-streamed reply larger than this is not parsed for usage


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
    extra: dict[str, Any] = field(default_factory=dict)

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


def _decoder_for(content_encoding: str | None) -> Callable[[bytes], bytes] | None:
    """An incremental decoder for the response's content-encoding; None if it is unknown."""
    encoding = (content_encoding or "identity").strip().lower()
    if encoding in ("", "identity"):
        return lambda data: data
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress
    if encoding == "deflate":
        return zlib.decompressobj().decompress
    if encoding == "br":
        try:
            import brotli
        except ImportError:  # pragma: no cover - mitmproxy depends on Brotli
            return None
        return brotli.Decompressor().process
    if encoding == "zstd":
        try:
            from compression import zstd  # type: ignore[import-not-found]
        except ImportError:
            try:
                from backports import zstd  # type: ignore[import-not-found,no-redef]
            except ImportError:
                return None
        return zstd.ZstdDecompressor().decompress
    return None


class UsageReader:
    """Feed it response body chunks as they pass; read ``usage`` at any time."""

    def __init__(self, content_type: str | None, content_encoding: str | None = None):
        self.usage = Usage()
        self.is_sse = (content_type or "").split(";")[0].strip().lower() == "text/event-stream"
        self._decode = _decoder_for(content_encoding)
        self._broken = self._decode is None  # unknown encoding: pass bytes, read nothing
        self._line_buffer = b""
        self._event_name: str | None = None
        self._event_data: list[bytes] = []
        self._event_size = 0
        self._json_body: list[bytes] = []
        self._json_size = 0

    def feed(self, chunk: bytes) -> None:
        if self._broken or not chunk:
            return
        try:
            data = self._decode(chunk)  # type: ignore[misc]
            if self.is_sse:
                self._feed_sse(data)
            else:
                self._feed_json(data)
        except Exception:  # a reader bug or corrupt encoding must never touch the stream
            self._broken = True

    def close(self) -> Usage:
        """End of body: dispatch what is pending and return the usage."""
        if not self._broken:
            try:
                if self.is_sse:
                    if self._line_buffer:
                        self._line(self._line_buffer)
                        self._line_buffer = b""
                    self._dispatch()
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
            end = buffer.find(b"\n", start)
            if end < 0:
                break
            self._line(buffer[start:end])
            start = end + 1
        rest = buffer[start:]
        if len(rest) > _MAX_EVENT_BYTES:  # an endless line: not an event we read
            rest = b""
            self._event_data.clear()
            self._event_size = _MAX_EVENT_BYTES + 1
        self._line_buffer = rest

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
        payload = b"\n".join(data)
        if name is None and b'"message_' not in payload and b'"error"' not in payload:
            return
        try:
            event = json.loads(payload)
        except ValueError:
            return
        if isinstance(event, dict):
            self._event(event)

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
