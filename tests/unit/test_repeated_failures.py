"""A loop or scheduled job failing the same way again and again (a database outage fails each
run) logs the first failure, each different one and a reminder a minute, not every run."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import CollectorRegistry

from dealer.metrics import Metrics
from dealer.scheduler import add_job, build_scheduler
from ledger.outbox import RepeatedFailures


def test_repeats_are_counted_and_a_different_failure_or_a_minute_logs_again() -> None:
    now = [0.0]
    failures = RepeatedFailures(clock=lambda: now[0])
    assert failures.recovered() == 0
    assert failures.failed(ConnectionRefusedError("refused"))
    now[0] = 59.0
    assert not failures.failed(ConnectionRefusedError("refused"))
    assert failures.failed(ConnectionResetError("refused"))  # another exception
    assert failures.failed(ConnectionResetError("reset"))  # another message
    assert not failures.failed(ConnectionResetError("reset"))
    now[0] = 119.0
    assert failures.failed(ConnectionResetError("reset"))  # a reminder
    assert failures.count == 6
    assert failures.recovered() == 6
    assert failures.count == 0
    assert failures.failed(ConnectionResetError("reset"))  # a new series logs at once


class _Outage:
    """A job that fails like a database out of reach until it is told it is back."""

    def __init__(self) -> None:
        self.down = True

    async def __call__(self) -> None:
        if self.down:
            raise ConnectionRefusedError("[Errno 111] Connect call failed")


async def test_a_job_failing_every_run_alike_logs_once_then_says_it_recovered(
        caplog: pytest.LogCaptureFixture) -> None:
    metrics, outage, scheduler = Metrics(CollectorRegistry()), _Outage(), build_scheduler()
    add_job(scheduler, metrics, "expiry", outage, 0.2)
    run = scheduler.get_job("expiry").func
    caplog.set_level(logging.INFO, logger="dealer.scheduler")

    for _ in range(10):
        await run()
    failed = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in failed] == ["scheduled job expiry failed (1 run(s) in a row)"]
    assert failed[0].exc_info is not None  # the first one carries its traceback
    assert metrics.registry.get_sample_value(
        "dealer_scheduler_job_runs_total", {"job": "expiry", "outcome": "failure"}) == 10

    outage.down = False
    await run()
    await run()
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.INFO] == [
        "scheduled job expiry succeeds again after 10 failed run(s)"]
