"""The one percentile: nearest rank, so every figure names a sample that was really observed.

``ccctl status``, ``top``, ``summarize``, ``verify``, REPORT.html, endurance and the benchmarks all
use this definition, so the same calls give the same p50 everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence


def percentile(values: Iterable[float], q: float) -> float | None:
    """The ``q``-th percentile (0 < q <= 100) by nearest rank; None for no values."""
    return percentile_of_sorted(sorted(values), q)


def percentile_of_sorted(ordered: Sequence[float], q: float) -> float | None:
    """:func:`percentile` of values already in ascending order (no copy, no sort: for reports
    that keep one sorted array per group)."""
    if not ordered:
        return None
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def p50_p95(values: Iterable[float]) -> dict[str, float | None]:
    """The two percentiles every latency figure shows, from one sort."""
    ordered = sorted(values)
    return {"p50": percentile(ordered, 50), "p95": percentile(ordered, 95)}
