"""The real client: the Claude Code CLI from npm, through both listeners, against fake upstreams."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from conftest import CLIENT_API_KEY, ZAI_KEY, Daemon, sha

pytestmark = [pytest.mark.e2e, pytest.mark.claude]

CLAUDE = Path(__file__).parent / "e2e" / "node" / "node_modules" / ".bin" / "claude"


@pytest.fixture(scope="module")
def claude_bin() -> Path:
    if not CLAUDE.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CLAUDE} missing in CI: `make node-deps` should have installed it")
        pytest.skip("Claude Code CLI not installed (run `make node-deps`; needs npm)")
    return CLAUDE


def run_claude(
    claude: Path, daemon: Daemon, model: str, wiring: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(daemon.home),
        "ANTHROPIC_API_KEY": CLIENT_API_KEY,
        "DISABLE_TELEMETRY": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
        **wiring,
    }
    return subprocess.run(
        [str(claude), "-p", "say ok", "--model", model],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
        cwd=daemon.root,
    )


@pytest.mark.parametrize("mode", ["intercept", "reverse"])
def test_claude_code_haiku_goes_to_zai_and_sonnet_stays(
    claude_bin: Path, daemon: Daemon, upstreams, mode: str
) -> None:
    anthropic_up, zai = upstreams
    # Distinct replies per lane, every SSE event cut in two pieces on the wire: Claude Code prints
    # exactly the lane's text only if it really consumed and reassembled the stream it was sent.
    zai.reply_text, anthropic_up.reply_text = "ok from the GLM lane", "ok from the Anthropic lane"
    zai.behaviour = anthropic_up.behaviour = "slow"
    if mode == "intercept":
        wiring = {"HTTPS_PROXY": daemon.proxy_url, "NODE_EXTRA_CA_CERTS": str(daemon.ca_cert)}
    else:
        wiring = {"ANTHROPIC_BASE_URL": daemon.reverse_url}

    result = run_claude(claude_bin, daemon, "haiku", wiring)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok from the GLM lane"
    haiku_calls = zai.messages()
    assert haiku_calls, "Claude Code's Haiku call never reached the offload lane"
    for call in haiku_calls:
        assert call.model == "glm-4.5-air"
        assert sha(call.header("x-api-key")) == sha(ZAI_KEY)
        assert not call.has_header("authorization") and not call.has_header("anthropic-beta")
        assert CLIENT_API_KEY.encode() not in call.body
    assert all("haiku" not in (r.model or "") for r in anthropic_up.messages())

    result = run_claude(claude_bin, daemon, "sonnet", wiring)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok from the Anthropic lane"
    sonnet_calls = [r for r in anthropic_up.messages() if "sonnet" in (r.model or "")]
    assert sonnet_calls
    for call in sonnet_calls:
        assert sha(call.header("x-api-key")) == sha(CLIENT_API_KEY)
        assert ZAI_KEY not in str(call.headers)

    lines = [line for line in daemon.usage_lines() if line["path"] == "/v1/messages"]
    assert {line["listener"] for line in lines} == {mode}
    assert any(line["lane"] == "zai" and line["stream"] and line["output_tokens"] == 7 for line in lines)
    assert any(line["lane"] == "anthropic" and "sonnet" in line["model"] for line in lines)
    assert all(line["session"] for line in lines)

    # The routing proof holds over what Claude Code really sent.
    audit = daemon.ccctl("verify", "--proof")
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert "PASS: routing and header hygiene hold" in audit.stdout
