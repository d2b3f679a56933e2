"""The daemon's state as plain data for gauges, read on the event loop whenever an exporter asks.

A scrape (Prometheus) or a collection (OTLP) runs on its exporter's own thread, while the
``Runtime`` (breakers, holds, the kill-switch) is only ever touched on the event loop. So the
exporter thread asks the loop for one reading and waits a bounded time for it: the gauges are
never stale, and no thread reads the Runtime while the loop changes it. An idle daemon is not
woken: nothing is read unless someone asks.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from ccmitm.control.protocol import LaneQuota
from ccmitm.core.refusals import HOLDING
from ccmitm.proxy.state import Runtime

log = logging.getLogger(__name__)

#: How long an exporter waits for the loop's answer before it reports without the gauges.
READ_TIMEOUT_S = 2.0
#: ``ccmitm_breaker_state``'s values.
BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}
#: The hold classes a lane can be held for (each gets a 0/1 series, so a hold that ends shows as 0).
HOLD_CLASSES = tuple(sorted(str(cls) for cls in HOLDING))


@dataclass(frozen=True)
class LaneState:
    name: str
    available: bool  # would take a call now: it has its key, its breaker is not open, no hold
    breaker: str | None  # "closed", "half_open", "open"; None for a pass-through lane
    hold: str | None  # the class of the lane's hold, None when it is in rotation
    quota: LaneQuota | None  # the lane's quota meter, None when it has none


@dataclass(frozen=True)
class StateReading:
    paused: bool
    in_flight: int
    lanes: tuple[LaneState, ...]


def read_state(
    runtime: Runtime, quota: Callable[[str], LaneQuota | None], in_flight: Callable[[], int]
) -> StateReading:
    """One reading of the Runtime. Call it on the event loop."""
    conditions = runtime.conditions()
    lanes = []
    for name in runtime.active.lanes:
        breaker = runtime.breakers.get(name)
        hold = runtime.holds.get(name)
        refusal = hold.refusal if hold is not None else None
        lanes.append(
            LaneState(
                name=name,
                available=name not in conditions.unavailable
                and name not in conditions.breaker_open
                and name not in conditions.held,
                breaker=str(breaker.state()) if breaker is not None else None,
                hold=str(refusal.cls) if refusal is not None else None,
                quota=quota(name),
            )
        )
    return StateReading(paused=runtime.paused, in_flight=in_flight(), lanes=tuple(lanes))


class StateSource:
    """``source()`` from any thread: a fresh :class:`StateReading`, or None when the loop did not
    answer in time (busy, or stopping)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, read: Callable[[], StateReading]):
        self._loop = loop
        self._read = read
        self._loop_thread = threading.get_ident()  # made on the loop

    def __call__(self) -> StateReading | None:
        if threading.get_ident() == self._loop_thread:
            return self._read()
        answer: concurrent.futures.Future[StateReading] = concurrent.futures.Future()

        def on_loop() -> None:
            if not answer.set_running_or_notify_cancel():
                return
            try:
                answer.set_result(self._read())
            except Exception as exc:  # reported to the waiting thread
                answer.set_exception(exc)

        try:
            self._loop.call_soon_threadsafe(on_loop)
            return answer.result(READ_TIMEOUT_S)
        except RuntimeError:  # the loop is closed: the daemon is stopping
            return None
        except concurrent.futures.TimeoutError:
            answer.cancel()
            return None
        except Exception as exc:
            log.warning("reading the state for metrics failed: %s", exc)
            return None
