"""Property-based tests (hypothesis) over the routing decision and the SSE usage tap.

Example counts are modest and deadlines off: the suite runs on two cores beside daemons.
"""

from __future__ import annotations

import gzip
import json
import zlib
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ccmitm.config.load import validate
from ccmitm.core.routing import LaneConditions, Reason, RequestFacts, RoutingTable, decide
from ccmitm.core.sse import UsageReader
from ccmitm.testing.fakeupstream import FakeUpstream

PROPERTY_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

DEFAULT_LANE = "anthropic"
KEYED_LANES = ("zai", "other")
LANES = (DEFAULT_LANE, *KEYED_LANES)

# --- (a) routing -----------------------------------------------------------------------------------
HAIKU_MODELS = (
    "claude-haiku-5-5",
    "claude-haiku-4-5-20251001",
    "claude-3-5-haiku-20241022",
    "CLAUDE-HAIKU-4-5",
    "anthropic/claude-Haiku-x",
)
OTHER_MODELS = ("claude-sonnet-4-5", "claude-opus-4-1", "glm-4.5-air", "", "haik", "h a i k u")
MESSAGES_PATHS = ("/v1/messages", "/v1/messages/", "/api/anthropic/v1/messages", "//v1/messages")
OTHER_PATHS = (
    "/v1/models",
    "/",
    "",
    "/api/claude_code/settings",
    "/api/claude_code/policy_limits",
    "/v1/messages/batches",
    "/v1/messagesx",
    "/v1/complete",
)
COUNT_TOKENS_PATHS = (
    "/v1/messages/count_tokens",
    "/v1/messages/count_tokens/",
    "/x/v1/messages/count_tokens",
)
GLOBS = ("*haiku*", "*sonnet*", "claude-*", "*", "glm-*", "*opus*", "?", "[ch]*", "*HAIKU*", "claude-3-5-*")

models = st.one_of(
    st.none(),
    st.sampled_from(HAIKU_MODELS + OTHER_MODELS),
    st.text(max_size=40),
    st.builds(
        lambda a, h, b: a + h + b,
        st.text(max_size=10),
        st.sampled_from(["haiku", "HaIkU"]),
        st.text(max_size=10),
    ),
)
paths = st.one_of(
    st.sampled_from(MESSAGES_PATHS + OTHER_PATHS + COUNT_TOKENS_PATHS),
    st.text(max_size=30),
    st.builds(lambda p: "/" + p + "/v1/messages", st.text(alphabet="abc/_-", max_size=12)),
)
methods = st.sampled_from(["POST", "GET", "PUT", "DELETE", "OPTIONS", "HEAD", "post", "PATCH"])
rules = st.lists(
    st.fixed_dictionaries(
        {"match": st.sampled_from(GLOBS), "lane": st.sampled_from(LANES)},
        optional={"model": st.sampled_from(["glm-4.5-air", "glm-4.6", "claude-haiku-4-5"])},
    ),
    max_size=4,
)
lane_sets = st.frozensets(st.sampled_from(KEYED_LANES))
conditions = st.builds(LaneConditions, paused=st.booleans(), unavailable=lane_sets, breaker_open=lane_sets)


def table_for(rule_list: list[dict[str, Any]], paused: bool = False) -> RoutingTable:
    config = validate(
        {
            "routing": {"default_lane": DEFAULT_LANE, "paused": paused, "rules": rule_list},
            "lanes": {"other": {"url": "http://127.0.0.1:9/prefix", "api_key_env": "OTHER_LANE_KEY"}},
        }
    )
    return RoutingTable.from_config(config)


DEFAULT_TABLE = RoutingTable.from_config(validate({}))


@PROPERTY_SETTINGS
@given(
    rule_list=rules, paused_in_file=st.booleans(), method=methods, path=paths, model=models, lanes=conditions
)
def test_decide_never_uses_a_lane_it_must_not(
    rule_list: list[dict[str, Any]],
    paused_in_file: bool,
    method: str,
    path: str,
    model: str | None,
    lanes: LaneConditions,
) -> None:
    table = table_for(rule_list, paused_in_file)
    facts = RequestFacts(method, path, model)
    route = decide(facts, table, lanes)

    assert route.lane in LANES
    if route.lane != DEFAULT_LANE:
        # A keyed lane only when a rule sent it there and nothing overrides that.
        assert route.reason is Reason.RULE
        assert not lanes.paused
        assert route.lane not in lanes.unavailable
        assert route.lane not in lanes.breaker_open
    if route.reason is not Reason.RULE:
        assert route.lane == DEFAULT_LANE
        assert route.upstream_model is None  # overrides never rewrite the model
    if facts.is_count_tokens:
        assert (route.lane, route.reason) == (DEFAULT_LANE, Reason.COUNT_TOKENS)
    elif not facts.is_messages:
        assert (route.lane, route.reason, route.rule) == (DEFAULT_LANE, Reason.DEFAULT, None)
    if route.rule is not None:
        assert model is not None
        first = table.first_match(model)
        assert first is not None and first.match == route.rule
    # The same inputs give the same answer (no hidden state).
    assert decide(facts, table, lanes) == route


