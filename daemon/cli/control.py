"""ccctl commands that steer a running daemon: status, pause, resume, reload, config show, rotate,
reopen-logs, start, stop. (Wiring a shell, `env` and `run`, is in wiring.py.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import click

from ccmitm import paths
from ccmitm.cli.common import config_path, daemon_call, echo_json, fail, load_config
from ccmitm.cli.statusline import local_time
from ccmitm.control.client import is_running
from ccmitm.control.protocol import LaneQuota, QuotaWindow, SessionReply, StatusReply

# Heavier modules (the core's refusal table, the shell wiring, the config model) are imported
# inside the commands that need them: `ccctl status`, `pause` and `resume` load only this file.


# --- status --------------------------------------------------------------------------------------
def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}ms"


def format_quota(quota: LaneQuota | None, now: datetime | None = None) -> str | None:
    """A Z.AI lane's meter in one phrase: "5h 37% (resets 17:15), week 12% (resets Mon 09:00)";
    "unknown" when it was not read or failed; None when the lane has no meter."""
    if quota is None:
        return None
    if quota.get("state") != "ok":
        return "unknown"

    def window(label: str, value: QuotaWindow | None) -> str | None:
        if value is None:
            return None
        percent = value.get("percent")
        text = f"{label} {percent:.0f}%" if percent is not None else f"{label} ?%"
        resets = local_time(value.get("resets_at"), now)
        return text + (f" (resets {resets})" if resets else "")

    parts = [p for p in (window("5h", quota.get("five_hour")), window("week", quota.get("week"))) if p]
    return ", ".join(parts) or "unknown"


def format_status(status: StatusReply) -> str:
    """`ccctl status` for a reader: booleans as yes/no, times to the second."""
    from ccmitm.core.refusals import plain_words

    def yes_no(value: bool) -> str:
        return "yes" if value else "no"

    def when(text: str | None) -> str:
        # ISO times from the daemon, shown without microseconds (older daemons sent them).
        if not text:
            return "-"
        try:
            return datetime.fromisoformat(text).isoformat(timespec="seconds")
        except ValueError:
            return text

    listeners = status["listeners"]
    host = listeners["host"]
    lines = [
        f"ccmitmd {status['version']} running (pid {status['pid']}, up {_duration(status['uptime_s'])}, "
        f"{status['in_flight']} in flight)",
        f"listeners: intercept {paths.http_url(host, listeners['port'])}"
        + (
            f"  reverse {paths.http_url(host, listeners['reverse_port'])}"
            if listeners["reverse_port"]
            else "  reverse off"
        )
        + f"  http2 {'on' if status['http2'] else 'off'}",
        f"paused:    {yes_no(status['paused'])} ({status['paused_source']})",
        "lanes:",
    ]
    for name, lane in status["lanes"].items():
        role = "default" if lane["default"] else "offload"
        availability = "available yes" if lane["available"] else f"available no ({lane['problem']})"
        breaker = lane["breaker"]
        breaker_text = f"  breaker {breaker['state']}" if breaker else ""
        if breaker and breaker["retry_at"]:
            breaker_text += f" until {when(breaker['retry_at'])}"
        if breaker and breaker["state"] != "closed" and breaker["message"]:
            breaker_text += f" ({breaker['message']})"
        lines.append(
            f"  {name:<10} {role:<8} {lane['header_mode']:<13} {availability}  "
            f"{lane['requests']} req  {lane['errors']} err  "
            f"p50 {_ms(lane['p50_ms'])}  p95 {_ms(lane['p95_ms'])}{breaker_text}"
        )
        tokens = lane.get("tokens") or {}
        if any(tokens.values()):
            lines.append(
                f"  {'':<10} tokens: {tokens.get('input_tokens', 0)} in, "
                f"{tokens.get('output_tokens', 0)} out, {tokens.get('cache_read_input_tokens', 0)} cache read"
            )
        quota = format_quota(lane.get("quota"))
        if quota:
            lines.append(f"  {'':<10} quota: {quota}")
        hold = lane.get("hold")
        if hold:
            default_lane = next((n for n, other in status["lanes"].items() if other["default"]), "default")
            lines.append(f"  {'':<10} HOLD {plain_words(name, hold, default_lane)}")
        classes = lane["by_request_class"]
        if classes:
            lines.append(f"  {'':<10} by request class: " + ", ".join(f"{k} {v}" for k, v in classes.items()))
    config = status["config"]
    lines.append(f"config:    {config['source']} (loaded {when(config['loaded_at'])})")
    if config["overrides"]:
        lines.append(f"overrides: {', '.join(config['overrides'])}")
    lines.append(
        f"reload:    {'last error: ' + config['last_reload_error'] if config['last_reload_error'] else 'ok'}"
    )
    for job in status["jobs"]:
        lines.append(
            f"job:       {job['name']}: next {when(job['next_run']) if job['next_run'] else 'not scheduled'}"
        )
    last = status["bundle"]["last"]
    if last:
        outcome = "ok" if last["ok"] else f"error: {last['error']}"
        lines.append(f"bundle:    last {when(last['at'])} {outcome} {last['path'] or ''}".rstrip())
    lines.append(f"logs:      {status['logs']['usage']}")
    telemetry = status.get("telemetry")
    if telemetry and (telemetry["prometheus"] or telemetry["prometheus_error"] or telemetry["otlp"]):
        parts = []
        if telemetry["prometheus"] or telemetry["prometheus_error"]:
            served = telemetry["prometheus"] or f"not served: {telemetry['prometheus_error']}"
            parts.append(f"prometheus {served}")
        if telemetry["otlp"]:
            parts.append(
                f"otlp {telemetry['otlp']} ({telemetry['otlp_exports']} exports, "
                f"{telemetry['otlp_failed']} failed/dropped)"
            )
        lines.append(f"metrics:   {'; '.join(parts)}")
    return "\n".join(lines)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Show the running daemon: listeners, kill-switch, lanes and their counters, config, jobs."""
    result: StatusReply = daemon_call(ctx, "status")
    if as_json:
        echo_json(result)
    else:
        click.echo(format_status(result))


