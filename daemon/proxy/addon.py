"""The mitmproxy adapter: request facts in, a Route out, the request rewritten for its lane, the
response tapped for usage on its way through, one usage record when the call ends.

All decisions live in :mod:`ccmitm.core.routing` (where), :mod:`ccmitm.core.breaker` (whether a lane is
healthy) and :mod:`ccmitm.core.crosslane` (what the default lane must not see); this module translates
between mitmproxy flows and those pure types and never blocks the event loop.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import orjson
from mitmproxy import connection, http
from mitmproxy.proxy.mode_specs import ReverseMode

from ccmitm.core.breaker import AUTH, RATE_LIMIT, SERVER, is_breaker_failure
from ccmitm.core.crosslane import strip_foreign_thinking
from ccmitm.core.refusals import HOLDING, Refusal, RefusalClass, classify
from ccmitm.core.routing import Reason, RequestFacts, Route, decide, model_of
from ccmitm.core.sse import Usage, UsageReader, decode_bounded, is_event_stream
from ccmitm.logs.usage import UsageRecord, clean_text, request_class_of
from ccmitm.proxy import hygiene
from ccmitm.proxy.failover import DefaultLaneClient
from ccmitm.proxy.flow import (
    CREDENTIAL_HEADERS,
    RESPONSE_HEADERS,
    ClientHints,
    FlowState,
    OriginalRequest,
    anthropic_error,
    client_credentials,
    pick_headers,
    request_secrets,
    secrets_with,
)
from ccmitm.proxy.state import LaneEndpoint, Runtime

log = logging.getLogger(__name__)

FLOW_KEY = "ccmitm"
# Refusals worth one retry on the default lane: the lane is busy, broken, or has a bad key.
FAILOVER_KINDS = frozenset({RATE_LIMIT, SERVER, AUTH})
# Other 4xx refusals held back (when small, whole JSON) so their code can be read: Z.AI answers
# a wrong model (1211) or no balance with a 4xx that is the lane's fault, not the request's.
REFUSAL_BODY_BYTES = 64 * 1024
# Non-SSE replies up to this size (by content-length) are read whole instead of streamed.
BUFFERED_REPLY_BYTES = 1024 * 1024
# Dropped on keyed lanes, in one pass over the fields: every header that carries a credential
# (flow.CREDENTIAL_HEADERS), and Anthropic's beta flags, which mean nothing (or something else)
# to a third party.
_STRIPPED_ON_KEYED_LANES = CREDENTIAL_HEADERS | {b"anthropic-beta"}
# ccmitm's own client token (proxy/auth.py) travels in these: it never leaves ccmitm, on any lane.
_CLIENT_TOKEN_HEADERS = frozenset({b"x-ccmitm-token", b"proxy-authorization"})


def _strip_client_token(request: http.Request) -> None:
    fields = request.headers.fields
    if any(name.lower() in _CLIENT_TOKEN_HEADERS for name, _ in fields):
        request.headers.fields = tuple(f for f in fields if f[0].lower() not in _CLIENT_TOKEN_HEADERS)


def _via(flow: http.HTTPFlow, spec: tuple[str, tuple[str, int]] | None) -> None:
    """Send this request's upstream connection through proxy.upstream_proxy (or directly if None).

    Per request, not mitmproxy's `upstream` mode: routing picks the destination per request, and
    mitmproxy opens (or reuses) a connection for the request's host, port and `via` together. A
    server connection that is already open cannot be re-pointed, so it is replaced by a new one
    (mitmproxy's own change_upstream_proxy example does the same)."""
    server = flow.server_conn
    if server.via == spec:
        return
    if server.timestamp_start is not None:
        flow.server_conn = connection.Server(address=server.address)
    flow.server_conn.via = spec  # type: ignore[assignment]


def _target(request: http.Request) -> str:
    """What a usage line names as the path: the path without its query, or for a CONNECT (which
    has none) the authority it asked for, as HTTP's request target does."""
    if request.method == "CONNECT":
        return request.authority or f"{request.host}:{request.port}"
    return request.path.partition("?")[0]


def _listener(flow: http.HTTPFlow) -> str:
    return "reverse" if isinstance(flow.client_conn.proxy_mode, ReverseMode) else "intercept"


class _NonFinite(float):
    """NaN or ±Infinity as Python's json reads them: orjson refuses to write a float subclass, so a
    body holding one is written back by json, as it came (orjson would write null)."""


def _parse_body(request: http.Request) -> Any:
    # Python's json reads exactly (orjson reads an integer past 64 bits as a float).
    try:
        return json.loads(request.get_content(strict=False) or b"", parse_constant=_NonFinite)
    except (ValueError, UnicodeDecodeError, RecursionError):
        # RecursionError: JSON nested deeper than the parser goes. Like any unreadable body, it is
        # routed by what can be read (no model: the default lane), which answers it itself.
        return None


def _serialise(body: Any) -> bytes:
    # orjson writes: Claude Code's bodies are tens of kB (system prompt, tools, history), and
    # json.dumps takes about twenty times as long for them, on every rerouted call.
    try:
        return orjson.dumps(body)  # compact and UTF-8, as json.dumps below
    except TypeError:  # orjson.JSONEncodeError: a lone surrogate, an integer past 64 bits, NaN
        pass
    try:
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    except UnicodeEncodeError:  # a lone surrogate ("\ud800") is valid JSON but not UTF-8
        return json.dumps(body, ensure_ascii=True, separators=(",", ":")).encode()


def _error_text(flow: http.HTTPFlow, state: FlowState, read_timeout_s: float) -> str | None:
    if flow.error is None:
        return None
    message = flow.error.msg or "error"
    lowered = message.lower()
    idle = time.time() - (state.last_byte or state.started)
    # The idle check comes first: mitmproxy ends a stalled connection by closing the client side.
    if idle >= read_timeout_s * 0.9:
        text = f"upstream stalled: no data for {idle:.0f}s"
    elif "client disconnected" in lowered:
        text = "client abort"
    elif flow.response is None:
        text = f"connect failure: {message}"
    else:
        text = f"upstream drop: {message}"
    return clean_text(text, known=state.secrets)


class Router:
    """The routing addon. ``sink`` receives one UsageRecord per upstream attempt.

    It owns the HTTP client of the one failover hop (tests hand in one over a mock transport) and
    closes it in mitmproxy's ``done`` hook, when the proxy shuts down."""

    def __init__(
        self,
        runtime: Runtime,
        sink: Callable[[UsageRecord], None],
        failover_client: DefaultLaneClient | None = None,
    ):
        self.runtime = runtime
        self.sink = sink
        self.in_flight = 0  # routed calls not yet finished: what a graceful stop waits for
        self.failover_client = failover_client or DefaultLaneClient()

    async def done(self) -> None:
        await self.failover_client.close()

    def answer_locally(
        self,
        flow: http.HTTPFlow,
        response: http.Response,
        reason: Reason,
        error: str,
    ) -> None:
        """Answer ``flow`` here, contacting no lane, and write its usage line (lane null).

        For requests ccmitm refuses before routing: a missing client token, a malformed or
        ambiguous request. ``error`` goes into the usage line: plain words, never a value the
        client sent (it may be a credential)."""
        flow.response = response
        now = time.time()
        started = flow.request.timestamp_start or now
        secrets = request_secrets(flow.request.headers.fields, self.runtime.secret_values())
        self.sink(
            UsageRecord(
                ts=datetime.fromtimestamp(started, UTC).isoformat(timespec="milliseconds"),
                id=flow.id,
                listener=_listener(flow),
                lane=None,
                rule=None,
                reason=str(reason),
                method=clean_text(flow.request.method, 16) or "",
                path=clean_text(_target(flow.request), known=secrets) or "",
                model=None,
                upstream_model=None,
                status=response.status_code,
                stream=False,
                ttfb_ms=None,
                duration_ms=_ms(now - started),
                input_tokens=None,
                output_tokens=None,
                cache_read_input_tokens=None,
                cache_creation_input_tokens=None,
                header_mode="none",
                http_version=flow.request.http_version,
                upstream_http_version=None,
                session=None,
                error=clean_text(error, known=secrets),
            )
        )

    # --- hooks ---------------------------------------------------------------------------------
    def _too_large(self, flow: http.HTTPFlow, size: int) -> bool:
        limit = self.runtime.active.config.proxy.max_body_bytes
        if size <= limit:
            return False
        response = anthropic_error(
            413, "request_too_large", f"request body is larger than ccmitm's limit of {limit} bytes"
        )
        self.answer_locally(flow, response, Reason.REJECTED, "request body over proxy.max_body_bytes")
        return True

    def _reject(self, flow: http.HTTPFlow, problem: str) -> None:
        """Answer a request that fails a hygiene check with a 400, before any lane sees it."""
        response = anthropic_error(400, "invalid_request_error", f"ccmitm refused this request: {problem}")
        self.answer_locally(flow, response, Reason.REJECTED, problem)

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:  # already answered (e.g. refused by the client auth)
            return
        problem = hygiene.head_problem(flow.request)
        if problem is not None:
            self._reject(flow, problem)
            return
        length = flow.request.headers.get("content-length", "")
        if length.isdigit():  # refuse before reading the body
            self._too_large(flow, int(length))

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:  # already answered (e.g. rejected in requestheaders)
            return
        problem = hygiene.body_problem(flow.request)
        if problem is not None:
            self._reject(flow, problem)
            return
        if self._too_large(flow, len(flow.request.raw_content or b"")):  # a chunked upload
            return
        try:
            self._route(flow)
        except Exception:
            # A bug here must not forward a half-rewritten request: answer instead (clients retry).
            log.exception("routing failed; answering 502")
            if flow.metadata.pop(FLOW_KEY, None) is not None:
                self.in_flight -= 1
            flow.response = anthropic_error(502, "api_error", "ccmitm could not route this request")

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        state: FlowState | None = flow.metadata.get(FLOW_KEY)
        if state is None or flow.response is None:
            return
        response = flow.response
        headers = pick_headers(response.headers.fields, RESPONSE_HEADERS)
        if state.permit is not None:
            status = response.status_code
            kind = is_breaker_failure(status, None)
            length = headers.get(b"content-length", "")
            small_json = (
                400 <= status < 500
                and length.isdigit()
                and int(length) <= REFUSAL_BODY_BYTES
                and not is_event_stream(headers.get(b"content-type"))
            )
            if state.original is not None and (kind in FAILOVER_KINDS or small_json):
                # Hold the refusal back (it is a small error body, never a stream) so that the
                # client sees only the default lane's answer, and decide in response(), where
                # the body (Z.AI's code and message) has been read.
                state.failing_over = True
                state.refusal_headers = {
                    name: headers[name.encode()]
                    for name in ("retry-after", "retry-after-ms")
                    if name.encode() in headers
                }
                return
            self._record_outcome(state, kind, status, headers.get(b"retry-after"))
        reader = UsageReader(headers.get(b"content-type"), headers.get(b"content-encoding"))
        state.reader = reader
        length = headers.get(b"content-length", "")
        if not reader.is_sse and length.isdigit() and int(length) <= BUFFERED_REPLY_BYTES:
            # A small whole reply (JSON): let mitmproxy read it in one piece and read its usage in
            # response(). Streaming it would only add mitmproxy's per-chunk work to every call.
            state.first_byte = state.last_byte = time.time()
            state.buffered = True
            return

        def tap(chunk: bytes) -> bytes:
            if chunk:
                now = time.time()
                if state.first_byte is None:
                    state.first_byte = now
                state.last_byte = now
            reader.feed(chunk)
            return chunk

        # Streamed: SSE event by event, and any reply too large (or of unknown length) to hold.
        response.stream = tap

    async def response(self, flow: http.HTTPFlow) -> None:
        state: FlowState | None = flow.metadata.get(FLOW_KEY)
        if state is not None and state.failing_over and not state.logged and self._judge_refusal(flow, state):
            await self._failover(flow, state)
            return
        if state is not None and state.buffered and state.reader is not None and flow.response is not None:
            state.reader.feed(flow.response.raw_content or b"")  # see responseheaders()
            state.last_byte = time.time()
        self._finish(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        state: FlowState | None = flow.metadata.get(FLOW_KEY)
        if state is not None and state.permit is not None:
            status = flow.response.status_code if flow.response else None
            kind = is_breaker_failure(status, _error_text(flow, state, self._read_timeout()))
            breaker = self.runtime.breakers.get(state.lane.name)
            if not state.outcome_recorded:
                self._record_outcome(state, kind, status, None)
            elif kind is not None and breaker is not None:
                breaker.record_failure(state.permit, kind, status)  # a good status, then the body broke
        self._finish(flow)

    # --- routing ---------------------------------------------------------------------------------
    def _read_timeout(self) -> float:
        return self.runtime.active.config.proxy.read_timeout_s

    def _route(self, flow: http.HTTPFlow) -> None:
        request = flow.request
        _strip_client_token(request)  # first: the failover copy below must not hold it either
        snapshot = self.runtime.active
        path = request.path.split("?", 1)[0]
        body: Any = None
        facts = RequestFacts(request.method, path, None)
        if facts.is_messages or facts.is_count_tokens:
            body = _parse_body(request)
            facts = RequestFacts(request.method, path, model_of(body))
        route = decide(facts, snapshot.table, self.runtime.conditions())
        permit = None
        hold_trial = False
        held_as: str | None = None
        if snapshot.lanes[route.lane].keyed:
            hold = self.runtime.holds.get(route.lane)
            trial = hold.acquire() if hold is not None else None
            breaker = self.runtime.breakers.get(route.lane)
            if trial is False:  # the hold's one trial went to another request first
                route = Route(snapshot.table.default_lane, Reason.LANE_HOLD, route.rule)
            else:
                permit = breaker.acquire() if breaker is not None else None
                if permit is None:  # the half-open trial slot went to another request first
                    if trial and hold is not None:
                        hold.release()
                    route = Route(snapshot.table.default_lane, Reason.BREAKER, route.rule)
                else:
                    hold_trial = bool(trial)
        if route.reason is Reason.LANE_HOLD and facts.model is not None:
            rule = snapshot.table.first_match(facts.model)
            hold = self.runtime.holds.get(rule.lane) if rule is not None else None
            held_as = str(hold.refusal.cls) if hold is not None and hold.refusal else None
        lane = snapshot.lanes[route.lane]
        # Read once: redacted from the usage line by value, and filtered from a keyed lane's headers.
        credentials = client_credentials(request.headers.fields)
        state = FlowState(
            route=route,
            lane=lane,
            listener=_listener(flow),
            path=path,
            model=facts.model,
            stream_requested=isinstance(body, dict) and body.get("stream") is True,
            started=request.timestamp_start or time.time(),
            hints=ClientHints.of(request.headers.fields),
            permit=permit,
            hold_trial=hold_trial,
            held_as=held_as,
            secrets=secrets_with(credentials, self.runtime.secret_values()),
        )
        if lane.keyed and snapshot.config.breaker.failover:
            state.original = OriginalRequest.of(request)
        if not lane.keyed and facts.is_messages and isinstance(body, dict):
            stripped = strip_foreign_thinking(body, self.runtime.foreign_signatures.is_foreign)
            if stripped.changed:
                state.thinking_stripped = stripped.blocks
                request.content = _serialise(body)
        self._rewrite(request, lane, route, body, credentials)
        hygiene.set_framing(request)  # last: the rewrite may have changed the body
        _via(flow, snapshot.upstream_proxy)
        flow.metadata[FLOW_KEY] = state
        self.in_flight += 1

    @staticmethod
    def _rewrite(
        request: http.Request, lane: LaneEndpoint, route: Route, body: Any, credentials: frozenset[bytes]
    ) -> None:
        # Order matters so that no credential reaches the wrong lane: destination first, credentials
        # last (the client's out and the lane key in at once), so a failure part-way never sends a
        # key astray.
        query = request.path.partition("?")[1:]
        request.scheme = lane.scheme
        request.data.host = lane.host  # the port setter below updates Host/:authority for both
        request.port = lane.port
        if lane.prefix:
            request.path = lane.prefix + request.path.split("?", 1)[0] + "".join(query)
        if route.upstream_model is not None and isinstance(body, dict):
            body["model"] = route.upstream_model
            request.content = _serialise(body)
        if lane.keyed:
            # The client's credentials out and the lane key in, in one assignment of the fields.
            assert lane.auth_field is not None, "decide() never routes to a lane without a key"
            # By value too: a credential copied into any other header stays behind as well.
            headers = request.headers
            headers.fields = (
                *(
                    f
                    for f in headers.fields
                    if f[0].lower() not in _STRIPPED_ON_KEYED_LANES
                    and not hygiene.carries_credential(f[1], credentials)
                ),
                lane.auth_field,
            )

    # --- breaker, holds and failover --------------------------------------------------------------
    def _judge_refusal(self, flow: http.HTTPFlow, state: FlowState) -> bool:
        """Read a held-back refusal's body: hold the lane, count it against the breaker, or
        neither. True to fail over; False when it is the request's plain fault (a 400 without a
        code we know), which then reaches the client as the lane sent it."""
        assert flow.response is not None
        response = flow.response
        status = response.status_code
        kind = is_breaker_failure(status, None)
        headers = state.refusal_headers or {}
        # Decoded within the same bound (classify reads no more): a small compressed refusal
        # could expand a thousandfold.
        body = decode_bounded(
            response.raw_content or b"", response.headers.get("content-encoding"), REFUSAL_BODY_BYTES
        )
        refusal = classify(status, body, headers, self.runtime.wall())
        if refusal is not None and (refusal.message or refusal.code):
            # The upstream's own words (and an unknown code) reach `ccctl status` and the log: an
            # upstream may echo a key in them, glued to letters where no pattern finds it.
            refusal = replace(
                refusal,
                message=clean_text(refusal.message, known=state.secrets) or "",
                code=clean_text(refusal.code, 40, state.secrets),
            )
        state.refusal = str(refusal.cls) if refusal is not None else None
        if refusal is None and kind not in FAILOVER_KINDS:
            self._record_outcome(state, None, status, None)
            state.failing_over = False
            reader = UsageReader(response.headers.get("content-type"), None)
            reader.feed(response.raw_content or b"")
            state.reader = reader
            state.first_byte = state.last_byte = time.time()
            return False
        if refusal is not None and refusal.cls in HOLDING and refusal.code is not None:
            self._start_hold(state, refusal)
            return True
        hold = self.runtime.holds.get(state.lane.name)
        if state.hold_trial and hold is not None and hold.clear():
            log.warning("lane %s hold ended: the trial call was not refused for it", state.lane.name)
        if refusal is not None and refusal.cls is RefusalClass.CONTENT:
            # The request's fault (unsafe content): the lane is fine, so no breaker failure.
            self._record_outcome(state, None, status, None)
            return True
        self._record_outcome(state, kind, status, headers.get("retry-after"))
        return True

    def _start_hold(self, state: FlowState, refusal: Refusal) -> None:
        """Take the lane out of rotation; one log line when a hold starts, none per call."""
        name = state.lane.name
        hold = self.runtime.holds.get(name)
        breaker = self.runtime.breakers.get(name)
        if breaker is not None and state.permit is not None and not state.outcome_recorded:
            state.outcome_recorded = True  # the hold decides, not the breaker: no double count
            breaker.release(state.permit)
        if hold is None:
            return
        model = state.route.upstream_model or state.model
        if refusal.cls is RefusalClass.CONFIG and model:
            # Say which rule's model is wrong: that is what the user has to fix.
            rule = f" (rule {state.route.rule})" if state.route.rule else ""
            refusal = replace(refusal, words=f"{refusal.words}: {clean_text(model, 80, state.secrets)}{rule}")
        if hold.start(refusal):
            snapshot = hold.snapshot()
            until = snapshot["until"] if snapshot else None
            log.warning(
                "lane %s HOLD (%s%s): its traffic goes to %s %s",
                name,
                refusal.words,
                f", code {refusal.code}" if refusal.code else "",
                self.runtime.active.config.routing.default_lane,
                f"until {until}" if until else "until `ccctl lane reset`",
            )

    def _record_outcome(
        self, state: FlowState, kind: str | None, status: int | None, retry_after: str | None
    ) -> None:
        breaker = self.runtime.breakers.get(state.lane.name)
        if breaker is None or state.permit is None or state.outcome_recorded:
            return
        state.outcome_recorded = True
        hold = self.runtime.holds.get(state.lane.name)
        if kind is None:
            if status is None:  # no outcome (client went away first): give a trial slot back
                breaker.release(state.permit)
                if state.hold_trial and hold is not None:
                    hold.release()
                return
            if state.hold_trial and hold is not None and hold.clear():
                log.warning("lane %s hold ended: the trial call succeeded", state.lane.name)
            if breaker.record_success(state.permit) is not None:
                log.warning("lane %s is healthy again: breaker closed", state.lane.name)
            return
        if state.hold_trial and hold is not None:
            hold.release()  # the breaker now decides; a later call may try the hold again
        if breaker.record_failure(state.permit, kind, status, retry_after) is not None:
            snapshot = breaker.snapshot()
            log.warning(
                "lane %s breaker OPEN (%s): its traffic goes to %s until %s",
                state.lane.name,
                snapshot.get("message") or kind,
                self.runtime.active.config.routing.default_lane,
                snapshot.get("retry_at"),
            )

    async def _failover(self, flow: http.HTTPFlow, state: FlowState) -> None:
        """Answer a call the offload lane refused from the default lane (at most once)."""
        assert state.original is not None and flow.response is not None
        snapshot = self.runtime.active
        default = snapshot.lanes[snapshot.table.default_lane]
        refused = flow.response
        self._finish(flow, error=f"refused with {refused.status_code}; failed over to {default.name}")
        attempt = FlowState(
            route=Route(default.name, Reason.FAILOVER, state.route.rule),
            lane=default,
            listener=state.listener,
            path=state.path,
            model=state.model,
            stream_requested=state.stream_requested,
            started=time.time(),
            hints=state.hints,
            thinking_stripped=state.thinking_stripped,
            secrets=state.secrets,
        )
        self.in_flight += 1
        original = state.original.rebuild(flow.request)
        body = _parse_body(original)
        foreign = self.runtime.foreign_signatures.is_foreign
        if isinstance(body, dict) and strip_foreign_thinking(body, foreign).changed:
            original.content = _serialise(body)
        error: str | None = None
        response: http.Response | None = None
        try:
            response = await self.failover_client.send(
                original, default, self._read_timeout(), self.runtime.active.config.proxy.upstream_proxy
            )
        except Exception as exc:
            error = clean_text(
                f"failover to {default.name} failed: {type(exc).__name__}: {exc}", known=state.secrets
            )
            log.warning("%s", error)
        if response is not None:
            attempt.first_byte = attempt.last_byte = time.time()
            reader = UsageReader(response.headers.get("content-type"), None)
            reader.feed(response.content or b"")
            attempt.reader = reader
            flow.response = response  # the client never saw the refusal
        self._emit(flow, attempt, flow.response if response is not None else None, error, attempt_of=flow.id)

    # --- accounting ------------------------------------------------------------------------------
    def _finish(self, flow: http.HTTPFlow, error: str | None = None) -> None:
        state: FlowState | None = flow.metadata.get(FLOW_KEY)
        if state is None or state.logged:
            return
        error = error or _error_text(flow, state, self._read_timeout())
        self._emit(flow, state, flow.response, error)

    def _emit(
        self,
        flow: http.HTTPFlow,
        state: FlowState,
        response: http.Response | None,
        error: str | None,
        attempt_of: str | None = None,
    ) -> None:
        state.logged = True
        self.in_flight -= 1
        usage: Usage | None = state.reader.close() if state.reader else None
        if error is None and usage is not None and usage.error_type:
            error = f"upstream error event: {usage.error_type}"
        if error is None and usage is not None and usage.unread:
            error = f"usage not read: {usage.unread}"  # e.g. a compressed body past the bound
        if usage is not None and state.lane.keyed and usage.signatures:
            self.runtime.foreign_signatures.add_all(usage.signatures)
        if state.reader is not None:
            is_sse = state.reader.is_sse
        else:  # no reader: a refusal held back for failover, or no response at all
            is_sse = response is not None and is_event_stream(response.headers.get("content-type"))
        known = state.secrets  # the lane keys and this request's own credentials
        record = UsageRecord(
            ts=datetime.fromtimestamp(state.started, UTC).isoformat(timespec="milliseconds"),
            id=str(uuid.uuid4()) if attempt_of else flow.id,
            listener=state.listener,
            lane=state.route.lane,
            rule=clean_text(state.route.rule, known=known),
            reason=str(state.route.reason),
            method=clean_text(flow.request.method, 16, known) or "",
            path=clean_text(state.path, known=known) or "",
            model=clean_text(state.model, known=known),
            upstream_model=clean_text(state.route.upstream_model or state.model, known=known),
            status=response.status_code if response else None,
            stream=is_sse or state.stream_requested,
            ttfb_ms=_ms(state.first_byte - state.started) if state.first_byte else None,
            duration_ms=_ms(time.time() - state.started),
            input_tokens=usage.input_tokens if usage else None,
            output_tokens=usage.output_tokens if usage else None,
            cache_read_input_tokens=usage.cache_read_input_tokens if usage else None,
            cache_creation_input_tokens=usage.cache_creation_input_tokens if usage else None,
            header_mode=state.lane.header_mode,
            http_version=flow.request.http_version,
            upstream_http_version=response.http_version if response else None,
            session=clean_text(state.hints.session, 80, known),
            error=clean_text(error, known=known),
            attempt_of=attempt_of,
            thinking_stripped=state.thinking_stripped,
            request_class=request_class_of(state.hints.request_class),
            agent_type=clean_text(state.hints.agent_type, 40, known),
            hold=state.held_as,
            refusal=state.refusal,
        )
        failed = error is not None or record.status is None or record.status >= 400
        self.runtime.record(record, failed)
        self.sink(record)


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


__all__ = ["FLOW_KEY", "Router"]
