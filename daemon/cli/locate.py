"""Where the daemon's control socket is, without loading the config model.

The config model (pydantic) costs several times a bare Python start, and the commands a user or
Claude Code's status line runs often (`status`, `pause`, `resume`, `statusline`) need only one
key of it: ``control.socket``. Almost every config leaves it out, so the file is read as text and
parsed as YAML only when it mentions ``socket`` at all; anything unreadable means the default
socket, the same one the daemon uses when it serves the built-in defaults.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from ccmitm import paths


def control_socket(config_option: str | None = None, environ: Mapping[str, str] = os.environ) -> Path:
    """The socket the daemon of this config listens on (--config beats $CCMITM_CONFIG beats XDG).

    A config file that cannot be read or parsed is what makes the daemon serve its last good
    config, so the last good config's socket is the one to try then."""
    default = paths.default_socket_path(environ)
    for candidate in (
        paths.resolve_config_path(config_option, environ),
        paths.state_home(environ) / paths.LAST_GOOD_CONFIG,
    ):
        found = _socket_in(candidate, environ)
        if found is not None:
            return found or default
    return default


def _socket_in(path: Path, environ: Mapping[str, str]) -> Path | Literal[""] | None:
    """The socket a config file names; "" when it names none; None when it cannot be read.
    Read as the daemon reads a config: regular files only, never waiting, at most 1 MiB."""
    try:
        text = paths.read_small_file(path, paths.MAX_CONFIG_BYTES).decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    if "socket" not in text:
        return ""
    import yaml  # only now: the config names a socket somewhere

    try:
        data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except (yaml.YAMLError, RecursionError):
        return None
    control = data.get("control") if isinstance(data, dict) else None
    socket = control.get("socket") if isinstance(control, dict) else None
    if isinstance(socket, str) and socket:
        # The config model expands ~ the same way (config.model.UserPath).
        return paths.expand(socket, environ)
    return ""
