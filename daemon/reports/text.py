"""The human views of the reports: aligned plain-text tables for ``summarize`` and ``verify``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ccmitm.core.refusals import hold_line
from ccmitm.reports.audit import OUTCOME_NOTHING, VerifyReport, proof_line
from ccmitm.reports.records import iso


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
    return text == "-" or bool(re.fullmatch(r"[\d.,$%-]+", text))


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
    local = (summary.get("answered_locally") or {}).get("by_reason") or {}
    if local:
        out.append("answered by ccmitm: " + ", ".join(f"{n} {reason}" for reason, n in local.items()))
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
        rows = [_session_row(label, row) for label, row in top_and_others(sessions)]
        out += [
            "",
            f"by Claude Code session ({sessions['count']} sessions, most calls first)",
            render_table(["session", "calls", "errors", "lanes", "request classes"], rows),
        ]

    holds = summary.get("holds") or {}
    if holds or summary.get("refusals"):
        out.append("")
        for cls, hold in holds.items():
            out.append(
                hold_line(cls, hold["calls"], hold["first_ts"], hold["last_ts"], summary["default_lane"])
            )
        refused = summary.get("refusals") or {}
        if refused:
            out.append("refused offload calls by class: " + ", ".join(f"{k} {v}" for k, v in refused.items()))

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
    savings = offload.get("savings") or {}
    if offload["estimated_cost_avoided_usd"] is not None:
        cost = offload["estimated_cost_avoided_usd"]
        out.append(f"estimated Anthropic cost avoided: {usd(cost)} ({offload['priced_calls']} priced calls)")
        if savings:
            out += _savings_lines(savings)
    elif offload["calls"]:
        out.append(
            "estimated Anthropic cost avoided: n/a (no Anthropic price for the requested models: "
            "not Haiku, Sonnet or Opus, and no `pricing` glob matches; see docs)"
        )
    if offload["unpriced_models"]:
        unpriced = ", ".join(f"{m} ({n})" for m, n in offload["unpriced_models"].items())
        out.append(f"unpriced models: {unpriced}")
    if savings and offload["estimated_cost_avoided_usd"] is not None:
        out += _savings_tables(savings)
    return "\n".join(out) + "\n"


def usd(value: float) -> str:
    """Dollars: cents from $1 up, six decimals below (a day of Haiku calls can cost $0.004)."""
    if value == 0:
        return "$0.00"
    return f"{'-' if value < 0 else ''}${abs(value):.{2 if abs(value) >= 1 else 6}f}"


def _savings_lines(savings: Mapping[str, Any]) -> list[str]:
    prices = savings.get("prices") or {}
    lanes = prices.get("lanes") or {}
    lane_prices = ", ".join(
        f"{lane}: {'prices for ' + ', '.join(how) if isinstance(how, list) else how}"
        for lane, how in lanes.items()
    )
    overrides = prices.get("config_overrides") or []
    return [
        f"offload lane cost: {usd(savings['offload_cost_usd'])}"
        + (f" ({lane_prices})" if lane_prices else ""),
        f"saved: {usd(savings['saved_usd'])} over {savings['calls']} priced calls "
        "(Anthropic's price for the requested model minus the lane's)",
        f"prices: {prices.get('provenance', '')}"
        + (f"; config `pricing` first: {', '.join(overrides)}" if overrides else ""),
    ]


def _money_row(label: str, row: Mapping[str, Any]) -> list[Any]:
    return [
        label,
        row["calls"],
        usd(row["anthropic_cost_usd"]),
        usd(row["offload_cost_usd"]),
        usd(row["saved_usd"]),
    ]


_MONEY_HEADERS = ["calls", "anthropic", "lane", "saved"]


def _savings_tables(savings: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    for title, key, column in (
        ("savings by day (UTC)", "by_day", "day"),
        ("savings by request class", "by_request_class", "request_class"),
    ):
        rows = [_money_row(name, row) for name, row in (savings.get(key) or {}).items()]
        if rows:
            out += ["", title, render_table([column, *_MONEY_HEADERS], rows)]
    sessions = savings.get("by_session") or {}
    if sessions.get("count"):
        rows = [_money_row(label, row) for label, row in top_and_others(sessions)]
        out += [
            "",
            f"savings by Claude Code session ({sessions['count']} sessions, most saved first)",
            render_table(["session", *_MONEY_HEADERS], rows),
        ]
    return out


def top_and_others(table: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """A ``{"top": [...], "others": {...}}`` session table as (label, row) pairs, the rest last."""
    rows: list[tuple[str, Mapping[str, Any]]] = [(row["session"], row) for row in table.get("top", [])]
    others = table.get("others") or {}
    if others.get("sessions"):
        rows.append((f"({others['sessions']} others)", others))
    return rows


def _session_row(label: str, row: Mapping[str, Any]) -> list[Any]:
    def counts(mapping: Mapping[str, int]) -> str:
        return " ".join(f"{key}:{value}" for key, value in mapping.items()) or "-"

    return [label, row["calls"], row["errors"], counts(row["lanes"]), counts(row["by_request_class"])]


def format_verify(report: VerifyReport, proof: bool = False) -> str:
    """The human view of :func:`verify`: headline, one line per check, the verdict (+ proof lines)."""
    out = [report.headline]
    if report.since:
        out.append(f"window: since {iso(report.since)}")
    nothing = report.outcome == OUTCOME_NOTHING
    for check in report.checks:
        # Over zero lines no check has held: NONE, so no line of the output reads as a pass.
        status = "NONE" if nothing else "PASS" if check.ok else "FAIL"
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
            status = "NONE" if nothing else "PASS" if check.ok else "FAIL"
            out.append(f"--- proof ({check.key}) {check.name}: {status}")
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
