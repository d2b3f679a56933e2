"""The routing decision as a table: (request facts, config, lane conditions) -> Route."""

from __future__ import annotations

import pytest

from ccmitm.config.load import validate
from ccmitm.core.routing import LaneConditions, Reason, RequestFacts, Route, RoutingTable, decide, model_of

CONFIG = validate(
    {
        "routing": {
            "rules": [
                {"match": "*haiku*", "lane": "zai", "model": "glm-4.5-air"},
                {"match": "claude-opus-*", "lane": "anthropic", "model": "claude-sonnet-4-5"},
                {"match": "glm-*", "lane": "zai"},
            ]
        }
    }
)
TABLE = RoutingTable.from_config(CONFIG)
OPEN = LaneConditions()
PAUSED = LaneConditions(paused=True)
NO_KEY = LaneConditions(unavailable=frozenset({"zai"}))
BROKEN = LaneConditions(breaker_open=frozenset({"zai"}))

HAIKU = "claude-haiku-4-5-20251001"

CASES = [
    # (method, path, model, conditions) -> expected Route
    ("POST", "/v1/messages", HAIKU, OPEN, Route("zai", Reason.RULE, "*haiku*", "glm-4.5-air")),
    ("POST", "/v1/messages", "claude-haiku-5-5", OPEN, Route("zai", Reason.RULE, "*haiku*", "glm-4.5-air")),
    (
        "POST",
        "/v1/messages",
        "claude-3-5-haiku-latest",
        OPEN,
        Route("zai", Reason.RULE, "*haiku*", "glm-4.5-air"),
    ),
    ("POST", "/v1/messages", "Claude-HAIKU-x", OPEN, Route("zai", Reason.RULE, "*haiku*", "glm-4.5-air")),
    ("POST", "/v1/messages/", HAIKU, OPEN, Route("zai", Reason.RULE, "*haiku*", "glm-4.5-air")),
    ("POST", "/v1/messages", "claude-sonnet-4-5", OPEN, Route("anthropic", Reason.DEFAULT)),
    (
        "POST",
        "/v1/messages",
        "claude-opus-4-1",
        OPEN,
        Route("anthropic", Reason.RULE, "claude-opus-*", "claude-sonnet-4-5"),
    ),
    ("POST", "/v1/messages", "glm-4.6", OPEN, Route("zai", Reason.RULE, "glm-*", None)),
    ("POST", "/v1/messages", None, OPEN, Route("anthropic", Reason.DEFAULT)),
    ("GET", "/v1/messages", HAIKU, OPEN, Route("anthropic", Reason.DEFAULT)),
    ("POST", "/v1/messages/count_tokens", HAIKU, OPEN, Route("anthropic", Reason.COUNT_TOKENS)),
    ("POST", "/v1/messages/batches", HAIKU, OPEN, Route("anthropic", Reason.DEFAULT)),
    ("GET", "/api/claude_code/settings", None, OPEN, Route("anthropic", Reason.DEFAULT)),
    ("POST", "/v1/complete", HAIKU, OPEN, Route("anthropic", Reason.DEFAULT)),
    # Overrides: the rule is named, the model is left as the client wrote it.
    ("POST", "/v1/messages", HAIKU, PAUSED, Route("anthropic", Reason.PAUSED, "*haiku*")),
    ("POST", "/v1/messages", HAIKU, NO_KEY, Route("anthropic", Reason.LANE_UNAVAILABLE, "*haiku*")),
    ("POST", "/v1/messages", HAIKU, BROKEN, Route("anthropic", Reason.BREAKER, "*haiku*")),
    # Paused outranks the other overrides; rules to the default lane ignore them all.
    (
        "POST",
        "/v1/messages",
        HAIKU,
        LaneConditions(True, frozenset({"zai"}), frozenset({"zai"})),
        Route("anthropic", Reason.PAUSED, "*haiku*"),
    ),
    (
        "POST",
        "/v1/messages",
        "claude-opus-4",
        PAUSED,
        Route("anthropic", Reason.RULE, "claude-opus-*", "claude-sonnet-4-5"),
    ),
    ("POST", "/v1/messages", "claude-sonnet-4-5", PAUSED, Route("anthropic", Reason.DEFAULT)),
]


@pytest.mark.parametrize(("method", "path", "model", "conditions", "expected"), CASES)
def test_decide(
    method: str, path: str, model: str | None, conditions: LaneConditions, expected: Route
) -> None:
    assert decide(RequestFacts(method, path, model), TABLE, conditions) == expected


def test_a_disabled_rule_says_why_it_did_not_apply() -> None:
    table = RoutingTable.from_config(
        validate({"routing": {"rules": [{"match": "*haiku*", "lane": "zai", "enabled": False}]}})
    )
    route = decide(RequestFacts("POST", "/v1/messages", HAIKU), table, OPEN)
    assert route == Route("anthropic", Reason.RULE_DISABLED, "*haiku*")


def test_first_matching_rule_wins() -> None:
    table = RoutingTable.from_config(
        validate(
            {"routing": {"rules": [{"match": "*", "lane": "anthropic"}, {"match": "*haiku*", "lane": "zai"}]}}
        )
    )
    assert decide(RequestFacts("POST", "/v1/messages", HAIKU), table, OPEN).lane == "anthropic"


def test_no_rules_means_everything_stays_on_the_default_lane() -> None:
    table = RoutingTable.from_config(validate({"routing": {"rules": []}}))
    assert decide(RequestFacts("POST", "/v1/messages", HAIKU), table, OPEN) == Route(
        "anthropic", Reason.DEFAULT
    )


@pytest.mark.parametrize(
    ("body", "model"),
    [
        ({"model": "x"}, "x"),
        ({"model": 5}, None),
        ({"model": None}, None),
        ({"model": ["a"]}, None),
        ([{"model": "x"}], None),
        ("model", None),
        (None, None),
        ({}, None),
    ],
)
def test_model_of(body: object, model: str | None) -> None:
    assert model_of(body) == model