@PROPERTY_SETTINGS
@given(
    model=st.builds(
        lambda a, h, b: a + h + b,
        st.text(max_size=15),
        st.sampled_from(["haiku", "Haiku", "HAIKU", "hAiKu"]),
        st.text(max_size=15),
    ),
    path=st.sampled_from(MESSAGES_PATHS),
)
def test_haiku_without_overrides_goes_to_the_rule_lane_rewritten(model: str, path: str) -> None:
    route = decide(RequestFacts("POST", path, model), DEFAULT_TABLE, LaneConditions())
    assert (route.lane, route.reason, route.rule, route.upstream_model) == (
        "zai",
        Reason.RULE,
        "*haiku*",
        "glm-4.5-air",
    )


@PROPERTY_SETTINGS
@given(
    model=models, method=methods, path=st.sampled_from(COUNT_TOKENS_PATHS), lanes=conditions, rule_list=rules
)
def test_count_tokens_always_goes_to_the_default_lane(
    model: str | None, method: str, path: str, lanes: LaneConditions, rule_list: list[dict[str, Any]]
) -> None:
    route = decide(RequestFacts(method, path, model), table_for(rule_list), lanes)
    assert (route.lane, route.reason, route.upstream_model) == (DEFAULT_LANE, Reason.COUNT_TOKENS, None)


@PROPERTY_SETTINGS
@given(model=models, path=paths, lanes=conditions, rule_list=rules)
def test_non_post_never_leaves_the_default_lane(
    model: str | None, path: str, lanes: LaneConditions, rule_list: list[dict[str, Any]]
) -> None:
    for method in ("GET", "PUT", "DELETE", "OPTIONS", "post"):
        route = decide(RequestFacts(method, path, model), table_for(rule_list), lanes)
        assert route.lane == DEFAULT_LANE


# --- (b) the SSE usage tap ---------------------------------------------------------------------------
SIGNATURE = "EqQBCkYIBxgCKkBn" + "s" * 120 + "=="
REDACTED = "EmwKAhgBEgy3va3pzix/" + "r" * 60


def realistic_stream(crlf: bool) -> bytes:
    """FakeUpstream's event sequence with a redacted and a signed thinking block in front of its
    text block (indexes shifted), a keep-alive comment, and optional CRLF line endings."""
    fake = FakeUpstream("zai")
    events: list[tuple[str, dict[str, Any]]] = []
    for raw in fake.events("glm-4.5-air"):
        lines = raw.decode().strip().split("\n")
        name = lines[0].removeprefix("event: ")
        data = json.loads(lines[1].removeprefix("data: "))
        if isinstance(data.get("index"), int):
            data["index"] += 2
        events.append((name, data))
    thinking = [
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "redacted_thinking", "data": REDACTED},
            },
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 1,
                "content_block": {"type": "thinking", "thinking": "", "signature": ""},
            },
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {"type": "thinking_delta", "thinking": "Plan: ö ✓"},
            },
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {"type": "signature_delta", "signature": SIGNATURE},
            },
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 1}),
    ]
    events[1:1] = thinking
    text = "".join(
        f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n" for name, data in events
    )
    text = ": keep-alive\n\n" + text
    if crlf:
        text = text.replace("\n", "\r\n")
    return text.encode()


def encode(data: bytes, encoding: str | None) -> bytes:
    if encoding == "gzip":
        return gzip.compress(data)
    if encoding == "deflate":
        compressor = zlib.compressobj()
        return compressor.compress(data) + compressor.flush()
    return data


