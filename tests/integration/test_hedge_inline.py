"""Inline hedging (`DEALER_HEDGE_INLINE`): the accepting daemon sizes a fill's first hedge before
the fill's statement, which records the job already IN_PROGRESS with its orders SENT when the
lane allows; the orders go out as the fill commits. Otherwise (a new lane, a leased lane) the
job is left to its notice, as without inline hedging."""

from __future__ import annotations

import collections
import random

import asyncpg

from dealer.settings import DaemonSecrets, Settings
from tests.desk import (
    AppClient,
    app_client,
    check_books,
    fill_all,
    hedges_final,
    make_desk,
    metric_value,
    random_fill,
    venue_submits,
)
from tests.helpers import eventually

INLINE = 'dealer_hedge_fast_rounds_total{outcome="inline"}'


async def test_a_fill_records_its_first_hedge_in_its_own_statement(
    settings: Settings, secrets: DaemonSecrets, aiohttp_client: AppClient,
    conn: asyncpg.Connection,
) -> None:
    _, client = await app_client(settings, secrets, aiohttp_client, hedge_enabled=True,
                                 hedge_inline=True, paper_journal=True)
    desk = await make_desk(client, maxUnhedgedNotional="100000000")
    # The lane's first fill creates the lane: that job is its notice's.
    await fill_all(client, desk, (("SELL", "0.1"),))
    await hedges_final(conn, 1)
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
    _, client = await app_client(settings, secrets, aiohttp_client, hedge_enabled=True,
                                 hedge_inline=True, paper_journal=True)
    desk = await make_desk(client)
    await fill_all(client, desk, (("SELL", "0.1"),))
    await hedges_final(conn, 1)
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
