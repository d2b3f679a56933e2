"""One endurance call: a streamed Messages request, judged complete only when the whole event stream
arrived, with its timings from the client's side."""

from __future__ import annotations

import ssl
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx

from ccmitm.core.redact import redact_text

SONNET, HAIKU = "claude-sonnet-4-5", "claude-haiku-4-5"
PROMPT = "Reply with the single word: ok"
CALL_TIMEOUT_S = 60.0


@dataclass
class CallResult:
    phase: str
    family: str  # "sonnet" or "haiku": which lane the call should take
    ok: bool
    status: int | None
    ttfb_ms: float | None
    duration_ms: float
    error: str | None = None


@dataclass(frozen=True)
class Target:
    """Where calls go and how they authenticate (the credential itself stays out of repr)."""

    base_url: str
    headers: Mapping[str, str] = field(repr=False)
    proxy: str | None = None
    verify: ssl.SSLContext | bool = True

    def client(self, connections: int = 4) -> httpx.Client:
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        return httpx.Client(proxy=self.proxy, verify=self.verify, timeout=CALL_TIMEOUT_S, limits=limits)


def stream_call(client: httpx.Client, target: Target, family: str, phase: str) -> CallResult:
    """One streamed Messages call; ok only when the whole event stream arrived (message_stop)."""
    body = {
        "model": HAIKU if family == "haiku" else SONNET,
        "max_tokens": 16,
        "stream": True,
        "messages": [{"role": "user", "content": PROMPT}],
    }
    started = time.monotonic()
    ttfb: float | None = None
    status: int | None = None
    seen = b""
    try:
        with client.stream(
            "POST", target.base_url + "/v1/messages", json=body, headers=dict(target.headers)
        ) as r:
            status = r.status_code
            for chunk in r.iter_raw():
                if ttfb is None:
                    ttfb = time.monotonic() - started
                seen = (seen + chunk)[-512:]  # only the tail matters: message_stop is last
        ok = status == 200 and b"message_stop" in seen
        error = None if ok else f"HTTP {status}" if status != 200 else "stream ended without message_stop"
    except httpx.HTTPError as exc:
        ok, error = False, f"{type(exc).__name__}: {exc}"
    return CallResult(
        phase=phase,
        family=family,
        ok=ok,
        status=status,
        ttfb_ms=round(ttfb * 1000, 1) if ttfb is not None else None,
        duration_ms=round((time.monotonic() - started) * 1000, 1),
        error=redact_text(error)[:200] if error else None,
    )


def _families(count: int) -> list[str]:
    return ["sonnet" if i % 2 == 0 else "haiku" for i in range(count)]


def run_concurrent(target: Target, phase: str, count: int, workers: int) -> list[CallResult]:
    with target.client(workers) as client, ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda family: stream_call(client, target, family, phase), _families(count)))
