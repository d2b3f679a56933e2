"""Which config a daemon starts with: the file, the built-in defaults (first start), or the last
good config when the file is broken or gone."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ccmitm.config.errors import ConfigError
from ccmitm.config.load import BUILTIN_SOURCE, validate
from ccmitm.paths import LAST_GOOD_CONFIG
from ccmitm.supervisor.daemon import load_for_start


def save_last_good(state: Path, port: int) -> Path:
    state.mkdir(parents=True, exist_ok=True)
    path = state / LAST_GOOD_CONFIG
    path.write_text(yaml.safe_dump(validate({"proxy": {"port": port}}).redacted()))
    return path


def test_a_first_start_without_a_file_is_the_builtin_defaults(tmp_path: Path) -> None:
    start = load_for_start(tmp_path / "config.yaml", tmp_path / "state")
    assert start.loaded.source == BUILTIN_SOURCE and start.error is None


def test_a_missing_file_with_a_last_good_config_serves_that_and_says_so(tmp_path: Path) -> None:
    last_good = save_last_good(tmp_path / "state", 9911)
    start = load_for_start(tmp_path / "config.yaml", tmp_path / "state")
    assert start.loaded.source == str(last_good) and start.loaded.config.proxy.port == 9911
    assert start.error == f"{tmp_path / 'config.yaml'}: config file missing: serving the last good config"


def test_a_broken_file_serves_the_last_good_config(tmp_path: Path) -> None:
    save_last_good(tmp_path / "state", 9912)
    config = tmp_path / "config.yaml"
    config.write_text("[" * 5000 + "]" * 5000)
    start = load_for_start(config, tmp_path / "state")
    assert start.loaded.config.proxy.port == 9912
    assert start.error is not None and "nested too deeply" in start.error


def test_a_broken_file_without_a_last_good_config_is_the_files_error(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("proxy: {port: nope}\n")
    with pytest.raises(ConfigError, match=r"proxy\.port"):
        load_for_start(config, tmp_path / "state")
