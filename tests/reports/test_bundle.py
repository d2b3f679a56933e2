"""The review bundle and the secret scanner: contents, scrubbing, refusal, retention, last-run state."""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

import ccmitm.reports.bundle as bundle_module
from ccmitm.cli.main import main
from ccmitm.cli.report import _bundle_verdict
from ccmitm.config.load import validate
from ccmitm.core.redact import redact_text, scan_text
from ccmitm.reports.bundle import make_bundle
from ccmitm.reports.bundle_state import STATE_FILE, list_bundles, load_last_run, load_last_success, record_run
from ccmitm.reports.secretscan import scan_bytes, scan_tree
from tests.helpers import ALL_SECRETS, CLIENT_API_KEY, CLIENT_OAUTH_TOKEN, ZAI_KEY, Daemon, post
from tests.reports.lines import HAIKU, SONNET, anthropic_line, line

NOW = datetime(2025, 6, 1, 2, 30, 0, tzinfo=UTC)
BEARER = "Bearer eyJhbGciOiJIUzI1NiJ9.c2VjcmV0LXRva2Vu.0123456789abcdef"
# A lane key in no known format: only the exact-value scan can catch it.
ODD_LANE_KEY = "plainLaneKeyWithoutAnyKnownShape_Q7"
SECRETS = (*ALL_SECRETS, BEARER.split()[1], ODD_LANE_KEY)
BUNDLE_FILES = {
    "README.txt",
    "usage.jsonl",
    "METRICS.json",
    "VERIFY.txt",
    "REPORT.html",
    "config.redacted.yaml",
    "daemon.log",
    "VERSION.txt",
}
NAME = "agentos_tmp_review-20250601-023000"


def ts(delta: timedelta) -> str:
    return (NOW - delta).isoformat(timespec="milliseconds")


@pytest.fixture
def setup(tmp_path: Path) -> dict[str, Any]:
    """A config, a usage log and a daemon log with secrets planted where a bug could put them."""
    logs, state, downloads = tmp_path / "logs", tmp_path / "state", tmp_path / "Downloads"
    config = validate(
        {
            "logs": {"dir": str(logs)},
            "bundle": {"dir": str(downloads), "keep": 3, "timezone": "UTC"},
            "lanes": {
                "anthropic": {"url": "https://api.anthropic.com"},
                "zai": {"url": "https://api.z.ai/api/anthropic", "api_key_env": "ZAI_API_KEY"},
                "other": {"url": "https://other.example", "api_key_env": "OTHER_KEY"},
            },
        }
    )
    logs.mkdir()
    state.mkdir()
    usage = [
        line(ts=ts(timedelta(days=3)), id="too-old"),
        line(ts=ts(timedelta(hours=30)), id="day-and-a-bit"),
        line(ts=ts(timedelta(hours=2)), id="recent-zai"),
        anthropic_line(
            ts=ts(timedelta(hours=1)),
            id="leaky",
            status=None,
            error=f"upstream said: x-api-key {CLIENT_API_KEY} {BEARER} key={ZAI_KEY} {ODD_LANE_KEY}",
        ),
    ]
    (logs / "usage.jsonl").write_text("".join(json.dumps(r) + "\n" for r in usage) + "torn {\n")
    daemon_log = (
        "2025-06-01 01:00:00,000 INFO ccmitm.supervisor: ready: listening\n"
        f"2025-06-01 01:10:00,000 ERROR ccmitm.addon: boom with Authorization: {BEARER}\n"
        f"2025-06-01 01:11:00,000 ERROR ccmitm.addon: key {CLIENT_OAUTH_TOKEN} and {ZAI_KEY}\n"
        f"2025-06-01 01:12:00,000 WARNING ccmitm.lanes: odd key {ODD_LANE_KEY}\n"
    )
    (state / "daemon.log").write_text(daemon_log)
    lane_keys = {"zai": ZAI_KEY, "other": ODD_LANE_KEY}
    return {
        "config": config,
        "state": state,
        "downloads": downloads,
        "lane_keys": lane_keys,
        "logs": logs,
    }


