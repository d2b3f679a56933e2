"""`ccctl top`: the pure frame, one plain frame from a real daemon, and the live view under a pty."""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import pty
import select
import shutil
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from ccmitm.cli.top import frame, frame_down, plain_frame, render, render_down
from tests.cli.test_statusline import modules_loaded_by
from tests.helpers import Daemon, post, status

SONNET = "claude-sonnet-5"


def text_of(renderable: Any, width: int = 160) -> str:
    console = Console(file=io.StringIO(), width=width, no_color=True, force_terminal=False)
    console.print(renderable)
    return console.file.getvalue()


def lane(**overrides: Any) -> dict[str, Any]:
    base = {
        "default": False,
        "available": True,
        "problem": None,
        "breaker": None,
        "requests": 0,
        "errors": 0,
        "p50_ms": None,
        "p95_ms": None,
        "tokens": {"input_tokens": 0, "output_tokens": 0, "cache_read_input_tokens": 0},
    }
    return {**base, **overrides}


def fake_status(uptime: float = 100.0, zai_requests: int = 12, **overrides: Any) -> dict[str, Any]:
    return {
        "version": "0.1.0",
        "pid": 4242,
        "uptime_s": uptime,
        "in_flight": 1,
        "paused": False,
        "paused_source": "config routing.paused (x)",
        "now": "2025-01-01T00:00:00+00:00",
        "lanes": {
            "anthropic": lane(default=True, requests=3, p50_ms=812.4, p95_ms=2400.0),
            "zai": lane(
                requests=zai_requests,
                errors=2,
                p50_ms=310.0,
                p95_ms=990.0,
                breaker={"state": "open", "retry_at": "2025-01-01T00:00:30+00:00"},
                tokens={"input_tokens": 1_234_567, "output_tokens": 45_600, "cache_read_input_tokens": 9},
            ),
        },
        **overrides,
    }


def row(text: str, name: str) -> str:
    [line] = [line for line in text.splitlines() if f" {name} " in line]
    return line


COLUMNS = ("lane", "role", "state", "req", "req/s", "err", "p50", "p95", "tok_in", "tok_out", "cache_rd")


def cells(text: str, name: str) -> dict[str, str]:
    values = [cell.strip() for cell in row(text, name).strip().strip("│").split("│")]
    return dict(zip(COLUMNS, values, strict=True))


def test_frame_shows_every_lane_with_its_counters() -> None:
    text = text_of(render(fake_status()))
    anthropic, zai = cells(text, "anthropic"), cells(text, "zai")
    assert (anthropic["role"], anthropic["state"], anthropic["p50"], anthropic["p95"]) == (
        "default",
        "ok",
        "812",
        "2400",
    )
    assert (zai["role"], zai["req"], zai["err"], zai["p50"], zai["p95"]) == (
        "offload",
        "12",
        "2",
        "310",
        "990",
    )
    assert (zai["tok_in"], zai["tok_out"], zai["cache_rd"]) == ("1.23M", "45.6k", "9")  # shortened
    assert zai["state"] == "breaker open until 2025-01-01T00:00:30+00:00"
    assert "routing on" in text and "PAUSED" not in text


def test_frame_shows_pause_unavailable_lanes_and_rates() -> None:
    paused = fake_status(uptime=102.0, zai_requests=16, paused=True, paused_source="ccctl pause at 12:00")
    paused["lanes"]["zai"] = lane(available=False, problem="ZAI_API_KEY is not set", requests=16)
    text = text_of(render(paused, previous=fake_status()))
    assert "PAUSED (ccctl pause at 12:00)" in text
    assert cells(text, "zai")["state"] == "unavailable: ZAI_API_KEY is not set"
    assert cells(text, "zai")["req/s"] == "2.0"  # (16 - 12) requests over 2 s
    assert cells(text_of(render(fake_status())), "zai")["req/s"] == "-"  # no rate on the first frame
    restarted = fake_status(pid=1)
    assert cells(text_of(render(restarted, previous=fake_status(uptime=5))), "zai")["req/s"] == "-"


def test_frame_tolerates_a_daemon_without_token_counters() -> None:
    old = fake_status()
    for value in old["lanes"].values():
        del value["tokens"]
    assert cells(text_of(render(old)), "zai")["tok_in"] == "0"


def test_down_frame_names_the_socket() -> None:
    text = text_of(render_down(Path("/run/x/control.sock"), "refused"))
    assert "ccmitmd not running" in text and "/run/x/control.sock" in text and "retrying" in text


@pytest.mark.e2e
def test_once_prints_the_real_daemons_lanes_and_tokens(daemon: Daemon, upstreams) -> None:
    assert post(daemon).status_code == 200  # haiku -> zai: 11 in, 7 out
    assert post(daemon, SONNET).status_code == 200  # sonnet -> anthropic: 101 in, 17 out
    lanes = status(daemon)["lanes"]
    assert lanes["zai"]["tokens"]["input_tokens"] == 11 and lanes["zai"]["tokens"]["output_tokens"] == 7
    assert lanes["anthropic"]["tokens"]["input_tokens"] == 101
    result = daemon.ccctl("top", "--once", check=True)
    zai, anthropic = cells(result.stdout, "zai"), cells(result.stdout, "anthropic")
    assert (zai["req"], zai["err"], zai["tok_in"], zai["tok_out"], zai["cache_rd"]) == (
        "1",
        "0",
        "11",
        "7",
        "3",
    )
    assert (anthropic["req"], anthropic["tok_in"], anthropic["tok_out"]) == ("1", "101", "17")
    assert "\x1b[" not in result.stdout  # plain: no screen control for scripts
    assert "quits" not in result.stdout  # one frame and done: nothing to quit

    daemon.stop()
    result = daemon.ccctl("top", "--once")
    assert result.returncode == 1 and "ccmitmd not running" in result.stdout


