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
