"""The runtime's key-file re-check: a fixed file puts its key into the active snapshot, a stale
answer (a reload came first) changes nothing, and the scheduler job that drives it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from ccmitm.config.keys import resolve_lane_key
from ccmitm.config.load import LoadedConfig, validate
from ccmitm.proxy.state import Runtime, Snapshot
from ccmitm.supervisor.housekeeping import KEYS_JOB, Housekeeping

KEY = "0123456789abcdef0123456789abcdef.StateTestKey1234"


def snapshot_with_key_file(key_file: Path) -> Snapshot:
    config = validate({"lanes": {"zai": {"api_key_env": None, "api_key_file": str(key_file)}}})
    return Snapshot.build(LoadedConfig(config, "test", datetime.now(UTC)), environ={})


def test_a_fixed_key_file_is_adopted_and_a_stale_answer_is_not(tmp_path: Path) -> None:
    key_file = tmp_path / "zai.key"
    key_file.write_text(KEY + "\n")
    key_file.chmod(0o644)
    runtime = Runtime(snapshot_with_key_file(key_file))
    built_from = runtime.active
    assert "zai" in built_from.unavailable and set(built_from.waiting_key_files()) == {"zai"}
    refused = {name: resolve_lane_key(lane, {}) for name, lane in built_from.waiting_key_files().items()}
    assert runtime.adopt_keys(built_from, {k: v for k, v in refused.items() if v}) == []  # still 0644

    key_file.chmod(0o600)
    keys = {name: resolve_lane_key(lane, {}) for name, lane in built_from.waiting_key_files().items()}
    found = {name: key for name, key in keys.items() if key is not None}
    first = snapshot_with_key_file(key_file.with_name("other.key"))
    racing = Runtime(first)
    racing.swap(snapshot_with_key_file(key_file))  # a reload came in between: it read the file itself
    assert racing.adopt_keys(first, found) == [] and racing.active is not first

    assert runtime.adopt_keys(built_from, found) == ["zai"]
    lane = runtime.active.lanes["zai"]
    assert lane.available and lane.auth_field == (b"x-api-key", KEY.encode())
    assert runtime.active.unavailable == frozenset() and runtime.active.waiting_key_files() == {}
    assert "zai" in runtime.breakers and KEY not in repr(runtime.active)


def test_the_key_file_job_is_scheduled_and_times_are_to_the_second() -> None:
    async def nothing() -> None:
        return None

    async def scenario() -> list:
        housekeeping = Housekeeping(nothing, nothing, lambda: None, nothing)
        housekeeping.start(validate({}).bundle)
        try:
            return housekeeping.jobs()
        finally:
            housekeeping.shutdown()

    jobs = asyncio.run(scenario())
    assert KEYS_JOB in {job["id"] for job in jobs}
    assert all(job["next_run"] and "." not in job["next_run"] for job in jobs)