def bundle(setup: dict[str, Any], now: datetime = NOW, **kwargs: Any) -> Any:
    return make_bundle(setup["config"], setup["state"], now, lane_keys=setup["lane_keys"], **kwargs)


def tar_members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive, "r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


def assert_no_secret(data: bytes, where: str) -> None:
    for secret in SECRETS:
        assert secret.encode() not in data, f"a planted secret is in {where}"


# --- the bundle ------------------------------------------------------------------------------------
def test_bundle_contents_readme_and_window(setup: dict[str, Any]) -> None:
    result = bundle(setup)
    assert result.ok, result.error
    out = setup["downloads"] / NAME
    assert result.path == str(out) and result.archive == str(out) + ".tgz"
    assert {p.name for p in out.iterdir()} == BUNDLE_FILES
    assert {p.name for p in setup["downloads"].iterdir()} == {NAME, NAME + ".tgz"}
    assert oct(out.stat().st_mode & 0o777) == "0o700"
    assert oct(Path(result.archive).stat().st_mode & 0o777) == "0o600"

    # No previous bundle: the last 24 h. The 30-hour-old and 3-day-old lines stay out.
    usage = [json.loads(x) for x in (out / "usage.jsonl").read_text().splitlines()]
    assert [r["id"] for r in usage] == ["recent-zai", "leaky"]
    assert (result.usage_lines, result.skipped_lines) == (2, 1)
    assert result.window_start == (NOW - timedelta(hours=24)).isoformat(timespec="seconds")

    readme = (out / "README.txt").read_text()
    for name in BUNDLE_FILES:
        assert name in readme
    metrics = json.loads((out / "METRICS.json").read_text())
    assert metrics["totals"]["calls"] == 2 and metrics["lanes"]["zai"]["calls"] == 1
    verify_text = (out / "VERIFY.txt").read_text()
    assert "1 of 2 decisions went to the offload lanes" in verify_text
    # The torn last line is in the window (the line before it is): the audit reports it, so the
    # bundle's audit fails on it instead of passing over a line it could not read.
    assert "[FAIL] (e) classifiable" in verify_text and "unparseable line 1" in verify_text
    assert "\n  torn {\n" in verify_text
    assert verify_text.rstrip().endswith("exit code: 1") and result.verify_ok is False
    assert "[PASS] (a) haiku-offloaded" in verify_text and "[PASS] (c) passthrough-only" in verify_text
    config_copy = yaml.safe_load((out / "config.redacted.yaml").read_text())
    assert config_copy == setup["config"].redacted()
    versions = (out / "VERSION.txt").read_text()
    assert "ccmitm " in versions and "mitmproxy " in versions and "python " in versions
    assert "ready: listening" in (out / "daemon.log").read_text()

    # The archive holds the same files under the bundle's name.
    members = tar_members(Path(result.archive))
    assert set(members) == {f"{NAME}/{name}" for name in BUNDLE_FILES}
    assert members[f"{NAME}/usage.jsonl"] == (out / "usage.jsonl").read_bytes()


def test_a_window_without_usage_lines_still_bundles_and_says_nothing_to_audit(
    setup: dict[str, Any],
) -> None:
    (setup["logs"] / "usage.jsonl").write_text("")
    result = bundle(setup)
    assert result.ok, result.error
    out = Path(result.path)
    assert {p.name for p in out.iterdir()} == BUNDLE_FILES and Path(result.archive).is_file()
    assert result.usage_lines == 0
    assert result.verify_ok is False and result.verify_outcome == "nothing to audit"
    verify_text = (out / "VERIFY.txt").read_text()
    assert "NOTHING TO AUDIT" in verify_text and "PASS" not in verify_text
    assert verify_text.rstrip().endswith("exit code: 3")
    page = (out / "REPORT.html").read_text()
    assert 'data-verdict="nothing"' in page and "Routing audit: NOTHING TO AUDIT" in page
    # ccctl bundle's summary line says so too, instead of "passed" or "FAILED".
    assert "nothing to audit" in _bundle_verdict(result.to_dict())


