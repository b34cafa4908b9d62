"""Scheduled jobs (APScheduler): each run is counted by job and outcome, failures are logged."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from typing import Any

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
from ledger.outbox import RepeatedFailures

log = logging.getLogger(__name__)


# How long a stopping daemon lets the scheduled jobs' runs in progress finish (the hedge
# worker's rounds get as long).
JOB_STOP_GRACE_S = 5.0


def build_scheduler() -> AsyncIOScheduler:
    return AsyncIOScheduler(timezone=dt.UTC, job_defaults={"coalesce": True, "max_instances": 1,
                                                           "misfire_grace_time": 30})


class JobRuns:
    """The runs of scheduled jobs in progress, so that a stop can let them finish before the
    resources they use (the pool) close. APScheduler's own shutdown cancels them wherever they
    are, and logs each as a job that "raised an exception"."""

    def __init__(self) -> None:
        self._running: set[asyncio.Task[Any]] = set()
        self.stopping = False
        self.grace_s = JOB_STOP_GRACE_S

    def started(self) -> bool:
        """Record the current run; False once the stop began (the run must not start)."""
        if self.stopping:
            return False
        task = asyncio.current_task()
        if task is not None:
            self._running.add(task)
        return True

    def ended(self) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._running.discard(task)

    async def stop(self, scheduler: AsyncIOScheduler, grace_s: float = JOB_STOP_GRACE_S) -> int:
        """Start no new run, let those in progress finish for up to `grace_s`, then shut the
        scheduler down, which cuts short the rest (counted `cancelled`, logged as a warning).
        Answers how many were cut short."""
        self.stopping, self.grace_s = True, grace_s
        if scheduler.running:
            scheduler.pause()
        if self._running:
            await asyncio.wait(set(self._running), timeout=grace_s)
        late = set(self._running)
        if scheduler.running:
            scheduler.shutdown(wait=False)
        if late:
            await asyncio.wait(late)  # each ends on its cancellation
        return len(late)


# The fractional part of the golden ratio: the k-th job's phase is k times this, modulo its
# interval, so however many jobs there are, no two start at the same moment of their period.
_PHASE_STEP = (5 ** 0.5 - 1) / 2


def job_phase(index: int, every_seconds: float) -> float:
    """Seconds after the scheduler's start of the first run of the `index`-th job added."""
    return every_seconds * ((index * _PHASE_STEP) % 1.0)


def add_job(scheduler: AsyncIOScheduler, metrics: Metrics, name: str,
            job: Callable[[], Awaitable[object]], every_seconds: float,
            *, first_run: dt.datetime | None = None,
            now: Callable[[], dt.datetime] | None = None,
            runs: JobRuns | None = None) -> None:
    """Run `job` every `every_seconds`; a failure is counted and logged, the next run happens.

    Without `first_run`, each job starts at its own phase of its period (`job_phase`): jobs of
    the same period added together would otherwise all run at the same instant, every period,
    and their database and CPU work would land on the requests being served at once. With
    `runs`, a stop (`JobRuns.stop`) lets a run in progress finish."""

    # Exported before the first run: the failure series at 0 (increase() then counts the
    # first failure), and the time since the last success from now on (the alert on a job
    # that stopped succeeding, whatever its interval).
    for outcome in ("success", "failure"):
        metrics.scheduler_runs.labels(name, outcome)
    last_success = metrics.scheduler_last_success.labels(name)
    last_success.set_to_current_time()
    metrics.scheduler_interval.labels(name).set(every_seconds)

    failures = RepeatedFailures()  # an outage fails every run alike: one line, not each

    async def run() -> None:
        if runs is not None and not runs.started():
            return  # submitted as the stop began: its resources may be closing
        try:
            await job()
        except asyncio.CancelledError:
            if runs is None or not runs.stopping:
                raise
            # Cut short by the stop after its grace: said once, not as a crash.
            metrics.scheduler_runs.labels(name, "cancelled").inc()
            log.warning("scheduled job %s cut short by the stop after %g s", name,
                        runs.grace_s)
        except Exception as exc:
            metrics.scheduler_runs.labels(name, "failure").inc()
            if failures.failed(exc):
                log.exception("scheduled job %s failed (%d run(s) in a row)", name,
                              failures.count)
        else:
            metrics.scheduler_runs.labels(name, "success").inc()
            last_success.set_to_current_time()
            if failed := failures.recovered():
                log.info("scheduled job %s succeeds again after %d failed run(s)", name, failed)
        finally:
            if runs is not None:
                runs.ended()

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
