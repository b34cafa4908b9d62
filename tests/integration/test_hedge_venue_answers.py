"""How the hedge worker reads a venue's answers: an open answer is not final, an order the venue
does not know yet is not "never received" while its submit could still arrive, and a retried job
gets its whole budget of attempts again."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from decimal import Decimal
from typing import Any

import asyncpg

from dealer.app import create_app
from dealer.appkeys import VENUES
from dealer.settings import DaemonSecrets, Settings
from tests.conftest import ADMIN
from tests.desk import (
    AppClient,
    VenueProxies,
    app_client,
    check_books,
    desk_with_fills,
    fill_all,
    hedge_worker,
    hedges_final,
    make_desk,
    unlinked_by_drain,
)
from tests.helpers import post
from venues.base import OrderRequest, OrderState, OrderStatus, VenueAccount

FIRST_LEG = "-1-0"  # the client order id's end for the first attempt's first leg


def _bought(app: Any, orders: list[asyncpg.Record]) -> Decimal:
    """What the venues really filled for these hedge orders."""
    total = Decimal(0)
    for order in orders:
        engine = app[VENUES].execution(order["venue"]).engine
        for key in engine.accounts_of(order["client_order_id"]):
            total += engine.status(key, order["client_order_id"]).filled_quantity
    return total


async def test_an_open_answer_to_a_submit_is_asked_again_not_taken_as_final(
    settings: Settings, secrets: DaemonSecrets, aiohttp_client: AppClient,
    conn: asyncpg.Connection,
) -> None:
    app, client, desk = await desk_with_fills(settings, secrets, aiohttp_client)

    async def answers_before_the_fill(venue: Any, account: VenueAccount,
                                      order: OrderRequest) -> OrderState:
        # the venue fills it, but answers as a connector whose wait for the close ran out
        state: OrderState = await venue.submit_order(account, order)
        if order.client_order_id.endswith(FIRST_LEG):
            return dataclasses.replace(state, status=OrderStatus.ACCEPTED,
                                       filled_quantity=Decimal(0), executions=())
        return state

    worker = hedge_worker(app, VenueProxies(app[VENUES], answers_before_the_fill))
    worker.start()
    try:
        [job] = await hedges_final(conn, 1)
    finally:
        await worker.stop()
    assert job["status"] == "HEDGED"
    orders = await conn.fetch("SELECT * FROM hedge_order ORDER BY attempt, leg")
    # the open answer was asked again and its fill recorded: bought once, booked once
    first = next(o for o in orders if o["client_order_id"].endswith(FIRST_LEG))
    assert first["status"] == "FILLED", dict(first)
    assert abs(_bought(app, orders) - Decimal("0.3")) < Decimal("0.001")
    await check_books(client, conn, desk)


async def test_an_order_the_venue_does_not_know_yet_is_not_taken_for_never_received(
    settings: Settings, secrets: DaemonSecrets, aiohttp_client: AppClient,
    conn: asyncpg.Connection,
) -> None:
    app, client, desk = await desk_with_fills(settings, secrets, aiohttp_client)
    late: list[asyncio.Task[OrderState]] = []

    async def arrives_late(venue: Any, account: VenueAccount,
                           order: OrderRequest) -> OrderState:
        # the first order reaches the venue 1.2 s after it was sent: after the worker's call
        # gave up on it (1 s), but it was on its way and the venue applies it
        if not order.client_order_id.endswith(FIRST_LEG):
            state: OrderState = await venue.submit_order(account, order)
            return state

        async def later() -> OrderState:
            await asyncio.sleep(1.2)
            state: OrderState = await venue.submit_order(account, order)
            return state

        late.append(asyncio.create_task(later()))
        return await asyncio.shield(late[-1])

    # the defaults' proportions (lease 10 s: call timeout 5 s; grace 5 s) scaled down by 5
    worker = hedge_worker(app, VenueProxies(app[VENUES], arrives_late), lease_s=2.0,
                          unknown_grace_s=1.0, backoff_s=0.04)
    worker.start()
    try:
        [job] = await hedges_final(conn, 1)
        await asyncio.gather(*late)
    finally:
        await worker.stop()
    assert job["status"] == "HEDGED"
    orders = await conn.fetch("SELECT * FROM hedge_order ORDER BY attempt, leg")
    assert not any(o["reject_reason"] == "the venue never received it" for o in orders), [
        dict(o) for o in orders]
    assert abs(_bought(app, orders) - Decimal("0.3")) < Decimal("0.001")
    await check_books(client, conn, desk)


async def test_a_retried_job_gets_its_whole_budget_of_attempts_again(
    settings: Settings, secrets: DaemonSecrets, aiohttp_client: AppClient,
    conn: asyncpg.Connection,
) -> None:
    app = create_app(settings, secrets)
    client = await aiohttp_client(app)
    desk = await make_desk(client)
    await fill_all(client, desk, (("SELL", "0.2"),))
    plan = json.loads(await conn.fetchval("SELECT plan FROM hedge_job"))
    worst = Decimal(plan["worstRawPrice"])
    for venue in ("BINANCE", "OKX", "BYBIT"):  # nothing within the tolerance: every IOC expires
        app[VENUES].execution(venue).pin_book(
            "BTC/USDT", [(worst * Decimal("0.99"), Decimal(100))],
            [(worst * Decimal("0.991"), Decimal(100))])
    worker = hedge_worker(app, max_attempts=3)
    worker.start()
    try:
        [job] = await hedges_final(conn, 1)
        assert (job["status"], job["attempts"]) == ("FAILED", 3)
        status, body = await post(client, "/api/v3/fermata/hedge/retry",
                                  {"jobId": str(job["job_id"]), "reason": "try again"}, ADMIN)
        assert status == 200, body
        await asyncio.sleep(0.05)
        [job] = await hedges_final(conn, 1)
    finally:
        await worker.stop()
    assert (job["status"], job["attempts"]) == ("FAILED", 3)
    numbers = sorted({r["attempt"] for r in await conn.fetch("SELECT attempt FROM hedge_order")})
    assert numbers == [1, 2, 3, 4, 5, 6]  # three more after the retry, each with new order ids


async def test_a_netted_round_whose_lp_starts_draining_is_undone_whole(
    settings: Settings, secrets: DaemonSecrets, aiohttp_client: AppClient,
    conn: asyncpg.Connection,
) -> None:
    app, client = await app_client(settings, secrets, aiohttp_client, hedge_poll_ms=20)
    desk = await make_desk(client, hedgeMode="NETTED", hedgeNettingWindowMs=100)
    await fill_all(client, desk, (("BUY", "0.5"), ("SELL", "0.3")), concurrency=1)
    worker = hedge_worker(app)
    record = worker._record_intents
    drained: list[uuid.UUID] = []

    async def drain_then_record(lane: Any, jobs: Any, netting: Any, plans: Any, *args: Any,
                                **kwargs: Any) -> None:
        # The desk drains the LP the round routed its 0.2 net to, after the worker read its
        # LPs and before it records the round (which has the SELL's 0.3 offset to write).
        if not drained:
            for plan in plans:
                for order in plan.orders:
                    drained.append(order.lp.trading_account_id)
                    await conn.execute("UPDATE dealer_link SET draining = true "
                                       "WHERE trading_account_id = $1",
                                       order.lp.trading_account_id)
        await record(lane, jobs, netting, plans, *args, **kwargs)

    worker._record_intents = drain_then_record  # type: ignore[method-assign]
    await asyncio.sleep(0.3)  # past the netting window
    assert await worker.run_once()
    assert drained
    # undone whole: the offset is not booked on one side only, nothing was recorded
    rows = await conn.fetch("SELECT status, hedged_quantity FROM hedge_job")
    assert {(r["status"], r["hedged_quantity"]) for r in rows} <= {
        ("PENDING", Decimal(0)), ("IN_PROGRESS", Decimal(0))}, [dict(r) for r in rows]
    assert await conn.fetchval("SELECT count(*) FROM hedge_order") == 0
    worker.start()
    try:
        await hedges_final(conn, 2)
    finally:
        await worker.stop()
    # the next round hedged the net 0.2 on the other LPs, and the books balance
    orders = await conn.fetch("SELECT * FROM hedge_order")
    assert not any(o["trading_account_id"] in drained for o in orders)
    assert abs(_bought(app, orders) - Decimal("0.2")) < Decimal("0.001")
    await check_books(client, conn, await unlinked_by_drain(conn, desk, drained))
