"""Owns the embedded mitmproxy Master: which addons, which options, which listeners.

A plain Master with only the addons ccmitm needs (no DumpMaster: its ErrorCheck exits the process
on any startup ERROR record). Options are derived from the config in one pure function so a reload
can compute and apply them as one ``options.update``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h11
from mitmproxy import connection, ctx, http, options
from mitmproxy.net.tls import starts_like_tls_record
from mitmproxy.proxy import commands, events, layer
from mitmproxy.proxy.layers import ClientTLSLayer, HttpLayer
from mitmproxy.proxy.layers.http._http1 import Http1Server
from mitmproxy.proxy.mode_specs import ReverseMode

from ccmitm.config.model import Config
from ccmitm.proxy import tuning
from ccmitm.proxy.coalesce import WriteCoalescer
from ccmitm.proxy.state import LaneEndpoint

if TYPE_CHECKING:
    from mitmproxy.addons import proxyserver
    from mitmproxy.master import Master

log = logging.getLogger(__name__)


CA_PRIVATE_FILES = ("mitmproxy-ca.pem", "mitmproxy-ca.p12")


def secure_confdir(confdir: Path) -> list[str]:
    """The CA's private key opens every TLS session we intercept: keep it and its directory
    owner-only. mitmproxy writes new keys 0600 but never re-checks existing ones, so repair here."""
    repaired: list[str] = []
    if not confdir.is_dir():
        return repaired
    if confdir.stat().st_mode & 0o077:
        confdir.chmod(0o700)
        repaired.append(str(confdir))
    for name in CA_PRIVATE_FILES:
        path = confdir / name
        if path.is_file() and path.stat().st_mode & 0o077:
            path.chmod(0o600)
            repaired.append(str(path))
    for item in repaired:
        log.warning("tightened permissions of %s (the CA private key must be yours alone)", item)
    return repaired


class ListenerError(RuntimeError):
    """A listener could not start (port taken, bad address)."""


def _host_pattern(host: str, port: int | None = None) -> str:
    # allow_hosts is matched with re.search against "host:port": anchor it, so that
    # "api.anthropic.com.evil.example" is not decrypted.
    return f"^{re.escape(host)}:{port if port is not None else r'\d+'}$"


def listener_modes(config: Config) -> list[str]:
    proxy = config.proxy
    modes = [f"regular@{proxy.port}"]
    if proxy.reverse_port is not None:
        modes.append(f"reverse:{config.default_lane.url}@{proxy.reverse_port}")
    return modes


def mitmproxy_options(config: Config) -> dict[str, Any]:
    """The mitmproxy option values for a config."""
    proxy = config.proxy
    allow = [_host_pattern(host) for host in proxy.intercept_hosts]
    if proxy.reverse_port is not None:
        # The reverse listener's target must be allowed too, or mitmproxy tunnels its traffic
        # as raw TCP past the addon: unrouted and unlogged.
        target = LaneEndpoint.build(config.routing.default_lane, config.default_lane, None)
        allow.append(_host_pattern(target.host, target.port))
    return {
        "listen_host": proxy.host,
        "mode": listener_modes(config),
        "confdir": proxy.confdir,
        "http2": proxy.http2,
        "allow_hosts": allow,
        # Connect upstream only once the request is routed: the CONNECT host is rarely where
        # the request ends up.
        "connection_strategy": "lazy",
        # A memory backstop only: the addon refuses bodies over max_body_bytes itself, with an
        # Anthropic-shaped 413 (mitmproxy checks first, so its limit sits far above ours: only a
        # body over 4x the limit gets mitmproxy's plain-text 413).
        "body_size_limit": str(4 * proxy.max_body_bytes),
        "keep_host_header": False,
        "tcp_timeout": int(max(proxy.read_timeout_s, 1)),
        # mitmproxy's default, stated because the Router relies on it: requests with ambiguous
        # framing (Content-Length and Transfer-Encoding, several lengths) or invalid header names
        # are refused with a 400 before any hook runs.
        "validate_inbound_headers": True,
    }


class _Refused(layer.Layer):
    """A layer that closes the client connection at once: what a protocol we do not serve gets."""

    _closed = False

    def _handle_event(self, event: events.Event) -> layer.CommandGenerator[None]:
        if not self._closed:
            self._closed = True
            yield commands.CloseConnection(self.context.client)


class _TrailerKeepingReader:
    """A chunked-body reader that keeps the trailer fields on the request instead of failing.

    mitmproxy's HTTP/1.1 server raises NotImplementedError on request trailers, and the call then
    hangs unanswered. With the trailers kept on ``request.trailers`` the request reaches the
    Router, which answers it with a 400 (see hygiene.body_problem)."""

    def __init__(self, inner: Any, request: http.Request) -> None:
        self.inner = inner
        self.request = request

    def __call__(self, buf: Any) -> Any:
        event = self.inner(buf)
        if isinstance(event, h11.EndOfMessage) and event.headers:
            self.request.trailers = http.Headers([(bytes(n), bytes(v)) for n, v in event.headers])
            return h11.EndOfMessage()
        return event

    def read_eof(self) -> Any:
        return self.inner.read_eof()


class _Http1Server(Http1Server):
    """mitmproxy's HTTP/1.1 server side, with request trailers kept instead of crashing on them."""

    def read_body(self, event: events.Event) -> layer.CommandGenerator[None]:
        if self.request is not None and not isinstance(self.body_reader, _TrailerKeepingReader):
            self.body_reader = _TrailerKeepingReader(self.body_reader, self.request)  # type: ignore[assignment]  # same interface
        yield from super().read_body(event)


