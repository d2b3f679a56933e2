"""``ccctl logrotate``: print the logrotate config for this install (its paths, its ccctl)."""

from __future__ import annotations

from pathlib import Path

import click

from ccmitm import paths
from ccmitm.cli.common import config_path, load_config
from ccmitm.install import logrotate as logrotate_file
from ccmitm.logs.daemonlog import DAEMON_LOG
from ccmitm.logs.usage import USAGE_FILE


@click.command("logrotate")
@click.option(
    "--repository-copy",
    is_flag=True,
    hidden=True,  # `make docs` writes logrotate/ccmitm with it; users want their own paths
    help="The generic copy kept in the repository (default paths, ccctl from PATH).",
)
@click.pass_context
def logrotate(ctx: click.Context, repository_copy: bool) -> None:
    """Print a logrotate config with this install's paths (for `> ~/.config/logrotate/ccmitm`).

    Only for those who prefer the system's logrotate to the built-in rotation (the default)."""
    if repository_copy:
        click.echo(logrotate_file.repository_copy(USAGE_FILE, DAEMON_LOG), nl=False)
        return
    config = load_config(ctx)
    state_dir = paths.state_home()
    click.echo(
        logrotate_file.for_install(
            usage_log=Path(config.logs.dir) / USAGE_FILE,
            daemon_log=state_dir / DAEMON_LOG,
            config_path=config_path(ctx),
            state_dir=state_dir,
        ),
        nl=False,
    )
