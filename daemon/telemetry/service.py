"""The telemetry the daemon runs: which exporters are on, fed from each finished call.

The supervisor owns one :class:`Telemetry`. :meth:`Telemetry.configure` runs at start and after
every reload: it starts, moves or stops the Prometheus server as ``metrics.listen`` says, and
starts or stops the OTLP export (``telemetry.otlp`` or ``OTEL_METRICS_EXPORTER=otlp``).
:meth:`Telemetry.observe` is one of the daemon's record observers: it turns the record into
:class:`~ccmitm.telemetry.measures.Measures` once and hands them to each exporter that is on.

prometheus_client and the OpenTelemetry SDK are imported only when their exporter is turned on,
in a worker thread, so neither the daemon's start nor its event loop pays for them otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import TYPE_CHECKING

from ccmitm.config.model import Config
from ccmitm.control.protocol import LaneQuota, TelemetryStatus
from ccmitm.logs.usage import UsageRecord
from ccmitm.proxy.state import Runtime
from ccmitm.telemetry.measures import measure, provider_names
from ccmitm.telemetry.state import StateSource, read_state

if TYPE_CHECKING:
    from ccmitm.telemetry.otlp import OtlpMetrics
    from ccmitm.telemetry.prometheus import MetricsServer, PrometheusMetrics

log = logging.getLogger("ccmitm")

#: How long a reload or a stop waits for the OTLP exporter's last export.
OTLP_STOP_WAIT_S = 6.0


def _import_prometheus() -> ModuleType:
    from ccmitm.telemetry import prometheus

    return prometheus


def _import_otlp() -> ModuleType:
    from ccmitm.telemetry import otlp

    return otlp


class Telemetry:
    def __init__(
        self,
        runtime: Runtime,
        quota: Callable[[str], LaneQuota | None],
        in_flight: Callable[[], int],
        version: str,
        environ: Mapping[str, str] = os.environ,
    ):
        self._runtime = runtime
        self._quota = quota
        self._in_flight = in_flight
        self._version = version
        self._environ = environ
        self._providers: dict[str, str] = {}
        self._source: StateSource | None = None
        self._prometheus: PrometheusMetrics | None = None
        self._server: MetricsServer | None = None
        self._server_error: str | None = None
        self._otlp: OtlpMetrics | None = None

    # --- the hot path: one record -----------------------------------------------------------------
    def observe(self, record: UsageRecord) -> None:
        prometheus, otlp = self._prometheus, self._otlp
        if prometheus is None and otlp is None:
            return
        measures = measure(record, self._providers)
        if prometheus is not None:
            prometheus.observe(measures)
        if otlp is not None:
            otlp.observe(measures)

    # --- start, reload, stop ------------------------------------------------------------------------
    async def configure(self, config: Config) -> None:
        """Make the exporters match ``config`` (and the OTLP environment). Call it on the loop."""
        self._providers = provider_names(config)
        if self._source is None:
            runtime, quota, in_flight = self._runtime, self._quota, self._in_flight
            self._source = StateSource(
                asyncio.get_running_loop(), lambda: read_state(runtime, quota, in_flight)
            )
        await self._configure_prometheus(config.metrics.address)
        await self._configure_otlp(otlp_wanted(config, self._environ), config.telemetry.include_session)

    async def _configure_prometheus(self, address: tuple[str, int] | None) -> None:
        server = self._server
        if server is not None and (address is None or (server.host, server.port) != address):
            await asyncio.to_thread(server.stop)
            self._server = None
            log.info("metrics: stopped serving %s", server.url)
        if address is None:
            self._prometheus = None
            self._server_error = None
            return
        if self._server is not None:
            return
        try:
            module = await asyncio.to_thread(_import_prometheus)
        except ImportError as exc:  # a broken install must not take the proxy down
            self._server_error = f"prometheus_client is not importable: {exc}"
            log.error("metrics.listen: %s", self._server_error)
            return
        if self._prometheus is None:
            assert self._source is not None
            self._prometheus = module.PrometheusMetrics(self._source, self._version)
        assert self._prometheus is not None
        server = module.MetricsServer(address[0], address[1], self._prometheus.wsgi_app())
        try:
            server.start()
        except OSError as exc:
            # The proxy keeps serving without its metrics: say so in the log and in ccctl status.
            self._server_error = f"cannot listen on {address[0]}:{address[1]}: {exc.strerror or exc}"
            log.error("metrics.listen: %s", self._server_error)
            return
        self._server = server
        self._server_error = None
        log.info("metrics: serving %s", server.url)

    async def _configure_otlp(self, on: bool, include_session: bool) -> None:
        running = self._otlp
        if running is not None and not on:
            self._otlp = None
            await _stop_otlp(running)
            log.info("OTLP export stopped")
            return
        if running is not None:
            running.include_session = include_session
            return
        if not on:
            return
        source = self._source
        assert source is not None
        version, environ = self._version, self._environ
        try:
            module = await asyncio.to_thread(_import_otlp)
            otlp = await asyncio.to_thread(module.OtlpMetrics, source, version, include_session, environ)
        except Exception as exc:  # e.g. an unusable OTEL_* value: the proxy serves on without export
            # The exception's class only: its text could quote a variable, and OTEL_* values
            # (the headers) hold the collector's credentials.
            log.error("OTLP export cannot start (%s): check the OTEL_* variables", type(exc).__name__)
            return
        self._otlp = otlp
        log.info("OTLP export on: metrics go to %s", otlp.counts.endpoint)

    async def close(self) -> None:
        """Stop serving and send the last OTLP export (bounded)."""
        server, otlp = self._server, self._otlp
        self._server = None
        self._prometheus = None
        self._otlp = None
        if server is not None:
            await asyncio.to_thread(server.stop)
        if otlp is not None:
            await _stop_otlp(otlp)

    # --- what status shows --------------------------------------------------------------------------
    def status(self) -> TelemetryStatus:
        otlp = self._otlp
        return {
            "prometheus": self._server.url if self._server is not None else None,
            "prometheus_error": self._server_error,
            "otlp": otlp.counts.endpoint if otlp is not None else None,
            "otlp_exports": otlp.counts.ok if otlp is not None else 0,
            "otlp_failed": otlp.counts.failed if otlp is not None else 0,
        }


def otlp_wanted(config: Config, environ: Mapping[str, str]) -> bool:
    """On when the config says so or ``OTEL_METRICS_EXPORTER`` names ``otlp`` (as for Claude Code);
    ``OTEL_SDK_DISABLED=true`` turns it off whatever the rest says."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = {name.strip().lower() for name in environ.get("OTEL_METRICS_EXPORTER", "").split(",")}
    return config.telemetry.otlp or "otlp" in exporters


async def _stop_otlp(otlp: OtlpMetrics) -> None:
    """The SDK's shutdown (a last export) on a thread of its own, waited for a bounded time: a
    collector that does not answer cannot hold up a reload or the daemon's stop."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def finished() -> None:
        if not done.done():
            done.set_result(None)

    def run() -> None:
        try:
            otlp.shutdown()
        except Exception as exc:
            log.warning("OTLP export: shutdown failed: %s", exc)
        finally:
            with contextlib.suppress(RuntimeError):  # the loop may be gone by now
                loop.call_soon_threadsafe(finished)

    threading.Thread(target=run, name="otlp-shutdown", daemon=True).start()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done, OTLP_STOP_WAIT_S)
