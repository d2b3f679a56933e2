"""Talking to the service manager: what it knows about ccmitm, the plan that installs or removes
the service, and carrying that plan out.

Install and uninstall are computed as a :class:`Plan` (a list of actions) first: ``--dry-run``
prints it, a real run executes it.
"""

from __future__ import annotations

import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ccmitm import paths
from ccmitm.config.model import Config
from ccmitm.install.host import LABEL, UNIT_NAME, Host, Manager, ManagerUnreachable, ServiceError


# --- the plan --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MakeDir:
    path: Path
    mode: int

    def describe(self) -> str:
        return f"create directory {self.path} (mode {self.mode:04o})"


@dataclass(frozen=True)
class WriteFile:
    path: Path
    text: str
    mode: int = 0o644

    def describe(self) -> str:
        return f"write {self.path} (mode {self.mode:04o})"


@dataclass(frozen=True)
class RemoveFile:
    path: Path

    def describe(self) -> str:
        return f"remove {self.path}"


@dataclass(frozen=True)
class RemoveDirIfEmpty:
    path: Path

    def describe(self) -> str:
        return f"remove directory {self.path} if it is empty (logs are kept)"


@dataclass(frozen=True)
class Run:
    argv: tuple[str, ...]
    # Cleanup commands whose failure changes nothing (e.g. reset-failed on a unit that never failed).
    check: bool = True

    def describe(self) -> str:
        return "run " + " ".join(self.argv)


Action = MakeDir | WriteFile | RemoveFile | RemoveDirIfEmpty | Run


@dataclass(frozen=True)
class Plan:
    manager: Manager
    actions: tuple[Action, ...]
    notes: tuple[str, ...] = ()
    # Set when the service manager did not answer: a real run refuses, a dry run says so.
    unreachable: str | None = None

    @property
    def empty(self) -> bool:
        return not self.actions


# --- what the service manager knows ----------------------------------------------------------------
SYSTEMD_PROPERTIES = (
    "LoadState",
    "UnitFileState",
    "ActiveState",
    "SubState",
    "Result",
    "MainPID",
    "ExecMainCode",
    "ExecMainStatus",
    "NRestarts",
    "FragmentPath",
)


@dataclass(frozen=True)
class ManagerView:
    """The service manager's view of the ccmitm service; `error` is set when it did not answer."""

    manager: Manager
    error: str | None = None
    loaded: bool = False
    running: bool = False
    enabled: str | None = None
    active: str | None = None
    pid: int | None = None
    last_exit: str | None = None
    restarts: int | None = None
    source: str | None = None
    details: dict[str, str] = field(default_factory=dict)

    @property
    def reachable(self) -> bool:
        return self.error is None


def parse_properties(text: str) -> dict[str, str]:
    props: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            props[key.strip()] = value.strip()
    return props


def _int_or_none(value: str | None) -> int | None:
    return int(value) if value and value.lstrip("-").isdigit() else None


# ExecMainCode is a siginfo si_code: how the main process last ended.
_EXIT_CODES = {"1": "exited", "2": "killed", "3": "dumped core"}


def _systemd_last_exit(props: Mapping[str, str]) -> str | None:
    how = _EXIT_CODES.get(props.get("ExecMainCode", "0"))
    if how is None:
        return None
    status = props.get("ExecMainStatus", "?")
    return f"status {status}" if how == "exited" else f"{how} by signal {status}"


def query_systemd(host: Host) -> ManagerView:
    done = host.runner(host.systemctl("show", UNIT_NAME, "--property=" + ",".join(SYSTEMD_PROPERTIES)))
    if not done.ok:
        return ManagerView("systemd", error=f"`systemctl --user` does not answer: {done.reason()}")
    props = parse_properties(done.stdout)
    active = props.get("ActiveState")
    sub = props.get("SubState")
    pid = _int_or_none(props.get("MainPID"))
    return ManagerView(
        "systemd",
        loaded=props.get("LoadState", "not-found") not in ("not-found", ""),
        running=active in ("active", "reloading"),
        enabled=props.get("UnitFileState") or None,
        active=f"{active} ({sub})" if active and sub else active,
        pid=pid or None,
        last_exit=_systemd_last_exit(props),
        restarts=_int_or_none(props.get("NRestarts")),
        source=props.get("FragmentPath") or None,
        details=props,
    )


_LAUNCHD_KEYS = ("state", "pid", "last exit code", "runs", "path")


