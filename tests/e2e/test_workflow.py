"""Working with subagents: haiku-subagent wiring, request classes in the log, ready prompts, endurance."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml
from click.testing import CliRunner

from ccmitm.cli.main import main
from ccmitm.install import prompts, subagent
from ccmitm.logs.usage import request_class_of
from ccmitm.reports.secretscan import scan_tree
from ccmitm.reports.summary import summarize
from ccmitm.reports.text import format_summary
from tests.helpers import ALL_SECRETS, CLIENT_API_KEY, CLIENT_OAUTH_TOKEN, REPO_ROOT, ZAI_KEY, Daemon, status

ROOT = REPO_ROOT


def ccctl(*args: str, home: Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "CCMITM_", "XDG_"))}
    env.update(HOME=str(home), XDG_STATE_HOME=str(home / "state"), XDG_CONFIG_HOME=str(home / "cfg"))
    return subprocess.run(
        [sys.executable, "-m", "ccmitm.cli", *args],
        env=env,
        cwd=cwd or home,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


# --- subagent install / remove ---------------------------------------------------------------------
def test_subagent_install_is_idempotent_and_remove_undoes_it(tmp_path: Path) -> None:
    agent = tmp_path / ".claude" / "agents" / "haiku-subagent.md"
    first = ccctl("subagent", "install", home=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "installed" in first.stdout
    text = agent.read_text()
    front = yaml.safe_load(text.split("---\n")[1])
    assert front["name"] == "haiku-subagent" and front["model"] == "haiku"
    for word in ("grep", "repo map", "minimal-diff"):
        assert word in front["description"]
    assert subagent.MARKER in text

    again = ccctl("subagent", "install", home=tmp_path)
    assert again.returncode == 0 and "unchanged" in again.stdout
    assert agent.read_text() == text

    agent.write_text(subagent.render(body="an older body\n"))  # an older version of our own file
    assert "updated" in ccctl("subagent", "install", home=tmp_path).stdout
    assert agent.read_text() == text

    removed = ccctl("subagent", "remove", home=tmp_path)
    assert removed.returncode == 0 and not agent.exists()
    assert "nothing to remove" in ccctl("subagent", "remove", home=tmp_path).stdout


def test_subagent_never_clobbers_a_foreign_file_without_force(tmp_path: Path) -> None:
    agent = tmp_path / ".claude" / "agents" / "haiku-subagent.md"
    agent.parent.mkdir(parents=True)
    mine = "---\nname: haiku-subagent\nmodel: haiku\n---\nmy own agent\n"
    agent.write_text(mine)
    refused = ccctl("subagent", "install", home=tmp_path)
    assert refused.returncode == 1 and "--force" in refused.stderr
    assert agent.read_text() == mine
    refused = ccctl("subagent", "remove", home=tmp_path)
    assert refused.returncode == 1 and agent.read_text() == mine
    forced = ccctl("subagent", "install", "--force", home=tmp_path)
    assert forced.returncode == 0 and agent.read_text() == subagent.render()


def test_subagent_project_scope_goes_to_the_git_root(tmp_path: Path) -> None:
    project = tmp_path / "proj"
    (project / "src" / "deep").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(project)], check=True, timeout=30)
    home = tmp_path / "home"
    home.mkdir()
    result = ccctl("subagent", "install", "--scope", "project", home=home, cwd=project / "src" / "deep")
    assert result.returncode == 0, result.stderr
    assert (project / ".claude" / "agents" / "haiku-subagent.md").read_text() == subagent.render()
    assert not (home / ".claude").exists()
    assert ccctl("subagent", "remove", "--scope", "project", home=home, cwd=project).returncode == 0
    assert not (project / ".claude" / "agents" / "haiku-subagent.md").exists()


# --- prompts -------------------------------------------------------------------------------------
def test_prompts_by_name_and_letter_and_docs_match() -> None:
    runner = CliRunner()
    listing = runner.invoke(main, ["prompt"])
    assert listing.exit_code == 0
    assert [line.split()[1] for line in listing.output.splitlines()] == [
        "review",
        "map",
        "audit",
        "explainer",
    ]
    for item in prompts.PROMPTS:
        for name in (item.name, item.letter, item.letter.lower()):
            result = runner.invoke(main, ["prompt", name])
            assert result.exit_code == 0 and result.output == item.text
    assert (
        "haiku-subagent" in prompts.find("A").text and "daemon/proxy/addon.py" in prompts.find("review").text
    )
    assert "changed this week" in prompts.find("map").text
    assert runner.invoke(main, ["prompt", "nope"]).exit_code == 1
    # docs/PROMPTS.md is generated from the same source: regenerate with `ccctl prompt --markdown`.
    assert (ROOT / "docs" / "PROMPTS.md").read_text() == prompts.render_markdown()


def test_prompt_paths_exist_in_this_repository() -> None:
    for path in (
        "daemon/proxy/addon.py",
        "daemon/core/routing.py",
        "etc/shell/ccmitm.sh",
        "Makefile",
        "service",
        "logrotate",
    ):
        assert (ROOT / path).exists(), path
        assert any(path in item.text for item in prompts.PROMPTS), path


# --- request classes -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("main", "main"),
        ("Subagent", "subagent"),
        ("side_reply", "side_reply"),
        ("x\r\nevil", "other"),
    ],
)
def test_request_class_is_a_closed_vocabulary(value: str | None, expected: str | None) -> None:
    assert request_class_of(value) == expected


def test_summarize_breaks_down_by_request_class_and_session() -> None:
    def rec(lane: str, cls: str | None, session: str | None) -> dict:
        return {"lane": lane, "status": 200, "request_class": cls, "session": session, "duration_ms": 5.0}

    records = [rec("zai", "subagent", f"s{i % 3}") for i in range(6)]
    records += [rec("anthropic", "main", "s0"), rec("anthropic", None, None), rec("zai", None, "s9")]
    result = summarize(records, top_sessions=2)
    assert {k: v["calls"] for k, v in result["lanes"]["zai"]["by_request_class"].items()} == {
        "subagent": 6,
        "unmarked": 1,
    }
    assert {k: v["calls"] for k, v in result["lanes"]["anthropic"]["by_request_class"].items()} == {
        "main": 1,
        "unmarked": 1,
    }
    sessions = result["sessions"]
    assert sessions["count"] == 4
    assert [row["session"] for row in sessions["top"]] == ["s0", "s1"]
    assert sessions["top"][0]["lanes"] == {"anthropic": 1, "zai": 2}
    assert sessions["others"]["sessions"] == 2 and sessions["others"]["calls"] == 3
    text = format_summary(result)
    assert "by Claude Code request class" in text and "(2 others)" in text and "subagent:2" in text


def test_request_class_and_agent_type_reach_the_log_and_status(daemon: Daemon, upstreams) -> None:
    _, zai = upstreams
    headers = {
        "x-api-key": CLIENT_API_KEY,
        "x-claude-code-request-class": "subagent",
        "x-claude-code-agent-type": "custom",
        "x-claude-code-session-id": "sess-1",
    }
    body = {"model": "claude-haiku-4-5", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    for cls in ("subagent", "main", "hacked\tvalue"):
        response = httpx.post(
            daemon.reverse_url + "/v1/messages",
            json=body,
            headers={**headers, "x-claude-code-request-class": cls},
            timeout=30,
        )
        assert response.status_code == 200
    httpx.post(
        daemon.reverse_url + "/v1/messages", json=body, headers={"x-api-key": CLIENT_API_KEY}, timeout=30
    )
    lines = daemon.wait_usage(4)
    assert [line["request_class"] for line in lines] == ["subagent", "main", "other", None]
    assert [line["agent_type"] for line in lines] == ["custom", "custom", "custom", None]
    assert len(zai.messages()) == 4
    assert status(daemon)["lanes"]["zai"]["by_request_class"] == {
        "main": 1,
        "other": 1,
        "subagent": 1,
        "unmarked": 1,
    }
    text = daemon.ccctl("status", check=True).stdout
    assert "by request class: main 1, other 1, subagent 1, unmarked 1" in text
    summary = json.loads(daemon.ccctl("summarize", "--json", check=True).stdout)
    assert summary["sessions"]["top"][0] == {
        "session": "sess-1",
        "calls": 3,
        "errors": 0,
        "lanes": {"zai": 3},
        "by_request_class": {"main": 1, "other": 1, "subagent": 1},
    }
    assert daemon.ccctl("verify").returncode == 0  # the new fields change nothing in the audit


# --- endurance -----------------------------------------------------------------------------------
def test_endurance_live_needs_consent_and_a_credential(tmp_path: Path) -> None:
    refused = ccctl("endurance", "--against", "live", home=tmp_path)
    assert refused.returncode == 2 and "--yes" in refused.stderr
    no_key = ccctl("endurance", "--against", "live", "--yes", home=tmp_path)
    assert no_key.returncode == 2 and "ANTHROPIC_API_KEY" in no_key.stderr
    chaos = ccctl("endurance", "--against", "live", "--yes", "--chaos", home=tmp_path)
    assert chaos.returncode == 2 and "--chaos" in chaos.stderr
    assert not (tmp_path / "state").exists()  # nothing ran, nothing written


def test_endurance_against_fake_leaves_readable_evidence_and_no_secret(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {"bundle": {"dir": str(tmp_path / "bundles")}, "logs": {"dir": str(tmp_path / "logs")}}
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "CCMITM_", "XDG_", "ZAI_"))}
    # Planted credentials in the caller's environment: none may reach the evidence.
    env.update(
        HOME=str(home),
        XDG_STATE_HOME=str(home / "state"),
        XDG_RUNTIME_DIR=str(home / "run"),
        CCMITM_CONFIG=str(config),
        ANTHROPIC_API_KEY=CLIENT_API_KEY,
        ANTHROPIC_AUTH_TOKEN=CLIENT_OAUTH_TOKEN,
        ZAI_API_KEY=ZAI_KEY,
    )
    out = tmp_path / "evidence"
    result = subprocess.run(
        [sys.executable, "-m", "ccmitm.cli", "endurance", "--minutes", "1", "--chaos", "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"evidence: {out}" in result.stdout

    metrics = json.loads((out / "METRICS.json").read_text())
    assert metrics["plan"]["against"] == "fake" and metrics["plan"]["minutes"] == 1
    assert metrics["verify"]["ok"] is True
    for phase in ("warm-up", "soak", "parallel", "burst", "chaos"):
        assert phase in metrics["phases"], phase
        assert set(metrics["log"][phase]) == {"anthropic", "zai"}, phase
    soak = metrics["client"]["soak"]
    assert soak["haiku"]["errors"] == 0 and soak["sonnet"]["errors"] == 0
    assert soak["haiku"]["calls"] >= 20 and abs(soak["haiku"]["calls"] - soak["sonnet"]["calls"]) <= 1
    assert metrics["client"]["burst"]["haiku"]["calls"] + metrics["client"]["burst"]["sonnet"]["calls"] == 40
    assert metrics["client"]["chaos (killed)"]["sonnet"]["errors"] == 1  # the kill really cut a stream

    summary = (out / "SUMMARY.md").read_text()
    assert "| soak | zai |" in summary and "| burst | anthropic |" in summary
    assert "verify: PASS" in summary
    tests_md = (out / "TESTS.md").read_text()
    for check in (
        "SIGTERM drains the in-flight stream",
        "SIGKILL mid-stream gives the client an error",
        "no connection left open",
        "every Haiku call reached the offload upstream",
        "verify: routing and header hygiene hold",
        "evidence: no secret in the files",
    ):
        assert check in tests_md, check
    assert "| FAIL |" not in tests_md
    # The three files tell one story: METRICS.json lists the same checks, the secret scan included.
    assert [c["name"] for c in metrics["checks"]] == [
        line.split(" | ")[1] for line in tests_md.splitlines()[4:] if line.startswith("| ")
    ]
    assert "[PASS] (a) haiku-offloaded" in (out / "VERIFY.txt").read_text()
    assert scan_tree(out, ALL_SECRETS) == []
    assert all(secret not in result.stdout + result.stderr for secret in ALL_SECRETS)
    assert oct((out / "METRICS.json").stat().st_mode & 0o777) == "0o600"

    # The next bundle carries the newest evidence.
    bundled = subprocess.run(
        [sys.executable, "-m", "ccmitm.cli", "bundle", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert bundled.returncode == 0, bundled.stderr
    folder = Path(json.loads(bundled.stdout)["path"])
    assert (folder / "endurance" / "SUMMARY.md").read_text() == summary
    assert (folder / "endurance" / "TESTS.md").read_text() == tests_md
    assert scan_tree(folder.parent, ALL_SECRETS) == []


@pytest.mark.e2e
@pytest.mark.claude
def test_claude_code_marks_its_calls_when_wired_with_subagent(daemon: Daemon, upstreams) -> None:
    """The real CLI, wired the way `ccctl env --subagent` wires it, labels its calls: proof that the
    variable we export is the one that makes Claude Code send its request class."""
    from tests.e2e.test_claude_code import CLAUDE, run_claude

    if not CLAUDE.exists():
        pytest.skip("Claude Code CLI not installed (run `make node-deps`)")
    wiring = {
        "ANTHROPIC_BASE_URL": daemon.reverse_url,
        "CLAUDE_CODE_SUBAGENT_MODEL": "haiku",
        "CLAUDE_CODE_GATEWAY_HINT_HEADERS": "1",
    }
    result = run_claude(CLAUDE, daemon, "haiku", wiring)
    assert result.returncode == 0, result.stderr
    lines = [line for line in daemon.usage_lines() if line["path"].startswith("/v1/messages")]
    assert lines and all(line["lane"] == "zai" and line["request_class"] == "main" for line in lines)
    assert status(daemon)["lanes"]["zai"]["by_request_class"].get("main", 0) >= 1
