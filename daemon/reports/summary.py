"""``ccctl summarize``: per-lane calls, errors, latency and tokens, the A/B breakdowns, and what
the offload saved. One pass over the records; only what is reported is kept.

The pass is built for logs of a few hundred thousand lines: each record adds to one *cell*, keyed
by the values every breakdown groups on (lane, reason, header mode, HTTP versions, request class),
and every table is made from the cells at the end. So a record costs one dict lookup and a few
additions, not one update per table; each cell's latencies are sorted once, and a table's are the
merge of its cells' sorted runs (which Python's sort merges in linear time).
"""

from __future__ import annotations

import operator
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from ccmitm.core.routing import LOCAL_REASONS
from ccmitm.core.stats import percentile_of_sorted
from ccmitm.logs.usage import UNMARKED
from ccmitm.reports.prices import Price, PriceTable, cost, provenance
from ccmitm.reports.records import Record, iso, key_of

#: Sessions listed by name in a summary (most calls first); the rest are folded into "others".
DEFAULT_TOP_SESSIONS = 10
_TOKEN_NAMES = ("input", "output", "cache_read", "cache_creation")
_LOCAL = frozenset(str(reason) for reason in LOCAL_REASONS)
_ZERO = timedelta(0)
#: What a record adds to the summary, read in one call (a line from the daemon has every field).
_FIELDS = (
    "ts", "lane", "reason", "header_mode", "http_version", "upstream_http_version", "request_class",
    "status", "error", "duration_ms", "ttfb_ms", "input_tokens", "output_tokens",
    "cache_read_input_tokens", "cache_creation_input_tokens", "session", "model", "upstream_model",
    "refusal",
)  # fmt: skip
_pick = operator.itemgetter(*_FIELDS)


@dataclass
class _Session:
    """One Claude Code session's calls: per lane and per request class, counts only."""

    calls: int = 0
    errors: int = 0
    lanes: Counter[str] = field(default_factory=Counter)
    request_classes: Counter[str] = field(default_factory=Counter)

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


class _Cell:
    """Running totals of the records that share every grouped value."""

    __slots__ = ("calls", "durations", "errors", "tokens", "ttfbs")

    def __init__(self) -> None:
        self.calls = 0
        self.errors = 0
        self.durations: list[float] = []
        self.ttfbs: list[float] = []
        self.tokens = [0, 0, 0, 0]


@dataclass
class _Group:
    """A table row: the merge of its cells, or of smaller groups (whose latencies are already
    merged, so a lane's row merges a few long runs instead of every cell again)."""

    calls: int = 0
    errors: int = 0
    duration_runs: list[list[float]] = field(default_factory=list)  # sorted runs
    ttfb_runs: list[list[float]] = field(default_factory=list)
    tokens: list[int] = field(default_factory=lambda: [0, 0, 0, 0])

    def add(self, part: _Cell | _Group) -> None:
        self.calls += part.calls
        self.errors += part.errors
        if isinstance(part, _Group):
            self.duration_runs.append(part.durations())
            self.ttfb_runs.append(part.ttfbs())
        else:
            self.duration_runs.append(part.durations)
            self.ttfb_runs.append(part.ttfbs)
        for index, count in enumerate(part.tokens):
            self.tokens[index] += count

    def durations(self) -> list[float]:
        self.duration_runs = [_merged(self.duration_runs)]
        return self.duration_runs[0]

    def ttfbs(self) -> list[float]:
        self.ttfb_runs = [_merged(self.ttfb_runs)]
        return self.ttfb_runs[0]

    def latency(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "errors": self.errors,
            "error_rate": round(self.errors / self.calls, 4) if self.calls else 0.0,
            "duration_ms": _p50_p95(self.durations()),
            "ttfb_ms": _p50_p95(self.ttfbs()),
        }

    def full(self) -> dict[str, Any]:
        data = self.latency()
        data["tokens"] = dict(zip(_TOKEN_NAMES, self.tokens, strict=True))
        return data


def _p50_p95(ordered: list[float]) -> dict[str, float | None]:
    # The house percentile, straight on the merged (already sorted) array: stats.p50_p95 would
    # sort a copy first, for nothing.
    return {"p50": percentile_of_sorted(ordered, 50), "p95": percentile_of_sorted(ordered, 95)}


