"""``ccmitmd``: the command. It only finds the config and the state dir, sets up logging and runs
the :class:`~ccmitm.supervisor.daemon.Daemon`; everything else happens there."""

from __future__ import annotations

import asyncio
import os
import sys

import click

from ccmitm import __version__, paths
from ccmitm.config.errors import ConfigError
from ccmitm.logs.daemonlog import setup_logging
from ccmitm.supervisor.daemon import Daemon, load_for_start

EXIT_CONFIG = 2


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
        click.echo(f"ccmitmd: invalid config {exc.report()}", err=True)
        click.echo("ccmitmd: fix it (check with `ccctl config check FILE`) and start again", err=True)
        sys.exit(EXIT_CONFIG)
    daemon_log = setup_logging(state_dir, start.loaded.config, log_level)
    code = asyncio.run(Daemon(config_path, state_dir, start, daemon_log).run())
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    main()
