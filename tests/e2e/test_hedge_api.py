"""Hedge jobs over HTTP on a desk of three paper LPs: the list with its orders and filters, retry
of a FAILED job, cancel of a PENDING or FAILED one, their refusals (nothing written), their
audit, and a cancel racing a hedge worker's claim."""

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

from dealer.appkeys import ASSET_SCALES, CLOCK, HEDGE_WORKER, METRICS, POOL, VENUES
from dealer.settings import DaemonSecrets, Settings
from hedging.worker import HedgeWorker
from tests.conftest import TRADER, VIEWER, assert_error, assert_ok
from tests.desk import (
    AppClient,
    Desk,
    fill_all,
    hedging_app,
    hedging_desk,
    make_desk,
    metric_value,
    paper_venue,
)
from tests.helpers import (
    Client,
    assert_invalid,
    eventually,
    get,
    post,
    snapshot,
    until_lock_waiters,
)

LIST = "/api/v3/fermata/hedge/list"
RETRY = "/api/v3/fermata/hedge/retry"
CANCEL = "/api/v3/fermata/hedge/cancel"
EXPOSURE = "/api/v3/fermata/dealer/exposure"
COID = re.compile(r"^h-([0-9a-f-]{36})-(\d+)-(\d+)$")
FILLS = (("BUY", "0.5"), ("SELL", "0.3"), ("BUY", "0.2"))
JOB_FIELDS = {
    "jobId", "dealerAccountId", "tradeOrderId", "instrumentId", "symbol", "hedgeSide",
    "origin", "quantity", "hedgedQuantity", "remainingQuantity", "status", "attempts",
    "claimedBy", "claimedUntil", "claimedUntilDateTime", "lastError", "planVwap", "firstOrderAt",
    "firstOrderAtDateTime", "createdAt", "createdAtDateTime", "updatedAt", "updatedAtDateTime",
    "orders",
}
ORDER_FIELDS = {
    "clientOrderId", "attempt", "leg", "tradingAccountId", "venue", "instrumentId", "symbol",
    "orderSide", "quantity", "limitPrice", "planPrice", "status", "filledQuantity", "avgPrice",
    "fees", "feeAsset", "fee", "rejectReason", "createdAt", "createdAtDateTime", "updatedAt",
    "updatedAtDateTime",
}


async def _fill(client: Client, desk: Desk, fills: tuple[tuple[str, str], ...] = FILLS
                ) -> list[dict[str, Any]]:
    return await fill_all(client, desk, fills, concurrency=1)