def _merged(runs: list[list[float]]) -> list[float]:
    if len(runs) == 1:
        return runs[0]
    out: list[float] = []
    for run in runs:
        out += run
    out.sort()  # already-sorted runs: the sort merges them
    return out


def _union(parts: Iterable[Mapping[str, _Group]]) -> dict[str, _Group]:
    """Groups of the same name across several tables, merged (e.g. a header mode over all lanes)."""
    out: dict[str, _Group] = {}
    for table in parts:
        for name, group in table.items():
            out.setdefault(name, _Group()).add(group)
    return out


def _class_of(value: Any) -> str:
    if not value:
        return UNMARKED
    return value if isinstance(value, str) else "other"


def _day(ts: str, stamp: datetime) -> str:
    """The UTC day of a record, from its text when it is already in UTC (the daemon's form)."""
    if ts.endswith("+00:00") or stamp.utcoffset() == _ZERO:
        return ts[:10]
    return stamp.astimezone(UTC).date().isoformat()


class _Money:
    """Offloaded calls priced: what Anthropic would have charged, what the lane charged."""

    __slots__ = ("anthropic", "calls", "lane")

    def __init__(self) -> None:
        self.calls = 0
        self.anthropic = 0.0
        self.lane = 0.0

    def add(self, anthropic: float, lane: float) -> None:
        self.calls += 1
        self.anthropic += anthropic
        self.lane += lane

    def merge(self, other: _Money) -> None:
        self.calls += other.calls
        self.anthropic += other.anthropic
        self.lane += other.lane

    def as_dict(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "anthropic_cost_usd": round(self.anthropic, 6),
            "offload_cost_usd": round(self.lane, 6),
            "saved_usd": round(self.anthropic - self.lane, 6),
        }


def _money_table(groups: Mapping[str, _Money]) -> dict[str, Any]:
    return {key: money.as_dict() for key, money in sorted(groups.items())}