def test_planted_secrets_are_absent_from_dir_and_tgz(setup: dict[str, Any]) -> None:
    result = bundle(setup)
    assert result.ok, result.error
    out = Path(result.path)
    for path in out.iterdir():
        assert_no_secret(path.read_bytes(), str(path))
    for name, data in tar_members(Path(result.archive)).items():
        assert_no_secret(data, name)
    # Scrubbed, not dropped: the lines are still there with markers in place of the secrets.
    leaky = json.loads((out / "usage.jsonl").read_text().splitlines()[1])
    assert leaky["id"] == "leaky" and "[REDACTED:" in leaky["error"]
    daemon_log = (out / "daemon.log").read_text()
    assert "Authorization: Bearer [REDACTED:" in daemon_log
    assert "[REDACTED:lane-key:other]" in daemon_log  # the odd key, by its exact value
    assert scan_tree(setup["downloads"], setup["lane_keys"]) == []
    assert json.dumps(result.to_dict()).find(CLIENT_API_KEY) == -1


def test_a_bundle_that_fails_the_scan_is_removed(setup: dict[str, Any], monkeypatch) -> None:
    first = bundle(setup, now=NOW - timedelta(days=1))
    assert first.ok
    unrelated = setup["downloads"] / "holiday-photo.jpg"
    unrelated.write_bytes(b"jpeg")
    # Scrubbing broken: the scan is the last line of defence and must refuse the bundle.
    monkeypatch.setattr(bundle_module, "redact_text", lambda text, extra=None: text)
    result = bundle(setup)
    assert not result.ok
    assert result.path is None and result.archive is None
    assert "secret scan" in (result.error or "") and "removed" in (result.error or "")
    assert result.findings
    assert any("usage.jsonl" in f and "sk-ant-api03" in f for f in result.findings)
    assert any("daemon.log" in f and "lane key value (other)" in f for f in result.findings)
    assert_no_secret(json.dumps(result.to_dict()).encode(), "the result")
    # Nothing of it is left: not in Downloads, not in staging; the earlier bundle and the photo stay.
    left = {p.name for p in setup["downloads"].iterdir()}
    assert left == {Path(first.path).name, Path(first.archive).name, "holiday-photo.jpg"}
    assert list((setup["state"] / bundle_module.STAGING_DIR).iterdir()) == []
    last = load_last_run(setup["state"])
    assert last is not None and last.ok is False and last.at == NOW and last.path is None
    success = load_last_success(setup["state"])
    assert success is not None and success.path == first.path


def test_scan_runs_on_the_archive_too(setup: dict[str, Any], monkeypatch) -> None:
    real_tar = bundle_module._tar

    def tar_with_a_stowaway(source: Path, archive: Path) -> None:
        (source / "stowaway.txt").write_text(f"token {CLIENT_OAUTH_TOKEN}\n")
        real_tar(source, archive)
        (source / "stowaway.txt").unlink()

    monkeypatch.setattr(bundle_module, "_tar", tar_with_a_stowaway)
    result = bundle(setup)
    assert not result.ok
    assert any(".tgz!" in f and "stowaway.txt" in f and "sk-ant-oat01" in f for f in result.findings)
    assert not setup["downloads"].exists() or list(setup["downloads"].iterdir()) == []


def test_what_lands_in_the_bundle_dir_is_checked_after_the_move(setup: dict[str, Any], monkeypatch) -> None:
    # Whatever happens between the scan and the final place (here: a move that also drops a file
    # and changes one), the files there are scanned again unless identical to scanned ones.
    real_move = bundle_module.shutil.move

    def leaky_move(source: Path, target: Path) -> Any:
        moved = real_move(source, target)
        if Path(target).is_dir():
            (Path(target) / "extra.txt").write_text(f"token {CLIENT_OAUTH_TOKEN}\n")
            with open(Path(target) / "VERSION.txt", "a") as handle:
                handle.write(f"key={ZAI_KEY}\n")
        return moved

    monkeypatch.setattr(bundle_module.shutil, "move", leaky_move)
    result = bundle(setup)
    assert not result.ok and "after it was moved into place" in (result.error or "")
    assert any("extra.txt" in f and "sk-ant-oat01" in f for f in result.findings)
    assert any("VERSION.txt" in f for f in result.findings)
    assert not setup["downloads"].exists() or list(setup["downloads"].iterdir()) == []


