"""`ccctl top`: a live terminal view of the running daemon, refreshed from `status` each second.

The frame is a pure function of two status replies (this one and the previous, for rates): a
:class:`Frame` of plain text with style names, drawn by rich for the live view and as plain text
for `top --once`, which scripts run in loops and which so never pays for importing rich. The loop
around the live view only polls the control socket, reads keys and repaints.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import termios
import tty
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ccmitm.cli.control import format_quota
from ccmitm.cli.locate import control_socket
from ccmitm.control.client import status as read_status
from ccmitm.control.protocol import ControlError, LaneStatus, StatusReply, TokenCounts

if TYPE_CHECKING:
    from rich.console import RenderableType

REFRESH_S = 1.0
NO_TOKENS: TokenCounts = {
    "input_tokens": 0,
    "output_tokens": 0,
    "cache_read_input_tokens": 0,
    "cache_creation_input_tokens": 0,
}
STATUS_TIMEOUT_S = 2.0
#: The table's columns; those from "req" on are numbers, right-aligned.
COLUMNS = (
    "lane",
    "role",
    "state",
    "req",
    "req/s",
    "err",
    "p50 ms",
    "p95 ms",
    "tok in",
    "tok out",
    "cache rd",
)
FIRST_NUMBER = COLUMNS.index("req")

#: A piece of text and its rich style ("" for none); the plain drawing ignores the style.
Span = tuple[str, str]


@dataclass(frozen=True)
class Frame:
    """What one screen says: lines above and below a table of one row per lane."""

    head: Sequence[Sequence[Span]]  # lines above the table, each of spans
    rows: Sequence[Sequence[Span]] = ()  # one span per column; no table when empty
    tail: Sequence[Span] = ()  # one line each, under the table


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


def _lane_state(lane: LaneStatus) -> Span:
    if not lane["available"]:
        return f"unavailable: {lane['problem'] or '?'}", "red"
    hold = lane.get("hold")
    if hold:  # the cause in words is under the table (see frame)
        return f"held: {hold['cls']}", "red"
    breaker = lane["breaker"]
    state = breaker["state"] if breaker else None
    if breaker and state and state != "closed":
        until = f" until {breaker['retry_at']}" if breaker["retry_at"] else ""
        return f"breaker {state}{until}", "yellow" if state == "half_open" else "red"
    return "ok", "green"


def frame(status: StatusReply, previous: StatusReply | None = None, live: bool = True) -> Frame:
    """One frame: the header (pause state, uptime) and a row per lane; the quit hint only when
    live (``--once`` prints a frame and exits: there is nothing to quit)."""
    paused = status["paused"]
    header: list[Span] = [
        ("ccmitmd ", "bold"),
        (
            f"{status['version']}  pid {status['pid']}  up {_uptime(status['uptime_s'])}"
            f"  in flight {status['in_flight']}  ",
            "",
        ),
        ("PAUSED" if paused else "routing on", "bold red" if paused else "bold green"),
    ]
    if paused:
        header.append((f" ({status['paused_source']})", ""))
    rows: list[list[Span]] = []
    for name, lane in status["lanes"].items():
        # A daemon older than this ccctl may not count tokens yet (the field came later).
        tokens = lane.get("tokens") or NO_TOKENS
        cells = [
            name,
            "default" if lane["default"] else "offload",
            _lane_state(lane),
            str(lane["requests"]),
            _rate(name, status, previous),
            (str(lane["errors"]), "red" if lane["errors"] else ""),
            _ms(lane["p50_ms"]),
            _ms(lane["p95_ms"]),
            _count(tokens["input_tokens"]),
            _count(tokens["output_tokens"]),
            _count(tokens["cache_read_input_tokens"]),
        ]
        rows.append([cell if isinstance(cell, tuple) else (cell, "") for cell in cells])
    # A Z.AI lane's quota meter, a line each under the table (a column would squeeze on 80 columns).
    tail: list[Span] = [
        (f"{name} quota: {text}", "")
        for name, lane in status["lanes"].items()
        if (text := format_quota(lane.get("quota")))
    ]
    # A held lane in plain words, under the table: the cause and when (or how) the offload resumes.
    default_lane = next((n for n, lane in status["lanes"].items() if lane["default"]), "default")
    held = [(name, hold) for name, lane in status["lanes"].items() if (hold := lane.get("hold"))]
    if held:  # the core's refusal table loads only for a frame that has a hold to explain
        from ccmitm.core.refusals import plain_words

        tail += [(plain_words(name, hold, default_lane), "bold yellow") for name, hold in held]
    tail.append((f"{status['now']}" + ("   q or Ctrl-C quits" if live else ""), "dim"))
    return Frame([header], rows, tail)


def frame_down(socket_path: Path, reason: str, live: bool = True) -> Frame:
    hint = "; retrying each second   q or Ctrl-C quits" if live else ""
    return Frame(
        [[("ccmitmd not running", "bold red"), (f"  ({reason})", "")]],
        tail=[(f"control socket {socket_path}{hint}", "dim")],
    )


def rich_frame(shown: Frame) -> RenderableType:
    """The frame for the live view (rich: colour, and a table that fits the terminal)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    parts: list[RenderableType] = [Text.assemble(*line) for line in shown.head]
    if shown.rows:
        table = Table(expand=False, header_style="bold")
        for index, column in enumerate(COLUMNS):
            table.add_column(column, justify="right" if index >= FIRST_NUMBER else "left")
        for row in shown.rows:
            table.add_row(*(Text(text, style=style) for text, style in row))
        parts.append(table)
    parts += [Text(text, style=style) for text, style in shown.tail]
    return Group(*parts)


