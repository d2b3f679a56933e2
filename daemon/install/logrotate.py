"""``ccctl logrotate``: the logrotate config, rendered from one template with this install's paths.

The template (``logrotate.conf.in``, package data next to this module) is the only copy: the
repository's ``logrotate/ccmitm`` is :func:`repository_copy` (``ccctl logrotate --repository-copy``;
``make docs`` writes it and a test checks it is current), and ``ccctl logrotate`` prints
:func:`for_install`, so a pip or pipx install gets the same file a clone has, with its own paths.
The names of the two log files come from the caller (they belong to ``logs/``, which this package
does not import).
"""

from __future__ import annotations

import shlex
import shutil
import sys
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

TEMPLATE = "logrotate.conf.in"

#: How a clone installs the shipped file by hand (its paths are the defaults, with ~ for $HOME).
CLONE_INSTALL = """\
# Install for your user: `ccctl logrotate > ~/.config/logrotate/ccmitm` writes this file with your
# install's paths. By hand from a clone (the paths below are the defaults; adjust them if you
# changed logs.dir or XDG_STATE_HOME):
#   mkdir -p ~/.config/logrotate && cp logrotate/ccmitm ~/.config/logrotate/ccmitm
#   sed -i "s|~|$HOME|g" ~/.config/logrotate/ccmitm
#   # daily from cron or a systemd user timer:
#   logrotate --state ~/.local/state/ccmitm/logrotate.status ~/.config/logrotate/ccmitm"""

RENDERED_INSTALL = """\
# Written by `ccctl logrotate` for the install with config {config}.
# Install for your user:
#   mkdir -p ~/.config/logrotate && {command} > ~/.config/logrotate/ccmitm
#   # daily from cron or a systemd user timer:
#   logrotate --state {status} ~/.config/logrotate/ccmitm"""


@dataclass(frozen=True)
class LogrotateSettings:
    """What the template needs: the two files to rotate, how to ask ccmitmd to reopen them."""

    usage_log: str
    daemon_log: str
    reopen: str  # a shell command line
    install: str  # the comment block on how to install the file


def template() -> str:
    return files("ccmitm.install").joinpath(TEMPLATE).read_text(encoding="utf-8")


def _quoted(path: Path | str) -> str:
    # logrotate reads double-quoted names, so a path with a space still names one file.
    text = str(path)
    if any(ch in text for ch in '"\n\r\0'):
        raise ValueError(f"a logrotate file name cannot contain quotes or line breaks: {text!r}")
    return f'"{text}"' if any(ch.isspace() for ch in text) else text


def render(settings: LogrotateSettings) -> str:
    text = template()
    for name, value in (
        ("@INSTALL@", settings.install),
        ("@USAGE_LOG@", settings.usage_log),
        ("@DAEMON_LOG@", settings.daemon_log),
        ("@REOPEN@", settings.reopen),
    ):
        text = text.replace(name, value)
    return text


def repository_copy(usage_file: str, daemon_log_file: str) -> str:
    """``logrotate/ccmitm`` in the repository: the default paths, ``ccctl`` from PATH."""
    return render(
        LogrotateSettings(
            usage_log=f"~/.local/state/ccmitm/logs/{usage_file}",
            daemon_log=f"~/.local/state/ccmitm/{daemon_log_file}",
            reopen="ccctl reopen-logs",
            install=CLONE_INSTALL,
        )
    )


def find_ccctl(executable: str = sys.executable) -> str:
    """This install's ccctl: next to the running interpreter (venv, pipx), else PATH's, else the name."""
    beside = Path(executable).parent / "ccctl"  # not resolved: a venv's python is a symlink
    if beside.is_file():
        return str(beside.absolute())
    return shutil.which("ccctl") or "ccctl"


def for_install(
    usage_log: Path, daemon_log: Path, config_path: Path, state_dir: Path, ccctl: str | None = None
) -> str:
    """The file for this install: its usage log, daemon log, ccctl and config, all absolute."""
    ccctl = ccctl or find_ccctl()
    config_path = config_path.absolute()
    return render(
        LogrotateSettings(
            usage_log=_quoted(usage_log.absolute()),
            daemon_log=_quoted(daemon_log.absolute()),
            reopen=shlex.join([ccctl, "--config", str(config_path), "reopen-logs"]),
            install=RENDERED_INSTALL.format(
                config=config_path,
                command=shlex.join([ccctl, "--config", str(config_path), "logrotate"]),
                status=state_dir.absolute() / "logrotate.status",
            ),
        )
    )
