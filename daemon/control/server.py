"""The control channel: one JSON request line, one JSON reply line, over a Unix socket.

The socket is 0600 inside a 0700 directory and there is no TCP control port: whoever can open it
is the user who owns the daemon. Request ``{"cmd": "status", "args": {...}}``; reply
``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "..."}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ccmitm.paths import ensure_private_dir

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Awaitable[Any]]
MAX_LINE = 1024 * 1024
NOT_RUNNING = "ccmitmd is not running; start it with `ccctl start`, `make run` or the service"


class ControlError(RuntimeError):
    """The daemon answered with an error."""


class DaemonNotRunning(ControlError):
    """Nobody listens on the control socket."""

    def __init__(self, socket_path: Path):
        super().__init__(NOT_RUNNING)
        self.socket_path = socket_path


# --- client ----------------------------------------------------------------------------------------
def call(socket_path: Path, cmd: str, timeout: float = 30.0, **args: Any) -> Any:
    """Send one command to the daemon and return its result (blocking; for ccctl)."""
    request = json.dumps({"cmd": cmd, "args": args}).encode() + b"\n"
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    except OSError as exc:  # pragma: no cover - no AF_UNIX
        raise ControlError(f"cannot create a Unix socket: {exc}") from exc
    with sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(socket_path))
        except (FileNotFoundError, ConnectionRefusedError):
            raise DaemonNotRunning(socket_path) from None
        except PermissionError as exc:
            raise ControlError(f"cannot open the control socket {socket_path}: {exc.strerror}") from None
        sock.sendall(request)
        chunks: list[bytes] = []
        while True:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                raise ControlError(f"ccmitmd did not answer {cmd!r} within {timeout:g}s") from None
            if not data:
                break
            chunks.append(data)
            if data.endswith(b"\n"):
                break
    raw = b"".join(chunks)
    if not raw:
        raise ControlError("ccmitmd closed the control connection without an answer")
    reply = json.loads(raw)
    if not reply.get("ok"):
        raise ControlError(str(reply.get("error") or "unknown error"))
    return reply.get("result")


def is_running(socket_path: Path) -> bool:
    try:
        call(socket_path, "ping", timeout=2)
    except ControlError:
        return False
    return True


# --- server ----------------------------------------------------------------------------------------
class ControlServer:
    def __init__(self, socket_path: Path, handlers: dict[str, Handler]):
        self.socket_path = socket_path
        self.handlers = handlers
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        ensure_private_dir(self.socket_path.parent)
        if self.socket_path.exists() or self.socket_path.is_symlink():
            if is_running(self.socket_path):
                raise ControlError(f"another ccmitmd already answers on {self.socket_path}")
            self.socket_path.unlink()  # left behind by a daemon that did not stop cleanly
        old_umask = os.umask(0o177)  # the socket is born 0600: no window where others can connect
        try:
            self._server = await asyncio.start_unix_server(
                self._serve, path=str(self.socket_path), limit=MAX_LINE
            )
        finally:
            os.umask(old_umask)
        os.chmod(self.socket_path, 0o600)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 10)
            reply = await self._dispatch(line)
            writer.write(json.dumps(reply, default=str).encode() + b"\n")
            await writer.drain()
        except (TimeoutError, ConnectionError, ValueError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _dispatch(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
            cmd = request["cmd"]
            args = request.get("args") or {}
            if not isinstance(cmd, str) or not isinstance(args, dict):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            return {"ok": False, "error": "malformed request"}
        handler = self.handlers.get(cmd)
        if handler is None:
            return {"ok": False, "error": f"unknown command {cmd!r}"}
        try:
            return {"ok": True, "result": await handler(args)}
        except ControlError as exc:
            return {"ok": False, "error": str(exc)}
        except Exception as exc:
            log.exception("control command %s failed", cmd)
            return {"ok": False, "error": f"{cmd} failed: {exc}"}