class Summary:
    """summarize as a consumer of records: ``add`` each one, then ``result()``."""

    def __init__(
        self,
        since: datetime | None = None,
        pricing: Mapping[str, Any] | None = None,
        default_lane: str = "anthropic",
        top_sessions: int = DEFAULT_TOP_SESSIONS,
        prices: PriceTable | None = None,
    ):
        self.since = since if since is None or since.tzinfo else since.replace(tzinfo=UTC)
        self.default_lane = default_lane
        self.top_sessions = top_sessions
        self.prices = prices if prices is not None else PriceTable(pricing)
        self.cells: dict[tuple[Any, ...], _Cell] = {}
        self.sessions: dict[tuple[Any, ...], list[int]] = {}  # (session, lane, class) -> calls, errors
        # Offloaded calls by (lane, model, upstream model, request class, day, session): counts
        # and tokens, priced at the end (a log has few distinct ones).
        self.offload: dict[tuple[Any, ...], list[int]] = {}
        self.local: Counter[str] = Counter()
        self.first: datetime | None = None
        self.last: datetime | None = None
        # Calls a lane hold sent to the default lane (by the hold's class), and the refused
        # offload attempts by their refusal class.
        self.holds: dict[str, dict[str, Any]] = {}
        self.refusals: Counter[str] = Counter()
        self._named_cells: list[tuple[tuple[str, ...], _Cell]] = []

    def add(self, record: Record) -> None:
        try:
            values = _pick(record)
        except KeyError:  # an older line, from before a field existed
            get = record.get
            values = tuple(get(name) for name in _FIELDS)
        (
            ts, lane, reason, header, http, upstream_http, request_class, status, error, duration,
            ttfb, inp, out, read, write, session, model, upstream, refusal,
        ) = values  # fmt: skip
        stamp: datetime | None = None
        if type(ts) is str:
            try:
                stamp = datetime.fromisoformat(ts)
            except ValueError:
                stamp = None
            else:
                if stamp.tzinfo is None:
                    stamp = stamp.replace(tzinfo=UTC)
        since = self.since
        if since is not None and (stamp is None or stamp < since):
            return
        if stamp is not None:
            if self.first is None or stamp < self.first:
                self.first = stamp
            if self.last is None or stamp > self.last:
                self.last = stamp
        if lane is None and reason in _LOCAL:
            self.local[reason] += 1  # answered by ccmitm itself: no lane's call
            return
        key: tuple[Any, ...] = (lane, reason, header, http, upstream_http, request_class)
        try:
            cell = self.cells.get(key)
        except TypeError:  # a hand-edited line with a list for a value: key it by text
            key = tuple(key_of(value) for value in key)
            cell = self.cells.get(key)
        if cell is None:
            cell = self.cells[key] = _Cell()
        failed = error is not None or type(status) is not int or status >= 400
        cell.calls += 1
        cell.errors += failed
        if type(duration) is float:
            cell.durations.append(duration)
        elif type(duration) is int:
            cell.durations.append(float(duration))
        if type(ttfb) is float:
            cell.ttfbs.append(ttfb)
        elif type(ttfb) is int:
            cell.ttfbs.append(float(ttfb))
        if type(inp) is not int:
            inp = 0
        if type(out) is not int:
            out = 0
        if type(read) is not int:
            read = 0
        if type(write) is not int:
            write = 0
        tokens = cell.tokens
        tokens[0] += inp
        tokens[1] += out
        tokens[2] += read
        tokens[3] += write
        if reason == "lane_hold":
            entry_hold = self.holds.setdefault(
                key_of(record.get("hold")), {"calls": 0, "first_ts": None, "last_ts": None}
            )
            entry_hold["calls"] += 1
            text_ts = ts if isinstance(ts, str) else None
            entry_hold["first_ts"] = entry_hold["first_ts"] or text_ts
            entry_hold["last_ts"] = text_ts or entry_hold["last_ts"]
        if isinstance(refusal, str):
            self.refusals[refusal] += 1
        if type(session) is not str or not session:
            session = None
        if session is not None:
            skey: tuple[Any, ...] = (session, key[0], key[5])
            counts = self.sessions.get(skey)
            if counts is None:
                counts = self.sessions[skey] = [0, 0]
            counts[0] += 1
            counts[1] += failed
        if lane != self.default_lane:
            day = _day(ts, stamp) if stamp is not None and isinstance(ts, str) else "unknown"
            okey: tuple[Any, ...] = (key[0], model, upstream, key[5], day, session)
            try:
                sums = self.offload.get(okey)
            except TypeError:
                okey = tuple(key_of(value) for value in okey)
                sums = self.offload.get(okey)
            if sums is None:
                sums = self.offload[okey] = [0, 0, 0, 0, 0, 0]
            sums[0] += 1
            sums[1] += failed
            sums[2] += inp
            sums[3] += out
            sums[4] += read
            sums[5] += write

    # --- the tables, from the cells ----------------------------------------------------------------
    def result(self, skipped_lines: int = 0) -> dict[str, Any]:
        # Each cell's latencies sorted once; every table below merges those runs.
        named: dict[tuple[str, ...], _Cell] = {}
        for raw_key, cell in self.cells.items():
            lane, reason, header, http, upstream_http, request_class = raw_key
            name = (
                key_of(lane),
                key_of(reason),
                key_of(header),
                key_of(http),
                key_of(upstream_http),
                _class_of(request_class),
            )
            if name in named:  # None and "" both read "unknown": one cell
                into = named[name]
                into.calls += cell.calls
                into.errors += cell.errors
                into.durations += cell.durations
                into.ttfbs += cell.ttfbs
                into.tokens = [a + b for a, b in zip(into.tokens, cell.tokens, strict=True)]
            else:
                named[name] = cell
        for cell in named.values():
            cell.durations.sort()
            cell.ttfbs.sort()
        self._named_cells = sorted(named.items())

        def table(groups: dict[str, _Group], full: bool = False) -> dict[str, Any]:
            return {key: (g.full() if full else g.latency()) for key, g in sorted(groups.items())}

        def per_lane(index: int) -> dict[str, dict[str, _Group]]:
            out: dict[str, dict[str, _Group]] = {}
            for cell_key, cell in self._named_cells:
                out.setdefault(cell_key[0], {}).setdefault(cell_key[index], _Group()).add(cell)
            return out

        # Every table from the smallest pieces up: lane x value from cells, a lane from its
        # request classes, the totals from the lanes, a value over all lanes from its lane rows.
        lane_header, lane_http, lane_upstream_http, lane_class = (per_lane(i) for i in (2, 3, 4, 5))
        lanes: dict[str, _Group] = {}
        for lane, classes in lane_class.items():
            group = lanes[lane] = _Group()
            for part in classes.values():
                group.add(part)
        total = _Group()
        for group in lanes.values():
            total.add(group)
        lane_reasons: dict[str, Counter[str]] = {}
        for cell_key, cell in self._named_cells:
            lane_reasons.setdefault(cell_key[0], Counter())[cell_key[1]] += cell.calls
        lane_header, lane_http, lane_upstream_http, lane_class = (per_lane(i) for i in (2, 3, 4, 5))
        lanes_out: dict[str, Any] = {}
        for lane, group in sorted(lanes.items()):
            data = group.full()
            data["reasons"] = dict(sorted(lane_reasons[lane].items()))
            data["by_header_mode"] = table(lane_header[lane])
            data["by_http_version"] = table(lane_http[lane])
            data["by_upstream_http_version"] = table(lane_upstream_http[lane])
            data["by_request_class"] = table(lane_class[lane])
            lanes_out[lane] = data

        sessions: dict[str, _Session] = {}
        for (session_id, lane, request_class), (calls, errors) in self.sessions.items():
            session = sessions.get(session_id)
            if session is None:
                session = sessions[session_id] = _Session()
            session.calls += calls
            session.errors += errors
            session.lanes[key_of(lane)] += calls
            session.request_classes[_class_of(request_class)] += calls

        offload_lanes = sorted(lane for lane in lanes if lane != self.default_lane)
        return {
            "window": {
                "since": iso(self.since),
                "first_ts": iso(self.first),
                "last_ts": iso(self.last),
                "records": total.calls + sum(self.local.values()),
                "skipped_lines": skipped_lines,
            },
            "default_lane": self.default_lane,
            "totals": total.full(),
            "lanes": lanes_out,
            "by_header_mode": table(_union(lane_header.values())),
            "by_http_version": table(_union(lane_http.values())),
            "by_upstream_http_version": table(_union(lane_upstream_http.values())),
            "by_request_class": table(_union(lane_class.values())),
            "sessions": session_table(sessions, self.top_sessions),
            "holds": dict(sorted(self.holds.items())),
            "refusals": dict(sorted(self.refusals.items())),
            "answered_locally": {
                "calls": sum(self.local.values()),
                "by_reason": dict(sorted(self.local.items())),
            },
            "offload": self._offload(offload_lanes),
        }

    def _offload(self, offload_lanes: list[str]) -> dict[str, Any]:
        prices = self.prices
        calls = errors = 0
        tokens = [0, 0, 0, 0]
        by_model: dict[str, dict[str, Any]] = {}
        unpriced: Counter[str] = Counter()
        total, by_day, by_class = _Money(), dict[str, _Money](), dict[str, _Money]()
        by_session: dict[str, _Money] = {}
        # Each (lane, requested model, upstream model) is priced once: a cost is linear in tokens.
        rates: dict[tuple[Any, ...], tuple[str, Price, Price] | None] = {}
        for key, (n, failed, inp, out, read, write) in self.offload.items():
            lane, model, upstream, request_class, day, session = key
            calls += n
            errors += failed
            tokens[0] += inp
            tokens[1] += out
            tokens[2] += read
            tokens[3] += write
            name = key_of(model)
            entry = by_model.get(name)
            if entry is None:
                entry = by_model[name] = {
                    "calls": 0,
                    "input_tokens": 0,
                    "output_tokens": 0,
                    "cache_tokens": 0,
                    "price_glob": None,
                    "estimated_cost_usd": None,
                    "offload_cost_usd": None,
                    "saved_usd": None,
                }
            entry["calls"] += n
            entry["input_tokens"] += inp
            entry["output_tokens"] += out
            entry["cache_tokens"] += read + write
            lmu = key[:3]
            if lmu in rates:
                rate = rates[lmu]
            else:
                priced = prices.anthropic(model)
                rate = rates[lmu] = (
                    None
                    if priced is None
                    else (priced.source, priced.price, prices.lane(lane, upstream).price)
                )
            if rate is None:
                unpriced[name] += n
                continue
            source, anthropic_price, lane_price = rate
            anthropic = cost(anthropic_price, inp, out, read, write)
            lane_cost = cost(lane_price, inp, out, read, write)
            entry["price_glob"] = source
            entry["estimated_cost_usd"] = (entry["estimated_cost_usd"] or 0.0) + anthropic
            entry["offload_cost_usd"] = (entry["offload_cost_usd"] or 0.0) + lane_cost
            for table, name_in_table in (
                (by_day, day),
                (by_class, _class_of(request_class)),
                (by_session, session),
            ):
                if name_in_table is None:
                    continue
                money = table.get(name_in_table)
                if money is None:
                    money = table[name_in_table] = _Money()
                money.calls += n
                money.anthropic += anthropic
                money.lane += lane_cost
            total.calls += n
            total.anthropic += anthropic
            total.lane += lane_cost
        for entry in by_model.values():
            if entry["estimated_cost_usd"] is not None:
                entry["saved_usd"] = round(entry["estimated_cost_usd"] - entry["offload_cost_usd"], 6)
                entry["estimated_cost_usd"] = round(entry["estimated_cost_usd"], 6)
                entry["offload_cost_usd"] = round(entry["offload_cost_usd"], 6)

        ranked = sorted(by_session.items(), key=lambda item: (-(item[1].anthropic - item[1].lane), item[0]))
        others = _Money()
        for _, money in ranked[self.top_sessions :]:
            others.merge(money)

        offload_tokens = dict(zip(_TOKEN_NAMES, tokens, strict=True))
        priced_calls = total.calls
        return {
            "calls": calls,
            "errors": errors,
            "lanes": offload_lanes,
            "tokens": offload_tokens,
            "tokens_moved": offload_tokens["input"] + offload_tokens["output"],
            "priced_calls": priced_calls,
            "estimated_cost_avoided_usd": round(total.anthropic, 6) if priced_calls else None,
            "unpriced_models": dict(sorted(unpriced.items())),
            "by_model": dict(sorted(by_model.items())),
            "basis": (
                "calls served off the default lane, priced by the requested model (config `pricing` "
                "first, else Anthropic's list price for its family) with the tokens the offload lane "
                "counted, cache reads and writes included; minus the lane's own price "
                "(`lanes.<name>.pricing`, 0 for a subscription plan)"
            ),
            "savings": {
                **total.as_dict(),
                "by_day": _money_table(by_day),
                "by_request_class": _money_table(by_class),
                "by_session": {
                    "count": len(by_session),
                    "top": [
                        {"session": name, **money.as_dict()} for name, money in ranked[: self.top_sessions]
                    ],
                    "others": {"sessions": max(0, len(ranked) - self.top_sessions), **others.as_dict()},
                },
                "prices": {**prices.describe(offload_lanes), "provenance": provenance()},
            },
        }


def summarize(
    records: Iterable[Record],
    since: datetime | None = None,
    pricing: Mapping[str, Any] | None = None,
    default_lane: str = "anthropic",
    skipped_lines: int = 0,
    top_sessions: int = DEFAULT_TOP_SESSIONS,
    prices: PriceTable | None = None,
) -> dict[str, Any]:
    """Per-lane calls/errors/latency/tokens, A/B breakdowns, and the offload savings estimate.

    ``pricing`` maps a model glob to ``{input_per_mtok, output_per_mtok, ...}`` (USD per million
    tokens, e.g. ``config.pricing``) ahead of the built-in list prices; ``prices`` (a whole
    :class:`PriceTable`, lane prices included) replaces both. A call moved off ``default_lane`` is
    priced by its *requested* model, i.e. what Anthropic would have charged for it.
    """
    summary = Summary(since, pricing, default_lane, top_sessions, prices)
    add = summary.add
    for record in records:
        add(record)
    return summary.result(skipped_lines)
