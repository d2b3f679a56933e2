"""The systemd unit, the launchd plist and `ccctl service install | uninstall | status`.

No test here talks to a real service manager: in-process tests swap `Host.runner` for a fake that
keeps the state a service manager would, and subprocess tests put fake `systemctl`/`loginctl`
executables first on PATH.
"""

from __future__ import annotations

import json
import os
import plistlib
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

import ccmitm.cli.service as cli_service
from ccmitm.cli.main import main as ccctl_main
from ccmitm.config.load import validate
from ccmitm.install import host as svc_host
from ccmitm.install import service_files as svc_files
from ccmitm.install import service_manager as svc_manager
from ccmitm.install.host import LABEL, UNIT_NAME, Completed, Host
from ccmitm.install.service_files import Settings
from tests.helpers import REPO_ROOT

REPO = REPO_ROOT
PLACEHOLDER = re.compile(r"@[A-Z_]+@")
UID = 501
HARDENING = {
    "NoNewPrivileges": "yes",
    "LockPersonality": "yes",
    "RestrictRealtime": "yes",
    "RestrictSUIDSGID": "yes",
    "SystemCallArchitectures": "native",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    "UMask": "0077",
    "SystemCallErrorNumber": "EPERM",
    "RestrictNamespaces": "yes",
    "AmbientCapabilities": "",
    "KeyringMode": "private",
}
# Both lines: the allow list, then what is taken out of it (tests/install/test_service_hardening.py
# runs the daemon under exactly this filter).
SYSCALL_FILTER = ["@system-service", "~@privileged @resources"]
# Options that need namespaces (break user units) or break cffi callbacks (MemoryDenyWriteExecute).
FORBIDDEN = (
    "ProtectSystem",
    "ProtectHome",
    "PrivateTmp",
    "PrivateDevices",
    "PrivateUsers",
    "PrivateNetwork",
    "ProtectKernelTunables",
    "ProtectKernelModules",
    "ProtectControlGroups",
    "ReadOnlyPaths",
    "InaccessiblePaths",
    "MemoryDenyWriteExecute",
    # These drop capabilities from the bounding set, which a user manager may not do (exit 218).
    "CapabilityBoundingSet",
    "ProtectClock",
    "ProtectKernelLogs",
    "ProtectHostname",
)


def ccmitmd() -> Path:
    """The real ccmitmd of this venv: systemd-analyze verify checks that ExecStart exists."""
    return svc_files.find_ccmitmd()


def settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "ccmitmd": ccmitmd(),
        "config": tmp_path / "cfg" / "config.yaml",
        "env_file": tmp_path / "cfg" / "ccmitm.env",
    }
    values.update(overrides)
    return Settings(**values)


def unit_entries(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) for every assignment in a unit file."""
    entries = []
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        entries.append((section, key.strip(), value.strip()))
    return entries


def unit_value(text: str, key: str, section: str = "Service") -> str:
    values = [v for s, k, v in unit_entries(text) if s == section and k == key]
    assert len(values) == 1, f"{section}.{key} appears {len(values)} times"
    return values[0]


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


# --- the rendered systemd unit ---------------------------------------------------------------------
def systemd_verify(unit_file: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed (Debian package: systemd)")
    runtime = tmp_path / "xdg-runtime"
    runtime.mkdir(mode=0o700, exist_ok=True)
    # --user resolves the user manager's paths, which need a runtime dir even for an offline check.
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime)}
    result = subprocess.run(
        [tool, "--user", "verify", str(unit_file)], capture_output=True, text=True, env=env, timeout=60
    )
    if "Failed to initialize manager" in result.stderr:
        print(f"systemd-analyze cannot run here: {result.stderr.strip()}")
        pytest.skip(f"systemd-analyze cannot run here: {result.stderr.strip()}")
    return result


def test_rendered_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    unit = tmp_path / UNIT_NAME
    unit.write_text(svc_files.render_systemd(settings(tmp_path)))
    result = systemd_verify(unit, tmp_path)
    assert result.returncode == 0, result.stderr
    # verify only warns (exit 0) about unknown keys or bad values; a clean unit prints nothing.
    assert result.stderr.strip() == "", result.stderr


def test_systemd_analyze_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: a misspelt key and a missing binary are both reported."""
    unit = tmp_path / UNIT_NAME
    text = svc_files.render_systemd(settings(tmp_path, ccmitmd=tmp_path / "missing" / "ccmitmd"))
    unit.write_text(text.replace("Type=notify", "Type=notify\nWatchdogSecs=30"))
    result = systemd_verify(unit, tmp_path)
    assert "WatchdogSecs" in result.stderr
    assert "missing/ccmitmd" in result.stderr
    assert result.returncode != 0


