"""Holds in the reports: verify counts lane_hold as explained; summarize and REPORT.html
say in plain words what the hold sent where."""

from __future__ import annotations

from datetime import timedelta

from ccmitm.config.load import validate
from ccmitm.reports.audit import verify
from ccmitm.reports.html import render_report
from ccmitm.reports.summary import summarize
from ccmitm.reports.text import format_summary
from tests.reports.lines import HAIKU, NOW, anthropic_line, line
from tests.reports.test_reports import CONFIG_DATA


def held_log() -> list[dict]:
    refused = line(status=429, error="refused with 429; failed over to anthropic", refusal="quota")
    held = dict(model=HAIKU, upstream_model=HAIKU, rule="*haiku*", reason="lane_hold", hold="quota")
    return [
        refused,
        anthropic_line(
            model=HAIKU, upstream_model=HAIKU, rule="*haiku*", reason="failover", attempt_of=refused["id"]
        ),
        anthropic_line(**held),
        anthropic_line(**held),
    ]


def test_verify_passes_over_a_log_with_holds() -> None:
    report = verify(held_log(), validate(CONFIG_DATA))
    assert report.ok, report.to_dict()


def test_summarize_names_the_hold_in_plain_words() -> None:
    summary = summarize(held_log())
    assert summary["holds"]["quota"]["calls"] == 2
    assert summary["refusals"] == {"quota": 1}
    text = format_summary(summary)
    assert "held (quota): 2 calls went to anthropic from " in text
    assert "the offload lane's quota was used up" in text


def test_the_report_page_has_an_offload_held_block() -> None:
    audit = verify(held_log(), validate(CONFIG_DATA)).to_dict()
    page = render_report(held_log(), audit, NOW - timedelta(hours=1), NOW, "anthropic")
    assert '<ul id="holds"><li>held (quota): 2 calls went to anthropic' in page
    assert "Offload held" not in render_report([line()], audit, NOW - timedelta(hours=1), NOW, "anthropic")
