"""A package install is a whole install: `ccctl config init`, `ccctl logrotate`, declared imports.

The fresh-venv installs (pip, pipx) are in tests/e2e/test_package_install.py; these are the fast
checks of what they rely on.
"""

from __future__ import annotations

import ast
import re
import shutil
import stat
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from click.testing import CliRunner

from ccmitm.cli.main import main as ccctl_main
from ccmitm.config.doc import render_example
from ccmitm.config.load import check_file
from ccmitm.install import logrotate as logrotate_file
from ccmitm.logs.daemonlog import DAEMON_LOG
from ccmitm.logs.usage import USAGE_FILE
from tests.helpers import REPO_ROOT

PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


def ccctl(*args: str, env: dict[str, str] | None = None) -> object:
    return CliRunner().invoke(ccctl_main, list(args), env=env)


# --- ccctl config init -----------------------------------------------------------------------------
def test_config_init_writes_the_example_0600_and_never_overwrites_without_force(tmp_path: Path) -> None:
    path = tmp_path / "new" / "config.yaml"
    result = ccctl("--config", str(path), "config", "init")
    assert result.exit_code == 0, result.output
    assert path.read_text() == render_example()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700  # a dir it created is private
    assert check_file(path) is None  # the example is a valid config as it stands
    assert f"wrote {path}" in result.output

    path.write_text("proxy: {port: 9082}\n")
    result = ccctl("--config", str(path), "config", "init")
    assert result.exit_code == 1
    assert "exists; not overwritten" in result.output and "--force" in result.output
    assert path.read_text() == "proxy: {port: 9082}\n"

    path.chmod(0o644)
    result = ccctl("--config", str(path), "config", "init", "--force")
    assert result.exit_code == 0, result.output
    assert path.read_text() == render_example() and stat.S_IMODE(path.stat().st_mode) == 0o600


def test_config_init_leaves_an_existing_dir_as_it_is(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    result = ccctl("--config", str(tmp_path / "c.yaml"), "config", "init")
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o755  # --config may point anywhere


def test_config_init_uses_the_default_config_path(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path / "xdg"), "CCMITM_CONFIG": ""}
    result = ccctl("config", "init", env=env)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "xdg" / "ccmitm" / "config.yaml").read_text() == render_example()


# --- ccctl logrotate -------------------------------------------------------------------------------
def _directives(text: str) -> list[str]:
    """The block after the file names, without the line that names this install's ccctl."""
    body = text.split(" {\n", 1)[1]
    return [line for line in body.splitlines() if "reopen-logs" not in line]


def test_the_repository_logrotate_file_is_the_templates_rendering() -> None:
    text = logrotate_file.repository_copy(USAGE_FILE, DAEMON_LOG)
    assert (REPO_ROOT / "logrotate" / "ccmitm").read_text() == text, (
        "logrotate/ccmitm is stale: run `make docs`"
    )
    assert not re.search(r"@[A-Z_]+@", text)
    assert "copytruncate" not in _directives(text)  # named in a comment, never used


def test_ccctl_logrotate_prints_this_installs_paths(tmp_path: Path) -> None:
    logs = tmp_path / "my logs"
    config = tmp_path / "config.yaml"
    config.write_text(f"logs: {{dir: '{logs}'}}\n")
    env = {"XDG_STATE_HOME": str(tmp_path / "state")}
    result = ccctl("--config", str(config), "logrotate", env=env)
    assert result.exit_code == 0, result.output
    text = result.output
    assert not re.search(r"@[A-Z_]+@", text)
    # A path with a space is quoted, so logrotate reads it as one file.
    assert f'"{logs / USAGE_FILE}" {tmp_path / "state" / "ccmitm" / DAEMON_LOG} {{' in text
    assert f"--config {config} reopen-logs" in text and "~" not in "".join(_directives(text))
    assert f"{tmp_path / 'state' / 'ccmitm' / 'logrotate.status'}" in text
    # The same directives as the repository's copy: one template, only the paths differ.
    repository = logrotate_file.repository_copy(USAGE_FILE, DAEMON_LOG)
    assert _directives(text) == _directives(repository)
    assert "ccctl reopen-logs" in repository and "~/.local/state/ccmitm/logs/usage.jsonl" in repository


