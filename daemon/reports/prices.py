"""Token prices: the dated default table of Anthropic's list prices, the config's overrides, and
the one cost function the reports (and a live estimate in the daemon) share.

What an offloaded call saved = what Anthropic would have charged for the model the client asked
for, minus what the offload lane charges for it. Anthropic's side comes from the config's
``pricing`` globs (first match in file order), else from :data:`ANTHROPIC_LIST_PRICES` matched by
family ("haiku", "sonnet" or "opus" anywhere in the name, like the audit's Haiku test). The lane's
side comes from ``lanes.<name>.pricing`` (globs over the upstream model); a lane without any is a
subscription plan: 0 per call. Pure: no I/O, no clock.
"""

from __future__ import annotations

import fnmatch
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: Where the default table comes from, and when it was last compared with that page. Prices change:
#: re-check them against the page and move the date when you do.
PRICES_SOURCE = "https://www.anthropic.com/pricing"
PRICES_CHECKED = "2025-11-24"
#: Anthropic's multipliers for prompt caching: a cache read costs 0.1 x the input price, a
#: 5-minute cache write 1.25 x. Used when a configured price leaves the cache prices out.
CACHE_READ_FACTOR = 0.1
CACHE_WRITE_FACTOR = 1.25
MTOK = 1_000_000


@dataclass(frozen=True)
class Price:
    """USD per million tokens."""

    input: float
    output: float
    cache_read: float
    cache_write: float

    @classmethod
    def of(cls, entry: Any) -> Price | None:
        """A PriceConfig (or the same keys as a mapping) as a Price; None when incomplete."""
        get = entry.get if isinstance(entry, Mapping) else lambda name: getattr(entry, name, None)
        inp, out = _number(get("input_per_mtok")), _number(get("output_per_mtok"))
        if inp is None or out is None:
            return None
        read, write = _number(get("cache_read_per_mtok")), _number(get("cache_write_per_mtok"))
        return cls(
            inp,
            out,
            inp * CACHE_READ_FACTOR if read is None else read,
            inp * CACHE_WRITE_FACTOR if write is None else write,
        )


FREE = Price(0.0, 0.0, 0.0, 0.0)

#: Claude Haiku 4.5, Sonnet 4.5 and Opus 4.5 list prices (input, output, cache read, 5-minute cache
#: write), as published by Anthropic at PRICES_SOURCE on PRICES_CHECKED.
ANTHROPIC_LIST_PRICES: dict[str, Price] = {
    "haiku": Price(1.00, 5.00, 0.10, 1.25),
    "sonnet": Price(3.00, 15.00, 0.30, 3.75),
    "opus": Price(5.00, 25.00, 0.50, 6.25),
}


def cost(
    price: Price,
    input_tokens: int = 0,
    output_tokens: int = 0,
    cache_read_tokens: int = 0,
    cache_write_tokens: int = 0,
) -> float:
    """USD for these token counts at ``price``."""
    return (
        input_tokens * price.input
        + output_tokens * price.output
        + cache_read_tokens * price.cache_read
        + cache_write_tokens * price.cache_write
    ) / MTOK


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _glob_matches(glob: str, value: str) -> bool:
    # The routing table's matching (fnmatch, case-insensitive), as the audit does it.
    return fnmatch.fnmatchcase(value.lower(), glob.lower())


def _family(model: str) -> str | None:
    name = model.lower()
    return next((family for family in ANTHROPIC_LIST_PRICES if family in name), None)


@dataclass(frozen=True)
class Priced:
    """A price and where it came from (``source`` names the glob or the default table)."""

    price: Price
    source: str


class PriceTable:
    """The prices one config means. Lookups are cached: a log has few distinct models."""

    def __init__(
        self,
        pricing: Mapping[str, Any] | None = None,
        lane_pricing: Mapping[str, Mapping[str, Any]] | None = None,
    ):
        self.overrides = [
            (glob, price) for glob, entry in (pricing or {}).items() if (price := Price.of(entry))
        ]
        self.lanes = {
            lane: [(glob, price) for glob, entry in table.items() if (price := Price.of(entry))]
            for lane, table in (lane_pricing or {}).items()
        }
        self._anthropic_cached = functools.lru_cache(maxsize=1024)(self._anthropic)
        self._lane_cached = functools.lru_cache(maxsize=1024)(self._lane)

    @classmethod
    def from_config(cls, config: Any) -> PriceTable:
        """From a ``Config``: its ``pricing`` and every lane's ``pricing``."""
        return cls(config.pricing, {name: lane.pricing for name, lane in config.lanes.items()})

    def anthropic(self, model: Any) -> Priced | None:
        """What Anthropic charges for the requested ``model``; None for a model it does not sell."""
        if not isinstance(model, str) or not model:
            return None
        return self._anthropic_cached(model)

    def lane(self, lane: Any, upstream_model: Any) -> Priced:
        """What ``lane`` charges for a call it served as ``upstream_model``; a lane without
        pricing is a subscription (0 per call), and so is a model none of its globs match."""
        if not isinstance(lane, str):
            return Priced(FREE, "subscription")
        return self._lane_cached(lane, upstream_model if isinstance(upstream_model, str) else None)

    def _anthropic(self, model: str) -> Priced | None:
        for glob, price in self.overrides:
            if _glob_matches(glob, model):
                return Priced(price, glob)
        family = _family(model)
        return None if family is None else Priced(ANTHROPIC_LIST_PRICES[family], f"*{family}*")

    def _lane(self, lane: str, upstream_model: str | None) -> Priced:
        table = self.lanes.get(lane) or []
        if upstream_model is not None:
            for glob, price in table:
                if _glob_matches(glob, upstream_model):
                    return Priced(price, glob)
        return Priced(FREE, "subscription")

    def saving(
        self,
        model: Any,
        lane: Any,
        upstream_model: Any,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
    ) -> tuple[float, float] | None:
        """(Anthropic's price for the requested model, the lane's price) for one offloaded call's
        tokens; None when Anthropic has no price for the model. For a live estimate too."""
        anthropic = self.anthropic(model)
        if anthropic is None:
            return None
        tokens = (input_tokens, output_tokens, cache_read_tokens, cache_write_tokens)
        return cost(anthropic.price, *tokens), cost(self.lane(lane, upstream_model).price, *tokens)

    def describe(self, lanes: list[str]) -> dict[str, Any]:
        """Which prices the estimate used, with the default table's date and source."""
        return {
            "anthropic_list": {
                "source": PRICES_SOURCE,
                "checked": PRICES_CHECKED,
                "per_mtok": {family: vars(price) for family, price in ANTHROPIC_LIST_PRICES.items()},
            },
            "config_overrides": [glob for glob, _ in self.overrides],
            "lanes": {
                lane: [glob for glob, _ in self.lanes.get(lane, [])] or "subscription (0 per call)"
                for lane in lanes
            },
        }


def provenance(scheme: bool = True) -> str:
    """The default table's source and date, in words, for every output that shows a saving.
    ``scheme=False`` names the page without ``https://`` (REPORT.html carries no URL at all)."""
    listed = "; ".join(
        f"{family} ${p.input:g}/${p.output:g} in/out, cache ${p.cache_read:g} read, ${p.cache_write:g} write"
        for family, p in ANTHROPIC_LIST_PRICES.items()
    )
    return (
        f"Anthropic list prices per million tokens ({listed}) as published by Anthropic at "
        f"{PRICES_SOURCE if scheme else PRICES_SOURCE.removeprefix('https://')}, checked {PRICES_CHECKED}"
    )
