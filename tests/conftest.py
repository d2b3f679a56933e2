"""Fixtures: fake upstreams on 127.0.0.1 and the real ccmitmd as a subprocess with a temp config."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))

from ccmitm.testing.fakeupstream import FakeUpstream, free_port

# Realistic-looking fake secrets: tests plant them and then assert they never cross lanes or
# land in anything the daemon writes.
CLIENT_API_KEY = "sk-ant-api03-" + "A1b2C3d4" * 11 + "-TESTKEYAA"
CLIENT_OAUTH_TOKEN = "sk-ant-oat01-" + "Z9y8X7w6" * 11 + "-TESTOAUTH"
ZAI_KEY = "0123456789abcdef0123456789abcdef.TestZaiKey123456"
ALL_SECRETS = (CLIENT_API_KEY, CLIENT_OAUTH_TOKEN, ZAI_KEY)


def sha(value: str | None) -> str | None:
    return hashlib.sha256(value.encode()).hexdigest() if value is not None else None


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"port {port} did not open")


class Daemon:
    """A real ccmitmd subprocess with its own HOME, config and state dirs."""

    def __init__(self, root: Path, config: dict[str, Any], env: dict[str, str] | None = None):
        self.root = root
        self.home = root / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.config_path = root / "config.yaml"
        self.config = config
        self.extra_env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.stderr_path = root / "ccmitmd.stderr"
        self._stderr_offset = 0
        self.ccctl_outputs: list[str] = []
        self.write_config(config)

    # --- paths -----------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self.config["proxy"]["port"]

    @property
    def reverse_port(self) -> int:
        return self.config["proxy"]["reverse_port"]

    @property
    def logs_dir(self) -> Path:
        return Path(self.config["logs"]["dir"])

    @property
    def state_dir(self) -> Path:
        return self.root / "state" / "ccmitm"

    @property
    def ca_cert(self) -> Path:
        return Path(self.config["proxy"]["confdir"]) / "mitmproxy-ca-cert.pem"

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def reverse_url(self) -> str:
        return f"http://127.0.0.1:{self.reverse_port}"

    def env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("ANTHROPIC_", "HTTP_PROXY", "HTTPS_PROXY", "ZAI_", "CCMITM_"))
            and k not in ("http_proxy", "https_proxy", "FORCE_HAIKU_TO_ZAI", "OFFLOAD_PAUSED")
        }
        env.update(
            HOME=str(self.home),
            XDG_CONFIG_HOME=str(self.root / "xdgconfig"),
            XDG_STATE_HOME=str(self.root / "state"),
            XDG_RUNTIME_DIR=str(self.root / "run"),
            CCMITM_CONFIG=str(self.config_path),
            ZAI_API_KEY=ZAI_KEY,
            PYTHONUNBUFFERED="1",
        )
        (self.root / "run").mkdir(mode=0o700, exist_ok=True)
        env.update(self.extra_env)
        return {k: v for k, v in env.items() if v is not None}

    def write_config(self, config: dict[str, Any]) -> None:
        self.config = config
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    # --- process ---------------------------------------------------------------------------------
    def start(self, wait: bool = True) -> Daemon:
        self._stderr_offset = self.stderr_path.stat().st_size if self.stderr_path.exists() else 0
        stderr = open(self.stderr_path, "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ccmitm.supervisor", "--config", str(self.config_path)],
            env=self.env(),
            stdout=stderr,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
        )
        stderr.close()
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc and self.proc.poll() is not None:
                raise RuntimeError(f"ccmitmd exited {self.proc.returncode}:\n{self.stderr()}")
            if " ready: " in self.stderr()[self._stderr_offset :]:
                return
            time.sleep(0.05)
        raise TimeoutError(f"ccmitmd not ready:\n{self.stderr()}")

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)

    # --- reading what it wrote -------------------------------------------------------------------
    def usage_lines(self) -> list[dict[str, Any]]:
        path = self.logs_dir / "usage.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def wait_usage(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = self.usage_lines()
            if len(lines) >= count:
                return lines
            time.sleep(0.05)
        raise TimeoutError(f"expected {count} usage lines, have {self.usage_lines()}")

    def ccctl(
        self, *args: str, check: bool = False, timeout: float = 30.0, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "ccmitm.cli", *args],
            env={**self.env(), **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        self.ccctl_outputs.append(result.stdout + result.stderr)
        if check and result.returncode != 0:
            raise AssertionError(f"ccctl {args} failed {result.returncode}: {result.stderr}")
        return result

    def written_by_ccmitm(self) -> list[Path]:
        """Everything the daemon and ccctl wrote: logs, state, bundles, the daemon's own output."""
        places = [self.logs_dir, self.root / "state", self.root / "run", self.root / "Downloads"]
        return [p for p in places if p.exists()] + [self.stderr_path]

    def secret_findings(self) -> list[str]:
        """The CI secret scan: every planted credential, anywhere ccmitm wrote or printed."""
        from ccmitm.core.redact import scan_text
        from ccmitm.reports.secretscan import scan_tree

        findings = [str(f) for place in self.written_by_ccmitm() for f in scan_tree(place, ALL_SECRETS)]
        for output in self.ccctl_outputs:
            findings += [f"ccctl output: {kind}" for kind in scan_text(output, ALL_SECRETS)]
        return findings


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
        headers={"x-api-key": CLIENT_API_KEY, **(headers or {})},
        timeout=30,
    )