def test_pruning_keeps_the_newest_and_never_touches_anything_else(setup: dict[str, Any]) -> None:
    downloads: Path = setup["downloads"]
    downloads.mkdir()
    old_stamps = ["20250501-023000", "20250520-023000", "20250530-023000", "20250531-023000"]
    for stamp in old_stamps:
        (downloads / f"agentos_tmp_review-{stamp}").mkdir()
        (downloads / f"agentos_tmp_review-{stamp}" / "README.txt").write_text("old")
        (downloads / f"agentos_tmp_review-{stamp}.tgz").write_bytes(b"old")
    strangers = {
        "agentos_tmp_review-notes.txt": "file",
        "agentos_tmp_review-20240101-000000.zip": "file",
        "agentos_tmp_review-20240101-000000": "file",  # a file where a bundle would be a dir
        "agentos_tmp_review-20241399-000000": "dir",  # not a real date
        "agentos_tmp_review-20240101-000000-2": "dir",
        "other-20240101-000000": "dir",
        "other-20240101-000000.tgz": "file",
        "agentos_tmp_review-20240101-000000.tgz.part": "file",
    }
    for name, kind in strangers.items():
        if kind == "dir":
            (downloads / name).mkdir()
        else:
            (downloads / name).write_text("mine")
    target = downloads.parent / "precious"
    target.mkdir()
    (downloads / "agentos_tmp_review-20240102-000000").symlink_to(target)  # a look-alike symlink

    result = bundle(setup)  # keep = 3: the new one + the two newest old ones
    assert result.ok
    kept = sorted(list_bundles(downloads, "agentos_tmp_review"))
    assert kept == ["20250530-023000", "20250531-023000", "20250601-023000"]
    assert sorted(Path(p).name for p in result.pruned) == [
        "agentos_tmp_review-20250501-023000",
        "agentos_tmp_review-20250501-023000.tgz",
        "agentos_tmp_review-20250520-023000",
        "agentos_tmp_review-20250520-023000.tgz",
    ]
    for name in strangers:
        assert (downloads / name).exists(), f"{name} was removed"
    assert (downloads / "agentos_tmp_review-20240102-000000").is_symlink() and target.is_dir()


def test_the_new_bundle_survives_a_clock_that_went_backwards(setup: dict[str, Any]) -> None:
    downloads: Path = setup["downloads"]
    downloads.mkdir()
    for stamp in ("20300101-000000", "20300102-000000", "20300103-000000"):
        (downloads / f"agentos_tmp_review-{stamp}").mkdir()
    result = bundle(setup)
    assert result.ok and Path(result.path).is_dir() and Path(result.archive).is_file()


def test_last_run_is_recorded_and_sets_the_next_window(setup: dict[str, Any]) -> None:
    assert load_last_run(setup["state"]) is None
    # The previous good bundle was two days ago (the daemon was down since): cover the gap.
    record_run(setup["state"], at=NOW - timedelta(days=2), path="/somewhere", ok=True)
    assert oct((setup["state"] / STATE_FILE).stat().st_mode & 0o777) == "0o600"
    result = bundle(setup)
    assert result.ok
    usage = [json.loads(x)["id"] for x in Path(result.path, "usage.jsonl").read_text().splitlines()]
    assert usage == ["day-and-a-bit", "recent-zai", "leaky"]

    last = load_last_run(setup["state"])
    assert last is not None and last.ok and last.error is None
    assert last.at == NOW and last.path == result.path
    assert load_last_success(setup["state"]) == last
    state = json.loads((setup["state"] / STATE_FILE).read_text())
    assert state["last_run"] == {"at": NOW.isoformat(), "path": result.path, "ok": True, "error": None}

    # Right after it, the next bundle still covers 24 h (at least), not just the minutes since.
    again = bundle(setup, now=NOW + timedelta(minutes=5))
    assert again.ok and again.usage_lines == 2


