"""summarize and verify: hand-made logs with known numbers and planted violations, then real traffic.

The hand-made lines have every field the daemon writes (see ccmitm.logs.usage.UsageRecord); a test
changes only what it is about.
"""

from __future__ import annotations

import gzip
import json
import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from ccmitm.cli.main import main
from ccmitm.config.load import validate
from ccmitm.config.model import Config
from ccmitm.core.stats import percentile
from ccmitm.reports.audit import verify
from ccmitm.reports.records import UsageLines, parse_duration
from ccmitm.reports.summary import summarize
from ccmitm.reports.text import format_summary, format_verify
from tests.helpers import ALL_SECRETS, Daemon, post
from tests.reports.lines import HAIKU, NOW, SONNET, anthropic_line, line

CONFIG_DATA: dict[str, Any] = {
    "routing": {
        "default_lane": "anthropic",
        "rules": [{"match": "*haiku*", "lane": "zai", "model": "glm-4.5-air"}],
    },
    "lanes": {
        "anthropic": {"url": "https://api.anthropic.com"},
        "zai": {"url": "https://api.z.ai/api/anthropic", "api_key_env": "ZAI_API_KEY"},
    },
    "pricing": {"*haiku*": {"input_per_mtok": 1.0, "output_per_mtok": 5.0}},
}


@pytest.fixture
def config() -> Config:
    return validate(CONFIG_DATA)


def clean_log() -> list[dict[str, Any]]:
    """Every legitimate way a line can look: offloaded Haiku, Sonnet at home, overrides, count_tokens."""
    failed_first = line(status=None, error="connect failure", input_tokens=None, output_tokens=None)
    return [
        line(),
        line(header_mode="authorization"),
        anthropic_line(),
        anthropic_line(model=HAIKU, upstream_model=HAIKU, rule="*haiku*", reason="paused"),
        anthropic_line(model=HAIKU, upstream_model=HAIKU, rule="*haiku*", reason="lane_unavailable"),
        anthropic_line(model=HAIKU, upstream_model=HAIKU, rule="*haiku*", reason="breaker"),
        failed_first,
        anthropic_line(
            model=HAIKU,
            upstream_model=HAIKU,
            rule="*haiku*",
            reason="failover",
            attempt_of=failed_first["id"],
        ),
        anthropic_line(model=HAIKU, path="/v1/messages/count_tokens", reason="count_tokens", stream=False),
        anthropic_line(method="GET", path="/api/claude_code/settings", model=None, upstream_model=None),
    ]


def write_log(logs_dir: Path, records: list[dict[str, Any]], name: str = "usage.jsonl") -> Path:
    logs_dir.mkdir(parents=True, exist_ok=True)
    path = logs_dir / name
    text = "".join(json.dumps(r) + "\n" for r in records)
    if name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def write_config(tmp_path: Path, **extra: Any) -> Path:
    data = {**CONFIG_DATA, "logs": {"dir": str(tmp_path / "logs")}, **extra}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def ccctl(config_path: Path, *args: str) -> Any:
    return CliRunner().invoke(main, ["--config", str(config_path), *args], catch_exceptions=False)


# --- verify ----------------------------------------------------------------------------------------
def test_a_clean_log_passes(config: Config) -> None:
    report = verify(clean_log(), config)
    assert report.ok and report.exit_code == 0
    assert [c.ok for c in report.checks] == [True] * 6
    # 10 lines, 9 decisions (the failover retry belongs to its first attempt), 3 of them to zai.
    assert (report.records, report.decisions, report.offloaded) == (10, 9, 3)
    assert report.headline.startswith(
        "3 of 9 decisions went to the offload lanes (zai); completions by lane:"
    )
    assert "zai 3 (2 ok, 1 failed)" in report.headline
    assert "anthropic 7 (7 ok, 0 failed)" in report.headline
    # count_tokens and the GET are not Haiku Messages calls; the rest are.
    haiku_check = report.checks[0]
    assert haiku_check.checked == 7
    text = format_verify(report)
    assert text.count("[PASS]") == 6 and "[FAIL]" not in text
    assert text.rstrip().splitlines()[-1].startswith("PASS")


