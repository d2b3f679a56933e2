"""What the tests share: planted secrets, a private daemon preset for them, and small client helpers.

Importable as ``tests.helpers`` (the suite is a package); fixtures live in ``conftest.py``.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from ccmitm.testing.fakeupstream import FakeUpstream
from ccmitm.testing.harness import PrivateDaemon, private_config

#: The repository's root (docs, etc/, service files the tests check).
REPO_ROOT = Path(__file__).resolve().parent.parent

# Realistic-looking fake secrets: tests plant them and then assert they never cross lanes or
# land in anything the daemon writes.
CLIENT_API_KEY = "sk-ant-api03-" + "A1b2C3d4" * 11 + "-TESTKEYAA"
CLIENT_OAUTH_TOKEN = "sk-ant-oat01-" + "Z9y8X7w6" * 11 + "-TESTOAUTH"
ZAI_KEY = "0123456789abcdef0123456789abcdef.TestZaiKey123456"
ALL_SECRETS = (CLIENT_API_KEY, CLIENT_OAUTH_TOKEN, ZAI_KEY)


#: How the tests run the Claude Code CLI: the client's planted API key, and none of its own
#: traffic (telemetry, update checks) that would leave loopback.
CLAUDE_CODE_ENV = {
    "ANTHROPIC_API_KEY": CLIENT_API_KEY,
    "DISABLE_TELEMETRY": "1",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_AUTOUPDATER": "1",
}


def sha(value: str | None) -> str | None:
    return hashlib.sha256(value.encode()).hexdigest() if value is not None else None


class Daemon(PrivateDaemon):
    """The private daemon of the tests: the planted Z.AI key in its environment, and a secret
    scan that looks for every planted credential."""

    def __init__(self, root: Path, config: dict[str, Any], env: dict[str, str | None] | None = None):
        super().__init__(root, config, lane_env={"ZAI_API_KEY": ZAI_KEY}, env=env)

    def secret_findings(self, secrets: tuple[str, ...] = ALL_SECRETS) -> list[str]:
        return super().secret_findings(secrets)


def base_config(root: Path, anthropic: FakeUpstream, zai: FakeUpstream) -> dict[str, Any]:
    """The tests' daemon config: Haiku to the fake Z.AI, the rest to the fake Anthropic."""
    return private_config(root, anthropic.url, zai.url)


HAIKU = "claude-haiku-4-5"


def post(
    daemon: Daemon,
    model: str = HAIKU,
    base: str | None = None,
    headers: dict[str, str] | None = None,
    **body: Any,
) -> httpx.Response:
    """One Messages call with the client's planted API key (reverse listener unless ``base``)."""
    return httpx.post(
        (base or daemon.reverse_url) + "/v1/messages",
        json={"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}], **body},
        headers={"x-api-key": CLIENT_API_KEY, **daemon.auth_headers, **(headers or {})},
        timeout=30,
    )


def wait_for(
    predicate: Callable[[], Any], timeout: float = 15.0, what: str = "condition", interval: float = 0.1
) -> None:
    """Poll until ``predicate()`` is true (bounded): for states, never for timing assertions.
    Predicates that run ccctl cost a process start each: give them a longer ``interval``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(what)


class BackgroundStream:
    """A streamed Haiku call on its own thread: the chunks it got and the error it ended with."""

    def __init__(self, base_url: str, model: str = "claude-haiku-4-5", headers: dict[str, str] | None = None):
        self.received: list[bytes] = []
        self.errors: list[BaseException] = []
        self.headers = dict(headers or {})  # e.g. the daemon's auth_headers
        self.thread = threading.Thread(target=self._run, args=(base_url, model), daemon=True)
        self.thread.start()
        wait_for(lambda: self.received or self.errors, what="stream started")

    def _run(self, base_url: str, model: str) -> None:
        import httpx

        body = {"model": model, "max_tokens": 8, "stream": True, "messages": []}
        try:
            with httpx.stream(
                "POST", base_url + "/v1/messages", json=body, headers=self.headers, timeout=30
            ) as response:
                for chunk in response.iter_raw():
                    self.received.append(chunk)
        except BaseException as exc:  # reported through .errors
            self.errors.append(exc)

    def join(self, timeout: float = 30.0) -> bytes:
        self.thread.join(timeout)
        return b"".join(self.received)


def status(daemon: Daemon) -> dict[str, Any]:
    """`ccctl status --json` of a running daemon."""
    return json.loads(daemon.ccctl("status", "--json", check=True).stdout)