class ListenerGuard:
    """What the listeners accept before any request exists.

    - The reverse listener serves plain HTTP only, as documented. Its mode ("reverse:https://…")
      names the upstream's scheme, but mitmproxy would also accept TLS from the client (with a
      certificate minted for any SNI): such a connection is closed here, as is any UDP (QUIC)
      connection, should mitmproxy ever serve one on that mode.
    - A plain HTTP/1.1 client connection gets :class:`_Http1Server`, so that a request with
      trailers is answered (with a 400) instead of hanging.
    - A connection must deliver a complete request head within ``header_timeout_s`` of opening
      (or of its CONNECT), or it is closed: otherwise a client trickling a partial head holds a
      connection open for as long as it likes. Later requests on a kept-alive connection are not
      timed (an idle keep-alive connection is normal; mitmproxy's tcp_timeout ends those).

    Added after mitmproxy's NextLayer addon: its ``next_layer`` sees (and may replace) the
    layers NextLayer chose."""

    def __init__(self, servers: proxyserver.Proxyserver, header_timeout_s: float) -> None:
        self.servers = servers
        self.header_timeout_s = header_timeout_s
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._intercepted: list[re.Pattern[str]] = []

    def configure(self, updated: set[str]) -> None:
        if "allow_hosts" in updated:
            self._intercepted = [re.compile(x, re.IGNORECASE) for x in ctx.options.allow_hosts]

    def next_layer(self, nextlayer: layer.NextLayer) -> None:
        context = nextlayer.context
        if nextlayer.layer is None:  # NextLayer wants more bytes first
            return
        if isinstance(context.client.proxy_mode, ReverseMode) and (
            context.client.transport_protocol == "udp" or starts_like_tls_record(nextlayer.data_client())
        ):
            log.info("reverse listener: closed a TLS or UDP connection (it serves plain HTTP only)")
            nextlayer.layer = _Refused(context)
            return
        current: layer.Layer | None = nextlayer.layer
        while current is not None and not isinstance(current, ClientTLSLayer):
            if isinstance(current, HttpLayer):
                client = current.context.client
                if client.alpn in (None, b"", b"http/1.1"):
                    current.connections.setdefault(client, _Http1Server(current.context.fork()))
                return
            current = getattr(current, "child_layer", None)

    # --- the header timeout ------------------------------------------------------------------------
    def client_connected(self, client: connection.Client) -> None:
        if client.transport_protocol == "tcp":
            self._arm(client.id)

    def http_connect(self, flow: http.HTTPFlow) -> None:
        # The CONNECT head is in; the request head inside the tunnel is next. A tunnel that is not
        # decrypted (a host outside intercept_hosts) carries no request of ours: not timed.
        target = f"{flow.request.host}:{flow.request.port}"
        if any(pattern.search(target) for pattern in self._intercepted):
            self._arm(flow.client_conn.id)
        else:
            self._disarm(flow.client_conn.id)

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        self._disarm(flow.client_conn.id)

    def client_disconnected(self, client: connection.Client) -> None:
        self._disarm(client.id)

    def _arm(self, client_id: str) -> None:
        self._disarm(client_id)
        loop = asyncio.get_running_loop()
        self._timers[client_id] = loop.call_later(self.header_timeout_s, self._expire, client_id)

    def _disarm(self, client_id: str) -> None:
        timer = self._timers.pop(client_id, None)
        if timer is not None:
            timer.cancel()

    def _expire(self, client_id: str) -> None:
        self._timers.pop(client_id, None)
        handler = self.servers.connections.get(client_id)
        if handler is None:
            return
        log.info("closed a connection with no complete request head after %ss", self.header_timeout_s)
        with contextlib.suppress(KeyError):  # it closed by itself in the meantime
            handler.close_connection(handler.client)


