"""Fixtures: fake upstreams on 127.0.0.1 and the real ccmitmd as a subprocess with a temp config."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ccmitm.testing.fakeupstream import FakeUpstream
from tests.helpers import Daemon, base_config


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
    # Every end-to-end test doubles as a secret scan of what its daemons wrote (no credential in any log, output or bundle).
    for daemon in started:
        findings = daemon.secret_findings()
        assert findings == [], f"secrets found in what ccmitm wrote: {findings}"


@pytest.fixture
def daemon(make_daemon) -> Daemon:
    return make_daemon()
