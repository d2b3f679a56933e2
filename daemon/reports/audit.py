"""``ccctl verify``: the routing and header-hygiene audit of the usage log.

The audit reads only the log lines and the config, and re-derives from each line what the router
should have done (is it a Haiku Messages call? does a rule's glob explain its lane?) instead of
calling the router's own code: a bug in the router must show up as a finding, not agree with itself.
A line that cannot be checked is reported, never silently passed.
"""

from __future__ import annotations

import fnmatch
import json
import operator
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from ccmitm.config.model import Config
from ccmitm.core.redact import redact_text
from ccmitm.core.routing import LOCAL_REASONS, OVERRIDE_REASONS, Reason
from ccmitm.logs.usage import TOKEN_FIELDS
from ccmitm.reports.records import Record, UsageLines, iso, key_of, parse_ts

#: The header modes a keyed lane may log; "passthrough" is the only one an unkeyed lane may log.
KEYED_HEADER_MODES = frozenset({"x-api-key", "authorization"})
PASSTHROUGH = "passthrough"
#: The header mode of a line ccmitm answered itself (no lane, so no credential went anywhere).
LOCAL_HEADER_MODE = "none"
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
    violations: list[Record | str] = field(default_factory=list)  # a str: a line that did not parse
    evidence_count: int = 0
    evidence: list[Record] = field(default_factory=list)
    detail: Counter[str] = field(default_factory=Counter)
    keep: int = DEFAULT_PROOF_KEEP

    @property
    def ok(self) -> bool:
        return self.violation_count == 0

    def violate(self, record: Record | str) -> None:
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
    local: Counter[str] = field(default_factory=Counter)  # answered by ccmitm, by reason
    unparseable: int = 0
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    since: datetime | None = None

    @property
    def outcome(self) -> Outcome:
        """pass, fail, or nothing to audit: zero lines prove nothing, so they never read as a pass."""
        if not all(check.ok for check in self.checks):
            return OUTCOME_FAIL
        return OUTCOME_NOTHING if self.records + self.unparseable == 0 else OUTCOME_PASS

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
        local = ", ".join(f"{n} {reason}" for reason, n in sorted(self.local.items()))
        return (
            f"{self.offloaded} of {self.decisions} decisions went to the offload lanes ({lanes}); "
            f"completions by lane: {completions or 'none'}"
            + (f"; answered by ccmitm: {local}" if local else "")
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
            "answered_locally": dict(sorted(self.local.items())),
            "unparseable": self.unparseable,
            "checks": [check.to_dict(proof) for check in self.checks],
            "notes": self.notes,
        }


def proof_line(record: Record | str) -> str:
    """A record as its compact log line (an unparseable line as it was). Usage lines hold no
    secrets; scrubbed anyway, in case."""
    if isinstance(record, str):
        return redact_text(record)
    return redact_text(json.dumps(dict(record), separators=(",", ":"), ensure_ascii=False, default=str))


def _is_text(value: Any) -> bool:
    return isinstance(value, str) and value != ""


def _is_status(value: Any) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool))


def missing_fields(record: Record) -> list[str]:
    """The fields a check needs that this line lacks or holds in a shape no check can read.

    A null model, header mode or status is a reading (no model sent, no header recorded, no
    response): the checks judge those. An absent key, or a value of the wrong type, is not."""
    missing = []
    lane = record.get("lane")
    if "lane" not in record or not (lane is None or _is_text(lane)):
        missing.append("lane")
    for name in ("method", "path"):
        if not _is_text(record.get(name)):
            missing.append(name)
    for name in ("model", "header_mode"):
        if name not in record or not (record[name] is None or isinstance(record[name], str)):
            missing.append(name)
    if "status" not in record or not _is_status(record["status"]):
        missing.append("status")
    return missing


_pick_checked = operator.itemgetter("lane", "method", "path", "model", "header_mode", "status")
_ABSENT = object()  # a field the line does not have at all


