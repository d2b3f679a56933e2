"""Summaries and the routing audit, as pure functions over usage records (dicts, one per log line).

Nothing here opens a socket. :class:`UsageLines` is the only part that reads files; everything else
takes any iterable of records, so the daemon, ccctl and the bundle share one implementation and the
tests feed hand-made lines. Every function makes one pass and keeps only what it reports (latency
values per group, a bounded number of proof lines), so months of logs do not need to fit in memory.
"""

from __future__ import annotations

import fnmatch
import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ccmitm.config.load import Config
from ccmitm.core.routing import OVERRIDE_REASONS, Reason
from ccmitm.logs.files import all_files, read_lines
from ccmitm.logs.usage import TOKEN_FIELDS, UNMARKED, USAGE_FILE
from ccmitm.reports.secretscan import redact_text

Record = Mapping[str, Any]

#: The header modes a keyed lane may log; "passthrough" is the only one an unkeyed lane may log.
KEYED_HEADER_MODES = frozenset({"x-api-key", "authorization"})
PASSTHROUGH = "passthrough"
#: Proof lines kept per check (violations and evidence each); counts are always exact.
DEFAULT_PROOF_KEEP = 200
#: Sessions listed by name in a summary (most calls first); the rest are folded into "others".
DEFAULT_TOP_SESSIONS = 10
#: The request-class key of calls whose client did not send x-claude-code-request-class.
_TOKEN_KEYS = {
    "input_tokens": "input",
    "output_tokens": "output",
    "cache_read_input_tokens": "cache_read",
    "cache_creation_input_tokens": "cache_creation",
}


# --- reading ---------------------------------------------------------------------------------------
class UsageLines:
    """Iterate the records of ``<logs_dir>/usage.jsonl`` and its rotated files (.gz too), oldest first.

    Unparseable lines (a torn last line after a crash, a foreign line) are skipped and counted in
    ``skipped`` once iteration has passed them. Iterating again re-reads the files.
    """

    def __init__(self, logs_dir: Path):
        self.logs_dir = Path(logs_dir)
        self.live = self.logs_dir / USAGE_FILE
        self.skipped = 0
        self.files: list[Path] = []

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self.skipped = 0
        self.files = all_files(self.live)
        for path in self.files:
            for raw in read_lines(path):
                if not raw.strip():
                    continue
                try:
                    record = json.loads(raw)
                except ValueError:
                    self.skipped += 1
                    continue
                if not isinstance(record, dict):
                    self.skipped += 1
                    continue
                yield record


# --- small helpers -------------------------------------------------------------------------------
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> timedelta:
    """``"24h"``, ``"7d"``, ``"30m"``, ``"1h30m"``, ``"2w"`` -> timedelta. ValueError otherwise."""
    compact = text.strip().lower().replace(" ", "")
    if not compact:
        raise ValueError("empty duration")
    position, seconds = 0, 0.0
    for match in _DURATION_PART.finditer(compact):
        if match.start() != position:
            break
        seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    if position != len(compact):
        raise ValueError(f"{text!r} is not a duration like 30m, 24h, 7d or 1h30m")
    if seconds <= 0:
        raise ValueError(f"{text!r} is not a positive duration")
    return timedelta(seconds=seconds)


def parse_ts(value: Any) -> datetime | None:
    """A record's ``ts`` as an aware datetime (naive stamps are UTC); None when missing or invalid."""
    if not isinstance(value, str):
        return None
    try:
        stamp = datetime.fromisoformat(value)
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def since_filter(records: Iterable[Record], since: datetime | None) -> Iterator[Record]:
    """Records at or after ``since``; with a ``since``, undated records are dropped (can't place them)."""
    if since is None:
        yield from records
        return
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    for record in records:
        stamp = parse_ts(record.get("ts"))
        if stamp is not None and stamp >= since:
            yield record


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (an observed value, never an interpolation); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def p50_p95(values: list[float]) -> dict[str, float | None]:
    """The two percentiles every latency figure in the reports shows."""
    return {"p50": percentile(values, 50), "p95": percentile(values, 95)}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def is_error(record: Record) -> bool:
    """Failed: an HTTP error status, an error text (drop, abort, connect failure), or no response."""
    status = record.get("status")
    if record.get("error") is not None:
        return True
    if not isinstance(status, int) or isinstance(status, bool):
        return True
    return status >= 400


