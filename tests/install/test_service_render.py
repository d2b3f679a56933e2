"""`ccctl service render --platform linux|macos`: the file `service install` would write, with this
installation's real paths, printed and checked by the tools that read it (systemd-analyze verify,
plistlib). The real ccctl runs as a subprocess with a fake HOME and a systemctl that must not run."""

from __future__ import annotations

import os
import plistlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ccmitm.install import service_files as svc_files
from ccmitm.install.host import LABEL, UNIT_NAME

TRAP = """#!/bin/sh
# render must not talk to a service manager
touch "$TRAP_HIT"
exit 1
"""


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    (home / ".config" / "ccmitm").mkdir(parents=True)
    bin_dir = tmp_path / "trapbin"
    bin_dir.mkdir()
    for name in ("systemctl", "launchctl", "loginctl"):
        (bin_dir / name).write_text(TRAP)
        (bin_dir / name).chmod(0o755)
    return home


def render(home: Path, *args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CCMITM_", "ZAI_", "XDG_", "NOTIFY_"))}
    env.update(
        HOME=str(home),
        PATH=f"{home.parent / 'trapbin'}{os.pathsep}{env.get('PATH', '')}",
        TRAP_HIT=str(home.parent / "trap-hit"),
    )
    extra = ["--config", str(config)] if config else []
    return subprocess.run(
        [sys.executable, "-m", "ccmitm.cli", *extra, "service", "render", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def assert_nothing_happened(home: Path, before: set[Path]) -> None:
    assert files_under(home) == before, "render must not write anything"
    assert not (home.parent / "trap-hit").exists(), "render must not run a service manager"


def test_render_linux_prints_a_unit_systemd_accepts(home: Path, tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    before = files_under(home)
    result = render(home, "--platform", "linux")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    config = home / ".config" / "ccmitm" / "config.yaml"
    assert f"ExecStart={svc_files.find_ccmitmd()} --config {config}\n" in text
    assert f"EnvironmentFile=-{home}/.config/ccmitm/ccmitm.env\n" in text
    assert "SystemCallFilter=@system-service\n" in text and "@" + "CCMITMD@" not in text
    assert str(home / ".config" / "systemd" / "user" / UNIT_NAME) in result.stderr
    assert_nothing_happened(home, before)
    if tool is None:
        pytest.skip("systemd-analyze is not installed (Debian package: systemd)")
    unit = tmp_path / UNIT_NAME
    unit.write_text(text)
    runtime = tmp_path / "xdg-runtime"
    runtime.mkdir(mode=0o700)
    verified = subprocess.run(
        [tool, "--user", "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)},
    )
    assert verified.returncode == 0 and not verified.stderr.strip(), verified.stderr


def test_render_macos_prints_a_plist_with_this_installs_paths(home: Path) -> None:
    before = files_under(home)
    config = home / "work" / "my config.yaml"
    result = render(home, "--platform", "macos", config=config)
    assert result.returncode == 0, result.stderr
    plist = plistlib.loads(result.stdout.encode())
    ccmitmd = svc_files.find_ccmitmd()
    assert plist["Label"] == LABEL
    assert plist["ProgramArguments"] == [str(ccmitmd), "--config", str(config)]
    assert plist["RunAtLoad"] is True
    assert plist["KeepAlive"] == {"SuccessfulExit": False}
    assert plist["ExitTimeOut"] >= 45 and plist["Umask"] == 0o077
    env = plist["EnvironmentVariables"]
    assert env["PATH"].split(":")[0] == str(ccmitmd.parent) and env["PYTHONUNBUFFERED"] == "1"
    assert "ZAI_API_KEY" not in env
    for key in ("StandardOutPath", "StandardErrorPath"):
        assert Path(plist[key]).parent == home / "Library" / "Logs" / "ccmitm"
    assert str(home / "Library" / "LaunchAgents" / f"{LABEL}.plist") in result.stderr
    assert_nothing_happened(home, before)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the default follows this machine")
def test_render_defaults_to_this_machines_manager(home: Path) -> None:
    result = render(home)
    assert result.returncode == 0, result.stderr
    assert result.stdout == render(home, "--platform", "linux").stdout


def test_render_follows_the_config_and_refuses_an_invalid_one(home: Path) -> None:
    config = home / ".config" / "ccmitm" / "config.yaml"
    config.write_text("proxy:\n  drain_s: 100\n")
    assert "TimeoutStopSec=115\n" in render(home, "--platform", "linux").stdout
    config.write_text("proxy:\n  port: nope\n")
    refused = render(home, "--platform", "macos")
    assert refused.returncode == 1 and refused.stdout == ""
    assert "proxy.port" in refused.stderr and "would not start" in refused.stderr
