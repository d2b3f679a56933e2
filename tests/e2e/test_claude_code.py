"""The real client: the Claude Code CLI from npm, through both listeners, against fake upstreams."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest

from ccmitm.testing.fakeupstream import Received, Reply
from tests.helpers import CLAUDE_CODE_ENV, CLIENT_API_KEY, ZAI_KEY, Daemon, sha

pytestmark = [pytest.mark.e2e, pytest.mark.claude]

CLAUDE = Path(__file__).parent / "node" / "node_modules" / ".bin" / "claude"


@pytest.fixture(scope="module")
def claude_bin() -> Path:
    if not CLAUDE.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CLAUDE} missing in CI: `make node-deps` should have installed it")
        pytest.skip("Claude Code CLI not installed (run `make node-deps`; needs npm)")
    return CLAUDE


def run_claude(
    claude: Path, daemon: Daemon, model: str, wiring: dict[str, str], prompt: str = "say ok"
) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(daemon.home),
        **CLAUDE_CODE_ENV,
        **wiring,
    }
    return subprocess.run(
        [str(claude), "-p", prompt, "--model", model],
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
        wiring = daemon.reverse_env

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


# --- Sonnet delegates to the haiku-subagent ------------------------------------------------------
#: Claude Code 2.1.332's agent-spawning tool (older releases called it "Task"), seen in the tools
#: list of its main-loop request; its input takes ``subagent_type`` and ``prompt``.
AGENT_TOOL = "Agent"
SPAWN_ID = "toolu_fake_spawn_haiku"


def eval_env(lines: str) -> dict[str, str | None]:
    """What `eval "$(ccctl env ...)"` does to a bash environment: export sets, unset removes."""
    effect: dict[str, str | None] = {}
    for line in lines.splitlines():
        words = shlex.split(line, comments=True)
        if words[:1] == ["export"]:
            name, _, value = words[1].partition("=")
            effect[name] = value
        elif words[:1] == ["unset"]:
            effect.update(dict.fromkeys(words[1:]))
    return effect


def orchestrating_sonnet(request: Received) -> Reply | None:
    """The fake Anthropic's main loop: delegate to haiku-subagent, then answer once it reported back."""
    if "sonnet" not in (request.model or ""):
        return None
    if request.tool_results():
        return Reply.text("Sonnet's summary of the subagent's report")
    return Reply.tool_use(
        AGENT_TOOL,
        {
            "description": "List the files",
            "prompt": "List the files in the working directory.",
            "subagent_type": "haiku-subagent",
            # In the foreground, so the report comes back as this tool call's result.
            "run_in_background": False,
        },
        tool_id=SPAWN_ID,
    )


def result_text(block: dict) -> str:
    content = block.get("content")
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content or [] if isinstance(part, dict))


