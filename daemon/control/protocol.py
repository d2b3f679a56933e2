"""The control protocol, typed in one place: the wire format and the shape of every reply.

One JSON request line, one JSON reply line, over a Unix socket. A request is
``{"cmd": "status", "args": {...}}``; a reply is ``{"ok": true, "result": ...}`` or
``{"ok": false, "error": "..."}``.

The replies are ``TypedDict``\\ s: on the wire they stay plain JSON (``ccctl status --json`` prints
them as they come), while the daemon that builds them and every reader (``ccctl status``, ``top``,
``endurance``) name their fields through these types, so a renamed field is a type error in all
of them rather than a blank on a user's screen. This module imports nothing heavy: the control
client loads it on every ccctl call.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Literal, NotRequired, TypedDict

if TYPE_CHECKING:
    # Types only: the core modules they live in cost more to import than `ccctl statusline` may
    # spend, and with postponed annotations a TypedDict never evaluates its field types.
    from ccmitm.core.breaker import BreakerSnapshot
    from ccmitm.core.refusals import HoldSnapshot

Command = Literal[
    "ping",
    "status",
    "pause",
    "resume",
    "reload",
    "config-show",
    "rotate",
    "reopen-logs",
    "bundle",
    "lane-reset",
    "session",
]
#: The largest request line the server reads.
MAX_LINE = 1024 * 1024


class ControlError(RuntimeError):
    """The daemon answered with an error, or could not be asked."""


# --- the wire ------------------------------------------------------------------------------------
def encode_request(cmd: str, args: dict[str, Any]) -> bytes:
    return json.dumps({"cmd": cmd, "args": args}).encode() + b"\n"


def decode_request(line: bytes) -> tuple[str, dict[str, Any]]:
    """``(cmd, args)`` of a request line; ValueError when it is not a well-formed request."""
    try:
        request = json.loads(line)
        cmd = request["cmd"]
        args = request.get("args") or {}
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ValueError("malformed request") from None
    if not isinstance(cmd, str) or not isinstance(args, dict):
        raise ValueError("malformed request")
    return cmd, args


def encode_reply(result: Any = None, error: str | None = None) -> bytes:
    reply = {"ok": False, "error": error} if error is not None else {"ok": True, "result": result}
    return json.dumps(reply, default=str).encode() + b"\n"


def decode_reply(raw: bytes) -> Any:
    """The result of a reply line; ControlError with the daemon's message for an error reply."""
    try:
        reply = json.loads(raw)
    except ValueError:
        raise ControlError("ccmitmd sent an unreadable answer") from None
    if not isinstance(reply, dict) or not reply.get("ok"):
        error = reply.get("error") if isinstance(reply, dict) else None
        raise ControlError(str(error or "unknown error"))
    return reply.get("result")


# --- replies -------------------------------------------------------------------------------------
class TokenCounts(TypedDict):
    input_tokens: int
    output_tokens: int
    cache_read_input_tokens: int
    cache_creation_input_tokens: int


class LaneCounters(TypedDict):
    """A lane's counters since the daemon started (the usage record's view, kept live)."""

    requests: int
    errors: int
    p50_ms: float | None
    p95_ms: float | None
    by_request_class: dict[str, int]
    tokens: TokenCounts


class QuotaWindow(TypedDict):
    percent: float | None  # share of the window used, 0-100
    resets_at: str | None  # ISO time (UTC) the window resets


class LaneQuota(TypedDict):
    """A Z.AI lane's quota meter, as last read in the background (never on a call's path)."""

    state: Literal["ok", "unknown"]  # "unknown": not read yet, or the meter failed / is unsupported
    five_hour: QuotaWindow | None
    week: QuotaWindow | None
    checked_at: str | None  # when the meter was last asked (UTC)


class LaneStatus(LaneCounters):
    url: str
    default: bool
    header_mode: str  # "x-api-key", "authorization" or "passthrough"
    available: bool
    problem: str | None  # why a keyed lane has no key
    breaker: BreakerSnapshot | None  # None for a pass-through lane
    quota: NotRequired[LaneQuota | None]  # None: no meter (not a Z.AI lane, or no key)
    # The lane's hold, None when it is in rotation (or a pass-through lane).
    hold: NotRequired[HoldSnapshot | None]


