"""A fake Anthropic-compatible upstream for the tests: real sockets on 127.0.0.1, HTTP/1.1.

It records every request it receives (method, path, headers, body) and answers like the Messages
API: JSON, or SSE with a realistic event sequence and usage. Behaviours a test can ask for, per
server (``fake.behaviour = ...``) or per request (header ``x-fake-behaviour``):

- ``ok``: a normal answer.
- ``gated``: stream the first events, then wait for ``fake.release()`` before the rest; proves the
  proxy forwards events one by one (a buffering proxy would show the client nothing before it).
- ``drop``: stream a few events, then close the connection mid-body.
- ``stall``: stream a few events, then send nothing (until ``stall_s`` or the server stops).
- ``status:NNN``: answer with that HTTP status and an Anthropic-shaped error body.
- ``slow``: send each event in two halves with a pause between (exercise chunk splits).
- ``gzip-bomb-json:MiB`` / ``gzip-bomb-sse:MiB``: a gzip-encoded Messages answer (JSON with a
  content-length, or a chunked stream) that decodes to about that many MiB, from about 1 KiB per
  MiB on the wire: usage at the start (input tokens) and at the very end (output tokens), filler
  between. Built once per size (see :func:`gzip_bomb`).
- ``echo-key``: a stream whose ``error`` event echoes the credential the request carried, glued
  to letters (``bad<key>``), as a careless upstream could; ``echo-key-refusal``: the same in a
  401 refusal's message (Z.AI's envelope, code 1001), which puts a lane on hold.

Scripted answers: ``fake.script = fn`` where ``fn(received) -> Reply | None`` picks, per request,
the content blocks and stop reason of a Messages answer (``Reply.text(...)``,
``Reply.tool_use(...)``), JSON or SSE alike; ``None`` (or no script) keeps the default answer.
Behaviours still apply to a scripted stream.

Z.AI's quota meter: ``GET /api/monitor/usage/quota/limit`` answers ``{"data": {"limits":
fake.quota_limits}}``; ``fake.quota_mode`` = ``"404"`` or ``"garbage"`` makes it fail instead.
``fake.quota_requests()`` are the meter requests it got (a test checks their Authorization).

Z.AI flavour: ``fake.flavour = "zai"`` answers in Z.AI's real stream shape
(``message_start`` with usage 0/0, a ``ping``, the real counts only in the final ``message_delta``
with ``server_tool_use`` and ``service_tier``; ids ``msg_2026...``). ``fake.zai_refusal = "1308"``
(sticky, until set to None or ``reset()``) or the header ``x-fake-zai-refusal: 1308`` (one request)
refuses with Z.AI's envelope for that code (:data:`ZAI_REFUSALS`: the older one with the code in
``error.type``, or the newer one with ``error.code``); quota messages name ``fake.zai_reset_at``
(Beijing time) and 1310 also sends ``retry-after-ms`` (``fake.zai_retry_after_ms``).

For the benchmarks, a streamed request may carry ``x-fake-events: N`` (and ``x-fake-gap-ms: G``):
its text deltas are then N events, G ms apart, each one's text the sender's ``time.monotonic_ns()``
at the moment it is written, so a client in the same process can measure each event's lag.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "api_error",
    529: "overloaded_error",
}


QUOTA_PATH = "/api/monitor/usage/quota/limit"


def default_quota_limits() -> list[dict[str, Any]]:
    """A meter answer as Z.AI is reported to send it: 5-hour (unit 3), week (unit 6), tool time."""
    now_ms = int(time.time() * 1000)
    return [
        {
            "type": "TOKENS_LIMIT",
            "unit": 3,
            "number": 5,
            "percentage": 37,
            "nextResetTime": now_ms + 3600_000,
        },
        {
            "type": "TOKENS_LIMIT",
            "unit": 6,
            "number": 1,
            "percentage": 12,
            "nextResetTime": now_ms + 86400_000,
        },
        {"type": "TIME_LIMIT", "unit": 5, "number": 1, "percentage": 99, "usage": 100},
    ]


@dataclass(frozen=True)
class ZaiRefusal:
    status: int
    old_envelope: bool  # True: the code in error.type; False: error.type Anthropic-like + error.code
    message: str  # "{reset}" is replaced by the reset time in Beijing time
    retry_after_ms: bool = False


#: Z.AI's refusals as the fake sends them (shapes reported in public issue threads and its docs).
ZAI_REFUSALS: dict[str, ZaiRefusal] = {
    "1001": ZaiRefusal(401, False, "Authorization Token Missing or invalid"),
    "1113": ZaiRefusal(429, True, "Insufficient balance or no resource package. Please recharge."),
    "1211": ZaiRefusal(400, False, "Unknown Model, please check the model code."),
    "1301": ZaiRefusal(400, False, "System detected potentially unsafe or sensitive content."),
    "1302": ZaiRefusal(429, False, "High concurrency usage of this API, please reduce concurrency."),
    "1303": ZaiRefusal(429, False, "High frequency usage of this API, please reduce frequency."),
    "1305": ZaiRefusal(529, False, "The service may be temporarily overloaded, please try again later"),
    "1308": ZaiRefusal(429, False, "Usage limit reached for 5 hour. Your limit will reset at {reset}"),
    "1310": ZaiRefusal(429, False, "Weekly/Monthly Limit Exhausted. Your limit will reset at {reset}", True),
}
BEIJING = timezone(timedelta(hours=8))


_MIB = 1024 * 1024


def gzip_bomb(prefix: bytes, filler: bytes, mib: int, suffix: bytes) -> bytes:
    """A valid gzip body of ``prefix``, about ``mib`` MiB of ``filler`` repeated, then ``suffix``.

    Compressing a GiB would take seconds; instead one MiB of filler is compressed after a full
    flush (which resets the compressor), so every further MiB compresses to the same bytes and is
    repeated as bytes. Only the CRC is computed over all of it (zlib.crc32: fast)."""
    block = filler * max(1, _MIB // len(filler))  # whole fillers only: an SSE event is not cut
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    head = deflate.compress(prefix) + deflate.flush(zlib.Z_FULL_FLUSH)
    middle = deflate.compress(block) + deflate.flush(zlib.Z_FULL_FLUSH)
    tail = deflate.compress(suffix) + deflate.flush()
    crc = zlib.crc32(prefix)
    for _ in range(mib):
        crc = zlib.crc32(block, crc)
    crc = zlib.crc32(suffix, crc)
    size = len(prefix) + mib * len(block) + len(suffix)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"  # gzip, deflate, no name, no mtime
    return header + head + middle * mib + tail + struct.pack("<II", crc, size & 0xFFFFFFFF)


@dataclass
class Received:
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes
    at: float = field(default_factory=time.monotonic)

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def has_header(self, name: str) -> bool:
        return self.header(name) is not None

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def model(self) -> str | None:
        try:
            return self.json().get("model")
        except (ValueError, AttributeError):
            return None

    def tool_results(self) -> list[dict[str, Any]]:
        """Every ``tool_result`` block in the request's messages (a client's answer to a tool_use)."""
        try:
            messages = self.json().get("messages") or []
        except (ValueError, AttributeError):
            return []
        return [
            block
            for message in messages
            if isinstance(message, dict) and isinstance(message.get("content"), list)
            for block in message["content"]
            if isinstance(block, dict) and block.get("type") == "tool_result"
        ]


@dataclass(frozen=True)
class Reply:
    """A scripted answer: the final content blocks (as the Messages API returns them) and stop reason."""

    content: tuple[dict[str, Any], ...]
    stop_reason: str = "end_turn"

    @classmethod
    def text(cls, text: str) -> Reply:
        return cls(({"type": "text", "text": text},))

    @classmethod
    def tool_use(cls, name: str, tool_input: dict[str, Any], tool_id: str = "toolu_fake_01") -> Reply:
        return cls(({"type": "tool_use", "id": tool_id, "name": name, "input": tool_input},), "tool_use")


def _halves(text: str) -> tuple[str, str]:
    return text[: len(text) // 2], text[len(text) // 2 :]


def block_events(index: int, block: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """One content block as Anthropic streams it: start (empty), deltas in two pieces, stop."""
    if block["type"] == "tool_use":
        start = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
        deltas = [
            {"type": "input_json_delta", "partial_json": p} for p in _halves(json.dumps(block["input"]))
        ]
    else:
        start = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": p} for p in _halves(block.get("text", ""))]
    delta_events = [
        ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d}) for d in deltas
    ]
    return [
        ("content_block_start", {"type": "content_block_start", "index": index, "content_block": start}),
        *delta_events,
        ("content_block_stop", {"type": "content_block_stop", "index": index}),
    ]


class FakeUpstream:
    def __init__(self, name: str, input_tokens: int = 11, output_tokens: int = 7):
        self.name = name
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens
        self.cache_read_input_tokens = 3
        self.behaviour = "ok"
        self.stall_s = 30.0
        self.received: list[Received] = []
        self.port = 0
        self.reply_text = "ok"
        self.thinking_signature: str | None = None  # when set, streamed replies end with a thinking block
        self.retry_after: str | None = None
        self.script: Callable[[Received], Reply | None] | None = None  # per-request scripted answers
        # Z.AI's quota meter (see quota_requests): the limits it reports, or a failure mode.
        self.quota_limits: list[dict[str, Any]] = default_quota_limits()
        self.quota_mode = "ok"  # "ok", "404" or "garbage"

        # Z.AI flavour (see the module doc): the stream shape and the sticky refusal.
        self.flavour = "anthropic"
        self.zai_refusal: str | None = None
        self.zai_reset_at: datetime | None = None  # default: an hour from now
        self.zai_retry_after_ms: int = 3_600_000
        self._gate = threading.Event()
        self.gate_timed_out = False
        self._bombs: dict[tuple[str, int], bytes] = {}  # built once per (kind, size)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self) -> FakeUpstream:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop

            async def serve() -> None:
                self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
                self.port = self._server.sockets[0].getsockname()[1]
                ready.set()
                async with self._server:
                    while not self._stopping.is_set():
                        await asyncio.sleep(0.05)

            loop.run_until_complete(serve())
            loop.close()

        self._thread = threading.Thread(target=run, name=f"fake-{self.name}", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake upstream did not start")
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._gate.set()
        if self._thread:
            self._thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def release(self) -> None:
        self._gate.set()

    def reset(self) -> None:
        self.received.clear()
        self.behaviour = "ok"
        self.zai_refusal = None
        self._gate.clear()
        self.gate_timed_out = False

    def quota_requests(self) -> list[Received]:
        """The quota meter requests this fake received."""
        return [r for r in self.received if r.path.split("?")[0] == QUOTA_PATH]

    def messages(self) -> list[Received]:
        return [r for r in self.received if r.path.split("?")[0].endswith("/v1/messages")]

    # --- HTTP ------------------------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while not self._stopping.is_set():
                request = await self._read_request(reader)
                if request is None:
                    break
                self.received.append(request)
                keep = await self._respond(request, writer)
                if not keep:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _read_request(self, reader: asyncio.StreamReader) -> Received | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        lines = head.decode("latin-1").split("\r\n")
        method, target, _version = lines[0].split(" ", 2)
        headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            if line:
                key, _, value = line.partition(":")
                headers.append((key.strip(), value.strip()))
        lowered = {k.lower(): v for k, v in headers}
        body = b""
        if "content-length" in lowered:
            body = await reader.readexactly(int(lowered["content-length"]))
        elif lowered.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")
                    break
                parts.append(await reader.readexactly(size))
                await reader.readexactly(2)
            body = b"".join(parts)
        return Received(method, target, headers, body)

    def _behaviour_for(self, request: Received) -> str:
        return request.header("x-fake-behaviour") or self.behaviour

    async def _respond(self, request: Received, writer: asyncio.StreamWriter) -> bool:
        behaviour = self._behaviour_for(request)
        path = request.path.split("?")[0]
        if path == QUOTA_PATH:
            await self._send_quota(writer)  # the meter is separate from the Messages behaviours
            return True
        if behaviour.startswith("status:"):
            status = int(behaviour.split(":", 1)[1])
            body = {
                "type": "error",
                "error": {
                    "type": ERROR_TYPES.get(status, "api_error"),
                    "message": f"fake {self.name} says {status}",
                },
            }
            extra = {"retry-after": self.retry_after} if self.retry_after else {}
            await self._send_json(writer, status, body, extra)
            return True
        if path.endswith("/v1/messages") and await self._zai_refuse(request, writer):
            return True
        if path.endswith("/v1/messages") and behaviour.startswith("gzip-bomb-"):
            return await self._send_bomb(writer, behaviour)
        if path.endswith("/v1/messages") and behaviour.startswith("echo-key"):
            return await self._echo_key(request, writer, behaviour)
        if path.endswith("/v1/messages/count_tokens"):
            await self._send_json(writer, 200, {"input_tokens": self.input_tokens})
            return True
        if not path.endswith("/v1/messages"):
            await self._send_json(writer, 200, {})
            return True
        try:
            payload = request.json()
        except ValueError:
            payload = {}
        model = payload.get("model") if isinstance(payload, dict) else None
        stream = isinstance(payload, dict) and payload.get("stream") is True
        reply = self.script(request) if self.script else None
        if not stream:
            message = self._zai_message(model) if self.flavour == "zai" else self._message(model)
            if reply is not None:
                message.update(content=list(reply.content), stop_reason=reply.stop_reason)
            await self._send_json(writer, 200, message)
            return True
        timed = int(request.header("x-fake-events") or 0)
        gap_s = float(request.header("x-fake-gap-ms") or 0) / 1000
        return await self._send_sse(writer, model, behaviour, reply, timed, gap_s)

    # --- Z.AI's quota meter ------------------------------------------------------------------------
    async def _send_quota(self, writer: asyncio.StreamWriter) -> None:
        if self.quota_mode == "404":
            await self._send_json(writer, 404, {"error": "not found"})
        elif self.quota_mode == "garbage":
            data = b"<html>not json"
            head = {"content-type": "text/html", "content-length": str(len(data))}
            writer.write(self._head(200, head) + data)
            await writer.drain()
        else:
            body = {"code": 200, "msg": "ok", "data": {"limits": self.quota_limits}, "success": True}
            await self._send_json(writer, 200, body)

    def _message(self, model: Any) -> dict[str, Any]:
        return {
            "id": f"msg_fake_{self.name}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": self.reply_text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {
                "input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens,
                "cache_read_input_tokens": self.cache_read_input_tokens,
                "cache_creation_input_tokens": 0,
            },
        }

    async def _send_json(
        self, writer: asyncio.StreamWriter, status: int, body: Any, extra: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(body).encode()
        headers = {"content-type": "application/json", "content-length": str(len(data)), **(extra or {})}
        writer.write(self._head(status, headers) + data)
        await writer.drain()

    @staticmethod
    def _head(status: int, headers: dict[str, str]) -> bytes:
        lines = [f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def scripted_events(self, model: Any, reply: Reply) -> list[bytes]:
        start = self._message(model)
        start.update(content=[], stop_reason=None)
        start["usage"] = dict(start["usage"], output_tokens=1)
        events: list[tuple[str, dict[str, Any]]] = [
            ("message_start", {"type": "message_start", "message": start})
        ]
        for index, block in enumerate(reply.content):
            events += block_events(index, block)
        delta = {"stop_reason": reply.stop_reason, "stop_sequence": None}
        events += [
            (
                "message_delta",
                {"type": "message_delta", "delta": delta, "usage": {"output_tokens": self.output_tokens}},
            ),
            ("message_stop", {"type": "message_stop"}),
        ]
        return [f"event: {name}\ndata: {json.dumps(data)}\n\n".encode() for name, data in events]

    def events(self, model: Any) -> list[bytes]:
        start = self._message(model)
        start.update(content=[], stop_reason=None)
        start["usage"] = dict(start["usage"], output_tokens=1)
        words = [f"{self.reply_text}" if i == 0 else "" for i in range(4)]
        events = [
            ("message_start", {"type": "message_start", "message": start}),
            (
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            ),
            ("ping", {"type": "ping"}),
        ]
        events += [
            (
                "content_block_delta",
                {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": word}},
            )
            for word in words
        ]
        events.append(("content_block_stop", {"type": "content_block_stop", "index": 0}))
        if self.thinking_signature:
            thinking = {"type": "thinking", "thinking": ""}
            events += [
                ("content_block_start", {"type": "content_block_start", "index": 1, "content_block": thinking}),
                ("content_block_delta", {"type": "content_block_delta", "index": 1,
                                         "delta": {"type": "thinking_delta", "thinking": "hm"}}),
                ("content_block_delta", {"type": "content_block_delta", "index": 1,
                                         "delta": {"type": "signature_delta", "signature": self.thinking_signature}}),
                ("content_block_stop", {"type": "content_block_stop", "index": 1}),
            ]  # fmt: skip
        events += [
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": self.output_tokens},
                },
            ),
            ("message_stop", {"type": "message_stop"}),
        ]
        return [f"event: {name}\ndata: {json.dumps(data)}\n\n".encode() for name, data in events]

    async def _send_sse(
        self,
        writer: asyncio.StreamWriter,
        model: Any,
        behaviour: str,
        reply: Reply | None = None,
        timed: int = 0,
        gap_s: float = 0.0,
    ) -> bool:
        headers = {
            "content-type": "text/event-stream; charset=utf-8",
            "cache-control": "no-cache",
            "transfer-encoding": "chunked",
        }
        writer.write(self._head(200, headers))
        events = self.events(model) if reply is None else self.scripted_events(model, reply)
        if self.flavour == "zai" and reply is None:
            events = self.zai_events(model)
        if timed:  # the text deltas become `timed` stamped ones (see the module docstring)
            stamp = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"@T@"}}\n\n'
            events = events[:3] + [stamp] * timed + events[7:]

        async def chunk(data: bytes) -> None:
            writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            await writer.drain()

        for index, event in enumerate(events):
            if behaviour == "gated" and index == 4:  # message_start .. first delta went out
                released = await asyncio.get_running_loop().run_in_executor(None, self._gate.wait, 15.0)
                self.gate_timed_out = not released
            if behaviour == "drop" and index == 4:
                writer.transport.abort()
                return False
            if behaviour == "stall" and index == 4:
                deadline = time.monotonic() + self.stall_s
                while time.monotonic() < deadline and not self._stopping.is_set():
                    await asyncio.sleep(0.05)
                writer.transport.abort()
                return False
            if timed and event is stamp:
                if gap_s:
                    await asyncio.sleep(gap_s)
                event = event.replace(b"@T@", str(time.monotonic_ns()).encode())
            if behaviour == "slow":
                await chunk(event[:7])
                await asyncio.sleep(0.01)
                await chunk(event[7:])
            else:
                await chunk(event)
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True

    # --- hostile answers ---------------------------------------------------------------------------
    def bomb(self, kind: str, mib: int) -> bytes:
        """The gzip body ``gzip-bomb-<kind>:<mib>`` sends (``kind`` "json" or "sse")."""
        if (kind, mib) not in self._bombs:
            usage = {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens}
            if kind == "json":
                message = self._message("bomb")
                text = '"text":"' + self.reply_text
                head, _, rest = json.dumps(message, separators=(",", ":")).partition(text)
                prefix, suffix, filler = (head + text).encode(), rest.encode(), b"a"
            else:
                start = self._message("bomb")
                start.update(content=[], stop_reason=None, usage=dict(usage, output_tokens=1))
                prefix = f"event: message_start\ndata: {json.dumps({'type': 'message_start', 'message': start})}\n\n".encode()
                delta = {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": "a" * 64},
                }
                filler = f"event: content_block_delta\ndata: {json.dumps(delta)}\n\n".encode()
                end = {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": usage}
                suffix = f"event: message_delta\ndata: {json.dumps(end)}\n\n".encode()
            self._bombs[(kind, mib)] = gzip_bomb(prefix, filler, mib, suffix)
        return self._bombs[(kind, mib)]

    async def _send_bomb(self, writer: asyncio.StreamWriter, behaviour: str) -> bool:
        kind, _, size = behaviour.removeprefix("gzip-bomb-").partition(":")
        body = self.bomb(kind, int(size or 1024))
        if kind == "json":
            headers = {"content-type": "application/json", "content-length": str(len(body))}
            writer.write(self._head(200, {**headers, "content-encoding": "gzip"}) + body)
            await writer.drain()
            return True
        headers = {
            "content-type": "text/event-stream",
            "content-encoding": "gzip",
            "transfer-encoding": "chunked",
        }
        writer.write(self._head(200, headers))
        for start in range(0, len(body), 64 * 1024):
            part = body[start : start + 64 * 1024]
            writer.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True

    async def _echo_key(self, request: Received, writer: asyncio.StreamWriter, behaviour: str) -> bool:
        """Echo the request's credential glued to letters (see the module doc)."""
        credential = request.header("x-api-key") or (request.header("authorization") or "").removeprefix(
            "Bearer "
        )
        echoed = f"bad{credential}"
        if behaviour == "echo-key-refusal":
            error = {"type": "authentication_error", "code": "1001", "message": f"key {echoed} is invalid"}
            await self._send_json(writer, 401, {"type": "error", "error": error})
            return True
        events = self.events(request.model)[:1]  # message_start, then the error
        error_event = {"type": "error", "error": {"type": echoed, "message": echoed}}
        events.append(f"event: error\ndata: {json.dumps(error_event)}\n\n".encode())
        body = b"".join(events)
        headers = {"content-type": "text/event-stream", "content-length": str(len(body))}
        writer.write(self._head(200, headers) + body)
        await writer.drain()
        return True

    # --- Z.AI flavour (the quota endpoint lives in its own block) -------------------------------
    async def _zai_refuse(self, request: Received, writer: asyncio.StreamWriter) -> bool:
        """Refuse with Z.AI's envelope when a code is asked for (sticky or per request)."""
        code = request.header("x-fake-zai-refusal") or self.zai_refusal
        spec = ZAI_REFUSALS.get(code) if code else None
        if code is None or spec is None:
            return False
        reset = self.zai_reset_at or datetime.now(BEIJING) + timedelta(hours=1)
        message = spec.message.format(reset=reset.astimezone(BEIJING).strftime("%Y-%m-%d %H:%M:%S"))
        error: dict[str, Any] = (
            {"type": code, "message": message}
            if spec.old_envelope
            else {"type": ERROR_TYPES.get(spec.status, "api_error"), "code": code, "message": message}
        )
        extra = {"retry-after-ms": str(self.zai_retry_after_ms)} if spec.retry_after_ms else {}
        await self._send_json(writer, spec.status, {"type": "error", "error": error}, extra)
        return True

    def _zai_usage(self) -> dict[str, Any]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
            "server_tool_use": {"web_search_requests": 0},
            "service_tier": "standard",
        }

    def _zai_message(self, model: Any) -> dict[str, Any]:
        message = self._message(model)
        message["id"] = f"msg_{time.strftime('%Y%m%d%H%M%S')}{self.name}"
        message["usage"] = self._zai_usage()
        return message

    def zai_events(self, model: Any) -> list[bytes]:
        """Z.AI's stream: usage 0/0 at the start, a ping, the real counts in message_delta only."""
        start = self._zai_message(model)
        start.update(content=[], stop_reason=None, usage={"input_tokens": 0, "output_tokens": 0})
        events: list[tuple[str, dict[str, Any]]] = [
            ("message_start", {"type": "message_start", "message": start}),
            ("ping", {"type": "ping"}),
            *block_events(0, {"type": "text", "text": self.reply_text}),
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": self._zai_usage(),
                },
            ),
            ("message_stop", {"type": "message_stop"}),
        ]
        return [f"event: {name}\ndata: {json.dumps(data)}\n\n".encode() for name, data in events]