@pytest.mark.skipif(shutil.which("logrotate") is None, reason="logrotate is not installed")
def test_logrotate_itself_accepts_the_rendered_file(tmp_path: Path) -> None:
    logs = tmp_path / "logs dir"
    logs.mkdir()
    (logs / USAGE_FILE).write_text("{}\n")
    conf = tmp_path / "ccmitm.logrotate"
    conf.write_text(
        logrotate_file.for_install(
            logs / USAGE_FILE, tmp_path / DAEMON_LOG, tmp_path / "config.yaml", tmp_path, ccctl="/bin/true"
        )
    )
    conf.chmod(0o644)
    # -d: debug, implies dry run (nothing rotated, no script run); it still parses every line.
    result = subprocess.run(
        ["logrotate", "-d", "--state", str(tmp_path / "status"), str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "error" not in result.stderr.lower(), result.stderr
    assert str(logs / USAGE_FILE) in result.stderr


# --- every imported package is declared ------------------------------------------------------------
def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(requirement: str) -> str:
    return _normal(re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0])


def _optional(tree: ast.AST) -> set[int]:
    """The import statements inside ``try: … except ImportError``: optional by construction."""
    guarded: set[int] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Try):
            continue
        caught = {ast.unparse(h.type) for h in node.handlers if h.type is not None}
        if caught & {"ImportError", "ModuleNotFoundError"}:
            guarded |= {id(inner) for stmt in node.body for inner in ast.walk(stmt)}
    return guarded


def _third_party_imports(root: Path) -> dict[str, str]:
    """Top-level module -> the first file importing it, for every absolute import under ``root``
    (lazy ones in functions too) that is neither the standard library nor ccmitm or the tests,
    nor a script's sibling module (tests/bench), nor guarded by ``except ImportError``."""
    found: dict[str, str] = {}
    for path in sorted(root.rglob("*.py")):
        if "node_modules" in path.parts:
            continue
        tree = ast.parse(path.read_text(), str(path))
        optional = _optional(tree)
        for node in ast.walk(tree):
            if id(node) in optional:
                continue
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".", 1)[0]
                if top in sys.stdlib_module_names or top in ("ccmitm", "tests", "__future__"):
                    continue
                if (path.parent / f"{top}.py").exists():  # a script's own module beside it
                    continue
                found.setdefault(top, str(path.relative_to(REPO_ROOT)))
    return found


def _undeclared(root: Path, declared: set[str]) -> list[str]:
    distributions = packages_distributions()
    missing = []
    for module, where in sorted(_third_party_imports(root).items()):
        provided_by = {_normal(dist) for dist in distributions.get(module, [module])}
        if not provided_by & declared:
            missing.append(f"{module} (imported in {where}; from {', '.join(sorted(provided_by))})")
    return missing


def test_every_package_the_code_imports_is_a_declared_dependency() -> None:
    declared = {_requirement_name(r) for r in PYPROJECT["project"]["dependencies"]}
    assert _undeclared(REPO_ROOT / "daemon", declared) == []


def test_every_package_the_tests_import_is_declared_with_the_test_extras() -> None:
    project = PYPROJECT["project"]
    declared = {_requirement_name(r) for r in project["dependencies"]}
    declared |= {_requirement_name(r) for r in project["optional-dependencies"]["test"]}
    assert _undeclared(REPO_ROOT / "tests", declared) == []


def test_the_check_finds_an_undeclared_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The check must be able to fail: ruamel.yaml imported but not declared is what a fresh pip install once hit.
    monkeypatch.setattr(sys.modules[__name__], "REPO_ROOT", tmp_path)
    (tmp_path / "mod.py").write_text(
        "def f():\n    from ruamel.yaml import YAML\n    import os, yaml\n"
        "try:\n    import tzlocal\nexcept ImportError:\n    tzlocal = None\n"
    )
    missing = _undeclared(tmp_path, {"pyyaml"})
    assert [entry.split(" ", 1)[0] for entry in missing] == ["ruamel"]


def test_the_wheel_ships_license_and_templates() -> None:
    """What pyproject declares as package data and license files exists in the tree."""
    setuptools = PYPROJECT["tool"]["setuptools"]
    assert PYPROJECT["project"]["license-files"] == ["LICENSE"]
    assert (REPO_ROOT / "LICENSE").read_text().startswith("MIT License")
    assert PYPROJECT["project"]["license"] == "MIT"
    for package, patterns in setuptools["package-data"].items():
        folder = REPO_ROOT / setuptools["package-dir"].get(
            package, "daemon/" + package.removeprefix("ccmitm").strip(".").replace(".", "/")
        )
        for pattern in patterns:
            assert list(folder.glob(pattern)), f"{package}: nothing matches {pattern} in {folder}"


def _old_python() -> str | None:
    return next((found for name in ("python3.11", "python3.10") if (found := shutil.which(name))), None)


@pytest.mark.skipif(
    shutil.which("make") is None or _old_python() is None, reason="needs make and a Python older than 3.12"
)
def test_the_makefile_refuses_an_old_python_with_one_clear_line(tmp_path: Path) -> None:
    """With only an old Python on PATH (no pyenv), `make install` names what ccmitm needs."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(REPO_ROOT / name, source / name)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    old = _old_python()
    assert old is not None
    (bin_dir / "python3").symlink_to(old)
    make = shutil.which("make")
    assert make is not None
    result = subprocess.run(
        [make, "-C", str(source), "install"],
        env={"PATH": str(bin_dir), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "ccmitm needs Python 3.12+" in result.stderr, result.stdout + result.stderr
    assert not (source / ".venv").exists()
