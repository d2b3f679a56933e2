"""Config: defaults, whole-file validation with paths, env overrides, lane keys, `ccctl config check`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ccmitm.config.errors import ConfigError
from ccmitm.config.keys import resolve_lane_key
from ccmitm.config.load import apply_env_overrides, check_file, load, validate
from ccmitm.config.model import builtin_defaults
from tests.helpers import REPO_ROOT

REPO = REPO_ROOT


def problems_of(raw: object) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        validate(raw)
    return {problem.path: problem.message for problem in info.value.problems}


def test_builtin_defaults_are_the_documented_ones() -> None:
    config = validate({})
    assert config.proxy.host == "127.0.0.1"
    assert (config.proxy.port, config.proxy.reverse_port) == (8082, 8083)
    assert config.routing.default_lane == "anthropic"
    assert [(r.match, r.lane, r.model) for r in config.routing.rules] == [("*haiku*", "zai", "glm-4.5-air")]
    assert config.lanes["zai"].url == "https://api.z.ai/api/anthropic"
    assert config.lanes["zai"].effective_header_mode == "x-api-key"
    assert config.lanes["anthropic"].effective_header_mode == "passthrough"
    assert config.bundle.prefix == "agentos_tmp_review"


def test_shipped_example_config_equals_builtin_defaults() -> None:
    """etc/config.yaml documents every key; it must stay in step with the code's defaults."""
    example = yaml.safe_load((REPO / "etc" / "config.yaml").read_text())
    assert validate(example) == validate({})
    builtin = builtin_defaults()
    assert set(example) == set(builtin)
    for section, values in builtin.items():
        if isinstance(values, dict):
            assert set(example[section] or {}) == set(values), section


def test_every_error_is_reported_at_once_with_its_path() -> None:
    problems = problems_of(
        {
            "proxy": {"port": 70000, "host": "0.0.0.0", "intercept_hosts": ["bad host!"]},
            "routing": {"rules": [{"match": "*haiku*", "lane": "zia"}], "default_lane": "nope"},
            "lanes": {
                "zai": {"url": "ftp://x", "header_mode": "bearer"},
                "plain": {"url": "https://x", "header_mode": "x-api-key"},
            },
            "logs": {"keep": 0},
            "bundle": {"schedule": "every night", "prefix": "../evil"},
            "typo_section": {},
        }
    )
    assert problems["routing.rules[0].lane"] == "unknown lane 'zia'"
    assert problems["routing.default_lane"] == "unknown lane 'nope'"
    assert "less than or equal to 65535" in problems["proxy.port"]
    assert "not a loopback address" in problems["proxy.host"]
    assert "not a host name" in problems["proxy.intercept_hosts"]
    assert "scheme must be http or https" in problems["lanes.zai.url"]
    assert "lanes.zai.header_mode" in problems
    assert "only a keyed lane" in problems["lanes.plain.header_mode"]
    assert "logs.keep" in problems
    assert "crontab" in problems["bundle.schedule"]
    assert "bundle.prefix" in problems
    assert problems["typo_section"] == "unknown key"


def test_relations_are_checked() -> None:
    problems = problems_of(
        {"proxy": {"port": 9000, "reverse_port": 9000}, "routing": {"default_lane": "zai"}}
    )
    assert "same as proxy.port" in problems["proxy.reverse_port"]
    assert "must pass the client's own credentials" in problems["routing.default_lane"]


def test_lane_urls_may_be_plain_http_with_a_prefix() -> None:
    config = validate({"lanes": {"zai": {"url": "http://127.0.0.1:9/api/anthropic/"}}})
    assert config.lanes["zai"].url == "http://127.0.0.1:9/api/anthropic"
    assert "credentials" in problems_of({"lanes": {"zai": {"url": "https://u:p@h"}}})["lanes.zai.url"]


def test_partial_sections_merge_over_defaults() -> None:
    config = validate({"lanes": {"zai": {"header_mode": "authorization"}}, "proxy": {"http2": False}})
    assert config.lanes["zai"].api_key_env == "ZAI_API_KEY"
    assert config.lanes["zai"].effective_header_mode == "authorization"
    assert config.proxy.port == 8082 and config.proxy.http2 is False


def test_reverse_listener_can_be_turned_off() -> None:
    assert validate({"proxy": {"reverse_port": None}}).proxy.reverse_port is None


def test_tilde_expands_against_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert validate({}).logs.dir == str(tmp_path / ".local/state/ccmitm/logs")


def test_environment_toggles() -> None:
    config = validate({})
    same, applied = apply_env_overrides(config, {})
    assert same == config and applied == ()
    changed, applied = apply_env_overrides(config, {"FORCE_HAIKU_TO_ZAI": "0", "OFFLOAD_PAUSED": "1"})
    assert [rule.enabled for rule in changed.routing.rules] == [False] and changed.routing.paused is True
    assert len(applied) == 2


def test_missing_file_means_builtin_defaults(tmp_path: Path) -> None:
    loaded = load(tmp_path / "nope.yaml", environ={})
    assert loaded.source == "built-in defaults"
    assert loaded.config == validate({})


def test_broken_yaml_is_reported_with_a_line(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("proxy:\n  port: [8082\n")
    error = check_file(path)
    assert error is not None
    assert len(error.problems) == 1 and "invalid YAML: line" in error.problems[0].message
    assert check_file(tmp_path / "missing.yaml") is not None


def test_lane_keys_come_from_env_then_a_private_file(tmp_path: Path) -> None:
    lane = validate({}).lanes["zai"]
    assert resolve_lane_key(lane, {"ZAI_API_KEY": " k1 "}).value == "k1"
    missing = resolve_lane_key(lane, {})
    assert missing.value is None and "ZAI_API_KEY is not set" in missing.problem
    assert resolve_lane_key(validate({}).lanes["anthropic"], {}) is None

    key_file = tmp_path / "zai.key"
    key_file.write_text("k2\n")
    key_file.chmod(0o644)
    filed = validate({"lanes": {"zai": {"api_key_file": str(key_file)}}}).lanes["zai"]
    refused = resolve_lane_key(filed, {})
    assert refused.value is None and "chmod 600" in refused.problem
    key_file.chmod(0o600)
    assert resolve_lane_key(filed, {}).value == "k2"


def run_ccctl(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCMITM_")}
    return subprocess.run(
        [sys.executable, "-m", "ccmitm.cli", *args], capture_output=True, text=True, env=env, timeout=60
    )


def test_ccctl_config_check(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("proxy:\n  http2: false\n")
    result = run_ccctl("config", "check", str(good))
    assert result.returncode == 0, result.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("routing:\n  rules:\n    - match: '*haiku*'\n      lane: zia\nproxy:\n  port: 0\n")
    result = run_ccctl("config", "check", str(bad))
    assert result.returncode == 1
    assert "routing.rules[0].lane: unknown lane 'zia'" in result.stderr
    assert "proxy.port" in result.stderr


def test_ccctl_version() -> None:
    result = run_ccctl("--version")
    assert result.returncode == 0 and "ccctl, version" in result.stdout