def test_unit_quotes_paths_systemd_would_split_or_expand(tmp_path: Path) -> None:
    odd_dir = tmp_path / "my tools"
    odd_dir.mkdir()
    binary = odd_dir / "ccmitmd"
    binary.write_text("#!/bin/sh\nexit 0\n")
    binary.chmod(0o755)
    config = tmp_path / "100%" / "config.yaml"
    text = svc_files.render_systemd(settings(tmp_path, ccmitmd=binary, config=config))
    assert unit_value(text, "ExecStart") == f'"{binary}" --config {tmp_path}/100%%/config.yaml'
    unit = tmp_path / UNIT_NAME
    unit.write_text(text)
    result = systemd_verify(unit, tmp_path)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def test_unit_has_the_service_semantics_and_hardening(tmp_path: Path) -> None:
    s = settings(tmp_path)
    text = svc_files.render_systemd(s)
    assert not PLACEHOLDER.search(text)
    assert unit_value(text, "Type") == "notify"
    assert unit_value(text, "NotifyAccess") == "main"
    assert unit_value(text, "ExecStart") == f"{s.ccmitmd} --config {s.config}"
    assert Path(unit_value(text, "ExecStart").split()[0]).is_absolute()
    assert int(unit_value(text, "WatchdogSec")) > 0
    assert unit_value(text, "Restart") == "on-failure"
    assert int(unit_value(text, "StartLimitBurst", "Unit")) > 1
    assert int(unit_value(text, "StartLimitIntervalSec", "Unit")) > 0
    # The default drain is 30 s; SIGKILL must come well after it.
    assert int(unit_value(text, "TimeoutStopSec")) >= 45
    assert unit_value(text, "EnvironmentFile") == f"-{s.env_file}"
    assert unit_value(text, "WantedBy", "Install") == "default.target"
    for key, value in HARDENING.items():
        assert unit_value(text, key) == value
    assert [v for s, k, v in unit_entries(text) if k == "SystemCallFilter"] == SYSCALL_FILTER
    keys = {k for _, k, _ in unit_entries(text)}
    assert not keys & set(FORBIDDEN)


def test_each_hardening_line_is_commented() -> None:
    lines = svc_files.template_text("systemd").splitlines()
    for key in [*HARDENING, "SystemCallFilter"]:
        index = next(i for i, line in enumerate(lines) if line.startswith(f"{key}="))
        assert lines[index - 1].startswith("#"), f"{key}= has no comment above it"


def test_stop_timeout_follows_a_longer_drain(tmp_path: Path) -> None:
    config = validate({"proxy": {"drain_s": 90}})
    host = Host("systemd", {"HOME": str(tmp_path)}, UID)
    s = svc_files.settings_for(tmp_path / "config.yaml", config, host, ccmitmd=ccmitmd())
    assert s.stop_timeout_s > 90
    assert unit_value(svc_files.render_systemd(s), "TimeoutStopSec") == str(s.stop_timeout_s)
    assert svc_files.stop_timeout_s(30.0) == 45


