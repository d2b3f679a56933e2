"""The mitmproxy adapter: request facts in, a Route out, the request rewritten for its lane, the
response tapped for usage on its way through, one usage record when the call ends.

All decisions live in :mod:`ccmitm.routing`; this module only translates between mitmproxy flows
and those pure types, and it never blocks the event loop.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mitmproxy import http
from mitmproxy.proxy.mode_specs import ReverseMode

from .routing import Reason, RequestFacts, Route, decide, model_of
from .runtime import LaneEndpoint, Runtime
from .sse import UsageReader
from .usage import UsageRecord, clean_text

log = logging.getLogger(__name__)

FLOW_KEY = "ccmitm"
CLIENT_CREDENTIAL_HEADERS = ("x-api-key", "authorization")
# Dropped on keyed lanes: Anthropic beta flags mean nothing (or something else) to a third party,
# and nothing that could carry a credential of the user's may follow the request there.
DROPPED_ON_KEYED_LANES = ("anthropic-beta", "cookie", "proxy-authorization")


@dataclass
class FlowState:
    route: Route
    lane: LaneEndpoint
    listener: str
    path: str  # as the client sent it, without the query
    model: str | None
    stream_requested: bool
    started: float
    first_byte: float | None = None
    reader: UsageReader | None = None
    logged: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def anthropic_error(status: int, error_type: str, message: str) -> http.Response:
    """An error in the shape Anthropic's clients parse: {"type":"error","error":{...}}."""
    body = {"type": "error", "error": {"type": error_type, "message": message}}
    return http.Response.make(
        status,
        json.dumps(body).encode(),
        {"content-type": "application/json", "x-ccmitm-error": error_type},
    )


def _listener(flow: http.HTTPFlow) -> str:
    return "reverse" if isinstance(flow.client_conn.proxy_mode, ReverseMode) else "intercept"


def _parse_body(request: http.Request) -> Any:
    try:
        return json.loads(request.get_content(strict=False) or b"")
    except (ValueError, UnicodeDecodeError):
        return None


def _error_text(flow: http.HTTPFlow) -> str | None:
    if flow.error is None:
        return None
    message = flow.error.msg or "error"
    lowered = message.lower()
    if "client disconnected" in lowered:
        text = "client abort"
    elif flow.response is None:
        text = f"connect failure: {message}"
    elif "peer closed" in lowered or "incomplete" in lowered or "connection" in lowered:
        text = f"upstream drop: {message}"
    else:
        text = message
    return clean_text(text)


