"""The quota meter poller: asks Z.AI how much of a lane's 5-hour and weekly windows is used.

One asyncio task owned by the Daemon ticks about once a second; the decisions (when a lane is
due, what an answer means) are pure code in :mod:`ccmitm.core.quota`. It never runs on the hot
path: a call through the proxy only bumps a counter this task reads. Each lane has at most one
request in flight, each request has a timeout, and it goes out with the lane's own key (raw, no
``Bearer``, as Z.AI's monitor endpoints want it) through ``proxy.upstream_proxy`` when set.

A meter that fails (404, garbage, timeout) shows as "unknown". It is logged once, at the first
failure, by status code or exception class only: never the key, never the body (an error page
could echo the Authorization header back).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ccmitm.control.protocol import LaneQuota, QuotaWindow
from ccmitm.core.quota import MeterSchedule, QuotaReading, Window, parse_limits
from ccmitm.proxy.state import Runtime

if TYPE_CHECKING:
    # httpx is imported at the first poll (the daemon warms it after READY), not at start.
    import httpx

log = logging.getLogger("ccmitm")

METER_PATH = "/api/monitor/usage/quota/limit"
TIMEOUT_S = 10.0
MAX_BODY_BYTES = 256 * 1024


def meter_url(lane_url: str) -> str:
    """``{origin}/api/monitor/usage/quota/limit``: the lane URL's scheme://host[:port] only."""
    parts = urlsplit(lane_url)
    return f"{parts.scheme}://{parts.netloc}{METER_PATH}"


def _window(window: Window | None) -> QuotaWindow | None:
    if window is None:
        return None
    resets = window.resets_at.isoformat(timespec="seconds") if window.resets_at else None
    return {"percent": window.percent, "resets_at": resets}


@dataclass
class LaneMeter:
    schedule: MeterSchedule
    key: str = field(repr=False)
    url: str
    reading: QuotaReading | None = None
    checked_at: datetime | None = None
    failed_logged: bool = False


class QuotaMeter:
    def __init__(
        self,
        runtime: Runtime,
        clock: Callable[[], float] = time.monotonic,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._runtime = runtime
        self._clock = clock
        self._transport = transport
        self._lanes: dict[str, LaneMeter] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._client: httpx.AsyncClient | None = None
        self._proxy: str | None = None

    # --- what status shows -----------------------------------------------------------------------
    def status(self, name: str) -> LaneQuota | None:
        """The lane's meter for status (None: the lane has no meter)."""
        meter = self._lanes.get(name)
        if meter is None:
            return None
        reading = meter.reading
        return {
            "state": "ok" if reading is not None else "unknown",
            "five_hour": _window(reading.five_hour if reading else None),
            "week": _window(reading.week if reading else None),
            "checked_at": meter.checked_at.isoformat(timespec="seconds") if meter.checked_at else None,
        }

    # --- the loop --------------------------------------------------------------------------------
    def sync_lanes(self) -> None:
        """Match the meters to the serving config: zai lanes with a key and a poll interval."""
        snapshot = self._runtime.active
        now = self._clock()
        wanted: dict[str, tuple[str, str, float]] = {}
        for name, endpoint in snapshot.lanes.items():
            lane = snapshot.config.lanes.get(name)
            if lane is None or lane.effective_provider != "zai" or lane.quota_poll_s is None:
                continue
            if not endpoint.keyed or endpoint.key is None:
                continue
            wanted[name] = (endpoint.key, meter_url(lane.url), lane.quota_poll_s)
        for name in list(self._lanes):
            if name not in wanted:
                del self._lanes[name]
        for name, (key, url, interval) in wanted.items():
            meter = self._lanes.get(name)
            if meter is None or meter.key != key or meter.url != url:
                # A new key or URL is a new meter: the old reading says nothing about it.
                self._lanes[name] = LaneMeter(MeterSchedule(interval, now), key, url)
            else:
                meter.schedule.interval_s = interval
        for name, meter in self._lanes.items():
            stats = self._runtime.stats.get(name)
            meter.schedule.note_requests(stats.requests if stats else 0, now)

    def tick(self) -> None:
        """Start a poll for every lane that is due (each in its own task, never awaited here)."""
        self.sync_lanes()
        now = self._clock()
        for name, meter in self._lanes.items():
            if meter.schedule.due(now):
                meter.schedule.in_flight = True
                meter.schedule.last_poll_at = now
                task = asyncio.get_running_loop().create_task(self._poll(name, meter))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def run(self, tick_s: float = 1.0) -> None:
        while True:
            try:
                self.tick()
            except Exception:  # the meter must never take the daemon down
                log.exception("quota meter: tick failed")
            await asyncio.sleep(tick_s)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.aclose()
            self._client = None

    # --- one request -----------------------------------------------------------------------------
    def _http(self) -> httpx.AsyncClient:
        import httpx

        proxy = self._runtime.active.config.proxy.upstream_proxy
        if self._client is not None and self._proxy != proxy:
            client, self._client = self._client, None
            task = asyncio.get_running_loop().create_task(client.aclose())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if self._client is None:
            # trust_env=False: an HTTPS_PROXY in the daemon's environment may point back at us.
            self._client = httpx.AsyncClient(
                trust_env=False,
                follow_redirects=False,
                transport=self._transport,
                proxy=proxy,
                timeout=TIMEOUT_S,
            )
            self._proxy = proxy
        return self._client

    async def _poll(self, name: str, meter: LaneMeter) -> None:
        try:
            reading, failure = await self._fetch(meter)
        finally:
            meter.schedule.in_flight = False
        meter.checked_at = datetime.now(UTC)
        meter.reading = reading
        if reading is None and not meter.failed_logged:
            meter.failed_logged = True
            log.info("lane %s: quota meter unavailable (%s); shown as unknown", name, failure)
        elif reading is not None:
            meter.failed_logged = False

    async def _fetch(self, meter: LaneMeter) -> tuple[QuotaReading | None, str]:
        import httpx

        try:
            response = await self._http().get(
                meter.url, headers={"authorization": meter.key, "accept": "application/json"}
            )
        except httpx.HTTPError as exc:
            return None, type(exc).__name__
        if response.status_code != 200:
            return None, f"HTTP {response.status_code}"
        if len(response.content) > MAX_BODY_BYTES:
            return None, "answer too large"
        try:
            body = response.json()
        except ValueError:
            return None, "not JSON"
        reading = parse_limits(body)
        return reading, "" if reading else "no 5-hour or weekly limits in the answer"
