"""`ccctl token`: the client token that wired clients show ccmitmd (proxy.client_auth).

`rotate` writes a new token and asks a running daemon to read it (control command
``token-reload``); `path` prints where it is kept; `show` prints the token itself, only when asked.
"""

from __future__ import annotations

import click

from ccmitm.cli.common import fail, load_config
from ccmitm.config.clienttoken import TokenError, ensure_token, rotate_token, token_path
from ccmitm.control.client import DaemonNotRunning, call
from ccmitm.control.protocol import ControlError


@click.group()
def token() -> None:
    """The client token wired clients show ccmitmd (proxy.client_auth)."""


@token.command("path")
def path() -> None:
    """Print the token file's path (not the token)."""
    click.echo(str(token_path()))


@token.command("show")
def show() -> None:
    """Print the token (made first if there is none yet). It is a secret: keep it out of logs."""
    try:
        click.echo(ensure_token(token_path()))
    except TokenError as exc:
        fail(str(exc))


@token.command("rotate")
@click.pass_context
def rotate(ctx: click.Context) -> None:
    """Replace the token; a running ccmitmd refuses the old one from its next request on.

    Wired shells need wiring again afterwards: eval "$(ccctl env)" (or ccsub)."""
    where = token_path()
    try:
        rotate_token(where)
    except TokenError as exc:
        fail(str(exc))
    config = load_config(ctx)
    try:
        call(config.socket_path(), "token-reload", timeout=10.0)
        told = "ccmitmd uses it from now on"
    except DaemonNotRunning:
        told = "ccmitmd is not running: it uses the new token when it starts"
    except ControlError as exc:
        fail(f"new client token in {where}, ccmitmd did not take it: {exc}; `ccctl stop`, `ccctl start`")
    click.echo(f"new client token in {where}; {told}")
    click.echo('wire your shells again: eval "$(ccctl env)"  (fish: ccctl env | source), or ccsub')


COMMANDS = [token]
