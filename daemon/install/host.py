"""The machine a service is installed on: which service manager, HOME, uid, and the one seam
through which every service-manager command runs.

Everything machine-dependent sits in one :class:`Host` value, and every command goes through
``Host.runner``, so tests render both platforms and install against a fake HOME without touching a
real service manager.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ccmitm import paths

Manager = Literal["systemd", "launchd"]

UNIT_NAME = "ccmitm.service"
LABEL = "io.ccmitm.daemon"
ENV_FILE_NAME = "ccmitm.env"
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
