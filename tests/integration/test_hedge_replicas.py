"""Two daemons (two apps, each with its own hedge worker) on one database, trading on one
(simulated) exchange: they share the hedge jobs, each job is executed by exactly one of them,
and no client order id reaches a venue twice."""

from __future__ import annotations

import asyncio
import collections
import random
from decimal import Decimal

import asyncpg

from dealer.app import create_app
from dealer.appkeys import HEDGE_WORKER, VENUES
from dealer.settings import DaemonSecrets, Settings
from tests.desk import (
    AppClient,
    accept,
    books_fresh,
    check_books,
    fill_all,
    hedges_final,
    make_desk,
    random_fill,
    request_quote,
    venue_submits,
)


async def test_two_daemons_share_the_jobs_and_execute_each_once(
    settings: Settings, secrets: DaemonSecrets, aiohttp_client: AppClient,
    conn: asyncpg.Connection,
) -> None:
    # One lane per worker at a time, so two busy lanes need both workers.
    hedging = settings.model_copy(update={"hedge_enabled": True, "hedge_concurrency": 1,
                                          "hedge_poll_ms": 20, "paper_journal": True})
    first = create_app(hedging, secrets)
    second = create_app(hedging.model_copy(update={"data_dir": settings.data_dir / "second"}),
                        secrets)
    second[VENUES] = first[VENUES]  # one exchange, as two replicas of a desk would see
    clients = [await aiohttp_client(first), await aiohttp_client(second)]
    desk = await make_desk(clients[0], symbols=["BTC/USDT", "ETH/USDT"])
    for client in clients:  # the second learns of the links at its next refresh
        for symbol in ("BTC/USDT", "ETH/USDT"):
            await books_fresh(client, desk.dealer, symbol)
    rng = random.Random(4)
    btc = [random_fill(rng, largest="0.2") for _ in range(12)]
    eth = [(rng.choice(("BUY", "SELL")), str(Decimal(rng.randint(10, 2000)) / 1000))
           for _ in range(12)]
    fills = btc + eth

    async def eth_fills() -> None:
        for side, quantity in eth:
            quote = await request_quote(clients[1], desk, symbol="ETH/USDT", orderSide=side,
                                        quantity=quantity)
            await accept(clients[1], quote)

    await asyncio.gather(fill_all(clients[0], desk, btc, concurrency=2), eth_fills())
    jobs = await hedges_final(conn, len(fills))
    assert {j["status"] for j in jobs} == {"HEDGED"}

    orders = await conn.fetch("SELECT * FROM hedge_order")
    workers = {first[HEDGE_WORKER].worker_id, second[HEDGE_WORKER].worker_id}
    assert {o["sent_by"] for o in orders} == workers  # both took part
    by_job = collections.defaultdict(set)
    for order in orders:
        by_job[order["job_id"]].add(order["sent_by"])
    assert all(len(senders) == 1 for senders in by_job.values())  # each job: one worker
    submits = venue_submits(settings.data_dir)
    assert submits == collections.Counter(
        {(o["venue"], o["client_order_id"]): 1 for o in orders})
    balances = await check_books(clients[0], conn, desk)
    assert abs(balances.get("ETH/8", Decimal(0))) < Decimal("0.0001")  # ETH/USDT's lot