def render(status: StatusReply, previous: StatusReply | None = None, live: bool = True) -> RenderableType:
    return rich_frame(frame(status, previous, live))


def render_down(socket_path: Path, reason: str, live: bool = True) -> RenderableType:
    return rich_frame(frame_down(socket_path, reason, live))


#: The table's lines, as rich draws them by default (box.HEAVY_HEAD), and in ASCII for a terminal
#: that cannot show them: (left, fill, joint, right) for the top, the header, the rule under it,
#: a row and the bottom.
UNICODE_BOX = ("┏━┳┓", "┃ ┃┃", "┡━╇┩", "│ ││", "└─┴┘")
ASCII_BOX = ("+-++", "| ||", "|-+|", "| ||", "+-++")


def _printable(text: str) -> str:
    """No control character reaches the terminal (hold words quote an upstream's message)."""
    return text if text.isprintable() else "".join(ch if ch.isprintable() else " " for ch in text)


def plain_frame(shown: Frame, ascii_only: bool = False) -> str:
    """The frame as plain text (`top --once`): no colour, no screen control, the table boxed."""
    lines = ["".join(_printable(text) for text, _ in line) for line in shown.head]
    if shown.rows:
        table = [list(COLUMNS), *([_printable(text) for text, _ in row] for row in shown.rows)]
        widths = [max(len(row[index]) for row in table) for index in range(len(COLUMNS))]
        top, head, rule, body, bottom = ASCII_BOX if ascii_only else UNICODE_BOX

        def line(edge: str, cells: Sequence[str] | None = None) -> str:
            if cells is None:
                parts = [edge[1] * (width + 2) for width in widths]
            else:
                parts = [
                    f" {cell.rjust(width) if index >= FIRST_NUMBER else cell.ljust(width)} "
                    for index, (cell, width) in enumerate(zip(cells, widths, strict=True))
                ]
            return edge[0] + edge[2].join(parts) + edge[3]

        lines += [line(top), line(head, table[0]), line(rule)]
        lines += [line(body, row) for row in table[1:]]
        lines.append(line(bottom))
    lines += [_printable(text) for text, _ in shown.tail]
    text = "\n".join(lines) + "\n"
    # The hold's words have a dash, a lane's name may be anything: "?" rather than a traceback.
    return text.encode("ascii", "replace").decode("ascii") if ascii_only else text


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
    from rich.console import Console  # the live view only: `top --once` prints plain text
    from rich.live import Live

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
        shown = frame(status, live=False) if status else frame_down(socket_path, reason, live=False)
        click.echo(plain_frame(shown, ascii_only=not _can_draw_boxes()), nl=False)
        sys.exit(0 if status else 1)
    _live(socket_path)


def _can_draw_boxes() -> bool:
    """Can stdout encode the box-drawing characters (not under LANG=C, say)?"""
    try:
        "".join(UNICODE_BOX).encode(sys.stdout.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return False
    return True
