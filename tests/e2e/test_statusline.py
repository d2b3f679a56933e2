"""`ccctl statusline` against the real daemon: a session's calls, the state bits, the daemon down;
and the real Claude Code CLI, interactive on a pseudo-terminal, showing the line."""

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
import sys
import termios
import time
from pathlib import Path

import pytest

from tests.e2e.test_claude_code import claude_bin  # noqa: F401 - the fixture
from tests.helpers import CLAUDE_CODE_ENV, CLIENT_API_KEY, HAIKU, Daemon, post, wait_for

pytestmark = pytest.mark.e2e

SESSION = "5f0c1d2e-aaaa-bbbb-cccc-000000000001"
OTHER = "5f0c1d2e-aaaa-bbbb-cccc-000000000002"


def statusline(daemon, *args: str, stdin: dict | None = None, env: dict | None = None):
    """`ccctl statusline ARGS` as Claude Code runs it: session JSON on stdin, stdout a pipe."""
    result = subprocess.run(
        [sys.executable, "-m", "ccmitm.cli", "statusline", *args],
        input=json.dumps(stdin if stdin is not None else {"session_id": SESSION}),
        env={**daemon.env(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=30,
    )
    daemon.ccctl_outputs.append(result.stdout + result.stderr)
    return result


def session_headers(session: str) -> dict[str, str]:
    return {"x-claude-code-session-id": session}


def test_the_line_counts_this_sessions_calls_per_lane(daemon):
    for _ in range(2):
        assert post(daemon, HAIKU, headers=session_headers(SESSION)).status_code == 200
    assert post(daemon, "claude-sonnet-4-5", headers=session_headers(SESSION)).status_code == 200
    assert post(daemon, HAIKU, headers=session_headers(OTHER)).status_code == 200
    daemon.wait_usage(4)

    result = statusline(daemon, "--color", "never")
    assert result.returncode == 0
    assert result.stderr == ""
    line = result.stdout.strip()
    # The last call of this session went to anthropic; two Haiku calls were offloaded (fake Z.AI:
    # 11 in + 7 out each), the other session's call is not counted here.
    assert line.startswith("ccmitm anthropic · zai 2 anthropic 1 · 36 tok off"), line
    assert "saved" in line  # the built-in estimate prices Haiku
    assert "\033[" not in line

    fmt = statusline(daemon, "--format", "{lane}|{calls}|{tokens}|{usd}|{session}", "--color", "never")
    lane, calls, tokens, usd, session = fmt.stdout.strip().split("|")
    assert (lane, calls, tokens, session) == ("anthropic", "zai 2 anthropic 1", "36", SESSION[:8])
    assert float(usd) >= 0

    # The reply behind it, as typed in control/protocol.py.
    reply = json.loads(daemon.ccctl("session", "--json", "--id", OTHER, check=True).stdout)
    assert reply["calls"] == {"zai": 1} and reply["offloaded_tokens"] == 18 and reply["known"]


def test_the_line_shows_pause_and_colours_only_when_allowed(daemon):
    daemon.ccctl("pause", check=True)
    post(daemon, HAIKU, headers=session_headers(SESSION))
    daemon.wait_usage(1)
    plain = statusline(daemon, env={"NO_COLOR": "1"}).stdout.strip()
    assert plain.startswith("ccmitm anthropic · anthropic 1"), plain
    assert plain.endswith("· paused") and "\033[" not in plain
    coloured = statusline(daemon, "--color", "always").stdout
    assert "\033[33mpaused\033[0m" in coloured
    # Claude Code pipes stdout: the default still colours (it renders ANSI) unless NO_COLOR.
    assert "\033[" in statusline(daemon, env={"NO_COLOR": "", "TERM": "xterm"}).stdout


def test_an_unknown_session_and_no_stdin_still_get_a_line(daemon):
    assert (
        statusline(daemon, "--color", "never", stdin={}).stdout.strip()
        == "ccmitm - · no calls yet · 0 tok off"
    )
    garbage = subprocess.run(
        [sys.executable, "-m", "ccmitm.cli", "statusline", "--color", "never"],
        input="not json{",
        env=daemon.env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert garbage.returncode == 0 and garbage.stdout.startswith("ccmitm - · no calls yet")


def test_daemon_down_gives_a_short_line_and_exit_0(make_daemon):
    daemon = make_daemon(start=False)
    result = statusline(daemon, "--color", "never")
    assert (result.returncode, result.stdout, result.stderr) == (0, "ccmitm: down\n", "")
    bad = statusline(daemon, "--bogus")
    assert bad.returncode == 0 and bad.stdout.startswith("ccmitm: ?")


def test_a_socket_set_in_the_config_is_found_without_the_config_model(make_daemon, tmp_path):
    socket = tmp_path / "s" / "ctl.sock"
    daemon = make_daemon(mutate=lambda config: config.update(control={"socket": str(socket)}))
    post(daemon, HAIKU, headers=session_headers(SESSION))
    daemon.wait_usage(1)
    assert statusline(daemon, "--color", "never").stdout.startswith("ccmitm zai · zai 1")


def test_a_held_lane_and_a_rejected_config_are_on_the_line(daemon, upstreams):
    _, zai = upstreams
    zai.zai_refusal = "1308"  # "usage limit reached for 5 hour": a quota hold with its reset time
    assert post(daemon, HAIKU, headers=session_headers(SESSION)).status_code == 200  # failed over
    daemon.wait_usage(2)
    line = statusline(daemon, "--color", "never").stdout.strip()
    # The refused attempt and the failover both count; the last call went to the default lane.
    assert line.startswith("ccmitm anthropic · zai 1 anthropic 1"), line
    assert re.search(r" · zai held: quota until (\w{3} )?\d\d:\d\d$", line), line

    good = daemon.config_path.read_text()
    daemon.config_path.write_text(good.replace("lane: zai", "lane: zia"))
    wait_for(lambda: "reload (file change) rejected" in daemon.stderr(), what="rejection")
    assert (
        statusline(daemon, "--color", "never").stdout.strip().endswith("· config rejected (`ccctl status`)")
    )
    daemon.config_path.write_text(good)


def test_a_quota_meter_at_100_percent_is_on_the_line_before_any_refusal(make_daemon, upstreams):
    _, zai = upstreams
    zai.quota_limits[0]["percentage"] = 100  # the 5-hour window
    daemon = make_daemon(mutate=lambda config: config["lanes"]["zai"].update(provider="zai", quota_poll_s=1))

    def line() -> str:
        return statusline(daemon, "--color", "never").stdout.strip()

    wait_for(lambda: "quota used up" in line(), what="meter read", interval=0.5)
    assert re.search(r" · zai 5h quota used up until (\w{3} )?\d\d:\d\d$", line()), line()


# --- the real Claude Code CLI -------------------------------------------------------------------
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


@pytest.mark.claude
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
