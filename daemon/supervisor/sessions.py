"""Per-session counters for Claude Code's status line: which lane each session's calls took.

Claude Code sends its session id (``x-claude-code-session-id``) on every call; the usage record
carries it as ``session``. :class:`SessionCounters` is a record observer (see
``Daemon.record_observers``) that keeps, for the most recently active sessions only, the calls per
lane, the last call's lane and the tokens moved off the default lane, by requested model, so the
savings can be priced when asked (with the prices in force then). Pure logic, no I/O: it runs on
the proxy's event loop and costs a dict update per call.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ccmitm.logs.usage import UsageRecord
from ccmitm.reports.summary import price_for

#: How many sessions are remembered; the least recently active one is dropped first. A status
#: line asks about its own, live session, so a few hundred cover every open terminal.
MAX_SESSIONS = 256
#: How many distinct requested models are kept per session (a hostile client could send many).
MAX_MODELS = 16
#: The key under which calls that ccmitm answered itself (no lane contacted) are counted.
REFUSED = "refused"

#: The built-in savings estimate, USD per million tokens (input, output) by model glob, used only
#: when the config has no ``pricing`` glob matching a model. An estimate of Anthropic's list
#: prices for the model families Claude Code offloads; ``pricing`` in the config overrides it.
BUILTIN_PRICES: dict[str, dict[str, float]] = {
    "*haiku*": {"input_per_mtok": 1.0, "output_per_mtok": 5.0},
}


@dataclass
class ModelTokens:
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass
class SessionTally:
    calls: dict[str, int] = field(default_factory=dict)  # lane (or REFUSED) -> calls
    last_lane: str | None = None
    last_reason: str | None = None
    last_ts: str | None = None
    errors: int = 0
    offloaded: dict[str, ModelTokens] = field(default_factory=dict)  # requested model -> tokens


class SessionCounters:
    """The per-session tallies, least recently active first, at most ``limit`` of them."""

    def __init__(self, default_lane: Callable[[], str], limit: int = MAX_SESSIONS):
        # The default lane is read per record: a reload may change it.
        self._default_lane = default_lane
        self._limit = limit
        self._sessions: OrderedDict[str, SessionTally] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def observe(self, record: UsageRecord) -> None:
        session = record.session
        if not session:
            return
        tally = self._sessions.get(session)
        if tally is None:
            tally = self._sessions[session] = SessionTally()
            if len(self._sessions) > self._limit:
                self._sessions.popitem(last=False)
        else:
            self._sessions.move_to_end(session)
        lane = record.lane if record.lane is not None else REFUSED
        tally.calls[lane] = tally.calls.get(lane, 0) + 1
        tally.last_lane, tally.last_reason, tally.last_ts = record.lane, record.reason, record.ts
        if record.error or (record.status is not None and record.status >= 400):
            tally.errors += 1
        if record.lane is None or record.lane == self._default_lane():
            return
        model = record.model or "?"
        tokens = tally.offloaded.get(model)
        if tokens is None:
            if len(tally.offloaded) >= MAX_MODELS:
                model = "other"
            tokens = tally.offloaded.setdefault(model, ModelTokens())
        tokens.calls += 1
        tokens.input_tokens += record.input_tokens or 0
        tokens.output_tokens += record.output_tokens or 0

    def get(self, session: str) -> SessionTally | None:
        return self._sessions.get(session)


def estimate_savings(offloaded: Mapping[str, ModelTokens], pricing: Mapping[str, Any]) -> float | None:
    """What the offloaded calls would have cost on the default lane, in USD, priced by their
    requested model: the config's ``pricing`` first, else :data:`BUILTIN_PRICES`. None when no
    offloaded model has a price."""
    total, priced = 0.0, False
    for model, tokens in offloaded.items():
        price = price_for(model, pricing) or price_for(model, BUILTIN_PRICES)
        if price is None:
            continue
        _, per_in, per_out = price
        total += (tokens.input_tokens * per_in + tokens.output_tokens * per_out) / 1_000_000
        priced = True
    return round(total, 6) if priced else None
