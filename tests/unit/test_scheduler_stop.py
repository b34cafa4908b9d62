"""A stop lets the scheduled jobs' runs in progress finish, and cuts short, without a crash
report, those that outlast its grace."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time

import pytest
from apscheduler.events import EVENT_JOB_ERROR
from prometheus_client import CollectorRegistry

from dealer.metrics import Metrics
from dealer.scheduler import JobRuns, add_job, build_scheduler
from tests.helpers import eventually


def _runs_counted(metrics: Metrics, name: str, outcome: str) -> float:
    value = metrics.registry.get_sample_value(
        "dealer_scheduler_job_runs_total", {"job": name, "outcome": outcome})
    return value or 0.0


class _SlowJob:
    """A job that runs until it is let go (or cancelled), noting how its runs went."""

    def __init__(self) -> None:
        self.running = asyncio.Event()
        self.release = asyncio.Event()
        self.started = 0
        self.finished = 0

    async def __call__(self) -> None:
        self.started += 1
        self.running.set()
        await self.release.wait()
        self.finished += 1


def _started_scheduler(job: _SlowJob, metrics: Metrics, runs: JobRuns):  # type: ignore[no-untyped-def]
    scheduler = build_scheduler()
    add_job(scheduler, metrics, "slow", job, 0.05, runs=runs,
            first_run=dt.datetime.now(dt.UTC))
    scheduler.start()
    return scheduler


async def test_a_run_in_progress_finishes_before_the_stop_returns(
        caplog: pytest.LogCaptureFixture) -> None:
    metrics, runs, job = Metrics(CollectorRegistry()), JobRuns(), _SlowJob()
    scheduler = _started_scheduler(job, metrics, runs)
    await asyncio.wait_for(job.running.wait(), 5)
    caplog.set_level(logging.WARNING)

    stopping = asyncio.create_task(runs.stop(scheduler, grace_s=5.0))
    await asyncio.sleep(0.2)  # four periods: no new run starts, the one in progress waits
    assert not stopping.done()
    assert job.started == 1
    job.release.set()
    assert await asyncio.wait_for(stopping, 5) == 0  # nothing cut short

    assert job.finished == 1
    assert _runs_counted(metrics, "slow", "success") == 1
    assert not scheduler.running
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_a_run_outlasting_the_grace_is_cut_short_without_a_crash_report(
        caplog: pytest.LogCaptureFixture) -> None:
    metrics, runs, job = Metrics(CollectorRegistry()), JobRuns(), _SlowJob()
    scheduler = _started_scheduler(job, metrics, runs)
    await asyncio.wait_for(job.running.wait(), 5)
    caplog.set_level(logging.WARNING)

    started = time.monotonic()
    assert await runs.stop(scheduler, grace_s=0.3) == 1
    assert 0.3 <= time.monotonic() - started < 3.0

    assert job.finished == 0
    assert _runs_counted(metrics, "slow", "cancelled") == 1
    assert _runs_counted(metrics, "slow", "failure") == 0
    # APScheduler's own shutdown would log the cancelled run at ERROR as a job that "raised an
    # exception", with a traceback; the stop says once, as a warning, what it cut short.
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        "scheduled job slow cut short by the stop after 0.3 s"]


async def test_without_a_stop_a_cancelled_run_stays_cancelled() -> None:
    # A run cancelled by anything but the stop is not taken for one cut short (nothing swallows
    # its cancellation): APScheduler sees it end on CancelledError.
    metrics, runs, job = Metrics(CollectorRegistry()), JobRuns(), _SlowJob()
    scheduler = _started_scheduler(job, metrics, runs)
    errors: list[BaseException | None] = []
    scheduler.add_listener(lambda event: errors.append(event.exception), EVENT_JOB_ERROR)
    await asyncio.wait_for(job.running.wait(), 5)
    scheduler.shutdown(wait=False)  # APScheduler's shutdown cancels the run's task

    async def ended() -> bool:
        return bool(errors)
    await eventually(ended, within_s=2.0, every_s=0.02)
    assert [type(error) for error in errors] == [asyncio.CancelledError]
    assert _runs_counted(metrics, "slow", "cancelled") == 0
    assert _runs_counted(metrics, "slow", "success") == 0
