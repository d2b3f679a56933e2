"""The metrics and telemetry config keys: off by default, loopback unless allowed, errors by key path."""

from __future__ import annotations

from typing import Any

import pytest

from ccmitm.config.errors import ConfigError
from ccmitm.config.load import validate


def test_both_are_off_by_default() -> None:
    config = validate({})
    assert config.metrics.listen is None and config.metrics.address is None
    assert not config.telemetry.otlp and not config.telemetry.include_session


@pytest.mark.parametrize(
    ("metrics", "address"),
    [
        ({"listen": "127.0.0.1:9464"}, ("127.0.0.1", 9464)),
        ({"listen": "localhost:9464"}, ("localhost", 9464)),
        ({"listen": "[::1]:9464"}, ("::1", 9464)),
        ({"listen": ""}, None),
        ({"listen": None}, None),
        ({"listen": "0.0.0.0:9464", "allow_remote": True}, ("0.0.0.0", 9464)),
        ({"listen": "192.0.2.10:9100", "allow_remote": True}, ("192.0.2.10", 9100)),
    ],
)
def test_listen_addresses(metrics: dict[str, Any], address: tuple[str, int] | None) -> None:
    assert validate({"metrics": metrics}).metrics.address == address


@pytest.mark.parametrize(
    ("metrics", "words"),
    [
        ({"listen": "0.0.0.0:9464"}, "not a loopback address; set metrics.allow_remote: true"),
        ({"listen": "[::]:9464"}, "not a loopback address"),
        ({"listen": "127.0.0.1"}, "use host:port"),
        ({"listen": "127.0.0.1:0"}, "use host:port"),
        ({"listen": "127.0.0.1:70000"}, "use host:port"),
        (
            {"listen": "metrics.example.com:9464", "allow_remote": True},
            "must be an IP address or 'localhost'",
        ),
        ({"listen": 9464}, "string"),
    ],
)
def test_bad_listen_values_name_the_key(metrics: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        validate({"metrics": metrics})
    assert "metrics.listen: " in caught.value.one_line() and words in caught.value.one_line()


def test_unknown_keys_are_errors() -> None:
    with pytest.raises(ConfigError, match=r"telemetry\.exporter: unknown key"):
        validate({"telemetry": {"exporter": "otlp"}})
