"""The control server, on the daemon's event loop: reads one request line, answers one reply line.

Only processes of the daemon's own user are served: the socket is 0600 in a 0700 directory, and
each connection's peer credentials are checked as well (root, or a socket directory someone
loosened, would otherwise let another user steer the daemon)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ccmitm.control.client import is_running, peer_uid
from ccmitm.control.protocol import MAX_LINE, ControlError, decode_request, encode_reply
from ccmitm.paths import ensure_private_dir

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Awaitable[Any]]


class ControlServer:
    def __init__(self, socket_path: Path, handlers: dict[str, Handler], allowed_uid: int | None = None):
        self.socket_path = socket_path
        self.handlers = handlers
        self.allowed_uid = os.getuid() if allowed_uid is None else allowed_uid
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        ensure_private_dir(self.socket_path.parent)
        if self.socket_path.exists() or self.socket_path.is_symlink():
            if is_running(self.socket_path):
                raise ControlError(f"another ccmitmd already answers on {self.socket_path}")
            try:
                self.socket_path.unlink()  # left behind by a daemon that did not stop cleanly
            except OSError as exc:  # e.g. another user's file in a sticky shared directory
                raise ControlError(f"cannot replace {self.socket_path}: {exc.strerror}") from None
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
            # Checked after the request is read: a socket closed with unread data resets the
            # connection, and the refused client would get no answer to show.
            sock = writer.get_extra_info("socket")
            uid = peer_uid(sock) if sock is not None else None
            if uid is not None and uid != self.allowed_uid:
                log.warning("control socket: refused a connection from uid %d", uid)
                writer.write(encode_reply(error=f"ccmitmd serves uid {self.allowed_uid} only"))
            else:
                writer.write(await self._dispatch(line))
            await writer.drain()
        except (TimeoutError, ConnectionError, ValueError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _dispatch(self, line: bytes) -> bytes:
        try:
            cmd, args = decode_request(line)
        except ValueError as exc:
            return encode_reply(error=str(exc))
        handler = self.handlers.get(cmd)
        if handler is None:
            return encode_reply(error=f"unknown command {cmd!r}")
        try:
            return encode_reply(await handler(args))
        except ControlError as exc:
            return encode_reply(error=str(exc))
        except Exception as exc:
            log.exception("control command %s failed", cmd)
            return encode_reply(error=f"{cmd} failed: {exc}")
