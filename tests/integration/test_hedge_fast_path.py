"""The one-statement path for new hedge jobs: a new job's NOTIFY carries the job (migration
0008), and a worker that finds the job's lane idle sizes it and records its orders without
claiming it first. The statement writes nothing unless the lane is idle (not leased, no older
unclaimed live job) and the job still PENDING and unclaimed, so two workers racing for one
notice hedge it once, and the lane's claim takes over whatever the fast path declines."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import asyncpg
from aiohttp import web

from dealer.appkeys import HEDGE_WORKER
from dealer.settings import DaemonSecrets, Settings
from hedging import policy
from hedging.worker import HedgeWorker, _Notice, _notice
from tests.desk import (
    AppClient,
    Desk,
    accept,
    app_client,
    app_with_desk,
    check_books,
    hedge_worker,
    make_desk,
    metric_value,
    request_quote,
)
from tests.helpers import Client, eventually

FAST = "dealer_hedge_fast_rounds_total"


class Notices:
    """Every `hedge_job` notice, from a connection of its own."""

    def __init__(self) -> None:
        self.payloads: asyncio.Queue[str] = asyncio.Queue()

    async def next(self) -> str:
        return await asyncio.wait_for(self.payloads.get(), timeout=5)

    async def next_job(self) -> _Notice:
        notice = _notice(await self.next())
        assert notice is not None
        return notice


@contextlib.asynccontextmanager
async def listening(settings: Settings) -> AsyncIterator[Notices]:
    notices = Notices()
    conn = await asyncpg.connect(settings.database_url)
    await conn.add_listener("hedge_job",
                            lambda *args: notices.payloads.put_nowait(str(args[3])))
    try:
        yield notices
    finally:
        await conn.close()


async def _fill(client: Client, desk: Desk, side: str, quantity: str) -> dict[str, Any]:
    return await accept(client, await request_quote(client, desk, orderSide=side,
                                                    quantity=quantity))


async def _job_ends(conn: asyncpg.Connection, job_id: uuid.UUID) -> None:
    async def hedged() -> bool:
        status = await conn.fetchval("SELECT status FROM hedge_job WHERE job_id = $1", job_id)
        assert status != "FAILED"
        return bool(status == "HEDGED")

    await eventually(hedged, within_s=10.0, every_s=0.02)


async def _delivered(worker: HedgeWorker) -> None:
    """The orders a worker sent have been answered and recorded."""
    while worker._deliveries:
        await asyncio.gather(*worker._deliveries)


async def _writes(conn: asyncpg.Connection) -> tuple[Any, ...]:
    return (await conn.fetchval("SELECT count(*) FROM hedge_order"),
            [dict(r) for r in await conn.fetch(
                "SELECT job_id, status, claimed_by, attempts FROM hedge_job ORDER BY job_id")],
            await conn.fetchval("SELECT to_jsonb(l) - 'updated_at' FROM hedge_lane l"))


async def test_a_new_jobs_notice_carries_the_job_its_lane_and_carry(
    settings: Settings, secrets: DaemonSecrets, aiohttp_client: AppClient,
    conn: asyncpg.Connection,
) -> None:
    _, client, desk = await app_with_desk(settings, secrets, aiohttp_client)
    async with listening(settings) as notices:
        await _fill(client, desk, "BUY", "0.3")
        notice = await notices.next_job()
        row = await conn.fetchrow("SELECT * FROM hedge_job")
        config = json.loads(await conn.fetchval(
            "SELECT config::text FROM dealer WHERE dealer_account_id = $1",
            uuid.UUID(desk.dealer)))
        job = notice.job
        assert (job.job_id, job.trade_order_id, job.side, job.quantity, job.created_at) == (
            row["job_id"], row["trade_order_id"], row["side"], row["quantity"],
            row["created_at"])
        assert (job.hedged, job.carry_in, job.attempts, job.lead, job.residual) == (
            0, 0, 0, None, False)
        assert job.plan == policy.parse_plan(json.loads(row["plan"]) if isinstance(
            row["plan"], str) else row["plan"])
        assert job.plan.legs  # the quote's plan, with its legs
        lane = notice.lane
        assert (str(lane.dealer_account_id), lane.symbol, lane.mode) == (
            desk.dealer, "BTC/USDT", config.get("hedgeMode") or "IMMEDIATE")
        assert lane.slippage_bps == Decimal(str(config.get("slippageToleranceBps") or 0))
        assert notice.carry == 0

        # The lane's carry, as the insert read it.
        await conn.execute("UPDATE hedge_lane SET carry = 0.000003")
        await _fill(client, desk, "SELL", "0.2")
        assert (await notices.next_job()).carry == Decimal("0.000003")

        # A job put back to PENDING (a retry) names its dealer only: its lane is claimed.
        await conn.execute("UPDATE hedge_job SET status = 'IN_PROGRESS' WHERE job_id = $1",
                           row["job_id"])
        await conn.execute("UPDATE hedge_job SET status = 'PENDING' WHERE job_id = $1",
                           row["job_id"])
        assert await notices.next() == desk.dealer

        # So does a job too large for a notice.
        async with conn.transaction():
            await conn.execute("DELETE FROM hedge_job WHERE job_id = $1", row["job_id"])
            plan = json.loads(row["plan"]) if isinstance(row["plan"], str) else row["plan"]
            await conn.execute(
                """INSERT INTO hedge_job (job_id, dealer_account_id, trade_order_id, symbol,
                       side, quantity, plan, status, created_at, updated_at)
                   VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, 'PENDING', $8, $8)""",
                row["job_id"], row["dealer_account_id"], row["trade_order_id"], row["symbol"],
                row["side"], row["quantity"], json.dumps({**plan, "padding": "x" * 8000}),
                row["created_at"])
        assert await notices.next() == desk.dealer
        assert _notice(desk.dealer) is None
        assert _notice('{"dealerAccountId": "not a uuid"}') is None


async def test_a_running_worker_hedges_new_jobs_of_an_idle_lane_without_claiming_it(
    settings: Settings, secrets: DaemonSecrets, aiohttp_client: AppClient,
    conn: asyncpg.Connection,
) -> None:
    # No polling (a poll racing a notice would claim the lane first), no inline hedging (the
    # accepting daemon would record the hedges itself): notices only.
    app, client = await app_client(settings, secrets, aiohttp_client, hedge_enabled=True,
                                   hedge_poll_ms=60000, hedge_inline=False)
    desk = await make_desk(client)
    fills = (("BUY", "0.5"), ("SELL", "0.3"), ("BUY", "0.2"), ("SELL", "0.25"))
    for side, quantity in fills:
        await _fill(client, desk, side, quantity)
        job_id = await conn.fetchval("SELECT job_id FROM hedge_job ORDER BY created_at DESC")
        await _job_ends(conn, job_id)
    assert await metric_value(client, f'{FAST}{{outcome="taken"}}') == len(fills)
    assert await metric_value(client, f'{FAST}{{outcome="declined"}}') == 0
    orders = await conn.fetch("SELECT * FROM hedge_order ORDER BY created_at")
    worker = app[HEDGE_WORKER]
    assert {o["sent_by"] for o in orders} == {worker.worker_id}
    assert all(o["client_order_id"] == policy.client_order_id(o["job_id"], 1, o["leg"])
               for o in orders)
    assert await conn.fetchval("SELECT count(*) FROM hedge_job WHERE claimed_by IS NOT NULL") == 0
    assert await conn.fetchval("SELECT claimed_by FROM hedge_lane") is None
    await check_books(client, conn, desk)


async def _two_jobs(settings: Settings, secrets: DaemonSecrets, aiohttp_client: AppClient
                    ) -> tuple[web.Application, Client, Desk, _Notice, _Notice]:
    app, client, desk = await app_with_desk(settings, secrets, aiohttp_client)
    async with listening(settings) as notices:
        await _fill(client, desk, "BUY", "0.4")
        older = await notices.next_job()
        await _fill(client, desk, "SELL", "0.1")
        younger = await notices.next_job()
    return app, client, desk, older, younger


async def test_the_statement_writes_nothing_unless_the_lane_is_idle_and_the_job_pending(
    settings: Settings, secrets: DaemonSecrets, aiohttp_client: AppClient,
    conn: asyncpg.Connection,
) -> None:
    app, client, desk, older, younger = await _two_jobs(settings, secrets, aiohttp_client)
    worker = hedge_worker(app)

    # The lane leased by another worker: nothing written.
    await conn.execute("UPDATE hedge_lane SET claimed_by = 'other', "
                       "claimed_until = now() + interval '1 hour'")
    before = await _writes(conn)
    assert await worker._fast_round(older) is False
    assert await _writes(conn) == before

    # An older unclaimed live job past the notice grace (its notice should have taken it by
    # now: it is the claim's) waits in the lane: the younger one is left to the claim.
    await conn.execute("UPDATE hedge_lane SET claimed_by = NULL, claimed_until = NULL")
    before = await _writes(conn)
    assert await hedge_worker(app, notice_grace_s=0)._fast_round(younger) is False
    assert await _writes(conn) == before

    # Within the grace, an older new job does not hold the younger one (two fills' notices may
    # come in either order): the younger goes first, then the older one.
    worker = hedge_worker(app, notice_grace_s=3600)
    assert await worker._fast_round(younger) is True
    assert await conn.fetchval("SELECT claimed_by FROM hedge_job WHERE job_id = $1",
                               younger.job.job_id) == worker.worker_id
    await _delivered(worker)
    assert await worker._fast_round(older) is True
    await _delivered(worker)
    for notice in (older, younger):
        await _job_ends(conn, notice.job.job_id)

    # A notice seen again (the job is no longer PENDING): nothing written.
    before = await _writes(conn)
    assert await worker._fast_round(older) is False
    assert await _writes(conn) == before
    orders = await conn.fetch("SELECT job_id, attempt FROM hedge_order")
    assert {(o["job_id"], o["attempt"]) for o in orders} == {
        (older.job.job_id, 1), (younger.job.job_id, 1)}
    await check_books(client, conn, desk)


async def test_a_poll_leaves_new_jobs_to_their_notices(
    settings: Settings, secrets: DaemonSecrets, aiohttp_client: AppClient,
    conn: asyncpg.Connection,
) -> None:
    app, client, desk, older, younger = await _two_jobs(settings, secrets, aiohttp_client)
    worker = hedge_worker(app)
    # A poll (no wake-up) claims no job of the grace: their notices' one-statement path does.
    await worker._start_rounds(dt.timedelta(hours=1))
    assert worker._rounds == {}
    assert await conn.fetchval("SELECT count(*) FROM hedge_job WHERE claimed_by IS NOT NULL") == 0
    # A wake-up (a notice declined, a job put back) claims them at once.
    await worker._start_rounds(None)
    assert list(worker._rounds) == [older.lane.key]
    await asyncio.gather(*worker._rounds.values())
    await _delivered(worker)
    for notice in (older, younger):
        await _job_ends(conn, notice.job.job_id)
    assert await conn.fetchval("SELECT count(*) FROM hedge_order") >= 2
    await check_books(client, conn, desk)


async def test_two_workers_racing_for_one_notice_hedge_the_job_once(
    settings: Settings, secrets: DaemonSecrets, aiohttp_client: AppClient,
    conn: asyncpg.Connection,
) -> None:
    app, client, desk = await app_with_desk(settings, secrets, aiohttp_client)
    workers = [hedge_worker(app, worker_id="first"), hedge_worker(app, worker_id="second")]
    async with listening(settings) as notices:
        for side, quantity in (("BUY", "0.3"), ("SELL", "0.2"), ("BUY", "0.1")):
            await _fill(client, desk, side, quantity)
            notice = await notices.next_job()
            taken = await asyncio.gather(*(w._fast_round(notice) for w in workers))
            assert sorted(taken) == [False, True]
            for worker in workers:
                await _delivered(worker)
            await _job_ends(conn, notice.job.job_id)
            senders = await conn.fetch(
                "SELECT DISTINCT sent_by, attempt FROM hedge_order WHERE job_id = $1",
                notice.job.job_id)
            assert [(r["sent_by"], r["attempt"]) for r in senders] == [
                (workers[taken.index(True)].worker_id, 1)]
    await check_books(client, conn, desk)
