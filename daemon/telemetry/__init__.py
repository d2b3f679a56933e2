"""Telemetry: ccmitm's measurements for a team's Prometheus and OpenTelemetry collector."""
