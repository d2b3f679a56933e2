"""One send per burst: the writes mitmproxy makes to a connection in one go leave as one segment.

mitmproxy turns each message it forwards into separate writes (the HTTP/1 head, then the body;
TLS records one by one), and asyncio sends each write at once: a system call, and on loopback the
whole TCP path to the receiver, per write. A call through ccmitm made four sends where two do.

:class:`WriteCoalescer` is a mitmproxy addon that, when a client or server connection opens, puts
a :class:`CoalescingWriter` in front of its stream writer. The writer keeps the writes of one
event-loop step and sends them together: when mitmproxy drains its writers (it does after every
chunk it receives, so a streamed event is not held back at all), or else at the loop's next
step (``call_soon``), or before a close or half-close. Nothing is reordered, copied more than
once or delayed past the current loop step. It relies on two public-but-internal mitmproxy
attributes (``Proxyserver.connections``, ``ConnectionHandler.transports``); a test fails if they
change, and without them the addon does nothing (the proxy works as before).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from mitmproxy import connection
from mitmproxy.proxy import server_hooks

log = logging.getLogger(__name__)


class CoalescingWriter:
    """An ``asyncio.StreamWriter`` stand-in that sends the writes of one loop step at once."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.wrapped = writer
        self._loop = asyncio.get_running_loop()
        self._pending: list[bytes] = []
        self.sends = 0  # how many sends it made (tests compare with the writes)
        self.writes = 0

    def write(self, data: bytes) -> None:
        if not data:
            return
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(data)
        self.writes += 1

    def flush(self) -> None:
        pending = self._pending
        if not pending:
            return
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        self._pending = []
        if self.wrapped.is_closing():  # gone since the write (mitmproxy checks this per write too)
            return
        self.sends += 1
        self.wrapped.write(data)

    async def drain(self) -> None:
        self.flush()
        await self.wrapped.drain()

    def write_eof(self) -> None:
        self.flush()
        self.wrapped.write_eof()

    def close(self) -> None:
        self.flush()
        self.wrapped.close()

    def __getattr__(self, name: str) -> Any:
        # Everything else (is_closing, get_extra_info, wait_closed, transport, ...) as is.
        return getattr(self.wrapped, name)


class WriteCoalescer:
    """The addon: wraps each new TCP connection's writer (client side and server side)."""

    def __init__(self) -> None:
        self.wrapped = 0  # connections wrapped so far (a test reads it)

    def _wrap(self, client: connection.Client, conn: connection.Connection) -> None:
        from mitmproxy import ctx

        try:
            handler = ctx.master.addons.get("proxyserver").connections.get(client.id)
            io = handler.transports.get(conn) if handler is not None else None
        except AttributeError:  # a mitmproxy without these internals: send as before
            return
        writer = getattr(io, "writer", None)
        if isinstance(writer, asyncio.StreamWriter):
            io.writer = CoalescingWriter(writer)  # type: ignore[union-attr]
            self.wrapped += 1

    def client_connected(self, client: connection.Client) -> None:
        self._wrap(client, client)

    def server_connected(self, data: server_hooks.ServerConnectionHookData) -> None:
        self._wrap(data.client, data.server)