def test_two_bundles_in_one_second_get_distinct_names(setup: dict[str, Any]) -> None:
    first, second = bundle(setup), bundle(setup)
    assert first.ok and second.ok and first.path != second.path
    assert sorted(list_bundles(setup["downloads"], "agentos_tmp_review")) == [
        "20250601-023000",
        "20250601-023001",
    ]


def test_overlapping_runs_do_not_trample_each_other(setup: dict[str, Any]) -> None:
    # The nightly job and a `ccctl bundle` in the daemon's thread pool at the same moment.
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: bundle(setup), range(4)))
    assert all(r.ok for r in results), [r.error for r in results]
    assert len({r.path for r in results}) == 4
    pruned = {p for r in results for p in r.pruned}
    assert len(pruned) == 2  # keep = 3: the oldest of the four went, dir and .tgz
    for result in results:
        if result.path in pruned:
            continue
        assert {p.name for p in Path(result.path).iterdir()} == BUNDLE_FILES
        assert len(tar_members(Path(result.archive))) == len(BUNDLE_FILES)
    assert len(list_bundles(setup["downloads"], "agentos_tmp_review")) == 3


def test_a_damaged_state_file_means_no_previous_run(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).write_text("{not json")
    assert load_last_run(tmp_path) is None
    record_run(tmp_path, at=NOW, path=None, ok=False, error="disk full")
    last = load_last_run(tmp_path)
    assert last is not None and (last.ok, last.error) == (False, "disk full")
    assert load_last_success(tmp_path) is None


