"""The client token: the secret a local client shows to use ccmitmd's listeners.

It lives in ``<state dir>/client-token`` (0600, one line). The daemon creates it at its first start
(and ``ccctl env`` does, when it wires a shell before the daemon ever ran); ``ccctl token rotate``
replaces it. It sits with the lane keys in ``config/`` because it is read the same way by the
daemon, by ccctl and by the bundle, and like them it is never part of the config model.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path

from ccmitm import paths

log = logging.getLogger(__name__)

FILE_NAME = "client-token"
#: The user name in the proxy credentials wiring writes; any user name is accepted.
USER = "ccmitm"
#: The reverse listener's header (Claude Code sends it from ANTHROPIC_CUSTOM_HEADERS).
HEADER = "x-ccmitm-token"
#: Characters a URL and a header carry without quoting, and long enough to be scanned for by the
#: redactor; a hand-edited file that breaks this is replaced by a fresh token.
_VALID = re.compile(r"[A-Za-z0-9._~-]{16,512}")


class TokenError(OSError):
    """The token file could not be read or written (the message names the path, never the token)."""


def token_path(environ: Mapping[str, str] = os.environ) -> Path:
    return paths.state_home(environ) / FILE_NAME


def new_token() -> str:
    return secrets.token_urlsafe(32)


def read_token(path: Path) -> str | None:
    """The token in ``path``; None when the file is missing or does not hold a usable token.

    A file that group or others can read is made 0600 first (the token then counts as seen by
    them: the warning says to rotate it)."""
    try:
        info = path.stat()
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            path.chmod(0o600)
            log.warning("%s was readable by others: made it 0600; consider `ccctl token rotate`", path)
        # Never waiting (a FIFO put there would hang the daemon's start) and bounded.
        text = paths.read_small_file(path, 4096).decode("utf-8").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenError(f"cannot read the client token file {path}: {type(exc).__name__}") from None
    return text if _VALID.fullmatch(text) else None


def _create(path: Path) -> str:
    """A new token in ``path`` unless one appeared meanwhile: written to a temp file, then linked
    into place, which fails when ``path`` exists (two first starts agree on one token)."""
    paths.ensure_private_dir(path.parent)
    token = new_token()
    partial = path.with_name(f".{path.name}.{os.getpid()}.new")
    try:
        paths.write_atomic(partial, f"{token}\n".encode(), 0o600)
        try:
            os.link(partial, path)
        except FileExistsError:
            existing = read_token(path)
            if existing is not None:
                return existing
            os.replace(partial, path)  # what is there is unusable: this one replaces it
    except OSError as exc:
        raise TokenError(f"cannot write the client token file {path}: {exc.strerror}") from None
    finally:
        with contextlib.suppress(OSError):
            partial.unlink()
    return token


def ensure_token(path: Path) -> str:
    """The token in ``path``, created first if there is none (or only an unusable one)."""
    token = read_token(path)
    if token is not None:
        return token
    if path.exists():
        log.warning("%s does not hold a usable client token: writing a new one", path)
        with contextlib.suppress(OSError):
            path.unlink()
    return _create(path)


def rotate_token(path: Path) -> str:
    """Replace the token in ``path`` with a new one (atomically, 0600); the new token."""
    token = new_token()
    try:
        paths.write_private(path, f"{token}\n".encode())
    except OSError as exc:
        raise TokenError(f"cannot write the client token file {path}: {exc.strerror}") from None
    return token