async def _jobs(client: Client, **params: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    status, body = await get(client, LIST, {k: str(v) for k, v in params.items()}, VIEWER)
    assert status == 200, body
    return assert_ok(body), body["pagination"]


async def _statuses(conn: asyncpg.Connection) -> dict[uuid.UUID, str]:
    return {r["job_id"]: r["status"] for r in await conn.fetch(
        "SELECT job_id, status FROM hedge_job")}


async def _hedge_state(conn: asyncpg.Connection) -> tuple[list[str], list[str]]:
    """Every hedge job and hedge order row, to prove a refused call wrote nothing."""
    jobs = [r[0] for r in await conn.fetch(
        "SELECT to_jsonb(j)::text FROM hedge_job j ORDER BY 1")]
    orders = [r[0] for r in await conn.fetch(
        "SELECT to_jsonb(o)::text FROM hedge_order o ORDER BY 1")]
    return jobs, orders


async def _unhedged(client: Client, desk: Desk) -> Decimal:
    status, body = await get(client, EXPOSURE, {"dealerAccountId": desk.dealer}, VIEWER)
    assert status == 200, body
    [btc] = assert_ok(body)["assets"]
    return Decimal(btc["unhedgedQuantity"])


def _worker(app: web.Application, **options: Any) -> HedgeWorker:
    return HedgeWorker(app[POOL], app[VENUES], app[ASSET_SCALES], app[METRICS], app[CLOCK],
                       poll_interval_s=0.02, **options)


# ---------------------------------------------------------------- list


async def test_the_list_shows_each_job_with_its_orders(
    settings: Settings, secrets: DaemonSecrets, aiohttp_client: AppClient,
    conn: asyncpg.Connection,
) -> None:
    _, client = await hedging_app(settings, secrets, aiohttp_client, hedge_enabled=True)
    desk = await make_desk(client)
    orders = await _fill(client, desk)

    async def hedged() -> bool:
        return set((await _statuses(conn)).values()) == {"HEDGED"}

    await eventually(hedged, within_s=15.0, every_s=0.05)
    jobs, pagination = await _jobs(client, dealerAccountId=desk.dealer)
    assert pagination == {"offset": 0, "limit": 50, "total": 3, "hasNext": False}
    # Newest first: the last fill's job leads.
    assert [j["tradeOrderId"] for j in jobs] == [o["tradeOrderId"] for o in reversed(orders)]
    rows = {r["job_id"]: r for r in await conn.fetch("SELECT * FROM hedge_job")}
    order_rows = {r["client_order_id"]: r for r in await conn.fetch("SELECT * FROM hedge_order")}
    for job, order in zip(jobs, reversed(orders), strict=True):
        assert set(job) == JOB_FIELDS
        row = rows[uuid.UUID(job["jobId"])]
        assert job["dealerAccountId"] == desk.dealer
        assert (job["symbol"], job["instrumentId"]) == ("BTC/USDT", "FERMATA:BTC/USDT")
        assert job["hedgeSide"] == order["orderSide"]  # a client BUY is hedged with a BUY
        assert Decimal(job["quantity"]) == Decimal(order["quantity"])
        assert Decimal(job["hedgedQuantity"]) == row["hedged_quantity"]
        assert Decimal(job["remainingQuantity"]) == row["quantity"] - row["hedged_quantity"]
        assert (job["status"], job["attempts"]) == ("HEDGED", row["attempts"])
        assert job["claimedBy"] is None
        plan = json.loads(row["plan"])
        assert Decimal(job["planVwap"]) == Decimal(plan["vwap"])
        assert job["firstOrderAt"] is not None
        assert job["orders"], job
        for placed in job["orders"]:
            assert set(placed) == ORDER_FIELDS
            match = COID.match(placed["clientOrderId"])
            assert match
            assert (match[1], int(match[2]), int(match[3])) == (
                job["jobId"], placed["attempt"], placed["leg"])
            stored = order_rows[placed["clientOrderId"]]
            assert uuid.UUID(placed["tradingAccountId"]) == stored["trading_account_id"]
            assert placed["tradingAccountId"] in desk.lps
            assert placed["instrumentId"] == f"{stored['venue']}:BTC/USDT"
            assert placed["orderSide"] == job["hedgeSide"]
            assert (Decimal(placed["quantity"]), Decimal(placed["limitPrice"])) == (
                stored["quantity"], stored["limit_price"])
            assert (placed["status"], Decimal(placed["filledQuantity"])) == (
                stored["status"], stored["filled_quantity"])
            assert Decimal(placed["avgPrice"]) == stored["avg_price"]
            assert (placed["feeAsset"], Decimal(placed["fee"])) == (
                stored["fee_asset"], stored["fee_amount"])
            # the paper venue charges one asset: the one fee is the whole of `fees`
            assert placed["fees"] == [{"asset": placed["feeAsset"], "amount": placed["fee"]}]
            leg = plan["legs"][placed["leg"]]
            assert Decimal(placed["planPrice"]) == Decimal(leg["vwap"])

    # Filters: status, client order, dealer, time range; pagination and order.
    assert (await _jobs(client, status="HEDGED"))[1]["total"] == 3
    assert (await _jobs(client, status="FAILED"))[1]["total"] == 0
    one, _ = await _jobs(client, tradeOrderId=orders[1]["tradeOrderId"])
    assert [j["tradeOrderId"] for j in one] == [orders[1]["tradeOrderId"]]
    other = await make_desk(client, link=False)
    assert (await _jobs(client, dealerAccountId=other.dealer))[1]["total"] == 0
    newest = jobs[0]["createdAt"]
    since, _ = await _jobs(client, startTime=newest)
    assert jobs[0]["jobId"] in [j["jobId"] for j in since]
    before, _ = await _jobs(client, endTime=newest)
    assert jobs[0]["jobId"] not in [j["jobId"] for j in before]
    assert len(since) + len(before) == 3
    assert (await _jobs(client, startTime=newest + 3_600_000))[1]["total"] == 0
    page, pagination = await _jobs(client, limit=2, offset=1, ascending="true")
    assert [j["jobId"] for j in page] == [jobs[1]["jobId"], jobs[0]["jobId"]]
    assert pagination == {"offset": 1, "limit": 2, "total": 3, "hasNext": False}


async def test_the_list_refuses_bad_queries(client: Client) -> None:
    for params in ({"status": "DONE"}, {"dealerAccountId": "desk"}, {"tradeOrderId": "1"},
                   {"limit": "0"}, {"startTime": "-1"}, {"ascending": "maybe"},
                   {"jobStatus": "FAILED"}):
        status, body = await get(client, LIST, params)
        assert_invalid(status, body)
    status, body = await get(client, LIST, None, TRADER)
    assert status == 403
    assert_error(body, -101004)


# ---------------------------------------------------------------- retry


async def test_retry_puts_a_failed_job_back_with_a_fresh_budget(
    settings: Settings, secrets: DaemonSecrets, aiohttp_client: AppClient,
    conn: asyncpg.Connection, caplog: pytest.LogCaptureFixture,
) -> None:
    # Every paper order is rejected: the job spends its attempts and FAILS.
    app, client, desk = await hedging_desk(settings, secrets, aiohttp_client, FILLS[:1],
                                           hedge_enabled=True, paper_reject_ratio=1.0,
                                           hedge_max_attempts=2)

    async def failed() -> bool:
        return list((await _statuses(conn)).values()) == ["FAILED"]

    await eventually(failed, within_s=10.0, every_s=0.05)
    await app[HEDGE_WORKER].stop()
    [job], _ = await _jobs(client)
    assert job["attempts"] == 2
    assert all(o["status"] == "REJECTED" for o in job["orders"])
    failure = job["lastError"]
    assert await _unhedged(client, desk) == Decimal("-0.5")  # a FAILED job still counts

    with caplog.at_level(logging.INFO, logger="dealer.services.hedges"):
        status, body = await post(client, RETRY, {"jobId": job["jobId"],
                                                  "reason": "  LP topped up  "})
    assert status == 200, body
    retried = assert_ok(body)
    assert (retried["status"], retried["attempts"]) == ("PENDING", 0)
    assert (retried["claimedBy"], retried["claimedUntil"]) == (None, None)
    assert retried["lastError"].startswith("RETRY by ")
    assert ": LP topped up (previous error: " in retried["lastError"]
    assert failure in retried["lastError"]
    assert retried["orders"] == job["orders"]  # what was sent stays on record
    [record] = [r for r in caplog.records if getattr(r, "event", "") == "hedge_job_retry"]
    assert (record.job_id, record.previous_status, record.reason) == (  # type: ignore[attr-defined]
        job["jobId"], "FAILED", "LP topped up")
    assert record.actor  # type: ignore[attr-defined]
    assert await _unhedged(client, desk) == Decimal("-0.5")
    # ... and the dealer's operation history keeps it for good.
    status, body = await get(client, "/api/v3/tradingAccount/operation/list",
                             {"tradingAccountId": desk.dealer, "operationType": "HEDGE_RETRY"})
    assert status == 200, body
    [operation] = assert_ok(body)
    assert operation["detail"] == {"jobId": job["jobId"], "actor": record.actor,  # type: ignore[attr-defined]
                                   "reason": "LP topped up", "previousStatus": "FAILED",
                                   "previousError": failure}

    # The LPs accept orders again: the next worker hedges the retried job, under client order
    # ids that continue after the attempts already sent (never one sent twice).
    for venue in ("BINANCE", "OKX", "BYBIT"):
        paper_venue(app, venue).set_faults(reject_ratio=0.0)
    worker = _worker(app)

    async def hedged() -> bool:
        await worker.run_once()
        return list((await _statuses(conn)).values()) == ["HEDGED"]

    await eventually(hedged, within_s=15.0, every_s=0.05)
    ids = [r["client_order_id"] for r in await conn.fetch(
        "SELECT client_order_id FROM hedge_order ORDER BY created_at")]
    assert len(ids) == len(set(ids)) > len(job["orders"])
    assert abs(await _unhedged(client, desk)) < Decimal("0.00001")


async def test_a_retried_job_is_hedged(
    settings: Settings, secrets: DaemonSecrets, aiohttp_client: AppClient,
    conn: asyncpg.Connection,
) -> None:
    app, client, desk = await hedging_desk(settings, secrets, aiohttp_client, FILLS[:1])
    # How a job fails is the worker's business; here one failed before sending anything.
    await conn.execute("UPDATE hedge_job SET status = 'FAILED', last_error = 'venue down'")
    [job], _ = await _jobs(client, status="FAILED")
    status, body = await post(client, RETRY, {"jobId": job["jobId"], "reason": "venue back"})
    assert status == 200, body
    app[HEDGE_WORKER].start()

    async def hedged() -> bool:
        return list((await _statuses(conn)).values()) == ["HEDGED"]

    await eventually(hedged, within_s=15.0, every_s=0.05)
    assert abs(await _unhedged(client, desk)) < Decimal("0.00001")


async def test_retry_refusals_write_nothing(client: Client, conn: asyncpg.Connection) -> None:
    desk = await make_desk(client)
    await _fill(client, desk, FILLS[:1])
    [job], _ = await _jobs(client)
    before, hedge_before = await snapshot(conn), await _hedge_state(conn)
    cases: list[tuple[dict[str, Any], int, int]] = [
        ({"jobId": str(uuid.uuid4()), "reason": "x"}, 404, -170001),
        ({"jobId": job["jobId"], "reason": "x"}, 409, -170002),  # PENDING, not FAILED
    ]
    for body, status_code, errno in cases:
        status, payload = await post(client, RETRY, body)
        assert status == status_code, payload
        assert_error(payload, errno)
    for body in ({}, {"jobId": job["jobId"]}, {"jobId": job["jobId"], "reason": "  "},
                 {"jobId": job["jobId"], "reason": "x" * 501},
                 {"jobId": job["jobId"], "reason": "a\x00b"},
                 {"jobId": "job", "reason": "x"}, {"jobId": job["jobId"], "reason": 1},
                 {"jobId": job["jobId"], "reason": "x", "force": True}):
        status, payload = await post(client, RETRY, body)
        assert_invalid(status, payload)
    status, payload = await post(client, RETRY, {"jobId": job["jobId"], "reason": "x"}, VIEWER)
    assert status == 403
    assert_error(payload, -101004)
    assert await snapshot(conn) == before
    assert await _hedge_state(conn) == hedge_before


# ---------------------------------------------------------------- cancel


async def test_cancel_takes_a_pending_job_out_of_the_exposure(
    client: Client, conn: asyncpg.Connection, caplog: pytest.LogCaptureFixture,
) -> None:
    desk = await make_desk(client)
    await _fill(client, desk, FILLS[:2])
    assert await _unhedged(client, desk) == Decimal("-0.2")
    jobs, _ = await _jobs(client)
    buy = next(j for j in jobs if j["hedgeSide"] == "BUY")
    with caplog.at_level(logging.INFO, logger="dealer.services.hedges"):
        status, body = await post(client, CANCEL, {"jobId": buy["jobId"],
                                                   "reason": "hedged by hand on OKX"})
    assert status == 200, body
    cancelled = assert_ok(body)
    assert cancelled["status"] == "CANCELLED"
    assert re.match(r"^CANCEL by .+ at \d{4}-\d\d-\d\dT.*Z: hedged by hand on OKX$",
                    cancelled["lastError"]), cancelled["lastError"]
    assert cancelled["updatedAt"] >= buy["updatedAt"]
    # The client BUY left the dealer short 0.5; the SELL left it long 0.3: only that remains.
    assert await _unhedged(client, desk) == Decimal("0.3")
    assert [j["jobId"] for j in (await _jobs(client, status="CANCELLED"))[0]] == [buy["jobId"]]
    assert await metric_value(client, 'dealer_hedge_jobs_finished_total{status="CANCELLED"}') == 1.0
    [record] = [r for r in caplog.records if getattr(r, "event", "") == "hedge_job_cancel"]
    assert record.previous_status == "PENDING"  # type: ignore[attr-defined]
    # Cancelled is final: neither retried nor cancelled again.
    for path, errno in ((RETRY, -170002), (CANCEL, -170003)):
        status, payload = await post(client, path, {"jobId": buy["jobId"], "reason": "again"})
        assert status == 409
        assert_error(payload, errno)


async def test_cancel_refusals_write_nothing(client: Client, conn: asyncpg.Connection) -> None:
    desk = await make_desk(client)
    await _fill(client, desk, (*FILLS, ("SELL", "0.25")))
    jobs = [r["job_id"] for r in await conn.fetch("SELECT job_id FROM hedge_job ORDER BY 1")]
    hedged, working, held, sending = jobs
    await conn.execute("UPDATE hedge_job SET status = 'HEDGED' WHERE job_id = $1", hedged)
    await conn.execute("UPDATE hedge_job SET status = 'IN_PROGRESS' WHERE job_id = $1", working)
    # A FAILED job a worker still holds (its lease runs), and one with an order in flight.
    await conn.execute(
        """UPDATE hedge_job SET status = 'FAILED', claimed_by = 'replica-2',
               claimed_until = now() + interval '1 minute' WHERE job_id = $1""", held)
    await conn.execute("UPDATE hedge_job SET status = 'FAILED' WHERE job_id = $1", sending)
    await conn.execute(
        """INSERT INTO hedge_order (client_order_id, job_id, attempt, leg, trading_account_id,
               venue, symbol, side, quantity, limit_price, status, created_at, updated_at)
           SELECT 'h-' || job_id || '-1-0', job_id, 1, 0, $2, 'BINANCE', symbol, side,
                  quantity, 1, 'UNKNOWN', now(), now()
           FROM hedge_job WHERE job_id = $1""", sending, uuid.UUID(desk.lps[0]))
    before, hedge_before = await snapshot(conn), await _hedge_state(conn)
    for job_id, errno in ((uuid.uuid4(), -170001), (hedged, -170003), (working, -170003),
                          (held, -170004), (sending, -170005)):
        status, payload = await post(client, CANCEL, {"jobId": str(job_id), "reason": "x"})
        assert status == (404 if errno == -170001 else 409), payload
        assert_error(payload, errno)
    status, payload = await post(client, CANCEL, {"jobId": str(held)})
    assert_invalid(status, payload, "reason")
    assert await snapshot(conn) == before
    assert await _hedge_state(conn) == hedge_before
    # Once the lease is over, the FAILED job can be cancelled.
    await conn.execute("UPDATE hedge_job SET claimed_until = now() - interval '1 second' "
                       "WHERE job_id = $1", held)
    status, payload = await post(client, CANCEL, {"jobId": str(held), "reason": "by hand"})
    assert status == 200, payload
    assert (assert_ok(payload)["status"], assert_ok(payload)["claimedBy"]) == ("CANCELLED", None)


async def test_a_cancel_waiting_on_a_workers_claim_is_refused(
    client: Client, conn: asyncpg.Connection, dsn: str,
) -> None:
    desk = await make_desk(client)
    await _fill(client, desk, FILLS[:1])
    job_id = await conn.fetchval("SELECT job_id FROM hedge_job")
    claimer = await asyncpg.connect(dsn)
    try:
        claim = claimer.transaction()
        await claim.start()
        # What a worker's claim does: lock the row, then record the claim, then commit.
        await claimer.fetchrow("SELECT job_id FROM hedge_job WHERE job_id = $1 "
                               "FOR UPDATE SKIP LOCKED", job_id)
        cancel = asyncio.create_task(post(client, CANCEL, {"jobId": str(job_id),
                                                           "reason": "by hand"}))
        await until_lock_waiters(conn, 1)
        await claimer.execute(
            """UPDATE hedge_job SET status = 'IN_PROGRESS', claimed_by = 'worker-1',
                   claimed_until = now() + interval '30 seconds' WHERE job_id = $1""", job_id)
        await claim.commit()
        status, payload = await cancel
    finally:
        await claimer.close()
    assert status == 409, payload
    assert_error(payload, -170003)
    assert await conn.fetchval("SELECT status FROM hedge_job") == "IN_PROGRESS"


async def test_a_cancel_and_a_running_worker_never_both_win(
    settings: Settings, secrets: DaemonSecrets, aiohttp_client: AppClient,
    conn: asyncpg.Connection,
) -> None:
    app, client, desk = await hedging_desk(settings, secrets, aiohttp_client, fills=())
    worker = _worker(app)
    for _ in range(6):
        await _fill(client, desk, FILLS[:1])
        job_id = await conn.fetchval("SELECT job_id FROM hedge_job WHERE status = 'PENDING'")
        (status, payload), worked = await asyncio.gather(
            post(client, CANCEL, {"jobId": str(job_id), "reason": "race"}), worker.run_once())
        row = await conn.fetchrow("SELECT status, attempts FROM hedge_job WHERE job_id = $1",
                                  job_id)
        assert row is not None
        sent = await conn.fetchval("SELECT count(*) FROM hedge_order WHERE job_id = $1", job_id)
        if status == 200:
            # The worker may still claim the job's lane, but sends nothing for the job.
            assert (row["status"], sent) == ("CANCELLED", 0)
        else:
            assert payload["errno"] in (-170003, -170004, -170005), payload
            assert worked
            assert row["status"] in ("IN_PROGRESS", "HEDGED")
        # Finish the job the worker took, so the next round has one PENDING job.
        for _ in range(10):
            if not await conn.fetchval(
                    "SELECT count(*) FROM hedge_job WHERE status = 'IN_PROGRESS'"):
                break
            await conn.execute("UPDATE hedge_job SET claimed_until = NULL")
            await worker.run_once()
        assert await conn.fetchval(
            "SELECT count(*) FROM hedge_job WHERE status IN ('PENDING', 'IN_PROGRESS')") == 0
