"""REPORT.html for the review bundle: usage records and the verify verdict in, one HTML page out.

Pure and self-contained: the charts are inline SVG drawn here, the CSS is inline, and the only
script records errors and marks the page rendered (for the headless-browser test). No URL of
any kind is emitted, so the page opens offline and leaks nothing. Everything that came from a
usage line or the config (lane and model names, rule globs) is HTML-escaped.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ccmitm.core.refusals import hold_line
from ccmitm.core.routing import LOCAL_REASONS
from ccmitm.core.stats import percentile, percentile_of_sorted
from ccmitm.reports.audit import OUTCOME_NOTHING
from ccmitm.reports.prices import provenance
from ccmitm.reports.records import Record, is_error, parse_ts
from ccmitm.reports.text import top_and_others, usd

#: Bucket widths tried in order; the first that keeps a chart at or under MAX_BUCKETS wins.
BUCKETS = (
    timedelta(minutes=5),
    timedelta(minutes=15),
    timedelta(hours=1),
    timedelta(hours=6),
    timedelta(days=1),
    timedelta(days=7),
)
MAX_BUCKETS = 48
PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#9c755f")

# Chart geometry (SVG user units).
WIDTH, HEIGHT = 760, 260
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 16, 40


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


@dataclass(frozen=True)
class Series:
    lane: str
    color: str
    values: list[float | None]  # one per bucket; None = no data in it
    dashed: bool = False
    label: str = ""


def choose_bucket(start: datetime, end: datetime) -> timedelta:
    span = max(end - start, timedelta(seconds=1))
    for width in BUCKETS:
        if span / width <= MAX_BUCKETS:
            return width
    return BUCKETS[-1]


def _floor(stamp: datetime, width: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return epoch + width * ((stamp - epoch) // width)


def bucket_starts(start: datetime, end: datetime, width: timedelta) -> list[datetime]:
    first = _floor(start, width)
    starts: list[datetime] = []
    while first <= end and len(starts) <= MAX_BUCKETS * 2:
        starts.append(first)
        first += width
    return starts or [_floor(start, width)]


def lane_order(lanes: Iterable[str], default_lane: str | None) -> list[str]:
    names = sorted(set(lanes))
    return sorted(names, key=lambda name: (name != default_lane, name))


def _duration(record: Record) -> float | None:
    value = record.get("duration_ms")
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _tokens(record: Record, name: str) -> int:
    value = record.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


# --- SVG -----------------------------------------------------------------------------------------
def _nice_max(value: float) -> float:
    """A round axis top at or above ``value`` (1, 2, 4, 8 or 10 x 10^n), so quarter ticks stay short."""
    if value <= 0:
        return 4.0
    magnitude = 10 ** (len(str(int(value))) - 1)
    for step in (1, 2, 4, 8, 10):
        if value <= step * magnitude:
            return float(step * magnitude)
    return float(10 * magnitude)


def _label(stamp: datetime, width: timedelta) -> str:
    return stamp.strftime("%m-%d" if width >= timedelta(days=1) else "%H:%M")


def svg_chart(
    chart_id: str,
    title: str,
    unit: str,
    starts: Sequence[datetime],
    width: timedelta,
    series: Sequence[Series],
    bars: bool,
) -> str:
    """One chart: grouped bars (counts) or lines with points (latencies), axes, legend, tooltips."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    count = max(len(starts), 1)
    slot = plot_w / count
    top = _nice_max(max((v for s in series for v in s.values if v is not None), default=0.0))

    def y(value: float) -> float:
        return TOP + plot_h - plot_h * value / top

    parts = [
        # Inline SVG in HTML needs no xmlns; leaving it out keeps the page free of any URL.
        f'<svg class="chart" id="{_e(chart_id)}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{_e(title)}">',
        f"<title>{_e(title)}</title>",
    ]
    for fraction in (0, 0.25, 0.5, 0.75, 1):
        value = top * fraction
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(value):.1f}" y2="{y(value):.1f}"/>'
            f'<text class="tick" x="{LEFT - 6}" y="{y(value) + 4:.1f}" text-anchor="end">{value:g}</text>'
        )
    every = max(1, count // 8)
    for index, start in enumerate(starts):
        if index % every == 0:
            x = LEFT + slot * (index + 0.5)
            parts.append(
                f'<text class="tick" x="{x:.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle">'
                f"{_e(_label(start, width))}</text>"
            )
    parts.append(
        f'<text class="tick" x="{LEFT}" y="{HEIGHT - 6}">{_e(unit)}; buckets of {_e(width)} (UTC)</text>'
    )
    if not any(v is not None and v > 0 for s in series for v in s.values):
        parts.append(
            f'<text class="empty" x="{LEFT + plot_w / 2:.1f}" y="{TOP + plot_h / 2:.1f}" '
            f'text-anchor="middle">no calls in this window</text>'
        )
    if bars:
        group = max(len(series), 1)
        bar_w = max(1.0, slot * 0.8 / group)
        for s_index, s in enumerate(series):
            for index, amount in enumerate(s.values):
                if not amount:
                    continue
                x = LEFT + slot * index + slot * 0.1 + bar_w * s_index
                parts.append(
                    f'<rect class="bar" x="{x:.1f}" y="{y(amount):.1f}" width="{bar_w:.1f}" '
                    f'height="{TOP + plot_h - y(amount):.1f}" fill="{s.color}"><title>{_e(s.lane)} '
                    f"{_e(_label(starts[index], width))}: {amount:g} {_e(unit)}</title></rect>"
                )
    else:
        for s in series:
            points = [
                (LEFT + slot * (index + 0.5), y(value), value)
                for index, value in enumerate(s.values)
                if value is not None
            ]
            if len(points) > 1:
                path = " ".join(f"{x:.1f},{py:.1f}" for x, py, _ in points)
                dash = ' stroke-dasharray="5 4"' if s.dashed else ""
                parts.append(f'<polyline class="line" points="{path}" stroke="{s.color}"{dash}/>')
            for x, py, value in points:
                parts.append(
                    f'<circle class="point" cx="{x:.1f}" cy="{py:.1f}" r="3" fill="{s.color}">'
                    f"<title>{_e(s.label or s.lane)}: {value:g} {_e(unit)}</title></circle>"
                )
    parts.append("</svg>")
    legend = "".join(
        f'<span class="key"><i style="background:{s.color}"></i>{_e(s.label or s.lane)}</span>'
        for s in series
    )
    svg = "".join(parts)
    return f'<figure><figcaption>{_e(title)}</figcaption>{svg}<div class="legend">{legend}</div></figure>'


# --- page ----------------------------------------------------------------------------------------
def _lane_rows(lanes: list[str], totals: Mapping[str, _LaneTotals]) -> str:
    rows = []
    for lane in lanes:
        mine = totals[lane]
        mine.durations.sort()
        p50, p95 = percentile_of_sorted(mine.durations, 50), percentile_of_sorted(mine.durations, 95)
        cells = [
            lane,
            mine.calls,
            mine.errors,
            "-" if p50 is None else f"{p50:.0f}",
            "-" if p95 is None else f"{p95:.0f}",
            mine.input_tokens,
            mine.output_tokens,
        ]
        rows.append("<tr>" + "".join(f"<td>{_e(cell)}</td>" for cell in cells) + "</tr>")
    return "".join(rows) or '<tr><td colspan="7">no calls in this window</td></tr>'


def _verify_block(audit: Mapping[str, Any]) -> str:
    ok = bool(audit.get("ok"))
    checks = "".join(
        f'<tr class="{"ok" if check.get("ok") else "bad"}"><td>({_e(check.get("key"))})</td>'
        f"<td>{_e(check.get('name'))}</td><td>{'pass' if check.get('ok') else 'FAIL'}</td>"
        f"<td>{_e(check.get('checked'))}</td><td>{_e(check.get('violations'))}</td></tr>"
        for check in audit.get("checks", [])
    )
    # Zero usage lines is its own verdict ("nothing"): an empty window must never look green.
    nothing = audit.get("outcome") == OUTCOME_NOTHING
    verdict = "nothing" if nothing else "pass" if ok else "fail"
    heading = {"nothing": "NOTHING TO AUDIT", "pass": "PASS", "fail": "FAIL"}[verdict]
    return (
        f'<section id="verify" class="verdict {verdict}" data-verdict="{verdict}">'
        f"<h2>Routing audit: {heading}</h2>"
        f"<p>{_e(audit.get('verdict', ''))}</p><p>{_e(audit.get('headline', ''))}</p>"
        "<table><thead><tr><th></th><th>check</th><th>result</th><th>lines checked</th><th>violations</th>"
        f"</tr></thead><tbody>{checks}</tbody></table></section>"
    )


CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:820px;color:#222;background:#fff}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:20px 0 8px}
.meta{color:#666;margin:0 0 16px}
table{border-collapse:collapse;width:100%}th,td{padding:4px 8px;border-bottom:1px solid #ddd;text-align:right}
th:first-child,td:first-child,#verify th:nth-child(2),#verify td:nth-child(2){text-align:left}
.verdict{padding:8px 12px;border-radius:6px;border:1px solid}
.verdict.pass{background:#eef8ee;border-color:#59a14f}.verdict.fail{background:#fdeeee;border-color:#e15759}
.verdict.nothing{background:#fff8e6;border-color:#edc948}
tr.bad td{color:#b00}
figure{margin:16px 0}figcaption{font-weight:600;margin-bottom:4px}
svg.chart{width:100%;height:auto;background:#fafafa;border:1px solid #eee}
.grid{stroke:#e4e4e4}.tick{font-size:11px;fill:#666}.empty{font-size:14px;fill:#999}
.line{fill:none;stroke-width:2}
.legend{font-size:12px;color:#444}.key{margin-right:14px}
.key i{display:inline-block;width:10px;height:10px;margin-right:4px;vertical-align:middle}
#errors{color:#b00;white-space:pre-wrap}
"""

# Runs first: any script or resource error lands in #errors and on <html data-errors>.
ERROR_TRAP = """
window.addEventListener('error', function (event) {
  var root = document.documentElement;
  root.setAttribute('data-errors', String(Number(root.getAttribute('data-errors') || 0) + 1));
  var box = document.getElementById('errors');
  if (box) { box.textContent += (event.message || 'resource failed to load') + '\\n'; }
}, true);
"""

# Runs last: the page counts as rendered when every chart has laid out with a real size.
RENDERED = """
(function () {
  var charts = document.querySelectorAll('svg.chart');
  var drawn = 0;
  charts.forEach(function (chart) {
    var box = chart.getBoundingClientRect();
    if (box.width > 0 && box.height > 0 && chart.getBBox().width > 0) { drawn += 1; }
  });
  var root = document.documentElement;
  root.setAttribute('data-charts', String(drawn));
  root.setAttribute('data-rendered', drawn === charts.length && drawn > 0 ? 'ok' : 'incomplete');
})();
"""


def _holds_block(holds: Mapping[str, list[Any]], default_lane: str | None) -> str:
    """The calls lane holds sent to the default lane, in plain words; empty without."""
    if not holds:
        return ""
    lane = default_lane or "the default lane"
    lines = [
        hold_line(cls, calls, first.isoformat(), last.isoformat(), lane)
        for cls, (calls, first, last) in sorted(holds.items())
    ]
    items = "".join(f"<li>{_e(line)}</li>" for line in lines)
    return f'<h2>Offload held</h2><ul id="holds">{items}</ul>'


def _local_block(local: Mapping[str, int]) -> str:
    """Requests ccmitm answered itself (no lane contacted), by reason; empty without."""
    if not local:
        return ""
    counts = ", ".join(f"{n} {reason}" for reason, n in sorted(local.items()))
    return f'<p id="local">Answered by ccmitm (no lane contacted): {_e(counts)}</p>'


class _LaneTotals:
    __slots__ = ("calls", "durations", "errors", "input_tokens", "output_tokens")

    def __init__(self) -> None:
        self.calls = 0
        self.errors = 0
        self.durations: list[float] = []
        self.input_tokens = 0
        self.output_tokens = 0


#: Records are counted in buckets of this width as they pass, and the chart's buckets (each a
#: multiple of it, all aligned on the epoch) are sums of those: the page needs one pass.
_FINE = BUCKETS[0]
_FINE_S = int(_FINE.total_seconds())
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class ReportPage:
    """REPORT.html as a consumer of records: ``add`` each one, then ``render``."""

    def __init__(self) -> None:
        self.totals: dict[str, _LaneTotals] = {}
        # (lane, fine bucket number) -> [calls, durations]
        self.fine: dict[tuple[str, int], list[Any]] = {}
        self.first: datetime | None = None
        self.last: datetime | None = None
        self.calls = 0
        self.holds: dict[str, list[Any]] = {}  # class -> [calls, first, last]
        self.local: dict[str, int] = {}

    def add(self, record: Record) -> None:
        stamp = parse_ts(record.get("ts"))
        if stamp is None:
            return  # an undated line has no place on the time axis
        stamp = stamp.astimezone(UTC)
        if self.first is None or stamp < self.first:
            self.first = stamp
        if self.last is None or stamp > self.last:
            self.last = stamp
        lane_value, reason = record.get("lane"), record.get("reason")
        if lane_value is None and reason in LOCAL_REASONS:
            self.local[reason] = self.local.get(reason, 0) + 1
            return
        self.calls += 1
        lane = str(lane_value or "unknown")
        totals = self.totals.get(lane)
        if totals is None:
            totals = self.totals[lane] = _LaneTotals()
        totals.calls += 1
        totals.errors += is_error(record)
        totals.input_tokens += _tokens(record, "input_tokens")
        totals.output_tokens += _tokens(record, "output_tokens")
        bucket = self.fine.get(key := (lane, int(stamp.timestamp()) // _FINE_S))
        if bucket is None:
            bucket = self.fine[key] = [0, []]
        bucket[0] += 1
        if (duration := _duration(record)) is not None:
            totals.durations.append(duration)
            bucket[1].append(duration)
        if reason == "lane_hold":
            cls = str(record.get("hold") or "unknown")
            hold = self.holds.get(cls)
            if hold is None:
                self.holds[cls] = [1, stamp, stamp]
            else:
                hold[0] += 1
                hold[1], hold[2] = min(hold[1], stamp), max(hold[2], stamp)

    def render(
        self,
        audit: Mapping[str, Any],
        window_start: datetime,
        window_end: datetime,
        default_lane: str | None = None,
        title: str = "ccmitm review",
        savings: Mapping[str, Any] | None = None,
    ) -> str:
        """The whole page. ``audit`` is ``VerifyReport.to_dict()``; the window bounds the time axis;
        ``savings`` is the summary's ``offload`` (what the offload saved, from the same pass)."""
        start = window_start.astimezone(UTC)
        end = max(window_end.astimezone(UTC), self.last or start)
        if self.first is not None and self.first < start:
            start = self.first
        width = choose_bucket(start, end)
        starts = bucket_starts(start, end, width)
        index_of = {stamp: i for i, stamp in enumerate(starts)}
        lanes = lane_order(self.totals, default_lane)
        colors = {lane: PALETTE[i % len(PALETTE)] for i, lane in enumerate(lanes)}

        calls: dict[str, list[float | None]] = {lane: [0.0] * len(starts) for lane in lanes}
        durations: dict[str, list[list[float]]] = {lane: [[] for _ in starts] for lane in lanes}
        for (lane, fine), (count, values) in self.fine.items():
            slot = index_of.get(_floor(_EPOCH + _FINE * fine, width))
            if slot is None:
                continue
            calls[lane][slot] = (calls[lane][slot] or 0) + count
            durations[lane][slot] += values

        call_series = [Series(lane, colors[lane], calls[lane]) for lane in lanes]
        latency_series = [
            Series(
                lane,
                colors[lane],
                [percentile(b, q) for b in durations[lane]],
                dashed=q == 95,
                label=f"{lane} p{q}",
            )
            for lane in lanes
            for q in (50, 95)
        ]
        verdict = (
            "nothing" if audit.get("outcome") == OUTCOME_NOTHING else "pass" if audit.get("ok") else "fail"
        )
        body = [
            f"<h1>{_e(title)}</h1>",
            f'<p class="meta">{_e(start.isoformat(timespec="seconds"))} ..'
            f" {_e(end.isoformat(timespec='seconds'))} (UTC), {self.calls} calls</p>",
            _verify_block(audit),
            _local_block(self.local),
            _holds_block(self.holds, default_lane),
            _savings_block(savings),
            "<h2>Per lane</h2><table><thead><tr><th>lane</th><th>calls</th><th>errors</th><th>p50 ms</th>"
            "<th>p95 ms</th><th>tokens in</th><th>tokens out</th></tr></thead><tbody>"
            f"{_lane_rows(lanes, self.totals)}</tbody></table>",
            svg_chart("calls", "Calls per lane", "calls", starts, width, call_series, bars=True),
            svg_chart(
                "latency",
                "Latency per lane (p50 solid, p95 dashed)",
                "ms",
                starts,
                width,
                latency_series,
                bars=False,
            ),
            '<pre id="errors"></pre>',
        ]
        return (
            f'<!DOCTYPE html>\n<html lang="en" data-verdict="{verdict}"><head><meta charset="utf-8">'
            f"<title>{_e(title)}</title><style>{CSS}</style><script>{ERROR_TRAP}</script></head>"
            f"<body>{''.join(body)}<script>{RENDERED}</script></body></html>\n"
        )


def _money_rows(rows: Iterable[tuple[str, Mapping[str, Any]]]) -> str:
    return "".join(
        f"<tr><td>{_e(label)}</td><td>{_e(row['calls'])}</td><td>{_e(usd(row['anthropic_cost_usd']))}</td>"
        f"<td>{_e(usd(row['offload_cost_usd']))}</td><td>{_e(usd(row['saved_usd']))}</td></tr>"
        for label, row in rows
    )


def _savings_block(offload: Mapping[str, Any] | None) -> str:
    """What the offload saved: totals, then per day, request class and session; empty without."""
    savings = (offload or {}).get("savings")
    if not offload or not savings or offload.get("estimated_cost_avoided_usd") is None:
        if offload and offload.get("calls"):
            return (
                '<section id="savings"><h2>What the offload saved</h2><p>n/a: no Anthropic price for the '
                "requested models (not Haiku, Sonnet or Opus, and no <code>pricing</code> glob matches)."
                "</p></section>"
            )
        return ""
    head = (
        "<thead><tr><th>{}</th><th>calls</th><th>Anthropic would have charged</th><th>offload lane</th>"
        "<th>saved</th></tr></thead>"
    )
    session_rows = top_and_others(savings.get("by_session") or {})
    tables = "".join(
        f"<h3>{_e(title)}</h3><table>{head.format(_e(column))}<tbody>{_money_rows(rows)}</tbody></table>"
        for title, column, rows in (
            ("By day (UTC)", "day", list((savings.get("by_day") or {}).items())),
            ("By request class", "request class", list((savings.get("by_request_class") or {}).items())),
            ("By session (most saved first)", "session", session_rows),
        )
        if rows
    )
    overrides = (savings.get("prices") or {}).get("config_overrides") or []
    # Named, never linked: the page holds no URL.
    source = provenance(scheme=False) + (
        f"; config pricing first: {', '.join(overrides)}" if overrides else ""
    )
    return (
        '<section id="savings"><h2>What the offload saved</h2>'
        f'<p><strong data-saved="{_e(savings["saved_usd"])}">{_e(usd(savings["saved_usd"]))}</strong> saved '
        f"over {_e(savings['calls'])} priced calls: Anthropic would have charged "
        f"{_e(usd(savings['anthropic_cost_usd']))} for the requested models, the offload lanes cost "
        f"{_e(usd(savings['offload_cost_usd']))}.</p>"
        f'<p class="meta">{_e(source)}</p>{tables}</section>'
    )


def render_report(
    records: Iterable[Record],
    audit: Mapping[str, Any],
    window_start: datetime,
    window_end: datetime,
    default_lane: str | None = None,
    title: str = "ccmitm review",
    savings: Mapping[str, Any] | None = None,
) -> str:
    """The whole page from records (one pass). ``audit`` is ``VerifyReport.to_dict()``."""
    page = ReportPage()
    for record in records:
        page.add(record)
    return page.render(audit, window_start, window_end, default_lane, title, savings)
