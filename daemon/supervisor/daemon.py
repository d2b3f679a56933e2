"""ccmitmd: the long-running supervisor. It wires the rooms together and holds no routing logic.

Start order: config -> state dir and logs -> usage writer -> proxy listeners -> control socket,
config watcher, scheduler -> READY. Stop order is the reverse, after a drain of in-flight calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from ccmitm import __version__, paths
from ccmitm.config.load import ConfigError, LoadedConfig, load
from ccmitm.control.server import ControlError, ControlServer
from ccmitm.logs.daemonlog import daemon_log_file, set_secret_values, setup_logging
from ccmitm.logs.usage import UsageLog
from ccmitm.proxy.addon import Router
from ccmitm.proxy.master import ListenerError, Proxy, secure_confdir
from ccmitm.proxy.state import LaneStats, PauseStore, Runtime, Snapshot
from ccmitm.reports.bundle import load_last_run, make_bundle
from ccmitm.supervisor.housekeeping import BUNDLE_JOB, Housekeeping
from ccmitm.supervisor.notify import Notifier
from ccmitm.supervisor.watcher import ConfigWatcher

log = logging.getLogger("ccmitm")

EXIT_CONFIG = 2
EXIT_LISTEN = 3
PID_FILE = "ccmitmd.pid"
LAST_GOOD = "last-good-config.yaml"
SIGNATURES = "foreign-signatures.json"


@dataclass(frozen=True)
class StartConfig:
    loaded: LoadedConfig
    error: str | None  # why the config file itself could not be used at start


def load_for_start(config_path: Path, state_dir: Path) -> StartConfig:
    """The config file; if it is invalid, the last config that was valid (so Claude Code keeps working)."""
    try:
        return StartConfig(load(config_path), None)
    except ConfigError as exc:
        message = f"{exc.source}: " + "; ".join(map(str, exc.problems))
        last_good = state_dir / LAST_GOOD
        if last_good.exists():
            try:
                loaded = load(last_good)
            except ConfigError:
                raise exc from None
            return StartConfig(loaded, message)
        raise


class Daemon:
    def __init__(self, config_path: Path, state_dir: Path, start: StartConfig):
        self.config_path = config_path
        self.state_dir = state_dir
        config = start.loaded.config
        self.runtime = Runtime(Snapshot.build(start.loaded), PauseStore(state_dir / "state.json"))
        if start.error:
            self.runtime.reload_failed(f"invalid at start, serving the last good config: {start.error}")
        self._load_signatures()
        self.usage = UsageLog(
            Path(config.logs.dir), config.logs.rotate_bytes, config.logs.keep, config.logs.daily
        )
        self.router = Router(self.runtime, self.usage.write)
        self.proxy: Proxy | None = None
        self.notifier = Notifier.from_env()
        self.control = ControlServer(config.socket_path(), self._handlers())
        self.watcher = ConfigWatcher(config_path, self._reload_soon)
        self.housekeeping = Housekeeping(self._rotate_logs, self._run_bundle, self._last_bundle_at)
        self._stop = asyncio.Event()
        self._force = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping = False

    # --- lifecycle -----------------------------------------------------------------------------
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop_signal)
        loop.add_signal_handler(signal.SIGHUP, lambda: self._spawn(self._reopen_logs()))
        self.usage.start()
        config = self.runtime.active.config
        self.proxy = Proxy(config, [self.router])
        try:
            await self.proxy.start()
            await self.control.start()
        except (ListenerError, ControlError) as exc:
            log.error("cannot start: %s", exc)
            await self.proxy.shutdown()
            self.usage.close()
            return EXIT_LISTEN
        secure_confdir(Path(config.proxy.confdir))
        self._write_pid()
        self._save_last_good()
        self.watcher.start()
        self.housekeeping.start(config.bundle)
        self._announce()
        self.notifier.ready(self._status_line())
        if self.notifier.watchdog_interval_s:
            self._spawn(self._watchdog_loop(self.notifier.watchdog_interval_s))
        await self._stop.wait()
        await self._shutdown()
        return 0

    def _on_stop_signal(self) -> None:
        if self._stop.is_set():
            log.warning("second stop signal: closing in-flight calls now")
            self._force.set()
        self._stop.set()

    async def _shutdown(self) -> None:
        self._stopping = True
        self.notifier.stopping()
        assert self.proxy is not None
        drain_s = self.runtime.active.config.proxy.drain_s
        await self.proxy.stop_listening()
        log.info(
            "stopping: no new connections; draining %d in-flight call(s) (up to %gs)",
            self.router.in_flight,
            drain_s,
        )
        await self._drain(drain_s)
        self.watcher.stop()
        self.housekeeping.shutdown()
        await self.control.stop()
        for task in list(self._tasks):
            task.cancel()
        await self.proxy.shutdown()
        await self.router.failover_client.close()
        self.usage.close()
        self._save_signatures()
        with contextlib.suppress(FileNotFoundError):
            (self.state_dir / PID_FILE).unlink()
        log.info("stopped")

    async def _drain(self, drain_s: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + drain_s
        while self.router.in_flight > 0 and not self._force.is_set():
            if loop.time() >= deadline:
                log.warning("drain deadline reached: closing %d in-flight call(s)", self.router.in_flight)
                return
            await asyncio.sleep(0.05)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _load_signatures(self) -> None:
        """Digests of the offload lanes' thinking signatures survive a restart, so a conversation
        that crosses lanes after one is still cleaned (digests only: nothing secret, nothing usable)."""
        with contextlib.suppress(OSError, ValueError, TypeError):
            digests = json.loads((self.state_dir / SIGNATURES).read_text(encoding="utf-8"))
            self.runtime.foreign_signatures.load(digests)

    def _save_signatures(self) -> None:
        data = json.dumps(self.runtime.foreign_signatures.export()).encode()
        with contextlib.suppress(OSError):
            paths.write_private(self.state_dir / SIGNATURES, data)

    def _write_pid(self) -> None:
        paths.write_private(self.state_dir / PID_FILE, f"{os.getpid()}\n".encode())

    def _save_last_good(self) -> None:
        """Remember the config that is serving, so a broken file cannot keep the proxy down at start."""
        source = self.runtime.active.loaded.source
        if source == "built-in defaults" or Path(source) == self.state_dir / LAST_GOOD:
            return
        with contextlib.suppress(OSError):
            paths.write_private(self.state_dir / LAST_GOOD, Path(source).read_bytes())

    def _announce(self) -> None:
        snapshot = self.runtime.active
        _publish_secrets(snapshot)
        for override in snapshot.loaded.overrides:
            log.info("environment override: %s", override)
        for name, lane in snapshot.lanes.items():
            if lane.keyed and not lane.available:
                log.warning(
                    "lane %s is unavailable (%s): its traffic goes to %s with reason lane_unavailable",
                    name,
                    lane.problem,
                    snapshot.config.routing.default_lane,
                )
        if self.runtime.last_reload_error:
            log.error("config: %s", self.runtime.last_reload_error)
        log.info(
            "ccmitmd %s ready: %s (config: %s)", __version__, self._status_line(), snapshot.loaded.source
        )

    def _status_line(self) -> str:
        proxy = self.runtime.active.config.proxy
        line = f"intercepting on {paths.http_url(proxy.host, proxy.port)}"
        if proxy.reverse_port:
            line += f", reverse on {paths.http_url(proxy.host, proxy.reverse_port)}"
        return line + ("; paused" if self.runtime.paused else "")

    def _healthy(self) -> bool:
        return self.proxy is not None and self.proxy.listening() and not self._stopping

    async def _watchdog_loop(self, interval_s: float) -> None:
        # The ping comes from the event loop itself: a wedged loop stops pinging and systemd
        # restarts the daemon; a lost listener does too.
        while True:
            if self._healthy():
                self.notifier.watchdog()
            await asyncio.sleep(interval_s)

    # --- config reload (validate, then swap) -----------------------------------------------------
    def _reload_soon(self) -> None:
        self._spawn(self.reload("file change"))

    async def reload(self, trigger: str) -> dict[str, Any]:
        async with self._reload_lock:
            try:
                loaded = load(self.config_path)
            except ConfigError as exc:
                message = f"{exc.source}: " + "; ".join(map(str, exc.problems))
                self.runtime.reload_failed(message)
                log.error(
                    "config reload (%s) rejected, the previous config keeps serving: %s", trigger, message
                )
                return {"ok": False, "error": message}
            previous = self.runtime.active
            snapshot = Snapshot.build(loaded)
            assert self.proxy is not None
            try:
                await self.proxy.apply(loaded.config)
            except ListenerError as exc:
                message = f"listeners: {exc}"
                await self.proxy.apply(previous.config)
                self.runtime.reload_failed(message)
                log.error(
                    "config reload (%s) rejected, the previous config keeps serving: %s", trigger, message
                )
                return {"ok": False, "error": message}
            self.runtime.swap(snapshot)
            _publish_secrets(snapshot)
            self._apply_edges(loaded)
            self._save_last_good()
            changed = _changed_sections(previous.config.redacted(), loaded.config.redacted())
            log.info(
                "config reloaded (%s) from %s; changed: %s",
                trigger,
                loaded.source,
                ", ".join(changed) or "nothing",
            )
            self._announce_unavailable(previous)
            return {"ok": True, "source": loaded.source, "changed": changed}

    def _apply_edges(self, loaded: LoadedConfig) -> None:
        config = loaded.config
        self.usage.file.configure(config.logs.rotate_bytes, config.logs.keep, config.logs.daily)
        if daemon_file := daemon_log_file():
            daemon_file.configure(config.logs.rotate_bytes, config.logs.keep, config.logs.daily)
        self.housekeeping.configure(config.bundle)
        if Path(config.logs.dir) != self.usage.path.parent:
            # Through the writer's queue: every line before the switch lands in the old file,
            # every line after it in the new one.
            self.usage.move_to(Path(config.logs.dir))
            log.info("usage log now written to %s", Path(config.logs.dir) / "usage.jsonl")
        if config.socket_path() != self.control.socket_path:
            log.warning("control.socket changes take effect at the next start")

    def _announce_unavailable(self, previous: Snapshot) -> None:
        for name, lane in self.runtime.active.lanes.items():
            before = previous.lanes.get(name)
            if lane.keyed and not lane.available and (before is None or before.available):
                log.warning("lane %s is unavailable (%s)", name, lane.problem)

    # --- housekeeping ----------------------------------------------------------------------------
    async def _rotate_logs(self) -> None:
        await asyncio.wrap_future(self.usage.rotate_if_due())
        if daemon_file := daemon_log_file():
            await asyncio.to_thread(daemon_file.rotate_if_due)

    async def _force_rotate(self) -> dict[str, Any]:
        usage = await asyncio.wrap_future(self.usage.rotate())
        daemon = None
        if daemon_file := daemon_log_file():
            daemon = await asyncio.to_thread(daemon_file.rotate)
        log.info("logs rotated on request")
        return {"usage": str(usage) if usage else None, "daemon": str(daemon) if daemon else None}

    async def _reopen_logs(self) -> dict[str, Any]:
        await asyncio.wrap_future(self.usage.reopen())
        if daemon_file := daemon_log_file():
            await asyncio.to_thread(daemon_file.reopen)
        log.info("log files reopened")
        return {"reopened": [str(self.usage.path)]}

    async def _run_bundle(self) -> dict[str, Any]:
        config = self.runtime.active.config
        keys = {name: lane.key for name, lane in self.runtime.active.lanes.items() if lane.key}
        log.info("bundle: starting")
        # tar and gzip run in a worker thread: the proxy's event loop never waits for them.
        result = await asyncio.to_thread(
            make_bundle, config, self.state_dir, datetime.now().astimezone(), lane_keys=keys
        )
        if result.ok:
            log.info("bundle: wrote %s", result.archive)
        else:
            log.error("bundle failed: %s", result.error)
        return result.as_dict()

    def _last_bundle_at(self) -> datetime | None:
        last = load_last_run(self.state_dir)
        return last.at if last else None

    # --- control ---------------------------------------------------------------------------------
    def _handlers(self) -> dict[str, Any]:
        async def ping(_: dict[str, Any]) -> str:
            return "pong"

        async def status(_: dict[str, Any]) -> dict[str, Any]:
            return self.status()

        async def pause(_: dict[str, Any]) -> dict[str, Any]:
            self.runtime.set_paused(True, "ccctl pause")
            log.warning(
                "paused by ccctl: every call goes to %s", self.runtime.active.config.routing.default_lane
            )
            return {"paused": True, "source": self.runtime.paused_source}

        async def resume(_: dict[str, Any]) -> dict[str, Any]:
            self.runtime.set_paused(False, "ccctl resume")
            log.warning("resumed by ccctl: routing rules apply again")
            return {"paused": self.runtime.paused, "source": self.runtime.paused_source}

        async def reload(_: dict[str, Any]) -> dict[str, Any]:
            result = await self.reload("ccctl reload")
            if not result["ok"]:
                raise ControlError(f"reload rejected (the previous config keeps serving): {result['error']}")
            return result

        async def config_show(_: dict[str, Any]) -> dict[str, Any]:
            snapshot = self.runtime.active
            return {
                "source": snapshot.loaded.source,
                "overrides": list(snapshot.loaded.overrides),
                "config": snapshot.config.redacted(),
                "lane_keys": {
                    name: ("present" if lane.available else f"missing: {lane.problem}")
                    for name, lane in snapshot.lanes.items()
                    if lane.keyed
                },
            }

        async def rotate(_: dict[str, Any]) -> dict[str, Any]:
            return await self._force_rotate()

        async def reopen_logs(_: dict[str, Any]) -> dict[str, Any]:
            return await self._reopen_logs()

        async def bundle(_: dict[str, Any]) -> dict[str, Any]:
            return await self._run_bundle()

        return {
            "ping": ping,
            "status": status,
            "pause": pause,
            "resume": resume,
            "reload": reload,
            "config-show": config_show,
            "rotate": rotate,
            "reopen-logs": reopen_logs,
            "bundle": bundle,
        }

    def status(self) -> dict[str, Any]:
        snapshot = self.runtime.active
        config = snapshot.config
        lanes: dict[str, Any] = {}
        for name, lane in snapshot.lanes.items():
            stats = self.runtime.stats.get(name)
            breaker = self.runtime.breakers.get(name)
            lanes[name] = {
                "url": config.lanes[name].url,
                "default": name == config.routing.default_lane,
                "header_mode": lane.header_mode,
                "available": lane.available,
                "problem": lane.problem,
                "breaker": breaker.snapshot() if breaker is not None else None,
                **(stats.as_dict() if stats else LaneStats().as_dict()),
            }
        last_bundle = load_last_run(self.state_dir)
        return {
            "running": True,
            "pid": os.getpid(),
            "version": __version__,
            "started_at": self.runtime.started_at.isoformat(timespec="seconds"),
            "uptime_s": self.runtime.uptime_s(),
            "listeners": {
                "host": config.proxy.host,
                "port": config.proxy.port,
                "reverse_port": config.proxy.reverse_port,
                "bound": [{"mode": info.mode, "addresses": info.addresses} for info in self.proxy.listeners()]
                if self.proxy
                else [],
            },
            "paused": self.runtime.paused,
            "paused_source": self.runtime.paused_source,
            "http2": config.proxy.http2,
            "intercept_hosts": config.proxy.intercept_hosts,
            "in_flight": self.router.in_flight,
            "lanes": lanes,
            "config": {
                "path": str(self.config_path),
                "source": snapshot.loaded.source,
                "loaded_at": snapshot.loaded.loaded_at.isoformat(timespec="seconds"),
                "overrides": list(snapshot.loaded.overrides),
                "last_reload_error": self.runtime.last_reload_error,
                "last_reload_error_at": self.runtime.last_reload_error_at,
            },
            "logs": {
                "usage": str(self.usage.path),
                "daemon": str(self.state_dir / "daemon.log"),
                "lines_written": self.usage.lines_written,
                "write_errors": self.usage.write_errors,
            },
            "control_socket": str(self.control.socket_path),
            "jobs": self.housekeeping.jobs(),
            "bundle": {
                "next": self.housekeeping.next_run(BUNDLE_JOB),
                "last": last_bundle.as_dict() if last_bundle else None,
            },
            "now": datetime.now(UTC).isoformat(timespec="seconds"),
        }


def _publish_secrets(snapshot: Snapshot) -> None:
    """Tell the log formatter the lane keys in use, so it scrubs them even in an unknown format."""
    set_secret_values(tuple(lane.key for lane in snapshot.lanes.values() if lane.key))


def _changed_sections(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    return sorted(key for key in set(before) | set(after) if before.get(key) != after.get(key))


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_option",
    metavar="PATH",
    help="Config file (default: $CCMITM_CONFIG, else $XDG_CONFIG_HOME/ccmitm/config.yaml).",
)
@click.option(
    "--log-level", default="info", show_default=True, type=click.Choice(["debug", "info", "warning", "error"])
)
@click.version_option(__version__, prog_name="ccmitmd")
def main(config_option: str | None, log_level: str) -> None:
    """Run the ccmitm routing proxy in the foreground."""
    os.umask(0o077)  # everything the daemon creates is the user's alone
    config_path = paths.resolve_config_path(config_option)
    state_dir = paths.ensure_private_dir(paths.state_home())
    try:
        start = load_for_start(config_path, state_dir)
    except ConfigError as exc:
        click.echo(f"ccmitmd: invalid config {exc.source}:", err=True)
        for problem in exc.problems:
            click.echo(f"  {problem}", err=True)
        click.echo("ccmitmd: fix it (check with `ccctl config check FILE`) and start again", err=True)
        sys.exit(EXIT_CONFIG)
    setup_logging(state_dir, start.loaded.config, log_level)
    code = asyncio.run(Daemon(config_path, state_dir, start).run())
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    main()