@click.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def pause(ctx: click.Context, as_json: bool) -> None:
    """Kill-switch on: every call goes to the default lane (persists across restarts)."""
    result = daemon_call(ctx, "pause")
    echo_json(result) if as_json else click.echo(
        f"paused: every call goes to the default lane ({result['source']})"
    )


@click.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def resume(ctx: click.Context, as_json: bool) -> None:
    """Kill-switch off: routing rules apply again (persists across restarts)."""
    result = daemon_call(ctx, "resume")
    if as_json:
        echo_json(result)
    elif result["paused"]:
        click.echo(f"still paused: {result['source']}")
    else:
        click.echo("resumed: routing rules apply")


@click.command()
@click.option("--id", "session_id", metavar="SESSION", help="Claude Code's session id.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def session(ctx: click.Context, session_id: str | None, as_json: bool) -> None:
    """One Claude Code session's calls per lane and savings (what `ccctl statusline` shows)."""
    from ccmitm.cli.statusline import line

    result: SessionReply = daemon_call(ctx, "session", timeout=5.0, session=session_id)
    if as_json:
        echo_json(result)
    else:
        click.echo(
            line(result, {"session_id": session_id}, "{lane} · {calls} · {offloaded} · {saved}{state}", False)
        )


@click.command()
@click.pass_context
def reload(ctx: click.Context) -> None:
    """Re-read the config file now (the daemon also does this by itself on every save)."""
    result = daemon_call(ctx, "reload")
    click.echo(f"reloaded {result['source']}; changed: {', '.join(result['changed']) or 'nothing'}")


@click.command()
@click.pass_context
def rotate(ctx: click.Context) -> None:
    """Rotate the usage log and the daemon log now."""
    result = daemon_call(ctx, "rotate")
    click.echo(f"rotated: usage -> {result['usage'] or '(empty, nothing to rotate)'}")


@click.command("reopen-logs")
@click.pass_context
def reopen_logs(ctx: click.Context) -> None:
    """Reopen log files by name (after an external logrotate renamed them)."""
    daemon_call(ctx, "reopen-logs")
    click.echo("reopened")


# --- start / stop --------------------------------------------------------------------------------
def launch(config_file: Path, socket_path: Path, timeout: float, env: dict[str, str] | None = None) -> str:
    """Start ccmitmd in the background and wait until it answers; what happened, in one line.
    Raises :class:`LaunchError` (one line: the cause) when it exits at start or does not answer."""
    state_dir = paths.ensure_private_dir(paths.state_home())
    output = state_dir / "ccmitmd.out"
    offset = output.stat().st_size if output.exists() else 0
    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    command = [sys.executable, "-m", "ccmitm.supervisor", "--config", str(config_file)]
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=fd,
        stderr=fd,
        start_new_session=True,
        close_fds=True,
        env=env,
    )
    os.close(fd)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            with open(output, "rb") as handle:
                handle.seek(offset)
                tail = handle.read().decode(errors="replace").strip().splitlines()
            raise LaunchError("ccmitmd exited at start", tail, output)
        if is_running(socket_path):
            return f"ccmitmd started (pid {process.pid}); output in {output}"
        time.sleep(0.05)
    raise LaunchError(f"ccmitmd did not answer within {timeout:g}s", [], output)


