"""Hostile requests against the real daemon: none of them may reach a lane, or reach it reshaped.

Each attack is sent the way a hostile local process would send it, over raw sockets (mitmproxy's
HTTP/1.1 parser, a raw HTTP/2 client for what httpx would never send), to both listeners where
the protocol allows. The checks are made where it matters: at the fake upstreams (nothing
arrived, or exactly one request), at a canary socket that must never be contacted, in the usage
log (one line per client request) and in the daemon's own log (no traceback).
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import h2.config
import h2.connection
import h2.events
import pytest

from ccmitm.testing.fakeupstream import FakeUpstream
from tests.helpers import CLIENT_API_KEY, HAIKU, Daemon

SONNET = "claude-sonnet-4-5"
LISTENERS = ["reverse", "intercept"]
# A bound on every socket read: the tests wait for states, never measure time.
READ_S = 15.0


# --- clients ---------------------------------------------------------------------------------------
def _proxy_authorization(daemon: Daemon) -> bytes:
    """The CONNECT's Proxy-Authorization line for the daemon's proxy URL (none without a token)."""
    parts = urlsplit(daemon.proxy_url)
    if not parts.username:
        return b""
    pair = f"{parts.username}:{parts.password or ''}".encode()
    return b"Proxy-Authorization: Basic " + base64.b64encode(pair) + b"\r\n"


def _tunnel(daemon: Daemon, alpn: list[str]) -> ssl.SSLSocket:
    """A TLS connection to api.anthropic.com through the intercepting listener (ccmitm's CA)."""
    sock = socket.create_connection(("127.0.0.1", daemon.port), timeout=READ_S)
    sock.sendall(
        b"CONNECT api.anthropic.com:443 HTTP/1.1\r\nHost: api.anthropic.com:443\r\n"
        + _proxy_authorization(daemon)
        + b"\r\n"
    )
    reply = b""
    while b"\r\n\r\n" not in reply:
        chunk = sock.recv(4096)
        assert chunk, f"CONNECT refused: {reply!r}"
        reply += chunk
    assert reply.split(b" ")[1] == b"200", reply
    context = ssl.create_default_context(cafile=str(daemon.ca_cert))
    context.set_alpn_protocols(alpn)
    return context.wrap_socket(sock, server_hostname="api.anthropic.com")


def _connect(daemon: Daemon, listener: str) -> socket.socket:
    if listener == "reverse":
        return socket.create_connection(("127.0.0.1", daemon.reverse_port), timeout=READ_S)
    return _tunnel(daemon, ["http/1.1"])


def _read_all(sock: socket.socket) -> bytes:
    """Everything the daemon sends until it closes (the requests say Connection: close)."""
    data = b""
    with contextlib.suppress(TimeoutError, ConnectionError, ssl.SSLError):
        while chunk := sock.recv(65536):
            data += chunk
    return data


def http1(daemon: Daemon, listener: str, head: list[bytes], body: bytes = b"") -> bytes:
    """One raw HTTP/1.1 request (head lines as given, the client's token added) and the raw answer."""
    token = b"".join(f"{k}: {v}\r\n".encode() for k, v in daemon.auth_headers.items())
    with _connect(daemon, listener) as sock:
        sock.sendall(b"\r\n".join(head) + b"\r\n" + token + b"Connection: close\r\n\r\n" + body)
        return _read_all(sock)


def status_of(raw: bytes) -> int | None:
    line = raw.split(b"\r\n", 1)[0].split(b" ")
    return int(line[1]) if len(line) > 1 and line[1].isdigit() else None


def h2_request(daemon: Daemon, headers: list[tuple[bytes, bytes]], body: bytes) -> tuple[int, bytes]:
    """One HTTP/2 request through the intercepting listener, sent as given: the client's header
    validation is off, so a :path httpx would refuse goes out byte for byte."""
    config = h2.config.H2Configuration(
        client_side=True, validate_outbound_headers=False, normalize_outbound_headers=False
    )
    conn = h2.connection.H2Connection(config)
    with _tunnel(daemon, ["h2"]) as sock:
        assert sock.selected_alpn_protocol() == "h2"
        conn.initiate_connection()
        stream = conn.get_next_available_stream_id()
        token = [(k.encode(), v.encode()) for k, v in daemon.auth_headers.items()]
        conn.send_headers(stream, headers + token)
        conn.send_data(stream, body, end_stream=True)
        sock.sendall(conn.data_to_send())
        status, answer, done = 0, b"", False
        while not done:
            data = sock.recv(65536)
            if not data:
                break
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    status = int(dict(event.headers)[b":status"])
                elif isinstance(event, h2.events.DataReceived):
                    answer += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, stream)
                elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                    done = True
            sock.sendall(conn.data_to_send())
        return status, answer


