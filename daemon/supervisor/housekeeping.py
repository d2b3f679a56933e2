"""Housekeeping on APScheduler: log rotation checks and the nightly bundle, with catch-up.

Pitfalls handled here: the default misfire grace of 1 s would silently skip a
nightly job the laptop slept through, so the bundle job gets hours of grace and coalesces; the
cron trigger gets its time zone explicitly; APScheduler's timers run on the monotonic clock, which
stops during suspend, so a short interval job keeps the scheduler waking up; and a run missed
while the daemon was down is caught up at start from the remembered last run.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, tzinfo
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from ccmitm.config.model import BundleConfig
from ccmitm.control.protocol import JobStatus

if TYPE_CHECKING:
    # APScheduler and tzlocal are imported when the scheduler starts, after READY: nothing
    # scheduled is due in the daemon's first second, and their import slows every start.
    from apscheduler.schedulers.asyncio import AsyncIOScheduler
    from apscheduler.triggers.cron import CronTrigger

log = logging.getLogger(__name__)

ROTATE_JOB = "rotate-logs"
BUNDLE_JOB = "nightly-bundle"
KEYS_JOB = "lane-key-files"
ROTATE_EVERY_S = 30
KEYS_EVERY_S = 15
BUNDLE_GRACE_S = 12 * 3600


def schedule_zone(bundle: BundleConfig) -> tzinfo:
    if bundle.timezone:
        return ZoneInfo(bundle.timezone)
    from tzlocal import get_localzone

    return get_localzone()


def bundle_trigger(bundle: BundleConfig) -> CronTrigger:
    from apscheduler.triggers.cron import CronTrigger

    return CronTrigger.from_crontab(bundle.schedule, timezone=schedule_zone(bundle))


def _when(moment: datetime | None) -> str | None:
    """A job time as status shows it: to the second (microseconds are noise to a reader)."""
    return moment.isoformat(timespec="seconds") if moment else None


def missed_run(trigger: CronTrigger, last_run: datetime | None, now: datetime) -> bool:
    """Was a scheduled run due between the last run and now? (Never run: not a miss.)"""
    if last_run is None:
        return False
    due = trigger.get_next_fire_time(None, last_run)
    return due is not None and due <= now


class Housekeeping:
    def __init__(
        self,
        rotate: Callable[[], Awaitable[Any]],
        bundle: Callable[[], Awaitable[Any]],
        last_bundle_at: Callable[[], datetime | None],
        recheck_keys: Callable[[], Awaitable[Any]] | None = None,
    ):
        self._rotate = rotate
        self._recheck_keys = recheck_keys
        self._bundle = bundle
        self._last_bundle_at = last_bundle_at
        self.scheduler: AsyncIOScheduler | None = None  # created by start()
        self._bundle_settings: tuple[str, str | None, bool] | None = None

    def start(self, bundle: BundleConfig) -> None:
        from apscheduler.schedulers.asyncio import AsyncIOScheduler
        from apscheduler.triggers.interval import IntervalTrigger

        self.scheduler = AsyncIOScheduler(
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 60}
        )
        self.scheduler.add_job(
            self._rotate, IntervalTrigger(seconds=ROTATE_EVERY_S), id=ROTATE_JOB, name="log rotation check"
        )
        if self._recheck_keys is not None:
            # A lane whose key file was refused (wrong mode, missing, empty) comes back by itself.
            self.scheduler.add_job(
                self._recheck_keys,
                IntervalTrigger(seconds=KEYS_EVERY_S),
                id=KEYS_JOB,
                name="lane key file check",
            )
        self.scheduler.start()
        self.configure(bundle, catch_up=True)

    def configure(self, bundle: BundleConfig, catch_up: bool = False) -> None:
        """(Re)schedule the nightly bundle for a (new) config; idempotent. Before start() (a reload
        in the moment after READY) there is nothing to change: start() schedules the config
        that is active then."""
        if self.scheduler is None:
            return
        settings = (bundle.schedule, bundle.timezone, bundle.enabled)
        if settings == self._bundle_settings:
            return
        self._bundle_settings = settings
        if self.scheduler.get_job(BUNDLE_JOB):
            self.scheduler.remove_job(BUNDLE_JOB)
        if not bundle.enabled:
            log.info("nightly bundle disabled (bundle.enabled: false)")
            return
        trigger = bundle_trigger(bundle)
        job = self.scheduler.add_job(
            self._bundle,
            trigger,
            id=BUNDLE_JOB,
            name="nightly bundle",
            misfire_grace_time=BUNDLE_GRACE_S,
        )
        now = datetime.now(trigger.timezone)
        if catch_up and missed_run(trigger, self._last_bundle_at(), now):
            log.info("a nightly bundle was missed while ccmitmd was down; running it now")
            job.modify(next_run_time=now)
        log.info(
            "nightly bundle scheduled %r (%s), next at %s",
            bundle.schedule,
            trigger.timezone,
            job.next_run_time,
        )

    def jobs(self) -> list[JobStatus]:
        if self.scheduler is None:
            return []
        return [
            {
                "id": job.id,
                "name": job.name,
                "next_run": _when(job.next_run_time),
            }
            for job in self.scheduler.get_jobs()
        ]

    def next_run(self, job_id: str) -> str | None:
        if self.scheduler is None:
            return None
        job = self.scheduler.get_job(job_id)
        return _when(job.next_run_time) if job else None

    def shutdown(self) -> None:
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.shutdown(wait=False)