def read_chunks(chunks: list[bytes], content_type: str | None, encoding: str | None):
    reader = UsageReader(content_type, encoding)
    for chunk in chunks:
        reader.feed(chunk)
    return reader.close()


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(cut, len(data)) for cut in cuts})
    pieces, start = [], 0
    for point in points:
        pieces.append(data[start:point])
        start = point
    pieces.append(data[start:])
    return pieces


STREAMS = {
    (crlf, encoding): encode(realistic_stream(crlf), encoding)
    for crlf in (False, True)
    for encoding in (None, "gzip", "deflate")
}
ONE_CHUNK = {key: read_chunks([data], "text/event-stream", key[1]) for key, data in STREAMS.items()}


def test_the_reference_stream_reads_as_expected() -> None:
    for usage in ONE_CHUNK.values():
        assert usage.as_fields() == {
            "input_tokens": 11,
            "output_tokens": 7,
            "cache_read_input_tokens": 3,
            "cache_creation_input_tokens": 0,
        }
        assert usage.model == "glm-4.5-air"
        assert usage.stop_reason == "end_turn"
        assert usage.thinking_blocks == 2
        assert usage.signatures == [REDACTED, SIGNATURE]
    assert len({repr(u) + repr(u.signatures) for u in ONE_CHUNK.values()}) == 1


@PROPERTY_SETTINGS
@given(
    key=st.sampled_from(sorted(STREAMS, key=str)),
    cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=40),
)
def test_any_chunking_reads_the_same_as_one_chunk(key: tuple[bool, str | None], cuts: list[int]) -> None:
    data = STREAMS[key]
    usage = read_chunks(split(data, cuts), "text/event-stream", key[1])
    assert usage == ONE_CHUNK[key]
    assert usage.signatures == ONE_CHUNK[key].signatures


@PROPERTY_SETTINGS
@given(data=st.data(), crlf=st.booleans())
def test_byte_by_byte_tail_and_tiny_chunks(data: st.DataObject, crlf: bool) -> None:
    stream = STREAMS[(crlf, None)]
    size = data.draw(st.integers(min_value=1, max_value=8))
    chunks = [stream[i : i + size] for i in range(0, len(stream), size)]
    assert read_chunks(chunks, "text/event-stream", None) == ONE_CHUNK[(crlf, None)]


@PROPERTY_SETTINGS
@given(
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=20),
    encoding=st.sampled_from([None, "gzip"]),
)
def test_json_body_any_chunking(cuts: list[int], encoding: str | None) -> None:
    body = FakeUpstream("zai")._message("glm-4.5-air")
    body["content"].insert(0, {"type": "thinking", "thinking": "hm", "signature": SIGNATURE})
    data = encode(json.dumps(body).encode(), encoding)
    whole = read_chunks([data], "application/json", encoding)
    assert whole.signatures == [SIGNATURE] and whole.output_tokens == 7
    assert read_chunks(split(data, cuts), "application/json", encoding) == whole


SSE_TOKENS = st.sampled_from(
    [
        b"event: ",
        b"data: ",
        b"message_start",
        b"content_block_start",
        b"content_block_delta",
        b"content_block_stop",
        b'{"type":"message_start","message":{"usage":{"input_tokens":',
        b'{"type":"content_block_start","index":0,"content_block":{"type":"thinking","signature":"',
        b'{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":',
        b'{"type":"message_delta","usage":{"output_tokens":1e999}}',
        b'{"type":"error","error":{"type":',
        b"thinking",
        b"signature_delta",
        b'"}}',
        b"}",
        b"[",
        b"null",
        b"true",
        b"-1",
        b"\n",
        b"\r\n",
        b"\r",
        b":",
        b"\x00",
        b"\xff",
    ]
)


@PROPERTY_SETTINGS
@given(
    chunks=st.lists(
        st.one_of(st.binary(max_size=300), st.lists(SSE_TOKENS, max_size=30).map(b"".join)), max_size=12
    ),
    content_type=st.sampled_from(
        ["text/event-stream", "text/event-stream; charset=utf-8", "application/json", None, "text/plain", ""]
    ),
    encoding=st.sampled_from([None, "identity", "gzip", "deflate", "br", "zstd", "bogus", " GZIP "]),
)
def test_garbage_never_raises(chunks: list[bytes], content_type: str | None, encoding: str | None) -> None:
    usage = read_chunks(chunks, content_type, encoding)
    for name, value in usage.as_fields().items():
        assert value is None or (isinstance(value, int) and not isinstance(value, bool)), name
    assert all(isinstance(signature, str) and signature for signature in usage.signatures)
