"""The fake upstream's scripted replies are what the official SDK reassembles, streamed or not."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import pytest

from ccmitm.testing.fakeupstream import FakeUpstream, Received, Reply

TOOL_INPUT = {"subagent_type": "haiku-subagent", "prompt": "List the files.", "nested": {"n": [1, 2]}}


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    fake = FakeUpstream("anthropic").start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def client(fake: FakeUpstream) -> Iterator[anthropic.Anthropic]:
    # Closed before the fake stops: an idle keep-alive connection would hold its shutdown.
    with anthropic.Anthropic(base_url=fake.url, api_key="test", max_retries=0) as client:
        yield client


def delegate_then_answer(request: Received) -> Reply | None:
    if request.model == "unscripted":
        return None
    if request.tool_results():
        return Reply.text("done: " + str(request.tool_results()[0]["content"]))
    return Reply.tool_use("Agent", TOOL_INPUT, tool_id="toolu_1")


@pytest.mark.parametrize("stream", [True, False])
def test_scripted_tool_use_then_text_round_trip(
    fake: FakeUpstream, client: anthropic.Anthropic, stream: bool
) -> None:
    fake.script = delegate_then_answer
    fake.behaviour = "slow"  # behaviours still apply: every event reaches the SDK in two pieces

    def call(messages: list) -> anthropic.types.Message:
        kwargs = {"model": "claude-sonnet-5-5", "max_tokens": 64, "messages": messages}
        if not stream:
            return client.messages.create(**kwargs)
        with client.messages.stream(**kwargs) as events:
            return events.get_final_message()

    first = call([{"role": "user", "content": "delegate"}])
    assert first.stop_reason == "tool_use"
    (block,) = first.content
    assert (block.type, block.id, block.name, block.input) == ("tool_use", "toolu_1", "Agent", TOOL_INPUT)

    second = call(
        [
            {"role": "user", "content": "delegate"},
            {"role": "assistant", "content": [block.model_dump()]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "a.py"}],
            },
        ]
    )
    assert second.stop_reason == "end_turn"
    assert [(b.type, b.text) for b in second.content] == [("text", "done: a.py")]
    assert [bool(r.tool_results()) for r in fake.messages()] == [False, True]


def test_a_script_returning_none_keeps_the_default_answer_byte_for_byte(
    fake: FakeUpstream, client: anthropic.Anthropic
) -> None:
    fake.script = delegate_then_answer
    # A scripted text reply is streamed differently (text in two deltas), so equality below is
    # evidence that the default path ran, not a tautology.
    assert fake.scripted_events("unscripted", Reply.text(fake.reply_text)) != fake.events("unscripted")
    with client.messages.with_streaming_response.create(
        model="unscripted", max_tokens=8, messages=[{"role": "user", "content": "hi"}], stream=True
    ) as response:
        raw = b"".join(response.iter_bytes())
    assert raw == b"".join(fake.events("unscripted"))
