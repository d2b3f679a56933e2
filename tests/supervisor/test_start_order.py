"""What READY no longer waits for: the config watcher starts after it, so an edit made between the
read at start and the watcher's start must still lead to a reload."""

from __future__ import annotations

import asyncio
from pathlib import Path

import yaml

from ccmitm.supervisor.daemon import Daemon, load_for_start
from ccmitm.testing.harness import private_config


def _after_ready_reloads(tmp_path: Path, edit_in_between: bool) -> list[str]:
    config_path = tmp_path / "config.yaml"
    config = private_config(tmp_path, "http://127.0.0.1:9", "http://127.0.0.1:9")
    config["control"] = {"socket": str(tmp_path / "ctl.sock")}
    config_path.write_text(yaml.safe_dump(config))
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    start = load_for_start(config_path, state_dir)
    if edit_in_between:  # saved again (a new inode, as an editor's rename) before the watcher runs
        replacement = tmp_path / "config.yaml.new"
        replacement.write_text(yaml.safe_dump(config) + "# edited\n")
        replacement.replace(config_path)
    daemon = Daemon(config_path, state_dir, start)
    reloads: list[str] = []
    daemon._reload_soon = lambda: reloads.append("reload")  # type: ignore[method-assign]

    async def run() -> None:
        await daemon._after_ready()
        try:
            assert daemon.housekeeping.jobs(), "the scheduler started after READY"
        finally:
            daemon.watcher.stop()
            daemon.housekeeping.shutdown()
            for task in list(daemon._tasks):
                task.cancel()
            await daemon.quota.close()

    asyncio.run(run())
    return reloads


def test_an_edit_before_the_watcher_started_is_reloaded(tmp_path: Path) -> None:
    assert _after_ready_reloads(tmp_path, edit_in_between=True) == ["reload"]


def test_no_edit_no_reload(tmp_path: Path) -> None:
    assert _after_ready_reloads(tmp_path, edit_in_between=False) == []
