"""The running daemon: starts its parts in order, reloads its config, stops them in reverse.

Start order: state dir and logs -> usage writer -> proxy listeners -> control socket -> READY ->
warm imports, quota poller, config watcher (then a re-check of the file), scheduler. Stop order
is the reverse, after a drain of in-flight calls. It holds no routing logic: the proxy's Router
decides, this object only owns and connects the parts.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from ccmitm import __version__, paths
from ccmitm.config.clienttoken import FILE_NAME, TokenError, ensure_token, read_token
from ccmitm.config.errors import ConfigError, ConfigMissing
from ccmitm.config.keys import resolve_lane_key
from ccmitm.config.load import BUILTIN_SOURCE, LOAD_TIMEOUT_S, LoadedConfig, load
from ccmitm.config.model import Config
from ccmitm.control.protocol import ControlError, ReloadReply, ReopenReply, RotateReply, TokenReloadReply
from ccmitm.control.server import ControlServer
from ccmitm.logs.daemonlog import DaemonLog
from ccmitm.logs.usage import UsageLog, UsageRecord
from ccmitm.proxy.addon import Router
from ccmitm.proxy.auth import ClientAuth
from ccmitm.proxy.master import ListenerError, Proxy, secure_confdir
from ccmitm.proxy.state import PauseStore, Runtime, Snapshot
from ccmitm.reports.bundle_state import load_last_run
from ccmitm.supervisor.handlers import control_handlers
from ccmitm.supervisor.housekeeping import Housekeeping
from ccmitm.supervisor.notify import Notifier
from ccmitm.supervisor.quota import QuotaMeter
from ccmitm.supervisor.sessions import SessionCounters
from ccmitm.supervisor.watcher import ConfigWatcher
from ccmitm.telemetry.service import Telemetry

log = logging.getLogger("ccmitm")

EXIT_LISTEN = 3
EXIT_TOKEN = 4
PID_FILE = "ccmitmd.pid"
LAST_GOOD = paths.LAST_GOOD_CONFIG
SIGNATURES = "foreign-signatures.json"
CLIENT_TOKEN = FILE_NAME


#: What identifies one version of the config file (None: no file); see file_fingerprint().
Fingerprint = tuple[int, int, int] | None


def file_fingerprint(path: Path) -> Fingerprint:
    """The file's inode, size and mtime: an editor's save (in place or by rename) changes one."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns)


@dataclass(frozen=True)
class StartConfig:
    loaded: LoadedConfig
    error: str | None  # why the config file itself is not what serves (shown in status and at start)
    # The file as it was just before it was read: the watcher starts after READY, and an edit
    # made in between is caught by comparing this with the file once the watcher runs.
    fingerprint: Fingerprint = None


def load_for_start(config_path: Path, state_dir: Path) -> StartConfig:
    """The config file; if it is invalid or gone, the last config that was valid (so Claude Code
    keeps working). No file and no last good config (a first start) means the built-in defaults."""
    fingerprint = file_fingerprint(config_path)  # before the read: a later edit then differs
    last_good = state_dir / LAST_GOOD
    have_last_good = last_good.is_file()
    try:
        return StartConfig(load(config_path, missing_ok=not have_last_good), None, fingerprint)
    except ConfigError as exc:
        if not have_last_good:
            raise
        try:
            loaded = load(last_good)
        except ConfigError:
            raise exc from None
        if isinstance(exc, ConfigMissing):
            return StartConfig(loaded, f"{exc.one_line()}: serving the last good config", fingerprint)
        return StartConfig(
            loaded, f"invalid at start, serving the last good config: {exc.one_line()}", fingerprint
        )