PLANTED = {
    "a: Haiku on the default lane, no override": (
        "a",
        anthropic_line(model="Claude-3-5-HAIKU-latest", upstream_model="Claude-3-5-HAIKU-latest"),
    ),
    "b: keyed lane logged as passthrough": ("b", line(header_mode="passthrough")),
    "b: keyed lane without header_mode": ("b", line(header_mode=None)),
    "c: lane key sent to the default lane (x-api-key)": ("c", anthropic_line(header_mode="x-api-key")),
    "c: lane key sent to the default lane (Bearer)": ("c", anthropic_line(header_mode="authorization")),
    "d: sonnet on zai, rule does not match it": ("d", line(model=SONNET, upstream_model=SONNET)),
    "d: sonnet on zai without a rule": ("d", line(model=SONNET, upstream_model=SONNET, rule=None)),
}


@pytest.mark.parametrize("case", list(PLANTED))
def test_each_planted_violation_fails_verify_and_is_named(config: Config, case: str) -> None:
    key, bad = PLANTED[case]
    report = verify([*clean_log(), bad], config)
    assert not report.ok and report.exit_code == 1
    failed = [c for c in report.checks if not c.ok]
    assert [c.key for c in failed] == [key]
    assert failed[0].violation_count == 1 and failed[0].violations == [bad]
    text = format_verify(report, proof=True)
    assert f"[FAIL] ({key}) {failed[0].name}" in text
    assert f"FAIL: 1 violation(s) in ({key}) {failed[0].name}" in text
    assert bad["id"] in text  # the proof shows the offending line


def test_a_rule_explains_other_models_on_a_keyed_lane(config: Config) -> None:
    ok = line(model=SONNET, upstream_model="glm-4.6", rule="claude-SONNET-*")
    report = verify([ok], config)
    assert report.ok
    # The rule is not in the current config: still explained by the line, but worth a note.
    assert any("no longer in the config" in note and "claude-SONNET-*" in note for note in report.notes)


def test_lines_on_unknown_lanes_are_reported_not_hidden(config: Config) -> None:
    report = verify([line(lane="old-lane")], config)
    assert report.ok
    assert any("old-lane (1)" in note for note in report.notes)


def test_verify_since_ignores_older_violations(config: Config) -> None:
    old = anthropic_line(header_mode="x-api-key", ts=(NOW - timedelta(days=3)).isoformat())
    assert not verify([old, line()], config).ok
    assert verify([old, line()], config, since=NOW - timedelta(days=1)).ok


def test_verify_cli_exit_codes_proof_and_json(tmp_path: Path) -> None:
    config_path = write_config(tmp_path)
    write_log(tmp_path / "logs", clean_log())
    result = ccctl(config_path, "verify")
    assert result.exit_code == 0, result.output
    assert "3 of 9 decisions" in result.output

    bad = anthropic_line(header_mode="x-api-key")
    write_log(tmp_path / "logs", [*clean_log(), bad])
    result = ccctl(config_path, "verify")
    assert result.exit_code == 1
    assert "[FAIL] (c) passthrough-only" in result.output
    assert bad["id"] not in result.output  # proof lines only on request

    result = ccctl(config_path, "verify", "--proof")
    assert result.exit_code == 1
    proof = result.output.split("--- proof (c)", 1)[1].split("--- proof (d)", 1)[0]
    assert json.dumps(bad, separators=(",", ":")) in proof

    result = ccctl(config_path, "verify", "--json", "--proof")
    assert result.exit_code == 1
    data = json.loads(result.output)
    assert data["ok"] is False and data["exit_code"] == 1
    [check_c] = [c for c in data["checks"] if c["key"] == "c"]
    assert check_c["violations"] == 1
    assert [json.loads(p)["id"] for p in check_c["proof"]["violations"]] == [bad["id"]]


def test_verify_on_zero_lines_is_nothing_to_audit_never_pass(tmp_path: Path, config: Config) -> None:
    report = verify([], config)
    assert not report.ok and report.outcome == "nothing to audit" and report.exit_code == 3
    assert report.verdict.startswith("NOTHING TO AUDIT")
    text = format_verify(report, proof=True)
    assert "PASS" not in text and text.count("[NONE]") == 6

    (tmp_path / "logs").mkdir()  # the dir exists, the log has no line yet
    config_path = write_config(tmp_path)
    result = ccctl(config_path, "verify")
    assert result.exit_code == 3, result.output
    assert "0 of 0 decisions" in result.output and "NOTHING TO AUDIT" in result.output
    assert "PASS" not in result.output
    data = json.loads(ccctl(config_path, "verify", "--json").output)
    assert data["ok"] is False and data["outcome"] == "nothing to audit" and data["exit_code"] == 3

    # Lines that all fall outside the window are nothing to audit as well.
    write_log(tmp_path / "logs", [line(ts=(NOW - timedelta(days=30)).isoformat())])
    result = ccctl(config_path, "verify", "--since", "1h")
    assert result.exit_code == 3 and "NOTHING TO AUDIT: no usage lines since" in result.output