def test_settings_refuse_relative_paths(tmp_path: Path) -> None:
    with pytest.raises(svc_host.ServiceError, match="absolute"):
        settings(tmp_path, ccmitmd=Path("bin/ccmitmd"))


def test_platform_picks_the_service_manager() -> None:
    assert svc_host.detect_manager("linux") == "systemd"
    assert svc_host.detect_manager("darwin") == "launchd"
    with pytest.raises(svc_host.ManagerUnreachable, match="win32"):
        svc_host.detect_manager("win32")


def test_ccmitmd_is_the_one_beside_the_interpreter(tmp_path: Path) -> None:
    bindir = tmp_path / "venv" / "bin"
    bindir.mkdir(parents=True)
    (bindir / "ccmitmd").write_text("#!/bin/sh\n")
    (bindir / "ccmitmd").chmod(0o755)
    assert svc_files.find_ccmitmd(str(bindir / "python")) == bindir / "ccmitmd"


# --- the rendered launchd plist --------------------------------------------------------------------
def test_rendered_plist_has_the_agent_keys_and_absolute_paths(tmp_path: Path) -> None:
    host = Host("launchd", {"HOME": str(tmp_path / "home")}, UID)
    s = settings(tmp_path)
    text = svc_files.render(host, s)
    assert not PLACEHOLDER.search(text)
    plist = plistlib.loads(text.encode())
    log_dir = tmp_path / "home" / "Library" / "Logs" / "ccmitm"
    assert plist["Label"] == LABEL
    assert plist["ProgramArguments"] == [str(s.ccmitmd), "--config", str(s.config)]
    assert all(Path(arg).is_absolute() for arg in plist["ProgramArguments"][::2])
    assert plist["RunAtLoad"] is True
    assert plist["KeepAlive"] == {"SuccessfulExit": False}
    assert isinstance(plist["ThrottleInterval"], int) and plist["ThrottleInterval"] > 0
    assert plist["ProcessType"] == "Background"
    assert plist["ExitTimeOut"] >= 45
    assert plist["Umask"] == 0o077
    for key in ("StandardOutPath", "StandardErrorPath"):
        assert Path(plist[key]).parent == log_dir
    path = plist["EnvironmentVariables"]["PATH"].split(":")
    assert path[0] == str(s.ccmitmd.parent)
    assert "/usr/bin" in path and all(Path(p).is_absolute() for p in path)
    assert "ZAI_API_KEY" not in plist["EnvironmentVariables"]


def test_plist_escapes_xml_in_paths(tmp_path: Path) -> None:
    host = Host("launchd", {"HOME": str(tmp_path / "R&D <home>")}, UID)
    s = settings(tmp_path, config=tmp_path / "a&b" / "config.yaml")
    plist = plistlib.loads(svc_files.render(host, s).encode())
    assert plist["ProgramArguments"][2] == str(tmp_path / "a&b" / "config.yaml")
    assert plist["StandardErrorPath"].startswith(str(tmp_path / "R&D <home>"))


def test_templates_ship_as_package_data_and_are_the_hand_install_copies() -> None:
    shipped = files("ccmitm.install.templates")
    for manager, relative in svc_files.TEMPLATES.items():
        text = (shipped / relative).read_text(encoding="utf-8")
        assert text == (REPO / "service" / relative).read_text(encoding="utf-8"), manager
        assert PLACEHOLDER.search(text), f"the {manager} template lost its placeholders"