class LaneResetReply(TypedDict):
    lane: str
    hold_ended: bool  # a hold was on and is now off


class BoundListener(TypedDict):
    mode: str
    addresses: list[tuple[str, int]]  # (host, port) pairs


class ListenersStatus(TypedDict):
    host: str
    port: int
    reverse_port: int | None
    bound: list[BoundListener]


class ConfigStatus(TypedDict):
    path: str
    source: str
    loaded_at: str
    overrides: list[str]
    last_reload_error: str | None
    last_reload_error_at: str | None


class LogsStatus(TypedDict):
    usage: str
    daemon: str
    lines_written: int
    write_errors: int


class JobStatus(TypedDict):
    id: str
    name: str
    next_run: str | None


class BundleRun(TypedDict):
    at: str
    path: str | None
    ok: bool
    error: str | None


class BundleStatus(TypedDict):
    next: str | None
    last: BundleRun | None


class TelemetryStatus(TypedDict):
    prometheus: str | None  # the /metrics URL while it is served
    prometheus_error: str | None  # why metrics.listen is not served (e.g. the port is taken)
    otlp: str | None  # the collector's metrics URL (no credentials) while OTLP export is on
    otlp_exports: int  # exports the collector accepted
    otlp_failed: int  # exports that failed: their points were dropped


class StatusReply(TypedDict):
    running: bool
    pid: int
    version: str
    started_at: str
    uptime_s: float
    listeners: ListenersStatus
    paused: bool
    paused_source: str
    http2: bool
    intercept_hosts: list[str]
    in_flight: int
    lanes: dict[str, LaneStatus]
    config: ConfigStatus
    logs: LogsStatus
    control_socket: str
    jobs: list[JobStatus]
    bundle: BundleStatus
    now: str
    telemetry: NotRequired[TelemetryStatus]


class PauseReply(TypedDict):
    paused: bool
    source: str


class ReloadReply(TypedDict):
    ok: bool
    source: NotRequired[str]
    changed: NotRequired[list[str]]
    error: NotRequired[str]


class ConfigShowReply(TypedDict):
    source: str
    overrides: NotRequired[list[str]]
    config: dict[str, Any]
    lane_keys: NotRequired[dict[str, str]]  # "present" or "missing: <why>"; never a key
    paused: NotRequired[bool]  # the effective kill-switch, as in StatusReply
    paused_source: NotRequired[str]


class RotateReply(TypedDict):
    usage: str | None
    daemon: str | None


class ReopenReply(TypedDict):
    reopened: list[str]


class SessionLaneState(TypedDict):
    """What a status line must say about a lane that is not taking calls."""

    lane: str
    # held: a refusal holds it; breaker: open or half-open; quota: its meter reads 100% (no refusal
    # yet); unavailable: no key
    state: Literal["held", "breaker", "quota", "unavailable"]
    cls: str | None  # the hold's class ("quota", "billing", ...); None for a breaker
    until: str | None  # ISO time (UTC) the lane is tried again, when known
    words: str  # the cause in a few words


class SessionReply(TypedDict):
    """``session``: one Claude Code session's counters and the daemon state its status line shows.

    The counters are zero for a session the daemon has not seen (or has forgotten: it keeps the
    most recently active few hundred)."""

    session: str | None
    known: bool  # the daemon has calls of this session
    calls: dict[str, int]  # lane -> calls; "refused" for calls ccmitm answered itself
    last_lane: str | None  # the lane of the session's last call; None: refused or no call yet
    last_at: str | None
    errors: int
    offloaded_calls: int
    offloaded_tokens: int  # input + output tokens the offload lanes counted
    saved_usd: float | None  # the estimate of what those calls would have cost on the default lane
    default_lane: str
    paused: bool
    paused_source: str
    lanes: list[SessionLaneState]  # lanes held, behind an open breaker or without their key
    config_error: str | None  # the last rejected reload (the previous config keeps serving)
