"""Cross-lane conversations: only the offload lane's thinking blocks leave, nothing else changes."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from ccmitm.core.crosslane import (
    PLACEHOLDER_TEXT,
    SignatureRegistry,
    StripResult,
    block_signature,
    signature_digest,
    strip_foreign_thinking,
)
from ccmitm.core.sse import UsageReader

# Signatures as the lanes make them: Anthropic's are long base64 blobs; what GLM puts there is
# opaque to us (sometimes nothing at all).
ANTHROPIC_SIG_1 = "EqQBCkYIBxgCKkBn" + "Q" * 300 + "GAE="
ANTHROPIC_SIG_2 = "ErUBCkYIBxgCKkDx" + "R" * 280 + "GAE="
ANTHROPIC_REDACTED = "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8cr3qpP"
GLM_SIG_1 = "glm-sig-0f3c9a1e-" + "a" * 64
GLM_SIG_2 = "glm-sig-77b2d410-" + "b" * 64
GLM_REDACTED = "glm-redacted-" + "c" * 40


def thinking(text: str, signature: str | None) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "thinking", "thinking": text}
    if signature is not None:
        block["signature"] = signature
    return block


def tool_use(tool_id: str, name: str, **inputs: Any) -> dict[str, Any]:
    return {"type": "tool_use", "id": tool_id, "name": name, "input": inputs}


def tool_result(tool_id: str, text: str) -> dict[str, Any]:
    return {"type": "tool_result", "tool_use_id": tool_id, "content": [{"type": "text", "text": text}]}


def conversation(*, thinking_enabled: bool = True, glm_last: bool = False) -> dict[str, Any]:
    """A Claude Code Explore-subagent shape: Haiku with tools and thinking, two turns on GLM (the
    offload lane), then the kill-switch moved it to Anthropic, which answered one turn.

    ``glm_last`` cuts it just after the GLM turns: the request that goes to Anthropic right after
    the switch, with a tool-use turn of GLM's still open.
    """
    messages: list[dict[str, Any]] = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "<system-reminder>Explore the repo.</system-reminder>"},
                {
                    "type": "text",
                    "text": "Where is the config loaded?",
                    "cache_control": {"type": "ephemeral"},
                },
            ],
        },
        {
            "role": "assistant",
            "content": [
                thinking("The user wants the config loader. Search for load(.", GLM_SIG_1),
                {"type": "text", "text": "I'll search for the loader."},
                tool_use("toolu_01GLMa", "Grep", pattern="def load", path="daemon"),
            ],
        },
        {"role": "user", "content": [tool_result("toolu_01GLMa", "daemon/config.py:412:def load(")]},
        {
            "role": "assistant",
            "content": [
                thinking("Found it; read the function.", GLM_SIG_2),
                tool_use("toolu_02GLMb", "Read", file_path="daemon/config.py", offset=400, limit=40),
            ],
        },
        {
            "role": "user",
            "content": [
                tool_result("toolu_02GLMb", "def load(path): ..."),
                {"type": "text", "text": "<system-reminder>todo list empty</system-reminder>"},
            ],
        },
    ]
    if not glm_last:
        messages += [
            {
                "role": "assistant",
                "content": [
                    thinking(
                        "It merges over BUILTIN, then validates. Check the env overrides.", ANTHROPIC_SIG_1
                    ),
                    {"type": "text", "text": "Now the environment overrides."},
                    tool_use("toolu_03ANTc", "Grep", pattern="FORCE_HAIKU_TO_ZAI"),
                ],
            },
            {"role": "user", "content": [tool_result("toolu_03ANTc", "daemon/config.py:470: FORCE_HAIKU")]},
        ]
    body: dict[str, Any] = {
        "model": "claude-haiku-4-5-20251001",
        "max_tokens": 32000,
        "stream": True,
        "system": [{"type": "text", "text": "You are Claude Code's Explore agent."}],
        "tools": [
            {"name": "Grep", "description": "search", "input_schema": {"type": "object"}},
            {"name": "Read", "description": "read", "input_schema": {"type": "object"}},
        ],
        "metadata": {"user_id": "user_abc_account__session_123"},
        "messages": messages,
    }
    if thinking_enabled:
        body["thinking"] = {"type": "enabled", "budget_tokens": 4000}
    return body


def glm_registry() -> SignatureRegistry:
    registry = SignatureRegistry()
    registry.add_all([GLM_SIG_1, GLM_SIG_2, GLM_REDACTED])
    return registry


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def assert_valid(body: dict[str, Any]) -> None:
    """What the Messages API checks that this module could break."""
    messages = body["messages"]
    assert messages, "messages must not be empty"
    for index, message in enumerate(messages):
        assert message["role"] in ("user", "assistant")
        content = message["content"]
        assert content, f"messages.{index}: content must be non-empty"
        if isinstance(content, str):
            continue
        for block in content:
            if block["type"] == "text":
                assert block["text"].strip(), f"messages.{index}: text blocks must be non-empty"
            if block["type"] == "thinking":
                assert block.get("signature"), f"messages.{index}: thinking block without signature"
        if message["role"] == "assistant":
            assert content[-1]["type"] not in ("thinking", "redacted_thinking")
            ids = [block["id"] for block in content if block["type"] == "tool_use"]
            if ids:  # every tool_use is answered in the very next (user) message
                following = messages[index + 1]
                assert following["role"] == "user"
                answered = {b["tool_use_id"] for b in following["content"] if b["type"] == "tool_result"}
                assert set(ids) <= answered
    # With thinking on, an open tool-use turn's last assistant message starts with thinking.
    if body.get("thinking", {}).get("type") == "enabled":
        last_assistant = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        after = messages[last_assistant + 1 :]
        if all(
            isinstance(m["content"], list) and any(b["type"] == "tool_result" for b in m["content"])
            for m in after
        ):
            first = messages[last_assistant]["content"][0]
            assert first["type"] in ("thinking", "redacted_thinking")


def signatures_in(body: dict[str, Any]) -> list[str | None]:
    return [
        block_signature(block)
        for message in body["messages"]
        if isinstance(message["content"], list)
        for block in message["content"]
        if block.get("type") in ("thinking", "redacted_thinking")
    ]


# --- the recorded conversation ------------------------------------------------------------------
def test_only_glm_blocks_leave_and_anthropic_blocks_stay_identical() -> None:
    body = conversation()
    original = copy.deepcopy(body)
    anthropic_message = body["messages"][5]
    anthropic_blocks = list(anthropic_message["content"])

    result = strip_foreign_thinking(body, glm_registry().is_foreign)

    assert result == StripResult(blocks=2, messages=2)
    assert result and result.changed
    assert signatures_in(body) == [ANTHROPIC_SIG_1]
    # The Anthropic turn: same message, same block objects, same bytes.
    assert body["messages"][5] is anthropic_message
    assert all(a is b for a, b in zip(body["messages"][5]["content"], anthropic_blocks, strict=True))
    assert dumps(body["messages"][5]) == dumps(original["messages"][5])
    # The GLM turns lost their thinking block and nothing else.
    assert body["messages"][1]["content"] == original["messages"][1]["content"][1:]
    assert body["messages"][3]["content"] == original["messages"][3]["content"][1:]
    # Everything outside those two contents is byte-identical.
    for index in (0, 2, 4, 6):
        assert dumps(body["messages"][index]) == dumps(original["messages"][index])
    rest = {k: v for k, v in body.items() if k != "messages"}
    assert dumps(rest) == dumps({k: v for k, v in original.items() if k != "messages"})
    assert_valid(body)


def test_open_glm_turn_switches_thinking_off() -> None:
    """Right after the switch the open turn is GLM's: its message cannot start with a thinking
    block Anthropic accepts, so the request must go without thinking."""
    body = conversation(glm_last=True)
    result = strip_foreign_thinking(body, glm_registry().is_foreign)
    assert result.blocks == 2
    assert result.thinking_disabled
    assert "thinking" not in body
    assert body["messages"][3]["content"][0]["type"] == "tool_use"
    assert_valid(body)


def test_thinking_stays_on_when_the_open_turn_is_anthropic() -> None:
    body = conversation()
    assert not strip_foreign_thinking(body, glm_registry().is_foreign).thinking_disabled
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 4000}


def test_thinking_off_in_the_request_is_left_alone() -> None:
    body = conversation(thinking_enabled=False, glm_last=True)
    result = strip_foreign_thinking(body, glm_registry().is_foreign)
    assert result.blocks == 2 and not result.thinking_disabled
    assert "thinking" not in body
    assert_valid(body)


def test_closed_turn_does_not_need_thinking() -> None:
    """A new user question closes the GLM turn: thinking may stay on."""
    body = conversation(glm_last=True)
    body["messages"].append({"role": "assistant", "content": [{"type": "text", "text": "config.load()"}]})
    body["messages"].append({"role": "user", "content": "thanks; and the env overrides?"})
    result = strip_foreign_thinking(body, glm_registry().is_foreign)
    assert result.blocks == 2 and not result.thinking_disabled
    assert body["thinking"]["type"] == "enabled"
    assert_valid(body)


def test_clear_thinking_edits_go_with_thinking() -> None:
    body = conversation(glm_last=True)
    clear_tools = {"type": "clear_tool_uses_20250919", "trigger": {"type": "input_tokens", "value": 100000}}
    body["context_management"] = {
        "edits": [{"type": "clear_thinking_20251015", "keep": "all"}, clear_tools],
    }
    strip_foreign_thinking(body, glm_registry().is_foreign)
    assert body["context_management"] == {"edits": [clear_tools]}

    body = conversation(glm_last=True)
    body["context_management"] = {"edits": [{"type": "clear_thinking_20251015"}]}
    strip_foreign_thinking(body, glm_registry().is_foreign)
    assert "context_management" not in body


def test_adaptive_thinking_counts_as_enabled() -> None:
    body = conversation(glm_last=True)
    body["thinking"] = {"type": "adaptive"}
    assert strip_foreign_thinking(body, glm_registry().is_foreign).thinking_disabled
    assert "thinking" not in body


# --- which blocks are foreign -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("block", "foreign"),
    [
        (thinking("x", GLM_SIG_1), True),
        (thinking("x", ANTHROPIC_SIG_1), False),
        (thinking("x", ""), True),  # empty signature: Anthropic rejects it anyway
        (thinking("x", None), True),  # missing signature
        ({"type": "thinking", "thinking": "x", "signature": 12345}, True),  # not a string
        ({"type": "redacted_thinking", "data": GLM_REDACTED}, True),
        ({"type": "redacted_thinking", "data": ANTHROPIC_REDACTED}, False),
        ({"type": "redacted_thinking", "data": ""}, True),
        ({"type": "redacted_thinking"}, True),
        ({"type": "text", "text": "thinking", "signature": GLM_SIG_1}, False),  # not a thinking block
        ({"type": "tool_use", "id": "t", "name": "n", "input": {}}, False),
    ],
)
def test_which_blocks_are_foreign(block: dict[str, Any], foreign: bool) -> None:
    body = {
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [block, {"type": "text", "text": "answer"}]},
            {"role": "user", "content": "and?"},
        ]
    }
    result = strip_foreign_thinking(body, glm_registry().is_foreign)
    assert result.blocks == (1 if foreign else 0)
    assert (block in body["messages"][1]["content"]) is not foreign


def test_user_messages_and_other_shapes_are_never_touched() -> None:
    body: dict[str, Any] = {
        "messages": [
            {"role": "user", "content": [thinking("user-side, not ours to judge", "")]},
            {"role": "assistant", "content": "plain string content"},
            {"role": "assistant", "content": [thinking("ok", ANTHROPIC_SIG_2), "not-a-dict", 7, None]},
            "not a message",
            {"role": "system", "content": [thinking("odd", "")]},
            {"content": [thinking("no role", "")]},
        ]
    }
    original = copy.deepcopy(body)
    assert strip_foreign_thinking(body, lambda _sig: True).blocks == 1  # only messages[2]'s thinking
    assert body["messages"][2]["content"] == ["not-a-dict", 7, None]
    for index in (0, 1, 3, 4, 5):
        assert body["messages"][index] == original["messages"][index]


@pytest.mark.parametrize(
    "body",
    [None, [], "x", 5, {}, {"messages": None}, {"messages": "x"}, {"messages": {}}, {"messages": []}],
)
def test_not_a_messages_body(body: Any) -> None:
    before = copy.deepcopy(body)
    assert strip_foreign_thinking(body, lambda _sig: True) == StripResult()
    assert body == before


def test_untouched_body_reports_nothing() -> None:
    body = conversation()
    body["messages"] = body["messages"][5:]  # only the Anthropic turn
    body["messages"].insert(0, {"role": "user", "content": "start"})
    original = copy.deepcopy(body)
    result = strip_foreign_thinking(body, glm_registry().is_foreign)
    assert not result
    assert result.as_dict() == {
        "blocks": 0,
        "messages": 0,
        "placeholders": 0,
        "dropped_messages": 0,
        "thinking_disabled": False,
    }
    assert dumps(body) == dumps(original)


# --- messages that would become empty ---------------------------------------------------------------
def test_thinking_only_message_in_the_middle_gets_a_placeholder() -> None:
    body = {
        "messages": [
            {"role": "user", "content": "think about it"},
            {"role": "assistant", "content": [thinking("long thoughts", GLM_SIG_1)]},
            {"role": "user", "content": "go on"},
        ]
    }
    result = strip_foreign_thinking(body, glm_registry().is_foreign)
    assert result == StripResult(blocks=1, messages=1, placeholders=1)
    assert body["messages"][1]["content"] == [{"type": "text", "text": PLACEHOLDER_TEXT}]
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert_valid(body)


def test_thinking_only_final_message_is_dropped() -> None:
    body = {
        "messages": [
            {"role": "user", "content": "think about it"},
            {"role": "assistant", "content": [thinking("a", GLM_SIG_1), thinking("b", "")]},
        ]
    }
    result = strip_foreign_thinking(body, glm_registry().is_foreign)
    assert result == StripResult(blocks=2, messages=1, dropped_messages=1)
    assert body["messages"] == [{"role": "user", "content": "think about it"}]
    assert_valid(body)


def test_interleaved_thinking_between_tool_uses() -> None:
    body = {
        "thinking": {"type": "enabled", "budget_tokens": 2000},
        "messages": [
            {"role": "user", "content": "two lookups"},
            {
                "role": "assistant",
                "content": [
                    thinking("first", ANTHROPIC_SIG_1),
                    tool_use("toolu_a", "Grep", pattern="x"),
                    thinking("second, on GLM after a switch back", GLM_SIG_2),
                    tool_use("toolu_b", "Grep", pattern="y"),
                ],
            },
            {"role": "user", "content": [tool_result("toolu_a", "1"), tool_result("toolu_b", "2")]},
        ],
    }
    result = strip_foreign_thinking(body, glm_registry().is_foreign)
    assert result.blocks == 1 and not result.thinking_disabled  # it still starts with Anthropic's
    assert [b["type"] for b in body["messages"][1]["content"]] == ["thinking", "tool_use", "tool_use"]
    assert_valid(body)


# --- from an offload-lane stream to the registry to the next request ----------------------------------
def glm_stream(signature: str) -> bytes:
    events = [
        {"type": "message_start", "message": {"model": "glm-4.5-air", "usage": {"input_tokens": 9}}},
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "thinking", "thinking": "", "signature": ""},
        },
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hm"}},
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "signature_delta", "signature": signature},
        },
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "ok"}},
        {"type": "content_block_stop", "index": 1},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 4}},
        {"type": "message_stop"},
    ]
    return b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)


def test_signatures_from_the_offload_stream_mark_the_blocks_foreign() -> None:
    reader = UsageReader("text/event-stream")
    reader.feed(glm_stream(GLM_SIG_1))
    usage = reader.close()
    assert usage.signatures == [GLM_SIG_1]
    registry = SignatureRegistry()
    registry.add_all(usage.signatures)

    body = conversation()
    result = strip_foreign_thinking(body, registry.is_foreign)
    # GLM_SIG_2 was never seen, so its block stays: only what the lane produced is removed.
    assert result.blocks == 1
    assert signatures_in(body) == [GLM_SIG_2, ANTHROPIC_SIG_1]


# --- the registry ---------------------------------------------------------------------------------
def test_registry_is_bounded_lru() -> None:
    registry = SignatureRegistry(max_entries=3)
    for name in ("a", "b", "c"):
        assert registry.add(name)
    assert registry.is_foreign("a")  # a use refreshes "a"
    registry.add("d")  # evicts the least recently used: "b"
    assert len(registry) == 3
    assert "b" not in registry
    assert all(name in registry for name in ("a", "c", "d"))


def test_registry_keeps_digests_not_signatures() -> None:
    registry = SignatureRegistry()
    registry.add(GLM_SIG_1)
    exported = registry.export()
    assert exported == [signature_digest(GLM_SIG_1).hex()]
    assert GLM_SIG_1 not in "".join(exported)
    assert all(GLM_SIG_1 not in repr(value) for value in vars(registry).values())


def test_registry_ignores_empty_and_round_trips() -> None:
    registry = SignatureRegistry()
    assert not registry.add("")
    assert registry.add_all(["x", "", "y"]) == 2
    fresh = SignatureRegistry()
    assert fresh.load([*registry.export(), "zz", "not hex", "00" * 3, 5]) == 2  # type: ignore[list-item]
    assert "x" in fresh and "y" in fresh and "z" not in fresh


def test_registry_hashes_lone_surrogates() -> None:
    registry = SignatureRegistry()
    assert registry.add("sig\ud800")
    assert registry.is_foreign("sig\ud800")


def test_registry_rejects_a_zero_bound() -> None:
    with pytest.raises(ValueError):
        SignatureRegistry(0)
