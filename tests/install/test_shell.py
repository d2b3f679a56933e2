"""The shell text from install/shell.py: the checked-in habits files are current, every text parses
in the shell it is for, and a value of any shape survives the quoting in each real shell."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from ccmitm.install import shell
from tests.helpers import REPO_ROOT

SHELLS = {"bash": "sh", "zsh": "sh", "fish": "fish"}


def need(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (.ci/run installs it)")
    return path


@pytest.mark.parametrize(("path", "dialect"), [("ccmitm.sh", "sh"), ("ccmitm.fish", "fish")])
def test_checked_in_habits_are_current(path: str, dialect: shell.Dialect) -> None:
    text = (REPO_ROOT / "etc" / "shell" / path).read_text()
    assert text == shell.habits(dialect), f"etc/shell/{path} is stale: run `make docs`"


def test_shell_init_prints_the_habits() -> None:
    for name, dialect in SHELLS.items():
        out = subprocess.run(
            [sys.executable, "-m", "ccmitm.cli", "shell", "init", name],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        assert out == shell.habits(dialect)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", list(SHELLS))
def test_every_text_parses_in_its_shell(name: str, tmp_path) -> None:
    dialect: shell.Dialect = SHELLS[name]  # type: ignore[assignment]
    binary = need(name)
    texts = {
        "habits": shell.habits(dialect),
        "guard": "\n".join(shell.guard_function(["/opt/it's here/python", "-m", "ccmitm.cli"], dialect)),
        "remove": "\n".join(shell.remove_guard(dialect)),
    }
    for label, text in texts.items():
        script = tmp_path / f"{label}.{name}"
        script.write_text(text + "\n")
        result = subprocess.run([binary, "-n", str(script)], capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, f"{label}: {result.stderr}"


ODD_VALUES = ["plain", "", "it's", 'say "hi"', "back\\slash\\\\", "$HOME `id` $(id)", "two\nlines", "* ?"]


@pytest.mark.parametrize("name", list(SHELLS))
def test_any_value_survives_the_quoting(name: str) -> None:
    binary = need(name)
    dialect: shell.Dialect = SHELLS[name]  # type: ignore[assignment]
    variables: dict[str, str | None] = {f"CCMITM_T{i}": value for i, value in enumerate(ODD_VALUES)}
    variables["CCMITM_GONE"] = None
    lines = shell.assignments(variables, dialect)
    script = (
        "\n".join(lines) + "\n" + f"{sys.executable} -c 'import os,json;print(json.dumps(dict(os.environ)))'"
    )
    result = subprocess.run(
        [binary, "-c", script],
        env={"PATH": "/usr/bin:/bin", "CCMITM_GONE": "x"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    for key, value in variables.items():
        assert seen.get(key) == value, key
