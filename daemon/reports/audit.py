"""``ccctl verify``: the routing and header-hygiene audit of the usage log.

The audit reads only the log lines and the config, and re-derives from each line what the router
should have done (is it a Haiku Messages call? does a rule's glob explain its lane?) instead of
calling the router's own code: a bug in the router must show up as a finding, not agree with itself.
A line that cannot be checked is reported, never silently passed.
"""

from __future__ import annotations

import fnmatch
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from ccmitm.config.model import Config
from ccmitm.core.redact import redact_text
from ccmitm.core.routing import OVERRIDE_REASONS, Reason
from ccmitm.reports.records import Record, is_error, iso, key_of, since_filter

#: The header modes a keyed lane may log; "passthrough" is the only one an unkeyed lane may log.
KEYED_HEADER_MODES = frozenset({"x-api-key", "authorization"})
PASSTHROUGH = "passthrough"
#: Proof lines kept per check (violations and evidence each); counts are always exact.
DEFAULT_PROOF_KEEP = 200

#: ``ccctl verify``'s exit codes. 2 (the logs dir or file does not exist) is the CLI's own; an
#: audit over zero lines has its own code so a script never mistakes "nothing seen" for a pass.
EXIT_PASS = 0
EXIT_FAIL = 1
EXIT_NOTHING = 3

#: The three verdicts: every check held over at least one line, a check broke, or no line to check.
Outcome = Literal["pass", "fail", "nothing to audit"]
OUTCOME_PASS: Outcome = "pass"
OUTCOME_FAIL: Outcome = "fail"
OUTCOME_NOTHING: Outcome = "nothing to audit"


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
    def outcome(self) -> Outcome:
        """pass, fail, or nothing to audit: zero lines prove nothing, so they never read as a pass."""
        if not all(check.ok for check in self.checks):
            return OUTCOME_FAIL
        return OUTCOME_NOTHING if self.records == 0 else OUTCOME_PASS

    @property
    def ok(self) -> bool:
        """Passed: no violation over at least one usage line."""
        return self.outcome == OUTCOME_PASS

    @property
    def exit_code(self) -> int:
        return {OUTCOME_PASS: EXIT_PASS, OUTCOME_FAIL: EXIT_FAIL}.get(self.outcome, EXIT_NOTHING)

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
        if self.outcome == OUTCOME_NOTHING:
            window = f" since {iso(self.since)}" if self.since else ""
            return f"NOTHING TO AUDIT: no usage lines{window}, so nothing is proven (not a pass)"
        if self.ok:
            return f"PASS: routing and header hygiene hold over {self.records} usage lines"
        failed = [c for c in self.checks if not c.ok]
        total = sum(c.violation_count for c in failed)
        names = ", ".join(f"({c.key}) {c.name}" for c in failed)
        return f"FAIL: {total} violation(s) in {names}"

    def to_dict(self, proof: bool = False) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "outcome": self.outcome,
            "exit_code": self.exit_code,
            "headline": self.headline,
            "verdict": self.verdict,
            "since": iso(self.since),
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
        lane = key_of(record.get("lane"))
        model = record.get("model")
        header = record.get("header_mode")
        reason = key_of(record.get("reason"))
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
            b.detail[f"{lane} {key_of(header)}"] += 1
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
                    d.detail[f"{key_of(model)} unexplained"] += 1
                    d.violate(record)
        elif lane in unkeyed:
            # (c) a lane that passes the client's credentials must never have had a key attached.
            c.checked += 1
            c.detail[f"{lane} {key_of(header)}"] += 1
            if header == PASSTHROUGH:
                c.support(record)
            else:
                c.violate(record)
        else:
            unknown_lanes[lane] += 1

    if unknown_lanes:
        listed = ", ".join(f"{lane} ({n})" for lane, n in sorted(unknown_lanes.items()))
        report.notes.append(
            f"lines on lanes not in the current config were not audited for headers: {listed}"
        )
    if stale_rules:
        listed = ", ".join(f"{glob} ({n})" for glob, n in sorted(stale_rules.items()))
        report.notes.append(f"lines explained by rules no longer in the config: {listed}")
    return report
