"""`ccctl top`: a live terminal view of the running daemon, refreshed from `status` each second.

The frame is a pure function of two status replies (this one and the previous, for rates);
the loop around it only polls the control socket, reads keys and repaints.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import termios
import tty
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from ccmitm.cli.control import format_quota
from ccmitm.cli.locate import control_socket
from ccmitm.control.client import status as read_status
from ccmitm.control.protocol import ControlError, LaneStatus, StatusReply, TokenCounts

REFRESH_S = 1.0
NO_TOKENS: TokenCounts = {
    "input_tokens": 0,
    "output_tokens": 0,
    "cache_read_input_tokens": 0,
    "cache_creation_input_tokens": 0,
}
STATUS_TIMEOUT_S = 2.0


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _count(value: int) -> str:
    """Tokens grow large: 1234567 reads better as 1.23M in a narrow column."""
    if value >= 1_000_000:
        return f"{value / 1_000_000:.2f}M"
    if value >= 10_000:
        return f"{value / 1000:.1f}k"
    return str(value)


def _uptime(seconds: float) -> str:
    hours, rest = divmod(int(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _rate(lane: str, status: StatusReply, previous: StatusReply | None) -> str:
    """Requests per second since the previous frame; '-' on the first frame or after a restart."""
    if not previous or previous["pid"] != status["pid"]:
        return "-"
    elapsed = status["uptime_s"] - previous["uptime_s"]
    before = previous["lanes"].get(lane)
    if elapsed <= 0 or before is None:
        return "-"
    return f"{(status['lanes'][lane]['requests'] - before['requests']) / elapsed:.1f}"


def _lane_state(lane: LaneStatus) -> Text:
    if not lane["available"]:
        return Text(f"unavailable: {lane['problem'] or '?'}", style="red")
    hold = lane.get("hold")
    if hold:  # the cause in words is under the table (see render)
        return Text(f"held: {hold['cls']}", style="red")
    breaker = lane["breaker"]
    state = breaker["state"] if breaker else None
    if breaker and state and state != "closed":
        until = f" until {breaker['retry_at']}" if breaker["retry_at"] else ""
        return Text(f"breaker {state}{until}", style="yellow" if state == "half_open" else "red")
    return Text("ok", style="green")


def render(status: StatusReply, previous: StatusReply | None = None, live: bool = True) -> RenderableType:
    """One frame: the header (pause state, uptime) and a row per lane; the quit hint only when
    live (``--once`` prints a frame and exits: there is nothing to quit)."""
    paused = status["paused"]
    header = Text.assemble(
        ("ccmitmd ", "bold"),
        f"{status['version']}  pid {status['pid']}  up {_uptime(status['uptime_s'])}"
        f"  in flight {status['in_flight']}  ",
        ("PAUSED" if paused else "routing on", "bold red" if paused else "bold green"),
    )
    if paused:
        header.append(f" ({status['paused_source']})")
    table = Table(expand=False, header_style="bold")
    for column in ("lane", "role", "state"):
        table.add_column(column)
    for column in ("req", "req/s", "err", "p50 ms", "p95 ms", "tok in", "tok out", "cache rd"):
        table.add_column(column, justify="right")
    for name, lane in status["lanes"].items():
        # A daemon older than this ccctl may not count tokens yet (the field came later).
        tokens = lane.get("tokens") or NO_TOKENS
        table.add_row(
            name,
            "default" if lane["default"] else "offload",
            _lane_state(lane),
            str(lane["requests"]),
            _rate(name, status, previous),
            Text(str(lane["errors"]), style="red" if lane["errors"] else ""),
            _ms(lane["p50_ms"]),
            _ms(lane["p95_ms"]),
            _count(tokens["input_tokens"]),
            _count(tokens["output_tokens"]),
            _count(tokens["cache_read_input_tokens"]),
        )
    # A Z.AI lane's quota meter, a line each under the table (a column would squeeze on 80 columns).
    quotas = [
        Text(f"{name} quota: {text}")
        for name, lane in status["lanes"].items()
        if (text := format_quota(lane.get("quota")))
    ]
    footer = Text(f"{status['now']}" + ("   q or Ctrl-C quits" if live else ""), style="dim")
    # A held lane in plain words, under the table: the cause and when (or how) the offload resumes.
    default_lane = next((n for n, lane in status["lanes"].items() if lane["default"]), "default")
    held = [(name, hold) for name, lane in status["lanes"].items() if (hold := lane.get("hold"))]
    holds: list[Text] = []
    if held:  # the core's refusal table loads only for a frame that has a hold to explain
        from ccmitm.core.refusals import plain_words

        holds = [Text(plain_words(name, hold, default_lane), style="bold yellow") for name, hold in held]
    return Group(header, table, *quotas, *holds, footer)


def render_down(socket_path: Path, reason: str, live: bool = True) -> RenderableType:
    hint = "; retrying each second   q or Ctrl-C quits" if live else ""
    return Group(
        Text.assemble(("ccmitmd not running", "bold red"), f"  ({reason})"),
        Text(f"control socket {socket_path}{hint}", style="dim"),
    )


def _poll(socket_path: Path) -> tuple[StatusReply | None, str]:
    try:
        return read_status(socket_path, timeout=STATUS_TIMEOUT_S), ""
    except ControlError as exc:
        return None, str(exc)


#: Keys that end the live view. Ctrl-C arrives as a key (byte 3), not as a signal: the view turns
#: the terminal's signal characters off, so quitting happens only between two frames, never in the
#: middle of a repaint or of a status call.
QUIT_KEYS = frozenset(b"qQ\x03")


@contextlib.contextmanager
def _keys() -> Iterator[int | None]:
    """stdin in cbreak mode (single keys, no echo, Ctrl-C as a key) when it is a terminal;
    restored on the way out."""
    if not sys.stdin.isatty():
        yield None
        return
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        attrs = termios.tcgetattr(fd)
        attrs[3] &= ~termios.ISIG  # lflag: Ctrl-C, Ctrl-\\ and Ctrl-Z become plain keys
        termios.tcsetattr(fd, termios.TCSANOW, attrs)
        yield fd
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


@contextlib.contextmanager
def _interrupts() -> Iterator[tuple[int, list[bool]]]:
    """SIGINT and SIGTERM from elsewhere (``kill``) end the view the same way: the handler only
    raises a flag and wakes the frame wait through a pipe, so no exception can land mid-repaint."""
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    raised = [False]

    def handler(_signum: int, _frame: Any) -> None:
        raised[0] = True
        with contextlib.suppress(OSError):
            os.write(write_end, b"!")

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield read_end, raised
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        os.close(read_end)
        os.close(write_end)


def _quit_requested(fd: int | None, wake: int, raised: list[bool], wait_s: float) -> bool:
    """Wait up to ``wait_s`` for a key or a signal; True when the view should end."""
    watched = [wake] if fd is None else [fd, wake]
    ready, _, _ = select.select(watched, [], [], wait_s)
    if raised[0]:
        return True
    if fd is None or fd not in ready:
        return False
    data = os.read(fd, 32)
    return not data or any(key in QUIT_KEYS for key in data)


def _live(socket_path: Path) -> None:
    from rich.live import Live  # the live view only: `top --once` prints one frame

    console = Console()
    previous: StatusReply | None = None
    with (
        _interrupts() as (wake, raised),
        _keys() as fd,
        Live(console=console, auto_refresh=False, screen=False) as live,
    ):
        while not raised[0]:
            status, reason = _poll(socket_path)
            frame = render(status, previous) if status else render_down(socket_path, reason)
            live.update(frame, refresh=True)
            previous = status
            if _quit_requested(fd, wake, raised, REFRESH_S):
                return


@click.command()
@click.option(
    "--once", is_flag=True, help="Print one plain frame and exit (for scripts); exit 1 if not running."
)
@click.pass_context
def top(ctx: click.Context, once: bool) -> None:
    """Live view of the daemon: per lane requests, rate, errors, p50/p95, tokens, breaker, pause."""
    # The socket without the config model (pydantic): `top --once` runs from scripts and loops.
    socket_path = control_socket((ctx.find_root().obj or {}).get("config_option"))
    if once:
        status, reason = _poll(socket_path)
        console = Console(no_color=True, force_terminal=False, width=max(100, Console().width))
        console.print(render(status, live=False) if status else render_down(socket_path, reason, live=False))
        sys.exit(0 if status else 1)
    _live(socket_path)
