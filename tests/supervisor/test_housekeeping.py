"""Housekeeping against the real daemon: lossless rotation under load, reopen after an external
logrotate, the nightly bundle from the scheduler, and catch-up of a run missed while down."""

from __future__ import annotations

import json
import os
import signal
import tarfile
import threading
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
from apscheduler.triggers.cron import CronTrigger

from ccmitm.logs.files import all_files, read_lines, rotated_files
from ccmitm.supervisor.housekeeping import missed_run
from tests.helpers import CLIENT_API_KEY, Daemon, status, wait_for

pytestmark = pytest.mark.e2e


def send(daemon: Daemon, count: int, model: str = "claude-haiku-4-5") -> None:
    with httpx.Client(timeout=30) as client:
        for _ in range(count):
            response = client.post(
                daemon.reverse_url + "/v1/messages",
                json={"model": model, "max_tokens": 8, "stream": True, "messages": []},
                headers={"x-api-key": CLIENT_API_KEY, **daemon.auth_headers},
            )
            assert response.status_code == 200


def all_usage_lines(logs: Path) -> list[dict]:
    lines = []
    for path in all_files(logs / "usage.jsonl"):
        lines += [json.loads(raw) for raw in read_lines(path)]  # every line parses
    return lines


def test_rotation_under_concurrent_load_loses_and_doubles_nothing(make_daemon) -> None:
    daemon = make_daemon(lambda c: c["logs"].update(rotate_bytes=4096, keep=100))
    threads = [
        threading.Thread(target=send, args=(daemon, 15, model))
        for model in ["claude-haiku-4-5", "claude-sonnet-5"] * 3
    ]
    for thread in threads:
        thread.start()
    rotations = 0
    while any(t.is_alive() for t in threads):  # force rotations in the middle of the load too
        assert daemon.ccctl("rotate").returncode == 0
        rotations += 1
        threads[0].join(0.2)
    for thread in threads:
        thread.join(60)
    wait_for(lambda: len(all_usage_lines(daemon.logs_dir)) >= 90, what="all lines")
    lines = all_usage_lines(daemon.logs_dir)
    assert len(lines) == 90 and len({line["id"] for line in lines}) == 90
    rotated = rotated_files(daemon.logs_dir / "usage.jsonl")
    assert len(rotated) >= 2 and all(p.name.endswith(".gz") for p in rotated)
    assert all((p.stat().st_mode & 0o777) == 0o600 for p in rotated)
    assert rotations >= 1


def test_keep_limits_the_rotated_files(make_daemon) -> None:
    daemon = make_daemon(lambda c: c["logs"].update(rotate_bytes=1024, keep=2))
    send(daemon, 12)
    daemon.ccctl("rotate", check=True)
    assert len(rotated_files(daemon.logs_dir / "usage.jsonl")) == 2


def test_reopen_after_an_external_rename_loses_nothing(daemon: Daemon) -> None:
    send(daemon, 3)
    daemon.wait_usage(3)
    live = daemon.logs_dir / "usage.jsonl"
    os.rename(live, daemon.logs_dir / "usage.jsonl.1")  # what logrotate does (no copytruncate)
    send(daemon, 2)  # still written to the renamed file: same inode
    daemon.ccctl("reopen-logs", check=True)
    send(daemon, 2)
    daemon.proc.send_signal(signal.SIGHUP)  # the signal way does the same
    wait_for(lambda: "log files reopened" in daemon.stderr(), what="SIGHUP reopen")
    send(daemon, 1)
    wait_for(lambda: live.exists() and len(live.read_text().splitlines()) == 3, what="new file")
    assert len((daemon.logs_dir / "usage.jsonl.1").read_text().splitlines()) == 5
    assert (live.stat().st_mode & 0o777) == 0o600


