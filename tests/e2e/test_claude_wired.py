"""The real Claude Code CLI in a wired shell whose daemon is stopped (a reboot without the service,
`ccctl stop`): it never hangs. `wiring.when_down: start` starts ccmitmd and the call succeeds
through it; `fail` returns non-zero in under 2 s with the fix; `ccctl run -- claude ...` likewise."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from tests.e2e.test_claude_code import claude_bin  # noqa: F401 - the fixture
from tests.helpers import CLAUDE_CODE_ENV, REPO_ROOT, Daemon, post

pytestmark = [pytest.mark.e2e, pytest.mark.claude]

HAIKU_CALL = 'claude -p "say ok" --model haiku'


def stopped_daemon(make_daemon, when_down: str) -> Daemon:
    """A daemon that ran once (so its CA exists, as after any first start) and is stopped now."""
    daemon = make_daemon()
    daemon.stop()
    daemon.write_config({**daemon.config, "wiring": {"when_down": when_down, "start_timeout_s": 60}})
    return daemon


SHELL_ARGV = {
    "bash": ["bash", "--norc", "--noprofile", "-c"],
    "zsh": ["zsh", "-f", "-c"],
    "fish": ["fish", "-N", "-c"],
}


def wired_bash(
    claude: Path, daemon: Daemon, script: str, shell: str = "bash"
) -> subprocess.CompletedProcess[str]:
    """``script`` in a fresh shell (bash unless told) with Claude Code and ccctl on PATH."""
    env = {
        **daemon.env(),
        "PATH": f"{claude.parent}:{Path(sys.executable).parent}:{os.environ['PATH']}",
        **CLAUDE_CODE_ENV,
    }
    return subprocess.run(
        [*SHELL_ARGV[shell], script],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        stdin=subprocess.DEVNULL,
        cwd=daemon.root,
    )


def timed(call: str) -> str:
    """``call`` followed by a line with its exit code and its wall time (bash's EPOCHREALTIME)."""
    return f't0=$EPOCHREALTIME; {call}; rc=$?; t1=$EPOCHREALTIME; echo "rc=$rc t0=$t0 t1=$t1"'


def rc_and_seconds(stdout: str) -> tuple[int, float]:
    fields = dict(part.split("=", 1) for part in stdout.strip().splitlines()[-1].split())
    return int(fields["rc"]), float(fields["t1"]) - float(fields["t0"])


@pytest.mark.parametrize("mode", ["intercept", "reverse"])
def test_when_down_start_a_wired_claude_starts_the_daemon(
    claude_bin: Path,  # noqa: F811
    make_daemon,
    upstreams,
    mode: str,
) -> None:
    _, zai = upstreams
    zai.reply_text = "ok from the GLM lane"
    daemon = stopped_daemon(make_daemon, "start")
    wire = "ccctl env" + (" --reverse" if mode == "reverse" else "")
    try:
        result = wired_bash(claude_bin, daemon, f'eval "$({wire} 2>/dev/null)"; {timed(HAIKU_CALL)}')
        rc, _ = rc_and_seconds(result.stdout)
        assert rc == 0, result.stderr
        assert result.stdout.splitlines()[0] == "ok from the GLM lane"
        assert zai.messages(), "the call never reached the offload lane"
        assert daemon.ccctl("status").returncode == 0, "the guard should have left ccmitmd running"
        assert {line["listener"] for line in daemon.usage_lines() if line["path"] == "/v1/messages"} == {mode}
    finally:
        daemon.ccctl("stop", timeout=60)


@pytest.mark.parametrize("mode", ["intercept", "reverse"])
def test_when_down_fail_a_wired_claude_fails_fast_with_the_fix(
    claude_bin: Path,  # noqa: F811
    make_daemon,
    mode: str,
) -> None:
    daemon = stopped_daemon(make_daemon, "fail")
    wire = "ccctl env" + (" --reverse" if mode == "reverse" else "")
    result = wired_bash(claude_bin, daemon, f'eval "$({wire} 2>/dev/null)"; {timed(HAIKU_CALL)}')
    rc, seconds = rc_and_seconds(result.stdout)
    assert rc != 0
    assert "does not answer" in result.stderr and "ccctl start" in result.stderr
    # Failed without waiting (Claude Code alone retries a closed proxy for minutes); how
    # fast it is belongs to make bench, not to a pass/fail test.
    assert seconds < 60, f"waited {seconds:.0f}s"
    assert daemon.ccctl("status").returncode == 1, "fail must not start anything"


def test_ccctl_run_claude_starts_the_daemon_when_down(
    claude_bin: Path,  # noqa: F811
    make_daemon,
    upstreams,
) -> None:
    _, zai = upstreams
    zai.reply_text = "ok from the GLM lane"
    daemon = stopped_daemon(make_daemon, "start")
    try:
        result = wired_bash(claude_bin, daemon, f"ccctl run -- {HAIKU_CALL}")
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "ok from the GLM lane"
    finally:
        daemon.ccctl("stop", timeout=60)


def test_ccctl_run_claude_fails_fast_when_down_and_told_to(
    claude_bin: Path,  # noqa: F811
    make_daemon,
) -> None:
    daemon = stopped_daemon(make_daemon, "fail")
    started = time.monotonic()
    result = wired_bash(claude_bin, daemon, f"ccctl run -- {HAIKU_CALL}")
    seconds = time.monotonic() - started
    assert result.returncode != 0 and result.stdout == ""
    assert "does not answer" in result.stderr and "ccctl start" in result.stderr
    # Failed without waiting (Claude Code alone retries a closed proxy for minutes); how
    # fast it is belongs to make bench, not to a pass/fail test.
    assert seconds < 60, f"waited {seconds:.0f}s"


@pytest.mark.parametrize("shell", ["bash", "fish"])
def test_ccproof_judges_only_its_own_two_calls(
    claude_bin: Path,  # noqa: F811
    daemon: Daemon,
    upstreams,
    shell: str,
) -> None:
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed (.ci/run installs it)")
    anthropic_up, zai = upstreams
    zai.reply_text, anthropic_up.reply_text = "ok from the GLM lane", "ok from the Anthropic lane"
    # An older call, two minutes before ccproof (its timestamp moved back): not ccproof's business.
    assert post(daemon, "claude-3-5-haiku-oldmarker").status_code == 200
    daemon.wait_usage(1)
    usage = daemon.logs_dir / "usage.jsonl"
    record = json.loads(usage.read_text().splitlines()[0])
    record["ts"] = (datetime.fromisoformat(record["ts"]) - timedelta(minutes=2)).isoformat()
    usage.write_text(json.dumps(record) + "\n")

    habits = REPO_ROOT / "etc" / "shell" / ("ccmitm.fish" if shell == "fish" else "ccmitm.sh")
    result = wired_bash(claude_bin, daemon, f"source {habits}; ccproof", shell=shell)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:2] == ["haiku:  ok from the GLM lane", "sonnet: ok from the Anthropic lane"]
    assert "PASS: routing and header hygiene hold" in result.stdout
    assert "oldmarker" not in result.stdout
    # The older call is in the log and a wider window sees it: the narrow window is what kept it out.
    assert "oldmarker" in daemon.ccctl("verify", "--since", "10m", "--proof").stdout


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_the_guard_starts_the_daemon_in_zsh_and_fish_too(
    claude_bin: Path,  # noqa: F811
    make_daemon,
    upstreams,
    shell: str,
) -> None:
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed (.ci/run installs it)")
    _, zai = upstreams
    zai.reply_text = "ok from the GLM lane"
    daemon = stopped_daemon(make_daemon, "start")
    habits = REPO_ROOT / "etc" / "shell" / ("ccmitm.fish" if shell == "fish" else "ccmitm.sh")
    script = f"source {habits}; ccsub >/dev/null 2>&1; {HAIKU_CALL}; ccstock >/dev/null"
    try:
        result = wired_bash(claude_bin, daemon, script, shell=shell)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "ok from the GLM lane"
        assert daemon.ccctl("status").returncode == 0
    finally:
        daemon.ccctl("stop", timeout=60)
