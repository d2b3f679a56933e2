"""ccctl config: check a file, set one key in it, show the effective config."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from ccmitm.cli.common import config_path, echo_json, fail, load_config
from ccmitm.cli.completion import complete_config_key
from ccmitm.config.presets import PRESETS
from ccmitm.control.client import DaemonNotRunning, call
from ccmitm.control.protocol import ControlError


@click.group()
def config() -> None:
    """Check or show configuration."""


@config.command("check")
@click.argument("file", type=click.Path(path_type=Path), required=False)
@click.pass_context
def config_check(ctx: click.Context, file: Path | None) -> None:
    """Validate FILE (default: the active config file); list every problem with its path.

    The active file is the one --config, $CCMITM_CONFIG or the XDG default names. Opens no socket."""
    from ccmitm.config.errors import ConfigMissing
    from ccmitm.config.load import check_file

    active = file is None
    file = config_path(ctx) if file is None else file
    error = check_file(file)
    if active and isinstance(error, ConfigMissing):
        from ccmitm import paths

        last_good = paths.state_home() / paths.LAST_GOOD_CONFIG
        if last_good.is_file():
            click.echo(f"{file}: does not exist; ccmitmd serves its last good config ({last_good})")
        else:
            click.echo(f"{file}: does not exist; the built-in defaults are used (ok)")
        return
    if error is None:
        click.echo(f"{file}: ok")
        return
    click.echo(error.report(), err=True)
    sys.exit(1)


@config.command("set", context_settings={"ignore_unknown_options": True})
@click.argument("key", shell_complete=complete_config_key)
@click.argument("value")
@click.pass_context
def config_set(ctx: click.Context, key: str, value: str) -> None:
    """Set KEY to VALUE in the config file, keeping its comments and layout.

    VALUE is typed by the schema of KEY: text keys take it exactly as given ('*/5 * * * *'),
    numbers and true/false (yes/no, on/off, 1/0) are parsed, `null` only where a key allows it,
    lists and mappings as YAML. List items: routing.rules[0].match; routing.rules[+] appends
    one ('{match: "*opus*", lane: zai}'); lanes.NAME.url creates a lane. The result is validated
    whole before it is written; the running daemon reloads it by itself."""
    from ccmitm.config.edit import set_value
    from ccmitm.config.errors import ConfigError

    path = config_path(ctx)
    try:
        typed = set_value(path, key, value)
    except ConfigError as exc:
        fail("not changed:\n" + exc.report())
    # Text is not echoed: it could be a key pasted into the wrong place.
    shown = (
        ""
        if isinstance(typed, (str, dict, list))
        else f" = {'null' if typed is None else str(typed).lower()}"
    )
    click.echo(f"{path}: {key} set{shown}")


@config.command("show")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def config_show(ctx: click.Context, as_json: bool) -> None:
    """The effective config (from the running daemon, else from the file). Secrets never appear."""
    try:
        result = call(load_config(ctx).socket_path(), "config-show")
    except DaemonNotRunning:
        result = _from_file(ctx)
    except ControlError as exc:
        fail(str(exc))
    if as_json:
        echo_json(result)
        return
    import yaml

    click.echo(f"# effective config from {result['source']}")
    click.echo(f"# kill-switch: {_kill_switch(result)}")
    for override in result.get("overrides", []):
        click.echo(f"# environment override: {override}")
    for lane, key in (result.get("lane_keys") or {}).items():
        click.echo(f"# lane {lane} key: {key}")
    click.echo(yaml.safe_dump(result["config"], sort_keys=False).rstrip())


def _kill_switch(result: dict[str, Any]) -> str:
    """The effective kill-switch, worded as `ccctl status` words it (paused and why)."""
    paused = "yes" if result.get("paused") else "no"
    return f"paused {paused} ({result.get('paused_source', 'unknown')})"


def _from_file(ctx: click.Context) -> dict[str, Any]:
    """What `config show` says without a daemon: the file as a load sees it (environment toggles
    applied). A ccctl pause/resume the daemon saved in its state file applies at its next start."""
    from ccmitm.config.errors import ConfigError
    from ccmitm.config.load import load

    path = config_path(ctx)
    try:
        loaded = load(path)
        config, overrides = loaded.config, list(loaded.overrides)
    except ConfigError:
        config, overrides = load_config(ctx), []  # warns, then the built-in defaults
    if any(override.startswith("OFFLOAD_PAUSED") for override in overrides):
        source = "environment OFFLOAD_PAUSED=1"
    else:
        source = "config routing.paused; daemon not running, a saved ccctl pause/resume applies at its start"
    return {
        "source": f"{path} (daemon not running)",
        "overrides": overrides,
        "config": config.redacted(),
        "paused": config.routing.paused,
        "paused_source": source,
    }


def example_with_preset(example: str, preset: str) -> str:
    """The example config with its ``zai`` lane written as ``preset: NAME`` (the preset fills in
    the URL, key variable, header mode and provider; spelled out, they would win over it)."""
    lines = example.splitlines(keepends=True)
    start = lines.index("  zai:\n")
    end = start + 1
    while end < len(lines) and lines[end].startswith("    "):
        end += 1
    block = [
        "  zai:\n",
        "    # A preset fills in url, api_key_env (ZAI_API_KEY), header_mode and provider; keys set\n",
        "    # here win over it. `zai` = https://api.z.ai, `zai-cn` = https://open.bigmodel.cn.\n",
        f"    preset: {preset}\n",
    ]
    return "".join(lines[:start] + block + lines[end:])


@config.command("init")
@click.option("--force", is_flag=True, help="Overwrite an existing config file.")
@click.option(
    "--preset",
    type=click.Choice(sorted(PRESETS)),
    default=None,
    help="Write the `zai` lane as this preset (`zai-cn`: Z.AI's mainland China endpoint).",
)
@click.pass_context
def config_init(ctx: click.Context, force: bool, preset: str | None) -> None:
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
    text = render_example()
    if preset is not None:
        text = example_with_preset(text, preset)
    paths.write_atomic(path, text.encode(), 0o600)
    click.echo(f"wrote {path} (the commented defaults; edit it or use `ccctl config set KEY VALUE`)")
    click.echo(f"next: `ccctl config check {path}`, then `ccctl service install` (or `ccctl start`)")
