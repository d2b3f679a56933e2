"""Loading hostile config files: pasted secrets, oversized, deep, alias bombs, FIFOs, odd bytes.

Each must end as a ConfigError that names the file (and the key path where there is one) and
never repeats a value that could be a secret, in a bounded time and without a traceback.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ccmitm.config.errors import ConfigError, ConfigMissing
from ccmitm.config.load import BUILTIN_SOURCE, MAX_CONFIG_BYTES, check_file, load, validate
from tests.helpers import ALL_SECRETS, CLIENT_API_KEY, CLIENT_OAUTH_TOKEN, ZAI_KEY


def error_of(path: Path) -> ConfigError:
    error = check_file(path)
    assert error is not None
    assert error.source == str(path)
    return error


def report_of(raw: object) -> str:
    with pytest.raises(ConfigError) as info:
        validate(raw)
    report = info.value.report()
    for secret in ALL_SECRETS:
        assert secret not in report
    return report


def lane(**fields: object) -> dict[str, object]:
    return {
        "lanes": {"zai": {"url": "https://api.z.ai/api/anthropic", "api_key_env": "ZAI_API_KEY", **fields}}
    }


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (lane(api_key_env=ZAI_KEY), "lanes.zai.api_key_env: the value is not an environment variable name"),
        (lane(api_key_env=CLIENT_API_KEY), "lanes.zai.api_key_env: the value is not an environment"),
        (
            lane(url=f"https://api.z.ai/api/anthropic?key={ZAI_KEY}"),
            "lanes.zai.url: 'https://api.z.ai/api/anthropic': a lane URL takes no query or fragment",
        ),
        (lane(url=f"https://api.z.ai/api#{CLIENT_OAUTH_TOKEN}"), "lanes.zai.url: 'https://api.z.ai/api'"),
        (lane(url=f"https://me:{ZAI_KEY}@api.z.ai/"), "lanes.zai.url: credentials do not belong"),
        (lane(url=f"ftp://api.z.ai/{ZAI_KEY}"), "lanes.zai.url: 'ftp://api.z.ai/...': the scheme must be"),
        (lane(url=f"https://api.z.ai:99999/{ZAI_KEY}"), "lanes.zai.url: the value:"),
        (lane(header_mode=ZAI_KEY), "lanes.zai.header_mode: Input should be"),
        (lane(**{CLIENT_API_KEY: "x"}), "lanes.zai.<a 111-character key>: unknown key"),
        ({"proxy": {"upstream_proxy": f"http://proxy:3128/?t={ZAI_KEY}"}}, "'http://proxy:3128/'"),
        ({"proxy": {"host": ZAI_KEY}}, "proxy.host: the value is not an IP address"),
        ({"routing": {"default_lane": ZAI_KEY}}, "routing.default_lane: unknown lane <a 49-character name>"),
        ({"bundle": {"timezone": ZAI_KEY}}, "bundle.timezone: unknown time zone the value"),
    ],
)
def test_no_problem_repeats_a_value_that_could_be_a_secret(raw: object, expected: str) -> None:
    assert expected in report_of(raw)


def test_plain_values_and_lane_names_are_still_named() -> None:
    report = report_of(
        {"routing": {"rules": [{"match": "*haiku*", "lane": "zia"}]}, "pricing": {"*opus*": 1}}
    )
    assert "routing.rules[0].lane: unknown lane 'zia'" in report
    assert "pricing.*opus*" in report


def test_an_oversized_file_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"# " + b"x" * MAX_CONFIG_BYTES + b"\n")
    assert str(error_of(path)) == f"{path}: larger than 1 MiB, the limit for a config"


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    os.mkfifo(path, 0o600)
    assert str(error_of(path)) == f"{path}: cannot read: not a regular file"


def test_a_directory_is_not_a_config(tmp_path: Path) -> None:
    assert "not a regular file" in str(error_of(tmp_path))


def test_deep_nesting_is_an_error_not_a_recursion_crash(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("pricing:\n  x: " + "[" * 20_000 + "]" * 20_000 + "\n")
    assert str(error_of(path)) == f"{path}: nested too deeply to be a config"
    path.write_text("pricing: " + "{a: " * 3000 + "1" + "}" * 3000 + "\n")
    assert "nested too deeply" in str(error_of(path))


def test_an_alias_bomb_is_refused_without_expanding_it(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    path = tmp_path / "config.yaml"
    path.write_text("unknown:\n" + "".join(f"  {line}\n" for line in lines))
    assert "more than 100000 values once YAML aliases are expanded" in str(error_of(path))


def test_an_alias_that_contains_itself_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("pricing: &loop\n  x: *loop\n")
    assert "an alias refers to itself" in str(error_of(path))


def test_bytes_that_are_not_utf8_are_an_error_with_where(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"proxy:\n  port: 8082\n\xff\xfe\n")
    assert str(error_of(path)) == f"{path}: cannot read: not UTF-8 text (byte 20)"


def test_a_yaml_error_says_where_without_quoting_the_file(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(f"lanes:\n  zai:\n    api_key_env: {ZAI_KEY}\n   bad: [\n")
    message = str(error_of(path))
    assert message.startswith(f"{path}: invalid YAML: line ")
    assert ZAI_KEY not in message
    path.write_text(f"lanes: *{ZAI_KEY[:20]}\n")
    assert ZAI_KEY[:20] not in str(error_of(path))


def test_missing_is_the_defaults_unless_the_caller_keeps_what_it_serves(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    assert load(path).source == BUILTIN_SOURCE
    with pytest.raises(ConfigMissing):
        load(path, missing_ok=False)
    path.symlink_to(tmp_path / "nowhere.yaml")  # a dangling link is a broken config, not no config
    with pytest.raises(ConfigError, match="a symlink to a missing file") as info:
        load(path)
    assert not isinstance(info.value, ConfigMissing)


def test_the_validated_config_before_env_overrides_is_kept(tmp_path: Path) -> None:
    loaded = load(tmp_path / "none.yaml", environ={"OFFLOAD_PAUSED": "1"})
    assert loaded.config.routing.paused is True
    assert loaded.validated is not None and loaded.validated.routing.paused is False
