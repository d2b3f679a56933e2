"""ccctl: the command group. Each command group lives in its own module; this one only joins them.

A command parses its arguments, calls the daemon's control socket or a pure function, and formats
the answer; no routing, reporting or installing logic lives under ``cli/``.
"""

from __future__ import annotations

import click

from ccmitm import __version__
from ccmitm.cli.completion import completion
from ccmitm.cli.config import config
from ccmitm.cli.control import COMMANDS as CONTROL_COMMANDS
from ccmitm.cli.logrotate import logrotate
from ccmitm.cli.report import bundle, summarize, verify
from ccmitm.cli.service import service
from ccmitm.cli.token import COMMANDS as TOKEN_COMMANDS
from ccmitm.cli.top import top
from ccmitm.cli.wiring import COMMANDS as WIRING_COMMANDS
from ccmitm.cli.workflow import COMMANDS as WORKFLOW_COMMANDS


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_option",
    metavar="PATH",
    help="Config file (default: $CCMITM_CONFIG, else $XDG_CONFIG_HOME/ccmitm/config.yaml).",
)
@click.version_option(__version__, prog_name="ccctl")
@click.pass_context
def main(ctx: click.Context, config_option: str | None) -> None:
    """Control the ccmitm routing proxy."""
    ctx.obj = {"config_option": config_option}


_GROUPS = (config, service, summarize, verify, bundle, top, logrotate, completion)
for _command in (*_GROUPS, *CONTROL_COMMANDS, *WIRING_COMMANDS, *WORKFLOW_COMMANDS, *TOKEN_COMMANDS):
    main.add_command(_command)


if __name__ == "__main__":  # pragma: no cover
    main()
