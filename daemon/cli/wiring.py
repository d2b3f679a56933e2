"""ccctl commands that wire a shell or one command to ccmitmd: `env` (print the lines that wire or
unwire a shell), `run` (run one command wired, acting by `wiring.when_down` when the daemon does
not answer) and `shell init` (print the shell habits, `ccsub` & co.).

`ccctl env` runs in every new shell (``eval "$(ccctl env)"`` in an rc file), and validating the
config with its model (pydantic) costs several times a bare Python start. So it asks the running
daemon first, which has the config validated already; it trusts the answer only when the config
file on disk is byte for byte the one the daemon serves, and validates the file itself otherwise.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ccmitm import paths
from ccmitm.cli.common import config_path, fail, load_config
from ccmitm.config.clienttoken import TokenError, ensure_token, token_path
from ccmitm.control.protocol import ControlError, WiringReply
from ccmitm.install import shell as shell_text
from ccmitm.install import wiring

if TYPE_CHECKING:
    from ccmitm.config.model import Config

SHELLS = ("bash", "zsh", "fish")
POSIX_SHELLS = frozenset({"sh", "dash", "ash", "ksh", "mksh", "busybox"})
#: How long `ccctl env` waits for the daemon before it validates the config file itself.
ASK_TIMEOUT_S = 2.0


def _token(client_auth: bool, path: Path) -> str | None:
    """The client token wired clients show, when the listeners want one (made first if there is
    none yet, so a shell wired before ccmitmd ever ran works once it starts)."""
    if not client_auth:
        return None
    try:
        return ensure_token(path)
    except TokenError as exc:
        fail(str(exc))


def _listener(config: Config) -> wiring.Listener:
    return wiring.Listener.of(config, _token(config.proxy.client_auth, token_path()))


def _wiring_facts(ctx: click.Context) -> tuple[wiring.Listener, str | None]:
    """The listener to wire to and proxy.upstream_proxy: from the daemon when it serves the
    config file on disk, else from the file, validated (a warning and the defaults if invalid)."""
    reply = _daemon_wiring(ctx)
    if reply is not None:
        token = _token(reply["client_auth"], Path(reply["token_file"]))
        listener = wiring.Listener.at(
            reply["host"], reply["port"], reply["reverse_port"], reply["confdir"], token
        )
        return listener, reply["upstream_proxy"]
    config = load_config(ctx)
    return _listener(config), config.proxy.upstream_proxy


def _daemon_wiring(ctx: click.Context) -> WiringReply | None:
    """The daemon's ``wiring`` answer if it holds for this ccctl, else None: the daemon is down
    (or older, without the command), its config is not the file on disk (a rejected or pending
    reload, another --config), or its ~ is another directory than ours."""
    from ccmitm.cli.locate import control_socket
    from ccmitm.control.client import call

    try:
        reply: WiringReply = call(
            control_socket((ctx.find_root().obj or {}).get("config_option")), "wiring", timeout=ASK_TIMEOUT_S
        )
    except ControlError:
        return None
    if not isinstance(reply, dict) or not WiringReply.__required_keys__ <= reply.keys():
        return None  # a daemon of another version: the file says it for sure
    if reply["home"] != str(paths.expand("~")):
        return None
    return reply if reply.get("config_digest") == _digest_on_disk(config_path(ctx)) else None


def _digest_on_disk(path: Path) -> str | None:
    """What the daemon would report for the file at ``path``: its digest, None when there is no
    file (the built-in defaults), "" (matches nothing) when it cannot be read."""
    if not path.exists():  # as config.load does: no file means the built-in defaults
        return None
    try:
        return paths.file_digest(path.read_bytes())
    except OSError:
        return ""


def _calling_shell() -> str:
    """The shell that runs this ccctl (`$(ccctl env)` in bash or zsh, `ccctl env | source` in fish):
    our parent process (from /proc, else ps), else the login shell ($SHELL), else bash."""
    parent = os.getppid()
    try:
        name = Path(f"/proc/{parent}/comm").read_text().strip()
    except OSError:  # no /proc (macOS): ask ps; a login shell shows as "-zsh"
        try:
            done = subprocess.run(
                ["ps", "-o", "comm=", "-p", str(parent)], capture_output=True, text=True, timeout=2
            )
            name = Path(done.stdout.strip().lstrip("-")).name
        except (OSError, subprocess.SubprocessError):
            name = ""
    if name in POSIX_SHELLS:
        return "bash"  # their syntax is bash's for everything env prints but the guard
    if name not in SHELLS:
        name = Path(os.environ.get("SHELL", "bash")).name
    return name if name in SHELLS else "bash"


def _ctl_words(ctx: click.Context) -> list[str]:
    """This very ccctl (the interpreter that runs it, and the same config) for the guard function."""
    words = [sys.executable, "-m", "ccmitm.cli"]
    option = (ctx.find_root().obj or {}).get("config_option")
    if option:
        words += ["--config", str(config_path(ctx))]
    return words


def answers(host: str, port: int, timeout: float = 1.0) -> bool:
    """Does something accept a connection on host:port? (What the shell guard checks, too.)"""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


# --- env -----------------------------------------------------------------------------------------
@click.command()
@click.option(
    "--shell",
    "shell",
    type=click.Choice(SHELLS),
    help="Syntax to print; default: the shell that runs ccctl (else $SHELL).",
)
@click.option(
    "--reverse", "mode", flag_value="reverse", help="Reverse mode: ANTHROPIC_BASE_URL instead of a proxy."
)
@click.option(
    "--stock", "mode", flag_value="stock", help="Unwire: every variable gets its previous value back."
)
@click.option(
    "--subagent",
    is_flag=True,
    help="Also CLAUDE_CODE_SUBAGENT_MODEL=haiku (subagents run on Haiku, i.e. offloaded) and "
    "CLAUDE_CODE_GATEWAY_HINT_HEADERS=1 (Claude Code marks subagent vs main-loop calls).",
)
@click.pass_context
def env(ctx: click.Context, shell: str | None, mode: str | None, subagent: bool) -> None:
    """Print shell lines that wire Claude Code to the proxy: eval "$(ccctl env)".

    The lines save the previous value of every variable they set (restored by --stock / ccstock)
    and define a `claude` function that checks ccmitmd answers before each call (wiring.when_down).
    """
    if subagent and mode == "stock":
        raise click.UsageError(
            "--subagent wires a shell; --stock unwires it (and restores the subagent variables)"
        )
    dialect = shell_text.dialect(shell or _calling_shell())
    environ = dict(os.environ)
    if mode == "stock":
        if not wiring.is_wired(environ):
            click.echo("# ccmitm: this shell is not wired by ccctl env; nothing to restore", err=True)
        restore = wiring.symbolic(environ, wiring.unwire(environ))
        for line in shell_text.assignments(restore, dialect) + shell_text.remove_guard(dialect):
            click.echo(line)
        return
    listener, upstream_proxy = _wiring_facts(ctx)
    wire_mode: wiring.Mode = "reverse" if mode == "reverse" else "intercept"
    if wire_mode == "intercept" and not listener.ca_cert.exists():
        click.echo(
            f"# warning: {listener.ca_cert} does not exist yet; start ccmitmd once to create it", err=True
        )
    try:
        changes = wiring.wire(environ, listener, wire_mode, subagent)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    _note_previous_proxy(wiring.original(environ), listener, upstream_proxy)
    lines = shell_text.assignments(wiring.symbolic(environ, changes), dialect)
    for line in lines + shell_text.guard_function(_ctl_words(ctx), dialect):
        click.echo(line)
    if wire_mode == "intercept" and listener.reverse_port is not None:
        reverse_url = paths.http_url(listener.host, listener.reverse_port)
        click.echo(
            f'# or reverse mode instead: eval "$(ccctl env --reverse)"  (ANTHROPIC_BASE_URL={reverse_url})'
        )


def _note_previous_proxy(base: dict[str, str], listener: wiring.Listener, upstream_proxy: str | None) -> None:
    previous = wiring.previous_proxy(base, listener)
    if previous is None:
        return
    if upstream_proxy:
        where = f"ccmitmd reaches its lanes through proxy.upstream_proxy ({upstream_proxy})"
    else:
        where = (
            f"for ccmitmd to reach its lanes through it too: ccctl config set proxy.upstream_proxy {previous}"
        )
    click.echo(
        f"# ccmitm: your HTTPS_PROXY ({previous}) is saved and comes back when you unwire; {where}",
        err=True,
    )


# --- run -----------------------------------------------------------------------------------------
@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--reverse", is_flag=True, help="Wire through the reverse listener (ANTHROPIC_BASE_URL).")
@click.option("--subagent", is_flag=True, help="Also the subagent variables (as `ccctl env --subagent`).")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
def run(ctx: click.Context, reverse: bool, subagent: bool, command: tuple[str, ...]) -> None:
    """Run COMMAND wired to ccmitmd: ccctl run -- claude -p "say ok" --model haiku.

    In a wired shell it keeps that shell's wiring. When ccmitmd does not answer it acts by
    wiring.when_down: start it and wait, run COMMAND stock, or fail with the fix.
    """
    config = load_config(ctx)
    listener = _listener(config)
    environ = dict(os.environ)
    if wiring.is_wired(environ) and not reverse and not subagent and environ.get(wiring.PORT, "").isdigit():
        wired = environ
        host, port = environ.get(wiring.HOST, listener.host), int(environ[wiring.PORT])
        wiring.refresh_bundle(environ, listener)
    else:
        mode: wiring.Mode = "reverse" if reverse else "intercept"
        try:
            wired = wiring.apply(environ, wiring.wire(environ, listener, mode, subagent))
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        host, port = listener.host, int(wired[wiring.PORT])
    if not answers(host, port):
        wired = _when_down(ctx, config, listener, environ, wired, host, port)
    _exec(list(command), wired)


def _when_down(
    ctx: click.Context,
    config: Config,
    listener: wiring.Listener,
    environ: dict[str, str],
    wired: dict[str, str],
    host: str,
    port: int,
) -> dict[str, str]:
    """The environment to run the command in, after acting on a daemon that does not answer."""
    from ccmitm.cli.control import LaunchError

    where = f"{host}:{port}"
    action = config.wiring.when_down
    if action == "fail":
        fail(
            f"ccmitmd does not answer on {where} (wiring.when_down: fail); "
            "fix: `ccctl start` (or `ccctl service install`), or unwire with `ccstock`"
        )
    if action == "stock":
        click.echo(
            f"ccctl: ccmitmd does not answer on {where}; running this call stock (wiring.when_down: stock); "
            "fix: `ccctl start`",
            err=True,
        )
        return wiring.original(environ)
    try:
        by_service = _start(ctx, config, wiring.original(environ), host, port)
    except LaunchError as exc:
        fail(
            f"ccmitmd does not answer on {where} and could not start: {exc}: {exc.cause()}; "
            f"{exc.fix} (or set wiring.when_down: stock)"
        )
    click.echo(f"ccctl: ccmitmd was not running; started it ({by_service})", err=True)
    wiring.refresh_bundle(wired, listener)  # a first start has just made the CA
    return wired


def _start(ctx: click.Context, config: Config, base: dict[str, str], host: str, port: int) -> str:
    """Start ccmitmd (the service if it is installed, else as `ccctl start` does) and wait, bounded,
    until it answers; how it was started, or LaunchError with the cause."""
    from ccmitm.cli.control import LaunchError, launch
    from ccmitm.install.host import UNIT_NAME, Host, ServiceError

    timeout = config.wiring.start_timeout_s
    try:
        machine: Host | None = Host.current()
    except ServiceError:
        machine = None  # no service manager here: start it ourselves
    if machine is None or not machine.unit_path.exists():
        _refuse_a_doomed_start(config_path(ctx))
        try:
            launch(config_path(ctx), config.socket_path(), timeout, env=base)
        except LaunchError:
            # Two wired shells that found it down at once both start one; the loser's daemon
            # exits (its ports are taken), and the winner's is what answers.
            if not answers(host, port):
                raise
        how, output = "ccctl start", paths.state_home() / "ccmitmd.out"
        fix = "see " + str(output)
    else:
        argv = (
            machine.systemctl("start", UNIT_NAME)
            if machine.manager == "systemd"
            else machine.launchctl("kickstart", machine.service_target)
        )
        how, output = " ".join(argv), machine.unit_path
        fix = "see `ccctl service status`" + (
            " and `journalctl --user -u ccmitm`" if machine.manager == "systemd" else ""
        )
        done = machine.runner(argv)
        if not done.ok:
            raise LaunchError(f"`{how}` failed", [done.reason()], output, fix)
    deadline = time.monotonic() + timeout
    while not answers(host, port, timeout=0.5):
        if time.monotonic() > deadline:
            raise LaunchError(f"nothing answers on {host}:{port} after {timeout:g}s", [], output, fix)
        time.sleep(0.05)
    return how


#: The daemon's fallback for an invalid config (supervisor/daemon.py's LAST_GOOD, in the state dir).
_LAST_GOOD = "last-good-config.yaml"


def _refuse_a_doomed_start(config_file: Path) -> None:
    """An invalid config without a last good one makes ccmitmd exit at start (exit 2): say so now,
    in a fraction of the time the daemon's own start would take."""
    from ccmitm.cli.control import LaunchError
    from ccmitm.config.errors import ConfigError
    from ccmitm.config.load import load

    try:
        load(config_file)
    except ConfigError as exc:
        if not (paths.state_home() / _LAST_GOOD).exists():
            raise LaunchError(
                "its config is invalid",
                [exc.one_line()],
                config_file,
                "fix it (`ccctl config check`), then `ccctl start`",
            ) from None


def _exec(command: list[str], environ: dict[str, str]) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvpe(command[0], command, environ)
    except FileNotFoundError:
        fail(f"{command[0]}: command not found", code=127)
    except OSError as exc:
        fail(f"{command[0]}: {exc.strerror}", code=126)


# --- shell init ----------------------------------------------------------------------------------
@click.group()
def shell() -> None:
    """The shell habits (ccsub, ccstock, ccproof, ...) for bash, zsh and fish."""


@shell.command("init")
@click.argument("name", type=click.Choice(SHELLS))
def shell_init(name: str) -> None:
    """Print the habits for eval or source.

    bash/zsh: eval "$(ccctl shell init bash)"; fish: ccctl shell init fish | source."""
    click.echo(shell_text.habits(shell_text.dialect(name)), nl=False)


COMMANDS = [env, run, shell]
