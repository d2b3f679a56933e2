"""REPORT.html: the pure renderer on hand-made records, and the real page in headless Chromium."""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import tarfile
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from ccmitm.config.load import validate
from ccmitm.reports.audit import verify
from ccmitm.reports.html import choose_bucket, render_report
from tests.helpers import Daemon, post
from tests.reports.lines import HAIKU, SONNET, anthropic_line, line

START = datetime(2025, 6, 1, 0, 0, tzinfo=UTC)
END = START + timedelta(hours=24)
HOSTILE = '</script><img src=x onerror="alert(1)">'
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def at(minutes: int) -> str:
    return (START + timedelta(minutes=minutes)).isoformat(timespec="milliseconds")


def records() -> list[dict[str, Any]]:
    """Three hours of traffic: zai calls at 100/300 ms, anthropic at 900 ms, one failed call."""
    rows = [
        line(ts=at(10 + 60 * hour), duration_ms=100.0 + 200 * (i % 2)) for hour in range(3) for i in range(4)
    ]
    rows += [anthropic_line(ts=at(20 + 60 * hour), duration_ms=900.0) for hour in range(3)]
    rows.append(anthropic_line(ts=at(200), status=529, duration_ms=50.0, model=SONNET))
    return rows


def page(rows: list[dict[str, Any]], config_overrides: dict[str, Any] | None = None) -> str:
    config = validate(config_overrides or {})
    audit = verify(rows, config).to_dict()
    return render_report(rows, audit, START, END, config.routing.default_lane, title="bundle-x")


def test_charts_hold_the_counts_and_latencies() -> None:
    text = page(records())
    assert text.count('<svg class="chart"') == 2
    # Hourly buckets over 24 h: zai has 4 calls in each of hours 0..2, anthropic 1 (2 in hour 3).
    zai_bars = re.findall(r"<title>zai (\d\d:\d\d): (\d+) calls</title>", text)
    assert zai_bars == [("00:00", "4"), ("01:00", "4"), ("02:00", "4")]
    anthropic_bars = re.findall(r"<title>anthropic (\d\d:\d\d): (\d+) calls</title>", text)
    assert anthropic_bars == [("00:00", "1"), ("01:00", "1"), ("02:00", "1"), ("03:00", "1")]
    # Per-bucket latency points: zai p50 100 ms and p95 300 ms; anthropic 900 ms.
    assert text.count("<title>zai p50: 100 ms</title>") == 3
    assert text.count("<title>zai p95: 300 ms</title>") == 3
    assert text.count("<title>anthropic p95: 900 ms</title>") == 3
    # The per-lane table: calls, errors, p50, p95, tokens in/out.
    assert "<td>zai</td><td>12</td><td>0</td><td>100</td><td>300</td><td>132</td><td>84</td>" in text
    assert "<td>anthropic</td><td>4</td><td>1</td>" in text
    assert 'data-verdict="pass"' in text and "Routing audit: PASS" in text


def test_a_failed_audit_shows_fail_with_its_counts() -> None:
    rows = [*records(), anthropic_line(ts=at(30), model=HAIKU, reason="default", rule=None)]
    text = page(rows)
    assert 'data-verdict="fail"' in text and "Routing audit: FAIL" in text
    assert re.search(r"<td>FAIL</td><td>\d+</td><td>1</td>", text)


class Tags(HTMLParser):
    """Every element and attribute of a page, as a browser's tokenizer sees them."""

    def __init__(self, text: str):
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def test_everything_from_the_log_is_escaped_and_nothing_points_outside() -> None:
    rows = [line(ts=at(5), lane=HOSTILE, model=HOSTILE), line(ts=at(6), model=HOSTILE)]
    text = page(rows)
    assert HOSTILE not in text and html.escape(HOSTILE, quote=True) in text
    tags = Tags(text).tags
    assert not [tag for tag, _ in tags if tag in ("img", "iframe", "link", "object", "embed", "a")]
    assert [attrs for tag, attrs in tags if tag == "script"] == [{}, {}]  # the page's own two, inline
    assert not [attrs for _, attrs in tags if {"src", "href", "xlink:href", "onerror", "onload"} & set(attrs)]
    assert "http://" not in text and "https://" not in text