def spawn_top(daemon: Daemon) -> tuple[subprocess.Popen[bytes], int]:
    """`ccctl top` on a real pseudo-terminal that is its controlling tty (`setsid --ctty`), so its
    keys come through a real line discipline. No fork of this threaded test process."""
    if shutil.which("setsid") is None:  # util-linux; always there on Debian
        pytest.skip("setsid (util-linux) not installed")
    env = {**daemon.env(), "TERM": "xterm-256color"}
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 140, 0, 0))
    proc = subprocess.Popen(
        ["setsid", "--ctty", sys.executable, "-m", "ccmitm.cli", "top"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
    )
    os.close(slave)
    return proc, master


def read_until(master: int, needles: tuple[str, ...], timeout: float = 30.0) -> str:
    seen = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                seen += os.read(master, 65536)
            except OSError:
                break
            if all(needle.encode() in seen for needle in needles):
                return seen.decode(errors="replace")
    raise TimeoutError(f"never saw {needles} in {seen[-2000:]!r}")


def wait_exit(proc: subprocess.Popen[bytes], master: int, timeout: float = 15.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            with contextlib.suppress(OSError):
                os.read(master, 65536)  # keep draining so the child never blocks on a full pty
        if proc.poll() is not None:
            return proc.returncode
    proc.kill()
    proc.wait(5)
    raise TimeoutError("ccctl top did not exit")


@pytest.mark.e2e
@pytest.mark.parametrize("key", [b"q", b"\x03", None], ids=["q", "ctrl-c", "sigint"])
def test_live_view_refreshes_and_quits_cleanly(daemon: Daemon, upstreams, key: bytes | None) -> None:
    """q and Ctrl-C are read as keys between frames (the view turns the terminal's signal keys
    off); a SIGINT sent from elsewhere ends it the same way. Each exits 0."""
    proc, master = spawn_top(daemon)
    try:
        read_until(master, ("anthropic", "zai", "routing on"))
        upstreams[1].input_tokens = 987_654
        assert post(daemon).status_code == 200
        read_until(master, ("987.7k",), timeout=20)  # a later frame shows the call's tokens
        if key is None:
            proc.send_signal(signal.SIGINT)
        else:
            os.write(master, key)
        assert wait_exit(proc, master) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        os.close(master)


@pytest.mark.e2e
def test_live_view_waits_for_a_stopped_daemon(make_daemon, upstreams) -> None:
    daemon = make_daemon(start=False)
    proc, master = spawn_top(daemon)
    try:
        read_until(master, ("ccmitmd not running",))
        daemon.start()
        read_until(master, ("anthropic", "zai", "routing on"))  # it kept trying, and found it
        os.write(master, b"q")
        assert wait_exit(proc, master) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        os.close(master)


def test_only_the_live_view_says_how_to_quit() -> None:
    assert "q or Ctrl-C quits" in text_of(render(fake_status()))
    assert "quits" not in text_of(render(fake_status(), live=False))


def test_frame_names_a_held_lane_in_plain_words() -> None:
    held = fake_status()
    hold = {"cls": "billing", "code": "1113", "status": 429, "words": "insufficient balance", "message": "x"}
    held["lanes"]["zai"] = lane(
        requests=1, hold={**hold, "since": "2025-01-01T00:00:00+00:00", "until": None}
    )
    text = text_of(render(held))
    assert cells(text, "zai")["state"] == "held: billing"
    assert "zai: insufficient balance (1113) — top up, then `ccctl lane reset zai`" in text


def held_status() -> dict[str, Any]:
    held = fake_status(paused=True)
    hold = {"cls": "billing", "code": "1113", "status": 429, "words": "insufficient balance", "message": "x"}
    held["lanes"]["zai"] = lane(
        requests=1, hold={**hold, "since": "2025-01-01T00:00:00+00:00", "until": None}
    )
    held["lanes"]["zai"]["quota"] = {
        "state": "ok",
        "five_hour": {"percent": 37.0, "resets_at": None},
        "week": None,
        "checked_at": None,
    }
    return held


@pytest.mark.parametrize("live", [False, True])
@pytest.mark.parametrize("shown", [fake_status, held_status], ids=["breaker", "held-paused-quota"])
def test_the_plain_frame_reads_as_the_rich_one(shown: Any, live: bool) -> None:
    """`top --once` draws the frame itself (no rich import): the same text rich draws."""
    status_reply = shown()
    assert plain_frame(frame(status_reply, live=live)) == text_of(render(status_reply, live=live), width=200)
    down = frame_down(Path("/run/x/control.sock"), "refused", live=live)
    assert plain_frame(down) == text_of(render_down(Path("/run/x/control.sock"), "refused", live=live))


def test_the_plain_frame_has_no_control_characters_and_an_ascii_form() -> None:
    sneaky = fake_status()
    sneaky["lanes"]["zai"]["problem"] = "bad\x1b[2Jkey"
    sneaky["lanes"]["zai"]["available"] = False
    text = plain_frame(frame(held_status(), live=False), ascii_only=True)
    assert text.isascii() and "| zai " in text and "held: billing" in text
    assert "\x1b" not in plain_frame(frame(sneaky, live=False))
    assert cells(plain_frame(frame(sneaky, live=False)), "zai")["state"] == "unavailable: bad [2Jkey"


@pytest.mark.e2e
def test_once_against_a_running_daemon_does_not_import_rich(daemon: Daemon, tmp_path: Path) -> None:
    assert post(daemon).status_code == 200
    loaded = modules_loaded_by(["top", "--once"], tmp_path, daemon.env())
    assert "ccmitm.cli.top" in loaded and "rich" not in loaded
