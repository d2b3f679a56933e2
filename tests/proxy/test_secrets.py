"""The secrets a call's text is scrubbed of: the daemon's own (``Runtime.secret_values()``, the
same object until a key changes) plus the credentials the request carried."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from ccmitm.config.keys import resolve_lane_key
from ccmitm.config.load import LoadedConfig, validate
from ccmitm.proxy.flow import request_secrets
from ccmitm.proxy.state import Runtime, Snapshot

KEY = "0123456789abcdef0123456789abcdef.SecretsTestKey12"
OTHER = "0123456789abcdef0123456789abcdef.AnotherKey123456"


def snapshot(environ: dict[str, str], key_file: Path | None = None) -> Snapshot:
    lanes: dict[str, dict[str, str | None]] = {"zai": {"api_key_env": "ZAI_API_KEY"}}
    if key_file is not None:
        lanes["spare"] = {"url": "https://spare.example", "api_key_env": None, "api_key_file": str(key_file)}
    config = validate({"lanes": lanes})
    return Snapshot.build(LoadedConfig(config, "test", datetime.now(UTC)), environ=environ)


def test_secret_values_follow_the_keys_and_are_not_rebuilt_per_call(tmp_path: Path) -> None:
    key_file = tmp_path / "spare.key"
    key_file.write_text(OTHER + "\n")
    key_file.chmod(0o644)  # refused for now: no key for the spare lane
    runtime = Runtime(snapshot({"ZAI_API_KEY": KEY}, key_file))
    first = runtime.secret_values()
    assert first == frozenset({KEY}) and runtime.secret_values() is first

    key_file.chmod(0o600)
    built_from = runtime.active
    found = {"spare": resolve_lane_key(built_from.config.lanes["spare"], {})}
    assert runtime.adopt_keys(built_from, {k: v for k, v in found.items() if v}) == ["spare"]
    assert runtime.secret_values() == frozenset({KEY, OTHER})

    runtime.swap(snapshot({}))  # a reload without the key
    assert runtime.secret_values() == frozenset()


def test_request_secrets_are_the_client_credentials_plus_the_known_ones() -> None:
    known = frozenset({KEY})
    assert request_secrets(((b"content-type", b"application/json"),), known) is known
    found = request_secrets(
        ((b"X-Api-Key", b"client-key-value"), (b"Authorization", b"Bearer tok-123456789")), known
    )
    assert {KEY, "client-key-value", "tok-123456789", "Bearer tok-123456789"} <= found
    raw = request_secrets(((b"authorization", b"rawKeyWithoutScheme99"),), frozenset())
    assert raw == frozenset({"rawKeyWithoutScheme99"})
