"""Bench section: how long each everyday ccctl command takes, next to a bare ``python -c pass``.

A command's wall time is mostly interpreter start plus imports (the daemon answers in about a
millisecond), so the bare start on the same machine is the yardstick: `ccctl statusline` should
stay within 2.5x of it (Claude Code waits for it after every answer), the others within 4x. The
commands run interleaved in rounds with a rotated order, like every other section.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping
from typing import Any

from stats import rotated

BARE = "python -c pass"
#: name -> (ccctl arguments, target ratio to the bare start)
COMMANDS: dict[str, tuple[list[str], float]] = {
    "statusline": (["statusline"], 2.5),
    "status": (["status"], 4.0),
    "status --json": (["status", "--json"], 4.0),
    "pause": (["pause"], 4.0),
    "resume": (["resume"], 4.0),
    "env": (["env", "--shell", "bash"], 4.0),
    "top --once": (["top", "--once"], 4.0),
}
SESSION_JSON = json.dumps({"session_id": "bench-session", "model": {"display_name": "Haiku"}})


def _wall_ms(argv: list[str], env: Mapping[str, str], stdin: str | None) -> float:
    start = time.perf_counter()
    subprocess.run(
        argv,
        env=dict(env),
        input=stdin,
        text=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=60,
        check=False,
    )
    return (time.perf_counter() - start) * 1000


def cli_startup(env: Mapping[str, str], ccctl: str, rounds: int, warm_up: bool = True) -> dict[str, Any]:
    """Median wall time of each command against the running daemon (``env`` points ccctl at it)."""
    runs: dict[str, tuple[list[str], str | None]] = {BARE: ([sys.executable, "-c", "pass"], None)}
    for name, (args, _) in COMMANDS.items():
        runs[name] = ([ccctl, *args], SESSION_JSON if name == "statusline" else None)
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for argv, stdin in runs.values() if warm_up else ():  # warm the page cache and .pyc files once
        _wall_ms(argv, env, stdin)
    for round_no in range(rounds):
        for name in rotated(list(runs), round_no):
            argv, stdin = runs[name]
            samples[name].append(_wall_ms(argv, env, stdin))
    bare = statistics.median(samples[BARE])
    commands = {}
    for name, (_, target) in COMMANDS.items():
        median = statistics.median(samples[name])
        commands[name] = {
            "median_ms": round(median, 1),
            "vs_bare": round(median / bare, 2),
            "target": target,
            "met": median / bare <= target,
        }
    return {"rounds": rounds, "bare_ms": round(bare, 1), "commands": commands}