def test_an_empty_log_still_renders_both_charts() -> None:
    text = page([])
    assert text.count('<svg class="chart"') == 2
    assert text.count("no calls in this window") == 3  # both charts and the table
    assert "Routing audit: NOTHING TO AUDIT" in text and "Routing audit: PASS" not in text


def test_bucket_width_follows_the_window() -> None:
    assert choose_bucket(START, START + timedelta(hours=2)) == timedelta(minutes=5)
    assert choose_bucket(START, START + timedelta(hours=24)) == timedelta(hours=1)
    assert choose_bucket(START, START + timedelta(days=9)) == timedelta(hours=6)
    assert choose_bucket(START, START + timedelta(days=400)) == timedelta(days=7)


# --- in a real browser ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chromium() -> str:
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium missing in CI: .ci/run installs Debian's chromium package")
        pytest.skip("chromium not installed (apt-get install chromium)")
    return CHROMIUM


def dump_dom(chromium: str, page_path: Path, tmp_path: Path) -> str:
    """The DOM after the page's scripts ran, from headless Chromium; a screenshot for people."""
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=900,1400",
    ]
    url = page_path.resolve().as_uri()
    profile = tmp_path / f"profile-{page_path.stem}"
    result = subprocess.run(
        [chromium, *flags, f"--user-data-dir={profile}", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=90,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    subprocess.run(
        [
            chromium,
            *flags,
            f"--user-data-dir={profile}-shot",
            f"--screenshot={tmp_path / (page_path.stem + '.png')}",
            url,
        ],
        capture_output=True,
        timeout=90,
        stdin=subprocess.DEVNULL,
    )
    return result.stdout


def root_attributes(dom: str) -> dict[str, str]:
    tag = re.search(r"<html([^>]*)>", dom)
    assert tag, dom[:500]
    return dict(re.findall(r'([\w-]+)="([^"]*)"', tag.group(1)))


def test_the_browser_harness_sees_script_errors(chromium: str, tmp_path: Path) -> None:
    """The check below could not fail if a broken page also came out clean: prove it does not."""
    broken = page(records()).replace("</body>", "<script>notDefinedAnywhere();</script></body>")
    path = tmp_path / "broken.html"
    path.write_text(broken)
    attributes = root_attributes(dump_dom(chromium, path, tmp_path))
    assert attributes.get("data-errors") == "1"


def test_the_page_renders_in_chromium_with_both_charts(chromium: str, tmp_path: Path) -> None:
    path = tmp_path / "REPORT.html"
    path.write_text(page(records()))
    dom = dump_dom(chromium, path, tmp_path)
    attributes = root_attributes(dom)
    assert "data-errors" not in attributes, dom
    assert attributes["data-rendered"] == "ok" and attributes["data-charts"] == "2"
    assert '<pre id="errors"></pre>' in dom


@pytest.mark.e2e
def test_the_bundle_of_a_real_daemon_has_a_report_that_renders(
    daemon: Daemon, chromium: str, tmp_path: Path
) -> None:
    for model in (HAIKU, SONNET, HAIKU):
        assert post(daemon, model).status_code == 200
    daemon.wait_usage(3)
    result = daemon.ccctl("bundle", "--json", check=True)
    out = Path(__import__("json").loads(result.stdout)["path"])
    report = out / "REPORT.html"
    text = report.read_text()
    assert re.findall(r"<title>zai \d\d:\d\d: (\d+) calls</title>", text) == ["2"]
    assert re.findall(r"<title>anthropic \d\d:\d\d: (\d+) calls</title>", text) == ["1"]
    assert "Routing audit: PASS" in text and "http://" not in text and "https://" not in text
    with tarfile.open(str(out) + ".tgz") as archive:
        assert f"{out.name}/REPORT.html" in archive.getnames()

    attributes = root_attributes(dump_dom(chromium, report, tmp_path))
    assert "data-errors" not in attributes
    assert attributes["data-rendered"] == "ok" and attributes["data-charts"] == "2"
