"""ccctl: the control client. Parses, calls the control socket or a pure function, formats."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ccmitm import __version__
from ccmitm.config.load import check_file


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


@main.group()
def config() -> None:
    """Check or show configuration."""


@config.command("check")
@click.argument("file", type=click.Path(path_type=Path))
def config_check(file: Path) -> None:
    """Validate FILE; list every problem with its path. Opens no socket."""
    problems = check_file(file)
    if not problems:
        click.echo(f"{file}: ok")
        return
    click.echo(f"{file}: {len(problems)} problem(s)", err=True)
    for problem in problems:
        click.echo(f"  {problem}", err=True)
    sys.exit(1)


@config.command("set")
@click.argument("key")
@click.argument("value")
@click.pass_context
def config_set(ctx: click.Context, key: str, value: str) -> None:
    """Set KEY (e.g. proxy.http2) to VALUE in the config file, keeping its comments.

    The edited file is validated first; the running daemon reloads it by itself."""
    from ccmitm.cli.common import config_path
    from ccmitm.config.edit import parse_value, set_value
    from ccmitm.config.load import ConfigError

    path = config_path(ctx)
    try:
        set_value(path, key, parse_value(value))
    except ConfigError as exc:
        click.echo(f"ccctl: not changed, the result would be invalid: {exc.source}", err=True)
        for problem in exc.problems:
            click.echo(f"  {problem}", err=True)
        sys.exit(1)
    click.echo(f"{path}: {key} = {value}")


# --- command modules (one room each) -----------------------------------------------------------------
from ccmitm.cli.service import service  # noqa: E402

main.add_command(service)
from ccmitm.cli.control import COMMANDS as _CONTROL_COMMANDS  # noqa: E402
from ccmitm.cli.control import config_show  # noqa: E402

for _command in _CONTROL_COMMANDS:
    main.add_command(_command)
config.add_command(config_show)
from ccmitm.cli.report import bundle, summarize, verify  # noqa: E402

main.add_command(summarize)
main.add_command(verify)
main.add_command(bundle)
from ccmitm.cli.top import top  # noqa: E402

main.add_command(top)
from ccmitm.cli.workflow import COMMANDS as _WORKFLOW_COMMANDS  # noqa: E402

for _command in _WORKFLOW_COMMANDS:
    main.add_command(_command)


if __name__ == "__main__":  # pragma: no cover
    main()
