"""Prometheus: the counters of finished calls, the state gauges, and the `/metrics` server.

Counters and histograms are fed by :meth:`PrometheusMetrics.observe` (one usage record's
measurements, on the event loop: a few in-memory increments). The state gauges (lane
availability, breakers, holds, the kill-switch, quota) are made by a custom collector at scrape
time, from a fresh reading of the Runtime, so they are never stale. Everything lives in this
object's own ``CollectorRegistry``, never prometheus_client's global one.

The server is one thread blocked in ``accept`` (through ``select`` without a timeout): an idle
daemon is not woken by it, unlike ``serve_forever``, which polls twice a second. It answers one
scrape at a time; a client that sends nothing is cut off after a few seconds.

This module imports prometheus_client (about 0.2 s): the supervisor imports it only when
``metrics.listen`` is set.
"""

from __future__ import annotations

import contextlib
import logging
import platform
import socket
import socketserver
import threading
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import CollectorRegistry, Counter, Histogram, Info, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ccmitm.telemetry.measures import Measures
from ccmitm.telemetry.state import BREAKER_STATES, HOLD_CLASSES, StateReading

log = logging.getLogger(__name__)

METRICS_PATH = "/metrics"
#: LLM calls take seconds to minutes; the buckets reach ten minutes (the read timeout's range).
DURATION_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320, 640)
TTFB_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64)
CLIENT_TIMEOUT_S = 5.0


class StateCollector(Collector):
    """The gauges read at scrape time. ``read`` returns None when the loop did not answer in
    time: the scrape then carries the counters only, and ``ccmitm_state_available`` is 0."""

    def __init__(self, read: Callable[[], StateReading | None]):
        self._read = read

    def describe(self) -> Iterable[Metric]:
        return []  # nothing is read when the collector is registered

    def collect(self) -> Iterator[Metric]:
        reading = self._read()
        ok = GaugeMetricFamily(
            "ccmitm_state_available",
            "1 when this scrape read the daemon's state (the gauges below are present).",
        )
        ok.add_metric([], 1 if reading is not None else 0)
        yield ok
        if reading is None:
            return
        yield GaugeMetricFamily(
            "ccmitm_paused",
            "1 while the kill-switch sends every call to the default lane.",
            value=int(reading.paused),
        )
        yield GaugeMetricFamily("ccmitm_in_flight", "Calls in progress.", value=reading.in_flight)
        available = GaugeMetricFamily(
            "ccmitm_lane_available",
            "1 when the lane would take a call now (has its key, breaker not open, not held).",
            labels=["lane"],
        )
        breaker = GaugeMetricFamily(
            "ccmitm_breaker_state",
            "The lane's circuit breaker: 0 closed, 1 half open, 2 open.",
            labels=["lane"],
        )
        hold = GaugeMetricFamily(
            "ccmitm_lane_hold",
            "1 while the lane is held out of rotation for a refusal of this class (quota, billing, ...).",
            labels=["lane", "class"],
        )
        quota = GaugeMetricFamily(
            "ccmitm_quota_used_percent",
            "Share of the lane's quota window used, as its meter last read it.",
            labels=["lane", "window"],
        )
        resets = GaugeMetricFamily(
            "ccmitm_quota_resets_timestamp_seconds",
            "When the lane's quota window resets (Unix time), as its meter last read it.",
            labels=["lane", "window"],
        )
        for lane in reading.lanes:
            available.add_metric([lane.name], int(lane.available))
            if lane.breaker is not None:
                breaker.add_metric([lane.name], BREAKER_STATES.get(lane.breaker, 2))
                for cls in HOLD_CLASSES:
                    hold.add_metric([lane.name, cls], int(lane.hold == cls))
            if lane.quota is not None:
                for window, figure in (("five_hour", lane.quota["five_hour"]), ("week", lane.quota["week"])):
                    if figure is None:
                        continue
                    if figure["percent"] is not None:
                        quota.add_metric([lane.name, window], float(figure["percent"]))
                    if figure["resets_at"]:
                        with contextlib.suppress(ValueError):
                            at = datetime.fromisoformat(figure["resets_at"]).timestamp()
                            resets.add_metric([lane.name, window], at)
        yield from (available, breaker, hold, quota, resets)


