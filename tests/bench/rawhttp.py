"""A minimal asyncio HTTP/1.1 keep-alive client for the benchmarks.

Why not httpx: on a 2-core machine the load generator competes with the proxy for CPU, and
httpx spends several times more CPU per request than the bytes on the wire need. A lean client
keeps the proxy, not the client, the thing being measured, and it is the same client for every
variant (direct, bare mitmproxy, ccmitmd), so ratios stay fair. It speaks exactly what the fake
upstreams and mitmproxy send: content-length or chunked bodies, plus CONNECT + TLS for the
intercepting listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    """Where a client connects and what it asks for. ``proxy`` set: CONNECT to ``host`` through it."""

    host: str
    port: int
    path_prefix: str = ""
    proxy: tuple[str, int] | None = None
    tls: ssl.SSLContext | None = None
    #: Sent with every request (e.g. ccmitmd's x-ccmitm-token) and with the CONNECT (its
    #: Proxy-Authorization): what a wired client sends.
    headers: tuple[tuple[str, str], ...] = ()
    connect_headers: tuple[tuple[str, str], ...] = ()


class HTTPError(Exception):
    pass


class Connection:
    """One keep-alive connection; reconnects lazily after the server closed it."""

    def __init__(self, target: Target):
        self.target = target
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> None:
        t = self.target
        if t.proxy is None:
            self._reader, self._writer = await asyncio.open_connection(t.host, t.port)
            return
        reader, writer = await asyncio.open_connection(*t.proxy)
        extra = "".join(f"{k}: {v}\r\n" for k, v in t.connect_headers)
        writer.write(f"CONNECT {t.host}:{t.port} HTTP/1.1\r\nHost: {t.host}:{t.port}\r\n{extra}\r\n".encode())
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        if b" 200" not in head.split(b"\r\n", 1)[0]:
            raise HTTPError(f"CONNECT refused: {head[:80]!r}")
        if t.tls is not None:
            await writer.start_tls(t.tls, server_hostname=t.host)
        self._reader, self._writer = reader, writer

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await self._writer.wait_closed()
        self._reader = self._writer = None

    async def _send(self, path: str, body: bytes, headers: dict[str, str]) -> asyncio.StreamReader:
        if self._writer is None:
            await self._connect()
        assert self._reader is not None and self._writer is not None
        lines = [f"POST {self.target.path_prefix}{path} HTTP/1.1", f"Host: {self.target.host}"]
        lines += [f"{k}: {v}" for k, v in (*self.target.headers, *headers.items())]
        lines.append(f"Content-Length: {len(body)}")
        self._writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        await self._writer.drain()
        return self._reader

    @staticmethod
    async def _head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
        head = await reader.readuntil(b"\r\n\r\n")
        first, *rest = head.decode("latin-1").split("\r\n")
        status = int(first.split(" ", 2)[1])
        headers = {}
        for line in rest:
            if line:
                key, _, value = line.partition(":")
                headers[key.strip().lower()] = value.strip()
        return status, headers

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        """A whole call: status and body."""
        chunks = []
        status = 0
        async for code, _at, data in self.stream(path, body, headers):
            status = code
            if data:
                chunks.append(data)
        return status, b"".join(chunks)

    async def stream(
        self, path: str, body: bytes, headers: dict[str, str]
    ) -> AsyncIterator[tuple[int, int, bytes]]:
        """Yield (status, arrival monotonic_ns, bytes) for the head (empty bytes) and each body piece."""
        try:
            reader = await self._send(path, body, headers)
            status, head = await self._head(reader)
            yield status, time.monotonic_ns(), b""
            if "content-length" in head:
                yield status, time.monotonic_ns(), await reader.readexactly(int(head["content-length"]))
            elif head.get("transfer-encoding", "").lower() == "chunked":
                while True:
                    size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                    if size == 0:
                        await reader.readuntil(b"\r\n")
                        break
                    data = await reader.readexactly(size + 2)
                    yield status, time.monotonic_ns(), data[:-2]
            else:
                yield status, time.monotonic_ns(), await reader.read()
                await self.close()
            if head.get("connection", "").lower() == "close":
                await self.close()
        except BaseException:
            await self.close()  # a half-read response poisons the connection
            raise
