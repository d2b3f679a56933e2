"""The routing decision: a pure function of (request facts, routing table, lane conditions) -> Route.

No I/O, no clock, no globals. The table is compiled once per config (globs become regexes then),
so a request costs a few regex matches and no compilation.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ccmitm.config.model import Config


class Reason(StrEnum):
    RULE = "rule"  # a rule matched and its lane took the request
    DEFAULT = "default"  # no rule matched, or not a Messages call
    COUNT_TOKENS = "count_tokens"  # offload lanes have no count_tokens: always the default lane
    PAUSED = "paused"  # kill-switch: a rule matched but everything goes to the default lane
    LANE_UNAVAILABLE = "lane_unavailable"  # the rule's lane has no key
    BREAKER = "breaker"  # the rule's lane is failing; its breaker is open
    RULE_DISABLED = (
        "rule_disabled"  # the matching rule is switched off (enabled: false, FORCE_HAIKU_TO_ZAI=0)
    )
    FAILOVER = "failover"  # the rule's lane failed before the first byte; retried once on the default lane
    LANE_HOLD = "lane_hold"  # the rule's lane is held (quota used up, no balance, bad key or model)
    # Answered by ccmitm itself; no lane was contacted (the usage line's lane is null):
    UNAUTHENTICATED = "unauthenticated"  # the client did not present ccmitm's client token
    REJECTED = "rejected"  # a request ccmitm refuses to forward (malformed, ambiguous or too large)


#: Reasons that explain a request a rule sent elsewhere landing on the default lane.
OVERRIDE_REASONS = frozenset(
    {
        Reason.PAUSED,
        Reason.LANE_UNAVAILABLE,
        Reason.BREAKER,
        Reason.FAILOVER,
        Reason.RULE_DISABLED,
        Reason.LANE_HOLD,
    }
)

#: Reasons of requests answered by ccmitm without contacting any lane.
LOCAL_REASONS = frozenset({Reason.UNAUTHENTICATED, Reason.REJECTED})


@dataclass(frozen=True)
class RequestFacts:
    method: str
    path: str  # without the query string
    model: str | None  # the body's "model" when it is a string, else None

    @property
    def is_messages(self) -> bool:
        return self.method == "POST" and self.path.rstrip("/").endswith("/v1/messages")

    @property
    def is_count_tokens(self) -> bool:
        return self.path.rstrip("/").endswith("/v1/messages/count_tokens")


@dataclass(frozen=True)
class Route:
    lane: str
    reason: Reason
    rule: str | None = None  # the matching rule's glob, also when an override kept it from applying
    upstream_model: str | None = None  # the model to send upstream; None keeps the request's


@dataclass(frozen=True)
class CompiledRule:
    index: int
    match: str
    pattern: re.Pattern[str]
    lane: str
    model: str | None
    enabled: bool

    def matches(self, model: str) -> bool:
        return self.pattern.match(model) is not None


@dataclass(frozen=True)
class RoutingTable:
    default_lane: str
    rules: tuple[CompiledRule, ...]
    paused: bool

    @classmethod
    def from_config(cls, config: Config) -> RoutingTable:
        rules = tuple(
            CompiledRule(
                index=index,
                match=rule.match,
                # Case-insensitive: "*haiku*" must catch "Claude-Haiku-…" too.
                pattern=re.compile(fnmatch.translate(rule.match), re.IGNORECASE),
                lane=rule.lane,
                model=rule.model,
                enabled=rule.enabled,
            )
            for index, rule in enumerate(config.routing.rules)
        )
        return cls(config.routing.default_lane, rules, config.routing.paused)

    def first_match(self, model: str) -> CompiledRule | None:
        for rule in self.rules:
            if rule.matches(model):
                return rule
        return None


@dataclass(frozen=True)
class LaneConditions:
    """What the runtime knows about the lanes right now; an input, never a global."""

    paused: bool = False
    unavailable: frozenset[str] = frozenset()  # lanes without a key
    breaker_open: frozenset[str] = frozenset()  # lanes whose breaker currently refuses traffic
    held: frozenset[str] = frozenset()  # lanes a quota/billing/auth/config refusal took out of rotation


def decide(facts: RequestFacts, table: RoutingTable, conditions: LaneConditions) -> Route:
    default = table.default_lane
    if facts.is_count_tokens:
        return Route(default, Reason.COUNT_TOKENS)
    if not facts.is_messages or facts.model is None:
        return Route(default, Reason.DEFAULT)
    rule = table.first_match(facts.model)
    if rule is None:
        return Route(default, Reason.DEFAULT)
    if not rule.enabled:
        return Route(default, Reason.RULE_DISABLED, rule.match)
    if rule.lane != default:
        # Overrides keep the request as the client wrote it: no model rewrite on the way back.
        if conditions.paused:
            return Route(default, Reason.PAUSED, rule.match)
        if rule.lane in conditions.unavailable:
            return Route(default, Reason.LANE_UNAVAILABLE, rule.match)
        if rule.lane in conditions.held:
            return Route(default, Reason.LANE_HOLD, rule.match)
        if rule.lane in conditions.breaker_open:
            return Route(default, Reason.BREAKER, rule.match)
    return Route(rule.lane, Reason.RULE, rule.match, rule.model)


def model_of(body: Any) -> str | None:
    """The request body's model when the body is a JSON object with a string model."""
    if isinstance(body, Mapping):
        model = body.get("model")
        if isinstance(model, str):
            return model
    return None
