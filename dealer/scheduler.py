"""Scheduled jobs (APScheduler): each run is counted by job and outcome, failures are logged."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from dealer.metrics import Metrics

log = logging.getLogger(__name__)


def build_scheduler() -> AsyncIOScheduler:
    return AsyncIOScheduler(timezone=dt.UTC, job_defaults={"coalesce": True, "max_instances": 1,
                                                           "misfire_grace_time": 30})


def add_job(scheduler: AsyncIOScheduler, metrics: Metrics, name: str,
            job: Callable[[], Awaitable[object]], every_seconds: float,
            *, first_run: dt.datetime | None = None) -> None:
    """Run `job` every `every_seconds`; a failure is counted and logged, the next run happens."""

    async def run() -> None:
        try:
            await job()
        except Exception:
            metrics.scheduler_runs.labels(name, "failure").inc()
            log.exception("scheduled job %s failed", name)
        else:
            metrics.scheduler_runs.labels(name, "success").inc()

    # APScheduler reads an explicit next_run_time=None as "paused": pass it only when set.
    when = {} if first_run is None else {"next_run_time": first_run}
    scheduler.add_job(run, "interval", seconds=every_seconds, id=name, name=name, **when)
