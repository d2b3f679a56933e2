"""In-process measurements of ccmitm's own work, without sockets: the addon's hooks for one call,
the SSE usage tap, and the usage-log writer. These are what the daemon adds on top of mitmproxy,
isolated from the network's noise (µs, not ms)."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from mitmproxy.test import tflow, tutils
from stats import percentile

from ccmitm.config.load import load
from ccmitm.core.sse import UsageReader
from ccmitm.logs.usage import UsageLog, UsageRecord
from ccmitm.proxy.addon import Router
from ccmitm.proxy.state import Runtime, Snapshot


def _request_body(model: str, stream: bool) -> bytes:
    return json.dumps(
        {"model": model, "max_tokens": 64, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
    ).encode()


def _json_reply(model: str) -> bytes:
    return json.dumps(
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": "ok"}],
            "stop_reason": "end_turn",
            "usage": {"input_tokens": 11, "output_tokens": 7},
        }
    ).encode()


def sse_stream(deltas: int, text: str = "word " * 12) -> list[bytes]:
    """A realistic Messages stream, one entry per event as an upstream writes them."""
    events: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"type": "message_start", "message": {"id": "m", "model": "x", "usage": {"input_tokens": 9, "output_tokens": 1}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    ]  # fmt: skip
    events += [
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}})
    ] * deltas  # fmt: skip
    events += [
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": deltas}}),
        ("message_stop", {"type": "message_stop"}),
    ]  # fmt: skip
    return [f"event: {name}\ndata: {json.dumps(data)}\n\n".encode() for name, data in events]


def addon_per_call(config_path: Path, calls: int, env: dict[str, str]) -> dict[str, Any]:
    """CPU µs the Router's hooks cost for one non-streamed call, from requestheaders to the record."""
    runtime = Runtime(Snapshot.build(load(config_path), env))
    records: list[UsageRecord] = []
    router = Router(runtime, records.append)
    out: dict[str, Any] = {}
    for label, model in (
        ("rerouted (Haiku)", "claude-haiku-4-5"),
        ("pass-through (Sonnet)", "claude-sonnet-4-5"),
    ):
        reply = _json_reply(model)
        samples = []
        for _ in range(calls):
            flow = tflow.tflow(
                req=tutils.treq(
                    host="api.anthropic.com",
                    port=443,
                    scheme=b"https",
                    path=b"/v1/messages",
                    method=b"POST",
                    content=_request_body(model, False),
                )
            )
            response = tutils.tresp(
                content=b"",
                headers=[
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(reply)).encode()),
                ],
            )
            start = time.thread_time_ns()  # CPU time: a descheduled moment is not the addon's cost
            router.requestheaders(flow)
            router.request(flow)
            flow.response = response
            router.responseheaders(flow)
            if callable(response.stream):
                response.stream(reply)
                response.stream(b"")
            else:
                response.content = reply
            _run(router.response(flow))
            samples.append((time.thread_time_ns() - start) / 1000)
            records.clear()
        samples = samples[calls // 10 :]
        out[label] = {
            "p50_us": round(percentile(samples, 0.5), 1),
            "p95_us": round(percentile(samples, 0.95), 1),
        }
    return out


def _run(coro: Any) -> None:
    """Drive a coroutine that does not await anything real (the response hook without failover)."""
    try:
        coro.send(None)
    except StopIteration:
        return
    raise RuntimeError("the response hook awaited something")


def tap(deltas: int, repeat: int) -> dict[str, Any]:
    """The SSE usage tap over a recorded stream, chunked as an upstream writes it and coarser."""
    events = sse_stream(deltas)
    data = b"".join(events)
    out: dict[str, Any] = {"events": len(events), "bytes": len(data)}
    for label, chunks in (
        ("one event per chunk", events),
        ("1 KiB chunks", [data[i : i + 1024] for i in range(0, len(data), 1024)]),
        ("16 KiB chunks", [data[i : i + 16384] for i in range(0, len(data), 16384)]),
    ):
        best = float("inf")
        for _ in range(repeat):
            reader = UsageReader("text/event-stream", None)
            start = time.perf_counter_ns()
            for chunk in chunks:
                reader.feed(chunk)
            usage = reader.close()
            best = min(best, time.perf_counter_ns() - start)
            assert usage.output_tokens == deltas and usage.events == len(events), usage
        out[label] = {
            "chunks": len(chunks),
            "us_per_chunk": round(best / 1000 / len(chunks), 2),
            "events_per_s": round(len(events) / (best / 1e9)),
            "mb_per_s": round(len(data) / (best / 1e9) / 1e6, 1),
        }
    return out


def usage_writer(records: int) -> dict[str, Any]:
    """What ``UsageLog.write`` costs its caller (the event loop) and how fast the thread drains."""
    record = UsageRecord(
        ts="2025-01-01T00:00:00.000+00:00", id="f" * 36, listener="reverse", lane="zai", rule="*haiku*",
        reason="rule", method="POST", path="/v1/messages", model="claude-haiku-4-5",
        upstream_model="glm-4.5-air", status=200, stream=True, ttfb_ms=1.2, duration_ms=3.4,
        input_tokens=11, output_tokens=7, cache_read_input_tokens=3, cache_creation_input_tokens=0,
        header_mode="x-api-key", http_version="HTTP/1.1", upstream_http_version="HTTP/1.1",
        session="sess", error=None,
    )  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="ccmitm-bench-usage-") as tmp:
        log = UsageLog(Path(tmp), 1 << 40, 2)
        log.start()
        calls = []
        start = time.perf_counter_ns()
        for _ in range(records):
            t = time.perf_counter_ns()
            log.write(record)
            calls.append((time.perf_counter_ns() - t) / 1000)
        deadline = time.monotonic() + 60
        while log.lines_written < records and time.monotonic() < deadline:
            time.sleep(0.001)
        elapsed = (time.perf_counter_ns() - start) / 1e9
        log.close()
        size = (Path(tmp) / "usage.jsonl").stat().st_size
    return {
        "records": records,
        "write_call_p50_us": round(percentile(calls, 0.5), 2),
        "write_call_p99_us": round(percentile(calls, 0.99), 2),
        "lines_per_s": round(records / elapsed),
        "bytes_per_line": round(size / records),
    }
