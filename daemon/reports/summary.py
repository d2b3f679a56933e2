"""``ccctl summarize``: per-lane calls, errors, latency and tokens, the A/B breakdowns, and what
the offload saved. One pass over the records; only what is reported is kept."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ccmitm.core.stats import p50_p95
from ccmitm.logs.usage import TOKEN_FIELDS, UNMARKED
from ccmitm.reports.audit import glob_matches
from ccmitm.reports.records import Record, integer, is_error, iso, key_of, number, parse_ts, since_filter

#: Sessions listed by name in a summary (most calls first); the rest are folded into "others".
DEFAULT_TOP_SESSIONS = 10
_TOKEN_KEYS = {
    "input_tokens": "input",
    "output_tokens": "output",
    "cache_read_input_tokens": "cache_read",
    "cache_creation_input_tokens": "cache_creation",
}


@dataclass
class _Session:
    """One Claude Code session's calls: per lane and per request class, counts only."""

    calls: int = 0
    errors: int = 0
    lanes: Counter[str] = field(default_factory=Counter)
    request_classes: Counter[str] = field(default_factory=Counter)

    def add(self, lane: str, request_class: str, failed: bool) -> None:
        self.calls += 1
        self.errors += failed
        self.lanes[lane] += 1
        self.request_classes[request_class] += 1

    def merge(self, other: _Session) -> None:
        self.calls += other.calls
        self.errors += other.errors
        self.lanes.update(other.lanes)
        self.request_classes.update(other.request_classes)

    def as_dict(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "errors": self.errors,
            "lanes": dict(sorted(self.lanes.items())),
            "by_request_class": dict(sorted(self.request_classes.items())),
        }


def session_table(sessions: Mapping[str, _Session], top: int) -> dict[str, Any]:
    """The ``top`` sessions by calls (ties by id, so the output is stable) and the rest as one row."""
    ranked = sorted(sessions.items(), key=lambda item: (-item[1].calls, item[0]))
    others = _Session()
    for _, session in ranked[top:]:
        others.merge(session)
    return {
        "count": len(sessions),
        "top": [{"session": name, **session.as_dict()} for name, session in ranked[:top]],
        "others": {"sessions": max(0, len(ranked) - top), **others.as_dict()},
    }


@dataclass
class _Group:
    """Running totals for one slice of the log (a lane, a header mode, an HTTP version)."""

    calls: int = 0
    errors: int = 0
    durations: list[float] = field(default_factory=list)
    ttfbs: list[float] = field(default_factory=list)
    tokens: Counter[str] = field(default_factory=Counter)

    def add(self, record: Record) -> None:
        self.calls += 1
        if is_error(record):
            self.errors += 1
        duration = number(record.get("duration_ms"))
        if duration is not None:
            self.durations.append(duration)
        ttfb = number(record.get("ttfb_ms"))
        if ttfb is not None:
            self.ttfbs.append(ttfb)
        for name in TOKEN_FIELDS:
            self.tokens[_TOKEN_KEYS[name]] += integer(record.get(name))

    def latency(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "errors": self.errors,
            "error_rate": round(self.errors / self.calls, 4) if self.calls else 0.0,
            "duration_ms": p50_p95(self.durations),
            "ttfb_ms": p50_p95(self.ttfbs),
        }

    def full(self) -> dict[str, Any]:
        data = self.latency()
        data["tokens"] = {name: self.tokens[name] for name in _TOKEN_KEYS.values()}
        return data


def _price_fields(price: Any) -> tuple[float, float] | None:
    """(input, output) USD per million tokens from a PriceConfig or a plain mapping."""
    if isinstance(price, Mapping):
        source: Mapping[str, Any] = price
    else:
        source = {
            "input_per_mtok": getattr(price, "input_per_mtok", None),
            "output_per_mtok": getattr(price, "output_per_mtok", None),
        }
    inp, out = number(source.get("input_per_mtok")), number(source.get("output_per_mtok"))
    if inp is None or out is None:
        return None
    return inp, out


def price_for(model: Any, pricing: Mapping[str, Any] | None) -> tuple[str, float, float] | None:
    """The first pricing glob (config order) matching the requested model: (glob, in, out)."""
    if not pricing or not isinstance(model, str):
        return None
    for glob, price in pricing.items():
        if glob_matches(glob, model):
            fields = _price_fields(price)
            if fields is not None:
                return glob, fields[0], fields[1]
    return None


