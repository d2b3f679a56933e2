"""ccmitmd: the long-running supervisor. It wires the rooms together and holds no routing logic.

Start order: config -> state dir and logs -> usage writer -> proxy listeners -> control socket,
config watcher, scheduler -> READY. Stop order is the reverse, with a drain of in-flight streams.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

import click

from . import __version__, paths
from .addon import Router
from .config import ConfigError, LoadedConfig, load
from .daemonlog import setup_logging
from .proxy import ListenerError, Proxy
from .runtime import PauseStore, Runtime, Snapshot
from .usage import UsageLog

log = logging.getLogger("ccmitm")

EXIT_CONFIG = 2
EXIT_LISTEN = 3


class Daemon:
    def __init__(self, config_path: Path, loaded: LoadedConfig):
        self.config_path = config_path
        self.state_dir = paths.ensure_private_dir(paths.state_home())
        config = loaded.config
        self.runtime = Runtime(Snapshot.build(loaded), PauseStore(self.state_dir / "state.json"))
        self.usage = UsageLog(
            Path(config.logs.dir), config.logs.rotate_bytes, config.logs.keep, config.logs.daily
        )
        self.proxy: Proxy | None = None
        self._stop = asyncio.Event()

    def _announce_lanes(self) -> None:
        snapshot = self.runtime.active
        for name, lane in snapshot.lanes.items():
            if lane.keyed and not lane.available:
                log.warning(
                    "lane %s is unavailable (%s): its traffic goes to %s with reason lane_unavailable",
                    name,
                    lane.problem,
                    snapshot.config.routing.default_lane,
                )

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        self.usage.start()
        config = self.runtime.active.config
        self.proxy = Proxy(config, [Router(self.runtime, self.usage.write)])
        try:
            await self.proxy.start()
        except ListenerError as exc:
            log.error("cannot listen: %s", exc)
            await self.proxy.shutdown()
            self.usage.close()
            return EXIT_LISTEN
        self._announce_lanes()
        proxy = config.proxy
        reverse = f", reverse on http://{proxy.host}:{proxy.reverse_port}" if proxy.reverse_port else ""
        log.info(
            "ccmitmd %s ready: intercepting on http://%s:%s%s (config: %s%s)",
            __version__,
            proxy.host,
            proxy.port,
            reverse,
            self.runtime.active.loaded.source,
            "; paused" if self.runtime.paused else "",
        )
        await self._stop.wait()
        log.info("stopping")
        await self.proxy.shutdown()
        self.usage.close()
        log.info("stopped")
        return 0


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
    config_path = paths.resolve_config_path(config_option)
    try:
        loaded = load(config_path)
    except ConfigError as exc:
        click.echo(f"ccmitmd: invalid config {exc.source}:", err=True)
        for problem in exc.problems:
            click.echo(f"  {problem}", err=True)
        sys.exit(EXIT_CONFIG)
    state_dir = paths.ensure_private_dir(paths.state_home())
    setup_logging(state_dir, loaded.config, log_level)
    os.umask(0o077)
    code = asyncio.run(Daemon(config_path, loaded).run())
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    main()