# --- fake service managers -------------------------------------------------------------------------
class FakeSystemd:
    """`systemctl --user` as far as install/uninstall/status need it, with the order rules it has:
    a unit file is only known after daemon-reload, and `enable` fails for an unknown unit."""

    def __init__(self, host: Host, reachable: bool = True, linger: str = "yes"):
        self.host = host
        self.reachable = reachable
        self.linger = linger
        self.calls: list[tuple[str, ...]] = []
        self.loaded_text: str | None = None
        self.enabled = False
        self.active = False

    def __call__(self, argv: Sequence[str]) -> Completed:
        argv = tuple(argv)
        self.calls.append(argv)
        if argv[0] == "loginctl":
            return Completed(argv, 0, self.linger + "\n")
        assert argv[:2] == ("systemctl", "--user"), argv
        if not self.reachable:
            return Completed(argv, 1, "", "Failed to connect to bus: No medium found")
        return self._systemctl(argv, argv[2:])

    def _systemctl(self, argv: tuple[str, ...], args: tuple[str, ...]) -> Completed:
        if args[0] == "show":
            return Completed(argv, 0, self._show())
        if args == ("daemon-reload",):
            path = self.host.unit_path
            self.loaded_text = path.read_text() if path.exists() else None
            return Completed(argv, 0)
        if self.loaded_text is None and args[0] in ("enable", "try-restart", "reset-failed"):
            return Completed(argv, 1, "", f"Unit file {UNIT_NAME} does not exist.")
        if args[0] == "enable":
            self.enabled = self.active = True
        elif args[0] == "disable":
            self.enabled = self.active = False
        return Completed(argv, 0)

    def _show(self) -> str:
        loaded = self.loaded_text is not None
        return textwrap.dedent(f"""\
            LoadState={"loaded" if loaded else "not-found"}
            UnitFileState={("enabled" if self.enabled else "disabled") if loaded else ""}
            ActiveState={"active" if self.active else "inactive"}
            SubState={"running" if self.active else "dead"}
            Result=success
            MainPID={4242 if self.active else 0}
            ExecMainCode={0 if self.active else 1}
            ExecMainStatus=0
            NRestarts=0
            FragmentPath={self.host.unit_path if loaded else ""}
            """)

    @property
    def commands(self) -> list[tuple[str, ...]]:
        """What changed state: everything but the read-only queries."""
        return [c[2:] for c in self.calls if c[0] == "systemctl" and c[2] != "show"]


class FakeLaunchd:
    """launchctl as far as we use it, including the real one's refusal to bootstrap twice."""

    def __init__(self, host: Host, reachable: bool = True):
        self.host = host
        self.reachable = reachable
        self.calls: list[tuple[str, ...]] = []
        self.loaded = False

    def __call__(self, argv: Sequence[str]) -> Completed:
        argv = tuple(argv)
        self.calls.append(argv)
        if not self.reachable:
            return Completed(argv, 127, "", "launchctl: command not found")
        verb, *rest = argv[1:]
        target = self.host.service_target
        if verb == "print" and rest == [self.host.domain]:
            return Completed(argv, 0, "gui/501 = {\n}\n")
        if verb == "print":
            if not self.loaded:
                return Completed(argv, 113, "", f'Could not find service "{LABEL}" in domain for user')
            return Completed(argv, 0, f"{target} = {{\n\tstate = running\n\tpid = 777\n\truns = 1\n}}\n")
        if verb == "print-disabled":
            return Completed(argv, 0, f'disabled services = {{\n\t"{LABEL}" => enabled\n}}\n')
        return self._change(argv, verb, rest)

    def _change(self, argv: tuple[str, ...], verb: str, rest: list[str]) -> Completed:
        if verb == "bootstrap":
            assert rest == [self.host.domain, str(self.host.unit_path)]
            if self.loaded:
                return Completed(argv, 5, "", "Bootstrap failed: 5: Input/output error")
            plistlib.loads(self.host.unit_path.read_bytes())  # launchd rejects a broken plist
            self.loaded = True
        elif verb == "bootout":
            if not self.loaded:
                return Completed(argv, 3, "", "Boot-out failed: 3: No such process")
            self.loaded = False
        elif verb == "kickstart" and not self.loaded:
            return Completed(argv, 113, "", "Could not find service")
        return Completed(argv, 0)

    @property
    def commands(self) -> list[tuple[str, ...]]:
        return [c[1:] for c in self.calls if c[1] not in ("print", "print-disabled")]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    (home / ".config" / "ccmitm").mkdir(parents=True)
    (home / "Library").mkdir()
    (home / "unrelated.txt").write_text("not ours\n")
    return home


