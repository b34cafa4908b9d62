"""Inline hedging (`DEALER_HEDGE_INLINE`): the accepting daemon sizes a fill's first hedge before
the fill's statement, which records the job already IN_PROGRESS with its orders SENT when the
lane allows; the orders go out as the fill commits. Otherwise (a new lane, a leased lane) the
job is left to its notice, as without inline hedging."""

from __future__ import annotations

import collections
import random
import uuid
from typing import Any

import asyncpg
from aiohttp import web

from dealer.appkeys import HEDGE_WORKER, POOL
from dealer.settings import DaemonSecrets, Settings
from tests.desk import (
    AppClient,
    Desk,
    app_client,
    check_books,
    fill_all,
    hedges_final,
    make_desk,
    metric_value,
    random_fill,
    venue_submits,
)
from tests.helpers import Client, eventually

INLINE = 'dealer_hedge_fast_rounds_total{outcome="inline"}'


async def _inline_desk(settings: Settings, secrets: DaemonSecrets, aiohttp_client: AppClient,
                       conn: asyncpg.Connection, **config: Any
                       ) -> tuple[web.Application, Client, Desk]:
    """An app hedging inline (its venues keep a journal), its desk (`config`: dealer fields),
    and the lane's first fill, a SELL of 0.1 BTC, hedged."""
    app, client = await app_client(settings, secrets, aiohttp_client, hedge_enabled=True,
                                   hedge_inline=True, paper_journal=True)
    desk = await make_desk(client, **config)
    await fill_all(client, desk, (("SELL", "0.1"),))
    await hedges_final(conn, 1)
    return app, client, desk


async def test_a_fill_records_its_first_hedge_in_its_own_statement(
    settings: Settings, secrets: DaemonSecrets, aiohttp_client: AppClient,
    conn: asyncpg.Connection,
) -> None:
    _, client, desk = await _inline_desk(settings, secrets, aiohttp_client, conn,
                                         maxUnhedgedNotional="100000000")
    # The lane's first fill created the lane: that job was its notice's.
    assert await metric_value(client, INLINE) == 0

    await fill_all(client, desk, (("BUY", "0.2"),))
    [job] = await conn.fetch("SELECT * FROM hedge_job ORDER BY created_at DESC LIMIT 1")
    # written IN_PROGRESS with its orders by the fill's statement: never PENDING
    assert job["first_order_at"] == job["created_at"]
    assert job["attempts"] >= 1
    orders = await conn.fetch("SELECT * FROM hedge_order WHERE job_id = $1", job["job_id"])
    assert orders
    assert {o["created_at"] for o in orders if o["attempt"] == 1} == {job["created_at"]}
    assert await metric_value(client, INLINE) == 1
    await hedges_final(conn, 2)

    # A burst: every fill's hedge once, the books exact.
    rng = random.Random(20261121)
    fills = [random_fill(rng, largest="0.2") for _ in range(60)]
    await fill_all(client, desk, fills)
    jobs = await hedges_final(conn, 62, within_s=30.0)
    assert {j["status"] for j in jobs} == {"HEDGED"}
    hedge_orders = await conn.fetch("SELECT * FROM hedge_order")
    assert venue_submits(settings.data_dir) == collections.Counter(
        {(o["venue"], o["client_order_id"]): 1 for o in hedge_orders})
    # concurrent accepts of one lane often find its carry moved: those jobs go by notice
    assert await metric_value(client, INLINE) >= 1
    await check_books(client, conn, desk)


async def test_a_leased_lane_leaves_the_job_to_its_notice(
    settings: Settings, secrets: DaemonSecrets, aiohttp_client: AppClient,
    conn: asyncpg.Connection,
) -> None:
    _, client, desk = await _inline_desk(settings, secrets, aiohttp_client, conn)
    # another worker holds the lane
    await conn.execute("UPDATE hedge_lane SET claimed_by = 'other', "
                       "claimed_until = now() + interval '1 hour'")
    await fill_all(client, desk, (("BUY", "0.1"),))
    [job] = await conn.fetch("SELECT * FROM hedge_job ORDER BY created_at DESC LIMIT 1")
    assert (job["status"], job["attempts"], job["claimed_by"]) == ("PENDING", 0, None)
    assert await conn.fetchval("SELECT count(*) FROM hedge_order WHERE job_id = $1",
                               job["job_id"]) == 0
    assert await metric_value(client, INLINE) == 0
    # the lease given back, the worker's poll takes it
    await conn.execute("UPDATE hedge_lane SET claimed_by = NULL, claimed_until = NULL")

    async def hedged() -> bool:
        return bool(await conn.fetchval("SELECT status FROM hedge_job WHERE job_id = $1",
                                        job["job_id"]) == "HEDGED")

    await eventually(hedged, within_s=10.0)
    await check_books(client, conn, desk)


async def test_an_lp_disabled_after_the_inline_hedge_was_sized_gets_none_of_its_orders(
    settings: Settings, secrets: DaemonSecrets, aiohttp_client: AppClient,
    conn: asyncpg.Connection,
) -> None:
    # the lane's first job went by notice
    app, client, desk = await _inline_desk(settings, secrets, aiohttp_client, conn,
                                           maxUnhedgedNotional="100000000")
    worker = app[HEDGE_WORKER]
    plan_inline = worker.plan_inline
    disabled: list[uuid.UUID] = []

    async def plan_then_disable(*args: Any, **kwargs: Any) -> Any:
        # The desk disables the LP of the hedge's first order after the accept sized it (the
        # LP ACTIVE then) and before the fill's statement records it.
        inline = await plan_inline(*args, **kwargs)
        if inline is not None and inline.orders and not disabled:
            account = inline.orders[0].lp.trading_account_id
            async with app[POOL].acquire() as other:
                await other.execute("UPDATE trading_account SET status = 'INACTIVE' "
                                    "WHERE trading_account_id = $1", account)
            disabled.append(account)
        return inline

    worker.plan_inline = plan_then_disable  # type: ignore[method-assign]
    [order] = await fill_all(client, desk, (("BUY", "0.2"),))
    jobs = await hedges_final(conn, 2)
    assert disabled
    assert {j["status"] for j in jobs} == {"HEDGED"}
    # this fill's hedge orders (the first fill's may have gone to that LP while it was ACTIVE)
    orders = await conn.fetch(
        """SELECT o.* FROM hedge_order o JOIN hedge_job j USING (job_id)
           WHERE j.trade_order_id = $1""", uuid.UUID(order["tradeOrderId"]))
    assert orders
    assert disabled[0] not in {o["trading_account_id"] for o in orders}
    assert await metric_value(client, INLINE) == 0  # left to its notice, on the LPs still ACTIVE
