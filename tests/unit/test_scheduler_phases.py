from __future__ import annotations

import datetime as dt
import itertools

from prometheus_client import CollectorRegistry

from dealer.metrics import Metrics
from dealer.scheduler import add_job, build_scheduler, job_phase

START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


async def _nothing() -> None:
    return None


def _offsets(every_seconds: float, names: list[str]) -> dict[str, float]:
    scheduler = build_scheduler()
    metrics = Metrics(CollectorRegistry())
    for name in names:
        add_job(scheduler, metrics, name, _nothing, every_seconds, now=lambda: START)
    return {job.id: (job.next_run_time - START).total_seconds()
            for job in scheduler.get_jobs()}


def test_jobs_of_one_period_start_at_different_moments_of_it() -> None:
    offsets = _offsets(60.0, ["a", "b", "c", "d", "e"])
    for index, name in enumerate("abcde"):  # timedelta keeps microseconds
        assert abs(offsets[name] - job_phase(index, 60.0)) < 1e-6
    moments = sorted(offsets.values())
    assert all(0.0 <= moment < 60.0 for moment in moments)
    # around the period's circle, no two first runs are closer than 14% of the period
    gaps = [later - earlier for earlier, later in itertools.pairwise(moments)]
    gaps.append(60.0 - moments[-1] + moments[0])
    assert min(gaps) > 0.14 * 60.0


def test_a_job_phase_is_a_fraction_of_its_own_period() -> None:
    assert job_phase(0, 1.0) == 0.0
    assert abs(job_phase(1, 1.0) - 0.618) < 0.001
    assert abs(job_phase(4, 60.0) - 0.472 * 60.0) < 0.1
    assert all(0.0 <= job_phase(index, 0.2) < 0.2 for index in range(50))


def test_an_explicit_first_run_is_kept_and_later_runs_keep_the_phase() -> None:
    scheduler = build_scheduler()
    metrics = Metrics(CollectorRegistry())
    first = START + dt.timedelta(seconds=7)
    add_job(scheduler, metrics, "sync", _nothing, 3600.0, first_run=first, now=lambda: START)
    add_job(scheduler, metrics, "check", _nothing, 1.0, now=lambda: START)
    jobs = {job.id: job for job in scheduler.get_jobs()}
    assert jobs["sync"].next_run_time == first
    check = jobs["check"]
    assert abs((check.next_run_time - START).total_seconds() - job_phase(1, 1.0)) < 1e-6
    # one interval after the run, not after the scheduler's start
    later = check.trigger.get_next_fire_time(check.next_run_time, check.next_run_time)
    assert later == check.next_run_time + dt.timedelta(seconds=1)
