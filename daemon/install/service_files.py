"""What gets written for a service: the systemd user unit or the launchd agent, rendered from
the shipped templates (``service/`` in the repository, ``ccmitm.install.templates`` installed)."""

from __future__ import annotations

import math
import os
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from xml.sax.saxutils import escape as xml_escape

from ccmitm import paths
from ccmitm.config.model import Config
from ccmitm.install.host import LABEL, UNIT_NAME, Host, Manager, ServiceError

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
