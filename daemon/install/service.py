"""Render and install ccmitm as a systemd user service or a launchd agent.

Everything that depends on the machine (platform, HOME, uid, the service manager's commands) sits
in one `Host` value, and every service-manager command goes through `Host.runner`, so tests can
render both platforms and install against a fake HOME without touching a real service manager.
Install and uninstall are computed as a `Plan` (a list of actions) first: `--dry-run` prints it,
a real run executes it.
"""

from __future__ import annotations

import math
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Literal
from xml.sax.saxutils import escape as xml_escape

from ccmitm import paths
from ccmitm.config.model import Config

Manager = Literal["systemd", "launchd"]

UNIT_NAME = "ccmitm.service"
LABEL = "io.ccmitm.daemon"
ENV_FILE_NAME = "ccmitm.env"
TEMPLATE_PACKAGE = "ccmitm.install.templates"
TEMPLATES: dict[Manager, str] = {
    "systemd": f"linux-systemd/user/{UNIT_NAME}",
    "launchd": f"macos-launchd/{LABEL}.plist",
}
# The service manager waits this long after SIGTERM before SIGKILL: at least 45 s, and always a
# margin above the configured drain so that in-flight streams finish.
MIN_STOP_TIMEOUT_S = 45
STOP_MARGIN_S = 15
# launchd hands agents a bare PATH; these are where Homebrew and the system keep tools.
LAUNCHD_BASE_PATH = ("/opt/homebrew/bin", "/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin")
# `enable --now` on a Type=notify unit waits for READY=1 (TimeoutStartSec=60 in the unit).
COMMAND_TIMEOUT_S = 120.0


class ServiceError(Exception):
    """Something the user must fix; the message says what."""


class ManagerUnreachable(ServiceError):
    """No service manager answers (a container, CI, an SSH session without a user manager)."""


# --- the runner seam -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Completed:
    argv: tuple[str, ...]
    returncode: int
    stdout: str = ""
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def reason(self) -> str:
        """The service manager's own words, for error messages."""
        text = (self.stderr or self.stdout).strip()
        return text.splitlines()[-1] if text else f"exit status {self.returncode}"


Runner = Callable[[Sequence[str]], Completed]


