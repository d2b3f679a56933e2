"""docs/for-teams.md's recording rules are valid Prometheus rules and compute what they say, checked
with Prometheus's own `promtool test rules` on made-up series."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO_ROOT

PAGE = REPO_ROOT / "docs" / "for-teams.md"

UNIT_TEST = """
rule_files: [rules.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      # 60 Haiku calls an hour offloaded, 15 that failed over to Anthropic, 100 Sonnet calls.
      - series: 'ccmitm_requests_total{lane="zai", reason="rule", status_class="2xx", listener="reverse"}'
        values: '0+1x120'
      - series: 'ccmitm_requests_total{lane="zai", reason="rule", status_class="4xx", listener="reverse"}'
        values: '0+0.25x120'
      - series: 'ccmitm_requests_total{lane="anthropic", reason="failover", status_class="2xx", listener="reverse"}'
        values: '0+0.25x120'
      - series: 'ccmitm_requests_total{lane="anthropic", reason="default", status_class="2xx", listener="reverse"}'
        values: '0+100x120'
      # The offload lane's tokens: 600k input and 60k output an hour, no cache.
      - series: 'ccmitm_tokens_total{lane="zai", type="input"}'
        values: '0+10000x120'
      - series: 'ccmitm_tokens_total{lane="zai", type="output"}'
        values: '0+1000x120'
      - series: 'ccmitm_tokens_total{lane="anthropic", type="input"}'
        values: '0+99999x120'
    promql_expr_test:
      - expr: ccmitm:haiku_offloaded:ratio1h
        eval_time: 90m
        exp_samples: [{labels: 'ccmitm:haiku_offloaded:ratio1h', value: 0.8}]
      - expr: ccmitm:anthropic_spend_avoided_usd:increase1h
        eval_time: 90m
        exp_samples: [{labels: 'ccmitm:anthropic_spend_avoided_usd:increase1h', value: 0.9}]
"""


def rules_block() -> str:
    section = PAGE.read_text().split("## Recording rules", 1)[1]
    return section.split("```yaml\n", 1)[1].split("```", 1)[0]


def test_the_recording_rules_compute_the_offload_share_and_the_spend_avoided(tmp_path: Path) -> None:
    promtool = shutil.which("promtool") or "/usr/bin/promtool"
    if not Path(promtool).exists():
        pytest.skip("promtool is not installed (Debian's prometheus package has it; .ci/run installs it)")
    rules = rules_block()
    assert {rule["record"] for group in yaml.safe_load(rules)["groups"] for rule in group["rules"]} >= {
        "ccmitm:haiku_offloaded:ratio1h",
        "ccmitm:anthropic_spend_avoided_usd:increase1h",
    }
    (tmp_path / "rules.yml").write_text(rules)
    (tmp_path / "test.yml").write_text(UNIT_TEST)
    checked = subprocess.run(
        [promtool, "check", "rules", "rules.yml"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run(
        [promtool, "test", "rules", "test.yml"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
