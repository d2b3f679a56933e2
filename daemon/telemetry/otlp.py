"""OpenTelemetry: the same measurements over OTLP/HTTP (protobuf), for a team's collector.

Configured the standard way, by the variables the SDK reads itself: ``OTEL_EXPORTER_OTLP_ENDPOINT``
(or ``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT``), ``_HEADERS``, ``_TIMEOUT``, ``OTEL_METRIC_EXPORT_INTERVAL``,
``OTEL_RESOURCE_ATTRIBUTES`` / ``OTEL_SERVICE_NAME`` (they win over ccmitm's own ``service.name``).
Names follow the GenAI semantic conventions where they fit (``gen_ai.client.token.usage``,
``gen_ai.client.operation.duration`` with ``gen_ai.provider.name``, ``gen_ai.request.model``,
``gen_ai.response.model``), plus ``ccmitm.*`` instruments for what they do not cover.

Recording is an in-memory aggregation on the event loop; the SDK's PeriodicExportingMetricReader
exports from its own thread with a timeout, so a slow or absent collector never touches a call.
Failed exports are counted (``ccctl status``) and logged once per outage: the SDK's own export
logs are silenced, since they would repeat every interval (and could quote a collector's reply).

This module imports the SDK (a few tenths of a second): the supervisor imports it only when OTLP
export is on.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExportResult, MetricsData, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import OTELResourceDetector, Resource

from ccmitm.telemetry.measures import Measures
from ccmitm.telemetry.state import BREAKER_STATES, HOLD_CLASSES, StateReading

log = logging.getLogger(__name__)

PROTOCOL = "http/protobuf"
#: The GenAI conventions' advised bucket boundaries for these two histograms.
TOKEN_BUCKETS = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864]
DURATION_BUCKETS = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92]
#: How long a stop waits for the last export.
SHUTDOWN_TIMEOUT_MS = 5000
#: The gauges of one collection share a reading of the state this young.
READING_TTL_S = 1.0


def shown_endpoint(url: str) -> str:
    """The collector's URL without anything that could be a credential (user info, query)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


class ExportCounts:
    """Exports that went through and exports that failed (their points are dropped)."""

    def __init__(self, endpoint: str):
        self.endpoint = endpoint
        self.ok = 0
        self.failed = 0
        self._lock = threading.Lock()
        self._failing = False

    def count(self, success: bool) -> None:
        with self._lock:
            if success:
                self.ok += 1
            else:
                self.failed += 1
            changed = self._failing == success
            self._failing = not success
        if changed and not success:
            log.warning(
                "OTLP export to %s failed; its points are dropped until the collector answers "
                "(%d failed so far, see ccctl status)",
                self.endpoint,
                self.failed,
            )
        elif changed:
            log.info("OTLP export to %s works again", self.endpoint)