def taken_ports(config: Config) -> str | None:
    """Which configured listener port another process holds, as one line with the fix; None when
    both are free. A bind that fails with anything else is left for the listeners to report."""
    proxy = config.proxy
    wanted = [("proxy.port", proxy.port)]
    if proxy.reverse_port:
        wanted.append(("proxy.reverse_port", proxy.reverse_port))
    for key, port in wanted:
        try:
            addresses = socket.getaddrinfo(proxy.host, port, type=socket.SOCK_STREAM)
        except OSError:
            continue
        for family, kind, protocol, _, address in addresses:
            with socket.socket(family, kind, protocol) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio binds
                try:
                    probe.bind(address)
                except OSError as exc:
                    if exc.errno != errno.EADDRINUSE:
                        continue
                    holder = (
                        f"lsof -nP -iTCP:{port} -sTCP:LISTEN"
                        if sys.platform == "darwin"
                        else f"ss -ltnp 'sport = :{port}'"
                    )
                    return (
                        f"port {port} ({key}) on {proxy.host} is already in use; is ccmitmd already "
                        f"running (`ccctl status`)? Else stop what holds it (`{holder}`) "
                        f"or choose another port (`ccctl config set {key} PORT`)"
                    )
    return None


class Daemon:
    def __init__(
        self, config_path: Path, state_dir: Path, start: StartConfig, daemon_log: DaemonLog | None = None
    ):
        self.config_path = config_path
        self._start_fingerprint = start.fingerprint
        self.daemon_log = daemon_log  # None when the caller set up logging itself
        self.state_dir = state_dir
        config = start.loaded.config
        self.runtime = Runtime(Snapshot.build(start.loaded), PauseStore(state_dir / "state.json"))
        if start.error:
            self.runtime.reload_failed(start.error)
        self._load_signatures()
        self.usage = UsageLog(
            Path(config.logs.dir), config.logs.rotate_bytes, config.logs.keep, config.logs.daily
        )
        # Everything that learns from a finished call (the usage log first, then counters and
        # exporters) gets the same record, on the proxy's event loop; each must return at once.
        self.record_observers: list[Callable[[UsageRecord], None]] = [self.usage.write]
        # Per-session counters for Claude Code's status line (`ccctl statusline`).
        self.sessions = SessionCounters(lambda: self.runtime.active.config.routing.default_lane)
        self.record_observers.append(self.sessions.observe)
        self.router = Router(self.runtime, self._publish)
        self.client_auth = ClientAuth(self.runtime, self.router.answer_locally)
        self.token_path = state_dir / CLIENT_TOKEN
        self.quota = QuotaMeter(self.runtime)
        # Prometheus and OTLP: off unless configured; fed the same records as the usage log.
        self.telemetry = Telemetry(
            self.runtime, self.quota.status, lambda: self.router.in_flight, __version__
        )
        self.record_observers.append(self.telemetry.observe)
        self.proxy: Proxy | None = None
        self.notifier = Notifier.from_env()
        self.control = ControlServer(config.socket_path(), control_handlers(self))
        self.watcher = ConfigWatcher(config_path, self._reload_soon)
        self.housekeeping = Housekeeping(
            self._rotate_logs, self.run_bundle, self._last_bundle_at, self.recheck_key_files
        )
        self._stop = asyncio.Event()
        self._force = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping = False

    def _publish(self, record: UsageRecord) -> None:
        for observer in self.record_observers:
            observer(record)

    # --- lifecycle -----------------------------------------------------------------------------
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop_signal)
        loop.add_signal_handler(signal.SIGHUP, lambda: self._spawn(self.reopen_logs()))
        config = self.runtime.active.config
        taken = taken_ports(config)
        if taken:
            # Said once, here, before mitmproxy tries (and logs its own multi-line version).
            log.error("cannot start: %s", taken)
            return EXIT_LISTEN
        try:
            self._use_token(self._read_token(config))
        except TokenError as exc:
            log.error("cannot start: %s", exc)
            return EXIT_TOKEN
        self.usage.start()
        # The client check first: a refused request never reaches the Router's routing.
        self.proxy = Proxy(config, [self.client_auth, self.router])
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
        await self.telemetry.configure(config)
        self._announce()
        self.notifier.ready(self._status_line())
        if self.notifier.watchdog_interval_s:
            self._spawn(self._watchdog_loop(self.notifier.watchdog_interval_s))
        await self._after_ready()
        await self._stop.wait()
        await self._shutdown()
        return 0

    async def _after_ready(self) -> None:
        """What READY does not wait for: the quota poller, the config watcher, the scheduler
        (nothing of theirs is due in the first second) and the imports of the rare paths."""
        # In worker threads (an fsync, imports): the event loop keeps serving calls meanwhile.
        await asyncio.to_thread(self._save_last_good)
        await asyncio.to_thread(_warm_imports)
        self._spawn(self.quota.run())
        self.watcher.start()
        if file_fingerprint(self.config_path) != self._start_fingerprint:
            # Edited between the read at start and the watcher's start: no event will come for it.
            self._reload_soon()
        self.housekeeping.start(self.runtime.active.config.bundle)

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
        await self.quota.close()
        await self.proxy.shutdown()
        await self.telemetry.close()  # after the proxy: the last calls are in the last export
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
        """Remember the config that is serving, so a broken or deleted file cannot keep the proxy
        down at start. Saved as validated data, not the file's text: only schema keys, none of
        which holds a key (lane keys come from the environment or key files), and none of the
        file's comments (where a key might have been pasted)."""
        loaded = self.runtime.active.loaded
        if loaded.source == BUILTIN_SOURCE or Path(loaded.source) == self.state_dir / LAST_GOOD:
            return
        config = loaded.validated or loaded.config
        text = "# The last config ccmitmd served from its file (validated; no keys). Written by ccmitmd.\n"
        text += yaml.safe_dump(config.redacted(), sort_keys=False)
        with contextlib.suppress(OSError):
            paths.write_private(self.state_dir / LAST_GOOD, text.encode())

    def _announce(self) -> None:
        snapshot = self.runtime.active
        self._publish_secrets()
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

    def _publish_secrets(self) -> None:
        """Tell the log formatter the secrets in use (lane keys, the client token), so it scrubs
        them even in an unknown format."""
        if self.daemon_log is not None:
            self.daemon_log.set_secret_values(tuple(self.runtime.secret_values()))

    # --- the client token ------------------------------------------------------------------------
    def _read_token(self, config: Config) -> str | None:
        """The client token from its file, created first when proxy.client_auth needs one and
        there is none. Blocking file I/O: at start, or in a worker thread."""
        return ensure_token(self.token_path) if config.proxy.client_auth else read_token(self.token_path)

    def _use_token(self, token: str | None) -> bool:
        """Put the token in force (on the event loop); True when it changed."""
        changed = token != self.runtime.client_token
        self.runtime.client_token = token
        self._publish_secrets()
        return changed

    async def reload_token(self) -> TokenReloadReply:
        """`ccctl token rotate` wrote a new token: use it from the next request on (the old one
        stops working, tunnels opened with it included)."""
        async with self._reload_lock:  # a reload reading the file meanwhile cannot undo this
            config = self.runtime.active.config
            try:
                changed = self._use_token(await asyncio.to_thread(self._read_token, config))
            except TokenError as exc:
                raise ControlError(str(exc)) from None
        if changed:
            log.warning("client token replaced (%s): clients need the new one", self.token_path)
        return {"changed": changed, "path": str(self.token_path), "required": config.proxy.client_auth}

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

    async def reload(self, trigger: str) -> ReloadReply:
        async with self._reload_lock:
            # A running daemon that serves a file keeps serving it when the file disappears (a
            # deleted or dangling config must not move its ports or repoint its lanes).
            missing_ok = self.runtime.active.loaded.source == BUILTIN_SOURCE
            try:
                # Reading, parsing, validation and reading lane keys run in a worker thread, with
                # a deadline: a reload never holds up the streams the event loop is serving.
                loaded, snapshot = await asyncio.wait_for(
                    asyncio.to_thread(self._load_snapshot, missing_ok), LOAD_TIMEOUT_S
                )
            except (ConfigError, TimeoutError) as exc:
                if isinstance(exc, ConfigMissing):
                    message = f"{exc.one_line()}: serving the last good config"
                elif isinstance(exc, ConfigError):
                    message = exc.one_line()
                else:
                    message = f"{self.config_path}: not read within {LOAD_TIMEOUT_S:g}s"
                self.runtime.reload_failed(message)
                log.error(
                    "config reload (%s) rejected, the previous config keeps serving: %s", trigger, message
                )
                return {"ok": False, "error": message}
            previous = self.runtime.active
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
            token = self.runtime.client_token
            try:
                # Read before the swap, so client_auth turned on never meets a missing token (the
                # file is made now if there is none).
                token = await asyncio.to_thread(self._read_token, loaded.config)
            except TokenError as exc:
                log.error("%s: the client token stays as it was", exc)
            self.runtime.swap(snapshot)
            self._use_token(token)
            self._apply_edges(loaded)
            await self.telemetry.configure(loaded.config)
            await asyncio.to_thread(self._save_last_good)  # an fsync: not on the event loop
            changed = _changed_sections(previous.config.redacted(), loaded.config.redacted())
            log.info(
                "config reloaded (%s) from %s; changed: %s",
                trigger,
                loaded.source,
                ", ".join(changed) or "nothing",
            )
            self._announce_unavailable(previous)
            return {"ok": True, "source": loaded.source, "changed": changed}

    def _load_snapshot(self, missing_ok: bool) -> tuple[LoadedConfig, Snapshot]:
        loaded = load(self.config_path, missing_ok=missing_ok)
        return loaded, Snapshot.build(loaded)

    def _apply_edges(self, loaded: LoadedConfig) -> None:
        config = loaded.config
        self.usage.file.configure(config.logs.rotate_bytes, config.logs.keep, config.logs.daily)
        if self.daemon_log is not None:
            self.daemon_log.file.configure(config.logs.rotate_bytes, config.logs.keep, config.logs.daily)
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
    async def recheck_key_files(self) -> None:
        """Read again the key files of lanes that have no key yet (a chmod 600 or a new file makes
        them available without `ccctl reload`). Off the hot path: a periodic job and `ccctl status`
        call it; the files are read in a worker thread, and only when some lane is waiting."""
        snapshot = self.runtime.active
        waiting = snapshot.waiting_key_files()
        if not waiting:
            return
        keys = await asyncio.to_thread(
            lambda: {name: resolve_lane_key(lane) for name, lane in waiting.items()}
        )
        found = {name: key for name, key in keys.items() if key is not None}
        adopted = self.runtime.adopt_keys(snapshot, found)
        if adopted:
            self._publish_secrets()
            for name in adopted:
                log.info("lane %s: its key file is usable now; the lane is available again", name)

    async def _rotate_logs(self) -> None:
        await asyncio.wrap_future(self.usage.rotate_if_due())
        if self.daemon_log is not None:
            await asyncio.to_thread(self.daemon_log.file.rotate_if_due)

    async def force_rotate(self) -> RotateReply:
        usage = await asyncio.wrap_future(self.usage.rotate())
        daemon = None
        if self.daemon_log is not None:
            daemon = await asyncio.to_thread(self.daemon_log.file.rotate)
        log.info("logs rotated on request")
        return {"usage": str(usage) if usage else None, "daemon": str(daemon) if daemon else None}

    async def reopen_logs(self) -> ReopenReply:
        await asyncio.wrap_future(self.usage.reopen())
        if self.daemon_log is not None:
            await asyncio.to_thread(self.daemon_log.file.reopen)
        log.info("log files reopened")
        return {"reopened": [str(self.usage.path)]}

    async def run_bundle(self) -> dict[str, Any]:
        config = self.runtime.active.config
        keys = self.runtime.labelled_secrets()
        from ccmitm.reports.bundle import make_bundle  # tar, gzip, the report: only when asked

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


def _warm_imports() -> None:
    """Import what the first config watch, scheduler start and failover hop need."""
    import apscheduler.schedulers.asyncio  # noqa: F401
    import httpx  # noqa: F401
    import watchdog.observers  # noqa: F401


def _changed_sections(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    return sorted(key for key in set(before) | set(after) if before.get(key) != after.get(key))
