"""A tiny OTLP/HTTP receiver on loopback for the tests: accepts POST /v1/metrics, keeps the raw
bodies (for the secret scan) and the decoded ExportMetricsServiceRequest messages."""

from __future__ import annotations

import gzip
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import KeyValue


def attributes(pairs: Any) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for pair in pairs:
        assert isinstance(pair, KeyValue)
        kind = pair.value.WhichOneof("value")
        found[pair.key] = getattr(pair.value, kind) if kind else None
    return found


@dataclass(frozen=True)
class Point:
    metric: str
    attributes: dict[str, Any]
    value: float  # a sum's or gauge's value; a histogram's sum
    count: int | None = None  # a histogram's count


class OtlpReceiver:
    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.requests: list[ExportMetricsServiceRequest] = []
        self.headers: list[dict[str, str]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/metrics":
                    self.send_response(404)
                    self.end_headers()
                    return
                request = ExportMetricsServiceRequest.FromString(body)
                with receiver._lock:
                    receiver.bodies.append(body)
                    receiver.requests.append(request)
                    receiver.headers.append({k.lower(): v for k, v in self.headers.items()})
                reply = ExportMetricsServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> OtlpReceiver:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def latest(self, metric: str) -> list[Point]:
        """The points of ``metric`` in the newest export that has it (exports are cumulative)."""
        with self._lock:
            requests = list(self.requests)
        for request in reversed(requests):
            found = [point for point in points(request) if point.metric == metric]
            if found:
                return found
        return []

    def resources(self) -> list[dict[str, Any]]:
        with self._lock:
            return [attributes(rm.resource.attributes) for r in self.requests for rm in r.resource_metrics]


def points(request: ExportMetricsServiceRequest) -> list[Point]:
    found = []
    for resource_metrics in request.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                kind = metric.WhichOneof("data")
                if kind == "histogram":
                    for p in metric.histogram.data_points:
                        found.append(Point(metric.name, attributes(p.attributes), p.sum, p.count))
                elif kind in ("sum", "gauge"):
                    for p in getattr(metric, kind).data_points:
                        number = p.as_int if p.WhichOneof("value") == "as_int" else p.as_double
                        found.append(Point(metric.name, attributes(p.attributes), number))
    return found
