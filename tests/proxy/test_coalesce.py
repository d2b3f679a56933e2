"""The write coalescer (proxy/coalesce.py) in a real mitmproxy: each connection is wrapped, a
forwarded message leaves in fewer sends than mitmproxy's writes, and the bytes arrive unchanged."""

from __future__ import annotations

import asyncio
import json

from ccmitm.config.load import validate
from ccmitm.proxy.coalesce import CoalescingWriter, WriteCoalescer
from ccmitm.proxy.master import Proxy
from ccmitm.testing.fakeupstream import FakeUpstream
from ccmitm.testing.harness import private_config


async def _call(port: int, body: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = f"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    writer.write(head + body)
    await writer.drain()
    answer = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in answer.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    answer += await reader.readexactly(length)
    writer.close()
    return answer


def test_each_connection_is_wrapped_and_a_message_goes_in_fewer_sends(tmp_path) -> None:
    upstream = FakeUpstream("anthropic").start()
    try:
        config = validate(private_config(tmp_path, upstream.url, upstream.url))
        body = json.dumps({"model": "claude-sonnet-4-5", "max_tokens": 8, "messages": []}).encode()

        async def run() -> tuple[int, list[CoalescingWriter], bytes]:
            proxy = Proxy(config, [])
            await proxy.start()
            try:
                coalescer = proxy.master.addons.get("writecoalescer")
                assert isinstance(coalescer, WriteCoalescer)
                writers: list[CoalescingWriter] = []
                original = CoalescingWriter.__init__

                def spy(self: CoalescingWriter, writer: asyncio.StreamWriter) -> None:
                    original(self, writer)
                    writers.append(self)

                CoalescingWriter.__init__ = spy  # type: ignore[method-assign]
                try:
                    answer = await _call(config.proxy.reverse_port or 0, body)
                finally:
                    CoalescingWriter.__init__ = original  # type: ignore[method-assign]
                return coalescer.wrapped, writers, answer
            finally:
                await proxy.shutdown()

        wrapped, writers, answer = asyncio.run(run())
    finally:
        upstream.stop()
    # The client's connection and the upstream's: if mitmproxy renames the internals the
    # coalescer reaches for, nothing is wrapped and this fails.
    assert wrapped == 2 and len(writers) == 2
    assert answer.startswith(b"HTTP/1.1 200")
    assert upstream.messages()[0].body == body  # the request reached the upstream whole
    for writer in writers:
        assert writer.writes >= 2, "mitmproxy wrote head and body apart"
        assert writer.sends < writer.writes
