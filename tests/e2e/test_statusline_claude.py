"""The real Claude Code CLI, interactive on a pseudo-terminal, shows ccmitm's status line."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pty
import re
import select
import shutil
import struct
import subprocess
import termios
import time
from pathlib import Path

import pytest

from tests.e2e.test_claude_code import claude_bin  # noqa: F401 - the fixture
from tests.helpers import CLAUDE_CODE_ENV, CLIENT_API_KEY, Daemon

pytestmark = [pytest.mark.e2e, pytest.mark.claude]

_ANSI = re.compile(
    rb"\x1b\[[0-9;?<>=]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()][0-9A-B]|\x1b[=>78]"
)


def screen_text(raw: bytes) -> str:
    """What the terminal showed, roughly: escape sequences out, cursor moves as spaces."""
    return re.sub(rb"[ \t]+", b" ", _ANSI.sub(b" ", raw)).decode(errors="replace")


def seed_claude_home(home: Path, workspace: Path) -> None:
    """The answers Claude Code's first interactive start would ask for, as it records them in
    ~/.claude.json: onboarding done, the API key approved (its last 20 characters), the
    workspace trusted (the status line runs only in a trusted workspace)."""
    state = {
        "theme": "dark",
        "hasCompletedOnboarding": True,
        "customApiKeyResponses": {"approved": [CLIENT_API_KEY[-20:]], "rejected": []},
        "projects": {str(workspace): {"hasTrustDialogAccepted": True, "hasCompletedProjectOnboarding": True}},
    }
    (home / ".claude.json").write_text(json.dumps(state))


def read_until(master: int, proc: subprocess.Popen[bytes], pattern: str, timeout: float) -> str:
    seen = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                seen += os.read(master, 65536)
            except OSError:
                break
            if re.search(pattern, screen_text(seen)):
                return screen_text(seen)
    raise TimeoutError(f"never saw {pattern!r}; the screen's end: {screen_text(seen)[-3000:]!r}")


@pytest.mark.timeout(300)
def test_claude_code_shows_ccmitms_line_after_an_offloaded_answer(
    claude_bin: Path,  # noqa: F811
    daemon: Daemon,
    upstreams,
) -> None:
    if shutil.which("setsid") is None:
        pytest.skip("setsid (util-linux) not installed")
    _, zai = upstreams
    zai.reply_text = "ok from the GLM lane"
    workspace = daemon.root / "work"
    workspace.mkdir()
    installed = daemon.ccctl("statusline", "install", check=True)
    assert "runs" in installed.stdout
    seed_claude_home(daemon.home, workspace)
    env = {
        **daemon.env(),
        **CLAUDE_CODE_ENV,
        "HTTPS_PROXY": daemon.proxy_url,
        "NODE_EXTRA_CA_CERTS": str(daemon.ca_cert),
        "TERM": "xterm-256color",
        "NO_COLOR": "1",  # the line without colour codes between its words
    }
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    proc = subprocess.Popen(
        ["setsid", "--ctty", str(claude_bin), "--model", "haiku"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        cwd=workspace,
    )
    os.close(slave)
    try:
        # Before any call the line has no lane yet (Claude Code runs it at start too).
        read_until(master, proc, r"ccmitm - · no calls yet", timeout=40)
        os.write(master, b"say ok")
        time.sleep(0.5)  # let the prompt box take the text before Enter (not a timing assertion)
        os.write(master, b"\r")
        # Claude Code redraws only the cells that changed, so the unchanged "ccmitm " prefix of
        # the first line is not sent again: match what follows it.
        screen = read_until(master, proc, r"zai · zai \d+ · \d+ tok off", timeout=120)
        assert "ok from the GLM lane" in screen
        assert zai.messages(), "the call never reached the offload lane"
        sessions = {line["session"] for line in daemon.usage_lines() if line["lane"] == "zai"}
        assert len(sessions) == 1 and None not in sessions  # Claude Code's session id, counted
    finally:
        with contextlib.suppress(OSError):
            os.write(master, b"\x03\x03")
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        os.close(master)
