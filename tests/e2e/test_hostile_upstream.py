"""Hostile or careless input through the real daemon: secrets hidden from the redactor's patterns
(glued to letters, percent-escaped, split by a NUL, echoed back by an upstream) and compressed
bodies that expand a thousandfold (gzip bombs) from the offload lane."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from urllib.parse import quote, unquote

import httpx

from ccmitm.testing.fakeupstream import FakeUpstream
from tests.helpers import (
    ALL_SECRETS,
    CLIENT_API_KEY,
    HAIKU,
    ZAI_KEY,
    Daemon,
    post,
    status,
    wait_for,
)

SONNET = "claude-sonnet-4-5"
# A client credential in no known format: only removal by its exact value can catch it.
ODD_CLIENT_KEY = "oddClientKeyWithoutAnyShape_0042xyz"


def usage_text(daemon: Daemon) -> str:
    return (daemon.logs_dir / "usage.jsonl").read_text()


def assert_nowhere(daemon: Daemon, *secrets: str) -> None:
    """None of ``secrets`` in anything the daemon wrote or ccctl printed (the decoded views too)."""
    assert daemon.secret_findings((*ALL_SECRETS, *secrets)) == []


# --- secrets the patterns cannot see ----------------------------------------------------------------
def test_lane_key_glued_to_letters_in_the_model_name(daemon: Daemon) -> None:
    # The Z.AI key pattern needs a non-alphanumeric before it: "bad<key>" slipped past it.
    response = post(daemon, model="haikubad" + ZAI_KEY)
    assert response.status_code == 200
    (line,) = daemon.wait_usage(1)
    assert line["lane"] == "zai"
    assert ZAI_KEY not in usage_text(daemon)
    assert line["model"].startswith("haikubad[REDACTED:")
    summary = daemon.ccctl("summarize", "--json", check=True).stdout
    assert ZAI_KEY not in summary
    assert_nowhere(daemon)


def test_upstream_error_event_echoing_the_lane_key(daemon: Daemon) -> None:
    response = post(daemon, headers={"x-fake-behaviour": "echo-key"}, stream=True)
    assert response.status_code == 200 and ("bad" + ZAI_KEY).encode() in response.content
    (line,) = daemon.wait_usage(1)
    assert line["lane"] == "zai" and line["error"].startswith("upstream error event: bad[REDACTED:")
    assert ZAI_KEY not in usage_text(daemon)
    assert_nowhere(daemon)


def test_upstream_echoing_a_client_credential_of_no_known_shape(daemon: Daemon) -> None:
    # The default lane gets the client's own credential; an error event echoes it back glued to
    # letters. The x-api-key value and the Authorization bearer token are both removed by value.
    response = post(
        daemon, model=SONNET, headers={"x-api-key": ODD_CLIENT_KEY, "x-fake-behaviour": "echo-key"}
    )
    assert response.status_code == 200
    bearer = httpx.post(
        daemon.reverse_url + "/v1/messages",
        json={"model": SONNET, "max_tokens": 8, "messages": []},
        headers={
            "authorization": f"Bearer {ODD_CLIENT_KEY}Z",
            "x-fake-behaviour": "echo-key",
            **daemon.auth_headers,
        },
        timeout=30,
    )
    assert bearer.status_code == 200
    lines = daemon.wait_usage(2)
    assert [line["lane"] for line in lines] == ["anthropic", "anthropic"]
    assert all(line["error"].startswith("upstream error event: bad[REDACTED:") for line in lines)
    assert ODD_CLIENT_KEY not in usage_text(daemon)
    assert_nowhere(daemon, ODD_CLIENT_KEY, ODD_CLIENT_KEY + "Z")


def test_hold_message_echoing_the_lane_key(
    daemon: Daemon, upstreams: tuple[FakeUpstream, FakeUpstream]
) -> None:
    # A refusal whose message quotes the key: the hold's message reaches `ccctl status`.
    upstreams[1].behaviour = "echo-key-refusal"
    response = post(daemon)
    assert response.status_code == 200  # answered by the default lane after the refusal
    daemon.wait_usage(2)
    reply = status(daemon)
    assert "[REDACTED:" in json.dumps(reply)
    assert_nowhere(daemon)


def test_percent_encoded_key_in_the_path(daemon: Daemon) -> None:
    hidden = quote(CLIENT_API_KEY, safe="").replace("-", "%2D")
    assert CLIENT_API_KEY not in hidden and unquote(hidden) == CLIENT_API_KEY
    response = httpx.get(
        f"{daemon.reverse_url}/v1/files/{hidden}?x={hidden}",
        # Not the request's own credential (that one is removed by its value): a key pasted
        # into a URL, which only the decoded view shows to the patterns.
        headers={"x-api-key": ODD_CLIENT_KEY, **daemon.auth_headers},
        timeout=30,
    )
    assert response.status_code == 200
    (line,) = daemon.wait_usage(1)
    assert line["path"] == "/v1/files/[REDACTED:sk-ant-api03]"
    assert CLIENT_API_KEY not in unquote(usage_text(daemon))
    assert_nowhere(daemon, ODD_CLIENT_KEY)


def test_key_split_by_a_nul_in_the_model_name(daemon: Daemon) -> None:
    # "sk-ant-\x00api03-…": no pattern sees it; with the NUL made a space it was still the key.
    split = CLIENT_API_KEY[:7] + "\x00" + CLIENT_API_KEY[7:]
    response = post(daemon, model=split, headers={"x-api-key": ODD_CLIENT_KEY})
    assert response.status_code == 200
    (line,) = daemon.wait_usage(1)
    assert line["model"] == "[REDACTED:sk-ant-api03]"
    assert CLIENT_API_KEY[7:] not in usage_text(daemon)
    assert_nowhere(daemon, ODD_CLIENT_KEY)


# --- gzip bombs from the offload lane ------------------------------------------------------------------
BOMB_MIB = 1000  # ~1 MB of gzip: below the 1 MiB of a reply read whole, for the JSON one
RSS_BOUND_KIB = 600 * 1024  # generous: the daemon idles near 100 MB; decoding a bomb whole is > 1 GB


def peak_rss_kib(daemon: Daemon) -> int:
    assert daemon.proc is not None
    for row in Path(f"/proc/{daemon.proc.pid}/status").read_text().splitlines():
        if row.startswith("VmHWM:"):
            return int(row.split()[1])
    raise AssertionError("no VmHWM in /proc/PID/status")


def raw_bytes(daemon: Daemon, behaviour: str, stream: bool) -> tuple[int, int, str | None]:
    """A Haiku call answered with ``behaviour``: (status, bytes received undecoded, encoding)."""
    body = {"model": HAIKU, "max_tokens": 8, "messages": [], "stream": stream}
    headers = {"x-api-key": CLIENT_API_KEY, "x-fake-behaviour": behaviour, **daemon.auth_headers}
    with httpx.stream(
        "POST", daemon.reverse_url + "/v1/messages", json=body, headers=headers, timeout=60
    ) as r:
        size = sum(len(chunk) for chunk in r.iter_raw())
        return r.status_code, size, r.headers.get("content-encoding")


def test_gzip_bombs_pass_through_unread_and_memory_stays_bounded(
    daemon: Daemon, upstreams: tuple[FakeUpstream, FakeUpstream]
) -> None:
    anthropic, zai = upstreams
    json_bomb, sse_bomb = zai.bomb("json", BOMB_MIB), zai.bomb("sse", BOMB_MIB)  # built before timing matters
    anthropic.behaviour = "gated"
    # Another client's stream, in flight on the default lane while the bombs go through.
    other: list[httpx.Response] = []
    waiting = threading.Thread(
        target=lambda: other.append(post(daemon, model=SONNET, stream=True)), daemon=True
    )
    waiting.start()
    wait_for(lambda: anthropic.messages(), what="the other call reached the default lane")
    results: dict[str, tuple[int, int, str | None]] = {}

    def bombs() -> None:
        results["json"] = raw_bytes(daemon, f"gzip-bomb-json:{BOMB_MIB}", stream=False)
        results["sse"] = raw_bytes(daemon, f"gzip-bomb-sse:{BOMB_MIB}", stream=True)

    runner = threading.Thread(target=bombs, daemon=True)
    runner.start()
    runner.join(120)
    assert not runner.is_alive()
    # The client gets every byte as the lane sent it, still encoded.
    assert results["json"] == (200, len(json_bomb), "gzip")
    assert results["sse"] == (200, len(sse_bomb), "gzip")
    # The other stream was not starved: released now, it completes with its usage read.
    anthropic.release()
    waiting.join(30)
    assert other and other[0].status_code == 200 and b"message_stop" in other[0].content
    fresh = post(daemon, model=SONNET)
    assert fresh.status_code == 200
    lines = daemon.wait_usage(4)
    by_behaviour = {line["stream"]: line for line in lines if line["lane"] == "zai"}
    assert by_behaviour[False]["error"] == "usage not read: decoded body over 8388608 bytes"
    assert by_behaviour[False]["input_tokens"] is None
    assert by_behaviour[True]["error"] == "usage not read: decoded body over 67108864 bytes"
    assert by_behaviour[True]["input_tokens"] == 11  # read before the bound: message_start
    assert by_behaviour[True]["output_tokens"] == 1
    anthropic_lines = [line for line in lines if line["lane"] == "anthropic"]
    assert len(anthropic_lines) == 2 and all(line["error"] is None for line in anthropic_lines)
    assert peak_rss_kib(daemon) < RSS_BOUND_KIB
