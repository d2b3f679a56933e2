"""Shared plumbing for ccctl's command modules: the config path, the config, the daemon call."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from ccmitm import paths
from ccmitm.control.client import call
from ccmitm.control.protocol import Command, ControlError

if TYPE_CHECKING:
    from ccmitm.config.model import Config


def config_path(ctx: click.Context) -> Path:
    root = ctx.find_root()
    option = (root.obj or {}).get("config_option")
    return paths.resolve_config_path(option)


def load_config(ctx: click.Context) -> Config:
    """The config ccctl should use: the file if it is valid, else the built-in defaults (with a warning)."""
    # Here, not at the top: the config model (pydantic) costs several times a bare Python start,
    # and the commands that only talk to the daemon find its socket without it (cli/locate.py).
    from ccmitm.config.errors import ConfigError
    from ccmitm.config.load import load, validate

    path = config_path(ctx)
    try:
        return load(path).config
    except ConfigError as exc:
        click.echo(f"ccctl: warning: using built-in defaults; {exc.report()}", err=True)
        return validate({})


def fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"ccctl: {message}", err=True)
    sys.exit(code)


def daemon_call(ctx: click.Context, cmd: Command, timeout: float = 30.0, **args: Any) -> Any:
    """Call the running daemon; a one-line actionable message and exit 1 when that fails."""
    from ccmitm.cli.locate import control_socket

    socket_path = control_socket((ctx.find_root().obj or {}).get("config_option"))
    try:
        return call(socket_path, cmd, timeout=timeout, **args)
    except ControlError as exc:
        fail(str(exc))


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))
