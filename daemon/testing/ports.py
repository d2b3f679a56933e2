"""Loopback ports for the private daemons and fake upstreams of the tests and of endurance runs."""

from __future__ import annotations

import contextlib
import socket
import time


def free_port() -> int:
    """A loopback port nobody listens on right now, for a daemon the fakes are wired to."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_ports(count: int) -> list[int]:
    """``count`` different free loopback ports. The sockets stay bound until all are picked: two
    calls of :func:`free_port` in a row may get the same port back from the kernel."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


def wait_port(port: int, timeout: float = 20.0) -> None:
    """Until something accepts connections on 127.0.0.1:``port`` (bounded by ``timeout``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"port {port} did not open")
