"""The kill switch, run by the scheduled `exposure_check` job: unhedged notional over the dealer's
limit, or too many FAILED hedge jobs, pause its quoting; the gauges, the dealer, the exposure
endpoint and health say so; an admin's resume clears it, and it engages again at the next check
while its condition holds."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from aiohttp import web

from dealer import db
from dealer.appkeys import CLOCK, MARKET_DATA
from dealer.services.exposure import OPEN_STATUSES, KillSwitchPolicy, check_and_engage
from dealer.settings import DaemonSecrets, Settings
from tests.conftest import VIEWER, assert_error, assert_ok
from tests.desk import (
    QUOTE,
    AppClient,
    Desk,
    accept,
    hedging_app,
    make_desk,
    quote_body,
    request_quote,
)
from tests.helpers import Client, eventually, get, post

DEALER = "/api/v3/fermata/dealer"
CHECKS = 'dealer_scheduler_job_runs_total{job="exposure_check",outcome="success"}'


async def _app(settings: Settings, secrets: DaemonSecrets, aiohttp_client: AppClient,
               **changes: Any) -> tuple[web.Application, Client]:
    return await hedging_app(settings, secrets, aiohttp_client,
                             **{"exposure_check_ms": 200, **changes})


async def _dealer(client: Client, desk: Desk) -> dict[str, Any]:
    status, body = await get(client, f"{DEALER}/get", {"dealerAccountId": desk.dealer})
    assert status == 200, body
    data: dict[str, Any] = assert_ok(body)
    return data


async def _metrics(client: Client) -> dict[str, float]:
    text = await (await client.get("/metrics")).text()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def _gauge(name: str, desk: Desk, **labels: str) -> str:
    pairs = {"dealer_account_id": desk.dealer, **labels}
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(pairs.items())) + "}"


async def _paused_by(client: Client, desk: Desk, reason: str) -> None:
    async def paused() -> bool:
        dealer = await _dealer(client, desk)
        return dealer["status"] == "PAUSED" and dealer["pausedBy"] == reason

    await eventually(paused, within_s=5.0, every_s=0.05)


async def _checks_pass(client: Client, count: int = 2) -> None:
    """Return once the scheduled check has run `count` more times."""
    start = (await _metrics(client)).get(CHECKS, 0.0)

    async def ran() -> bool:
        return (await _metrics(client)).get(CHECKS, 0.0) >= start + count

    await eventually(ran, within_s=5.0, every_s=0.05)


async def test_unhedged_notional_over_the_limit_pauses_quoting(
    settings: Settings, secrets: DaemonSecrets, aiohttp_client: AppClient,
    conn: asyncpg.Connection,
) -> None:
    _, client = await _app(settings, secrets, aiohttp_client)
    desk = await make_desk(client, maxUnhedgedNotional="20000")
    await accept(client, await request_quote(client, desk, orderSide="BUY", quantity="0.5"))
    await _paused_by(client, desk, "exposure")
    dealer = await _dealer(client, desk)
    assert dealer["pauseReason"].startswith("kill switch: unhedged notional ")
    assert "USDT is over the limit 20000" in dealer["pauseReason"]

    status, body = await post(client, QUOTE, quote_body(desk, orderSide="SELL", quantity="0.1"))
    assert status == 400
    assert_error(body, -160007)
    metrics = await _metrics(client)
    assert metrics[_gauge("dealer_kill_switch_engaged", desk, reason="exposure")] == 1
    assert metrics[_gauge("dealer_kill_switch_engaged", desk, reason="manual")] == 0
    assert metrics[_gauge("dealer_kill_switch_engaged", desk, reason="hedge_failures")] == 0
    assert metrics[_gauge("dealer_unhedged_exposure", desk, asset="BTC")] == -0.5
    assert metrics[_gauge("dealer_unhedged_notional", desk)] > 20000
    status, body = await get(client, f"{DEALER}/exposure", {"dealerAccountId": desk.dealer},
                             VIEWER)
    kill_switch = assert_ok(body)["killSwitch"]
    assert (kill_switch["engaged"], kill_switch["reason"]) == (True, "exposure")
    # Health shows it and is degraded, not unhealthy: the daemon itself is fine.
    resp = await client.get("/api/v3/health")
    assert resp.status == 200
    health = await resp.json()
    assert health["status"] == "degraded"
    dealers = health["checks"]["dealers"]
    assert dealers["status"] == "degraded"
    [engaged] = dealers["killSwitches"]
    assert (engaged["dealerAccountId"], engaged["reason"]) == (desk.dealer, "exposure")
    assert engaged["pauseReason"] == dealer["pauseReason"]

    # Resume clears it; the condition still holds, so the next check engages it again.
    status, body = await post(client, f"{DEALER}/resume", {"dealerAccountId": desk.dealer})
    resumed = assert_ok(body)
    assert (resumed["status"], resumed["pausedBy"], resumed["pauseReason"]) == (
        "ACTIVE", None, None)
    await _paused_by(client, desk, "exposure")

    # The desk hedges by hand and cancels the job: after resume, quoting stays on.
    job_id = await conn.fetchval("SELECT job_id FROM hedge_job")
    status, body = await post(client, "/api/v3/fermata/hedge/cancel",
                              {"jobId": str(job_id), "reason": "bought 0.5 BTC on OKX"})
    assert status == 200, body
    status, body = await post(client, f"{DEALER}/resume", {"dealerAccountId": desk.dealer})
    assert assert_ok(body)["status"] == "ACTIVE"
    await _checks_pass(client)
    assert (await _dealer(client, desk))["status"] == "ACTIVE"
    metrics = await _metrics(client)
    assert metrics[_gauge("dealer_kill_switch_engaged", desk, reason="exposure")] == 0
    assert metrics[_gauge("dealer_unhedged_exposure", desk, asset="BTC")] == 0
    assert metrics[_gauge("dealer_unhedged_notional", desk)] == 0
    health = await (await client.get("/api/v3/health")).json()
    assert health["checks"]["dealers"] == {"status": "healthy", "killSwitches": []}

    # The dealer's operation history tells the story, the kill switch's pauses included.
    history = [(r["operation_type"], json.loads(r["detail"])) for r in await conn.fetch(
        """SELECT operation_type, detail FROM trading_account_operation
           WHERE trading_account_id = $1
             AND operation_type IN ('PAUSE', 'RESUME', 'HEDGE_RETRY', 'HEDGE_CANCEL')
           ORDER BY created_at""", uuid.UUID(desk.dealer))]
    assert [kind for kind, _ in history] == [
        "PAUSE", "RESUME", "PAUSE", "HEDGE_CANCEL", "RESUME"]
    first_pause, first_resume, second_pause, cancel, _ = (d for _, d in history)
    assert (first_pause["by"], first_pause["reason"]) == ("exposure", dealer["pauseReason"])
    assert first_resume == {"previousPausedBy": "exposure",
                            "previousReason": dealer["pauseReason"]}
    assert second_pause["by"] == "exposure"
    assert (cancel["jobId"], cancel["reason"], cancel["previousStatus"]) == (
        str(job_id), "bought 0.5 BTC on OKX", "PENDING")
    assert cancel["actor"]
    status, body = await get(client, "/api/v3/tradingAccount/operation/list",
                             {"tradingAccountId": desk.dealer, "operationType": "HEDGE_CANCEL"},
                             VIEWER)
    assert status == 200, body
    assert [o["operationType"] for o in assert_ok(body)] == ["HEDGE_CANCEL"]


async def test_a_high_hedge_failure_rate_pauses_quoting(
    settings: Settings, secrets: DaemonSecrets, aiohttp_client: AppClient,
    conn: asyncpg.Connection,
) -> None:
    # Every paper order is rejected: each job FAILS after its one attempt.
    _, client = await _app(settings, secrets, aiohttp_client, hedge_enabled=True,
                           paper_reject_ratio=1.0, hedge_max_attempts=1,
                           kill_switch_min_jobs=2, kill_switch_failure_window=4)
    desk = await make_desk(client)
    await accept(client, await request_quote(client, desk, orderSide="BUY", quantity="0.01"))
    # One failure is below the minimum count: quoting goes on.
    async def failed(count: int) -> bool:
        return await conn.fetchval(
            "SELECT count(*) FROM hedge_job WHERE status = 'FAILED'") == count

    await eventually(lambda: failed(1), within_s=10.0, every_s=0.05)
    await _checks_pass(client)
    assert (await _dealer(client, desk))["status"] == "ACTIVE"
    await accept(client, await request_quote(client, desk, orderSide="SELL", quantity="0.01"))
    await _paused_by(client, desk, "hedge_failures")
    dealer = await _dealer(client, desk)
    assert dealer["pauseReason"] == (
        "kill switch: 2 of the last 2 finished hedge jobs FAILED (threshold 50 %)")
    metrics = await _metrics(client)
    assert metrics[_gauge("dealer_kill_switch_engaged", desk, reason="hedge_failures")] == 1
    status, body = await get(client, f"{DEALER}/exposure", {"dealerAccountId": desk.dealer},
                             VIEWER)
    failures = assert_ok(body)["killSwitch"]["hedgeFailures"]
    assert (failures["finished"], failures["failed"], failures["rate"]) == (2, 2, "1")

    # The desk hedges both by hand: cancelled jobs are no hedge outcome, the rate is gone.
    for job_id in [r["job_id"] for r in await conn.fetch("SELECT job_id FROM hedge_job")]:
        status, body = await post(client, "/api/v3/fermata/hedge/cancel",
                                  {"jobId": str(job_id), "reason": "hedged by hand"})
        assert status == 200, body
    status, body = await post(client, f"{DEALER}/resume", {"dealerAccountId": desk.dealer})
    assert assert_ok(body)["status"] == "ACTIVE"
    await _checks_pass(client)
    assert (await _dealer(client, desk))["status"] == "ACTIVE"


async def test_a_manual_pause_stays_manual_and_keeps_health_green(
    settings: Settings, secrets: DaemonSecrets, aiohttp_client: AppClient,
) -> None:
    _, client = await _app(settings, secrets, aiohttp_client)
    desk = await make_desk(client)
    await accept(client, await request_quote(client, desk, orderSide="BUY", quantity="0.5"))
    status, body = await post(client, f"{DEALER}/pause",
                              {"dealerAccountId": desk.dealer, "reason": "desk meeting"})
    paused = assert_ok(body)
    assert (paused["status"], paused["pausedBy"]) == ("PAUSED", "manual")
    metrics = await _metrics(client)
    assert metrics[_gauge("dealer_kill_switch_engaged", desk, reason="manual")] == 1
    # The exposure now passes the limit: the admin's pause is not taken over.
    status, body = await post(client, f"{DEALER}/update",
                              {"dealerAccountId": desk.dealer, "maxUnhedgedNotional": "1000"})
    assert status == 200, body
    await _checks_pass(client)
    dealer = await _dealer(client, desk)
    assert (dealer["status"], dealer["pausedBy"], dealer["pauseReason"]) == (
        "PAUSED", "manual", "desk meeting")
    metrics = await _metrics(client)
    assert metrics[_gauge("dealer_kill_switch_engaged", desk, reason="manual")] == 1
    assert metrics[_gauge("dealer_kill_switch_engaged", desk, reason="exposure")] == 0
    health = await (await client.get("/api/v3/health")).json()
    assert health["status"] == "healthy"
    assert health["checks"]["dealers"]["status"] == "healthy"
    assert [k["reason"] for k in health["checks"]["dealers"]["killSwitches"]] == ["manual"]
    # Resumed, the kill switch takes over at its next check; an admin's pause then makes it
    # manual again.
    status, body = await post(client, f"{DEALER}/resume", {"dealerAccountId": desk.dealer})
    assert assert_ok(body)["status"] == "ACTIVE"
    await _paused_by(client, desk, "exposure")
    engaged = await _dealer(client, desk)
    status, body = await post(client, f"{DEALER}/pause", {"dealerAccountId": desk.dealer})
    taken = assert_ok(body)
    assert (taken["pausedBy"], taken["pauseReason"]) == ("manual", engaged["pauseReason"])
    metrics = await _metrics(client)
    assert metrics[_gauge("dealer_kill_switch_engaged", desk, reason="manual")] == 1
    assert metrics[_gauge("dealer_kill_switch_engaged", desk, reason="exposure")] == 0


async def test_replicas_checking_at_once_pause_a_dealer_once(
    settings: Settings, secrets: DaemonSecrets, aiohttp_client: AppClient, dsn: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The app's own check waits a minute: only the two "replicas" below check.
    app, client = await _app(settings, secrets, aiohttp_client, exposure_check_ms=60000)
    desk = await make_desk(client, maxUnhedgedNotional="20000")
    await accept(client, await request_quote(client, desk, orderSide="BUY", quantity="0.5"))
    policy = KillSwitchPolicy(Decimal("0.5"), 20, 5)
    pools = [await db.create_pool(dsn, 1, 2) for _ in range(2)]
    try:
        with caplog.at_level(logging.WARNING, logger="dealer.services.exposure"):
            checks = await asyncio.gather(*(
                check_and_engage(pool, app[MARKET_DATA], policy, app[CLOCK]())
                for pool in pools))
    finally:
        for pool in pools:
            await pool.close()
    engaged = [r for r in caplog.records if getattr(r, "event", "") == "kill_switch_engaged"]
    assert len(engaged) == 1
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval(
            """SELECT count(*) FROM trading_account_operation
               WHERE trading_account_id = $1 AND operation_type = 'PAUSE'""",
            uuid.UUID(desk.dealer)) == 1
    finally:
        await conn.close()
    assert engaged[0].dealer_account_id == desk.dealer  # type: ignore[attr-defined]
    for checked in checks:
        [report] = [c for c in checked if c.dealer_account_id == uuid.UUID(desk.dealer)]
        assert (report.status, report.paused_by) == ("PAUSED", "exposure")



async def test_the_open_statuses_are_every_status_but_hedged_and_cancelled(
    conn: asyncpg.Connection,
) -> None:
    # The exposure query lists the statuses that hold exposure (so an index serves it): a
    # status added to hedge_job must be placed on one side or the other.
    definition = await conn.fetchval(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = "
        "'hedge_job_status_ck'")
    allowed = set(re.findall(r"'([A-Z_]+)'", definition))
    assert allowed - {"HEDGED", "CANCELLED"} == set(OPEN_STATUSES)