@pytest.mark.parametrize("command", ["verify", "summarize"])
def test_a_logs_dir_that_does_not_exist_exits_2(tmp_path: Path, command: str) -> None:
    config_path = write_config(tmp_path)  # logs.dir is tmp_path/logs, never created
    missing = tmp_path / "nonexistent"
    result = CliRunner().invoke(main, ["--config", str(config_path), command, "--logs-dir", str(missing)])
    assert result.exit_code == 2, result.output
    assert f"--logs-dir {missing} does not exist" in result.output and "PASS" not in result.output
    result = CliRunner().invoke(main, ["--config", str(config_path), command])
    assert result.exit_code == 2, result.output
    assert f"logs.dir {tmp_path / 'logs'} does not exist" in result.output


def test_logs_dir_may_name_one_usage_file(tmp_path: Path) -> None:
    config_path = write_config(tmp_path)
    path = write_log(tmp_path / "elsewhere", clean_log(), name="usage.jsonl.3.gz")
    result = ccctl(config_path, "verify", "--logs-dir", str(path))
    assert result.exit_code == 0, result.output
    assert "3 of 9 decisions" in result.output and "PASS: routing and header hygiene hold" in result.output
    data = json.loads(ccctl(config_path, "summarize", "--json", "--logs-dir", str(path)).output)
    assert data["totals"]["calls"] == 10 and data["window"]["files"] == [str(path)]


# --- summarize -------------------------------------------------------------------------------------
def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 50) is None
    assert percentile([7.0], 95) == 7.0
    values = [float(v) for v in range(10, 0, -1)]  # unsorted on purpose
    assert percentile(values, 50) == 5.0
    assert percentile(values, 95) == 10.0
    assert percentile([100.0, 200.0, 300.0, 400.0], 50) == 200.0


def known_set() -> list[dict[str, Any]]:
    return [
        line(duration_ms=100.0, ttfb_ms=10.0, input_tokens=600_000, output_tokens=100_000),
        line(duration_ms=400.0, ttfb_ms=40.0, input_tokens=400_000, output_tokens=100_000),
        line(
            duration_ms=200.0,
            ttfb_ms=20.0,
            header_mode="authorization",
            http_version="HTTP/2.0",
            cache_read_input_tokens=5,
        ),
        line(duration_ms=300.0, ttfb_ms=None, status=429, input_tokens=None, output_tokens=None),
        anthropic_line(duration_ms=1000.0, ttfb_ms=500.0, cache_creation_input_tokens=3),
        anthropic_line(duration_ms=2000.0, ttfb_ms=900.0, status=200, error="upstream dropped the stream"),
        line(model="glm-5-direct", upstream_model="glm-5-direct", rule="glm-*", duration_ms=50.0,
             ttfb_ms=5.0, input_tokens=1, output_tokens=1),
    ]  # fmt: skip


