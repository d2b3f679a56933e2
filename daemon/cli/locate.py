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

from ccmitm import paths


def control_socket(config_option: str | None = None, environ: Mapping[str, str] = os.environ) -> Path:
    """The socket the daemon of this config listens on (--config beats $CCMITM_CONFIG beats XDG)."""
    config_path = paths.resolve_config_path(config_option, environ)
    default = paths.default_socket_path(environ)
    try:
        text = config_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return default
    if "socket" not in text:
        return default
    import yaml  # only now: the config names a socket somewhere

    try:
        data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError:
        return default
    control = data.get("control") if isinstance(data, dict) else None
    socket = control.get("socket") if isinstance(control, dict) else None
    if isinstance(socket, str) and socket:
        # The config model expands ~ the same way (config.model.UserPath).
        return paths.expand(socket, environ)
    return default
