"""`ccctl statusline` against the real daemon: a session's calls, the state bits, the daemon down."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from tests.helpers import HAIKU, post, wait_for

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