def test_ccctl_bundle_runs_locally_when_no_daemon(setup: dict[str, Any], tmp_path: Path) -> None:
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(setup["config"].redacted()))
    env = {
        "XDG_STATE_HOME": str(tmp_path / "xdgstate"),
        "XDG_RUNTIME_DIR": str(tmp_path / "run"),  # no socket here: the daemon is not running
        "ZAI_API_KEY": ZAI_KEY,
        "OTHER_KEY": ODD_LANE_KEY,
    }
    (tmp_path / "run").mkdir()
    # ccctl stamps the bundle with the real clock: give it lines from the real last hour.
    now = datetime.now(UTC)
    recent = [
        line(ts=(now - timedelta(hours=1)).isoformat()),
        anthropic_line(ts=now.isoformat(), error=f"oops {CLIENT_API_KEY} {ODD_LANE_KEY}"),
    ]
    (setup["logs"] / "usage.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recent))
    runner = CliRunner()
    result = runner.invoke(main, ["--config", str(config_path), "bundle", "--json"], env=env)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["ok"] is True and Path(data["path"]).is_dir() and Path(data["archive"]).is_file()
    assert data["usage_lines"] == 2
    assert_no_secret(result.output.encode(), "ccctl's output")
    assert scan_tree(setup["downloads"], setup["lane_keys"]) == []
    assert load_last_run(tmp_path / "xdgstate" / "ccmitm") is not None

    human = runner.invoke(main, ["--config", str(config_path), "bundle"], env=env)
    assert human.exit_code == 0 and "bundle written by ccctl" in human.output


# --- the scanner -----------------------------------------------------------------------------------
def test_scan_text_and_redact_every_pattern() -> None:
    text = (
        f"a {CLIENT_API_KEY} b {CLIENT_OAUTH_TOKEN} c sk-ant-admin01-{'Q' * 40} "
        f"d {ZAI_KEY} e {BEARER} f x-api-key: abcdef0123456789abcdef g {ODD_LANE_KEY}"
    )
    found = scan_text(text, {"other": ODD_LANE_KEY})
    assert found == {
        "sk-ant-api03": 1,
        "sk-ant-oat01": 1,
        "sk-ant-admin01": 1,
        "zai-key": 1,
        "bearer-token": 1,
        "x-api-key-value": 1,
        "lane key value (other)": 1,
    }
    redacted = redact_text(text, {"other": ODD_LANE_KEY})
    assert scan_text(redacted, {"other": ODD_LANE_KEY}) == {}
    assert_no_secret(redacted.encode(), "redacted text")
    assert "Bearer [REDACTED:bearer-token]" in redacted


def test_prose_and_usage_lines_are_not_findings() -> None:
    benign = (
        "Bearer authentication uses the authorization header; header_mode x-api-key.\n"
        + json.dumps(line())
        + "\n"
        + json.dumps(anthropic_line(model=SONNET, session="0123456789abcdef0123456789abcdef"))
        + f"\nmodel {HAIKU}; a sha256 {'ab' * 32}\n"
    )
    assert scan_text(benign) == {}
    assert redact_text(benign) == benign


def test_scan_tree_reads_plain_gz_and_tarball_members(tmp_path: Path) -> None:
    root = tmp_path / "written"
    (root / "sub").mkdir(parents=True)
    (root / "clean.log").write_text("nothing here\n")
    (root / "sub" / "plain.log").write_text(f"one\ntwo {CLIENT_API_KEY}\n")
    (root / "rotated.jsonl.20250101T000000Z.gz").write_bytes(gzip.compress(f"x\ny\n{ZAI_KEY}\n".encode()))
    payload = io.BytesIO()
    with tarfile.open(fileobj=payload, mode="w:gz") as tar:
        for name, data in (
            ("b/inner.txt", f"auth {BEARER}\n".encode()),
            ("b/inner.jsonl.gz", gzip.compress(f"{CLIENT_OAUTH_TOKEN}\n".encode())),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (root / "bundle.tgz").write_bytes(payload.getvalue())
    (root / "also.tar.gz").write_bytes(payload.getvalue())
    (root / "broken.gz").write_bytes(b"not gzip at all")
    (root / "link").symlink_to(tmp_path / "outside.txt")
    (tmp_path / "outside.txt").write_text(CLIENT_API_KEY)

    findings = scan_tree(root)
    rendered = sorted(str(f).replace(str(root) + os.sep, "") for f in findings)
    assert rendered == [
        "also.tar.gz!b/inner.jsonl.gz:1: sk-ant-oat01",
        "also.tar.gz!b/inner.txt:1: bearer-token",
        "broken.gz: unscannable (BadGzipFile)",
        "bundle.tgz!b/inner.jsonl.gz:1: sk-ant-oat01",
        "bundle.tgz!b/inner.txt:1: bearer-token",
        "rotated.jsonl.20250101T000000Z.gz:3: zai-key",
        "sub/plain.log:2: sk-ant-api03",
    ]
    assert_no_secret(json.dumps([f.to_dict() for f in findings]).encode(), "the findings")
    assert scan_bytes(b"clean", "x.txt") == []


# --- end to end: a real daemon's logs, bundled by ccctl once it has stopped -----------------------
@pytest.mark.e2e
def test_bundle_of_a_real_daemons_logs(daemon: Daemon) -> None:
    for model in (HAIKU, SONNET):
        assert post(daemon, model).status_code == 200
    daemon.wait_usage(2)

    # While it runs, ccctl asks the daemon, which makes the bundle with its own environment.
    by_daemon = daemon.ccctl("bundle")
    assert by_daemon.returncode == 0, by_daemon.stdout + by_daemon.stderr
    assert "bundle written by ccmitmd" in by_daemon.stdout
    daemon.stop()

    # Once it has stopped, ccctl makes the bundle itself.
    result = daemon.ccctl("bundle", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(result.stdout)
    out = Path(data["path"])
    assert len(list_bundles(daemon.root / "Downloads", "agentos_tmp_review")) == 2
    assert out.parent == daemon.root / "Downloads"
    assert data["usage_lines"] == 2 and data["verify_ok"] is True
    assert (out / "daemon.log").read_text().strip()  # the real daemon's log made it in
    metrics = json.loads((out / "METRICS.json").read_text())
    assert metrics["offload"]["tokens_moved"] == 18
    for path in (daemon.root / "Downloads").rglob("*"):
        if path.name.endswith(".tgz"):
            for name, member in tar_members(path).items():
                assert_no_secret(member, f"{path.name}!{name}")
        elif path.is_file():
            assert_no_secret(path.read_bytes(), str(path))
    assert scan_tree(daemon.root / "Downloads", {"zai": ZAI_KEY}) == []
    last = load_last_run(daemon.state_dir)
    assert last is not None and last.ok and last.path == str(out)
