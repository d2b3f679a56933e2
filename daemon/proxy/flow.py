"""What the Router keeps about one call while it runs: its route, lane, timings and the client's
request as it arrived (for a failover), plus the small readings of a flow's headers."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field

from mitmproxy import http

from ccmitm.core.breaker import Permit
from ccmitm.core.routing import Route
from ccmitm.core.sse import UsageReader
from ccmitm.proxy.state import LaneEndpoint

HeaderFields = tuple[tuple[bytes, bytes], ...]


def pick_headers(fields: HeaderFields, wanted: frozenset[bytes]) -> dict[bytes, str]:
    """The first value of each wanted (lower-case) header, in one pass over the raw fields: on the
    hot path, mitmproxy's ``Headers.get()`` walks and re-encodes every field for every name."""
    found: dict[bytes, str] = {}
    for name, value in fields:
        lowered = name.lower()
        if lowered in wanted and lowered not in found:
            found[lowered] = value.decode("utf-8", "surrogateescape")
    return found


@dataclass(frozen=True)
class OriginalRequest:
    """The client's request as it arrived, kept for a possible failover. Only references: header
    fields are an immutable tuple and the body immutable bytes, so keeping them costs nothing
    (``Request.copy()`` cost more than all of the routing on every offloaded call)."""

    method: str
    path: str
    header_fields: HeaderFields
    raw_content: bytes | None

    @classmethod
    def of(cls, request: http.Request) -> OriginalRequest:
        return cls(request.method, request.path, request.headers.fields, request.raw_content)

    def rebuild(self, template: http.Request) -> http.Request:
        """A Request that is this one again (made only when a failover actually happens)."""
        request = template.copy()
        request.method = self.method
        request.path = self.path
        request.headers = http.Headers(self.header_fields)
        request.raw_content = self.raw_content
        return request


@dataclass(frozen=True)
class ClientHints:
    """What Claude Code says about a call in its own headers, read once when the call is routed."""

    session: str | None = None  # x-claude-code-session-id
    request_class: str | None = None  # x-claude-code-request-class
    agent_type: str | None = None  # x-claude-code-agent-type

    @classmethod
    def of(cls, fields: HeaderFields) -> ClientHints:
        found = pick_headers(fields, _HINT_HEADERS)
        if not found:
            return NO_HINTS
        return cls(
            found.get(b"x-claude-code-session-id"),
            found.get(b"x-claude-code-request-class"),
            found.get(b"x-claude-code-agent-type"),
        )


#: Headers whose values are a client's credentials (ccmitm's own token included).
CREDENTIAL_HEADERS = frozenset(
    {b"x-api-key", b"authorization", b"cookie", b"proxy-authorization", b"x-ccmitm-token"}
)
# Shorter values would match innocent text by chance; real credentials are far longer.
_MIN_SECRET_BYTES = 8


def client_credentials(fields: HeaderFields) -> frozenset[bytes]:
    """The credential values a client sent in this request: each credential header's value whole,
    and the token after a scheme such as "Bearer ". The one place that knows what a request's
    credentials are: the rewrite removes them by value from a keyed lane's headers, and the usage
    line redacts them by value (:func:`request_secrets`)."""
    found: set[bytes] = set()
    for name, value in fields:
        if name.lower() in CREDENTIAL_HEADERS:
            whole = value.strip()
            for part in (whole, whole.rpartition(b" ")[2]):
                if len(part) >= _MIN_SECRET_BYTES:
                    found.add(part)
    return frozenset(found)


def request_secrets(fields: HeaderFields, known: frozenset[str]) -> frozenset[str]:
    """``known`` plus the credentials a request carries (:func:`client_credentials`), so they can
    be removed by exact value from what is written about it. ``known`` itself (hash already
    cached) when the request carries none."""
    return secrets_with(client_credentials(fields), known)


def secrets_with(credentials: frozenset[bytes], known: frozenset[str]) -> frozenset[str]:
    """``known`` plus ``credentials`` (from :func:`client_credentials`, already read), as text."""
    if not credentials:
        return known
    return _joined(known, tuple(sorted(value.decode("utf-8", "surrogateescape") for value in credentials)))


def _join(known: frozenset[str], values: tuple[str, ...]) -> frozenset[str]:
    return known | frozenset(values)


# The same client sends the same credentials on every call: one frozenset object for them, so the
# text cleaner's cache (keyed on it) compares by identity instead of element by element.
_joined = functools.lru_cache(maxsize=256)(_join)


_HINT_HEADERS = frozenset(
    {b"x-claude-code-session-id", b"x-claude-code-request-class", b"x-claude-code-agent-type"}
)
NO_HINTS = ClientHints()
RESPONSE_HEADERS = frozenset(
    {b"content-type", b"content-encoding", b"content-length", b"retry-after", b"retry-after-ms"}
)


@dataclass
class FlowState:
    route: Route
    lane: LaneEndpoint
    listener: str
    path: str  # as the client sent it, without the query
    model: str | None
    stream_requested: bool
    started: float
    hints: ClientHints = NO_HINTS
    permit: Permit | None = None  # the breaker's permit for a keyed lane
    original: OriginalRequest | None = None  # the client's request, kept for a possible failover
    first_byte: float | None = None
    last_byte: float | None = None
    reader: UsageReader | None = None
    buffered: bool = False  # a small non-SSE reply mitmproxy reads whole (not streamed through the tap)
    failing_over: bool = False
    hold_trial: bool = False  # this call is the one trial that decides whether a held lane is back
    refusal_headers: dict[str, str] | None = None  # a held-back refusal's retry headers, for classify()
    refusal: str | None = None  # the refusal's class (core.refusals.RefusalClass), for the usage line
    held_as: str | None = None  # routed away by a hold: the hold's class, for the usage line
    outcome_recorded: bool = False
    thinking_stripped: int | None = None
    logged: bool = False
    # The secrets to remove by exact value from this call's text (usage line, log, hold message):
    # the daemon's own (lane keys) and the credentials the client sent, read before the rewrite.
    secrets: frozenset[str] = field(default=frozenset(), repr=False)


def anthropic_error(status: int, error_type: str, message: str) -> http.Response:
    """An error in the shape Anthropic's clients parse: {"type":"error","error":{...}}."""
    body = {"type": "error", "error": {"type": error_type, "message": message}}
    return http.Response.make(
        status,
        json.dumps(body).encode(),
        {"content-type": "application/json", "x-ccmitm-error": error_type},
    )
