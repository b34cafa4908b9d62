from __future__ import annotations

from aiohttp.test_utils import TestClient

from dealer.appkeys import SCHEDULER
from tests.helpers import eventually


async def test_every_job_is_scheduled_and_runs(client: TestClient) -> None:
    scheduler = client.app[SCHEDULER]  # type: ignore[index]
    jobs = {job.id: job for job in scheduler.get_jobs()}
    assert set(jobs) == {"book_subscriptions", "instrument_sync", "quote_expiry",
                         "reconciliation", "exposure_check", "lp_drain", "pnl_fold",
                         "late_fees"}
    assert all(job.next_run_time is not None for job in jobs.values())

    async def ran() -> bool:
        text = await (await client.get("/metrics")).text()
        return all(f'dealer_scheduler_job_runs_total{{job="{name}",outcome="success"}}' in text
                   for name in ("book_subscriptions", "quote_expiry", "instrument_sync",
                                "exposure_check", "lp_drain", "late_fees"))

    await eventually(ran, within_s=3.0, every_s=0.1)
