"""Endurance evidence: the per-phase numbers (from the client and from the daemon's own usage log),
SUMMARY.md, TESTS.md, and writing them so that no secret can be left behind."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ccmitm import paths
from ccmitm.core.redact import redact_text
from ccmitm.core.stats import p50_p95
from ccmitm.endurance.calls import CallResult
from ccmitm.reports.records import UsageLines, parse_ts, since_filter
from ccmitm.reports.secretscan import scan_tree
from ccmitm.reports.summary import summarize


@dataclass
class CheckResult:
    name: str
    ok: bool | None  # None: skipped
    detail: str

    @property
    def label(self) -> str:
        return "SKIP" if self.ok is None else "PASS" if self.ok else "FAIL"


@dataclass
class RunResult:
    folder: Path
    checks: list[CheckResult]
    verify_verdict: str

    @property
    def passed(self) -> int:
        return sum(1 for c in self.checks if c.ok)

    @property
    def failed(self) -> int:
        return sum(1 for c in self.checks if c.ok is False)


def client_stats(calls: list[CallResult]) -> dict[str, dict[str, Any]]:
    """Per phase and lane family: calls, errors, p50/p95 of duration and time to first byte."""
    out: dict[str, dict[str, Any]] = {}
    for call_ in calls:
        out.setdefault(call_.phase, {}).setdefault(call_.family, []).append(call_)
    result: dict[str, dict[str, Any]] = {}
    for phase, families in out.items():
        result[phase] = {}
        for family, items in sorted(families.items()):
            durations = [c.duration_ms for c in items]
            ttfbs = [c.ttfb_ms for c in items if c.ttfb_ms is not None]
            errors = [c.error or "failed" for c in items if not c.ok]
            result[phase][family] = {
                "calls": len(items),
                "errors": len(errors),
                "duration_ms": p50_p95(durations),
                "ttfb_ms": p50_p95(ttfbs),
                "first_errors": errors[:5],
            }
    return result


def log_stats(
    logs_dir: Path, windows: Mapping[str, tuple[datetime, datetime]], default_lane: str
) -> dict[str, Any]:
    """Per phase and lane, from the daemon's own usage log (its view of the same calls)."""
    records = list(since_filter(UsageLines(logs_dir), min((w[0] for w in windows.values()), default=None)))
    result: dict[str, Any] = {}
    for phase, (start, end) in windows.items():
        inside = [r for r in records if (stamp := parse_ts(r.get("ts"))) and start <= stamp <= end]
        summary = summarize(inside, default_lane=default_lane)
        result[phase] = {
            lane: {k: data[k] for k in ("calls", "errors", "duration_ms", "ttfb_ms", "by_request_class")}
            for lane, data in summary["lanes"].items()
        }
    return result


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.0f}" if isinstance(value, float) else str(value)


def _row(phase: str, label: str, data: Mapping[str, Any]) -> str:
    cells = [
        phase,
        label,
        data["calls"],
        data["errors"],
        data["duration_ms"]["p50"],
        data["duration_ms"]["p95"],
    ]
    cells += [data["ttfb_ms"]["p50"], data["ttfb_ms"]["p95"]]
    return "| " + " | ".join(_fmt(cell) for cell in cells) + " |"


def _latency_table(kind: str, source: str, groups: Mapping[str, Mapping[str, Any]]) -> list[str]:
    out = [
        "",
        f"## Latency per phase and {kind} ({source})",
        "",
        f"| phase | {kind} | calls | errors | p50 ms | p95 ms | ttfb p50 | ttfb p95 |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for phase, rows in groups.items():
        out += [_row(phase, name, data) for name, data in rows.items()]
    return out


def render_summary(metrics: Mapping[str, Any], checks: list[CheckResult]) -> str:
    plan = metrics["plan"]
    counts = Counter(c.label for c in checks)
    out = [
        "# ccmitm endurance run",
        "",
        f"- started: {metrics['started']}  finished: {metrics['finished']}",
        f"- against: {plan['against']} ({metrics['target']})",
        f"- soak: {plan['minutes']:g} min of alternating Sonnet/Haiku streaming calls; parallel "
        f"{plan['parallel']}; burst {plan['burst']}; chaos {'on' if plan['chaos'] else 'off'}",
        f"- calls: {metrics['calls']['total']} ({metrics['calls']['failed']} failed)",
        f"- checks: {counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIP']} skipped (TESTS.md)",
        f"- verify: {metrics['verify']['verdict']}",
    ]
    out += _latency_table("lane", "the daemon's usage log", metrics["log"])
    out += _latency_table("model", "the client's view", metrics["client"])
    errors = [
        (phase, family, e)
        for phase, fs in metrics["client"].items()
        for family, d in fs.items()
        for e in d["first_errors"]
    ]
    out += ["", "## Errors", ""]
    out += [f"- {phase} / {family}: {error}" for phase, family, error in errors[:20]] or ["- none"]
    out += [
        "",
        "Files: TESTS.md (each check), METRICS.json (all numbers), VERIFY.txt (`ccctl verify --proof`).",
        "",
    ]
    return "\n".join(out)


def render_tests(checks: list[CheckResult]) -> str:
    out = ["# ccmitm endurance checks", "", "| result | check | detail |", "|---|---|---|"]
    out += [f"| {c.label} | {c.name} | {c.detail.replace('|', '/')} |" for c in checks]
    return "\n".join(out) + "\n"


def write_evidence(folder: Path, files: Mapping[str, str], keys: Mapping[str, str]) -> list[str]:
    """Write the files (scrubbed), then scan the folder; on any finding remove them and say where."""
    paths.ensure_private_dir(folder)
    for name, text in files.items():
        paths.write_private(folder / name, redact_text(text, keys).encode())
    findings = [str(f) for f in scan_tree(folder, keys)]
    if findings:
        for name in files:
            (folder / name).unlink(missing_ok=True)
    return findings
