"""The control server, on the daemon's event loop: reads one request line, answers one reply line."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ccmitm.control.client import is_running
from ccmitm.control.protocol import MAX_LINE, ControlError, decode_request, encode_reply
from ccmitm.paths import ensure_private_dir

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Awaitable[Any]]


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
