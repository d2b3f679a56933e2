"""Wiring a real shell (bash, zsh, fish) to a private daemon and unwiring it again: the previous
values come back exactly, the user's own CA bundle keeps working next to mitmproxy's CA, the
functions ask the running shell what it is, and `ccctl run` acts by `wiring.when_down`."""

from __future__ import annotations

import datetime
import os
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.helpers import CLIENT_API_KEY, HAIKU, REPO_ROOT, Daemon

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent
HABITS = {"bash": REPO_ROOT / "etc/shell/ccmitm.sh", "zsh": REPO_ROOT / "etc/shell/ccmitm.sh"}
HABITS["fish"] = REPO_ROOT / "etc/shell/ccmitm.fish"
#: Each shell without its user's startup files (the test's HOME is private anyway).
SHELL_ARGV = {
    "bash": ["bash", "--norc", "--noprofile", "-c"],
    "zsh": ["zsh", "-f", "-c"],
    "fish": ["fish", "-N", "-c"],
}
CORP_PROXY = "http://corp-proxy.invalid:3128"


def need(name: str) -> None:
    if shutil.which(name) is None:
        pytest.skip(f"{name} is not installed (.ci/run installs it)")


# --- a CA of the user's own, and a TLS server it signed -------------------------------------------
def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def make_ca(directory: Path) -> tuple[Path, ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("Corp Test Root CA"))
        .issuer_name(_name("Corp Test Root CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    path = directory / "corp-ca.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path, key, cert


def serve_tls(directory: Path, ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate) -> Iterator[int]:
    """A one-line HTTPS server on 127.0.0.1 with a certificate the user's CA signed; yields its port."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = directory / "server.pem", directory / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                raw, _ = listener.accept()
            except TimeoutError:
                continue
            try:
                with context.wrap_socket(raw, server_side=True) as conn:
                    conn.settimeout(5)
                    conn.recv(65536)
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\nConnection: close\r\n\r\ncorp ok")
            except (OSError, ssl.SSLError):
                raw.close()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        listener.close()


@pytest.fixture
def user_ca(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """The user's own CA bundle (a TLS-inspecting network's root) and a server it signed."""
    directory = tmp_path / "corp"
    directory.mkdir()
    path, key, cert = make_ca(directory)
    yield from ((path, port) for port in serve_tls(directory, key, cert))


def fake_claude(directory: Path) -> Path:
    """A `claude` on PATH that shows what it was run with (the guard runs it when the daemon answers)."""
    directory.mkdir(exist_ok=True)
    script = directory / "claude"
    script.write_text(
        '#!/bin/sh\necho "fake-claude proxy=${HTTPS_PROXY:-unset} base=${ANTHROPIC_BASE_URL:-unset} args=$*"\n'
    )
    script.chmod(0o755)
    return directory


def shell_env(daemon: Daemon, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = daemon.env()
    env.pop("NODE_EXTRA_CA_CERTS", None)  # the machine's own; each test says what the user had
    env["PATH"] = f"{fake_claude(tmp_path / 'bin')}:{BIN}:{os.environ['PATH']}"
    env.update(extra)
    return env


def run_shell(name: str, script: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    need(name)
    return subprocess.run(
        [*SHELL_ARGV[name], script], env=env, capture_output=True, text=True, timeout=120, cwd=env["HOME"]
    )


SCRIPTS = {
    "sh": """
        source {habits}
        env | LC_ALL=C sort | grep -v '^_=' > {out}/before
        ccsub >/dev/null 2>{out}/ccsub.err
        echo "intercept $HTTPS_PROXY|$NODE_EXTRA_CA_CERTS|$CLAUDE_CODE_SUBAGENT_MODEL"
        claude -p hi --model haiku
        eval "$(ccctl env --reverse 2>/dev/null)"
        echo "reverse ${{HTTPS_PROXY:-unset}}|$ANTHROPIC_BASE_URL|$NODE_EXTRA_CA_CERTS|$CLAUDE_CODE_SUBAGENT_MODEL"
        claude -p hi --model haiku
        ccstock >/dev/null
        env | LC_ALL=C sort | grep -v '^_=' > {out}/after
        claude -p hi
    """,
    "fish": """
        source {habits}
        env | LC_ALL=C sort | grep -v '^_=' > {out}/before
        ccsub >/dev/null 2>{out}/ccsub.err
        echo "intercept $HTTPS_PROXY|$NODE_EXTRA_CA_CERTS|$CLAUDE_CODE_SUBAGENT_MODEL"
        claude -p hi --model haiku
        ccctl env --reverse 2>/dev/null | source
        echo "reverse "(set -q HTTPS_PROXY; and echo $HTTPS_PROXY; or echo unset)"|$ANTHROPIC_BASE_URL|$NODE_EXTRA_CA_CERTS|$CLAUDE_CODE_SUBAGENT_MODEL"
        claude -p hi --model haiku
        ccstock >/dev/null
        env | LC_ALL=C sort | grep -v '^_=' > {out}/after
        claude -p hi
    """,
}


@pytest.mark.parametrize("name", ["bash", "zsh", "fish"])
def test_wire_and_unwire_restores_exactly_what_was_there(
    name: str, daemon: Daemon, tmp_path: Path, user_ca: tuple[Path, int]
) -> None:
    bundle_of_user, _ = user_ca
    env = shell_env(
        daemon,
        tmp_path,
        HTTPS_PROXY=CORP_PROXY,
        NODE_EXTRA_CA_CERTS=str(bundle_of_user),
        CLAUDE_CODE_SUBAGENT_MODEL="it's opus",  # a value of the user's own, quote included
    )
    dialect = "fish" if name == "fish" else "sh"
    result = run_shell(name, SCRIPTS[dialect].format(habits=HABITS[name], out=tmp_path), env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    combined = daemon.state_dir / "ca-bundle.pem"
    assert lines[0] == f"intercept {daemon.proxy_url}|{combined}|haiku"
    # The guard found the daemon answering and ran the real `claude` (here: the fake one) wired.
    assert lines[1] == f"fake-claude proxy={daemon.proxy_url} base=unset args=-p hi --model haiku"
    # Re-wired in reverse mode (without --subagent): from the original state, so the user's own
    # proxy, CA bundle and subagent model are back; only ANTHROPIC_BASE_URL points at ccmitmd.
    assert lines[2] == f"reverse {CORP_PROXY}|{daemon.reverse_url}|{bundle_of_user}|it's opus"
    assert lines[3] == f"fake-claude proxy={CORP_PROXY} base={daemon.reverse_url} args=-p hi --model haiku"
    # Unwired: the guard is gone (claude is the plain command again) ...
    assert lines[4] == f"fake-claude proxy={CORP_PROXY} base=unset args=-p hi"
    # ... and the environment is exactly what it was.
    assert (tmp_path / "after").read_text() == (tmp_path / "before").read_text()
    assert f"HTTPS_PROXY={CORP_PROXY}" in (tmp_path / "before").read_text()
    # The user was told that their proxy is saved, and how ccmitmd can use it too.
    assert (
        "ccctl config set proxy.upstream_proxy http://corp-proxy.invalid:3128"
        in (tmp_path / "ccsub.err").read_text()
    )


@pytest.mark.parametrize("login_shell", ["/bin/sh", "fish", "/usr/bin/zsh"])
def test_the_functions_ask_the_shell_that_runs_them(login_shell: str, daemon: Daemon, tmp_path: Path) -> None:
    env = shell_env(daemon, tmp_path, SHELL=login_shell)
    script = f"""
        source {HABITS["bash"]}
        ccsub >/dev/null 2>&1
        echo "alive $HTTPS_PROXY errexit=$(set -o | grep -c 'errexit *on')"
        ccstock >/dev/null 2>&1
        echo "stock ${{HTTPS_PROXY:-unset}}"
        eval "$(ccctl env 2>/dev/null)"
        echo "plain $HTTPS_PROXY"
    """
    result = run_shell("bash", script, env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"alive {daemon.proxy_url} errexit=0",
        "stock unset",
        f"plain {daemon.proxy_url}",
    ]


def test_unwiring_a_shell_that_was_not_wired_changes_nothing(make_daemon) -> None:
    daemon = make_daemon(start=False)
    result = daemon.ccctl("env", "--stock", "--shell", "bash", env={"HTTPS_PROXY": CORP_PROXY})
    assert result.returncode == 0
    assert [line for line in result.stdout.splitlines() if "HTTPS_PROXY" in line] == []
    assert "nothing to restore" in result.stderr


def test_the_combined_bundle_trusts_the_users_ca_and_the_proxy(
    daemon: Daemon, tmp_path: Path, user_ca: tuple[Path, int]
) -> None:
    bundle_of_user, corp_port = user_ca
    env = shell_env(daemon, tmp_path, NODE_EXTRA_CA_CERTS=str(bundle_of_user))
    result = run_shell("bash", 'eval "$(ccctl env)"; printf %s "$NODE_EXTRA_CA_CERTS"', env)
    assert result.returncode == 0, result.stderr
    combined = Path(result.stdout)
    assert combined == daemon.state_dir / "ca-bundle.pem"
    assert stat.S_IMODE(combined.stat().st_mode) == 0o644
    trust = ssl.create_default_context(cafile=str(combined))  # this bundle only, no system CAs
    # The user's own server (signed by their CA) ...
    corp = httpx.get(f"https://127.0.0.1:{corp_port}/", verify=trust, timeout=10)
    assert corp.text == "corp ok"
    # ... and Claude's API through the intercepting listener (signed by mitmproxy's CA).
    with httpx.Client(proxy=daemon.proxy_url, verify=trust, timeout=30) as client:
        reply = client.post(
            "https://api.anthropic.com/v1/messages",
            json={"model": HAIKU, "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]},
            headers={"x-api-key": CLIENT_API_KEY},
        )
    assert reply.status_code == 200
    # Neither CA alone would do: the user's bundle does not know mitmproxy's CA and vice versa.
    with pytest.raises(httpx.ConnectError):
        httpx.get(
            f"https://127.0.0.1:{corp_port}/",
            verify=ssl.create_default_context(cafile=str(daemon.ca_cert)),
            timeout=10,
        )
    # Rebuilt when the user's bundle changes.
    extra, _, _ = make_ca(tmp_path)
    bundle_of_user.write_text(bundle_of_user.read_text() + extra.read_text())
    assert run_shell("bash", 'eval "$(ccctl env)"', env).returncode == 0
    assert extra.read_text().strip() in combined.read_text()
    assert daemon.ca_cert.read_text().strip() in combined.read_text()


# --- ccctl run, and a daemon that does not answer ------------------------------------------------
PRINT_PROXY = [sys.executable, "-c", "import os; print(os.environ.get('HTTPS_PROXY', 'unset'))"]


def _set_when_down(daemon: Daemon, action: str) -> None:
    daemon.write_config({**daemon.config, "wiring": {"when_down": action, "start_timeout_s": 30}})


def test_run_wires_one_command(daemon: Daemon) -> None:
    result = daemon.ccctl("run", "--", *PRINT_PROXY, env={"HTTPS_PROXY": CORP_PROXY})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == daemon.proxy_url


def test_run_when_down_fail_names_the_fix_without_waiting(make_daemon) -> None:
    daemon = make_daemon(start=False)
    daemon.write_config({**daemon.config, "wiring": {"when_down": "fail", "start_timeout_s": 120}})
    started = time.monotonic()
    result = daemon.ccctl("run", "--", *PRINT_PROXY)
    elapsed = time.monotonic() - started
    assert result.returncode != 0 and result.stdout == ""
    [line] = result.stderr.strip().splitlines()
    assert f"does not answer on 127.0.0.1:{daemon.port}" in line and "ccctl start" in line
    # "fail" neither starts the daemon nor waits for it: no daemon ever wrote its state, and the
    # command returned long before the 120 s start timeout (how fast is make bench's business).
    assert not (daemon.state_dir / "ccmitmd.pid").exists()
    assert elapsed < 60, f"waited {elapsed:.0f}s: it must not wait for a start"


def test_run_when_down_stock_runs_with_the_previous_values(make_daemon) -> None:
    daemon = make_daemon(start=False)
    _set_when_down(daemon, "stock")
    result = daemon.ccctl("run", "--", *PRINT_PROXY, env={"HTTPS_PROXY": CORP_PROXY})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == CORP_PROXY
    assert "running this call stock" in result.stderr


def test_run_when_down_start_starts_the_daemon(make_daemon) -> None:
    daemon = make_daemon(start=False)
    _set_when_down(daemon, "start")
    try:
        result = daemon.ccctl("run", "--", *PRINT_PROXY, timeout=90)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == daemon.proxy_url
        assert daemon.ccctl("status").returncode == 0
    finally:
        daemon.ccctl("stop", timeout=60)


def test_run_when_the_daemon_cannot_start_says_why_in_one_line(make_daemon) -> None:
    daemon = make_daemon(start=False)
    _set_when_down(daemon, "start")
    # Not a config: the daemon exits at start (there is no last good config to fall back to).
    daemon.config_path.write_text("proxy: [\n")
    started = time.monotonic()
    result = daemon.ccctl("run", "--", *PRINT_PROXY, timeout=90)
    elapsed = time.monotonic() - started
    assert result.returncode != 0 and result.stdout == ""
    # (ccctl itself first warns that the file is invalid, with the problem indented below.)
    lines = [
        line for line in result.stderr.splitlines() if line.startswith("ccctl: ") and "warning" not in line
    ]
    assert len(lines) == 1, result.stderr
    assert "could not start: its config is invalid" in lines[0] and "ccctl config check" in lines[0]
    assert "invalid YAML" in lines[0] and "ccctl start" in lines[0]
    # Answered without waiting out a start (Claude Code alone would retry for minutes);
    # how fast it is belongs to make bench, not to a pass/fail test.
    assert elapsed < 60, f"waited {elapsed:.0f}s"


def _installed_service(daemon: Daemon, tmp_path: Path, body: str) -> dict[str, str]:
    """A unit file where `ccctl service install` puts it, and a `systemctl` on PATH that logs its
    arguments and then does ``body`` (the real one would start the unit)."""
    unit = daemon.root / "xdgconfig" / "systemd" / "user" / "ccmitm.service"
    unit.parent.mkdir(parents=True, exist_ok=True)
    unit.write_text("[Unit]\nDescription=stand-in\n")
    fake_bin = tmp_path / "fakebin"
    fake_bin.mkdir()
    systemctl = fake_bin / "systemctl"
    systemctl.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/systemctl.args\n{body}\n')
    systemctl.chmod(0o755)
    return {"PATH": f"{fake_bin}:{BIN}:{os.environ['PATH']}"}


def test_run_starts_the_installed_service(make_daemon, tmp_path: Path) -> None:
    daemon = make_daemon(start=False)
    _set_when_down(daemon, "start")
    env = _installed_service(daemon, tmp_path, f"exec {BIN}/ccctl start >/dev/null 2>&1")
    try:
        result = daemon.ccctl("run", "--", *PRINT_PROXY, env=env, timeout=90)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == daemon.proxy_url
        assert (tmp_path / "systemctl.args").read_text().split() == ["--user", "start", "ccmitm.service"]
        assert "started it (systemctl --user start ccmitm.service)" in result.stderr
    finally:
        daemon.ccctl("stop", timeout=60)


def test_run_when_the_service_cannot_start_says_why_in_one_line(make_daemon, tmp_path: Path) -> None:
    daemon = make_daemon(start=False)
    _set_when_down(daemon, "start")
    failed = "Job for ccmitm.service failed because the control process exited with error code."
    env = _installed_service(daemon, tmp_path, f"echo '{failed}' >&2; exit 1")
    started = time.monotonic()
    result = daemon.ccctl("run", "--", *PRINT_PROXY, env=env)
    elapsed = time.monotonic() - started
    assert result.returncode != 0 and result.stdout == ""
    [line] = result.stderr.strip().splitlines()
    assert "`systemctl --user start ccmitm.service` failed" in line and failed in line
    assert "ccctl service status" in line
    # Answered without waiting out a start (Claude Code alone would retry for minutes);
    # how fast it is belongs to make bench, not to a pass/fail test.
    assert elapsed < 60, f"waited {elapsed:.0f}s"


def test_a_first_start_puts_the_new_ca_into_the_combined_bundle(
    make_daemon, tmp_path: Path, user_ca: tuple[Path, int]
) -> None:
    bundle_of_user, _ = user_ca
    daemon = make_daemon(start=False)  # never started: there is no CA yet
    env = shell_env(daemon, tmp_path, NODE_EXTRA_CA_CERTS=str(bundle_of_user))
    combined = daemon.state_dir / "ca-bundle.pem"
    try:
        result = run_shell("bash", 'eval "$(ccctl env 2>/dev/null)"; ccctl start >/dev/null', env)
        assert result.returncode == 0, result.stderr
        assert daemon.ca_cert.exists()
        assert daemon.ca_cert.read_text().strip() in combined.read_text()
        assert bundle_of_user.read_text().strip() in combined.read_text()
    finally:
        daemon.ccctl("stop", timeout=60)


@pytest.mark.parametrize("name", ["zsh", "fish"])
def test_plain_ccctl_env_speaks_the_calling_shell_not_shell(
    name: str, daemon: Daemon, tmp_path: Path
) -> None:
    env = shell_env(daemon, tmp_path, SHELL="/bin/bash" if name == "fish" else "fish")
    wire = "ccctl env 2>/dev/null | source" if name == "fish" else 'eval "$(ccctl env 2>/dev/null)"'
    result = run_shell(name, f'{wire}; echo "wired $HTTPS_PROXY"', env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"wired {daemon.proxy_url}"


def test_two_calls_that_find_it_down_at_once_both_run(make_daemon) -> None:
    daemon = make_daemon(start=False)
    _set_when_down(daemon, "start")
    command = [sys.executable, "-m", "ccmitm.cli", "run", "--", *PRINT_PROXY]
    try:
        calls = [
            subprocess.Popen(
                command, env=daemon.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            for _ in range(2)
        ]
        results = [call.communicate(timeout=90) for call in calls]
        for call, (out, err) in zip(calls, results, strict=True):
            assert call.returncode == 0, err
            assert out.strip() == daemon.proxy_url
    finally:
        daemon.ccctl("stop", timeout=60)
