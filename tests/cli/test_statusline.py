"""`ccctl statusline`: the line from a session reply, templates, colour, stdin, and what it imports."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ccmitm.cli import statusline
from ccmitm.cli.locate import control_socket
from ccmitm.cli.statusline import DEFAULT_FORMAT, FIELDS, fields, parse, read_session, render, use_color


def reply(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "session": "s1",
        "known": True,
        "calls": {"zai": 3, "anthropic": 5},
        "last_lane": "zai",
        "last_at": "2026-01-01T00:00:00+00:00",
        "errors": 0,
        "offloaded_calls": 3,
        "offloaded_tokens": 12345,
        "saved_usd": 0.0412,
        "default_lane": "anthropic",
        "paused": False,
        "paused_source": "config",
        "lanes": [],
        "config_error": None,
    }
    base.update(overrides)
    return base


def plain(data: dict[str, Any], template: str = DEFAULT_FORMAT, session: dict[str, Any] | None = None) -> str:
    return render(template, fields(data, session or {}, color=False))


def test_the_default_line() -> None:
    assert plain(reply()) == "ccmitm zai · zai 3 anthropic 5 · 12.3k tok off · ~$0.04 saved"


def test_state_the_user_must_know_comes_last() -> None:
    lanes = [
        {
            "lane": "zai",
            "state": "held",
            "cls": "quota",
            "until": "2020-01-01T17:15:00+00:00",
            "words": "quota",
        },
        {"lane": "glm", "state": "breaker", "cls": None, "until": None, "words": "breaker open"},
        {"lane": "z2", "state": "unavailable", "cls": None, "until": None, "words": "ZAI_API_KEY is not set"},
        {"lane": "z3", "state": "quota", "cls": "quota", "until": None, "words": "week quota used up"},
    ]
    line = plain(reply(paused=True, lanes=lanes, config_error="bad key", saved_usd=None))
    assert line.startswith("ccmitm zai · zai 3 anthropic 5 · 12.3k tok off · paused · zai held: quota until ")
    assert line.endswith(
        " · glm breaker open · z2: ZAI_API_KEY is not set · z3 week quota used up · config rejected (`ccctl status`)"
    )
    assert " ·  · " not in line  # the empty savings left no dangling separator


def test_no_calls_yet_and_a_refused_last_call() -> None:
    empty = reply(calls={}, last_lane=None, offloaded_tokens=0, saved_usd=None, known=False)
    assert plain(empty) == "ccmitm - · no calls yet · 0 tok off"
    refused = reply(calls={"refused": 1}, last_lane=None)
    assert plain(refused, "{lane}") == "refused"


def test_templates_take_fields_and_leave_unknown_names_and_format_tricks_alone() -> None:
    session = {
        "session_id": "abcdef0123456789",
        "model": {"display_name": "Opus"},
        "cost": {"total_cost_usd": 1.5},
    }
    template = "{model} {session} {cost} {tokens} {usd} {nope} {lane.__class__} {{lane}}"
    assert (
        plain(reply(), template, session) == "Opus abcdef01 1.50 12.3k 0.0412 {nope} {lane.__class__} {zai}"
    )
    assert plain(reply(), "first\nsecond") == "first"


def test_small_savings_are_not_shown_as_zero() -> None:
    assert plain(reply(saved_usd=0.00011), "{saved}") == "~<$0.01 saved"
    assert plain(reply(saved_usd=0.0), "{saved}") == "~$0 saved"
    assert plain(reply(saved_usd=12.345), "{saved}") == "~$12.35 saved"


def test_help_lists_every_field() -> None:
    out = io.StringIO()
    assert statusline.run(["--help"], out=out) == 0
    for name in FIELDS:
        assert "{" + name + "}" in out.getvalue()


def test_colour_only_on_the_lane_and_the_state() -> None:
    values = fields(reply(paused=True), {}, color=True)
    assert values["lane"] == "\033[32mzai\033[0m"  # an offload lane in green
    assert values["state"] == " · \033[33mpaused\033[0m"
    assert "\033[" not in values["calls"]


@pytest.mark.parametrize(
    ("choice", "environ", "expected"),
    [
        ("auto", {}, True),  # Claude Code pipes stdout yet renders ANSI: a tty check would say no
        ("auto", {"NO_COLOR": "1"}, False),
        ("auto", {"NO_COLOR": ""}, True),  # no-color.org: only a non-empty value counts
        ("auto", {"TERM": "dumb"}, False),
        ("always", {"NO_COLOR": "1"}, True),
        ("never", {}, False),
    ],
)
def test_when_colour(choice: str, environ: dict[str, str], expected: bool) -> None:
    assert use_color(choice, environ) is expected


def test_parse_options_and_refusals() -> None:
    assert parse(["--format={lane}", "--color", "never"])["format"] == "{lane}"
    assert parse(["install", "--force"])["action"] == "install" and parse(["install", "--force"])["force"]
    for bad in (["--color", "sometimes"], ["--format"], ["--what"]):
        with pytest.raises(statusline.UsageError):
            parse(bad)


def test_a_bad_argument_still_prints_a_line_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    out = io.StringIO()
    assert statusline.run(["--nope"], out=out) == 0
    assert out.getvalue() == "ccmitm: ?\n"
    assert "unknown argument" in capsys.readouterr().err


def pipe_with(data: bytes, close: bool = True) -> io.TextIOWrapper:
    read_fd, write_fd = os.pipe()
    os.write(write_fd, data)
    if close:
        os.close(write_fd)
    stream = io.TextIOWrapper(os.fdopen(read_fd, "rb"))
    stream._keep = write_fd  # type: ignore[attr-defined]
    return stream


def test_read_session_from_a_pipe() -> None:
    assert read_session(pipe_with(b'{"session_id": "x"}'))["session_id"] == "x"
    assert read_session(pipe_with(b"not json")) == {}
    assert read_session(pipe_with(b"[1, 2]")) == {}
    assert read_session(pipe_with(b"")) == {}


def test_read_session_does_not_wait_for_a_writer_that_never_closes() -> None:
    # A complete document is enough; a partial one is given up after the bounded wait.
    assert read_session(pipe_with(b'{"session_id": "y"}', close=False), wait_s=5)["session_id"] == "y"
    assert read_session(pipe_with(b'{"session_id": ', close=False), wait_s=0.1) == {}


def test_the_socket_is_found_without_the_config_model(tmp_path: Path) -> None:
    environ = {
        "HOME": str(tmp_path),
        "XDG_RUNTIME_DIR": str(tmp_path),
        "XDG_CONFIG_HOME": str(tmp_path / "c"),
    }
    default = tmp_path / "ccmitm" / "control.sock"
    assert control_socket(None, environ) == default  # no config file
    config = tmp_path / "config.yaml"
    config.write_text("proxy:\n  port: 9999\n")
    assert control_socket(str(config), environ) == default
    config.write_text("control:\n  socket: ~/run/ctl.sock\n")
    assert control_socket(str(config), environ) == tmp_path / "run" / "ctl.sock"
    config.write_text("control: {socket: null}\n")
    assert control_socket(str(config), environ) == default
    config.write_text("socket: [unclosed\n")
    assert control_socket(str(config), environ) == default


HEAVY = ("pydantic", "mitmproxy", "click", "rich", "yaml", "ruamel", "apscheduler", "watchdog", "httpx")

PROBE = """
import json, sys
sys.argv = ["ccctl", *json.loads(sys.argv[1])]
from ccmitm.cli.entry import main
try:
    main()