class LaunchError(Exception):
    def __init__(
        self, message: str, tail: list[str], output: Path, fix: str = "fix that, then `ccctl start`"
    ) -> None:
        super().__init__(message)
        self.tail, self.output, self.fix = tail, output, fix

    def cause(self) -> str:
        """The daemon's own error line (the first it printed; the last one of a traceback), else
        where its output is."""
        lines = [line.strip() for line in self.tail if line.strip()]
        if not lines:
            return f"see {self.output}"
        return lines[-1] if any(line.startswith("Traceback") for line in lines) else lines[0]


@click.command()
@click.option("--timeout", default=30.0, show_default=True, help="Seconds to wait until it listens.")
@click.pass_context
def start(ctx: click.Context, timeout: float) -> None:
    """Start ccmitmd in the background (for machines without a service manager)."""
    from ccmitm.install import wiring

    config = load_config(ctx)
    socket_path = config.socket_path()
    if is_running(socket_path):
        click.echo("ccmitmd is already running")
        return
    try:
        click.echo(launch(config_path(ctx), socket_path, timeout))
        # A first start makes the CA; a shell wired to the combined bundle needs it in there.
        wiring.refresh_bundle(os.environ, wiring.Listener.of(config))
    except LaunchError as exc:
        fail(f"{exc}:\n" + "\n".join(exc.tail[-15:]) if exc.tail else f"{exc}; see {exc.output}")


@click.command()
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait for the drain.")
@click.pass_context
def stop(ctx: click.Context, timeout: float) -> None:
    """Stop the daemon (SIGTERM: in-flight streams drain first) and wait until it is gone."""
    if not is_running(load_config(ctx).socket_path()):
        click.echo("ccmitmd is not running; nothing to stop")
        return
    pid = daemon_call(ctx, "status")["pid"]
    os.kill(pid, signal.SIGTERM)
    pid_file = paths.state_home() / "ccmitmd.pid"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # The daemon removes its pid file as the very last step of a clean stop; a vanished
        # process counts too (a zombie still answers kill(pid, 0), so that alone is not enough).
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        if not pid_file.exists():
            break
        time.sleep(0.1)
    else:
        fail(f"ccmitmd (pid {pid}) is still draining after {timeout:g}s; `kill {pid}` again to close now")
    click.echo(f"ccmitmd (pid {pid}) stopped")


@click.group()
def lane() -> None:
    """Act on one lane of the running daemon."""


@lane.command("reset")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def lane_reset(ctx: click.Context, name: str, as_json: bool) -> None:
    """End a lane's hold (after a top-up, a new key or a fixed model) and close its breaker: its
    next call is the trial that decides."""
    result = daemon_call(ctx, "lane-reset", lane=name)
    if as_json:
        echo_json(result)
    elif result["hold_ended"]:
        click.echo(f"{name}: hold ended; the next call tries the lane again")
    else:
        click.echo(f"{name}: was not held; its breaker is closed")


COMMANDS = [status, pause, resume, session, reload, rotate, reopen_logs, start, stop, lane]
