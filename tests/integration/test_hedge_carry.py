"""A lane's carry between hedges: counted in the dealer's exposure, hedged by a carry job once
the lane is idle and an LP would take it, left waiting (and visible) while it is below every
LP's minimum order, and given back to its lane when a job holding some of it is cancelled;
residuals that together an LP takes ride a carry job.

The carries here are made by moving a client fill's whole need into its lane's carry, as the
worker does with the dust a finished job leaves (`policy.settle_dust`), only larger: the books
stay exact (the ledger's position is what the lane still has to do)."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any

import asyncpg
from aiohttp import web

from dealer.appkeys import HEDGE_WORKER
from dealer.services.rfq import exposure_of
from dealer.settings import DaemonSecrets, Settings
from tests.conftest import assert_ok
from tests.desk import (
    LOT,
    AppClient,
    Desk,
    check_books,
    desk_with_fills,
    hedge_worker,
    hedges_final,
    ledger_balances,
    metric_value,
)
from tests.helpers import Client, eventually, get, outbox_drained, post

EXPOSURE = "/api/v3/fermata/dealer/exposure"


async def _desk_with_a_carry(settings: Settings, secrets: DaemonSecrets,
                             aiohttp_client: AppClient, conn: asyncpg.Connection, side: str,
                             quantity: str) -> tuple[web.Application, Client, Desk]:
    """A desk (its hedge worker not started) whose one client fill's need is all in the
    lane's carry: the fill's job settled, the carry what the dealer still has to trade."""
    app, client, desk = await desk_with_fills(settings, secrets, aiohttp_client,
                                              ((side, quantity),), hedge_enabled=False,
                                              paper_journal=True)
    job = await conn.fetchrow("SELECT * FROM hedge_job")
    # a client SELL leaves the dealer long: its job SELLs; the lane then has to sell (-)
    signed = Decimal(quantity) * (1 if job["side"] == "BUY" else -1)
    await conn.execute(
        """WITH settled AS (
               UPDATE hedge_job SET status = 'HEDGED', hedged_quantity = quantity,
                   finished_at = $2, updated_at = $2 RETURNING dealer_account_id, symbol)
           UPDATE hedge_lane l SET carry = l.carry + $1 FROM settled
           WHERE l.dealer_account_id = settled.dealer_account_id
             AND l.symbol = settled.symbol""", signed, dt.datetime.now(dt.UTC))
    return app, client, desk


async def _btc_exposure(client: Client, desk: Desk) -> dict[str, Any]:
    status, body = await get(client, EXPOSURE, {"dealerAccountId": desk.dealer})
    assert status == 200, body
    [btc] = [a for a in assert_ok(body)["assets"] if a["asset"] == "BTC"]
    return btc


async def test_an_idle_lanes_carry_an_lp_takes_is_hedged_by_a_carry_job(
    settings: Settings, secrets: DaemonSecrets, aiohttp_client: AppClient,
    conn: asyncpg.Connection,
) -> None:
    app, client, desk = await _desk_with_a_carry(settings, secrets, aiohttp_client, conn,
                                                 "SELL", "0.01")
    # The carry is the dealer's position: the exposure shows it, as the ledger does.
    btc = await _btc_exposure(client, desk)
    assert (btc["unhedgedQuantity"], btc["carryQuantity"], btc["openJobs"]) == (
        "0.01", "0.01", 0)
    assert await exposure_of(conn, desk.dealer, "BTC") == Decimal("0.01")
    await outbox_drained(conn, within_s=10.0)
    assert (await ledger_balances(client, f"dealer:{desk.dealer}"))["BTC/8"] == Decimal("0.01")

    app[HEDGE_WORKER].start()  # it looks for idle lanes' carry on its first pass

    async def carry_jobs() -> int | None:
        return await conn.fetchval(
            "SELECT count(*) FROM hedge_job WHERE trade_order_id IS NULL") or None

    assert await eventually(carry_jobs, within_s=5.0) == 1
    jobs = await hedges_final(conn, 1, within_s=10.0)
    [carry_job] = [j for j in jobs if j["trade_order_id"] is None]
    assert (carry_job["status"], carry_job["side"], carry_job["quantity"]) == (
        "HEDGED", "SELL", Decimal("0.01"))
    plan = json.loads(carry_job["plan"])  # today's best price bounds it; no quote, no legs
    assert plan["legs"] == []
    assert Decimal(plan["worstRawPrice"]) > 0
    orders = await conn.fetch("SELECT * FROM hedge_order")
    assert orders
    assert {o["job_id"] for o in orders} == {carry_job["job_id"]}
    assert {o["side"] for o in orders} == {"SELL"}
    assert abs(await conn.fetchval("SELECT carry FROM hedge_lane")) < LOT
    await check_books(client, conn, desk)

    status, body = await get(client, "/api/v3/fermata/hedge/list",
                             {"dealerAccountId": desk.dealer, "status": "HEDGED"})
    assert status == 200, body
    listed = {j["jobId"]: j for j in assert_ok(body)}
    assert listed[str(carry_job["job_id"])]["origin"] == "CARRY"
    assert listed[str(carry_job["job_id"])]["tradeOrderId"] is None
    assert {j["origin"] for j in listed.values()} == {"CARRY", "FILL"}
    # a carry job is not a client fill: no fill-to-hedge latency is observed for it
    assert await metric_value(client, "dealer_hedge_first_order_latency_seconds_count") == 0
    assert await metric_value(
        client, 'dealer_hedge_jobs_finished_total{status="HEDGED"}') == 1
    assert await metric_value(client, "dealer_hedge_fill_to_hedged_seconds_count") == 0
    assert await metric_value(client, "dealer_hedge_carry_jobs_total") == 1


async def test_a_carry_below_every_lps_minimum_waits_visible_until_one_would_take_it(
    settings: Settings, secrets: DaemonSecrets, aiohttp_client: AppClient,
    conn: asyncpg.Connection,
) -> None:
    app, client, desk = await _desk_with_a_carry(settings, secrets, aiohttp_client, conn,
                                                 "BUY", "0.02")
    minimums = await conn.fetch(
        "SELECT venue, min_quantity FROM instrument WHERE symbol = 'BTC/USDT'")
    await conn.execute("UPDATE instrument SET min_quantity = 1 WHERE symbol = 'BTC/USDT'")
    # no LP takes less than 1 BTC now (a worker that judged so does not route the same net
    # again for a while: the app's own worker looks next)
    assert await hedge_worker(app).hedge_idle_carries() == 0
    worker = app[HEDGE_WORKER]
    assert await conn.fetchval("SELECT count(*) FROM hedge_job") == 1
    btc = await _btc_exposure(client, desk)
    assert (btc["unhedgedQuantity"], btc["carryQuantity"]) == ("-0.02", "-0.02")

    await conn.executemany("UPDATE instrument SET min_quantity = $2 WHERE venue = $1 "
                           "AND symbol = 'BTC/USDT'", [tuple(r) for r in minimums])

    async def made() -> int | None:  # the worker's LP list is cached for a second
        return await worker.hedge_idle_carries() or None

    assert await eventually(made, within_s=3.0) == 1
    worker.start()
    jobs = await hedges_final(conn, 1, within_s=10.0)
    assert {j["status"] for j in jobs} == {"HEDGED"}
    assert {o["side"] for o in await conn.fetch("SELECT side FROM hedge_order")} == {"BUY"}
    assert abs(Decimal((await _btc_exposure(client, desk))["carryQuantity"])) < LOT
    await check_books(client, conn, desk)


async def test_residuals_that_together_an_lp_takes_ride_a_carry_job(
    settings: Settings, secrets: DaemonSecrets, aiohttp_client: AppClient,
    conn: asyncpg.Connection,
) -> None:
    app, _, desk = await desk_with_fills(settings, secrets, aiohttp_client,
                                         (("SELL", "0.01"), ("SELL", "0.01")),
                                         hedge_enabled=False)
    # both hedged but for 0.00005 BTC (about 3 USDT: below every LP's minimum), as partial
    # fills leave residuals; together (0.0001) an LP takes them
    await conn.execute(
        """UPDATE hedge_job SET hedged_quantity = quantity - 0.00005, residual = true,
               last_error = 'residual below every LP venue''s minimum order'""")
    assert await exposure_of(conn, desk.dealer, "BTC") == Decimal("0.0001")
    worker = app[HEDGE_WORKER]
    assert await worker.hedge_idle_carries() == 1
    host = await conn.fetchrow("SELECT * FROM hedge_job WHERE trade_order_id IS NULL")
    # the lane had no carry: the job hosts the residuals with no quantity of its own
    assert (host["side"], host["quantity"], host["status"]) == ("SELL", 0, "PENDING")
    assert await worker.hedge_idle_carries() == 0  # the lane has a job to work now

    worker.start()
    jobs = await hedges_final(conn, 2, within_s=10.0)
    assert {j["status"] for j in jobs} == {"HEDGED"}
    orders = await conn.fetch("SELECT * FROM hedge_order")
    assert {o["job_id"] for o in orders} == {host["job_id"]}
    assert abs(sum(o["filled_quantity"] for o in orders) - Decimal("0.0001")) < LOT
    assert abs(await exposure_of(conn, desk.dealer, "BTC")) < LOT


async def test_cancelling_a_job_gives_the_carry_it_held_back_to_its_lane(
    settings: Settings, secrets: DaemonSecrets, aiohttp_client: AppClient,
    conn: asyncpg.Connection,
) -> None:
    _, client, desk = await desk_with_fills(settings, secrets, aiohttp_client,
                                            (("SELL", "0.01"),), hedge_enabled=False)
    # as a round does when the job takes the lane's carry: 0.00003 more to sell for the job,
    # 0.00003 less for the lane (the total is unchanged)
    await conn.execute("UPDATE hedge_job SET carry_in = 0.00003")
    await conn.execute("UPDATE hedge_lane SET carry = 0.00003")
    assert await exposure_of(conn, desk.dealer, "BTC") == Decimal("0.01")

    job_id = await conn.fetchval("SELECT job_id FROM hedge_job")
    status, body = await post(client, "/api/v3/fermata/hedge/cancel",
                              {"jobId": str(job_id), "reason": "sold 0.01 BTC by hand"})
    assert status == 200, body
    assert await conn.fetchval("SELECT carry_in FROM hedge_job") == 0
    assert await conn.fetchval("SELECT carry FROM hedge_lane") == 0
    assert await exposure_of(conn, desk.dealer, "BTC") == 0