class Audit:
    """The audit as a consumer of records: ``add`` each line, ``add_unparseable`` what did not
    parse, then ``report``. One pass; it keeps counts and at most ``keep`` proof lines per check."""

    def __init__(self, config: Config, since: datetime | None = None, keep: int = DEFAULT_PROOF_KEEP):
        default = config.routing.default_lane
        self.default = default
        self.keyed = {name for name, lane in config.lanes.items() if lane.keyed}
        self.unkeyed = {name for name, lane in config.lanes.items() if not lane.keyed}
        self.rule_globs = {rule.match for rule in config.routing.rules}
        self.override = {str(reason) for reason in OVERRIDE_REASONS}
        self.local_reasons = {str(reason) for reason in LOCAL_REASONS}
        self.since = since if since is None or since.tzinfo else since.replace(tzinfo=UTC)
        self.report = VerifyReport(
            default_lane=default,
            offload_lanes=sorted(name for name in config.lanes if name != default),
            since=since,
        )
        override = ", ".join(sorted(self.override))
        self.a = Check(
            "a",
            "haiku-offloaded",
            f"no Haiku Messages call completed on the default lane ({default}) without an override "
            f"reason ({override})",
            keep=keep,
        )
        self.b = Check(
            "b",
            "keyed-header-mode",
            "every keyed-lane line carries its lane key's header mode (x-api-key or authorization)",
            keep=keep,
        )
        self.c = Check(
            "c",
            "passthrough-only",
            "every default/unkeyed-lane line is passthrough: no lane key ever sent there",
            keep=keep,
        )
        self.d = Check(
            "d",
            "rule-explained",
            "every non-Haiku model on a keyed lane was sent there by a rule whose glob matches it",
            keep=keep,
        )
        self.e = Check(
            "e",
            "classifiable",
            "every line parses and has the fields the checks need (lane, model, method, path, "
            "header_mode, status)",
            keep=keep,
        )
        self.f = Check(
            "f",
            "local-answers",
            "every line without a lane was answered by ccmitm itself ("
            + ", ".join(sorted(self.local_reasons))
            + "): a 4xx status, no tokens, no credential header",
            keep=keep,
        )
        self.report.checks = [self.a, self.b, self.c, self.d, self.e, self.f]
        self.unknown_lanes: Counter[str] = Counter()
        self.stale_rules: Counter[str] = Counter()

    def add(self, record: Record) -> None:
        report = self.report
        if self.since is not None:
            stamp = parse_ts(record.get("ts"))
            if stamp is None or stamp < self.since:
                return
        report.records += 1
        e = self.e
        e.checked += 1
        try:
            lane, method, path, model, header, status = _pick_checked(record)
        except KeyError:
            lane = method = path = model = header = status = _ABSENT
        readable = (
            (lane is None or (type(lane) is str and lane != ""))
            and type(method) is str
            and method != ""
            and type(path) is str
            and path != ""
            and (model is None or type(model) is str)
            and (header is None or type(header) is str)
            and (status is None or type(status) is int)
        )
        if not readable:
            # A line no check can read is a finding of its own, never a silent pass.
            missing = missing_fields(record)
            e.detail["missing " + ", ".join(missing)] += 1
            e.violate(record)
            return
        e.evidence_count += 1  # counted, not kept: every other check's proof shows such lines
        reason = key_of(record.get("reason"))
        if lane is None:
            self._local(record, reason, header)
            return
        outcome = report.by_lane.get(lane)
        if outcome is None:
            outcome = report.by_lane[lane] = Counter({"calls": 0, "ok": 0, "failed": 0})
        outcome["calls"] += 1
        failed = record.get("error") is not None or status is None or status >= 400
        outcome["failed" if failed else "ok"] += 1
        if not record.get("attempt_of"):
            report.decisions += 1
            if lane != self.default:
                report.offloaded += 1

        # (a) Haiku must leave the default lane unless something overrode the rule.
        if is_haiku(model) and is_messages_call(record):
            a = self.a
            a.checked += 1
            if lane == self.default and reason not in self.override:
                a.detail[f"on {lane} without override"] += 1
                a.violate(record)
            else:
                a.detail[f"on {lane}" if lane != self.default else f"on {lane} ({reason})"] += 1
                a.support(record)

        if lane in self.keyed:
            # (b) a keyed lane always sends its own key in a named header.
            b = self.b
            b.checked += 1
            b.detail[f"{lane} {key_of(header)}"] += 1
            if header in KEYED_HEADER_MODES:
                b.support(record)
            else:
                b.violate(record)
            # (d) only a rule may bring a non-Haiku model to a keyed lane.
            if not is_haiku(model):
                d = self.d
                d.checked += 1
                rule = record.get("rule")
                explained = isinstance(rule, str) and isinstance(model, str) and glob_matches(rule, model)
                if explained:
                    d.detail[f"{model} by rule {rule}"] += 1
                    if rule not in self.rule_globs:
                        self.stale_rules[str(rule)] += 1
                    d.support(record)
                else:
                    d.detail[f"{key_of(model)} unexplained"] += 1
                    d.violate(record)
        elif lane in self.unkeyed:
            # (c) a lane that passes the client's credentials must never have had a key attached.
            c = self.c
            c.checked += 1
            c.detail[f"{lane} {key_of(header)}"] += 1
            if header == PASSTHROUGH:
                c.support(record)
            else:
                c.violate(record)
        else:
            self.unknown_lanes[lane] += 1

    def _local(self, record: Record, reason: str, header: Any) -> None:
        """(f) a line with no lane: ccmitm answered it, so a refusal, nothing counted, no key sent."""
        f = self.f
        f.checked += 1
        status = record["status"]
        problems = []
        if reason not in self.local_reasons:
            problems.append(f"reason {reason}")
        if not (isinstance(status, int) and 400 <= status < 500):
            problems.append(f"status {key_of(status)}")
        if any(record.get(name) for name in TOKEN_FIELDS):
            problems.append("tokens")
        if header != LOCAL_HEADER_MODE:
            problems.append(f"header_mode {key_of(header)}")
        if problems:
            f.detail["lane null with " + ", ".join(problems)] += 1
            f.violate(record)
            return
        self.report.local[reason] += 1
        f.detail[reason] += 1
        f.support(record)

    def add_unparseable(self, count: int, lines: Iterable[str] = ()) -> None:
        """Lines that did not parse as a usage record: each one a violation of (e)."""
        if not count:
            return
        e = self.e
        e.checked += count
        e.detail["unparseable line"] += count
        self.report.unparseable += count
        kept = list(lines)
        for text in kept:
            e.violate(text)
        # Only the first few are kept as text; the rest still count.
        e.violation_count += count - len(kept)

    def finish(self) -> VerifyReport:
        report = self.report
        if self.unknown_lanes:
            listed = ", ".join(f"{lane} ({n})" for lane, n in sorted(self.unknown_lanes.items()))
            report.notes.append(
                f"lines on lanes not in the current config were not audited for headers: {listed}"
            )
        if self.stale_rules:
            listed = ", ".join(f"{glob} ({n})" for glob, n in sorted(self.stale_rules.items()))
            report.notes.append(f"lines explained by rules no longer in the config: {listed}")
        return report


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
    (d) every non-Haiku model on a keyed lane is explained by the rule that sent it there;
    (e) every line could be checked: it parsed and has the fields the checks read;
    (f) every line without a lane is one of ccmitm's own refusals (4xx, no tokens).

    Given :class:`UsageLines`, the lines that did not parse count too (check e).
    """
    audit = Audit(config, since=since, keep=keep)
    for record in records:
        audit.add(record)
    if isinstance(records, UsageLines):
        audit.add_unparseable(records.skipped, records.unparseable)
    return audit.finish()
