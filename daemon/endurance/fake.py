"""The private world of ``--against fake``: fake Anthropic and Z.AI upstreams and a ccmitmd of its
own, in a temp dir, with credentials generated for the run; it never touches the user's daemon."""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path

from ccmitm.config.load import load
from ccmitm.config.model import Config
from ccmitm.endurance.calls import CallResult, Target
from ccmitm.endurance.evidence import CheckResult
from ccmitm.testing.fakeupstream import FakeUpstream
from ccmitm.testing.harness import PrivateDaemon, private_config


class FakeWorld:
    """Fake Anthropic and Z.AI upstreams and a private ccmitmd, all under ``root``."""

    def __init__(self, root: Path):
        self.root = root
        self.anthropic = FakeUpstream("anthropic", input_tokens=101, output_tokens=17).start()
        self.zai = FakeUpstream("zai", input_tokens=11, output_tokens=7).start()
        # Generated per run, shaped like the real thing so the pattern scan would see a leak too.
        self.client_key = "sk-ant-api03-" + secrets.token_urlsafe(60) + "-endurance"
        self.zai_key = secrets.token_hex(16) + "." + secrets.token_urlsafe(12)[:16]
        config = private_config(root, self.anthropic.url, self.zai.url)
        config["proxy"]["drain_s"] = 15.0
        config["bundle"] = {"dir": str(root / "bundles"), "enabled": False}
        config["control"] = {"socket": str(root / "control.sock")}
        self.daemon = PrivateDaemon(root, config, lane_env={"ZAI_API_KEY": self.zai_key})
        self.config: Config = load(self.daemon.config_path, environ={}).config

    @property
    def secrets(self) -> dict[str, str]:
        return {"client key": self.client_key, "zai key": self.zai_key}

    def target(self) -> Target:
        headers = {
            "x-api-key": self.client_key,
            "anthropic-version": "2023-06-01",
            **self.daemon.auth_headers,
        }
        return Target(self.daemon.reverse_url, headers)

    def start(self, timeout: float = 30.0) -> None:
        self.daemon.start(timeout=timeout)

    def close(self) -> None:
        self.daemon.stop(timeout=30)
        self.anthropic.stop()
        self.zai.stop()


def fake_checks(world: FakeWorld, calls: list[CallResult]) -> list[CheckResult]:
    """What the fake upstreams actually received: lanes and credentials, call by call."""
    zai = world.zai.messages()
    anthropic = world.anthropic.messages()
    client_sha = hashlib.sha256(world.client_key.encode()).hexdigest()
    zai_sha = hashlib.sha256(world.zai_key.encode()).hexdigest()

    def sha(value: str | None) -> str | None:
        return hashlib.sha256(value.encode()).hexdigest() if value else None

    haiku_ok = sum(1 for c in calls if c.family == "haiku" and c.ok)
    return [
        CheckResult(
            "every Haiku call reached the offload upstream (zai) as glm-4.5-air",
            len(zai) >= haiku_ok and all(r.model == "glm-4.5-air" for r in zai),
            f"{len(zai)} calls at the fake Z.AI for {haiku_ok} successful Haiku calls",
        ),
        CheckResult(
            "no Haiku call reached the Anthropic upstream",
            not any("haiku" in (r.model or "") for r in anthropic),
            f"{len(anthropic)} calls at the fake Anthropic",
        ),
        CheckResult(
            "the offload upstream got the lane key and never the client's key",
            all(
                sha(r.header("x-api-key")) == zai_sha
                and not r.has_header("authorization")
                and world.client_key.encode() not in r.body
                for r in zai
            ),
            "checked by SHA-256, every call",
        ),
        CheckResult(
            "the Anthropic upstream got the client's key and never the lane key",
            all(
                sha(r.header("x-api-key")) == client_sha and world.zai_key not in str(r.headers)
                for r in anthropic
            ),
            "checked by SHA-256, every call",
        ),
    ]
