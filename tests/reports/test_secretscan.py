"""The secret scan looks at the decoded view of every line too: a key percent-escaped or split by
a NUL (or its JSON escape) in a usage log is a finding, and a bundle holding one is refused."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import ccmitm.reports.bundle as bundle_module
from ccmitm.config.load import validate
from ccmitm.core.redact import decoded_view
from ccmitm.reports.bundle import make_bundle
from ccmitm.reports.secretscan import scan_bytes, scan_tree
from tests.helpers import CLIENT_API_KEY, CLIENT_OAUTH_TOKEN, ZAI_KEY
from tests.reports.lines import line

NOW = datetime(2025, 6, 1, 2, 30, 0, tzinfo=UTC)
PERCENT = CLIENT_API_KEY.replace("-", "%2D")
NUL_SPLIT = CLIENT_OAUTH_TOKEN[:7] + "\x00" + CLIENT_OAUTH_TOKEN[7:]
ZAI_ESCAPED = ZAI_KEY.replace(".", "%2E")


def hidden_lines() -> list[dict[str, Any]]:
    """Usage lines as a careless writer would have made them: each hides a key from a plain scan."""
    stamp = NOW.replace(hour=1).isoformat(timespec="milliseconds")
    return [
        line(ts=stamp, id="percent", path="/v1/messages/" + PERCENT),
        line(ts=stamp, id="nul", model=NUL_SPLIT),  # json.dumps writes the NUL as \u0000
        line(ts=stamp, id="zai", error="upstream said bad" + ZAI_ESCAPED),
    ]


def usage_bytes() -> bytes:
    return "".join(json.dumps(record) + "\n" for record in hidden_lines()).encode()


def readable(data: bytes) -> str:
    text = data.decode("latin-1")
    return decoded_view(text) or text


def test_the_plain_bytes_hold_no_key_but_the_decoded_view_does() -> None:
    data = usage_bytes()
    for secret in (CLIENT_API_KEY, CLIENT_OAUTH_TOKEN, ZAI_KEY):
        assert secret.encode() not in data  # what a plain scan saw: nothing
        assert secret in readable(data)  # what a reader sees


@pytest.mark.parametrize("name", ["usage.jsonl", "usage.jsonl.1.gz", "bundle.tgz"])
def test_scan_reports_hidden_keys_in_files_gz_and_tarballs(name: str) -> None:
    data = usage_bytes()
    if name.endswith(".gz"):
        data = gzip.compress(data)
    elif name.endswith(".tgz"):
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            info = tarfile.TarInfo("b/usage.jsonl")
            info.size = len(usage_bytes())
            tar.addfile(info, io.BytesIO(usage_bytes()))
        data = buffer.getvalue()
    findings = scan_bytes(data, name, {"zai": ZAI_KEY})
    kinds = {(f.line, f.pattern) for f in findings}
    assert kinds == {(1, "sk-ant-api03"), (2, "sk-ant-oat01"), (3, "lane key value (zai)")}
    assert all(CLIENT_API_KEY not in str(f) for f in findings)


@pytest.fixture
def setup(tmp_path: Path) -> dict[str, Any]:
    """A default config whose usage log holds only the lines above."""
    logs, downloads = tmp_path / "logs", tmp_path / "Downloads"
    logs.mkdir()
    (logs / "usage.jsonl").write_bytes(usage_bytes())
    bundle_section = {"dir": str(downloads), "timezone": "UTC"}
    config = validate({"logs": {"dir": str(logs)}, "bundle": bundle_section})
    (tmp_path / "state").mkdir()
    return {"config": config, "state": tmp_path / "state", "downloads": downloads}


def bundle(setup: dict[str, Any]) -> Any:
    return make_bundle(setup["config"], setup["state"], NOW, lane_keys={"zai": ZAI_KEY})


def test_a_bundle_holding_a_hidden_key_is_refused(
    setup: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Scrubbing broken: the scan, the last line of defence, must see through the encoding.
    monkeypatch.setattr(bundle_module, "redact_text", lambda text, extra=None: text)
    result = bundle(setup)
    assert not result.ok and result.path is None and result.archive is None
    assert "secret scan" in (result.error or "")
    assert any("usage.jsonl" in f and "sk-ant-api03" in f for f in result.findings)
    assert any("usage.jsonl" in f and "sk-ant-oat01" in f for f in result.findings)
    assert any("usage.jsonl" in f and "lane key value (zai)" in f for f in result.findings)
    assert not setup["downloads"].exists() or list(setup["downloads"].iterdir()) == []


def test_a_bundle_scrubs_hidden_keys(setup: dict[str, Any]) -> None:
    result = bundle(setup)
    assert result.ok, result.error
    assert scan_tree(setup["downloads"], {"zai": ZAI_KEY}) == []
    copied = (Path(result.path) / "usage.jsonl").read_bytes()
    for secret in (CLIENT_API_KEY, CLIENT_OAUTH_TOKEN, ZAI_KEY):
        assert secret not in readable(copied)
    records = [json.loads(text) for text in copied.decode().splitlines()]  # still JSON lines
    assert [r["id"] for r in records] == ["percent", "nul", "zai"]
    assert records[0]["path"] == "/v1/messages/[REDACTED:sk-ant-api03]"
