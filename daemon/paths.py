"""Where ccmitm keeps things by default (XDG base directories)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import BinaryIO

CONFIG_ENV = "CCMITM_CONFIG"


def _xdg(name: str, fallback: str, environ: Mapping[str, str]) -> Path:
    value = environ.get(name)
    if value and os.path.isabs(value):
        return Path(value)
    return Path(environ.get("HOME") or Path.home()) / fallback


def config_home(environ: Mapping[str, str] = os.environ) -> Path:
    return _xdg("XDG_CONFIG_HOME", ".config", environ) / "ccmitm"


def state_home(environ: Mapping[str, str] = os.environ) -> Path:
    return _xdg("XDG_STATE_HOME", ".local/state", environ) / "ccmitm"


def runtime_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """The control socket's directory: $XDG_RUNTIME_DIR/ccmitm, else the state dir."""
    value = environ.get("XDG_RUNTIME_DIR")
    if value and os.path.isabs(value) and os.path.isdir(value):
        return Path(value) / "ccmitm"
    return state_home(environ)


def default_socket_path(environ: Mapping[str, str] = os.environ) -> Path:
    """The control socket when the config names none (``control.socket: null``)."""
    return runtime_dir(environ) / "control.sock"


def default_config_path(environ: Mapping[str, str] = os.environ) -> Path:
    return config_home(environ) / "config.yaml"


def resolve_config_path(cli_value: str | None, environ: Mapping[str, str] = os.environ) -> Path:
    """--config beats $CCMITM_CONFIG beats the XDG default."""
    if cli_value:
        return Path(cli_value).expanduser()
    if environ.get(CONFIG_ENV):
        return Path(environ[CONFIG_ENV]).expanduser()
    return default_config_path(environ)


def expand(path: str | Path, environ: Mapping[str, str] = os.environ) -> Path:
    """Expand ~ against $HOME of the given environment (tests run daemons with their own HOME)."""
    text = str(path)
    if text == "~" or text.startswith("~/"):
        home = environ.get("HOME") or str(Path.home())
        text = home + text[1:]
    return Path(text)


def ensure_private_dir(path: Path) -> Path:
    """Create a directory readable by its owner only, and tighten it if it already exists."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.stat().st_mode & 0o077:
        path.chmod(0o700)
    return path


def http_url(host: str, port: int) -> str:
    """http://host:port, with an IPv6 literal (::1) in brackets."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@contextlib.contextmanager
def atomic_file(path: Path, mode: int = 0o600) -> Iterator[BinaryIO]:
    """A binary file that replaces ``path`` atomically when the block ends without an error.

    The one way ccmitm writes a file: a unique temp file in the same directory (created 0600, so
    no other user can open it while it fills), fsync, chmod to ``mode``, rename. A reader sees the
    old file or the new one, never half of one; on an error the temp file is removed and ``path``
    is untouched."""
    import tempfile  # here, not at the top: `ccctl statusline` loads this module and writes nothing

    fd, partial = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        if mode != 0o600:
            os.chmod(partial, mode)
        os.replace(partial, path)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise


def write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Replace ``path`` atomically with ``data`` at ``mode`` (see :func:`atomic_file`)."""
    with atomic_file(path, mode) as handle:
        handle.write(data)


def write_private(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically with a file only its owner can read, in an owner-only dir."""
    ensure_private_dir(path.parent)
    write_atomic(path, data, 0o600)