def test_forced_rotation_covers_the_daemon_log_too(daemon: Daemon) -> None:
    send(daemon, 1)
    result = daemon.ccctl("rotate", check=True)
    assert "usage.jsonl." in result.stdout
    assert rotated_files(daemon.state_dir / "daemon.log")


def test_the_scheduler_makes_the_nightly_bundle(make_daemon) -> None:
    """A shortened schedule (every minute) stands in for the nightly one."""
    daemon = make_daemon(lambda c: c["bundle"].update(schedule="* * * * *", keep=3))
    send(daemon, 2)
    nxt = status(daemon)["bundle"]["next"]
    assert nxt is not None
    wait_for(
        lambda: (status(daemon)["bundle"]["last"] or {}).get("ok"),
        timeout=90,
        what="scheduled bundle",
        interval=1.0,
    )
    last = status(daemon)["bundle"]["last"]
    bundle_dir = Path(last["path"])
    assert bundle_dir.parent == daemon.root / "Downloads"
    assert bundle_dir.name.startswith("agentos_tmp_review-")
    archive = bundle_dir.with_name(bundle_dir.name + ".tgz")
    with tarfile.open(archive) as tar:
        names = {Path(name).name for name in tar.getnames()}
    assert {"README.txt", "METRICS.json", "VERIFY.txt"} <= names
    assert "nightly bundle" in daemon.stderr() or "bundle: wrote" in daemon.stderr()


def test_a_run_missed_while_down_is_caught_up_at_start(make_daemon) -> None:
    daemon = make_daemon(start=False)
    daemon.state_dir.mkdir(parents=True, exist_ok=True)
    two_days_ago = (datetime.now().astimezone() - timedelta(days=2)).isoformat()
    record = {"at": two_days_ago, "path": None, "ok": True, "error": None}
    (daemon.state_dir / "bundle-state.json").write_text(
        json.dumps({"last_run": record, "last_success": record})
    )
    daemon.start()
    wait_for(
        lambda: (status(daemon)["bundle"]["last"] or {}).get("path"),
        timeout=30,
        what="catch-up bundle",
        interval=0.5,
    )
    assert "missed while ccmitmd was down" in daemon.stderr()
    assert list((daemon.root / "Downloads").glob("agentos_tmp_review-*.tgz"))


def test_nothing_to_catch_up_on_a_first_start(daemon: Daemon) -> None:
    assert status(daemon)["bundle"]["last"] is None
    assert not (daemon.root / "Downloads").exists()


@pytest.mark.parametrize(
    ("last_run", "now", "missed"),
    [
        (None, "2026-11-25T12:00", False),
        ("2026-11-25T02:31", "2026-11-25T12:00", False),
        ("2026-11-24T02:31", "2026-11-25T12:00", True),
        ("2026-11-25T02:29", "2026-11-25T02:30", True),
        ("2026-11-25T02:29", "2026-11-25T02:29:59", False),
    ],
)
def test_missed_run(last_run: str | None, now: str, missed: bool) -> None:
    from zoneinfo import ZoneInfo

    zone = ZoneInfo("Europe/Berlin")
    trigger = CronTrigger.from_crontab("30 2 * * *", timezone=zone)
    last = datetime.fromisoformat(last_run).replace(tzinfo=zone) if last_run else None
    assert missed_run(trigger, last, datetime.fromisoformat(now).replace(tzinfo=zone)) is missed


def test_a_changed_logs_dir_takes_effect_without_a_restart(daemon: Daemon) -> None:
    send(daemon, 2)
    daemon.wait_usage(2)
    old_dir = daemon.logs_dir
    config = daemon.config
    config["logs"]["dir"] = str(daemon.root / "newlogs")
    daemon.write_config(config)
    wait_for(lambda: "usage log now written to" in daemon.stderr(), what="moved")
    send(daemon, 3)
    wait_for(lambda: len(daemon.usage_lines()) == 3, what="lines in the new dir")
    assert len((old_dir / "usage.jsonl").read_text().splitlines()) == 2