def run_command(argv: Sequence[str]) -> Completed:
    """The real runner: run a service-manager command and capture what it says."""
    args = tuple(argv)
    try:
        proc = subprocess.run(
            args,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except FileNotFoundError:
        return Completed(args, 127, "", f"{args[0]}: command not found")
    except subprocess.TimeoutExpired:
        return Completed(args, 124, "", f"{args[0]} did not finish within {COMMAND_TIMEOUT_S:g}s")
    return Completed(args, proc.returncode, proc.stdout, proc.stderr)


# --- the machine -----------------------------------------------------------------------------------
def detect_manager(platform: str = sys.platform) -> Manager:
    if platform == "darwin":
        return "launchd"
    if platform.startswith("linux"):
        return "systemd"
    raise ManagerUnreachable(f"no supported service manager on {platform!r} (systemd or launchd)")


@dataclass(frozen=True)
class Host:
    manager: Manager
    environ: Mapping[str, str]
    uid: int
    runner: Runner = run_command

    @classmethod
    def current(cls, runner: Runner = run_command) -> Host:
        return cls(detect_manager(), dict(os.environ), os.getuid(), runner)

    @property
    def home(self) -> Path:
        return Path(self.environ.get("HOME") or Path.home())

    @property
    def unit_path(self) -> Path:
        """Where install writes the unit or plist."""
        if self.manager == "systemd":
            # systemd's own lookup: $XDG_CONFIG_HOME/systemd/user, else ~/.config/systemd/user.
            return paths.config_home(self.environ).parent / "systemd" / "user" / UNIT_NAME
        return self.home / "Library" / "LaunchAgents" / f"{LABEL}.plist"

    @property
    def log_dir(self) -> Path | None:
        """launchd's stdout/stderr files; systemd logs to the journal."""
        return self.home / "Library" / "Logs" / "ccmitm" if self.manager == "launchd" else None

    @property
    def env_file(self) -> Path:
        return paths.config_home(self.environ) / ENV_FILE_NAME

    @property
    def domain(self) -> str:
        return f"gui/{self.uid}"

    @property
    def service_target(self) -> str:
        return f"{self.domain}/{LABEL}"

    def systemctl(self, *args: str) -> tuple[str, ...]:
        return ("systemctl", "--user", *args)

    def launchctl(self, *args: str) -> tuple[str, ...]:
        return ("launchctl", *args)


# --- what gets rendered ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Settings:
    """The installation-specific values a template needs; all paths absolute."""

    ccmitmd: Path
    config: Path
    env_file: Path
    stop_timeout_s: int = MIN_STOP_TIMEOUT_S

    def __post_init__(self) -> None:
        for name in ("ccmitmd", "config", "env_file"):
            value = getattr(self, name)
            if not value.is_absolute():
                raise ServiceError(f"{name} must be an absolute path, not {value}")
            if any(ch in str(value) for ch in "\n\r\0"):
                raise ServiceError(f"{name} {value!r} contains a line break or NUL")


def find_ccmitmd(executable: str = sys.executable) -> Path:
    """This installation's ccmitmd: next to the running interpreter (venv, pipx), else on PATH."""
    beside = Path(executable).parent / "ccmitmd"  # not resolved: a venv's python is a symlink
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside.absolute()
    found = shutil.which("ccmitmd")
    if found:
        return Path(found).absolute()
    raise ServiceError(f"cannot find ccmitmd next to {executable} or on PATH; is ccmitm installed?")


def stop_timeout_s(drain_s: float) -> int:
    return max(MIN_STOP_TIMEOUT_S, math.ceil(drain_s) + STOP_MARGIN_S)


def settings_for(config_path: Path, config: Config, host: Host, ccmitmd: Path | None = None) -> Settings:
    return Settings(
        ccmitmd=ccmitmd or find_ccmitmd(),
        config=paths.expand(config_path, host.environ).absolute(),
        env_file=host.env_file,
        stop_timeout_s=stop_timeout_s(config.proxy.drain_s),
    )


def template_text(manager: Manager) -> str:
    return (files(TEMPLATE_PACKAGE) / TEMPLATES[manager]).read_text(encoding="utf-8")


def _fill(template: str, values: Mapping[str, str]) -> str:
    text = template
    for name, value in values.items():
        text = text.replace(f"@{name}@", value)
    return text


def _systemd_escape(value: str) -> str:
    """A value systemd reads literally: no specifier (%) or variable ($) expansion."""
    return value.replace("%", "%%")


def _systemd_arg(value: str) -> str:
    """One ExecStart= argument, quoted when it holds characters systemd would split or expand."""
    escaped = _systemd_escape(value).replace("$", "$$")
    if any(ch in escaped for ch in " \t\"'\\;"):
        return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return escaped


def render_systemd(settings: Settings, template: str | None = None) -> str:
    return _fill(
        template if template is not None else template_text("systemd"),
        {
            "CCMITMD": _systemd_arg(str(settings.ccmitmd)),
            "CONFIG": _systemd_arg(str(settings.config)),
            "ENV_FILE": _systemd_escape(str(settings.env_file)),
            "TIMEOUT_STOP_SEC": str(settings.stop_timeout_s),
        },
    )


def launchd_path(ccmitmd: Path) -> str:
    entries = [str(ccmitmd.parent), *LAUNCHD_BASE_PATH]
    return ":".join(dict.fromkeys(entries))  # keeps order, drops a repeat


def render_launchd(settings: Settings, log_dir: Path, template: str | None = None) -> str:
    values = {
        "CCMITMD": str(settings.ccmitmd),
        "CONFIG": str(settings.config),
        "LOG_DIR": str(log_dir),
        "PATH": launchd_path(settings.ccmitmd),
        "TIMEOUT_STOP_SEC": str(settings.stop_timeout_s),
    }
    return _fill(
        template if template is not None else template_text("launchd"),
        {name: xml_escape(value) for name, value in values.items()},
    )


def render(host: Host, settings: Settings) -> str:
    if host.manager == "systemd":
        return render_systemd(settings)
    assert host.log_dir is not None
    return render_launchd(settings, host.log_dir)


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

    @property
    def commands(self) -> list[tuple[str, ...]]:
        return [action.argv for action in self.actions if isinstance(action, Run)]

    @property
    def writes(self) -> list[WriteFile]:
        return [action for action in self.actions if isinstance(action, WriteFile)]


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
    actions: list[Action] = _missing_dirs(host.unit_path.parent, 0o755)
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
