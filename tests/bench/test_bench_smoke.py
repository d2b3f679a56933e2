"""`make bench` in smoke mode: a few samples of every section, to keep the generator working.

Nothing here judges speed (timing is not a pass/fail matter); it checks that the suite runs end to
end against the real daemon and bare mitmproxy, that every variant was measured, that stamped
events made it through both proxies, and that the Markdown keeps its hand-kept section.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).with_name("bench_proxy.py")
HAND_KEPT = (
    "<!-- HAND-KEPT: everything until the end marker survives `make bench` unchanged -->\n"
    "## Notes kept by hand\n\nbefore 2.0 ms, after 1.0 ms\n<!-- END HAND-KEPT -->"
)


@pytest.mark.e2e
@pytest.mark.timeout(180)
def test_bench_smoke_writes_a_well_formed_table(tmp_path: Path) -> None:
    (tmp_path / "PERFORMANCE.md").write_text(f"# old table\n\n{HAND_KEPT}\n")
    env = {**os.environ, "BENCH_SMOKE": "1", "BENCH_OUT": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, str(BENCH)], env=env, capture_output=True, text=True, timeout=170
    )
    assert result.returncode == 0, result.stdout + result.stderr

    data = json.loads((tmp_path / "performance.json").read_text())
    assert data["machine"]["smoke"] is True and data["machine"]["nproc"]
    latency = data["latency"]["variants"]
    assert {"direct", "bare reverse", "ccmitmd reverse, Haiku", "ccmitmd intercept, Sonnet"} <= set(latency)
    assert all(v["n"] > 0 for v in latency.values())
    assert latency["ccmitmd reverse, Haiku"]["proxy_cpu_us"] > 0
    assert {r["listener"] for r in data["latency"]["ratios"]} == {"reverse", "intercept"}
    for name, variant in data["streaming"]["variants"].items():
        # Every stamped event arrived and was read, through every proxy.
        assert variant["missing_events"] == 0 and variant["events"] > 0, name
    assert all(v["errors"] == 0 and v["requests"] > 0 for v in data["throughput"]["variants"].values())
    assert (
        data["memory"]["open_streams"]["ccmitmd"]["completed"]
        == data["memory"]["open_streams"]["ccmitmd"]["streams"]
    )
    assert data["own_work"]["usage_writer"]["lines_per_s"] > 0
    assert data["own_work"]["reload"]["reloads"] >= 1
    assert data["restart"]["first_call_ms"] > 0
    assert data["restart"]["start_to_ready"]["p50_ms"] > 0
    # The Node peer ran in the same rounds, or the run says why not (no npm here).
    peer = data["peer"]
    assert peer["skipped"] or (peer["name"] in latency and peer["reverse_vs_peer_p50"] > 0)
    cli = data["cli"]
    assert {"statusline", "status", "pause", "resume", "env", "top --once"} <= set(cli["commands"])
    assert cli["bare_ms"] > 0 and all(c["median_ms"] > 0 for c in cli["commands"].values())

    doc = (tmp_path / "PERFORMANCE.md").read_text()
    assert "# old table" not in doc
    assert doc.rstrip().endswith(HAND_KEPT)
    for heading in ("## Targets", "## 1. Per-request overhead", "## 2. Streaming", "## 3. Throughput",
                    "## 4. Memory", "## 5. The cost of the daemon's own work", "## 6. ccctl start-up"):  # fmt: skip
        assert heading in doc
    assert "| nan" not in doc and "nan |" not in doc  # every cell was measured
