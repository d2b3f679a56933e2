"""The folder tree is the architecture: each subpackage of ccmitm imports only the ones below it.

The rules (also in docs/architecture.md): the pure core imports nothing of ccmitm but itself and
the config schema; nothing outside cli/ imports cli/; testing/ (fake upstreams, the private-daemon
harness) is imported only by endurance/ and the tests. Function-level imports count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT

PACKAGE = REPO_ROOT / "daemon"

#: Which parts of ccmitm each subpackage may import, besides itself. "ccmitm" is the package's
#: own __init__ (the version), "paths" the top-level paths module.
ALLOWED: dict[str, set[str]] = {
    "paths": set(),
    "config": {"paths"},
    "core": {"config"},
    "logs": {"config", "core", "paths"},
    "control": {"core", "paths"},
    "proxy": {"config", "control", "core", "logs", "paths"},
    "reports": {"ccmitm", "config", "core", "logs", "paths"},
    "install": {"config", "paths"},
    "supervisor": {"ccmitm", "config", "control", "core", "logs", "paths", "proxy", "reports", "telemetry"},
    "telemetry": {"config", "control", "core", "logs", "proxy"},
    "testing": {"core", "paths", "reports"},
    "endurance": {"config", "control", "core", "paths", "reports", "testing"},
    "cli": {"ccmitm", "config", "control", "core", "endurance", "install", "logs", "paths", "reports"},
}


def owner(path: Path) -> str:
    """The subpackage (or top-level module) a file belongs to."""
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def ccmitm_imports(path: Path) -> set[str]:
    """The parts of ccmitm a file imports: ``ccmitm.core.routing`` counts as ``core``."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: relative import; write `from ccmitm.… import …`")
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "ccmitm":
            names = [node.module] if node.module != "ccmitm" else [f"ccmitm.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names if alias.name.split(".")[0] == "ccmitm"]
        for name in names:
            parts = name.split(".")
            found.add(parts[1] if len(parts) > 1 and parts[1] != "__version__" else "ccmitm")
    return found


FILES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE)


def test_every_subpackage_has_rules() -> None:
    assert {owner(path) for path in FILES} == set(ALLOWED)


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_follow_the_layers(path: Path) -> None:
    mine = owner(path)
    forbidden = ccmitm_imports(path) - ALLOWED[mine] - {mine}
    assert not forbidden, f"{path.relative_to(REPO_ROOT)} ({mine}/) must not import {sorted(forbidden)}"


def test_the_rules_say_what_the_design_says() -> None:
    """The three rules the architecture is built on, stated directly on the table."""
    assert ALLOWED["core"] <= {"config"}
    assert all("cli" not in allowed for name, allowed in ALLOWED.items() if name != "cli")
    assert {name for name, allowed in ALLOWED.items() if "testing" in allowed} == {"endurance"}


def test_the_checker_sees_a_forbidden_import(tmp_path: Path) -> None:
    """The check itself: an import of the proxy from the core would be found, lazy or not."""
    module = tmp_path / "sneaky.py"
    module.write_text("def f():\n    from ccmitm.proxy.addon import Router\n    return Router\n")
    assert ccmitm_imports(module) == {"proxy"}


ARCHITECTURE = (REPO_ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")


def test_the_architecture_page_names_every_module() -> None:
    """docs/architecture.md lists each module with its job; a new or renamed module must appear."""
    for path in FILES:
        if path.name.startswith("__"):
            continue
        assert f"`{path.name}`" in ARCHITECTURE, f"docs/architecture.md does not mention {path.name}"


def test_the_architecture_page_states_these_import_rules() -> None:
    section = ARCHITECTURE.split("## Import rules", 1)[1].split("\n## ", 1)[0]
    stated: dict[str, set[str]] = {}
    for row in section.splitlines():
        cells = [cell.strip() for cell in row.strip().strip("|").split("|")]
        if len(cells) != 2 or not cells[0].startswith("`"):
            continue
        stated[cells[0].strip("`")] = {word.strip("`,") for word in cells[1].split() if word.startswith("`")}
    expected = {name: allowed - {"ccmitm"} for name, allowed in ALLOWED.items() if name != "paths"}
    everything = set(ALLOWED) - {"ccmitm"}
    expected["cli"] = everything - expected["cli"] - {"cli"}  # the page says "everything except …"
    assert stated == expected
