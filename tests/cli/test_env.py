"""`ccctl env` asks the running daemon instead of validating the config: the same lines either way,
no config model loaded when the daemon's answer holds, and the file itself when it does not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ccmitm import paths
from ccmitm.config.load import load
from ccmitm.control.client import call
from tests.cli.test_statusline import modules_loaded_by
from tests.helpers import Daemon, wait_for

#: What only validating the config file loads.
CONFIG_MODEL = {"pydantic", "ccmitm.config.model", "ccmitm.config.load"}
CORP_PROXY = "http://corp.example:3128"


def env_output(daemon: Daemon, *args: str, env: dict[str, str] | None = None) -> tuple[str, str]:
    result = daemon.ccctl("env", "--shell", "bash", *args, env=env, check=True)
    return result.stdout, result.stderr


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("args", "env"),
    [
        ((), None),
        (("--reverse",), None),
        (("--subagent",), None),
        ((), {"HTTPS_PROXY": CORP_PROXY}),  # the note on the user's own proxy, on stderr
    ],
    ids=["intercept", "reverse", "subagent", "previous-proxy"],
)
def test_the_daemons_answer_prints_what_the_file_would(
    make_daemon, args: tuple[str, ...], env: dict[str, str] | None
) -> None:
    def mutate(config: dict) -> None:
        config["proxy"]["upstream_proxy"] = "http://upstream.example:8080"

    daemon = make_daemon(mutate)
    answered = env_output(daemon, *args, env=env)
    daemon.stop()
    validated = env_output(daemon, *args, env=env)
    assert answered == validated
    assert str(daemon.port if "--reverse" not in args else daemon.reverse_port) in answered[0]
    if env:
        assert "proxy.upstream_proxy (http://upstream.example:8080)" in answered[1]


@pytest.mark.e2e
def test_env_skips_the_config_model_only_while_the_daemon_answers(daemon: Daemon, tmp_path: Path) -> None:
    loaded = modules_loaded_by(["env", "--shell", "bash"], tmp_path, daemon.env())
    assert "ccmitm.cli.wiring" in loaded
    assert not CONFIG_MODEL & loaded, sorted(CONFIG_MODEL & loaded)
    daemon.stop()
    assert modules_loaded_by(["env", "--shell", "bash"], tmp_path, daemon.env()) >= CONFIG_MODEL


@pytest.mark.e2e
def test_a_file_the_daemon_does_not_serve_is_validated(daemon: Daemon, tmp_path: Path) -> None:
    """A rejected reload keeps the old config serving: env must say what the file says (here:
    that it is invalid, so the last good config), as it did before it asked the daemon."""
    before = env_output(daemon)[0]
    assert str(daemon.port) in before
    good = daemon.config_path.read_text()
    daemon.config_path.write_text(good.replace("lane: zai", "lane: zia"))
    wait_for(lambda: "reload (file change) rejected" in daemon.stderr(), what="rejection")
    out, err = env_output(daemon)
    assert "using the last good config" in err and "routing.rules[0].lane" in err
    assert str(daemon.port) in out  # the last good config is the one the daemon still serves
    assert modules_loaded_by(["env", "--shell", "bash"], tmp_path, daemon.env()) >= CONFIG_MODEL


@pytest.mark.e2e
def test_another_home_is_validated(daemon: Daemon, tmp_path: Path) -> None:
    """~ in the config means the daemon's HOME to the daemon: another HOME gets its own answer."""
    other = {**daemon.env(), "HOME": str(tmp_path / "elsewhere")}
    assert modules_loaded_by(["env", "--shell", "bash"], tmp_path, other) >= CONFIG_MODEL


@pytest.mark.e2e
def test_the_wiring_reply_describes_the_file_and_carries_no_secret(daemon: Daemon) -> None:
    reply = call(daemon.socket_path, "wiring", timeout=10)
    config = load(daemon.config_path, {"HOME": str(daemon.home)}).config
    assert (reply["host"], reply["port"], reply["reverse_port"], reply["confdir"]) == (
        config.proxy.host,
        config.proxy.port,
        config.proxy.reverse_port,
        config.proxy.confdir,
    )
    assert reply["config_source"] == str(daemon.config_path)
    assert reply["config_digest"] == load(daemon.config_path).digest
    assert reply["token_file"] == str(daemon.token_path) and isinstance(reply["client_auth"], bool)
    token = daemon.token
    assert token is None or token not in json.dumps(reply)


def test_the_digest_is_of_the_files_bytes_and_line_ends_do_not_change_the_config(tmp_path: Path) -> None:
    unix, dos = tmp_path / "unix.yaml", tmp_path / "dos.yaml"
    text = "proxy:\n  port: 9001\n  reverse_port: null\n"
    unix.write_bytes(text.encode())
    dos.write_bytes(text.replace("\n", "\r\n").encode())
    assert load(unix).digest == paths.file_digest(unix.read_bytes())
    assert load(dos).digest == paths.file_digest(dos.read_bytes()) != load(unix).digest
    assert load(dos).config == load(unix).config and load(unix).config.proxy.port == 9001
    assert load(tmp_path / "absent.yaml").digest is None  # the built-in defaults
