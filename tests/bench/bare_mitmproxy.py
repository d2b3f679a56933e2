"""The benchmarks' baseline: bare mitmproxy, built exactly as ccmitmd builds it, minus ccmitm.

Same Master construction (``ccmitm.proxy.master.Proxy``: the same four mitmproxy addons), the same
options from the same config file (both listeners, TLS interception with the same CA, lazy
connections, allow_hosts, body_size_limit, timeouts), and in place of ccmitm's Router a tiny addon
that only redirects every request to one upstream and streams SSE responses (without that,
mitmproxy would buffer them, which no SSE proxy can do). The difference between the two is what
ccmitm itself costs.

Usage: bare_mitmproxy.py CONFIG UPSTREAM_URL  (prints "ready" once both listeners are up)
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from urllib.parse import urlsplit

from mitmproxy import http

from ccmitm.config.load import load
from ccmitm.proxy.master import Proxy


class Redirect:
    def __init__(self, url: str):
        parts = urlsplit(url)
        self.scheme, self.host, self.port = parts.scheme, parts.hostname or "", parts.port or 80

    def request(self, flow: http.HTTPFlow) -> None:
        request = flow.request
        request.scheme = self.scheme
        request.host = self.host
        request.port = self.port

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        assert flow.response is not None
        if flow.response.headers.get("content-type", "").startswith("text/event-stream"):
            flow.response.stream = True


async def serve(config_path: Path, upstream: str) -> None:
    config = load(config_path).config
    proxy = Proxy(config, [Redirect(upstream)])
    await proxy.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await proxy.shutdown()


if __name__ == "__main__":
    asyncio.run(serve(Path(sys.argv[1]), sys.argv[2]))
