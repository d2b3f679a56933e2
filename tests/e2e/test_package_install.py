"""A package install is a whole install: pip, pipx and uv into fresh dirs, then what a new user runs.

Each test copies the source tree (no .venv, no node_modules) into a temporary dir, installs it
non-editable with the machine's package index as configured (pip's own config and PIP_*), and runs
the installed ccctl with a private HOME and XDG dirs: `config init`, `config check`, `logrotate`,
`service install --dry-run` (which must point at *that* install's ccmitmd), `shell init` where the
command exists. Slow (a real install), so marked `install`; every step has a timeout.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.install, pytest.mark.timeout(1500)]

INSTALL_TIMEOUT_S = 600
STEP_TIMEOUT_S = 60
#: Never copied: local state of a clone that an installer must not need.
IGNORED = shutil.ignore_patterns(
    ".git",
    ".venv",
    "node_modules",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".pytest_cache",
    ".mypy_cache",
)


def source_copy(tmp_path: Path) -> Path:
    """The repository as a fresh clone would have it, somewhere the installer may write (build/)."""
    target = tmp_path / "src"
    shutil.copytree(REPO_ROOT, target, ignore=IGNORED, symlinks=True)
    return target


def clean_env(tmp_path: Path, bin_dirs: Sequence[Path]) -> dict[str, str]:
    """A new user's environment: own HOME and XDG dirs, PATH with only the install and the system.

    PIP_* (the machine's index settings) and the pip cache stay, so the install needs no network
    where the machine has none and repeats fast."""
    home = tmp_path / "home"
    runtime = tmp_path / "run"
    for folder in (home, runtime):
        folder.mkdir(exist_ok=True, mode=0o700)
    env = {
        key: value for key, value in os.environ.items() if key.startswith(("PIP_", "UV_INDEX", "SSL_CERT"))
    }
    env.setdefault("PIP_CACHE_DIR", str(Path.home() / ".cache" / "pip"))
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_STATE_HOME=str(home / ".local" / "state"),
        XDG_RUNTIME_DIR=str(runtime),
        PATH=os.pathsep.join([*map(str, bin_dirs), "/usr/local/bin", "/usr/bin", "/bin"]),
        LANG="C.UTF-8",
    )
    return env


def run(
    args: Sequence[str | Path], env: dict[str, str], timeout: float = STEP_TIMEOUT_S, **kwargs
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], env=env, capture_output=True, text=True, timeout=timeout, **kwargs
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (
        f"{result.args} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    )
    return result.stdout


def tool_venv(tmp_path: Path, *packages: str) -> Path:
    """A venv holding an installer (pipx, uv); skips the test when the index does not have it."""
    venv = tmp_path / "tools"
    if not venv.exists():
        ok(run([sys.executable, "-m", "venv", venv], env=dict(os.environ)))
    result = run(
        [venv / "bin" / "python", "-m", "pip", "install", "--quiet", *packages],
        env=dict(os.environ),
        timeout=INSTALL_TIMEOUT_S,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot install {' '.join(packages)} from the package index: {result.stderr[-300:]}")
    return venv / "bin"


def check_the_install(ccctl: Path, ccmitmd: Path, env: dict[str, str], tmp_path: Path) -> None:
    """What a new user runs after the install, and what each step must give them."""
    assert ccctl.is_file() and ccmitmd.is_file()
    cwd = tmp_path / "home"  # nowhere near a clone
    home = Path(env["HOME"])
    config = home / ".config" / "ccmitm" / "config.yaml"

    # The package carries what ccctl hands out, and the license.
    python = ccmitmd.parent / "python"
    files = ok(
        run(
            [
                python,
                "-c",
                "import importlib.metadata as m; print('\\n'.join(str(f) for f in m.files('ccmitm')))",
            ],
            env,
            cwd=cwd,
        )
    ).splitlines()
    for wanted in (
        "LICENSE",
        "ccmitm/install/logrotate.conf.in",
        "ccmitm/install/templates/linux-systemd/user/ccmitm.service",
        "ccmitm/py.typed",
    ):
        assert any(f.endswith(wanted) for f in files), f"{wanted} is not in the installed package"

    out = ok(run([ccctl, "config", "init"], env, cwd=cwd))
    assert f"wrote {config}" in out
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert "# ccmitm configuration: every key" in config.read_text()
    refused = run([ccctl, "config", "init"], env, cwd=cwd)
    assert refused.returncode == 1 and "not overwritten" in refused.stderr

    assert f"{config}: ok" in ok(run([ccctl, "config", "check", config], env, cwd=cwd))

    rotate = ok(run([ccctl, "logrotate"], env, cwd=cwd))
    assert f"{home}/.local/state/ccmitm/daemon.log" in rotate
    # The postrotate script calls this install's ccctl (in its venv, where ccmitmd is) by full path.
    assert f"{ccmitmd.parent}/ccctl --config {config} reopen-logs" in rotate

    plan = ok(run([ccctl, "service", "install", "--dry-run"], env, cwd=cwd))
    assert "dry run: nothing is written or run" in plan
    assert f"{ccmitmd} --config {config}" in plan, plan  # this install's daemon, not a clone's

    # Without a daemon, the advice names what this user has (never `make run`).
    status = run([ccctl, "status"], env, cwd=cwd)
    assert status.returncode != 0 and "ccctl start" in status.stderr and "make run" not in status.stderr

    # `ccctl shell init` gives a pipx user the shell functions (where this version has it).
    if run([ccctl, "shell", "init", "--help"], env, cwd=cwd).returncode == 0:
        functions = ok(run([ccctl, "shell", "init", "bash"], env, cwd=cwd))
        ok(run(["bash", "-n"], env, cwd=cwd, input=functions))


def test_pip_install_of_the_source_tree_is_a_whole_install(tmp_path: Path) -> None:
    source = source_copy(tmp_path)
    venv = tmp_path / "venv"
    ok(run([sys.executable, "-m", "venv", venv], env=dict(os.environ)))
    env = clean_env(tmp_path, [venv / "bin"])
    ok(
        run(
            [venv / "bin" / "python", "-m", "pip", "install", "--quiet", source],
            env,
            timeout=INSTALL_TIMEOUT_S,
        )
    )
    check_the_install(venv / "bin" / "ccctl", venv / "bin" / "ccmitmd", env, tmp_path)


def test_pipx_install_is_a_whole_install(tmp_path: Path) -> None:
    source = source_copy(tmp_path)
    tools = tool_venv(tmp_path, "pipx")
    bin_dir = tmp_path / "bin"
    env = clean_env(tmp_path, [bin_dir])
    env.update(
        PIPX_HOME=str(tmp_path / "pipx"), PIPX_BIN_DIR=str(bin_dir), PIPX_MAN_DIR=str(tmp_path / "man")
    )
    ok(run([tools / "pipx", "install", "--python", sys.executable, source], env, timeout=INSTALL_TIMEOUT_S))
    venv_bin = tmp_path / "pipx" / "venvs" / "ccmitm" / "bin"
    # ccctl on PATH is pipx's link into its venv; the service must run the venv's ccmitmd.
    check_the_install(bin_dir / "ccctl", venv_bin / "ccmitmd", env, tmp_path)


def test_uv_tool_install_is_a_whole_install(tmp_path: Path) -> None:
    source = source_copy(tmp_path)
    tools = tool_venv(tmp_path, "uv")
    bin_dir = tmp_path / "bin"
    env = clean_env(tmp_path, [bin_dir])
    env.update(
        UV_TOOL_DIR=str(tmp_path / "uvtools"),
        UV_TOOL_BIN_DIR=str(bin_dir),
        UV_CACHE_DIR=str(Path.home() / ".cache" / "uv"),
        UV_PYTHON_DOWNLOADS="never",
    )
    ok(
        run(
            [tools / "uv", "tool", "install", "--python", sys.executable, source],
            env,
            timeout=INSTALL_TIMEOUT_S,
        )
    )
    venv_bin = tmp_path / "uvtools" / "ccmitm" / "bin"
    check_the_install(bin_dir / "ccctl", venv_bin / "ccmitmd", env, tmp_path)


def _old_python() -> str | None:
    for name in ("python3.11", "python3.10", "python3.9"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.mark.skipif(_old_python() is None, reason="no Python older than 3.12 on this machine")
def test_an_old_python_is_told_what_ccmitm_needs(tmp_path: Path) -> None:
    """pip on Python 3.11 used to end with "No matching distribution found for mitmproxy"."""
    source = source_copy(tmp_path)
    venv = tmp_path / "old"
    old = _old_python()
    assert old is not None
    if run([old, "-m", "venv", venv], env=dict(os.environ)).returncode != 0:
        pytest.skip(f"{old} cannot make a venv (no ensurepip)")
    env = clean_env(tmp_path, [venv / "bin"])
    result = run([venv / "bin" / "python", "-m", "pip", "install", source], env, timeout=INSTALL_TIMEOUT_S)
    assert result.returncode != 0
    assert "ccmitm needs Python 3.12+" in result.stdout + result.stderr, result.stdout + result.stderr