def test_summarize_numbers_on_a_known_set(config: Config) -> None:
    result = summarize(known_set(), pricing=config.pricing, default_lane="anthropic")
    zai, anthropic = result["lanes"]["zai"], result["lanes"]["anthropic"]

    assert (zai["calls"], zai["errors"]) == (5, 1)  # the 429
    assert zai["duration_ms"] == {"p50": 200.0, "p95": 400.0}  # of 50, 100, 200, 300, 400
    assert zai["ttfb_ms"] == {"p50": 10.0, "p95": 40.0}  # of 5, 10, 20, 40 (the 429 has none)
    assert zai["tokens"] == {
        "input": 600_000 + 400_000 + 11 + 1,
        "output": 100_000 + 100_000 + 7 + 1,
        "cache_read": 5,
        "cache_creation": 0,
    }
    assert zai["reasons"] == {"rule": 5}

    assert (anthropic["calls"], anthropic["errors"]) == (2, 1)  # error text counts even with 200
    assert anthropic["duration_ms"] == {"p50": 1000.0, "p95": 2000.0}
    assert anthropic["tokens"]["input"] == 202 and anthropic["tokens"]["cache_creation"] == 3

    # The A/B breakdowns.
    assert result["by_header_mode"]["x-api-key"]["calls"] == 4
    assert result["by_header_mode"]["authorization"]["calls"] == 1
    assert result["by_header_mode"]["passthrough"]["calls"] == 2
    assert result["by_http_version"]["HTTP/2.0"]["calls"] == 1
    assert result["by_http_version"]["HTTP/1.1"] == {
        "calls": 6,
        "errors": 2,
        "error_rate": round(2 / 6, 4),
        "duration_ms": {"p50": 300.0, "p95": 2000.0},  # of 50, 100, 300, 400, 1000, 2000
        "ttfb_ms": {"p50": 40.0, "p95": 900.0},  # of 5, 10, 40, 500, 900
    }
    assert zai["by_header_mode"]["authorization"]["duration_ms"]["p50"] == 200.0

    # Offload: tokens moved off the default lane, priced by the *requested* model (Haiku), not glm.
    offload = result["offload"]
    assert offload["calls"] == 5 and offload["lanes"] == ["zai"]
    assert offload["tokens_moved"] == 1_000_012 + 200_008
    assert offload["priced_calls"] == 4
    expected = (1_000_011 * 1.0 + 200_007 * 5.0) / 1_000_000  # the four Haiku calls
    assert offload["estimated_cost_avoided_usd"] == pytest.approx(expected, abs=1e-6)
    assert offload["unpriced_models"] == {"glm-5-direct": 1}
    assert result["totals"]["calls"] == 7 and result["totals"]["errors"] == 2

    text = format_summary(result)
    assert "estimated Anthropic cost avoided: $2.00" in text
    assert "unpriced models: glm-5-direct (1)" in text
    assert "authorization" in text and "HTTP/2.0" in text


def test_summarize_without_pricing_uses_the_dated_list_prices() -> None:
    # No `pricing` in the config: Haiku is priced from the built-in table ($1 in, $5 out per MTok).
    result = summarize([line()], default_lane="anthropic")
    assert result["offload"]["estimated_cost_avoided_usd"] == pytest.approx((11 * 1.0 + 7 * 5.0) / 1e6)
    assert result["offload"]["tokens_moved"] == 18
    text = format_summary(result)
    assert "n/a" not in text and "https://www.anthropic.com/pricing, checked" in text
    # A model outside the Haiku, Sonnet and Opus families has no Anthropic price: still n/a.
    result = summarize([line(model="glm-5-direct", rule="glm-*")], default_lane="anthropic")
    assert result["offload"]["estimated_cost_avoided_usd"] is None
    assert "n/a" in format_summary(result)


