"""The reports benchmark in smoke mode: it runs alone, measures every command, and writes its own
section of PERFORMANCE.md without touching the rest (timing is not judged here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).with_name("bench_reports.py")


@pytest.mark.timeout(120)
def test_bench_reports_smoke_writes_its_section_only(tmp_path: Path) -> None:
    doc = tmp_path / "PERFORMANCE.md"
    doc.write_text(
        "# Performance\n\nthe proxy's tables\n\n<!-- HAND-KEPT: kept -->\nnotes\n<!-- END HAND-KEPT -->\n"
    )
    env = {**os.environ, "BENCH_SMOKE": "1", "BENCH_OUT": str(tmp_path)}
    for _ in range(2):  # the second run replaces the section instead of adding another
        result = subprocess.run(
            [sys.executable, str(BENCH)], env=env, capture_output=True, text=True, timeout=110
        )
        assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads((tmp_path / "performance-reports.json").read_text())
    assert data["smoke"] is True and data["lines"] == 2000 and data["files"] > 2
    assert {row["command"] for row in data["rows"]} == {
        "summarize",
        "verify",
        "summarize --since 24h",
        "bundle (24 h window)",
        "bundle (whole log: a catch-up)",
    }
    assert all(row["median_s"] > 0 for row in data["rows"])
    text = doc.read_text()
    assert text.count("## Reports at log scale") == 1
    assert text.startswith("# Performance\n\nthe proxy's tables\n")
    assert text.index("## Reports at log scale") < text.index("<!-- HAND-KEPT")
    assert text.rstrip().endswith("<!-- END HAND-KEPT -->")
