"""`ccctl statusline`: one line about this Claude Code session and the daemon, for its status line.

Claude Code runs the command in ``statusLine`` after each assistant message with the session as
JSON on stdin and shows the first line printed. So this path must be fast and must never fail:
it imports neither click nor the config model (the ``ccctl`` entry point hands it the arguments
before click loads, see cli/entry.py), asks the daemon with a short socket timeout, and prints a
short line ("ccmitm: down", "ccmitm: ?") instead of a traceback; it always exits 0.

``install`` / ``uninstall`` edit ``~/.claude/settings.json`` (install/claude_settings.py).
"""

from __future__ import annotations

import json
import os
import re
import select
import sys
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any, TextIO

#: The socket timeout: the daemon answers in about a millisecond; a daemon this slow is as good
#: as down for a line Claude Code waits for.
TIMEOUT_S = 0.5
#: How long to wait for Claude Code's JSON on stdin, and how much of it to read.
STDIN_WAIT_S = 0.2
STDIN_LIMIT = 1 << 20

DEFAULT_FORMAT = "ccmitm {lane} · {calls} · {offloaded} · {saved}{state}"

FIELDS: dict[str, str] = {
    "lane": "the lane of the session's last call (or 'refused', '-')",
    "calls": "the session's calls per lane, e.g. 'zai 3 anthropic 5'",
    "offloaded": "the session's tokens moved off the default lane, e.g. '12.3k tok off'",
    "tokens": "the same count alone, e.g. '12.3k'",
    "saved": "estimated cost avoided, e.g. '~$0.04 saved' (empty when unpriced)",
    "usd": "the same estimate alone in USD, e.g. '0.0412'",
    "state": "what needs attention, with a leading ' · ': paused, a held lane, config rejected",
    "model": "Claude Code's model display name",
    "session": "the first 8 characters of the session id",
    "cost": "Claude Code's own session cost in USD",
}

HELP = f"""Usage: ccctl statusline [--format TEMPLATE] [--color auto|always|never]
       ccctl statusline install [--force] [--settings PATH]
       ccctl statusline uninstall [--settings PATH]

  One line for Claude Code's status line: the lane of the session's last call,
  its calls per lane, the tokens offloaded and the estimated savings, and what
  needs attention (paused, a lane held and until when, config rejected, daemon
  down). Reads Claude Code's session JSON on stdin; always exits 0.

  install    adds {{"statusLine": {{"type": "command", "command": "<this ccctl> statusline"}}}}
             to ~/.claude/settings.json (a backup is kept; --force replaces
             another statusLine)
  uninstall  removes it again (only if it is ccmitm's)

Options:
  --format TEMPLATE  e.g. '{{lane}} {{calls}}' (default: '{DEFAULT_FORMAT}')
  --color WHEN       auto (default: colour unless NO_COLOR is set or TERM=dumb;
                     Claude Code pipes stdout but renders ANSI), always, never
  --config PATH      the config whose control socket to ask
  -h, --help         this text

Fields:
""" + "".join(f"  {{{name}}}{' ' * (12 - len(name))}{text}\n" for name, text in FIELDS.items())

_FIELD = re.compile(r"\{(\w+)\}")
_RESET = "\033[0m"
_STYLES = {"lane": "\033[36m", "offload": "\033[32m", "warn": "\033[33m", "bad": "\033[31m", "dim": "\033[2m"}


class UsageError(Exception):
    pass


