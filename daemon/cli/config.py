"""ccctl config: check a file, set one key in it, show the effective config."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ccmitm.cli.common import config_path, echo_json, fail, load_config
from ccmitm.control.client import DaemonNotRunning, call
from ccmitm.control.protocol import ControlError


@click.group()
def config() -> None:
    """Check or show configuration."""


@config.command("check")
@click.argument("file", type=click.Path(path_type=Path))
def config_check(file: Path) -> None:
    """Validate FILE; list every problem with its path. Opens no socket."""
    from ccmitm.config.load import check_file

    error = check_file(file)
    if error is None:
        click.echo(f"{file}: ok")
        return
    click.echo(error.report(), err=True)
    sys.exit(1)


@config.command("set")
@click.argument("key")
@click.argument("value")
@click.pass_context
def config_set(ctx: click.Context, key: str, value: str) -> None:
    """Set KEY (e.g. proxy.http2) to VALUE in the config file, keeping its comments.

    The edited file is validated first; the running daemon reloads it by itself."""
    from ccmitm.config.edit import parse_value, set_value
    from ccmitm.config.errors import ConfigError

    path = config_path(ctx)
    try:
        set_value(path, key, parse_value(value))
    except ConfigError as exc:
        fail("not changed, the result would be invalid:\n" + exc.report())
    click.echo(f"{path}: {key} = {value}")


@config.command("show")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def config_show(ctx: click.Context, as_json: bool) -> None:
    """The effective config (from the running daemon, else from the file). Secrets never appear."""
    try:
        result = call(load_config(ctx).socket_path(), "config-show")
    except DaemonNotRunning:
        config = load_config(ctx)
        result = {"source": f"{config_path(ctx)} (daemon not running)", "config": config.redacted()}
    except ControlError as exc:
        fail(str(exc))
    if as_json:
        echo_json(result)
        return
    import yaml

    click.echo(f"# effective config from {result['source']}")
    for override in result.get("overrides", []):
        click.echo(f"# environment override: {override}")
    for lane, key in (result.get("lane_keys") or {}).items():
        click.echo(f"# lane {lane} key: {key}")
    click.echo(yaml.safe_dump(result["config"], sort_keys=False).rstrip())


@config.command("init")
@click.option("--force", is_flag=True, help="Overwrite an existing config file.")
@click.pass_context
def config_init(ctx: click.Context, force: bool) -> None:
    """Write the commented example config to the config path (0600); never over a file without --force.

    The example is rendered from the schema, so a pip or pipx install gets the same file a clone
    has in etc/config.yaml: every key with its default and what it does."""
    from ccmitm import paths
    from ccmitm.config.doc import render_example

    path = config_path(ctx)
    if (path.exists() or path.is_symlink()) and not force:
        fail(f"{path} exists; not overwritten (`ccctl config init --force` replaces it)")
    # A new config dir is private (the service's env file with lane keys lives there too); an
    # existing one is left as it is: --config may point into a dir that is not ccmitm's.
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    paths.write_atomic(path, render_example().encode(), 0o600)
    click.echo(f"wrote {path} (the commented defaults; edit it or use `ccctl config set KEY VALUE`)")
    click.echo(f"next: `ccctl config check {path}`, then `ccctl service install` (or `ccctl start`)")
