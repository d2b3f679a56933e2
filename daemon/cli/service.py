"""`ccctl service install | uninstall | status | render`: run ccmitmd under systemd (Linux) or
launchd (macOS), and show the file that does it."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import click

from ccmitm.cli.common import config_path, echo_json, fail, load_config
from ccmitm.config.errors import ConfigError
from ccmitm.config.load import load
from ccmitm.config.model import Config
from ccmitm.control.client import call
from ccmitm.control.protocol import ControlError
from ccmitm.install import service_files as svc_files
from ccmitm.install import service_manager as svc_manager
from ccmitm.install.host import Host, Manager, ServiceError
from ccmitm.install.service_manager import ManagerView, Plan, WriteFile

# Tests replace this to swap in a fake runner, platform or HOME.
make_host: Callable[[], Host] = Host.current

# `ccctl service render --platform`: the platform names users know, and the manager of each.
PLATFORMS: dict[str, Manager] = {"linux": "systemd", "macos": "launchd"}
EXIT_NOT_ACTIVE = 3  # like `systemctl is-active`: installed or not, the service is not running
NO_MANAGER_ADVICE = (
    "nothing was changed. Without a service manager, start the daemon with `ccctl start`, "
    "or run `ccmitmd` under your own supervisor."
)


@click.group("service")
def service() -> None:
    """Run ccmitmd at login/boot under systemd (Linux) or launchd (macOS)."""


# --- helpers ---------------------------------------------------------------------------------------
def _host() -> Host:
    try:
        return make_host()
    except ServiceError as exc:
        fail(str(exc))


def _service_config(ctx: click.Context) -> tuple[Path, Config]:
    """The config the service will run with; an invalid one is refused (the service would exit 2)."""
    path = config_path(ctx)
    try:
        loaded = load(path)
    except ConfigError as exc:
        fail("the service would not start with this config:\n" + exc.report())
    return path, loaded.config


def _echo_plan(plan: Plan) -> None:
    click.echo("dry run: nothing is written or run")
    for action in plan.actions:
        click.echo("would " + action.describe())
        if isinstance(action, WriteFile):
            for line in action.text.splitlines():
                click.echo(f"    | {line}")
    for note in plan.notes:
        click.echo(f"note: {note}")


def _refuse_unreachable(plan: Plan, verb: str) -> None:
    if plan.unreachable:
        fail(f"cannot {verb}: no service manager is reachable ({plan.unreachable}); {NO_MANAGER_ADVICE}")


def _warn_unreachable(plan: Plan, verb: str) -> None:
    if plan.unreachable:
        click.echo(
            f"ccctl: warning: no service manager is reachable here ({plan.unreachable}); "
            f"a real `ccctl service {verb}` would stop before changing anything",
            err=True,
        )


def _execute(plan: Plan, host: Host, verb: str) -> None:
    _refuse_unreachable(plan, verb)
    try:
        svc_manager.execute(plan, host, click.echo)
    except ServiceError as exc:
        fail(f"{verb} stopped: {exc}")
    for note in plan.notes:
        click.echo(f"note: {note}")


# --- install ---------------------------------------------------------------------------------------
@service.command("install")
@click.option("--dry-run", is_flag=True, help="Print what would be written and run; change nothing.")
@click.pass_context
def install(ctx: click.Context, dry_run: bool) -> None:
    """Install, enable and start the service for this platform (idempotent)."""
    host = _host()
    path, config = _service_config(ctx)
    try:
        settings = svc_files.settings_for(path, config, host)
        text = svc_files.render(host, settings)
    except ServiceError as exc:
        fail(str(exc))
    plan = svc_manager.plan_install(host, text, svc_manager.query(host))
    if dry_run:
        _echo_plan(plan)
        _warn_unreachable(plan, "install")
    else:
        _execute(plan, host, "install")
        click.echo(f"installed: ccmitmd --config {settings.config} runs as a {host.manager} service")
    _echo_install_advice(host, settings.config, config, dry_run)


def _echo_install_advice(host: Host, config_file: Path, config: Config, dry_run: bool) -> None:
    if not config_file.exists():
        click.echo(f"note: {config_file} does not exist yet; the daemon runs on built-in defaults")
    for hint in svc_manager.key_hints(config, host):
        click.echo(f"hint: {hint}")
    linger = None if dry_run else svc_manager.linger_hint(host)
    if linger:
        click.echo(f"hint: {linger}")
    click.echo("logs: " + "  |  ".join(svc_manager.log_locations(host)))
    if not dry_run:
        click.echo("check it with: ccctl service status")


# --- render ----------------------------------------------------------------------------------------
@service.command("render")
@click.option(
    "--platform",
    type=click.Choice(sorted(PLATFORMS)),
    default=None,
    help="linux: the systemd user unit; macos: the launchd agent plist. Default: this machine's.",
)
@click.pass_context
def render(ctx: click.Context, platform: str | None) -> None:
    """Print the unit or plist `service install` would write, with this installation's real paths.

    Nothing is written or run. With --platform the other system's file is rendered from this
    machine's paths (this ccmitmd, this config, this HOME), e.g. to read or check the plist on Linux.
    """
    host = _host()
    if platform is not None:
        host = replace(host, manager=PLATFORMS[platform])
    path, config = _service_config(ctx)
    try:
        text = svc_files.render(host, svc_files.settings_for(path, config, host))
    except ServiceError as exc:
        fail(str(exc))
    click.echo(f"ccctl: `ccctl service install` on {host.manager} writes this to {host.unit_path}", err=True)
    click.echo(text, nl=False)


# --- uninstall -------------------------------------------------------------------------------------
@service.command("uninstall")
@click.option("--dry-run", is_flag=True, help="Print what would be removed and run; change nothing.")
def uninstall(dry_run: bool) -> None:
    """Stop and disable the service and remove the file install wrote (logs are kept)."""
    host = _host()
    plan = svc_manager.plan_uninstall(host, svc_manager.query(host))
    if dry_run:
        _echo_plan(plan)
        _warn_unreachable(plan, "uninstall")
        return
    if plan.empty and not plan.unreachable:
        for note in plan.notes:
            click.echo(note)
        return
    _execute(plan, host, "uninstall")
    click.echo(f"uninstalled: the {host.manager} service is stopped and {host.unit_path} is gone")


# --- status ----------------------------------------------------------------------------------------
def _daemon_status(ctx: click.Context) -> dict[str, Any]:
    socket_path = load_config(ctx).socket_path()
    try:
        result = call(socket_path, "status", timeout=5)
    except ControlError as exc:
        return {"running": False, "socket": str(socket_path), "error": str(exc)}
    except (OSError, ValueError) as exc:
        return {"running": False, "socket": str(socket_path), "error": f"unreadable answer: {exc}"}
    return {"running": True, "socket": str(socket_path), "status": result}


def _manager_json(view: ManagerView, host: Host) -> dict[str, Any]:
    data = asdict(view)
    data["reachable"] = view.reachable
    data["unit_file"] = str(host.unit_path)
    data["installed"] = host.unit_path.exists()
    return data


def _echo_manager(view: ManagerView, host: Host) -> None:
    installed = "installed" if host.unit_path.exists() else "not installed"
    click.echo(f"service manager: {view.manager}")
    click.echo(f"  unit file:  {host.unit_path} ({installed})")
    if not view.reachable:
        click.echo(f"  unreachable: {view.error}")
        return
    restarts = "-" if view.restarts is None else view.restarts
    rows = (
        ("enabled", view.enabled or "-"),
        ("active", view.active or "-"),
        ("pid", view.pid or "-"),
        ("last exit", view.last_exit or "-"),
        ("restarts" if view.manager == "systemd" else "runs", restarts),
    )
    for label, value in rows:
        click.echo(f"  {label + ':':<11} {value}")


def _echo_daemon(daemon: dict[str, Any]) -> None:
    if not daemon["running"]:
        click.echo(f"daemon: not running/unreachable ({daemon['error']})")
        return
    click.echo(f"daemon: running (control socket {daemon['socket']})")
    status = daemon["status"]
    if isinstance(status, dict):
        for key, value in status.items():
            if not isinstance(value, dict | list):
                click.echo(f"  {key + ':':<11} {value}")


def _status_code(view: ManagerView) -> int:
    if not view.reachable:
        return 1
    return 0 if view.running else EXIT_NOT_ACTIVE


@service.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """The service manager's view next to the daemon's own status.

    Exit status: 0 the service is running, 3 it is not (or not installed), 1 no service manager.
    """
    host = _host()
    view = svc_manager.query(host)
    daemon = _daemon_status(ctx)
    if as_json:
        echo_json({"manager": _manager_json(view, host), "daemon": daemon})
    else:
        _echo_manager(view, host)
        _echo_daemon(daemon)
    if not view.reachable and not as_json:
        click.echo(f"ccctl: no service manager is reachable: {view.error}", err=True)
    sys.exit(_status_code(view))