def is_haiku(model: Any) -> bool:
    """Haiku in any version: "haiku" anywhere in the name, case-insensitively (never a prefix test)."""
    return isinstance(model, str) and "haiku" in model.lower()


def is_messages_call(record: Record) -> bool:
    """A Messages API call (POST …/v1/messages, any query string), not count_tokens."""
    if record.get("reason") == Reason.COUNT_TOKENS:
        return False
    method = record.get("method")
    if method is not None and str(method).upper() != "POST":
        return False
    path = str(record.get("path") or "").split("?", 1)[0].rstrip("/")
    return path.endswith("/v1/messages")


def glob_matches(glob: str, value: str) -> bool:
    """The routing table's matching: an fnmatch glob, case-insensitive."""
    return fnmatch.fnmatchcase(value.lower(), glob.lower())


def _key(value: Any) -> str:
    return "unknown" if value is None or value == "" else str(value)


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


def _iso(stamp: datetime | None) -> str | None:
    return stamp.astimezone(UTC).isoformat(timespec="seconds") if stamp else None


# --- summarize -----------------------------------------------------------------------------------
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
        duration = _number(record.get("duration_ms"))
        if duration is not None:
            self.durations.append(duration)
        ttfb = _number(record.get("ttfb_ms"))
        if ttfb is not None:
            self.ttfbs.append(ttfb)
        for name in TOKEN_FIELDS:
            self.tokens[_TOKEN_KEYS[name]] += _int(record.get(name))

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
    inp, out = _number(source.get("input_per_mtok")), _number(source.get("output_per_mtok"))
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

    for record in since_filter(records, since):
        stamp = parse_ts(record.get("ts"))
        if stamp is not None:
            first = stamp if first is None or stamp < first else first
            last = stamp if last is None or stamp > last else last
        lane = _key(record.get("lane"))
        header = _key(record.get("header_mode"))
        http = _key(record.get("http_version"))
        upstream_http = _key(record.get("upstream_http_version"))
        total.add(record)
        lanes.setdefault(lane, _Group()).add(record)
        lane_reasons.setdefault(lane, Counter())[_key(record.get("reason"))] += 1
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
            model = _key(record.get("model"))
            entry = offload_models.setdefault(
                model, {"calls": 0, "input_tokens": 0, "output_tokens": 0, "cache_tokens": 0}
            )
            entry["calls"] += 1
            entry["input_tokens"] += _int(record.get("input_tokens"))
            entry["output_tokens"] += _int(record.get("output_tokens"))
            entry["cache_tokens"] += _int(record.get("cache_read_input_tokens")) + _int(
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
            "since": _iso(since),
            "first_ts": _iso(first),
            "last_ts": _iso(last),
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


# --- verify --------------------------------------------------------------------------------------
@dataclass
class Check:
    """One audit rule: how many lines it looked at, which broke it, which show it holding."""

    key: str  # "a".."d", stable for scripts
    name: str
    description: str
    checked: int = 0
    violation_count: int = 0
    violations: list[Record] = field(default_factory=list)
    evidence_count: int = 0
    evidence: list[Record] = field(default_factory=list)
    detail: Counter[str] = field(default_factory=Counter)
    keep: int = DEFAULT_PROOF_KEEP

    @property
    def ok(self) -> bool:
        return self.violation_count == 0

    def violate(self, record: Record) -> None:
        self.violation_count += 1
        if len(self.violations) < self.keep:
            self.violations.append(record)

    def support(self, record: Record) -> None:
        self.evidence_count += 1
        if len(self.evidence) < self.keep:
            self.evidence.append(record)

    def to_dict(self, proof: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {
            "key": self.key,
            "name": self.name,
            "description": self.description,
            "ok": self.ok,
            "checked": self.checked,
            "violations": self.violation_count,
            "detail": dict(sorted(self.detail.items())),
        }
        if proof:
            data["proof"] = {
                "violations": [proof_line(r) for r in self.violations],
                "violations_omitted": self.violation_count - len(self.violations),
                "evidence": [proof_line(r) for r in self.evidence],
                "evidence_omitted": self.evidence_count - len(self.evidence),
            }
        return data


@dataclass
class VerifyReport:
    default_lane: str
    offload_lanes: list[str]
    records: int = 0
    decisions: int = 0  # first attempts: a failover retry is part of its request's decision
    offloaded: int = 0
    by_lane: dict[str, Counter[str]] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    since: datetime | None = None

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    @property
    def headline(self) -> str:
        lanes = ", ".join(self.offload_lanes) or "none configured"
        completions = ", ".join(
            f"{lane} {c['calls']} ({c['ok']} ok, {c['failed']} failed)"
            for lane, c in sorted(self.by_lane.items())
        )
        return (
            f"{self.offloaded} of {self.decisions} decisions went to the offload lanes ({lanes}); "
            f"completions by lane: {completions or 'none'}"
        )

    @property
    def verdict(self) -> str:
        if self.ok:
            return f"PASS: routing and header hygiene hold over {self.records} usage lines"
        failed = [c for c in self.checks if not c.ok]
        total = sum(c.violation_count for c in failed)
        names = ", ".join(f"({c.key}) {c.name}" for c in failed)
        return f"FAIL: {total} violation(s) in {names}"

    def to_dict(self, proof: bool = False) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "exit_code": self.exit_code,
            "headline": self.headline,
            "verdict": self.verdict,
            "since": _iso(self.since),
            "records": self.records,
            "decisions": self.decisions,
            "offloaded": self.offloaded,
            "default_lane": self.default_lane,
            "offload_lanes": self.offload_lanes,
            "by_lane": {lane: dict(c) for lane, c in sorted(self.by_lane.items())},
            "checks": [check.to_dict(proof) for check in self.checks],
            "notes": self.notes,
        }


def proof_line(record: Record) -> str:
    """A record as its compact log line. Usage lines hold no secrets; scrubbed anyway, in case."""
    return redact_text(json.dumps(dict(record), separators=(",", ":"), ensure_ascii=False, default=str))


def verify(
    records: Iterable[Record],
    config: Config,
    since: datetime | None = None,
    keep: int = DEFAULT_PROOF_KEEP,
) -> VerifyReport:
    """Audit routing and header hygiene against ``config``'s lanes and rules (see docs/operations.md).

    (a) no Haiku Messages call ran on the default lane without an override reason;
    (b) every keyed-lane line names the header its lane key went in;
    (c) every unkeyed-lane line is ``passthrough`` (no lane key sent to Anthropic);
    (d) every non-Haiku model on a keyed lane is explained by the rule that sent it there.
    """
    default = config.routing.default_lane
    keyed = {name for name, lane in config.lanes.items() if lane.keyed}
    unkeyed = {name for name, lane in config.lanes.items() if not lane.keyed}
    rule_globs = {rule.match for rule in config.routing.rules}
    override = {str(reason) for reason in OVERRIDE_REASONS}
    report = VerifyReport(
        default_lane=default,
        offload_lanes=sorted(name for name in config.lanes if name != default),
        since=since,
    )
    a = Check(
        "a",
        "haiku-offloaded",
        f"no Haiku Messages call completed on the default lane ({default}) without an override "
        f"reason ({', '.join(sorted(override))})",
        keep=keep,
    )
    b = Check(
        "b",
        "keyed-header-mode",
        "every keyed-lane line carries its lane key's header mode (x-api-key or authorization)",
        keep=keep,
    )
    c = Check(
        "c",
        "passthrough-only",
        "every default/unkeyed-lane line is passthrough: no lane key ever sent there",
        keep=keep,
    )
    d = Check(
        "d",
        "rule-explained",
        "every non-Haiku model on a keyed lane was sent there by a rule whose glob matches it",
        keep=keep,
    )
    report.checks = [a, b, c, d]
    unknown_lanes: Counter[str] = Counter()
    stale_rules: Counter[str] = Counter()

    for record in since_filter(records, since):
        report.records += 1
        lane = _key(record.get("lane"))
        model = record.get("model")
        header = record.get("header_mode")
        reason = _key(record.get("reason"))
        outcome = report.by_lane.setdefault(lane, Counter({"calls": 0, "ok": 0, "failed": 0}))
        outcome["calls"] += 1
        outcome["failed" if is_error(record) else "ok"] += 1
        if not record.get("attempt_of"):
            report.decisions += 1
            if lane != default:
                report.offloaded += 1

        # (a) Haiku must leave the default lane unless something overrode the rule.
        if is_haiku(model) and is_messages_call(record):
            a.checked += 1
            if lane == default and reason not in override:
                a.detail[f"on {lane} without override"] += 1
                a.violate(record)
            else:
                a.detail[f"on {lane}" if lane != default else f"on {lane} ({reason})"] += 1
                a.support(record)

        if lane in keyed:
            # (b) a keyed lane always sends its own key in a named header.
            b.checked += 1
            b.detail[f"{lane} {_key(header)}"] += 1
            if header in KEYED_HEADER_MODES:
                b.support(record)
            else:
                b.violate(record)
            # (d) only a rule may bring a non-Haiku model to a keyed lane.
            if not is_haiku(model):
                d.checked += 1
                rule = record.get("rule")
                explained = isinstance(rule, str) and isinstance(model, str) and glob_matches(rule, model)
                if explained:
                    d.detail[f"{model} by rule {rule}"] += 1
                    if rule not in rule_globs:
                        stale_rules[str(rule)] += 1
                    d.support(record)
                else:
                    d.detail[f"{_key(model)} unexplained"] += 1
                    d.violate(record)
        elif lane in unkeyed:
            # (c) a lane that passes the client's credentials must never have had a key attached.
            c.checked += 1
            c.detail[f"{lane} {_key(header)}"] += 1
            if header == PASSTHROUGH:
                c.support(record)
            else:
                c.violate(record)
        else:
            unknown_lanes[lane] += 1

    if report.records == 0:
        report.notes.append("no usage lines to audit" + (f" since {_iso(since)}" if since else ""))
    if unknown_lanes:
        listed = ", ".join(f"{lane} ({n})" for lane, n in sorted(unknown_lanes.items()))
        report.notes.append(
            f"lines on lanes not in the current config were not audited for headers: {listed}"
        )
    if stale_rules:
        listed = ", ".join(f"{glob} ({n})" for glob, n in sorted(stale_rules.items()))
        report.notes.append(f"lines explained by rules no longer in the config: {listed}")
    return report


# --- human formatting ----------------------------------------------------------------------------
def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.0f}" if value >= 100 else f"{value:.1f}"
    return str(value)