def environ(home: Path) -> dict[str, str]:
    return {
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_STATE_HOME": str(home / ".local" / "state"),
        "XDG_RUNTIME_DIR": str(home / "run"),
        "USER": "tester",
    }


def systemd_host(home: Path, **kwargs: Any) -> tuple[Host, FakeSystemd]:
    host = Host("systemd", environ(home), UID)
    fake = FakeSystemd(host, **kwargs)
    return Host("systemd", host.environ, UID, fake), fake


def launchd_host(home: Path, **kwargs: Any) -> tuple[Host, FakeLaunchd]:
    host = Host("launchd", environ(home), UID)
    fake = FakeLaunchd(host, **kwargs)
    return Host("launchd", host.environ, UID, fake), fake


def ccctl(monkeypatch: pytest.MonkeyPatch, host: Host, home: Path, *args: str) -> Result:
    monkeypatch.setattr(cli_service, "make_host", lambda: host)
    config = home / ".config" / "ccmitm" / "config.yaml"
    env = {**environ(home), "CCMITM_CONFIG": None, "ZAI_API_KEY": None}
    return CliRunner().invoke(ccctl_main, ["--config", str(config), "service", *args], env=env)


# --- install / uninstall with the runner seam replaced ---------------------------------------------
def test_dry_run_prints_the_unit_and_commands_and_changes_nothing(
    monkeypatch: pytest.MonkeyPatch, home: Path
) -> None:
    host, fake = systemd_host(home)
    before = files_under(home)
    result = ccctl(monkeypatch, host, home, "install", "--dry-run")
    assert result.exit_code == 0, result.output
    unit_path = home / ".config" / "systemd" / "user" / UNIT_NAME
    out = result.output
    assert "dry run: nothing is written or run" in out
    assert f"would write {unit_path} (mode 0644)" in out
    assert f"    | ExecStart={ccmitmd()} --config {home}/.config/ccmitm/config.yaml" in out
    assert "    | Type=notify" in out
    assert out.index("would run systemctl --user daemon-reload") < out.index(
        f"would run systemctl --user enable --now {UNIT_NAME}"
    )
    assert files_under(home) == before
    assert not (home / ".config" / "systemd").exists()
    assert fake.commands == [], "a dry run may only query the service manager"


def test_dry_run_for_launchd_bootstraps_into_the_gui_domain(
    monkeypatch: pytest.MonkeyPatch, home: Path
) -> None:
    host, fake = launchd_host(home)
    result = ccctl(monkeypatch, host, home, "install", "--dry-run")
    assert result.exit_code == 0, result.output
    plist_path = home / "Library" / "LaunchAgents" / f"{LABEL}.plist"
    assert f"would write {plist_path}" in result.output
    assert f"would create directory {home}/Library/Logs/ccmitm (mode 0700)" in result.output
    assert f"would run launchctl bootstrap gui/{UID} {plist_path}" in result.output
    assert " load " not in result.output and "unload" not in result.output
    assert not (home / "Library" / "LaunchAgents").exists()
    assert fake.commands == []


