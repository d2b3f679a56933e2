"""claude-code-router 2.0.0, the Node peer ``make bench`` measures ccmitmd against.

Installed from npm into tests/bench/peers/ (its package-lock.json pins the version) and run in the
foreground (``node dist/cli.js start`` is what its own ``ccr start`` spawns detached) with a HOME
of its own, so its config never touches the user's ``~/.claude-code-router``. It is configured as
a plain pass-through to the bench's fake Anthropic upstream: one provider with the ``Anthropic``
transformer (requests and replies keep Anthropic's shape), no client key, logging off.

claude-code-router 3.1.x is not measured here: two of its npm dependencies are not published.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

from ccmitm.testing.ports import free_port, wait_port

PEERS = Path(__file__).resolve().parent / "peers"
CLI = PEERS / "node_modules" / "@musistudio" / "claude-code-router" / "dist" / "cli.js"
VERSION = "2.0.0"


def install() -> str | None:
    """Install the peer if needed; None when ready, else why it is skipped."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        return "node/npm not found"
    if not CLI.exists():
        result = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=PEERS,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if result.returncode != 0 or not CLI.exists():
            return f"npm ci failed: {result.stderr.strip()[-300:]}"
    return None


class ClaudeCodeRouter:
    """One claude-code-router process, forwarding every call to ``upstream_url``."""

    def __init__(self, root: Path, upstream_url: str, model: str):
        self.home = root / "ccr-home"
        self.port = free_port()
        self.log = root / "ccr.out"
        config = {
            "LOG": False,
            "HOST": "127.0.0.1",
            "PORT": self.port,
            "API_TIMEOUT_MS": 60000,
            "Providers": [
                {
                    "name": "fake",
                    "api_base_url": upstream_url + "/v1/messages",
                    "api_key": "bench-not-a-key",
                    "models": [model],
                    "transformer": {"use": ["Anthropic"]},
                }
            ],
            "Router": {"default": f"fake,{model}"},
        }
        (self.home / ".claude-code-router").mkdir(parents=True, exist_ok=True)
        (self.home / ".claude-code-router" / "config.json").write_text(json.dumps(config))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ClaudeCodeRouter:
        env = {"PATH": os.environ.get("PATH", ""), "HOME": str(self.home), "NODE_ENV": "production"}
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                ["node", str(CLI), "start"], env=env, stdout=out, stderr=subprocess.STDOUT
            )
        wait_port(self.port, timeout=30)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
