"""Small statistics helpers shared by the benchmark sections."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ccmitm.core import stats


def percentile(values: Iterable[float], fraction: float) -> float:
    """ccmitm's one percentile (nearest rank) with the fraction the sections use; NaN for no values."""
    value = stats.percentile(values, fraction * 100)
    return float("nan") if value is None else value


def summary(values_ms: Sequence[float]) -> dict[str, float | int]:
    return {
        "n": len(values_ms),
        "p50_ms": round(percentile(values_ms, 0.5), 3),
        "p95_ms": round(percentile(values_ms, 0.95), 3),
        "max_ms": round(max(values_ms), 3) if values_ms else float("nan"),
    }


def ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else float("nan")


def rotated[T](items: Sequence[T], round_no: int) -> list[T]:
    """The variants in a different order each round, so no variant always runs first (or last)."""
    shift = round_no % len(items)
    return list(items[shift:]) + list(items[:shift])
