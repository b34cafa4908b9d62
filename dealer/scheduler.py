"""Scheduled jobs (APScheduler): each run is counted by job and outcome, failures are logged."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable

import asyncpg
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from dealer.marketdata import MarketDataService
from dealer.metrics import Metrics
from dealer.services.dealers import complete_drain, draining_links
from dealer.services.exposure import (
    DealerExposure,
    KillSwitchPolicy,
    check_and_engage,
    export_exposures,
)
from dealer.uow import UnitOfWork, connection

log = logging.getLogger(__name__)


def build_scheduler() -> AsyncIOScheduler:
    return AsyncIOScheduler(timezone=dt.UTC, job_defaults={"coalesce": True, "max_instances": 1,
                                                           "misfire_grace_time": 30})


# The fractional part of the golden ratio: the k-th job's phase is k times this, modulo its
# interval, so however many jobs there are, no two start at the same moment of their period.
_PHASE_STEP = (5 ** 0.5 - 1) / 2


def job_phase(index: int, every_seconds: float) -> float:
    """Seconds after the scheduler's start of the first run of the `index`-th job added."""
    return every_seconds * ((index * _PHASE_STEP) % 1.0)


def add_job(scheduler: AsyncIOScheduler, metrics: Metrics, name: str,
            job: Callable[[], Awaitable[object]], every_seconds: float,
            *, first_run: dt.datetime | None = None,
            now: Callable[[], dt.datetime] | None = None) -> None:
    """Run `job` every `every_seconds`; a failure is counted and logged, the next run happens.

    Without `first_run`, each job starts at its own phase of its period (`job_phase`): jobs of
    the same period added together would otherwise all run at the same instant, every period,
    and their database and CPU work would land on the requests being served at once."""

    async def run() -> None:
        try:
            await job()
        except Exception:
            metrics.scheduler_runs.labels(name, "failure").inc()
            log.exception("scheduled job %s failed", name)
        else:
            metrics.scheduler_runs.labels(name, "success").inc()

    if first_run is None:
        start = (now or _utc_now)()
        first_run = start + dt.timedelta(seconds=job_phase(len(scheduler.get_jobs()),
                                                           every_seconds))
    # An interval trigger runs each time one interval after the previous run: the phase stays.
    scheduler.add_job(run, "interval", seconds=every_seconds, id=name, name=name,
                      next_run_time=first_run)


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def exposure_check(pool: asyncpg.Pool, market_data: MarketDataService, metrics: Metrics,
                         policy: KillSwitchPolicy, now: dt.datetime) -> list[DealerExposure]:
    """Value every dealer's unhedged exposure, pause those whose kill switch trips, and export
    `dealer_unhedged_exposure`, `dealer_unhedged_notional` and `dealer_kill_switch_engaged`."""
    checked = await check_and_engage(pool, market_data, policy, now)
    export_exposures(metrics, checked)
    return checked


async def drain_links(pool: asyncpg.Pool, market_data: MarketDataService, metrics: Metrics,
                      now: dt.datetime) -> int:
    """Unlink every draining LP whose hedge work in flight is done, as an admin's unlink
    would (operation history, metric, book subscriptions); answers how many were unlinked."""
    async with connection(pool) as conn:
        waiting = await draining_links(conn)
    unlinked = 0
    for dealer_account_id, trading_account_id in waiting:
        async with UnitOfWork(pool) as uow:
            done = await complete_drain(uow, now, dealer_account_id, trading_account_id)
        if done:
            unlinked += 1
            metrics.links_changed.labels("unlink").inc()
            log.info("drained LP %s unlinked from dealer %s", trading_account_id,
                     dealer_account_id, extra={"event": "lp_drained",
                                               "trading_account_id": str(trading_account_id),
                                               "dealer_account_id": str(dealer_account_id)})
    if unlinked:
        await market_data.refresh(pool)
    return unlinked