def test_systemd_install_twice_then_uninstall(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    host, fake = systemd_host(home, linger="no")
    unit_path = home / ".config" / "systemd" / "user" / UNIT_NAME
    before = files_under(home)

    first = ccctl(monkeypatch, host, home, "install")
    assert first.exit_code == 0, first.output
    assert files_under(home) - before == {unit_path}
    assert unit_path.stat().st_mode & 0o777 == 0o644
    assert fake.commands == [("daemon-reload",), ("enable", "--now", UNIT_NAME)]
    assert fake.active and fake.enabled
    assert "loginctl enable-linger tester" in first.output
    assert "ZAI_API_KEY=..." in first.output  # the key needs a way in; the hint says which

    fake.calls.clear()
    second = ccctl(monkeypatch, host, home, "install")
    assert second.exit_code == 0, second.output
    assert files_under(home) - before == {unit_path}
    assert sorted(unit_path.parent.iterdir()) == [unit_path], "one service, no leftovers"
    assert fake.commands == [("daemon-reload",), ("enable", "--now", UNIT_NAME)]
    assert "already up to date" in second.output

    fake.calls.clear()
    gone = ccctl(monkeypatch, host, home, "uninstall")
    assert gone.exit_code == 0, gone.output
    assert files_under(home) == before
    assert fake.commands[:2] == [("disable", "--now", UNIT_NAME), ("daemon-reload",)]
    assert not fake.active and not fake.enabled and fake.loaded_text is None

    fake.calls.clear()
    again = ccctl(monkeypatch, host, home, "uninstall")
    assert again.exit_code == 0 and "not installed" in again.output
    assert fake.commands == []


def test_systemd_reinstall_with_a_changed_unit_restarts_it(
    monkeypatch: pytest.MonkeyPatch, home: Path
) -> None:
    host, fake = systemd_host(home)
    assert ccctl(monkeypatch, host, home, "install").exit_code == 0
    config = home / ".config" / "ccmitm" / "config.yaml"
    config.write_text(yaml.safe_dump({"proxy": {"drain_s": 120}}))
    fake.calls.clear()
    result = ccctl(monkeypatch, host, home, "install")
    assert result.exit_code == 0, result.output
    assert "TimeoutStopSec=135" in host.unit_path.read_text()
    assert fake.commands == [
        ("daemon-reload",),
        ("try-restart", UNIT_NAME),
        ("enable", "--now", UNIT_NAME),
    ]


def test_launchd_install_twice_then_uninstall(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    host, fake = launchd_host(home)
    plist_path = home / "Library" / "LaunchAgents" / f"{LABEL}.plist"
    log_dir = home / "Library" / "Logs" / "ccmitm"
    before = files_under(home)

    first = ccctl(monkeypatch, host, home, "install")
    assert first.exit_code == 0, first.output
    assert files_under(home) - before == {plist_path}
    assert log_dir.is_dir() and log_dir.stat().st_mode & 0o777 == 0o700
    assert fake.commands == [
        ("enable", f"gui/{UID}/{LABEL}"),
        ("bootstrap", f"gui/{UID}", str(plist_path)),
    ]
    assert "api_key_file" in first.output

    fake.calls.clear()
    second = ccctl(monkeypatch, host, home, "install")
    assert second.exit_code == 0, second.output  # a second bootstrap would fail: it must not happen
    assert sorted(plist_path.parent.iterdir()) == [plist_path]
    assert fake.commands == [("enable", f"gui/{UID}/{LABEL}"), ("kickstart", f"gui/{UID}/{LABEL}")]

    fake.calls.clear()
    gone = ccctl(monkeypatch, host, home, "uninstall")
    assert gone.exit_code == 0, gone.output
    assert fake.commands == [("bootout", f"gui/{UID}/{LABEL}")]
    assert files_under(home) == before
    assert not log_dir.exists(), "the empty log dir install created is gone too"
    assert not fake.loaded


def test_launchd_reinstall_with_a_changed_plist_reloads_it(
    monkeypatch: pytest.MonkeyPatch, home: Path
) -> None:
    host, fake = launchd_host(home)
    assert ccctl(monkeypatch, host, home, "install").exit_code == 0
    (home / ".config" / "ccmitm" / "config.yaml").write_text(yaml.safe_dump({"proxy": {"drain_s": 100}}))
    fake.calls.clear()
    result = ccctl(monkeypatch, host, home, "install")
    assert result.exit_code == 0, result.output
    assert plistlib.loads(host.unit_path.read_bytes())["ExitTimeOut"] == 115
    assert [c[0] for c in fake.commands] == ["bootout", "enable", "bootstrap"]


def test_launchd_uninstall_keeps_logs(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    host, _ = launchd_host(home)
    assert ccctl(monkeypatch, host, home, "install").exit_code == 0
    log = home / "Library" / "Logs" / "ccmitm" / "stderr.log"
    log.write_text("ccmitmd ready\n")
    assert ccctl(monkeypatch, host, home, "uninstall").exit_code == 0
    assert log.read_text() == "ccmitmd ready\n"
    assert not host.unit_path.exists()


def test_no_service_manager_refuses_and_writes_nothing(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    for host, _ in (systemd_host(home, reachable=False), launchd_host(home, reachable=False)):
        before = files_under(home)
        for verb in ("install", "uninstall", "status"):
            result = ccctl(monkeypatch, host, home, verb)
            assert result.exit_code == 1, (host.manager, verb, result.output)
            assert "no service manager is reachable" in result.output
        assert files_under(home) == before
        assert not host.unit_path.parent.exists()


def test_invalid_config_is_refused_before_anything_is_written(
    monkeypatch: pytest.MonkeyPatch, home: Path
) -> None:
    host, fake = systemd_host(home)
    (home / ".config" / "ccmitm" / "config.yaml").write_text("proxy:\n  port: nope\n")
    result = ccctl(monkeypatch, host, home, "install")
    assert result.exit_code == 1
    assert "proxy.port" in result.output and "would not start" in result.output
    assert not host.unit_path.exists()
    assert fake.commands == []


# --- status ----------------------------------------------------------------------------------------
def test_status_shows_the_manager_and_the_daemon(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    host, _ = systemd_host(home)
    not_installed = ccctl(monkeypatch, host, home, "status", "--json")
    assert not_installed.exit_code == 3
    data = json.loads(not_installed.output)
    assert data["manager"]["installed"] is False and data["manager"]["reachable"] is True
    assert data["daemon"]["running"] is False and data["daemon"]["error"]

    assert ccctl(monkeypatch, host, home, "install").exit_code == 0
    running = ccctl(monkeypatch, host, home, "status", "--json")
    assert running.exit_code == 0, running.output
    manager = json.loads(running.output)["manager"]
    assert manager["enabled"] == "enabled"
    assert manager["active"] == "active (running)"
    assert manager["pid"] == 4242 and manager["unit_file"] == str(host.unit_path)

    text = ccctl(monkeypatch, host, home, "status")
    assert text.exit_code == 0
    assert "active (running)" in text.output
    assert "daemon: not running/unreachable" in text.output


def test_launchctl_print_parsing_takes_the_service_level_keys() -> None:
    sample = textwrap.dedent("""\
        gui/501/io.ccmitm.daemon = {
        \tactive count = 1
        \tpath = /Users/me/Library/LaunchAgents/io.ccmitm.daemon.plist
        \tstate = running
        \tprogram = /Users/me/.venv/bin/ccmitmd
        \truns = 3
        \tpid = 812
        \tlast exit code = 1
        \tendpoints = {
        \t\tstate = inactive
        \t}
        }
        """)
    info = svc_manager.parse_launchctl_print(sample)
    assert info == {
        "path": "/Users/me/Library/LaunchAgents/io.ccmitm.daemon.plist",
        "state": "running",
        "runs": "3",
        "pid": "812",
        "last exit code": "1",
    }


# --- how the key reaches the service ---------------------------------------------------------------
def test_key_hints_follow_the_env_file_and_never_show_the_key(home: Path) -> None:
    host, _ = systemd_host(home)
    config = validate({})
    assert any("ZAI_API_KEY=..." in hint for hint in svc_manager.key_hints(config, host))
    host.env_file.write_text("ZAI_API_KEY=secret-value-123\n")
    host.env_file.chmod(0o644)
    hints = svc_manager.key_hints(config, host)
    assert hints == [f"{host.env_file} is readable by group or others: chmod 600 {host.env_file}"]
    host.env_file.chmod(0o600)
    assert svc_manager.key_hints(config, host) == []
    key_file = home / "zai.key"
    key_file.write_text("secret-value-123\n")
    key_file.chmod(0o640)
    lanes = {"zai": {"url": "https://api.z.ai/api/anthropic", "api_key_file": str(key_file)}}
    hints = svc_manager.key_hints(validate({"lanes": lanes}), host)
    assert any("chmod 600" in hint and str(key_file) in hint for hint in hints)
    assert not any("secret-value-123" in hint for hint in hints)


# --- end to end: the real ccctl, the real runner, a fake systemctl on PATH -------------------------
FAKE_SYSTEMCTL = """\
#!{python}
import json, os, sys
from pathlib import Path
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps([Path(sys.argv[0]).name, *sys.argv[1:]]) + "\\n")
if Path(sys.argv[0]).name == "loginctl":
    print("yes")
    sys.exit(0)
if os.environ.get("FAKE_NO_BUS"):
    print("Failed to connect to bus: No medium found", file=sys.stderr)
    sys.exit(1)
unit = Path(os.environ["XDG_CONFIG_HOME"], "systemd", "user", "ccmitm.service")
if sys.argv[2:3] == ["show"]:
    print("LoadState=" + ("loaded" if unit.exists() else "not-found"))
"""


def run_ccctl(home: Path, fakebin: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CCMITM_", "ZAI_", "XDG_", "NOTIFY_"))}
    env.update(environ(home))
    env.update(PATH=f"{fakebin}{os.pathsep}{env.get('PATH', '')}", FAKE_LOG=str(home.parent / "calls"))
    env.update(extra)
    return subprocess.run(
        [sys.executable, "-m", "ccmitm.cli", "service", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def fakebin(tmp_path: Path) -> Path:
    if not sys.platform.startswith("linux"):
        pytest.skip("the end-to-end service test drives the systemd path")
    fakebin = tmp_path / "fakebin"
    fakebin.mkdir()
    for name in ("systemctl", "loginctl"):
        tool = fakebin / name
        tool.write_text(FAKE_SYSTEMCTL.format(python=sys.executable))
        tool.chmod(0o755)
    return fakebin


def logged_calls(home: Path) -> list[list[str]]:
    path = home.parent / "calls"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_ccctl_install_and_uninstall_run_systemctl(home: Path, fakebin: Path) -> None:
    before = files_under(home)
    unit_path = home / ".config" / "systemd" / "user" / UNIT_NAME
    installed = run_ccctl(home, fakebin, "install")
    assert installed.returncode == 0, installed.stderr
    assert files_under(home) - before == {unit_path}
    assert f"ExecStart={ccmitmd()} --config" in unit_path.read_text()
    changes = [c[2:] for c in logged_calls(home) if c[0] == "systemctl" and c[2] != "show"]
    assert changes == [["daemon-reload"], ["enable", "--now", UNIT_NAME]]

    removed = run_ccctl(home, fakebin, "uninstall")
    assert removed.returncode == 0, removed.stderr
    assert files_under(home) == before
    assert ["systemctl", "--user", "disable", "--now", UNIT_NAME] in logged_calls(home)


def test_ccctl_without_a_user_manager_says_so_and_exits_non_zero(home: Path, fakebin: Path) -> None:
    before = files_under(home)
    result = run_ccctl(home, fakebin, "install", FAKE_NO_BUS="1")
    assert result.returncode == 1
    assert "no service manager is reachable" in result.stderr
    assert "Failed to connect to bus" in result.stderr
    assert "installed:" not in result.stdout
    assert files_under(home) == before

    dry = run_ccctl(home, fakebin, "install", "--dry-run", FAKE_NO_BUS="1")
    assert dry.returncode == 0, dry.stderr
    assert "would run systemctl --user enable --now ccmitm.service" in dry.stdout
    assert "would stop before changing anything" in dry.stderr
    assert files_under(home) == before
