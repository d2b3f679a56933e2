"""verify cannot be fooled: every line is either checked or reported, and ccmitm's own answers
(lane null) are checked as such and never counted as a lane."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from ccmitm.config.load import validate
from ccmitm.config.model import Config
from ccmitm.reports.audit import verify
from ccmitm.reports.html import render_report
from ccmitm.reports.records import UsageLines
from ccmitm.reports.summary import summarize
from ccmitm.reports.text import format_summary, format_verify
from tests.reports.lines import HAIKU, NOW, anthropic_line, line
from tests.reports.test_reports import CONFIG_DATA, ccctl, clean_log, write_config, write_log


@pytest.fixture
def config() -> Config:
    return validate(CONFIG_DATA)


def local_line(reason: str = "unauthenticated", **overrides: Any) -> dict[str, Any]:
    """A request ccmitm answered itself, as Router.answer_locally writes it."""
    base = {
        "lane": None,
        "rule": None,
        "reason": reason,
        "model": None,
        "upstream_model": None,
        "status": 407 if reason == "unauthenticated" else 400,
        "stream": False,
        "ttfb_ms": None,
        "input_tokens": None,
        "output_tokens": None,
        "cache_read_input_tokens": None,
        "cache_creation_input_tokens": None,
        "header_mode": "none",
        "upstream_http_version": None,
        "session": None,
        "error": "no client token",
    }
    return line(**{**base, **overrides})


def without(record: dict[str, Any], *names: str) -> dict[str, Any]:
    return {key: value for key, value in record.items() if key not in names}


def test_a_haiku_completion_on_anthropic_without_method_and_path_fails(config: Config) -> None:
    # Without method and path it cannot be told whether this was a Messages call, so check (a)
    # cannot judge it: that must be a finding, not a pass.
    bad = without(anthropic_line(model=HAIKU, upstream_model=HAIKU), "method", "path")
    report = verify([*clean_log(), bad], config)
    assert not report.ok and report.exit_code == 1
    failed = [c for c in report.checks if not c.ok]
    assert [(c.key, c.name) for c in failed] == [("e", "classifiable")]
    assert failed[0].violations == [bad] and failed[0].detail == {"missing method, path": 1}
    text = format_verify(report, proof=True)
    assert "[FAIL] (e) classifiable" in text and bad["id"] in text


@pytest.mark.parametrize("field", ["lane", "model", "path", "method", "header_mode", "status"])
def test_a_line_missing_a_field_a_check_needs_is_unclassifiable(config: Config, field: str) -> None:
    bad = without(line(), field)
    report = verify([line(), bad], config)
    assert [c.key for c in report.checks if not c.ok] == ["e"]
    [check] = [c for c in report.checks if c.key == "e"]
    assert check.violation_count == 1 and check.detail == {f"missing {field}": 1}
    assert check.checked == 2  # both lines were looked at; one could be read
    # A value of the wrong shape is no better than none.
    wrong = line(**{field: ["not", "a", "value"]})
    assert not verify([wrong], config).ok


def test_nulls_the_daemon_writes_are_readings_not_gaps(config: Config) -> None:
    # A connect failure has no status, a GET no model: the checks judge those lines themselves.
    report = verify(clean_log(), config)
    assert report.ok
    [check] = [c for c in report.checks if c.key == "e"]
    assert (check.checked, check.violation_count, check.evidence_count) == (10, 0, 10)


def test_a_garbage_line_is_counted_and_shown(tmp_path: Path) -> None:
    config_path = write_config(tmp_path)
    logs = tmp_path / "logs"
    write_log(logs, clean_log())
    with open(logs / "usage.jsonl", "a") as handle:
        handle.write("this is not json\n[1, 2]\n")
    result = ccctl(config_path, "verify", "--proof")
    assert result.exit_code == 1, result.output
    assert "[FAIL] (e) classifiable" in result.output and "unparseable line 2" in result.output
    proof = result.output.split("--- proof (e)", 1)[1]
    assert "  this is not json\n" in proof and "  [1, 2]\n" in proof
    data = json.loads(ccctl(config_path, "verify", "--json").output)
    assert data["unparseable"] == 2 and data["exit_code"] == 1
    [check_e] = [c for c in data["checks"] if c["key"] == "e"]
    assert check_e["violations"] == 2 and check_e["checked"] == 12


def test_a_log_of_nothing_but_garbage_fails_rather_than_has_nothing_to_audit(tmp_path: Path) -> None:
    config_path = write_config(tmp_path)
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "usage.jsonl").write_text("garbage\n")
    result = ccctl(config_path, "verify")
    assert result.exit_code == 1 and "FAIL: 1 violation(s) in (e) classifiable" in result.output


def test_unparseable_lines_count_in_the_window_of_their_neighbours(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    old = (NOW - timedelta(days=3)).isoformat()
    write_log(logs, [line(ts=old), line(ts=old)])
    text = (logs / "usage.jsonl").read_text().splitlines()
    recent = json.dumps(line())
    # Garbage between two old lines is outside a 24 h window; after a recent line it is inside.
    (logs / "usage.jsonl").write_text(
        "\n".join([text[0], "old garbage", text[1], recent, "new garbage"]) + "\n"
    )
    lines = UsageLines(logs, since=NOW - timedelta(hours=24))
    assert len(list(lines)) == 1
    assert (lines.skipped, lines.unparseable) == (1, ["new garbage"])
    lines = UsageLines(logs)
    assert len(list(lines)) == 3 and lines.skipped == 2


# --- lines ccmitm answered itself ----------------------------------------------------------------
def test_local_answers_are_checked_and_reported_apart(config: Config) -> None:
    local = [local_line(), local_line(), local_line("rejected")]
    report = verify([*clean_log(), *local], config)
    assert report.ok, format_verify(report)
    [check_f] = [c for c in report.checks if c.key == "f"]
    assert (check_f.checked, check_f.violation_count) == (3, 0)
    assert report.headline.endswith("; answered by ccmitm: 1 rejected, 2 unauthenticated")
    # They are no routing decision and no lane's completion.
    assert (report.decisions, report.offloaded) == (9, 3)
    assert "unknown" not in report.by_lane and None not in report.by_lane


LOCAL_PLANTED = {
    "a 200 without a lane": local_line(status=200),
    "a 5xx without a lane": local_line(status=502),
    "no status at all": local_line(status=None),
    "tokens without a lane": local_line(input_tokens=5),
    "a key header without a lane": local_line(header_mode="x-api-key"),
    "lane null with a routing reason": local_line(reason="rule", status=400),
}


@pytest.mark.parametrize("case", list(LOCAL_PLANTED))
def test_a_local_answer_of_the_wrong_shape_fails_check_f(config: Config, case: str) -> None:
    bad = LOCAL_PLANTED[case]
    report = verify([*clean_log(), local_line(), bad], config)
    assert [c.key for c in report.checks if not c.ok] == ["f"]
    [check_f] = [c for c in report.checks if c.key == "f"]
    assert check_f.violations == [bad]


def test_summaries_count_local_answers_separately_never_as_a_lane(config: Config) -> None:
    records = [line(), anthropic_line(), local_line(), local_line(), local_line("rejected")]
    result = summarize(records, pricing=config.pricing)
    assert set(result["lanes"]) == {"zai", "anthropic"}
    assert result["answered_locally"] == {"calls": 3, "by_reason": {"rejected": 1, "unauthenticated": 2}}
    assert result["totals"]["calls"] == 2 and result["window"]["records"] == 5
    assert set(result["by_header_mode"]) == {"x-api-key", "passthrough"}
    assert result["offload"]["calls"] == 1
    assert "answered by ccmitm: 1 rejected, 2 unauthenticated" in format_summary(result)

    audit = verify(records, config).to_dict()
    page = render_report(records, audit, NOW - timedelta(hours=1), NOW)
    assert "Answered by ccmitm (no lane contacted): 1 rejected, 2 unauthenticated" in page
    assert "<td>unknown</td>" not in page