def render_table(headers: list[str], rows: list[list[Any]]) -> str:
    """A plain aligned table: first column left-aligned, numbers right-aligned."""
    cells = [headers, *[[_fmt(v) for v in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        parts = [
            row[i].ljust(widths[i]) if i == 0 or not _is_numberish(row[i]) else row[i].rjust(widths[i])
            for i in range(len(headers))
        ]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def _is_numberish(text: str) -> bool:
    return text == "-" or bool(re.fullmatch(r"[\d.,$%]+", text))


def _latency_row(label: list[str], group: Mapping[str, Any]) -> list[Any]:
    return [
        *label,
        group["calls"],
        group["errors"],
        group["duration_ms"]["p50"],
        group["duration_ms"]["p95"],
        group["ttfb_ms"]["p50"],
        group["ttfb_ms"]["p95"],
    ]


_LATENCY_HEADERS = ["calls", "errors", "p50 ms", "p95 ms", "ttfb p50", "ttfb p95"]


def format_summary(summary: Mapping[str, Any]) -> str:
    """The human view of :func:`summarize`'s output."""
    window = summary["window"]
    totals = summary["totals"]
    out: list[str] = []
    span = f"{window['first_ts'] or '-'} .. {window['last_ts'] or '-'}"
    since = f" (since {window['since']})" if window.get("since") else ""
    out.append(f"usage {span}{since}: {totals['calls']} calls, {totals['errors']} errors")
    if window.get("skipped_lines"):
        out.append(f"{window['skipped_lines']} unparseable line(s) skipped")
    if not summary["lanes"]:
        out.append("no usage lines")
        return "\n".join(out) + "\n"

    rows = []
    for lane, data in summary["lanes"].items():
        tokens = data["tokens"]
        rows.append(
            [
                *_latency_row([lane], data),
                tokens["input"],
                tokens["output"],
                tokens["cache_read"],
                tokens["cache_creation"],
            ]
        )
    out += [
        "",
        render_table(
            ["lane", *_LATENCY_HEADERS, "tok in", "tok out", "cache rd", "cache wr"],
            rows,
        ),
    ]
    for title, key in (
        ("by header mode (x-api-key vs authorization/Bearer)", "by_header_mode"),
        ("by client HTTP version", "by_http_version"),
        ("by upstream HTTP version (H1 vs H2)", "by_upstream_http_version"),
        (
            "by Claude Code request class (subagent vs main loop; unmarked: client did not say)",
            "by_request_class",
        ),
    ):
        rows = [
            _latency_row([lane, value], group)
            for lane, data in summary["lanes"].items()
            for value, group in data[key].items()
        ]
        out += ["", title, render_table(["lane", key.removeprefix("by_"), *_LATENCY_HEADERS], rows)]

    sessions = summary.get("sessions") or {}
    if sessions.get("count"):
        rows = [_session_row(row["session"], row) for row in sessions["top"]]
        others = sessions["others"]
        if others["sessions"]:
            rows.append(_session_row(f"({others['sessions']} others)", others))
        out += [
            "",
            f"by Claude Code session ({sessions['count']} sessions, most calls first)",
            render_table(["session", "calls", "errors", "lanes", "request classes"], rows),
        ]

    offload = summary["offload"]
    tokens = offload["tokens"]
    out += [
        "",
        f"offload: {offload['calls']} calls moved off {summary['default_lane']} "
        f"to {', '.join(offload['lanes']) or 'no lane'}; {tokens['input']} input + "
        f"{tokens['output']} output tokens"
        + (
            f" (+ {tokens['cache_read']} cache read, {tokens['cache_creation']} cache write)"
            if tokens["cache_read"] or tokens["cache_creation"]
            else ""
        ),
    ]
    if offload["estimated_cost_avoided_usd"] is not None:
        cost = offload["estimated_cost_avoided_usd"]
        out.append(
            f"estimated Anthropic cost avoided: ${cost:.{2 if cost >= 1 else 6}f} "
            f"({offload['priced_calls']} priced calls)"
        )
    elif offload["calls"]:
        out.append("estimated Anthropic cost avoided: n/a (no `pricing` glob matches; see docs)")
    if offload["unpriced_models"]:
        unpriced = ", ".join(f"{m} ({n})" for m, n in offload["unpriced_models"].items())
        out.append(f"unpriced models: {unpriced}")
    return "\n".join(out) + "\n"


def _session_row(label: str, row: Mapping[str, Any]) -> list[Any]:
    def counts(mapping: Mapping[str, int]) -> str:
        return " ".join(f"{key}:{value}" for key, value in mapping.items()) or "-"

    return [label, row["calls"], row["errors"], counts(row["lanes"]), counts(row["by_request_class"])]


def format_verify(report: VerifyReport, proof: bool = False) -> str:
    """The human view of :func:`verify`: headline, one line per check, the verdict (+ proof lines)."""
    out = [report.headline]
    if report.since:
        out.append(f"window: since {_iso(report.since)}")
    for check in report.checks:
        status = "PASS" if check.ok else "FAIL"
        detail = ", ".join(f"{k} {v}" for k, v in sorted(check.detail.items()))
        out.append(
            f"[{status}] ({check.key}) {check.name}: {check.description} - "
            f"{check.checked} checked, {check.violation_count} violation(s)"
            + (f" [{detail}]" if detail else "")
        )
    for note in report.notes:
        out.append(f"note: {note}")
    out.append(report.verdict)
    if proof:
        for check in report.checks:
            out.append("")
            out.append(f"--- proof ({check.key}) {check.name}: {'PASS' if check.ok else 'FAIL'}")
            if check.violation_count:
                out.append(f"violations ({check.violation_count}):")
                out += [f"  {proof_line(r)}" for r in check.violations]
                if check.violation_count > len(check.violations):
                    out.append(f"  ... {check.violation_count - len(check.violations)} more")
            if check.evidence_count:
                out.append(f"lines that satisfy it ({check.evidence_count}):")
                out += [f"  {proof_line(r)}" for r in check.evidence]
                if check.evidence_count > len(check.evidence):
                    out.append(f"  ... {check.evidence_count - len(check.evidence)} more")
            if not check.checked:
                out.append("  (no line in scope)")
    return "\n".join(out) + "\n"