class Router:
    """The routing addon. ``sink`` receives one UsageRecord per call."""

    def __init__(self, runtime: Runtime, sink: Callable[[UsageRecord], None]):
        self.runtime = runtime
        self.sink = sink
        self.in_flight = 0  # routed calls not yet finished: what a graceful stop waits for

    # --- hooks ---------------------------------------------------------------------------------
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        limit = self.runtime.active.config.proxy.max_body_bytes
        length = flow.request.headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            flow.response = anthropic_error(
                413, "request_too_large", f"request body is larger than ccmitm's limit of {limit} bytes"
            )

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:  # already answered (e.g. rejected in requestheaders)
            return
        try:
            self._route(flow)
        except Exception:
            # A bug here must not forward a half-rewritten request: answer instead (clients retry).
            log.exception("routing failed; answering 502")
            flow.metadata.pop(FLOW_KEY, None)
            flow.response = anthropic_error(502, "api_error", "ccmitm could not route this request")

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        state: FlowState | None = flow.metadata.get(FLOW_KEY)
        if state is None or flow.response is None:
            return
        headers = flow.response.headers
        reader = UsageReader(headers.get("content-type"), headers.get("content-encoding"))
        state.reader = reader

        def tap(chunk: bytes) -> bytes:
            if state.first_byte is None and chunk:
                state.first_byte = time.time()
            reader.feed(chunk)
            return chunk

        # Streaming every routed response keeps SSE event-by-event and costs nothing for JSON.
        flow.response.stream = tap

    def response(self, flow: http.HTTPFlow) -> None:
        self._finish(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._finish(flow)

    # --- routing ---------------------------------------------------------------------------------
    def _route(self, flow: http.HTTPFlow) -> None:
        request = flow.request
        snapshot = self.runtime.active
        path = request.path.split("?", 1)[0]
        body: Any = None
        facts = RequestFacts(request.method, path, None)
        if facts.is_messages or facts.is_count_tokens:
            body = _parse_body(request)
            facts = RequestFacts(request.method, path, model_of(body))
        route = decide(facts, snapshot.table, self.runtime.conditions())
        lane = snapshot.lanes[route.lane]
        self._rewrite(request, lane, route, body)
        flow.metadata[FLOW_KEY] = FlowState(
            route=route,
            lane=lane,
            listener=_listener(flow),
            path=path,
            model=facts.model,
            stream_requested=isinstance(body, dict) and body.get("stream") is True,
            started=request.timestamp_start or time.time(),
        )
        self.in_flight += 1

    @staticmethod
    def _rewrite(request: http.Request, lane: LaneEndpoint, route: Route, body: Any) -> None:
        # Order matters for the credential promise: destination first, then strip the client's
        # credentials, and the lane key last, so a failure part-way never sends a key astray.
        query = request.path.partition("?")[1:]
        request.scheme = lane.scheme
        request.host = lane.host
        request.port = lane.port
        if lane.prefix:
            request.path = lane.prefix + request.path.split("?", 1)[0] + "".join(query)
        if lane.keyed:
            for name in CLIENT_CREDENTIAL_HEADERS + DROPPED_ON_KEYED_LANES:
                request.headers.pop(name, None)
        if route.upstream_model is not None and isinstance(body, dict):
            body["model"] = route.upstream_model
            request.content = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        if lane.keyed:
            assert lane.key is not None, "decide() never routes to a lane without a key"
            if lane.header_mode == "authorization":
                request.headers["authorization"] = f"Bearer {lane.key}"
            else:
                request.headers["x-api-key"] = lane.key

    # --- accounting ------------------------------------------------------------------------------
    def _finish(self, flow: http.HTTPFlow) -> None:
        state: FlowState | None = flow.metadata.get(FLOW_KEY)
        if state is None or state.logged:
            return
        state.logged = True
        self.in_flight -= 1
        now = time.time()
        response = flow.response
        usage = state.reader.close() if state.reader else None
        error = _error_text(flow)
        if error is None and usage is not None and usage.error_type:
            error = clean_text(f"upstream error event: {usage.error_type}")
        content_type = response.headers.get("content-type", "") if response else ""
        record = UsageRecord(
            ts=datetime.fromtimestamp(state.started, UTC).isoformat(timespec="milliseconds"),
            id=flow.id,
            listener=state.listener,
            lane=state.route.lane,
            rule=clean_text(state.route.rule),
            reason=str(state.route.reason),
            method=clean_text(flow.request.method, 16) or "",
            path=clean_text(state.path) or "",
            model=clean_text(state.model),
            upstream_model=clean_text(state.route.upstream_model or state.model),
            status=response.status_code if response else None,
            stream=content_type.startswith("text/event-stream") or state.stream_requested,
            ttfb_ms=_ms(state.first_byte - state.started) if state.first_byte else None,
            duration_ms=_ms(now - state.started),
            input_tokens=usage.input_tokens if usage else None,
            output_tokens=usage.output_tokens if usage else None,
            cache_read_input_tokens=usage.cache_read_input_tokens if usage else None,
            cache_creation_input_tokens=usage.cache_creation_input_tokens if usage else None,
            header_mode=state.lane.header_mode,
            http_version=flow.request.http_version,
            upstream_http_version=response.http_version if response else None,
            session=clean_text(flow.request.headers.get("x-claude-code-session-id"), 80),
            error=error,
        )
        failed = error is not None or record.status is None or record.status >= 400
        self.runtime.record(record.lane, record.duration_ms, failed)
        self.sink(record)


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


__all__ = ["FLOW_KEY", "Reason", "Router", "anthropic_error"]
