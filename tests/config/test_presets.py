"""Lane presets (zai, zai-cn) and the lane's provider: one table, user keys win, rules get the model."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from ccmitm.cli.main import main
from ccmitm.config.errors import ConfigError
from ccmitm.config.load import read_file, validate
from ccmitm.config.presets import PRESETS, detect_provider
from tests.helpers import REPO_ROOT


@pytest.mark.parametrize(
    ("preset", "url"),
    [("zai", "https://api.z.ai/api/anthropic"), ("zai-cn", "https://open.bigmodel.cn/api/anthropic")],
)
def test_a_preset_fills_url_header_mode_provider_and_the_rule_model(preset: str, url: str) -> None:
    config = validate(
        {
            "lanes": {"glm": {"preset": preset}},
            "routing": {"rules": [{"match": "*haiku*", "lane": "glm"}]},
        }
    )
    lane = config.lanes["glm"]
    assert lane.url == url
    assert lane.api_key_env == "ZAI_API_KEY" and lane.keyed
    assert lane.effective_header_mode == "x-api-key"
    assert lane.provider == "zai" and lane.effective_provider == "zai"
    assert config.routing.rules[0].model == "glm-4.5-air"


def test_a_preset_replaces_the_builtin_lane_but_never_what_the_user_set() -> None:
    config = validate(
        {
            "lanes": {
                "zai": {"preset": "zai-cn", "header_mode": "authorization"},
                "cn": {"preset": "zai-cn", "api_key_file": "/k/zai.key", "url": "https://cn.example/a"},
            },
            "routing": {"rules": [{"match": "*haiku*", "lane": "zai", "model": "glm-4.6"}]},
        }
    )
    lane = config.lanes["zai"]
    assert lane.url == "https://open.bigmodel.cn/api/anthropic"  # the preset beat the built-in URL
    assert lane.header_mode == "authorization"  # the user's key won
    assert config.routing.rules[0].model == "glm-4.6"
    other = config.lanes["cn"]
    assert other.url == "https://cn.example/a"
    assert other.api_key_file == "/k/zai.key" and other.api_key_env is None  # no second key source
    assert other.provider == "zai"


def test_an_explicit_null_model_keeps_the_clients_model() -> None:
    config = validate(
        {
            "lanes": {"zai": {"preset": "zai"}},
            "routing": {"rules": [{"match": "*haiku*", "lane": "zai", "model": None}]},
        }
    )
    assert config.routing.rules[0].model is None


def test_rules_to_a_lane_without_a_preset_are_left_alone() -> None:
    config = validate({"routing": {"rules": [{"match": "*haiku*", "lane": "zai"}]}})
    assert config.routing.rules[0].model is None


def test_an_unknown_preset_or_provider_is_reported_with_its_path() -> None:
    with pytest.raises(ConfigError) as info:
        validate({"lanes": {"zai": {"preset": "zia", "provider": "openai"}}})
    paths = {problem.path for problem in info.value.problems}
    assert {"lanes.zai.preset", "lanes.zai.provider"} <= paths


@pytest.mark.parametrize(
    ("host", "provider"),
    [
        ("api.z.ai", "zai"),
        ("open.bigmodel.cn", "zai"),
        ("API.Z.AI.", "zai"),
        ("api.anthropic.com", "anthropic"),
        ("notz.ai", None),
        ("127.0.0.1", None),
        (None, None),
    ],
)
def test_the_provider_is_detected_from_the_url(host: str | None, provider: str | None) -> None:
    assert detect_provider(host) == provider


def test_provider_detection_applies_when_unset_and_a_set_provider_wins() -> None:
    config = validate(
        {
            "lanes": {
                "cn": {"url": "https://open.bigmodel.cn/api/anthropic", "api_key_env": "K"},
                "local": {"url": "http://127.0.0.1:9/x", "api_key_env": "K", "provider": "zai"},
                "other": {"url": "https://example.com", "api_key_env": "K"},
            }
        }
    )
    assert config.lanes["cn"].effective_provider == "zai"
    assert config.lanes["local"].effective_provider == "zai"
    assert config.lanes["other"].effective_provider is None
    assert config.lanes["anthropic"].effective_provider == "anthropic"


def test_config_md_documents_the_presets_and_provider() -> None:
    text = (REPO_ROOT / "docs" / "CONFIG.md").read_text(encoding="utf-8")
    for key in ("preset", "provider", "quota_poll_s"):
        assert f"lanes.<name>.{key}" in text or f"`{key}`" in text, key
    for preset in PRESETS:
        assert f"`{preset}`" in text
    for entry in PRESETS.values():
        assert entry["url"] in text


@pytest.mark.parametrize(
    ("preset", "url"),
    [("zai", "https://api.z.ai/api/anthropic"), ("zai-cn", "https://open.bigmodel.cn/api/anthropic")],
)
def test_config_init_with_a_preset_writes_a_valid_example_using_it(
    tmp_path: Path, preset: str, url: str
) -> None:
    path = tmp_path / "config.yaml"
    result = CliRunner().invoke(main, ["--config", str(path), "config", "init", "--preset", preset])
    assert result.exit_code == 0, result.output
    text = path.read_text(encoding="utf-8")
    assert f"    preset: {preset}\n" in text
    assert "api.z.ai/api/anthropic\n" not in text.split("  zai:\n", 1)[1].split("\n#", 1)[0]
    config = read_file(path)
    lane = config.lanes["zai"]
    assert (lane.preset, lane.url, lane.api_key_env) == (preset, url, "ZAI_API_KEY")
    assert lane.effective_header_mode == "x-api-key" and lane.effective_provider == "zai"
    # Everything else is the example as without the preset.
    assert config.model_dump(exclude={"lanes"}) == validate({}).model_dump(exclude={"lanes"})


def test_config_init_refuses_an_unknown_preset(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    result = CliRunner().invoke(main, ["--config", str(path), "config", "init", "--preset", "zia"])
    assert result.exit_code != 0 and not path.exists()