def read_session(stream: TextIO | None = None, wait_s: float = STDIN_WAIT_S) -> dict[str, Any]:
    """Claude Code's session JSON from stdin; {} when there is none (a terminal, nothing sent in
    time, not JSON). Bounded: Claude Code closes stdin after writing, but nothing here relies on it."""
    stream = stream if stream is not None else sys.stdin
    try:
        if stream is None or stream.isatty():
            return {}
        fd = stream.fileno()
    except (OSError, ValueError, AttributeError):
        return {}
    chunks: list[bytes] = []
    size = 0
    deadline = time.monotonic() + wait_s
    while size < STDIN_LIMIT:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                break
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if chunk.rstrip().endswith(b"}"):
            try:  # a complete document: no need to wait for the end of the stream
                data = json.loads(b"".join(chunks))
            except ValueError:
                continue
            return data if isinstance(data, dict) else {}
    try:
        data = json.loads(b"".join(chunks) or b"{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def use_color(choice: str, environ: Mapping[str, str] = os.environ) -> bool:
    """``auto`` means colour unless NO_COLOR (https://no-color.org) or TERM=dumb: Claude Code runs
    the command with a pipe for stdout, so a tty check would always say no, yet it renders ANSI."""
    if choice == "always":
        return True
    if choice == "never":
        return False
    return not environ.get("NO_COLOR") and environ.get("TERM") != "dumb"


def compact(count: int) -> str:
    if count >= 1_000_000:
        return f"{count / 1_000_000:.1f}M"
    if count >= 1000:
        return f"{count / 1000:.1f}k"
    return str(count)


def dollars(usd: float) -> str:
    """$1.23, $0.04, <$0.01 (a session's first Haiku calls are worth fractions of a cent)."""
    if usd <= 0:
        return "$0"
    return f"${usd:.2f}" if usd >= 0.01 else "<$0.01"


def local_time(text: str | None, now: datetime | None = None) -> str | None:
    """A UTC ISO time as local time: "17:15" today, "Mon 09:00" on another day (also used by
    `ccctl status`; it lives here because this module must not import click)."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text).astimezone()
    except ValueError:
        return None
    now = now or datetime.now().astimezone()
    return moment.strftime("%H:%M" if moment.date() == now.date() else "%a %H:%M")


def _safe(value: Any) -> str:
    """Text from the daemon or Claude Code, with no control character that could move the cursor
    or restyle the terminal (lane names and words come from a config, an upstream's refusal)."""
    text = str(value)
    return text if text.isprintable() else "".join(ch if ch.isprintable() else " " for ch in text)


def _state_parts(reply: Mapping[str, Any]) -> list[tuple[str, str]]:
    """What the user must know, most important first, as (text, style) pairs."""
    parts: list[tuple[str, str]] = []
    if reply.get("paused"):
        parts.append(("paused", "warn"))
    for lane in reply.get("lanes") or []:
        name, state = lane.get("lane"), lane.get("state")
        until = local_time(lane.get("until"))
        if state == "held":
            text = f"{name} held: {lane.get('cls')}" + (f" until {until}" if until else "")
        elif state in ("breaker", "quota"):
            text = f"{name} {lane.get('words')}" + (f" until {until}" if until else "")
        else:
            text = f"{name}: {lane.get('words')}"
        parts.append((_safe(text), "bad"))
    if reply.get("config_error"):
        parts.append(("config rejected (`ccctl status`)", "bad"))
    return parts


def fields(reply: Mapping[str, Any], session: Mapping[str, Any], color: bool) -> dict[str, str]:
    """The template's fields from the daemon's SessionReply and Claude Code's session JSON."""

    def paint(text: str, style: str) -> str:
        return f"{_STYLES[style]}{text}{_RESET}" if color and text else text

    default_lane = reply.get("default_lane")
    calls: dict[str, int] = reply.get("calls") or {}
    last = reply.get("last_lane")
    if last is None:
        lane = "refused" if calls.get("refused") else "-"
    else:
        lane = paint(_safe(last), "lane" if last == default_lane else "offload")
    tokens = int(reply.get("offloaded_tokens") or 0)
    usd = reply.get("saved_usd")
    model = session.get("model")
    cost = (
        (session.get("cost") or {}).get("total_cost_usd") if isinstance(session.get("cost"), dict) else None
    )
    state = _state_parts(reply)
    return {
        "lane": lane,
        "calls": _safe(" ".join(f"{name} {count}" for name, count in calls.items())) or "no calls yet",
        "offloaded": f"{compact(tokens)} tok off",
        "tokens": compact(tokens),
        "saved": f"~{dollars(usd)} saved" if isinstance(usd, int | float) else "",
        "usd": f"{usd:.4f}" if isinstance(usd, int | float) else "",
        "state": "".join(" · " + paint(text, style) for text, style in state),
        "model": _safe(model.get("display_name") or "") if isinstance(model, dict) else "",
        "session": _safe(session.get("session_id") or "")[:8],
        "cost": f"{cost:.2f}" if isinstance(cost, int | float) else "",
    }


def render(template: str, values: Mapping[str, str]) -> str:
    """``{name}`` replaced by its field; unknown names stay as written. No attribute or index
    access (unlike str.format): a template cannot reach into anything. Separators left dangling by
    empty fields are tidied."""
    line = _FIELD.sub(lambda m: values.get(m.group(1), m.group(0)), template)
    line = re.sub(r"(?: · )+(?= · |$)", "", line).strip()
    return line.splitlines()[0] if line else ""


def line(reply: Mapping[str, Any], session: Mapping[str, Any], template: str, color: bool) -> str:
    return render(template, fields(reply, session, color))


def down_line(color: bool, what: str = "down") -> str:
    text = f"ccmitm: {what}"
    return f"{_STYLES['bad']}{text}{_RESET}" if color else text


def parse(argv: list[str]) -> dict[str, Any]:
    """The options of `ccctl statusline` (a hand parser: click costs more than the whole budget)."""
    options: dict[str, Any] = {"format": DEFAULT_FORMAT, "color": "auto", "config": None, "action": None}
    options["force"], options["settings"] = False, None
    args = list(argv)
    while args:
        arg = args.pop(0)
        name, eq, value = arg.partition("=")
        if arg in ("-h", "--help"):
            options["action"] = "help"
        elif arg in ("install", "uninstall") and options["action"] is None:
            options["action"] = arg
        elif arg == "--force":
            options["force"] = True
        elif name in ("--format", "--color", "--config", "--settings"):
            if not eq:
                if not args:
                    raise UsageError(f"{name} needs a value")
                value = args.pop(0)
            options[name[2:]] = value
        else:
            raise UsageError(f"unknown argument {arg!r} (see `ccctl statusline --help`)")
    if options["color"] not in ("auto", "always", "never"):
        raise UsageError("--color takes auto, always or never")
    return options


def run(argv: list[str], config_option: str | None = None, out: TextIO | None = None) -> int:
    """`ccctl statusline ARGS`; ``config_option`` is a --config given before `statusline`."""
    out = out if out is not None else sys.stdout
    try:
        options = parse(argv)
    except UsageError as exc:
        print(f"ccctl statusline: {exc}", file=sys.stderr)
        _emit(out, down_line(False, "?"))
        return 0
    if options["action"] == "help":
        out.write(HELP)
        return 0
    if options["action"] in ("install", "uninstall"):
        return _setup(options["action"], options["force"], options["settings"])
    color = use_color(options["color"])
    options["config"] = options["config"] or config_option
    try:
        text = _status_line(options, color)
    except Exception:  # whatever went wrong, Claude Code gets a line, not a traceback
        text = down_line(color, "?")
    _emit(out, text)
    return 0


def _emit(out: TextIO, text: str) -> None:
    """Print the line; a stdout that cannot encode "·" gets "?" for it, a closed one nothing."""
    try:
        try:
            out.write(text + "\n")
        except UnicodeEncodeError:
            encoding = getattr(out, "encoding", None) or "ascii"
            out.write(text.encode(encoding, "replace").decode(encoding) + "\n")
        out.flush()
    except (OSError, ValueError):  # Claude Code went away (broken pipe, closed stream)
        pass


def _status_line(options: Mapping[str, Any], color: bool) -> str:
    from ccmitm.cli.locate import control_socket
    from ccmitm.control.client import DaemonNotRunning, call
    from ccmitm.control.protocol import ControlError

    session = read_session()
    session_id = session.get("session_id")
    socket_path = control_socket(options["config"])
    try:
        reply = call(
            socket_path,
            "session",
            timeout=TIMEOUT_S,
            session=session_id if isinstance(session_id, str) else None,
        )
    except DaemonNotRunning:
        return down_line(color)
    except ControlError:
        return down_line(color, "?")
    return line(reply, session, options["format"], color) or down_line(color, "?")


def _setup(action: str, force: bool, settings: str | None) -> int:
    """`install` / `uninstall`: edit Claude Code's settings.json; a message and exit 1 on refusal."""
    from pathlib import Path

    from ccmitm.install import claude_settings

    path = Path(settings).expanduser() if settings else claude_settings.settings_path()
    try:
        if action == "install":
            message = claude_settings.install(path, claude_settings.own_command(), force=force)
        else:
            message = claude_settings.uninstall(path)
    except claude_settings.SettingsError as exc:
        print(f"ccctl statusline {action}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # e.g. a read-only ~/.claude: the cause, not a traceback
        print(f"ccctl statusline {action}: cannot write {path}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(message)
    return 0
