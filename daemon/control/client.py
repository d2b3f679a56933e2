"""The control client: one blocking call to the daemon's socket, for ccctl and the test harness.

The socket is 0600 inside a 0700 directory and there is no TCP control port: whoever can open it
is the user who owns the daemon.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any, cast

from ccmitm.control.protocol import Command, ControlError, StatusReply, decode_reply, encode_request

NOT_RUNNING = (
    "ccmitmd is not running; start it with `ccctl start`, or run it as a service (`ccctl service install`)"
)


class DaemonNotRunning(ControlError):
    """Nobody listens on the control socket."""

    def __init__(self, socket_path: Path):
        super().__init__(NOT_RUNNING)
        self.socket_path = socket_path


def call(socket_path: Path, cmd: Command, timeout: float = 30.0, **args: Any) -> Any:
    """Send one command to the daemon and return its result."""
    request = encode_request(cmd, args)
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    except OSError as exc:  # pragma: no cover - no AF_UNIX
        raise ControlError(f"cannot create a Unix socket: {exc}") from exc
    with sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(socket_path))
        except (FileNotFoundError, ConnectionRefusedError):
            raise DaemonNotRunning(socket_path) from None
        except PermissionError as exc:
            raise ControlError(f"cannot open the control socket {socket_path}: {exc.strerror}") from None
        sock.sendall(request)
        chunks: list[bytes] = []
        while True:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                raise ControlError(f"ccmitmd did not answer {cmd!r} within {timeout:g}s") from None
            if not data:
                break
            chunks.append(data)
            if data.endswith(b"\n"):
                break
    raw = b"".join(chunks)
    if not raw:
        raise ControlError("ccmitmd closed the control connection without an answer")
    return decode_reply(raw)


def status(socket_path: Path, timeout: float = 30.0) -> StatusReply:
    """The daemon's status, read through its type."""
    return cast(StatusReply, call(socket_path, "status", timeout=timeout))


def is_running(socket_path: Path) -> bool:
    try:
        call(socket_path, "ping", timeout=2)
    except ControlError:
        return False
    return True
