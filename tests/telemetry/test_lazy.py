"""The daemon's start does not pay for exporters that are off: prometheus_client and the
OpenTelemetry SDK are imported only when metrics.listen or OTLP export turns them on."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("prometheus_client", "opentelemetry", "google.protobuf")


def test_the_daemon_imports_no_exporter_library_by_itself() -> None:
    code = (
        "import sys, ccmitm.supervisor.main, ccmitm.supervisor.daemon, ccmitm.telemetry.service\n"
        f"print(sorted(m for m in sys.modules if m.startswith({HEAVY!r})))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"


def test_the_exporter_modules_do_import_them() -> None:
    """The check above can fail: the exporter modules themselves pull the libraries in."""
    code = (
        "import sys, ccmitm.telemetry.prometheus, ccmitm.telemetry.otlp\n"
        "print(sorted({m.split('.')[0] for m in sys.modules if m.startswith(('prometheus_client', 'opentelemetry'))}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "['opentelemetry', 'prometheus_client']"