def wait_for(predicate, timeout: float = 15.0, what: str = "condition", interval: float = 0.1) -> None:
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

    def __init__(self, base_url: str, model: str = "claude-haiku-4-5"):
        self.received: list[bytes] = []
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, args=(base_url, model), daemon=True)
        self.thread.start()
        wait_for(lambda: self.received or self.errors, what="stream started")

    def _run(self, base_url: str, model: str) -> None:
        import httpx

        body = {"model": model, "max_tokens": 8, "stream": True, "messages": []}
        try:
            with httpx.stream("POST", base_url + "/v1/messages", json=body, timeout=30) as response:
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


def base_config(root: Path, anthropic: FakeUpstream, zai: FakeUpstream) -> dict[str, Any]:
    return {
        "proxy": {
            "host": "127.0.0.1",
            "port": free_port(),
            "reverse_port": free_port(),
            "confdir": str(root / "mitmproxy"),
            "http2": True,
            "intercept_hosts": ["api.anthropic.com"],
        },
        "routing": {
            "paused": False,
            "default_lane": "anthropic",
            "rules": [{"match": "*haiku*", "lane": "zai", "model": "glm-4.5-air"}],
        },
        "lanes": {
            "anthropic": {"url": anthropic.url},
            "zai": {
                "url": zai.url + "/api/anthropic",
                "api_key_env": "ZAI_API_KEY",
                "header_mode": "x-api-key",
            },
        },
        "logs": {"dir": str(root / "logs")},
        "bundle": {"dir": str(root / "Downloads")},
    }


@pytest.fixture
def upstreams() -> Iterator[tuple[FakeUpstream, FakeUpstream]]:
    anthropic = FakeUpstream("anthropic", input_tokens=101, output_tokens=17).start()
    zai = FakeUpstream("zai", input_tokens=11, output_tokens=7).start()
    try:
        yield anthropic, zai
    finally:
        anthropic.stop()
        zai.stop()


@pytest.fixture
def make_daemon(tmp_path: Path, upstreams: tuple[FakeUpstream, FakeUpstream]):
    started: list[Daemon] = []

    def factory(
        mutate=None, env: dict[str, str] | None = None, start: bool = True, name: str = "d"
    ) -> Daemon:
        anthropic, zai = upstreams
        root = tmp_path / name
        root.mkdir(exist_ok=True)
        config = base_config(root, anthropic, zai)
        if mutate:
            mutate(config)
        daemon = Daemon(root, config, env)
        started.append(daemon)
        if start:
            daemon.start()
        return daemon

    yield factory
    for daemon in started:
        daemon.stop()
    # Every end-to-end test doubles as a secret scan of what its daemons wrote (promise 2).
    for daemon in started:
        findings = daemon.secret_findings()
        assert findings == [], f"secrets found in what ccmitm wrote: {findings}"


@pytest.fixture
def daemon(make_daemon) -> Daemon:
    return make_daemon()
