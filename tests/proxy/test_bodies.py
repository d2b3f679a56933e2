"""The Router's JSON bodies (read by Python's json, written by orjson unless it would refuse or
change them): a rerouted body changes in its model only, whatever valid-for-Python JSON it carries."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.proxy.test_addon import Fixture, fx, messages_flow, send

__all__ = ["fx"]  # the Router fixture of test_addon.py, used here too


def _rerouted(fx: Fixture, raw: bytes) -> bytes:
    flow = messages_flow()
    flow.request.content = raw
    flow.request.headers["content-length"] = str(len(raw))
    send(fx.router, flow)
    assert flow.request.host == "zai.test"
    return flow.request.content or b""


@pytest.mark.parametrize(
    ("value"),
    [b"NaN", b"1180591620717411303424"],  # orjson reads neither; it would write NaN back as null
)
def test_a_body_orjson_refuses_is_rewritten_by_json_and_keeps_its_values(fx: Fixture, value: bytes) -> None:
    raw = b'{"model": "claude-haiku-4-5", "max_tokens": 8, "x": ' + value + b"}"
    assert _rerouted(fx, raw) == b'{"model":"glm-4.5-air","max_tokens":8,"x":' + value + b"}"


def test_a_plain_body_is_written_as_json_writes_it(fx: Fixture) -> None:
    body: dict[str, Any] = {
        "model": "claude-haiku-4-5",
        "max_tokens": 8,
        "system": 'héllo ✓ \u2028 "quoted" \\ \x01',
        "messages": [{"role": "user", "content": [{"type": "text", "text": "ok"}]}],
        "temperature": 0.5,
    }
    sent = _rerouted(fx, json.dumps(body).encode())
    expected = {**body, "model": "glm-4.5-air"}
    assert sent == json.dumps(expected, ensure_ascii=False, separators=(",", ":")).encode()
