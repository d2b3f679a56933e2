"""ccctl: the command group. Each command group lives in its own module; this one only joins them.

A command parses its arguments, calls the daemon's control socket or a pure function, and formats
the answer; no routing, reporting or installing logic lives under ``cli/``.

The command modules load on demand: `ccctl status` imports cli/control.py, not the report,
service or config-editing code (each costs more than a bare Python start). ``--help`` and shell
completion list them all.
"""

from __future__ import annotations

import importlib
import sys

import click

#: Every command: its name -> "module:attribute" under ccmitm.cli.
LAZY_COMMANDS: dict[str, str] = {
    "bundle": "report:bundle",
    "completion": "completion:completion",
    "config": "config:config",
    "endurance": "workflow:endurance",
    "env": "wiring:env",
    "lane": "control:lane",
    "logrotate": "logrotate:logrotate",
    "pause": "control:pause",
    "prompt": "workflow:prompt",
    "reload": "control:reload",
    "reopen-logs": "control:reopen_logs",
    "resume": "control:resume",
    "rotate": "control:rotate",
    "run": "wiring:run",
    "service": "service:service",
    "session": "control:session",
    "shell": "wiring:shell",
    "start": "control:start",
    "status": "control:status",
    "stop": "control:stop",
    "subagent": "workflow:subagent_group",
    "summarize": "report:summarize",
    "top": "top:top",
    "verify": "report:verify",
}


class LazyGroup(click.Group):
    """A click group whose commands are imported when they are named (or listed by --help)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in LAZY_COMMANDS:
            module, _, attribute = LAZY_COMMANDS[cmd_name].partition(":")
            command = getattr(importlib.import_module(f"ccmitm.cli.{module}"), attribute)
            self.add_command(command, cmd_name)
        return command


def _version(ctx: click.Context, _: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        from ccmitm import __version__

        click.echo(f"ccctl, version {__version__}")
        ctx.exit()


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_option",
    metavar="PATH",
    help="Config file (default: $CCMITM_CONFIG, else $XDG_CONFIG_HOME/ccmitm/config.yaml).",
)
# The version the package metadata says, read only when asked (importlib.metadata is slow).
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_version,
    help="Show the version and exit.",
)
@click.pass_context
def main(ctx: click.Context, config_option: str | None) -> None:
    """Control the ccmitm routing proxy."""
    ctx.obj = {"config_option": config_option}


@main.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []}
)
@click.pass_context
def statusline(ctx: click.Context) -> None:
    """One line for Claude Code's status line (`ccctl statusline --help`; install, uninstall)."""
    # The `ccctl` entry point runs it before click loads (cli/entry.py); this is for --help's list.
    from ccmitm.cli.statusline import run

    sys.exit(run(ctx.args, (ctx.find_root().obj or {}).get("config_option")))


if __name__ == "__main__":  # pragma: no cover
    main()