@pytest.mark.parametrize("mode", ["intercept", "reverse"])
def test_sonnet_delegates_to_the_haiku_subagent_which_runs_on_glm(
    claude_bin: Path, daemon: Daemon, upstreams, mode: str
) -> None:
    anthropic_up, zai = upstreams
    anthropic_up.script = orchestrating_sonnet
    zai.reply_text = "subagent report: README.md, setup.py"

    # The operator guide's path, with the real commands: install the agent, wire the shell.
    installed = daemon.ccctl("subagent", "install", check=True)
    assert (daemon.home / ".claude" / "agents" / "haiku-subagent.md").exists(), installed.stdout
    env_args = ["env", "--subagent", "--shell", "bash"] + (["--reverse"] if mode == "reverse" else [])
    wiring = eval_env(daemon.ccctl(*env_args, check=True).stdout)
    assert wiring["CLAUDE_CODE_GATEWAY_HINT_HEADERS"] == "1"
    result = run_claude(
        claude_bin,
        daemon,
        "sonnet",
        {k: v for k, v in wiring.items() if v is not None},
        prompt="Use the haiku-subagent to list the files here, then summarise its report.",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Sonnet's summary of the subagent's report"

    # Main loop: Sonnet on Anthropic with the client's key, labelled main, offered the agent tool.
    sonnet = [r for r in anthropic_up.messages() if "sonnet" in (r.model or "")]
    assert len(sonnet) == 2, [r.model for r in anthropic_up.messages()]
    tools = {tool["name"]: tool for tool in sonnet[0].json().get("tools", [])}
    assert AGENT_TOOL in tools, f"no agent tool offered; tools: {sorted(tools)}"
    assert "subagent_type" in tools[AGENT_TOOL]["input_schema"]["properties"]
    assert "haiku-subagent" in json.dumps(sonnet[0].json()), "the installed agent is not offered"
    for call in sonnet:
        assert call.header("x-claude-code-request-class") == "main"
        assert sha(call.header("x-api-key")) == sha(CLIENT_API_KEY)
        assert ZAI_KEY not in str(call.headers) and ZAI_KEY.encode() not in call.body
    assert all("haiku" not in (r.model or "") for r in anthropic_up.messages())

    # The subagent: its Haiku calls went to Z.AI, rewritten to GLM, with the lane key only.
    subagent_calls = zai.messages()
    assert subagent_calls, "the subagent's Haiku call never reached the offload lane"
    for call in subagent_calls:
        assert call.model == "glm-4.5-air"
        assert call.header("x-claude-code-request-class") == "subagent"
        assert call.header("x-claude-code-agent-type") == "custom"
        assert sha(call.header("x-api-key")) == sha(ZAI_KEY)
        assert not call.has_header("authorization") and not call.has_header("anthropic-beta")
        assert CLIENT_API_KEY not in str(call.headers) and CLIENT_API_KEY.encode() not in call.body
        assert "List the files in the working directory." in call.body.decode()
    assert sonnet[0].at < subagent_calls[0].at < sonnet[1].at  # order of events, not timing

    # The subagent's answer came back to Sonnet as the agent tool's result.
    assert not sonnet[0].tool_results()
    (handback,) = sonnet[1].tool_results()
    assert handback["tool_use_id"] == SPAWN_ID
    assert zai.reply_text in result_text(handback)

    # The usage log proves it, and the operator's commands read it that way.
    lines = [line for line in daemon.usage_lines() if line["path"] == "/v1/messages"]
    assert {line["listener"] for line in lines} == {mode}
    offloaded = [line for line in lines if line["lane"] == "zai"]
    assert offloaded and all(
        line["request_class"] == "subagent" and line["agent_type"] == "custom" and "haiku" in line["model"]
        for line in offloaded
    )
    main = [line for line in lines if line["lane"] == "anthropic"]
    assert len(main) == 2 and all(line["request_class"] == "main" for line in main)
    audit = daemon.ccctl("verify", "--proof")
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert "PASS: routing and header hygiene hold" in audit.stdout
    summary = json.loads(daemon.ccctl("summarize", "--json", check=True).stdout)
    by_class = {lane: summary["lanes"][lane]["by_request_class"] for lane in ("zai", "anthropic")}
    assert {cls: row["calls"] for cls, row in by_class["zai"].items()} == {"subagent": len(offloaded)}
    assert by_class["anthropic"]["main"]["calls"] == 2
    assert "subagent" not in by_class["anthropic"]


# --- what Claude Code prints when it does not trust the proxy's CA (quoted in OPERATOR_GUIDE.md) --
def test_claude_code_names_an_untrusted_ca(claude_bin: Path, daemon: Daemon, upstreams) -> None:
    """Intercepting without NODE_EXTRA_CA_CERTS: the guide quotes this error; it must stay true."""
    result = run_claude(claude_bin, daemon, "haiku", {"HTTPS_PROXY": daemon.proxy_url})
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "SSL certificate verification failed (UNABLE_TO_VERIFY_LEAF_SIGNATURE)" in output, output
    guide = " ".join((Path(__file__).parents[2] / "docs" / "OPERATOR_GUIDE.md").read_text().split())
    assert "SSL certificate verification failed (UNABLE_TO_VERIFY_LEAF_SIGNATURE)" in guide
    assert not upstreams[1].messages(), "an untrusted proxy must not have reached the offload lane"