class CountingExporter(OTLPMetricExporter):
    """The SDK's OTLP/HTTP exporter, counting each export's outcome."""

    def __init__(self, counts: ExportCounts, **kwargs: Any):
        super().__init__(**kwargs)
        self.counts = counts

    def export(
        self, metrics_data: MetricsData, timeout_millis: float | None = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        try:
            result = super().export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        except Exception:  # never into the reader's thread: counted like any failed export
            result = MetricExportResult.FAILURE
        self.counts.count(result is MetricExportResult.SUCCESS)
        return result


class OtlpMetrics:
    """A MeterProvider of its own (never the global one), its reader thread and instruments."""

    def __init__(
        self,
        read_state: Callable[[], StateReading | None],
        version: str,
        include_session: bool,
        environ: Mapping[str, str] = os.environ,
    ):
        self.include_session = include_session
        for name in ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
            protocol = environ.get(name)
            if protocol and protocol.strip() != PROTOCOL:
                log.warning(
                    "%s=%s: ccmitmd exports over %s only (port 4318, not 4317)", name, protocol, PROTOCOL
                )
                break
        # The SDK's export warnings would repeat every interval while a collector is down;
        # ExportCounts logs an outage once instead.
        logging.getLogger("opentelemetry").setLevel(logging.CRITICAL)
        self.counts = ExportCounts("")
        exporter = CountingExporter(self.counts)  # the endpoint as the SDK resolved it from the environment
        self.counts.endpoint = shown_endpoint(str(getattr(exporter, "_endpoint", "")))
        self._reader = PeriodicExportingMetricReader(exporter)
        # ccmitm's names first; OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME win over them.
        resource = Resource.create({"service.name": "ccmitm", "service.version": version}).merge(
            OTELResourceDetector().detect()
        )
        self.provider = MeterProvider(
            metric_readers=[self._reader], resource=resource, shutdown_on_exit=False
        )
        meter = self.provider.get_meter("ccmitm", version)
        self.token_usage = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Tokens per Messages call (input includes cache reads and writes).",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
        )
        self.operation_duration = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="Duration of a Messages call through ccmitm.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.requests = meter.create_counter(
            "ccmitm.requests", unit="{request}", description="Finished calls (lane none: answered by ccmitm)."
        )
        self.tokens = meter.create_counter(
            "ccmitm.tokens",
            unit="{token}",
            description="Tokens by type (input, output, cache_read, cache_creation).",
        )
        self.ttfb = meter.create_histogram(
            "ccmitm.ttfb",
            unit="s",
            description="Time to the response's first byte.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self._read_state = read_state
        self._reading: tuple[float, StateReading | None] = (-READING_TTL_S, None)
        # The state gauges, read once per collection (see _state), as Prometheus reads them per scrape.
        gauges = (
            ("ccmitm.lane.available", self._available, "1", "1 when the lane would take a call now."),
            ("ccmitm.breaker.state", self._breaker, "1", "0 closed, 1 half open, 2 open."),
            ("ccmitm.lane.hold", self._hold, "1", "1 while the lane is held for a refusal of this class."),
            ("ccmitm.paused", self._paused, "1", "1 while the kill-switch is on."),
            ("ccmitm.quota.used", self._quota, "%", "Share of the lane's quota window used."),
        )
        for name, callback, unit, description in gauges:
            meter.create_observable_gauge(name, [callback], unit=unit, description=description)

    # --- recording (event loop) ------------------------------------------------------------------
    def observe(self, m: Measures) -> None:
        base: dict[str, str] = {"ccmitm.lane": m.lane, "ccmitm.reason": m.reason}
        self.requests.add(1, {**base, "ccmitm.status_class": m.status_class, "ccmitm.listener": m.listener})
        for kind, count in m.tokens:
            if count:
                self.tokens.add(count, {"ccmitm.lane": m.lane, "ccmitm.token.type": kind})
        if m.ttfb_s is not None:
            self.ttfb.record(m.ttfb_s, {"ccmitm.lane": m.lane})
        if not m.messages_call or m.provider is None:
            return  # settings, count_tokens, local answers: no GenAI operation happened
        attributes = {**base, "gen_ai.operation.name": "chat", "gen_ai.provider.name": m.provider}
        if m.model:
            attributes["gen_ai.request.model"] = m.model
        if m.upstream_model:
            attributes["gen_ai.response.model"] = m.upstream_model
        if self.include_session and m.session:
            attributes["session.id"] = m.session
        if m.duration_s is not None:
            failed = {"error.type": m.status_class} if m.failed else {}
            self.operation_duration.record(m.duration_s, {**attributes, **failed})
        tokens = dict(m.tokens)
        if not m.failed and tokens:
            # The conventions count cached input as input; the cache types stay in ccmitm.tokens.
            used_input = (
                tokens.get("input", 0) + tokens.get("cache_read", 0) + tokens.get("cache_creation", 0)
            )
            self.token_usage.record(used_input, {**attributes, "gen_ai.token.type": "input"})
            self.token_usage.record(tokens.get("output", 0), {**attributes, "gen_ai.token.type": "output"})

    # --- the gauges (reader thread) --------------------------------------------------------------
    def _state(self) -> StateReading | None:
        # One reading serves every gauge of a collection (they are called one after another).
        at, reading = self._reading
        now = time.monotonic()
        if now - at >= READING_TTL_S:
            reading = self._read_state()
            self._reading = (now, reading)
        return reading

    def _paused(self, _: CallbackOptions) -> Iterable[Observation]:
        reading = self._state()
        return [Observation(int(reading.paused))] if reading else []

    def _available(self, _: CallbackOptions) -> Iterable[Observation]:
        reading = self._state()
        lanes = reading.lanes if reading else ()
        return [Observation(int(lane.available), {"ccmitm.lane": lane.name}) for lane in lanes]

    def _breaker(self, _: CallbackOptions) -> Iterable[Observation]:
        reading = self._state()
        lanes = reading.lanes if reading else ()
        return [
            Observation(BREAKER_STATES.get(lane.breaker, 2), {"ccmitm.lane": lane.name})
            for lane in lanes
            if lane.breaker is not None
        ]

    def _hold(self, _: CallbackOptions) -> Iterable[Observation]:
        reading = self._state()
        lanes = reading.lanes if reading else ()
        return [
            Observation(int(lane.hold == cls), {"ccmitm.lane": lane.name, "ccmitm.hold.class": cls})
            for lane in lanes
            if lane.breaker is not None
            for cls in HOLD_CLASSES
        ]

    def _quota(self, _: CallbackOptions) -> Iterable[Observation]:
        reading = self._state()
        found = []
        for lane in reading.lanes if reading else ():
            if lane.quota is None:
                continue
            for window, figure in (("five_hour", lane.quota["five_hour"]), ("week", lane.quota["week"])):
                if figure is not None and figure["percent"] is not None:
                    found.append(
                        Observation(
                            figure["percent"], {"ccmitm.lane": lane.name, "ccmitm.quota.window": window}
                        )
                    )
        return found

    def shutdown(self) -> None:
        """The last export and the reader thread's end (blocks up to the timeout: call it off the loop)."""
        self.provider.shutdown(timeout_millis=SHUTDOWN_TIMEOUT_MS)
