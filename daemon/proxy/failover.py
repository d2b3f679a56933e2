"""The one failover: re-send a request the offload lane refused to the default lane, as the client
wrote it, with the client's own credentials.

mitmproxy cannot splice a second upstream into a flow it is already answering, so this hop is made
with an HTTP client of our own and its answer replaces the refused one whole. That only ever
happens before the client has seen a single byte (the refusal is held back), and at most once per
call: Claude Code retries by itself, and a second retry loop would multiply load.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mitmproxy import http

from ccmitm.proxy.hygiene import path_problem
from ccmitm.proxy.state import LaneEndpoint

if TYPE_CHECKING:
    # httpx costs a tenth of the daemon's start-up and is needed only at the first failover
    # (the supervisor warms it in a worker thread after READY): imported where it is used.
    import httpx

# Hop-by-hop and framing headers belong to each connection, not to the request.
_NOT_FORWARDED = frozenset(
    {
        "host",
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "content-length",
        "accept-encoding",
    }
)
_NOT_RETURNED = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding"}
)


def lane_url(lane: LaneEndpoint, path: str) -> httpx.URL:
    """The lane's URL for ``path``, built from parts: the host is always the lane's.

    Pasting the client's path after "scheme://host:port" would let a path such as
    "@evil.example/v1/messages" turn the lane's host into userinfo and name another host, so the
    path must be origin-form (the Router refuses anything else before routing; this is the last
    line) and goes into the URL as its path and query only."""
    import httpx  # see the top: only at a failover

    problem = path_problem(path)
    if problem is not None:
        raise ValueError(problem)
    raw_path = (lane.prefix + path).encode()
    return httpx.URL(scheme=lane.scheme, host=lane.host, port=lane.port, raw_path=raw_path)


class DefaultLaneClient:
    """A lazily created async HTTP client for failover hops; never reads proxy settings from env.

    ``transport`` replaces the network (tests pass an ``httpx.MockTransport``)."""

    def __init__(self, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._proxy: str | None = None

    async def send(
        self, original: http.Request, lane: LaneEndpoint, timeout_s: float, proxy: str | None = None
    ) -> http.Response:
        """The call, whole, on ``lane``; through ``proxy`` (proxy.upstream_proxy) when given."""
        if lane.keyed:
            raise ValueError("failover only goes to a pass-through lane")
        if self._client is not None and self._proxy != proxy:
            await self.close()  # proxy.upstream_proxy changed by a reload: a client is per proxy
        import httpx

        if self._client is None:
            # trust_env=False: an HTTPS_PROXY in the daemon's environment could point back at us;
            # the one proxy it uses is the configured one.
            self._client = httpx.AsyncClient(
                trust_env=False, follow_redirects=False, transport=self._transport, proxy=proxy
            )
            self._proxy = proxy
        headers = [
            (name, value)
            for name, value in original.headers.items(multi=True)
            if name.lower() not in _NOT_FORWARDED
        ]
        headers.append(("accept-encoding", "identity"))
        import httpx  # loaded by _client_for by now: a dictionary lookup

        url = lane_url(lane, original.path)
        response = await self._client.request(
            original.method,
            url,
            headers=headers,
            content=original.raw_content or b"",
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 15.0)),
        )
        body = response.content
        returned = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in _NOT_RETURNED]
        returned.append(("content-length", str(len(body))))
        result = http.Response.make(response.status_code, body)
        result.headers = http.Headers([(k.encode(), v.encode()) for k, v in returned])
        result.http_version = response.http_version
        return result

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