class PrometheusMetrics:
    """The registry and its instruments, for one daemon."""

    def __init__(self, read_state: Callable[[], StateReading | None], version: str):
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = Counter(
            "ccmitm_requests",
            "Finished calls (one per upstream attempt; lane none: answered by ccmitm itself).",
            ["lane", "reason", "status_class", "listener"],
            registry=self.registry,
        )
        self.tokens = Counter(
            "ccmitm_tokens",
            "Tokens the lanes reported, by type (input, output, cache_read, cache_creation).",
            ["lane", "type"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "ccmitm_request_duration_seconds",
            "Time from the request to the response's last byte.",
            ["lane"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.ttfb = Histogram(
            "ccmitm_ttfb_seconds",
            "Time from the request to the response's first byte.",
            ["lane"],
            buckets=TTFB_BUCKETS,
            registry=self.registry,
        )
        Info("ccmitm_build", "The running ccmitmd.", registry=self.registry).info(
            {"version": version, "python": platform.python_version()}
        )
        self.registry.register(StateCollector(read_state))

    def observe(self, measures: Measures) -> None:
        lane = measures.lane
        self.requests.labels(lane, measures.reason, measures.status_class, measures.listener).inc()
        for kind, count in measures.tokens:
            if count:
                self.tokens.labels(lane, kind).inc(count)
        if measures.duration_s is not None:
            self.duration.labels(lane).observe(measures.duration_s)
        if measures.ttfb_s is not None:
            self.ttfb.labels(lane).observe(measures.ttfb_s)

    def wsgi_app(self) -> Callable[..., Any]:
        metrics = make_wsgi_app(self.registry)

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            if environ.get("PATH_INFO") != METRICS_PATH:
                start_response("404 Not Found", [("Content-Type", "text/plain")])
                return [f"ccmitm serves {METRICS_PATH} only\n".encode()]
            result: Iterable[bytes] = metrics(environ, start_response)
            return result

        return app


class _Handler(WSGIRequestHandler):
    timeout = CLIENT_TIMEOUT_S  # a client that connects and sends nothing cannot hold the thread

    def log_message(self, format: str, *args: Any) -> None:
        pass  # a scrape every few seconds is not news


class _Server(WSGIServer):
    def server_bind(self) -> None:
        # HTTPServer.server_bind looks the host's name up (getfqdn): a DNS query at start, for
        # nothing. Bind and name the server by its address instead.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)
        self.setup_environ()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("metrics: a scrape from %s failed", client_address, exc_info=True)


class MetricsServer:
    """``/metrics`` on ``host:port`` from one blocking thread. :meth:`start` raises OSError when
    the address cannot be bound."""

    def __init__(self, host: str, port: int, app: Callable[..., Any]):
        self.host = host
        self.port = port
        self._app = app
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{METRICS_PATH}"

    def start(self) -> None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        server_class = type("_BoundServer", (_Server,), {"address_family": family})
        server = server_class((self.host, self.port), _Handler, bind_and_activate=True)
        server.set_app(self._app)
        self.port = int(server.server_address[1])  # the port bound (port 0: a free one)
        self._server = server
        self._thread = threading.Thread(target=self._serve, name="metrics-server", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        server = self._server
        assert server is not None
        while not self._stopping:
            server.handle_request()  # blocks until a client connects (no timeout, no polling)

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._stopping = True
        # Wake the blocked accept with a connection of our own; it is answered or dropped, then
        # the loop sees the flag.
        host, port = server.socket.getsockname()[:2]
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1" if server.address_family == socket.AF_INET else "::1"
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1.0):
            pass
        thread.join(CLIENT_TIMEOUT_S + 1)
        server.server_close()
        self._server = self._thread = None