@dataclass(frozen=True)
class ListenerInfo:
    mode: str
    addresses: tuple[tuple[str, int], ...]


class Proxy:
    """The running mitmproxy. Create and use on the event loop's thread."""

    def __init__(self, config: Config, addons: list[Any]):
        # The four addons ccmitm uses, without the ~30 others mitmproxy's addons package imports
        # up front (see tuning.py): about half of the daemon's start-up time.
        tuning.light_addons_package()
        tuning.skip_message_type_checks()  # mitmproxy's debug-only check of every message
        tuning.trust_own_ca_key()  # no RSA validation of the CA key mitmproxy generated for us
        from mitmproxy.addons import core, next_layer, proxyserver, tlsconfig
        from mitmproxy.master import Master  # imports an addon too

        self.master: Master = Master(options.Options(), with_termlog=False)
        servers = proxyserver.Proxyserver()
        self.guard = ListenerGuard(servers, config.proxy.header_timeout_s)
        self.master.addons.add(
            core.Core(),
            servers,
            next_layer.NextLayer(),
            self.guard,  # after NextLayer: it reviews the layers NextLayer chose
            tlsconfig.TlsConfig(),
            WriteCoalescer(),  # before ccmitm's addons: a connection is wrapped before it is used
            *addons,
        )
        self._initial = mitmproxy_options(config)
        self._task: asyncio.Task[None] | None = None

    @property
    def _proxyserver(self) -> proxyserver.Proxyserver:
        return self.master.addons.get("proxyserver")

    async def start(self, timeout: float = 15.0) -> None:
        self.master.options.update(**self._initial)
        self._task = asyncio.create_task(self.master.run(), name="mitmproxy")
        await self._wait_listening(timeout)

    async def _wait_listening(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            servers = list(self._proxyserver.servers)
            failed = [s for s in servers if s.last_exception is not None]
            if failed:
                raise ListenerError("; ".join(f"{s.mode.full_spec}: {s.last_exception}" for s in failed))
            if servers and all(s.is_running for s in servers):
                return
            if self._task is not None and self._task.done():
                self._task.result()
                raise ListenerError("mitmproxy stopped during start")
            if loop.time() > deadline:
                raise ListenerError("listeners did not start in time")
            await asyncio.sleep(0.005)  # binding takes a few ms: READY is not held for a long tick

    def listeners(self) -> list[ListenerInfo]:
        return [
            ListenerInfo(s.mode.full_spec, tuple((a[0], a[1]) for a in s.listen_addrs))
            for s in self._proxyserver.servers
        ]

    async def apply(self, config: Config) -> None:
        """Apply a new config's options in one update; listeners are re-bound only if they changed."""
        self.guard.header_timeout_s = config.proxy.header_timeout_s
        wanted = mitmproxy_options(config)
        current = {name: getattr(self.master.options, name) for name in wanted}
        changed = {
            name: value
            for name, value in wanted.items()
            if (list(value) if isinstance(value, (list, tuple)) else value)
            != (list(current[name]) if isinstance(current[name], (list, tuple)) else current[name])
        }
        if not changed:
            return
        self.master.options.update(**changed)
        if "mode" in changed or "listen_host" in changed:
            await self._wait_listening(15.0)

    def listening(self) -> bool:
        servers = list(self._proxyserver.servers)
        return bool(servers) and all(s.is_running for s in servers)

    async def stop_listening(self) -> None:
        """Close the listening sockets; connections already accepted carry on."""
        await self._proxyserver.servers.update([])

    async def shutdown(self) -> None:
        await self.stop_listening()
        self.master.shutdown()
        if self._task is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._task, 10)
