"""The control commands: what each ``ccctl`` request does to the running daemon, and its reply.

Each handler takes the request's arguments and returns a reply typed in
:mod:`ccmitm.control.protocol`; the server does the wire format. The status reply is built here,
from the daemon's parts, and nowhere else.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ccmitm import __version__
from ccmitm.control.protocol import (
    ConfigShowReply,
    ControlError,
    LaneQuota,
    LaneResetReply,
    LaneStatus,
    PauseReply,
    ReloadReply,
    SessionLaneState,
    SessionReply,
    StatusReply,
)
from ccmitm.control.server import Handler
from ccmitm.proxy.state import LaneStats
from ccmitm.reports.bundle_state import load_last_run
from ccmitm.supervisor.housekeeping import BUNDLE_JOB
from ccmitm.supervisor.sessions import estimate_savings

if TYPE_CHECKING:
    from ccmitm.supervisor.daemon import Daemon

log = logging.getLogger("ccmitm")


def control_handlers(daemon: Daemon) -> dict[str, Handler]:
    """The handler of every command :data:`~ccmitm.control.protocol.Command` names."""

    async def ping(_: dict[str, Any]) -> str:
        return "pong"

    async def status(_: dict[str, Any]) -> StatusReply:
        await daemon.recheck_key_files()  # a key file fixed a moment ago shows as available
        return status_reply(daemon)

    async def pause(_: dict[str, Any]) -> PauseReply:
        runtime = daemon.runtime
        runtime.set_paused(True, "ccctl pause")
        log.warning("paused by ccctl: every call goes to %s", runtime.active.config.routing.default_lane)
        return {"paused": True, "source": runtime.paused_source}

    async def resume(_: dict[str, Any]) -> PauseReply:
        runtime = daemon.runtime
        runtime.set_paused(False, "ccctl resume")
        log.warning("resumed by ccctl: routing rules apply again")
        return {"paused": runtime.paused, "source": runtime.paused_source}

    async def reload(_: dict[str, Any]) -> ReloadReply:
        result = await daemon.reload("ccctl reload")
        if not result["ok"]:
            raise ControlError(f"reload rejected (the previous config keeps serving): {result.get('error')}")
        return result

    async def config_show(_: dict[str, Any]) -> ConfigShowReply:
        snapshot = daemon.runtime.active
        return {
            "source": snapshot.loaded.source,
            "overrides": list(snapshot.loaded.overrides),
            "config": snapshot.config.redacted(),
            "lane_keys": {
                name: ("present" if lane.available else f"missing: {lane.problem}")
                for name, lane in snapshot.lanes.items()
                if lane.keyed
            },
            "paused": daemon.runtime.paused,
            "paused_source": daemon.runtime.paused_source,
        }

    async def rotate(_: dict[str, Any]) -> Any:
        return await daemon.force_rotate()

    async def reopen_logs(_: dict[str, Any]) -> Any:
        return await daemon.reopen_logs()

    async def bundle(_: dict[str, Any]) -> dict[str, Any]:
        return await daemon.run_bundle()

    async def lane_reset(args: dict[str, Any]) -> LaneResetReply:
        # The user acted on a hold (topped up, fixed the key or model): the lane's next call
        # is its trial. The log line comes from Runtime.reset_lane.
        name = args.get("lane")
        runtime = daemon.runtime
        hold = runtime.holds.get(name) if isinstance(name, str) else None
        was_held = hold is not None and hold.held
        if not isinstance(name, str) or not runtime.reset_lane(name):
            keyed = ", ".join(sorted(runtime.holds)) or "none"
            raise ControlError(f"no keyed lane {name!r} (keyed lanes: {keyed})")
        return {"lane": name, "hold_ended": was_held}

    async def session(args: dict[str, Any]) -> SessionReply:
        return session_reply(daemon, args.get("session"))

    return {
        "ping": ping,
        "status": status,
        "pause": pause,
        "resume": resume,
        "reload": reload,
        "config-show": config_show,
        "rotate": rotate,
        "reopen-logs": reopen_logs,
        "bundle": bundle,
        "lane-reset": lane_reset,
        "session": session,
    }


def status_reply(daemon: Daemon) -> StatusReply:
    runtime = daemon.runtime
    snapshot = runtime.active
    config = snapshot.config
    lanes: dict[str, LaneStatus] = {}
    for name, lane in snapshot.lanes.items():
        stats = runtime.stats.get(name) or LaneStats()
        breaker = runtime.breakers.get(name)
        hold = runtime.holds.get(name)
        lanes[name] = {
            "url": config.lanes[name].url,
            "default": name == config.routing.default_lane,
            "header_mode": lane.header_mode,
            "available": lane.available,
            "problem": lane.problem,
            "breaker": breaker.snapshot() if breaker is not None else None,
            "quota": daemon.quota.status(name),
            "hold": hold.snapshot() if hold is not None else None,
            **stats.counters(),
        }
    last_bundle = load_last_run(daemon.state_dir)
    proxy = daemon.proxy
    return {
        "running": True,
        "pid": os.getpid(),
        "version": __version__,
        "started_at": runtime.started_at.isoformat(timespec="seconds"),
        "uptime_s": runtime.uptime_s(),
        "listeners": {
            "host": config.proxy.host,
            "port": config.proxy.port,
            "reverse_port": config.proxy.reverse_port,
            "bound": [{"mode": info.mode, "addresses": list(info.addresses)} for info in proxy.listeners()]
            if proxy
            else [],
        },
        "paused": runtime.paused,
        "paused_source": runtime.paused_source,
        "http2": config.proxy.http2,
        "intercept_hosts": config.proxy.intercept_hosts,
        "in_flight": daemon.router.in_flight,
        "lanes": lanes,
        "config": {
            "path": str(daemon.config_path),
            "source": snapshot.loaded.source,
            "loaded_at": snapshot.loaded.loaded_at.isoformat(timespec="seconds"),
            "overrides": list(snapshot.loaded.overrides),
            "last_reload_error": runtime.last_reload_error,
            "last_reload_error_at": runtime.last_reload_error_at,
        },
        "logs": {
            "usage": str(daemon.usage.path),
            "daemon": str(daemon.state_dir / "daemon.log"),
            "lines_written": daemon.usage.lines_written,
            "write_errors": daemon.usage.write_errors,
        },
        "control_socket": str(daemon.control.socket_path),
        "jobs": daemon.housekeeping.jobs(),
        "bundle": {
            "next": daemon.housekeeping.next_run(BUNDLE_JOB),
            "last": {
                "at": last_bundle.at.isoformat(),
                "path": last_bundle.path,
                "ok": last_bundle.ok,
                "error": last_bundle.error,
            }
            if last_bundle
            else None,
        },
        "now": datetime.now(UTC).isoformat(timespec="seconds"),
        "telemetry": daemon.telemetry.status(),
    }


def session_reply(daemon: Daemon, session: Any) -> SessionReply:
    """One session's counters and the state bits a status line shows (cheap: no key-file check)."""
    runtime = daemon.runtime
    snapshot = runtime.active
    config = snapshot.config
    session_id = session if isinstance(session, str) and session else None
    tally = daemon.sessions.get(session_id) if session_id else None
    lanes: list[SessionLaneState] = []
    for name, lane in snapshot.lanes.items():
        hold = runtime.holds.get(name)
        held = hold.snapshot() if hold is not None else None
        breaker = runtime.breakers.get(name)
        breaker_state = breaker.snapshot() if breaker is not None else None
        if held:
            lanes.append(
                {
                    "lane": name,
                    "state": "held",
                    "cls": held["cls"],
                    "until": held["until"],
                    "words": held["words"],
                }
            )
        elif breaker_state and breaker_state["state"] != "closed":
            lanes.append(
                {
                    "lane": name,
                    "state": "breaker",
                    "cls": None,
                    "until": breaker_state["retry_at"],
                    "words": f"breaker {breaker_state['state']}",
                }
            )
        elif (used_up := _used_up_window(daemon.quota.status(name))) is not None:
            label, resets_at = used_up
            lanes.append(
                {
                    "lane": name,
                    "state": "quota",
                    "cls": "quota",
                    "until": resets_at,
                    "words": f"{label} quota used up",
                }
            )
        elif not lane.available:
            lanes.append(
                {
                    "lane": name,
                    "state": "unavailable",
                    "cls": None,
                    "until": None,
                    "words": lane.problem or "no key",
                }
            )
    offloaded = tally.offloaded if tally else {}
    return {
        "session": session_id,
        "known": tally is not None,
        "calls": dict(tally.calls) if tally else {},
        "last_lane": tally.last_lane if tally else None,
        "last_at": tally.last_ts if tally else None,
        "errors": tally.errors if tally else 0,
        "offloaded_calls": sum(t.calls for t in offloaded.values()),
        "offloaded_tokens": sum(t.input_tokens + t.output_tokens for t in offloaded.values()),
        "saved_usd": estimate_savings(offloaded, config.pricing) if offloaded else None,
        "default_lane": config.routing.default_lane,
        "paused": runtime.paused,
        "paused_source": runtime.paused_source,
        "lanes": lanes,
        "config_error": runtime.last_reload_error,
    }


def _used_up_window(quota: LaneQuota | None) -> tuple[str, str | None] | None:
    """The first quota window the meter reads as used up ("5h" or "week") and when it resets."""
    if not quota or quota.get("state") != "ok":
        return None
    for label, window in (("5h", quota.get("five_hour")), ("week", quota.get("week"))):
        percent = window.get("percent") if window else None
        if window and percent is not None and percent >= 100:
            return label, window.get("resets_at")
    return None