def test_summarize_reads_rotated_gz_files_and_skips_bad_lines(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    old = [line(id="r1"), line(id="r2")]
    newer = [line(id="r3")]
    live = [anthropic_line(id="l1")]
    write_log(logs, old, "usage.jsonl.20250101T000000Z.gz")
    write_log(logs, newer, "usage.jsonl.20250102T000000Z")  # rotated but not compressed yet
    write_log(logs, live)
    with open(logs / "usage.jsonl", "a") as handle:
        handle.write('not json\n[1, 2]\n{"ts": "2025-\n')  # garbage, a non-object, a torn line
    (logs / "unrelated.jsonl").write_text(json.dumps(line(id="x")) + "\n")

    lines = UsageLines(logs)
    assert [r["id"] for r in lines] == ["r1", "r2", "r3", "l1"]  # oldest first
    assert lines.skipped == 3

    result = ccctl(write_config(tmp_path), "summarize", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["totals"]["calls"] == 4
    assert data["window"]["skipped_lines"] == 3
    assert data["lanes"]["zai"]["calls"] == 3


def test_summarize_since_filters_by_timestamp(tmp_path: Path) -> None:
    recent = [line(ts=(NOW - timedelta(hours=1)).isoformat()), anthropic_line()]
    old = [line(ts=(NOW - timedelta(days=2)).isoformat()), line(ts="not a time")]
    write_log(tmp_path / "logs", old + recent)
    config_path = write_config(tmp_path)

    everything = json.loads(ccctl(config_path, "summarize", "--json").output)
    assert everything["totals"]["calls"] == 4
    last_day = json.loads(ccctl(config_path, "summarize", "--since", "24h", "--json").output)
    assert last_day["totals"]["calls"] == 2
    assert last_day["window"]["since"] is not None
    last_minute = json.loads(ccctl(config_path, "summarize", "--since", "1m", "--json").output)
    assert last_minute["totals"]["calls"] == 0

    bad = ccctl(config_path, "summarize", "--since", "yesterday")
    assert bad.exit_code == 2 and "--since" in bad.output


def test_summarize_human_table(tmp_path: Path) -> None:
    write_log(tmp_path / "logs", known_set())
    result = ccctl(write_config(tmp_path), "summarize")
    assert result.exit_code == 0
    header = next(row for row in result.output.splitlines() if row.startswith("lane "))
    assert header.split()[:7] == ["lane", "calls", "errors", "p50", "ms", "p95", "ms"]
    zai_row = next(row for row in result.output.splitlines() if row.startswith("zai "))
    assert zai_row.split()[1:3] == ["5", "1"]


def test_parse_duration() -> None:
    assert parse_duration("24h") == timedelta(hours=24)
    assert parse_duration("7d") == timedelta(days=7)
    assert parse_duration("30m") == timedelta(minutes=30)
    assert parse_duration("1h30m") == timedelta(minutes=90)
    assert parse_duration("2w") == timedelta(days=14)
    for bad in ("", "h", "10", "0m", "1x", "1h 2q", "-1h"):
        with pytest.raises(ValueError):
            parse_duration(bad)


# --- end to end: real traffic through the real daemon --------------------------------------------
@pytest.mark.e2e
def test_summarize_and_verify_on_logs_from_real_traffic(daemon: Daemon) -> None:
    for model in (HAIKU, SONNET):
        assert post(daemon, model).status_code == 200
    lines = daemon.wait_usage(2)
    by_lane = {entry["lane"]: entry for entry in lines}
    assert set(by_lane) == {"zai", "anthropic"}

    result = daemon.ccctl("summarize", "--json", check=True)
    data = json.loads(result.stdout)
    assert data["lanes"]["zai"]["calls"] == 1 and data["lanes"]["anthropic"]["calls"] == 1
    assert data["lanes"]["zai"]["tokens"]["input"] == 11 and data["lanes"]["zai"]["tokens"]["output"] == 7
    assert data["lanes"]["anthropic"]["tokens"]["input"] == 101
    assert data["lanes"]["anthropic"]["tokens"]["output"] == 17
    assert data["offload"]["tokens_moved"] == 18
    assert data["by_header_mode"]["x-api-key"]["calls"] == 1
    assert data["by_header_mode"]["passthrough"]["calls"] == 1
    assert data["totals"]["errors"] == 0

    result = daemon.ccctl("verify", "--proof")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 of 2 decisions went to the offload lanes (zai)" in result.stdout
    assert result.stdout.count("[PASS]") == 6
    for entry in lines:
        assert entry["id"] in result.stdout  # the proof cites both real lines
    for secret in ALL_SECRETS:
        assert secret not in result.stdout

    human = daemon.ccctl("summarize", check=True).stdout
    assert "zai" in human and "anthropic" in human


def test_since_leaves_rotated_files_older_than_the_window_unopened(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    # A rotated file's name is when ccmitm rotated it: nothing in it can be newer. To prove the
    # file is not even opened, it holds a line that claims to be recent (which a real one cannot).
    old_stamp = (NOW - timedelta(days=3)).strftime("%Y%m%dT%H%M%SZ")
    write_log(logs, [line(id="impossible")], f"usage.jsonl.{old_stamp}.gz")
    recent_stamp = (NOW - timedelta(hours=2)).strftime("%Y%m%dT%H%M%SZ")
    write_log(logs, [line(id="rotated-recently")], f"usage.jsonl.{recent_stamp}.gz")
    # A name without a stamp (an external logrotate's) is judged by its mtime.
    foreign = write_log(logs, [line(id="logrotate-old")], "usage.jsonl.1")
    os.utime(foreign, (time.time() - 3 * 86400,) * 2)
    write_log(logs, [line(id="live")])

    lines = UsageLines(logs, since=NOW - timedelta(hours=24))
    assert [r["id"] for r in lines] == ["rotated-recently", "live"]
    assert sorted(p.name for p in lines.files_not_read) == sorted(
        [f"usage.jsonl.{old_stamp}.gz", "usage.jsonl.1"]
    )
    data = json.loads(ccctl(write_config(tmp_path), "summarize", "--since", "24h", "--json").output)
    assert data["totals"]["calls"] == 2 and len(data["window"]["files_not_read"]) == 2
    # Without a window every file is read.
    assert len(list(UsageLines(logs))) == 4
