"""`ccctl top`: a live terminal view of the running daemon, refreshed from `status` each second.

The frame is a pure function of two status replies (this one and the previous, for rates);
the loop around it only polls the control socket, reads keys and repaints.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import termios
import time
import tty
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ccmitm.cli.common import load_config
from ccmitm.control.client import call
from ccmitm.control.protocol import ControlError

REFRESH_S = 1.0
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


def _rate(lane: str, status: dict[str, Any], previous: dict[str, Any] | None) -> str:
    """Requests per second since the previous frame; '-' on the first frame or after a restart."""
    if not previous or previous.get("pid") != status.get("pid"):
        return "-"
    elapsed = status.get("uptime_s", 0) - previous.get("uptime_s", 0)
    before = previous.get("lanes", {}).get(lane)
    if elapsed <= 0 or before is None:
        return "-"
    return f"{(status['lanes'][lane]['requests'] - before['requests']) / elapsed:.1f}"


def _lane_state(lane: dict[str, Any]) -> Text:
    if not lane.get("available", True):
        return Text(f"unavailable: {lane.get('problem') or '?'}", style="red")
    breaker = lane.get("breaker") or {}
    state = breaker.get("state")
    if state and state != "closed":
        until = f" until {breaker['retry_at']}" if breaker.get("retry_at") else ""
        return Text(f"breaker {state}{until}", style="yellow" if state == "half_open" else "red")
    return Text("ok", style="green")


def render(status: dict[str, Any], previous: dict[str, Any] | None = None) -> RenderableType:
    """One frame: the header (pause state, uptime) and a row per lane."""
    paused = status.get("paused")
    header = Text.assemble(
        ("ccmitmd ", "bold"),
        f"{status.get('version', '?')}  pid {status.get('pid', '?')}  up {_uptime(status.get('uptime_s', 0))}"
        f"  in flight {status.get('in_flight', 0)}  ",
        ("PAUSED" if paused else "routing on", "bold red" if paused else "bold green"),
    )
    if paused:
        header.append(f" ({status.get('paused_source', '')})")
    table = Table(expand=False, header_style="bold")
    for column in ("lane", "role", "state"):
        table.add_column(column)
    for column in ("req", "req/s", "err", "p50 ms", "p95 ms", "tok in", "tok out", "cache rd"):
        table.add_column(column, justify="right")
    for name, lane in status.get("lanes", {}).items():
        tokens = lane.get("tokens") or {}
        table.add_row(
            name,
            "default" if lane.get("default") else "offload",
            _lane_state(lane),
            str(lane.get("requests", 0)),
            _rate(name, status, previous),
            Text(str(lane.get("errors", 0)), style="red" if lane.get("errors") else ""),
            _ms(lane.get("p50_ms")),
            _ms(lane.get("p95_ms")),
            _count(tokens.get("input_tokens", 0)),
            _count(tokens.get("output_tokens", 0)),
            _count(tokens.get("cache_read_input_tokens", 0)),
        )
    footer = Text(f"{status.get('now', '')}   q or Ctrl-C quits", style="dim")
    return Group(header, table, footer)


def render_down(socket_path: Path, reason: str, live: bool = True) -> RenderableType:
    hint = "; retrying each second   q or Ctrl-C quits" if live else ""
    return Group(
        Text.assemble(("ccmitmd not running", "bold red"), f"  ({reason})"),
        Text(f"control socket {socket_path}{hint}", style="dim"),
    )


def _poll(socket_path: Path) -> tuple[dict[str, Any] | None, str]:
    try:
        return call(socket_path, "status", timeout=STATUS_TIMEOUT_S), ""
    except ControlError as exc:
        return None, str(exc)


@contextlib.contextmanager
def _keys() -> Iterator[int | None]:
    """stdin in cbreak mode (single keys, no echo) when it is a terminal; restored on the way out."""
    if not sys.stdin.isatty():
        yield None
        return
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield fd
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _quit_pressed(fd: int | None, wait_s: float) -> bool:
    """Wait up to ``wait_s`` for a key; True when it was q/Q."""
    if fd is None:
        time.sleep(wait_s)
        return False
    ready, _, _ = select.select([fd], [], [], wait_s)
    if not ready:
        return False
    data = os.read(fd, 32)
    return not data or any(key in data for key in b"qQ")


def _live(socket_path: Path) -> None:
    console = Console()
    previous: dict[str, Any] | None = None
    with _keys() as fd, Live(console=console, auto_refresh=False, screen=False) as live:
        while True:
            status, reason = _poll(socket_path)
            frame = render(status, previous) if status else render_down(socket_path, reason)
            live.update(frame, refresh=True)
            previous = status
            if _quit_pressed(fd, REFRESH_S):
                return


@click.command()
@click.option(
    "--once", is_flag=True, help="Print one plain frame and exit (for scripts); exit 1 if not running."
)
@click.pass_context
def top(ctx: click.Context, once: bool) -> None:
    """Live view of the daemon: per lane requests, rate, errors, p50/p95, tokens, breaker, pause."""
    socket_path = load_config(ctx).socket_path()
    if once:
        status, reason = _poll(socket_path)
        console = Console(no_color=True, force_terminal=False, width=max(100, Console().width))
        console.print(render(status) if status else render_down(socket_path, reason, live=False))
        sys.exit(0 if status else 1)
    with contextlib.suppress(KeyboardInterrupt):
        _live(socket_path)