def h2_headers(path: bytes, *extra: tuple[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    return [
        (b":method", b"POST"),
        (b":scheme", b"https"),
        (b":authority", b"api.anthropic.com"),
        (b":path", path),
        (b"content-type", b"application/json"),
        (b"x-api-key", CLIENT_API_KEY.encode()),
        *extra,
    ]


def messages_body(model: str = HAIKU) -> bytes:
    return json.dumps(
        {"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    ).encode()


def assert_rejected_locally(daemon: Daemon, raw_status: int | None, *fakes: FakeUpstream) -> None:
    """A 400 from ccmitm itself: no lane got anything, one usage line with no lane."""
    assert raw_status == 400
    assert all(fake.received == [] for fake in fakes)
    (line,) = daemon.wait_usage(1)
    assert (line["lane"], line["reason"], line["status"]) == (None, "rejected", 400)


class Canary:
    """A loopback listener that must never be contacted: it counts every connection it accepts."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.contacts = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                conn, _ = self.sock.accept()
                self.contacts += 1
                conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def canary() -> Iterator[Canary]:
    listener = Canary()
    yield listener
    listener.close()


def daemon_log_text(daemon: Daemon) -> str:
    logs = [daemon.stderr()] + [p.read_text(errors="replace") for p in daemon.logs_dir.glob("*.log")]
    return "\n".join(logs)


# --- 1. folded headers -----------------------------------------------------------------------------
@pytest.mark.parametrize("listener", LISTENERS)
def test_a_folded_header_carrying_the_clients_key_never_reaches_a_lane(
    daemon: Daemon, upstreams: tuple[FakeUpstream, FakeUpstream], listener: str
) -> None:
    body = messages_body()
    raw = http1(
        daemon,
        listener,
        [
            b"POST /v1/messages HTTP/1.1",
            b"Host: api.anthropic.com",
            b"Content-Type: application/json",
            b"Content-Length: " + str(len(body)).encode(),
            b"X-Foo: a",
            b" x-api-key: " + CLIENT_API_KEY.encode(),  # obsolete line folding
        ],
        body,
    )
    assert_rejected_locally(daemon, status_of(raw), *upstreams)
    error = json.loads(raw.partition(b"\r\n\r\n")[2])
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"


# --- 2. SSRF through the failover -----------------------------------------------------------------
def test_an_h2_path_naming_another_host_is_refused_and_the_canary_never_contacted(
    daemon: Daemon, upstreams: tuple[FakeUpstream, FakeUpstream], canary: Canary
) -> None:
    anthropic, zai = upstreams
    zai.behaviour = "status:429"  # the offload lane refuses: the call would fail over
    path = f"@127.0.0.1:{canary.port}/v1/messages".encode()
    status, _ = h2_request(daemon, h2_headers(path), messages_body())
    assert canary.contacts == 0  # the failover went nowhere else (it did, before: "@" took the host)
    assert_rejected_locally(daemon, status, anthropic, zai)


@pytest.mark.parametrize("listener", LISTENERS)
def test_a_request_target_with_an_authority_trick_is_refused(
    daemon: Daemon, upstreams: tuple[FakeUpstream, FakeUpstream], canary: Canary, listener: str
) -> None:
    _, zai = upstreams
    zai.behaviour = "status:429"
    body = messages_body()
    target = f"//127.0.0.1:{canary.port}/v1/messages".encode()
    head = [b"POST " + target + b" HTTP/1.1", b"Host: api.anthropic.com"]
    head += [b"Content-Type: application/json", b"Content-Length: " + str(len(body)).encode()]
    head += [b"x-api-key: " + CLIENT_API_KEY.encode()]
    raw = http1(daemon, listener, head, body)
    assert canary.contacts == 0
    assert_rejected_locally(daemon, status_of(raw), *upstreams)


# --- 3. HTTP/2 -> HTTP/1.1 smuggling --------------------------------------------------------------
def test_an_h2_body_without_content_length_reaches_the_lane_as_one_request(
    daemon: Daemon, upstreams: tuple[FakeUpstream, FakeUpstream]
) -> None:
    anthropic, zai = upstreams
    inner = messages_body(SONNET)
    smuggled = (
        b"POST /v1/messages HTTP/1.1\r\nHost: api.anthropic.com\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(inner)).encode() + b"\r\n\r\n" + inner
    )
    status, _ = h2_request(daemon, h2_headers(b"/v1/messages"), smuggled)  # no content-length
    assert status != 0
    lines = daemon.wait_usage(1)
    time.sleep(0.5)  # a second, smuggled request would arrive right behind the first
    assert len(anthropic.received) == 1 and zai.received == []
    assert anthropic.received[0].body == smuggled  # the body stayed a body
    assert len(daemon.usage_lines()) == len(lines) == 1


def test_an_h2_haiku_call_without_content_length_is_one_request_on_the_offload_lane(
    daemon: Daemon, upstreams: tuple[FakeUpstream, FakeUpstream]
) -> None:
    anthropic, zai = upstreams
    status, answer = h2_request(daemon, h2_headers(b"/v1/messages"), messages_body())
    assert status == 200 and json.loads(answer)["type"] == "message"
    (received,) = zai.received
    assert received.header("content-length") == str(len(received.body)) and anthropic.received == []
    assert len(daemon.wait_usage(1)) == 1


@pytest.mark.parametrize("listener", LISTENERS)
@pytest.mark.parametrize(
    "framing",
    [
        [b"Content-Length: 5", b"Transfer-Encoding: chunked"],
        [b"Content-Length: 5", b"Content-Length: 6"],
    ],
    ids=["length-and-chunked", "two-lengths"],
)
def test_conflicting_framing_is_refused_with_400(
    daemon: Daemon, upstreams: tuple[FakeUpstream, FakeUpstream], listener: str, framing: list[bytes]
) -> None:
    head = [b"POST /v1/messages HTTP/1.1", b"Host: api.anthropic.com", *framing]
    raw = http1(daemon, listener, head, b"5\r\nhello\r\n0\r\n\r\n")
    assert status_of(raw) == 400
    assert all(fake.received == [] for fake in upstreams)


# --- 4. the smaller ones ----------------------------------------------------------------------------
@pytest.mark.parametrize("alpn", [["http/1.1"], ["h2"]])
def test_the_reverse_listener_does_not_speak_tls(daemon: Daemon, alpn: list[str]) -> None:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(alpn)
    with (
        socket.create_connection(("127.0.0.1", daemon.reverse_port), timeout=READ_S) as sock,
        pytest.raises((ssl.SSLError, ConnectionError, TimeoutError)),
    ):
        context.wrap_socket(sock, server_hostname="api.anthropic.com")
    # Plain HTTP on the same listener still works.
    raw = http1(daemon, "reverse", [b"GET /v1/models HTTP/1.1", b"Host: api.anthropic.com"])
    assert status_of(raw) == 200


def test_json_nested_100000_deep_is_routed_without_a_traceback(
    daemon: Daemon, upstreams: tuple[FakeUpstream, FakeUpstream]
) -> None:
    anthropic, zai = upstreams
    body = b'{"model":"' + HAIKU.encode() + b'","x":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    head = [b"POST /v1/messages/count_tokens HTTP/1.1", b"Host: api.anthropic.com"]
    head += [b"Content-Type: application/json", b"Content-Length: " + str(len(body)).encode()]
    head += [b"x-api-key: " + CLIENT_API_KEY.encode()]
    raw = http1(daemon, "reverse", head, body)
    assert status_of(raw) == 200  # unreadable body: routed to the default lane, as sent
    assert len(anthropic.received) == 1 and zai.received == []
    (line,) = daemon.wait_usage(1)
    assert line["lane"] == "anthropic"
    assert "Traceback" not in daemon_log_text(daemon)


@pytest.mark.parametrize("listener", LISTENERS)
def test_a_chunked_request_with_trailers_is_answered_400(
    daemon: Daemon, upstreams: tuple[FakeUpstream, FakeUpstream], listener: str
) -> None:
    body = messages_body()
    chunked = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\nX-Trailer: 1\r\n\r\n"
    head = [b"POST /v1/messages HTTP/1.1", b"Host: api.anthropic.com", b"Transfer-Encoding: chunked"]
    head += [b"Content-Type: application/json", b"x-api-key: " + CLIENT_API_KEY.encode()]
    raw = http1(daemon, listener, head, chunked)
    assert_rejected_locally(daemon, status_of(raw), *upstreams)


def _closed_by_daemon(sock: socket.socket, bound_s: float) -> bool:
    """True when the daemon closes ``sock`` within the (generous) bound."""
    sock.settimeout(bound_s)
    try:
        return sock.recv(4096) == b""
    except TimeoutError:
        return False
    except (ConnectionError, ssl.SSLError):
        return True


def test_a_partial_request_head_is_dropped_after_the_header_timeout(make_daemon: Any) -> None:
    daemon = make_daemon(lambda config: config["proxy"].update(header_timeout_s=1))
    partial = b"POST /v1/messages HTTP/1.1\r\nHost: api.anthropic.com\r\nx-api-"
    with socket.create_connection(("127.0.0.1", daemon.reverse_port), timeout=READ_S) as sock:
        sock.sendall(partial)
        assert _closed_by_daemon(sock, 20)
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=READ_S) as sock:
        sock.sendall(b"CONNECT api.anthropic.com:443 HTTP/1.1\r\nHost: api.anthropic.com:443\r\n")
        assert _closed_by_daemon(sock, 20)  # not even the CONNECT head was finished
    with _tunnel(daemon, ["http/1.1"]) as tls:
        tls.sendall(partial)  # inside the tunnel, after the CONNECT
        assert _closed_by_daemon(tls, 20)
    # A client that sends its head in time is served (the timer ends with the head).
    raw = http1(daemon, "reverse", [b"GET /v1/models HTTP/1.1", b"Host: api.anthropic.com"])
    assert status_of(raw) == 200