def parse_launchctl_print(text: str) -> dict[str, str]:
    """The first `key = value` of each interesting key (nested sections repeat some keys)."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition(" = ")
        if sep and key in _LAUNCHD_KEYS and key not in found:
            found[key] = value.strip()
    return found


def _launchd_disabled(text: str) -> bool:
    needle = f'"{LABEL}" =>'
    for line in text.splitlines():
        if needle in line:
            return line.split("=>", 1)[1].strip() in ("disabled", "true")
    return False


def query_launchd(host: Host) -> ManagerView:
    domain = host.runner(host.launchctl("print", host.domain))
    if not domain.ok:
        reason = domain.reason()
        return ManagerView("launchd", error=f"launchd's {host.domain} domain does not answer: {reason}")
    service = host.runner(host.launchctl("print", host.service_target))
    disabled = host.runner(host.launchctl("print-disabled", host.domain))
    installed = host.unit_path.exists()
    is_disabled = disabled.ok and _launchd_disabled(disabled.stdout)
    enabled = "disabled" if is_disabled else ("enabled" if installed else "not installed")
    if not service.ok:
        return ManagerView("launchd", loaded=False, enabled=enabled, active="not loaded")
    info = parse_launchctl_print(service.stdout)
    return ManagerView(
        "launchd",
        loaded=True,
        running=info.get("state") == "running",
        enabled=enabled,
        active=info.get("state"),
        pid=_int_or_none(info.get("pid")),
        last_exit=info.get("last exit code"),
        restarts=_int_or_none(info.get("runs")),
        source=info.get("path"),
        details=info,
    )


def query(host: Host) -> ManagerView:
    return query_systemd(host) if host.manager == "systemd" else query_launchd(host)


# --- planning install and uninstall ----------------------------------------------------------------
def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def _missing_dirs(path: Path, mode: int) -> list[MakeDir]:
    missing: list[MakeDir] = []
    for parent in (path, *path.parents):
        if parent.exists():
            break
        missing.append(MakeDir(parent, mode))
    return list(reversed(missing))


def plan_install(host: Host, text: str, view: ManagerView) -> Plan:
    existing = _read_text(host.unit_path)
    changed = existing != text
    actions: list[Action] = [*_missing_dirs(host.unit_path.parent, 0o755)]
    if host.log_dir is not None:
        actions += _missing_dirs(host.log_dir, 0o700)
    if changed:
        actions.append(WriteFile(host.unit_path, text))
    if host.manager == "systemd":
        actions += _systemd_install_commands(host, replaced=existing is not None and changed)
    else:
        actions += _launchd_install_commands(host, view, changed)
    notes = () if changed else (f"{host.unit_path} is already up to date",)
    return Plan(host.manager, tuple(actions), notes, view.error)


def _systemd_install_commands(host: Host, replaced: bool) -> list[Action]:
    actions: list[Action] = [Run(host.systemctl("daemon-reload"))]
    if replaced:
        # A changed unit only takes effect on restart; try-restart leaves a stopped service stopped
        # (enable --now below starts it).
        actions.append(Run(host.systemctl("try-restart", UNIT_NAME)))
    actions.append(Run(host.systemctl("enable", "--now", UNIT_NAME)))
    return actions


def _launchd_install_commands(host: Host, view: ManagerView, changed: bool) -> list[Action]:
    actions: list[Action] = []
    if view.loaded and changed:
        # launchd keeps the plist it loaded; a changed one needs bootout + bootstrap.
        actions.append(Run(host.launchctl("bootout", host.service_target)))
    # bootstrap refuses a service the user once disabled; enable clears that override.
    actions.append(Run(host.launchctl("enable", host.service_target)))
    if view.loaded and not changed:
        # Already loaded with this plist: start it if it is not running (no -k: never kill it).
        actions.append(Run(host.launchctl("kickstart", host.service_target)))
    else:
        actions.append(Run(host.launchctl("bootstrap", host.domain, str(host.unit_path))))
    return actions


def plan_uninstall(host: Host, view: ManagerView) -> Plan:
    present = host.unit_path.exists()
    notes: list[str] = []
    if view.source and view.source != str(host.unit_path):
        notes.append(f"the service is loaded from {view.source}, which ccctl did not write; it stays")
    if host.manager == "systemd":
        actions = _systemd_uninstall_actions(host, view, present)
    else:
        actions = _launchd_uninstall_actions(host, view, present)
    if not actions:
        notes.append(f"ccmitm is not installed as a {host.manager} service ({host.unit_path} does not exist)")
    return Plan(host.manager, tuple(actions), tuple(notes), view.error)


def _systemd_uninstall_actions(host: Host, view: ManagerView, present: bool) -> list[Action]:
    if not present and not view.loaded:
        return []
    actions: list[Action] = [Run(host.systemctl("disable", "--now", UNIT_NAME))]
    if present:
        actions.append(RemoveFile(host.unit_path))
    actions.append(Run(host.systemctl("daemon-reload")))
    # A unit that failed stays listed as failed after its file is gone; this forgets it.
    actions.append(Run(host.systemctl("reset-failed", UNIT_NAME), check=False))
    return actions


def _launchd_uninstall_actions(host: Host, view: ManagerView, present: bool) -> list[Action]:
    actions: list[Action] = []
    if view.loaded:
        actions.append(Run(host.launchctl("bootout", host.service_target)))
    if present:
        actions.append(RemoveFile(host.unit_path))
    if actions and host.log_dir is not None and host.log_dir.is_dir():
        actions.append(RemoveDirIfEmpty(host.log_dir))
    return actions


# --- executing a plan ------------------------------------------------------------------------------
def _apply(action: Action, host: Host) -> str | None:
    """Carry out one action; returns a warning for a tolerated failure."""
    if isinstance(action, MakeDir):
        action.path.mkdir(mode=action.mode, exist_ok=True)
    elif isinstance(action, WriteFile):
        paths.write_atomic(action.path, action.text.encode(), action.mode)
    elif isinstance(action, RemoveFile):
        action.path.unlink(missing_ok=True)
    elif isinstance(action, RemoveDirIfEmpty):
        if action.path.is_dir() and not any(action.path.iterdir()):
            action.path.rmdir()
    else:
        done = host.runner(action.argv)
        if not done.ok:
            if action.check:
                raise ServiceError(f"`{' '.join(action.argv)}` failed: {done.reason()}")
            return f"`{' '.join(action.argv)}`: {done.reason()} (ignored)"
    return None


def execute(plan: Plan, host: Host, echo: Callable[[str], None]) -> None:
    """Run a plan, reporting each step; refuses outright when the service manager is unreachable."""
    if plan.unreachable:
        raise ManagerUnreachable(plan.unreachable)
    for action in plan.actions:
        echo(action.describe())
        warning = _apply(action, host)
        if warning:
            echo(f"  warning: {warning}")


# --- secrets: how the Z.AI key reaches the service -------------------------------------------------
def _env_file_names(path: Path) -> set[str]:
    text = _read_text(path) or ""
    names = set()
    for line in text.splitlines():
        name, sep, _ = line.strip().partition("=")
        if sep and not name.startswith(("#", ";")):
            names.add(name.strip())
    return names


def _loose_mode(path: Path) -> bool:
    try:
        return bool(path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO))
    except OSError:
        return False


def key_hints(config: Config, host: Host) -> list[str]:
    """Why a keyed lane would come up without its key under the service manager, and the fix.

    A service does not inherit the shell's environment, so a key that only lives in an exported
    variable is invisible to it. Never prints a key.
    """
    hints: list[str] = []
    env_names = _env_file_names(host.env_file) if host.manager == "systemd" else set()
    if host.manager == "systemd" and host.env_file.exists() and _loose_mode(host.env_file):
        hints.append(f"{host.env_file} is readable by group or others: chmod 600 {host.env_file}")
    for name, lane in config.lanes.items():
        if lane.api_key_file:
            key_file = Path(lane.api_key_file)
            if not key_file.exists():
                hints.append(f"lanes.{name}.api_key_file {key_file} does not exist")
            elif _loose_mode(key_file):
                hints.append(f"lanes.{name}.api_key_file {key_file} is group/world-readable: chmod 600 it")
            continue
        if not lane.api_key_env or lane.api_key_env in env_names:
            continue
        if host.manager == "systemd":
            hints.append(
                f"lane {name} reads its key from ${lane.api_key_env}, which the service does not "
                f"inherit from your shell: put {lane.api_key_env}=... in {host.env_file} (chmod 600), "
                f"or set lanes.{name}.api_key_file to a chmod 600 file holding the key"
            )
        else:
            hints.append(
                f"lane {name} reads its key from ${lane.api_key_env}, which launchd agents do not "
                f"inherit from your shell: set lanes.{name}.api_key_file to a chmod 600 file holding the key"
            )
    return hints


def linger_hint(host: Host, user: str | None = None) -> str | None:
    """User units start at login; only lingering starts them at boot. Say so when it is off."""
    if host.manager != "systemd":
        return None
    name = user or host.environ.get("USER") or str(host.uid)
    done = host.runner(("loginctl", "show-user", name, "--property=Linger", "--value"))
    if done.ok and done.stdout.strip() == "no":
        return (
            f"systemd starts user services at login; to start ccmitm at boot too, run: "
            f"loginctl enable-linger {name}"
        )
    return None


def log_locations(host: Host) -> list[str]:
    state_log = paths.state_home(host.environ) / "daemon.log"
    if host.manager == "systemd":
        return [f"journalctl --user -u {UNIT_NAME}", str(state_log)]
    assert host.log_dir is not None
    return [str(host.log_dir / "stderr.log"), str(state_log)]
