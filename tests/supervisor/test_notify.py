"""sd_notify end to end: the real ccmitmd reports to a datagram socket this test owns.

systemd's Type=notify contract, checked from the outside: READY=1 once (and only once both
listeners accept connections), WATCHDOG=1 pings only when WATCHDOG_USEC asks for them, and
STOPPING=1 when SIGTERM arrives.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

WATCHDOG_USEC = 400_000  # pings every 0.2 s: several arrive within any reasonable wait


@dataclass(frozen=True)
class Message:
    fields: dict[str, str]
    # For READY=1: did both ports accept a connection the moment the message arrived?
    ports_open: bool | None = None

    def has(self, assignment: str) -> bool:
        key, _, value = assignment.partition("=")
        return self.fields.get(key) == value


class NotifySocket:
    """The test's end of $NOTIFY_SOCKET: a bound AF_UNIX datagram socket."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.messages: list[Message] = []

    def close(self) -> None:
        self.sock.close()

    def _receive(self, ports: tuple[int, int]) -> Message | None:
        try:
            data = self.sock.recv(4096)
        except TimeoutError:
            return None
        fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
        # Probe at once, with no retry: a READY=1 sent before the listeners are up fails here.
        ports_open = all(port_accepts(port) for port in ports) if fields.get("READY") == "1" else None
        message = Message(fields, ports_open)
        self.messages.append(message)
        return message

    def wait_for(
        self, done: Callable[[list[Message]], bool], ports: tuple[int, int], alive: Callable[[], bool]
    ) -> None:
        deadline = time.monotonic() + 60
        while not done(self.messages):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; received {self.messages}")
            if self._receive(ports) is None and not alive():
                raise AssertionError(f"ccmitmd exited; received {self.messages}")

    def drain(self, ports: tuple[int, int]) -> None:
        """Everything the daemon sent before it exited is still queued on our socket."""
        while self._receive(ports) is not None:
            pass

    def count(self, assignment: str) -> int:
        return sum(message.has(assignment) for message in self.messages)


def port_accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture
def notify_socket() -> Iterator[NotifySocket]:
    # A short directory: AF_UNIX paths are limited to about 100 bytes, pytest's tmp_path can be longer.
    directory = Path(tempfile.mkdtemp(prefix="ccmitm-notify-"))
    listener = NotifySocket(directory / "notify.sock")
    try:
        yield listener
    finally:
        listener.close()
        shutil.rmtree(directory, ignore_errors=True)


def start(make_daemon, notify: NotifySocket, watchdog_usec: str):
    # WATCHDOG_PID is cleared so a value inherited from an outer service manager cannot interfere.
    env = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": watchdog_usec, "WATCHDOG_PID": ""}
    daemon = make_daemon(env=env, start=False)
    daemon.start(wait=False)
    ports = (daemon.port, daemon.reverse_port)

    def alive() -> bool:
        return daemon.proc is not None and daemon.proc.poll() is None

    return daemon, ports, alive


def test_ready_after_both_listeners_then_watchdog_then_stopping(make_daemon, notify_socket) -> None:
    daemon, ports, alive = start(make_daemon, notify_socket, str(WATCHDOG_USEC))
    notify_socket.wait_for(lambda ms: any(m.has("READY=1") for m in ms), ports, alive)
    ready = next(m for m in notify_socket.messages if m.has("READY=1"))
    assert ready.ports_open, f"READY=1 arrived before both ports accepted connections:\n{daemon.stderr()}"

    def pings_after_ready(messages: list[Message]) -> int:
        index = next(i for i, m in enumerate(messages) if m.has("READY=1"))
        return sum(m.has("WATCHDOG=1") for m in messages[index + 1 :])

    notify_socket.wait_for(lambda ms: pings_after_ready(ms) >= 3, ports, alive)
    assert notify_socket.count("STOPPING=1") == 0, "STOPPING=1 before any SIGTERM"

    sent_before_stop = len(notify_socket.messages)
    assert daemon.stop() == 0, daemon.stderr()
    notify_socket.drain(ports)
    after_stop = notify_socket.messages[sent_before_stop:]
    assert any(m.has("STOPPING=1") for m in after_stop), f"no STOPPING=1 after SIGTERM: {after_stop}"
    assert notify_socket.count("READY=1") == 1


def test_no_watchdog_pings_unless_watchdog_usec_asks(make_daemon, notify_socket) -> None:
    daemon, ports, alive = start(make_daemon, notify_socket, "")
    notify_socket.wait_for(lambda ms: any(m.has("READY=1") for m in ms), ports, alive)
    # A daemon that pinged on its own schedule would be caught within a second.
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        notify_socket.drain(ports)
    assert notify_socket.count("WATCHDOG=1") == 0
    assert daemon.stop() == 0, daemon.stderr()
    notify_socket.drain(ports)
    assert notify_socket.count("STOPPING=1") == 1


def test_a_missing_notify_socket_does_not_stop_the_daemon(make_daemon, tmp_path: Path) -> None:
    """Outside a working systemd (a stale NOTIFY_SOCKET), notifications fail but the proxy runs."""
    daemon = make_daemon(env={"NOTIFY_SOCKET": str(tmp_path / "gone.sock")}, start=False)
    daemon.start()
    assert port_accepts(daemon.port) and port_accepts(daemon.reverse_port)
    assert daemon.stop() == 0, daemon.stderr()
