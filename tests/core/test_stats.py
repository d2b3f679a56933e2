"""The one percentile: nearest rank, and every figure that shows a p50/p95 uses it."""

from __future__ import annotations

import pytest

from ccmitm.core.stats import p50_p95, percentile
from ccmitm.proxy.state import LatencyWindow
from ccmitm.reports.summary import summarize
from tests.reports.lines import line


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([], 50, None),
        ([7.0], 95, 7.0),
        ([1.0, 2.0, 3.0, 4.0], 50, 2.0),  # rank ceil(0.5 * 4) = 2: an observed value, no interpolation
        ([4.0, 1.0, 3.0, 2.0], 50, 2.0),  # order does not matter
        ([float(n) for n in range(1, 21)], 95, 19.0),
        ([float(n) for n in range(1, 21)], 100, 20.0),
    ],
)
def test_nearest_rank(values: list[float], q: float, expected: float | None) -> None:
    assert percentile(values, q) == expected


def test_status_and_summarize_name_the_same_sample_for_the_same_calls() -> None:
    durations = [100.0, 200.0, 300.0, 400.0]  # the old status window said 300 for p50 here
    window = LatencyWindow()
    for value in durations:
        window.add(value)
    summary = summarize([line(duration_ms=value) for value in durations], default_lane="anthropic")
    figures = summary["lanes"]["zai"]["duration_ms"]
    assert window.p50_p95() == (figures["p50"], figures["p95"]) == (200.0, 400.0)
    assert p50_p95(durations) == figures
