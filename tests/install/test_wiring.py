"""install/wiring.py: wiring then unwiring gives back exactly the environment there was, whatever
it held; the record of "before" survives re-wiring; the combined bundle and the proxy note."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ccmitm.install import shell, wiring

NAMES = [
    "HTTPS_PROXY",
    "NODE_EXTRA_CA_CERTS",
    "ANTHROPIC_BASE_URL",
    wiring.CUSTOM_HEADERS,
    *wiring.SUBAGENT_VARIABLES,
    "OTHER",
]
TOKEN = "planted-client-token-0123456789abcdef"


def listener(tmp: Path, token: str | None = None) -> wiring.Listener:
    return wiring.Listener(
        "127.0.0.1", 8082, 8083, tmp / "mitm" / "mitmproxy-ca-cert.pem", tmp / "state", token
    )


environments = st.dictionaries(st.sampled_from(NAMES), st.text(max_size=12), max_size=len(NAMES))
steps = st.lists(st.tuples(st.sampled_from(["intercept", "reverse"]), st.booleans()), min_size=1, max_size=4)


@settings(max_examples=150, deadline=None)
@given(environ=environments, wirings=steps)
def test_unwiring_gives_back_exactly_what_was_there(tmp_path_factory, environ, wirings) -> None:
    where = listener(tmp_path_factory.mktemp("w"), TOKEN)
    current = dict(environ)
    for mode, subagent in wirings:
        current = wiring.apply(current, wiring.wire(current, where, mode, subagent))
        assert wiring.is_wired(current)
        assert wiring.original(current) == environ
    assert wiring.apply(current, wiring.unwire(current)) == environ


def test_the_wiring_sets_what_each_mode_needs(tmp_path: Path) -> None:
    where = listener(tmp_path)
    wired = wiring.apply(
        {"HTTPS_PROXY": "http://corp:3128"},
        wiring.wire({"HTTPS_PROXY": "http://corp:3128"}, where, "intercept", True),
    )
    assert wired["HTTPS_PROXY"] == "http://127.0.0.1:8082"
    assert wired["NODE_EXTRA_CA_CERTS"] == str(where.ca_cert)
    assert wired["CLAUDE_CODE_SUBAGENT_MODEL"] == "haiku"
    assert (wired[wiring.HOST], wired[wiring.PORT], wired[wiring.MODE]) == ("127.0.0.1", "8082", "intercept")
    reverse = wiring.apply(wired, wiring.wire(wired, where, "reverse", False))
    assert reverse["HTTPS_PROXY"] == "http://corp:3128"  # not for the loopback http listener
    assert reverse["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:8083" and reverse[wiring.PORT] == "8083"
    assert "CLAUDE_CODE_SUBAGENT_MODEL" not in reverse and "NODE_EXTRA_CA_CERTS" not in reverse


def test_unwiring_what_was_not_wired_changes_nothing() -> None:
    assert wiring.unwire({"HTTPS_PROXY": "http://corp:3128"}) == {}


def test_reverse_needs_the_reverse_listener(tmp_path: Path) -> None:
    off = wiring.Listener("127.0.0.1", 8082, None, tmp_path / "ca.pem", tmp_path)
    with pytest.raises(ValueError, match="reverse listener is off"):
        wiring.wire({}, off, "reverse", False)


def test_the_combined_bundle(tmp_path: Path) -> None:
    where = listener(tmp_path)
    where.ca_cert.parent.mkdir()
    where.ca_cert.write_text("MITM CA\n")
    mine = tmp_path / "corp.pem"
    mine.write_text("CORP CA")
    wired = wiring.apply({}, wiring.wire({"NODE_EXTRA_CA_CERTS": str(mine)}, where, "intercept", False))
    bundle = Path(wired["NODE_EXTRA_CA_CERTS"])
    assert bundle == where.state_dir / wiring.BUNDLE_NAME
    assert bundle.read_text() == "CORP CA\nMITM CA\n"
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o644
    before = bundle.stat().st_ino
    wiring.combined_bundle(mine, where.ca_cert, where.state_dir)
    assert bundle.stat().st_ino == before, "unchanged sources: the file is left alone"
    where.ca_cert.write_text("NEW MITM CA\n")
    wiring.combined_bundle(mine, where.ca_cert, where.state_dir)
    assert bundle.read_text() == "CORP CA\nNEW MITM CA\n"
    # A bundle that is not there (or is ccmitm's own CA) is not combined.
    for value in (str(tmp_path / "missing.pem"), str(where.ca_cert)):
        wired = wiring.apply({}, wiring.wire({"NODE_EXTRA_CA_CERTS": value}, where, "intercept", False))
        assert wired["NODE_EXTRA_CA_CERTS"] == str(where.ca_cert)


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("http://user:secret@corp.example:3128", "http://corp.example:3128"),
        ("corp.example:8080", "http://corp.example:8080"),
        ("http://127.0.0.1:8082", None),  # ccmitmd itself
        ("", None),
    ],
)
def test_previous_proxy_is_shown_without_credentials(tmp_path: Path, value: str, shown: str | None) -> None:
    assert wiring.previous_proxy({"HTTPS_PROXY": value}, listener(tmp_path)) == shown


def test_the_printed_lines_never_hold_a_value_of_the_users(tmp_path: Path) -> None:
    """A proxy URL may hold a password: wiring and unwiring name the variables, never print them."""
    where = listener(tmp_path)
    secret = "http://me:pr0xy-passw0rd@corp.example:3128"
    environ = {"HTTPS_PROXY": secret, "CLAUDE_CODE_SUBAGENT_MODEL": "opus"}
    printed = wiring.symbolic(environ, wiring.wire(environ, where, "intercept", True))
    assert printed[wiring.PREV + "HTTPS_PROXY"] == wiring.Ref("HTTPS_PROXY")
    wired = wiring.apply(environ, wiring.wire(environ, where, "intercept", True))
    restore = wiring.symbolic(wired, wiring.unwire(wired))
    assert restore["HTTPS_PROXY"] == wiring.Ref(wiring.PREV + "HTTPS_PROXY")
    for lines in (printed, restore):
        assert secret not in repr(lines) and "opus" not in repr(lines)


values = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=10)
shell_environments = st.dictionaries(st.sampled_from(NAMES), values, max_size=len(NAMES))


@pytest.mark.parametrize("name", ["bash", "zsh", "fish"])
@settings(max_examples=25, deadline=None)
@given(environ=shell_environments, wirings=steps)
def test_the_printed_lines_do_the_same_in_a_real_shell(
    tmp_path_factory, name: str, environ: dict[str, str], wirings
) -> None:
    """What the shell makes of the printed lines (references included) is what the model says."""
    binary = shutil.which(name)
    if binary is None:
        pytest.skip(f"{name} is not installed (.ci/run installs it)")
    dialect: shell.Dialect = "fish" if name == "fish" else "sh"
    where = listener(tmp_path_factory.mktemp("w"), TOKEN)
    current, lines = dict(environ), []
    for mode, subagent in wirings:
        changes = wiring.wire(current, where, mode, subagent)
        lines += shell.assignments(wiring.symbolic(current, changes), dialect)
        current = wiring.apply(current, changes)
    lines += shell.assignments(wiring.symbolic(current, wiring.unwire(current)), dialect)
    dump = f"{sys.executable} -c 'import os,json;print(json.dumps(dict(os.environ)))'"
    result = subprocess.run(
        [binary, "-c", "\n".join([*lines, dump])],
        env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", **environ},  # fish reads bytes by locale
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert {k: v for k, v in seen.items() if k in NAMES or k.startswith("_CCMITM_")} == environ


# --- the client token -------------------------------------------------------------------------
def test_the_token_goes_into_the_proxy_url_or_the_custom_headers(tmp_path: Path) -> None:
    where = listener(tmp_path, TOKEN)
    intercept = wiring.apply({}, wiring.wire({}, where, "intercept", False))
    assert intercept["HTTPS_PROXY"] == f"http://ccmitm:{TOKEN}@127.0.0.1:8082"
    assert wiring.CUSTOM_HEADERS not in intercept
    reverse = wiring.apply({}, wiring.wire({}, where, "reverse", False))
    assert reverse[wiring.CUSTOM_HEADERS] == f"x-ccmitm-token: {TOKEN}"
    assert "HTTPS_PROXY" not in reverse
    # Our own wired URL is not "the user's previous proxy".
    assert wiring.previous_proxy({"HTTPS_PROXY": intercept["HTTPS_PROXY"]}, where) is None
    # Without a token (proxy.client_auth off): the old URLs, the user's headers untouched.
    users = {wiring.CUSTOM_HEADERS: "a: b"}
    plain = wiring.apply(users, wiring.wire(users, listener(tmp_path), "reverse", False))
    assert plain[wiring.CUSTOM_HEADERS] == "a: b"


@pytest.mark.parametrize("name", ["bash", "zsh", "fish"])
def test_the_users_custom_headers_are_kept_and_never_printed(tmp_path: Path, name: str) -> None:
    """Reverse mode appends the token's line to the user's ANTHROPIC_CUSTOM_HEADERS (which may hold
    a credential of theirs): by reference in the printed lines, and a real shell gets both lines."""
    binary = shutil.which(name)
    if binary is None:
        pytest.skip(f"{name} is not installed (.ci/run installs it)")
    dialect: shell.Dialect = "fish" if name == "fish" else "sh"
    theirs = "X-Team-Secret: it's s3cret\nX-Other: $HOME"
    environ = {wiring.CUSTOM_HEADERS: theirs}
    changes = wiring.wire(environ, listener(tmp_path, TOKEN), "reverse", False)
    lines = shell.assignments(wiring.symbolic(environ, changes), dialect)
    assert "s3cret" not in "\n".join(lines) and TOKEN in "\n".join(lines)
    dump = f"{sys.executable} -c 'import os,json;print(json.dumps(os.environ[\"{wiring.CUSTOM_HEADERS}\"]))'"
    result = subprocess.run(
        [binary, "-c", "\n".join([*lines, dump])],
        env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", **environ},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == f"{theirs}\nx-ccmitm-token: {TOKEN}"