def summarize(
    records: Iterable[Record],
    since: datetime | None = None,
    pricing: Mapping[str, Any] | None = None,
    default_lane: str = "anthropic",
    skipped_lines: int = 0,
    top_sessions: int = DEFAULT_TOP_SESSIONS,
) -> dict[str, Any]:
    """Per-lane calls/errors/latency/tokens, A/B breakdowns, and the offload savings estimate.

    ``pricing`` maps a model glob to ``{input_per_mtok, output_per_mtok}`` (USD per million tokens,
    e.g. ``config.pricing``); a call moved off ``default_lane`` is priced by its *requested* model,
    i.e. what Anthropic would have charged for it.
    """
    total = _Group()
    lanes: dict[str, _Group] = {}
    lane_reasons: dict[str, Counter[str]] = {}
    lane_header: dict[str, dict[str, _Group]] = {}
    lane_http: dict[str, dict[str, _Group]] = {}
    lane_upstream_http: dict[str, dict[str, _Group]] = {}
    lane_class: dict[str, dict[str, _Group]] = {}
    by_class: dict[str, _Group] = {}
    sessions: dict[str, _Session] = {}
    by_header: dict[str, _Group] = {}
    by_http: dict[str, _Group] = {}
    by_upstream_http: dict[str, _Group] = {}
    offload = _Group()
    offload_models: dict[str, dict[str, Any]] = {}
    first: datetime | None = None
    last: datetime | None = None
    # Calls a lane hold sent to the default lane (by the hold's class), and the refused
    # offload attempts by their refusal class.
    holds: dict[str, dict[str, Any]] = {}
    refusals: Counter[str] = Counter()

    for record in since_filter(records, since):
        stamp = parse_ts(record.get("ts"))
        if stamp is not None:
            first = stamp if first is None or stamp < first else first
            last = stamp if last is None or stamp > last else last
        lane = key_of(record.get("lane"))
        header = key_of(record.get("header_mode"))
        http = key_of(record.get("http_version"))
        upstream_http = key_of(record.get("upstream_http_version"))
        total.add(record)
        lanes.setdefault(lane, _Group()).add(record)
        lane_reasons.setdefault(lane, Counter())[key_of(record.get("reason"))] += 1
        if record.get("reason") == "lane_hold":
            entry_hold = holds.setdefault(
                key_of(record.get("hold")), {"calls": 0, "first_ts": None, "last_ts": None}
            )
            entry_hold["calls"] += 1
            ts = record.get("ts") if isinstance(record.get("ts"), str) else None
            entry_hold["first_ts"] = entry_hold["first_ts"] or ts
            entry_hold["last_ts"] = ts or entry_hold["last_ts"]
        if isinstance(record.get("refusal"), str):
            refusals[record["refusal"]] += 1
        lane_header.setdefault(lane, {}).setdefault(header, _Group()).add(record)
        lane_http.setdefault(lane, {}).setdefault(http, _Group()).add(record)
        lane_upstream_http.setdefault(lane, {}).setdefault(upstream_http, _Group()).add(record)
        by_header.setdefault(header, _Group()).add(record)
        by_http.setdefault(http, _Group()).add(record)
        by_upstream_http.setdefault(upstream_http, _Group()).add(record)
        request_class = record.get("request_class") or UNMARKED
        request_class = request_class if isinstance(request_class, str) else "other"
        lane_class.setdefault(lane, {}).setdefault(request_class, _Group()).add(record)
        by_class.setdefault(request_class, _Group()).add(record)
        session = record.get("session")
        if isinstance(session, str) and session:
            sessions.setdefault(session, _Session()).add(lane, request_class, is_error(record))
        if lane != default_lane:
            offload.add(record)
            model = key_of(record.get("model"))
            entry = offload_models.setdefault(
                model, {"calls": 0, "input_tokens": 0, "output_tokens": 0, "cache_tokens": 0}
            )
            entry["calls"] += 1
            entry["input_tokens"] += integer(record.get("input_tokens"))
            entry["output_tokens"] += integer(record.get("output_tokens"))
            entry["cache_tokens"] += integer(record.get("cache_read_input_tokens")) + integer(
                record.get("cache_creation_input_tokens")
            )

    cost_total = 0.0
    priced_calls = 0
    unpriced: dict[str, int] = {}
    for model, entry in offload_models.items():
        price = price_for(model, pricing)
        if price is None:
            entry["price_glob"] = None
            entry["estimated_cost_usd"] = None
            unpriced[model] = entry["calls"]
            continue
        glob, per_in, per_out = price
        cost = (entry["input_tokens"] * per_in + entry["output_tokens"] * per_out) / 1_000_000
        entry["price_glob"] = glob
        entry["estimated_cost_usd"] = round(cost, 6)
        cost_total += cost
        priced_calls += entry["calls"]

    def table(groups: dict[str, _Group], full: bool = False) -> dict[str, Any]:
        return {key: (g.full() if full else g.latency()) for key, g in sorted(groups.items())}

    lanes_out: dict[str, Any] = {}
    for lane, group in sorted(lanes.items()):
        data = group.full()
        data["reasons"] = dict(sorted(lane_reasons[lane].items()))
        data["by_header_mode"] = table(lane_header[lane])
        data["by_http_version"] = table(lane_http[lane])
        data["by_upstream_http_version"] = table(lane_upstream_http[lane])
        data["by_request_class"] = table(lane_class[lane])
        lanes_out[lane] = data

    offload_tokens = {name: offload.tokens[name] for name in _TOKEN_KEYS.values()}
    return {
        "window": {
            "since": iso(since),
            "first_ts": iso(first),
            "last_ts": iso(last),
            "records": total.calls,
            "skipped_lines": skipped_lines,
        },
        "default_lane": default_lane,
        "totals": total.full(),
        "lanes": lanes_out,
        "by_header_mode": table(by_header),
        "by_http_version": table(by_http),
        "by_upstream_http_version": table(by_upstream_http),
        "by_request_class": table(by_class),
        "sessions": session_table(sessions, top_sessions),
        "holds": dict(sorted(holds.items())),
        "refusals": dict(sorted(refusals.items())),
        "offload": {
            "calls": offload.calls,
            "errors": offload.errors,
            "lanes": sorted(lane for lane in lanes if lane != default_lane),
            "tokens": offload_tokens,
            "tokens_moved": offload_tokens["input"] + offload_tokens["output"],
            "priced_calls": priced_calls,
            "estimated_cost_avoided_usd": round(cost_total, 6) if priced_calls else None,
            "unpriced_models": dict(sorted(unpriced.items())),
            "by_model": dict(sorted(offload_models.items())),
            "basis": (
                "calls served off the default lane, priced by the requested model with config "
                "pricing (input and output tokens as the offload lane counted them; cache tokens "
                "are reported but not priced)"
            ),
        },
    }
