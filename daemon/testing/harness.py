"""A private ccmitmd: the real daemon as a subprocess, with its own HOME, config, state and socket.

Used by the test suite and by ``ccctl endurance --against fake``, so both start the daemon the
same way. The daemon's environment is the caller's minus everything that would make it someone
else's: the user's credentials (``ANTHROPIC_*``, ``ZAI_*``), proxy settings (a proxy pointing at
the user's own ccmitmd would loop), ccmitm's own variables, and the environment toggles
``OFFLOAD_PAUSED`` and ``FORCE_HAIKU_TO_ZAI`` (a paused shell must not start a paused private
daemon).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from ccmitm.core.redact import scan_text
from ccmitm.paths import write_atomic
from ccmitm.reports.secretscan import scan_tree
from ccmitm.testing.ports import free_ports

# A method below is called signal(); the default stop signal is bound here, outside the class.
_SIGTERM = signal.SIGTERM
_DROPPED_PREFIXES = ("ANTHROPIC_", "ZAI_", "CCMITM_", "HTTP_PROXY", "HTTPS_PROXY")
_DROPPED_NAMES = frozenset(
    {"http_proxy", "https_proxy", "all_proxy", "no_proxy", "ALL_PROXY", "NO_PROXY"}
    | {"OFFLOAD_PAUSED", "FORCE_HAIKU_TO_ZAI"}
)


def clean_environ(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` without the variables a private daemon must not inherit (see the module doc)."""
    return {
        name: value
        for name, value in environ.items()
        if not name.startswith(_DROPPED_PREFIXES) and name not in _DROPPED_NAMES
    }


def private_config(root: Path, anthropic_url: str, zai_url: str) -> dict[str, Any]:
    """A config for a private daemon: free loopback ports, everything it writes under ``root``,
    Haiku to the fake Z.AI (as ``glm-4.5-air``), everything else to the fake Anthropic."""
    port, reverse_port = free_ports(2)
    return {
        "proxy": {
            "host": "127.0.0.1",
            "port": port,
            "reverse_port": reverse_port,
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
            "anthropic": {"url": anthropic_url},
            "zai": {
                "url": zai_url + "/api/anthropic",
                "api_key_env": "ZAI_API_KEY",
                "header_mode": "x-api-key",
            },
        },
        "logs": {"dir": str(root / "logs")},
        "bundle": {"dir": str(root / "Downloads")},
    }