except SystemExit:
    pass
with open(OUT, "w") as handle:
    json.dump(sorted(sys.modules), handle)
"""


def modules_loaded_by(args: list[str], tmp_path: Path) -> set[str]:
    """The modules `ccctl ARGS` imports (run in a fresh interpreter, no daemon answering)."""
    out = tmp_path / "modules.json"
    env = {
        **os.environ,
        "HOME": str(tmp_path),
        "XDG_RUNTIME_DIR": str(tmp_path),
        "XDG_CONFIG_HOME": str(tmp_path / "c"),
        "XDG_STATE_HOME": str(tmp_path / "s"),
    }
    env.pop("CCMITM_CONFIG", None)
    subprocess.run(
        [sys.executable, "-c", PROBE.replace("OUT", repr(str(out))), json.dumps(args)],
        input=json.dumps({"session_id": "s"}),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return {
        name.split(".")[0] if not name.startswith("ccmitm") else name for name in json.loads(out.read_text())
    }


def test_statusline_imports_nothing_heavy(tmp_path: Path) -> None:
    loaded = modules_loaded_by(["statusline"], tmp_path)
    assert "ccmitm.cli.statusline" in loaded
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))
    assert "ccmitm.config.model" not in loaded and "importlib.metadata" not in loaded


@pytest.mark.parametrize("command", [["status"], ["pause"], ["resume"], ["top", "--once"]])
def test_the_daemon_commands_do_not_load_the_config_model(command: list[str], tmp_path: Path) -> None:
    loaded = modules_loaded_by(command, tmp_path)
    assert "ccmitm.cli.control" in loaded
    assert loaded.isdisjoint({"pydantic", "mitmproxy", "yaml", "apscheduler", "watchdog", "httpx"})
    # Only the module of the command that runs: not the report, service or config editing code.
    assert not {"ccmitm.cli.report", "ccmitm.cli.service", "ccmitm.cli.config", "ccmitm.cli.wiring"} & loaded


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["statusline"], (None, ["statusline"])),
        (
            ["--config", "c.yaml", "statusline", "--color", "never"],
            ("c.yaml", ["statusline", "--color", "never"]),
        ),
        (["--config=c.yaml", "statusline"], ("c.yaml", ["statusline"])),
        (["status", "--json"], (None, ["status", "--json"])),
    ],
)
def test_the_entry_point_finds_statusline_behind_a_global_config(argv: list[str], expected: tuple) -> None:
    from ccmitm.cli.entry import _global_config

    assert _global_config(argv) == expected


def test_an_ascii_only_stdout_still_gets_the_line() -> None:
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="ascii")
    statusline._emit(out, "ccmitm zai · zai 1")
    assert raw.getvalue() == b"ccmitm zai ? zai 1\n"
    out.close()
    statusline._emit(out, "after close")  # a closed stream: nothing, no exception


def test_control_characters_from_the_daemon_or_claude_code_never_reach_the_terminal() -> None:
    hostile = reply(
        last_lane="z\033[2Jai",
        calls={"z\033[2Jai": 1},
        lanes=[{"lane": "z\x07", "state": "held", "cls": "quota\r", "until": None, "words": "x"}],
    )
    line = plain(hostile, DEFAULT_FORMAT + " {model}", {"model": {"display_name": "Op\x1bus"}})
    assert "\033" not in line and "\x07" not in line and "\r" not in line
