"""Z.AI's quota meter end to end: the real daemon polls the fake's meter in the background and
`ccctl status`, `status --json` and `top --once` show it; a failing meter shows "unknown"."""

from __future__ import annotations

from typing import Any

import pytest

from ccmitm.testing.fakeupstream import FakeUpstream
from tests.helpers import ZAI_KEY, Daemon, post, status, wait_for

pytestmark = pytest.mark.e2e


def zai_meter(config: dict[str, Any]) -> None:
    # The fake listens on 127.0.0.1 (no z.ai host to detect), so the lane says what it is.
    config["lanes"]["zai"].update(provider="zai", quota_poll_s=1)


def quota_of(daemon: Daemon) -> dict[str, Any] | None:
    return status(daemon)["lanes"]["zai"].get("quota")


def test_the_meter_is_shown_in_status_json_and_top(
    make_daemon, upstreams: tuple[FakeUpstream, FakeUpstream]
) -> None:
    anthropic, zai = upstreams
    daemon = make_daemon(zai_meter)
    assert post(daemon).status_code == 200  # traffic keeps the meter polling
    wait_for(lambda: (quota_of(daemon) or {}).get("state") == "ok", what="meter read", interval=0.5)
    quota = quota_of(daemon)
    assert quota is not None
    assert quota["five_hour"]["percent"] == 37 and quota["week"]["percent"] == 12
    assert quota["five_hour"]["resets_at"] and quota["week"]["resets_at"] and quota["checked_at"]
    assert status(daemon)["lanes"]["anthropic"].get("quota") is None
    # The meter went to the Z.AI lane only, with its raw key.
    assert zai.quota_requests() and {r.header("authorization") for r in zai.quota_requests()} == {ZAI_KEY}
    assert anthropic.quota_requests() == []
    human = daemon.ccctl("status", check=True).stdout
    assert "quota: 5h 37% (resets " in human and "week 12% (resets " in human
    top = daemon.ccctl("top", "--once", check=True).stdout
    assert "zai quota: 5h 37%" in top and "week 12%" in top


@pytest.mark.parametrize("mode", ["404", "garbage"])
def test_a_failing_meter_shows_unknown_quietly(
    make_daemon, upstreams: tuple[FakeUpstream, FakeUpstream], mode: str
) -> None:
    _, zai = upstreams
    zai.quota_mode = mode
    daemon = make_daemon(zai_meter)
    assert post(daemon).status_code == 200
    wait_for(lambda: len(zai.quota_requests()) >= 2, what="meter asked twice", interval=0.2)
    wait_for(lambda: (quota_of(daemon) or {}).get("checked_at"), what="meter checked", interval=0.5)
    quota = quota_of(daemon)
    assert quota is not None and quota["state"] == "unknown"
    assert "quota: unknown" in daemon.ccctl("status", check=True).stdout
    assert "zai quota: unknown" in daemon.ccctl("top", "--once", check=True).stdout
    # Quietly: one line for the first failure, however often it was asked.
    assert daemon.stderr().count("quota meter unavailable") == 1
    # (The make_daemon fixture scans everything the daemon wrote for the planted secrets.)


def test_no_meter_for_a_lane_that_is_not_zai(
    make_daemon, upstreams: tuple[FakeUpstream, FakeUpstream]
) -> None:
    anthropic, zai = upstreams
    daemon = make_daemon()  # the fake's 127.0.0.1 URL is not a Z.AI host
    assert post(daemon).status_code == 200
    assert quota_of(daemon) is None
    assert "quota" not in daemon.ccctl("status", check=True).stdout
    assert zai.quota_requests() == [] and anthropic.quota_requests() == []