class PrivateDaemon:
    """A real ccmitmd subprocess with its own HOME, config and state dirs.

    ``lane_env`` are the lane keys it gets in its environment (e.g. ``{"ZAI_API_KEY": ...}``);
    ``env`` adds or overrides anything else.
    """

    def __init__(
        self,
        root: Path,
        config: dict[str, Any],
        lane_env: Mapping[str, str] | None = None,
        env: Mapping[str, str | None] | None = None,
    ):
        self.root = root
        self.home = root / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.config_path = root / "config.yaml"
        self.config = config
        self.lane_env = dict(lane_env or {})
        self.extra_env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.stderr_path = root / "ccmitmd.stderr"
        self._stderr_offset = 0
        self.ccctl_outputs: list[str] = []
        self.write_config(config)

    # --- where things are --------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return int(self.config["proxy"]["port"])

    @property
    def reverse_port(self) -> int:
        return int(self.config["proxy"]["reverse_port"])

    @property
    def logs_dir(self) -> Path:
        return Path(self.config["logs"]["dir"])

    @property
    def state_dir(self) -> Path:
        return self.root / "state" / "ccmitm"

    @property
    def socket_path(self) -> Path:
        socket = (self.config.get("control") or {}).get("socket")
        return Path(socket) if socket else self.root / "run" / "ccmitm" / "control.sock"

    @property
    def ca_cert(self) -> Path:
        return Path(self.config["proxy"]["confdir"]) / "mitmproxy-ca-cert.pem"

    @property
    def token_path(self) -> Path:
        return self.state_dir / "client-token"

    @property
    def token(self) -> str | None:
        """The client token the daemon created at its first start (None before, or with auth off)."""
        try:
            return self.token_path.read_text().strip() or None
        except OSError:
            return None

    @property
    def proxy_url(self) -> str:
        """The intercepting listener as a wired client sees it: with the token as proxy credentials."""
        token = self.token
        credentials = f"ccmitm:{token}@" if token else ""
        return f"http://{credentials}127.0.0.1:{self.port}"

    @property
    def bare_proxy_url(self) -> str:
        """The intercepting listener without credentials, as an unwired local process would use it."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def reverse_url(self) -> str:
        return f"http://127.0.0.1:{self.reverse_port}"

    @property
    def auth_headers(self) -> dict[str, str]:
        """The header a wired client sends to the reverse listener (empty with auth off)."""
        token = self.token
        return {"x-ccmitm-token": token} if token else {}

    def env(self) -> dict[str, str]:
        env = clean_environ(os.environ)
        env.update(
            HOME=str(self.home),
            XDG_CONFIG_HOME=str(self.root / "xdgconfig"),
            XDG_STATE_HOME=str(self.root / "state"),
            XDG_RUNTIME_DIR=str(self.root / "run"),
            CCMITM_CONFIG=str(self.config_path),
            PYTHONUNBUFFERED="1",
        )
        env.update(self.lane_env)
        (self.root / "run").mkdir(mode=0o700, exist_ok=True)
        merged: dict[str, str | None] = {**env, **self.extra_env}
        return {name: value for name, value in merged.items() if value is not None}

    def write_config(self, config: dict[str, Any]) -> None:
        self.config = config
        # Replaced whole, as an editor saves: the daemon's watcher never reads half a file.
        write_atomic(self.config_path, yaml.safe_dump(config, sort_keys=False).encode(), 0o600)

    # --- the process -------------------------------------------------------------------------------
    def command(self) -> list[str]:
        """How the daemon is started; a test may wrap it (e.g. in a sandbox that then execs it)."""
        return [sys.executable, "-m", "ccmitm.supervisor", "--config", str(self.config_path)]

    def start(self, wait: bool = True, timeout: float = 30.0) -> PrivateDaemon:
        self._stderr_offset = self.stderr_path.stat().st_size if self.stderr_path.exists() else 0
        stderr = open(self.stderr_path, "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            self.command(),
            env=self.env(),
            stdout=stderr,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
        )
        stderr.close()
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until the daemon logs that it is ready (listeners bound, control socket open)."""
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

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait_exit(self, timeout: float) -> int | None:
        """The exit code, or None when it is still running after ``timeout`` seconds."""
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, sig: int = _SIGTERM, timeout: float = 40.0) -> int | None:
        """Stop it with ``sig``; SIGKILL when it has not exited after ``timeout`` seconds."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        code = self.wait_exit(timeout)
        if code is None:
            self.proc.kill()
            code = self.wait_exit(5)
        return code

    def tcp_sockets(self) -> int | None:
        """The daemon's open TCP sockets (listeners included); None where /proc is not available."""
        if self.proc is None or not Path(f"/proc/{self.proc.pid}/fd").is_dir():
            return None
        inodes = set()
        for fd in Path(f"/proc/{self.proc.pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                link = os.readlink(fd)
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
        tcp = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with contextlib.suppress(OSError):
                for row in Path(table).read_text().splitlines()[1:]:
                    tcp.add(row.split()[9])
        return len(inodes & tcp)

    # --- what it wrote -----------------------------------------------------------------------------
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
        """``ccctl ARGS`` in the daemon's environment; its output is kept for the secret scan."""
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

    def secret_findings(self, secrets: Iterable[str]) -> list[str]:
        """Every one of ``secrets`` (and every credential pattern) anywhere ccmitm wrote or printed."""
        known = tuple(secrets)
        findings = [str(f) for place in self.written_by_ccmitm() for f in scan_tree(place, known)]
        for output in self.ccctl_outputs:
            findings += [f"ccctl output: {kind}" for kind in scan_text(output, known)]
        return findings
