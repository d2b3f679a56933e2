"""Small statistics helpers shared by the benchmark sections."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (no interpolation: a reported value is one that was measured)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))]


def summary(values_ms: Sequence[float]) -> dict[str, float | int]:
    return {
        "n": len(values_ms),
        "p50_ms": round(statistics.median(values_ms), 3) if values_ms else float("nan"),
        "p95_ms": round(percentile(values_ms, 0.95), 3),
        "max_ms": round(max(values_ms), 3) if values_ms else float("nan"),
    }


def ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else float("nan")


def rotated[T](items: Sequence[T], round_no: int) -> list[T]:
    """The variants in a different order each round, so no variant always runs first (or last)."""
    shift = round_no % len(items)
    return list(items[shift:]) + list(items[:shift])
