"""The control client: one blocking call to the daemon's socket, for ccctl and the test harness.

The socket is 0600 inside a 0700 directory and there is no TCP control port. The directory may
still be a shared one (a non-default ``XDG_RUNTIME_DIR``, a ``control.socket`` in /tmp), where
another user could have put a socket or a symlink of their own at the path first. So a reply is
trusted only when the socket file is a socket owned by the current user (lstat: not a symlink) and
the process answering on it runs as the current user (its peer credentials); ccctl signals the
pid a status reply names only after both checks.
"""

from __future__ import annotations

import os
import socket
import stat
import struct
import sys
from pathlib import Path
from typing import Any, Protocol, cast

from ccmitm.control.protocol import Command, ControlError, StatusReply, decode_reply, encode_request

NOT_RUNNING = (
    "ccmitmd is not running; start it with `ccctl start`, or run it as a service (`ccctl service install`)"
)


class DaemonNotRunning(ControlError):
    """Nobody listens on the control socket."""

    def __init__(self, socket_path: Path):
        super().__init__(NOT_RUNNING)
        self.socket_path = socket_path


class _Sockopts(Protocol):
    def getsockopt(self, level: int, optname: int, buflen: int) -> bytes: ...


#: macOS and FreeBSD: SOL_LOCAL and LOCAL_PEERCRED (Python's socket module does not name them);
#: the answer is a struct xucred whose first two fields are cr_version and cr_uid.
_SOL_LOCAL, _LOCAL_PEERCRED, _XUCRED_SIZE = 0, 1, 76


def peer_uid(sock: _Sockopts) -> int | None:
    """The uid of the process at the other end of a connected Unix socket; None where the
    platform has no way to tell (then only the socket file's owner is checked)."""
    if hasattr(socket, "SO_PEERCRED"):  # Linux: struct ucred {pid, uid, gid}
        size = struct.calcsize("3i")
        _pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, size))
        return int(uid)
    if sys.platform == "darwin" or sys.platform.startswith("freebsd"):
        try:
            data = sock.getsockopt(_SOL_LOCAL, _LOCAL_PEERCRED, _XUCRED_SIZE)
        except OSError:
            return None
        _version, uid = struct.unpack_from("=II", data)
        return int(uid)
    return None


def check_socket_file(socket_path: Path) -> None:
    """Refuse a control socket path that is not a socket owned by the current user."""
    try:
        info = os.lstat(socket_path)
    except (FileNotFoundError, NotADirectoryError):
        raise DaemonNotRunning(socket_path) from None
    except OSError as exc:
        raise ControlError(f"cannot open the control socket {socket_path}: {exc.strerror}") from None
    refusing = f"refusing the control socket {socket_path}"
    if stat.S_ISLNK(info.st_mode):
        raise ControlError(f"{refusing}: it is a symlink (ccmitmd makes a socket there, never a link)")
    if not stat.S_ISSOCK(info.st_mode):
        raise ControlError(f"{refusing}: it is not a socket")
    if info.st_uid != os.getuid():
        raise ControlError(
            f"{refusing}: it belongs to uid {info.st_uid}, not to you (uid {os.getuid()}); "
            "another user's process made it"
        )


def call(socket_path: Path, cmd: Command, timeout: float = 30.0, **args: Any) -> Any:
    """Send one command to the daemon and return its result."""
    request = encode_request(cmd, args)
    check_socket_file(socket_path)
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
        uid = peer_uid(sock)
        if uid is not None and uid != os.getuid():
            raise ControlError(
                f"refusing the control socket {socket_path}: the process answering on it runs as "
                f"uid {uid}, not as you (uid {os.getuid()})"
            )
        sock.sendall(request)
        chunks: list[bytes] = []
        while True:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                raise ControlError(f"ccmitmd did not answer {cmd!r} within {timeout:g}s") from None
            except ConnectionError:
                raise ControlError("ccmitmd closed the control connection without an answer") from None
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
