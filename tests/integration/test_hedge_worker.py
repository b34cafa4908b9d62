"""The hedge worker (IMMEDIATE mode) on a desk of three paper LPs, through the HTTP API: every
client fill is hedged once with deterministic client order ids, the books net out, a worker
restarted after a send re-sends nothing, an unknown outcome is resolved by client order id, and
two workers on one database share the jobs."""

from __future__ import annotations

import asyncio
import collections
import re
import uuid
from typing import Any

import asyncpg
from aiohttp import web

from dealer import db
from dealer.appkeys import HEDGE_WORKER, VENUES
from dealer.settings import DaemonSecrets, Settings
from tests.desk import (
    AppClient,
    check_books,
    hedge_worker,
    hedging_desk,
)
from tests.helpers import eventually
from venues.base import ExecutionVenue, OrderRequest, OrderState, VenueAccount, VenueTimeout
from venues.paper.client import PaperVenue

COID = re.compile(r"^h-([0-9a-f-]{36})-(\d+)-(\d+)$")
FILLS = (("BUY", "0.5"), ("SELL", "0.3"), ("BUY", "0.2"), ("SELL", "0.25"))


async def _all_hedged(conn: asyncpg.Connection, count: int, within_s: float = 15.0) -> None:
    async def done() -> Any:
        rows = await conn.fetch("SELECT status, last_error FROM hedge_job")
        statuses = [r["status"] for r in rows]
        assert "FAILED" not in statuses, [dict(r) for r in rows]
        return len(rows) == count and set(statuses) == {"HEDGED"}

    await eventually(done, within_s=within_s, every_s=0.05)


class Recording:
    """Every venue the worker uses, wrapped: counts submits per client order id, and can make a
    submit hang after it reached the venue (a crash) or time out after it (unknown outcome)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.submits: collections.Counter[str] = collections.Counter()
        self.hang_after = 0  # the n-th submit reaches the venue, then never answers
        self.timeout_after = 0  # the n-th submit reaches the venue, then times out
        self.hung = asyncio.Event()
        self.balance_reads: collections.Counter[uuid.UUID] = collections.Counter()

    def execution(self, venue: str) -> ExecutionVenue:
        return _Proxy(self, self.inner.execution(venue))  # type: ignore[return-value]


class _Proxy:
    def __init__(self, owner: Recording, venue: ExecutionVenue) -> None:
        self._owner, self._venue = owner, venue

    def __getattr__(self, name: str) -> Any:
        return getattr(self._venue, name)

    async def submit_order(self, account: VenueAccount, order: OrderRequest) -> OrderState:
        owner = self._owner
        owner.submits[order.client_order_id] += 1
        state = await self._venue.submit_order(account, order)
        if sum(owner.submits.values()) == owner.hang_after:
            owner.hung.set()
            await asyncio.Event().wait()
        if sum(owner.submits.values()) == owner.timeout_after:
            raise VenueTimeout("no answer in time")
        return state

    async def balances(self, account: VenueAccount) -> Any:
        self._owner.balance_reads[account.trading_account_id] += 1
        return await self._venue.balances(account)


async def _check_orders(app: web.Application, conn: asyncpg.Connection,
                        submits: collections.Counter[str] | None = None) -> list[asyncpg.Record]:
    """Every hedge order FILLED once under its deterministic id, and known to its venue."""
    orders = await conn.fetch("SELECT * FROM hedge_order ORDER BY client_order_id")
    assert orders
    jobs = {r["job_id"]: r for r in await conn.fetch("SELECT * FROM hedge_job")}
    for order in orders:
        match = COID.match(order["client_order_id"])
        assert match, order["client_order_id"]
        assert uuid.UUID(match[1]) == order["job_id"]
        assert (int(match[2]), int(match[3])) == (order["attempt"], order["leg"])
        assert order["status"] == "FILLED", dict(order)
        assert order["side"] == jobs[order["job_id"]]["side"]
        venue = app[VENUES].execution(order["venue"])
        assert isinstance(venue, PaperVenue)
        state = venue.engine.status(str(order["trading_account_id"]), order["client_order_id"])
        assert state.filled_quantity == order["filled_quantity"]
        if submits is not None:
            assert submits[order["client_order_id"]] == 1, order["client_order_id"]
    if submits is not None:
        assert set(submits) == {o["client_order_id"] for o in orders}
    # Attempt 1 sends each plan leg once (later attempts only buy back base fees).
    for job in jobs.values():
        first = [o for o in orders if o["job_id"] == job["job_id"] and o["attempt"] == 1]
        legs = job["plan"]["legs"] if isinstance(job["plan"], dict) else None
        if legs is not None:
            assert len(first) == len(legs)
    return orders


async def test_every_fill_is_hedged_once_and_the_books_net_out(
    settings: Settings, secrets: DaemonSecrets, aiohttp_client: AppClient,
    conn: asyncpg.Connection,
) -> None:
    app, client, desk = await hedging_desk(settings, secrets, aiohttp_client, FILLS,
                                           hedge_enabled=True)
    await _all_hedged(conn, len(FILLS))
    orders = await _check_orders(app, conn)
    jobs = await conn.fetch("SELECT * FROM hedge_job")
    for job in jobs:
        assert job["hedged_quantity"] == job["quantity"]  # dust (below a lot): lane carry
        assert job["first_order_at"] is not None
        assert job["claimed_by"] is None
    # Fees come from the executions: a BUY pays in BTC, a SELL in USDT (paper, like Binance).
    for order in orders:
        assert order["fee_asset"] == ("BTC" if order["side"] == "BUY" else "USDT")
        assert order["fee_amount"] > 0
    await check_books(client, conn, desk)
    async def scraped() -> str | None:
        text = await (await client.get("/metrics")).text()
        return text if "dealer_hedge_jobs_open 0.0" in text else None

    metrics = await eventually(scraped, within_s=3.0)
    assert re.search(r'dealer_hedge_orders_total\{status="FILLED",venue="\w+"\} [1-9]', metrics) \
        or re.search(r'dealer_hedge_orders_total\{venue="\w+",status="FILLED"\} [1-9]', metrics)
    assert "dealer_hedge_first_order_latency_seconds_count 4.0" in metrics
    assert app[HEDGE_WORKER] is not None


async def test_a_worker_restarted_after_a_send_resends_nothing(
    settings: Settings, secrets: DaemonSecrets, aiohttp_client: AppClient,
    conn: asyncpg.Connection,
) -> None:
    # no worker of its own
    app, client, desk = await hedging_desk(settings, secrets, aiohttp_client, FILLS[:2])
    first = Recording(app[VENUES])
    first.hang_after = 2  # the second order reaches its LP; then the worker "crashes"
    crashed = hedge_worker(app, first)
    crashed.start()
    await asyncio.wait_for(first.hung.wait(), timeout=10)
    await crashed.stop(grace_s=0)
    # The round's answers were never recorded: its orders are all still SENT, and some of
    # them reached their LP (and traded there).
    sent = await conn.fetch("SELECT * FROM hedge_order WHERE status = 'SENT'")
    assert len(sent) >= 2
    reached = {o["client_order_id"] for o in sent if first.submits[o["client_order_id"]]}
    assert len(reached) >= 2
    assert all(first.submits[coid] == 1 for coid in reached)

    second = Recording(app[VENUES])
    restarted = hedge_worker(app, second)
    restarted.start()
    try:
        await _all_hedged(conn, 2)
    finally:
        await restarted.stop()
    assert not reached & set(second.submits)  # resolved by status, never resent
    await _check_orders(app, conn, first.submits + second.submits)
    await check_books(client, conn, desk)


async def test_an_unknown_outcome_is_resolved_by_client_order_id(
    settings: Settings, secrets: DaemonSecrets, aiohttp_client: AppClient,
    conn: asyncpg.Connection,
) -> None:
    app, client, desk = await hedging_desk(settings, secrets, aiohttp_client, FILLS[:1])
    venues = Recording(app[VENUES])
    venues.timeout_after = 1  # the first order fills but its answer is lost
    worker = hedge_worker(app, venues)
    worker.start()
    try:
        await _all_hedged(conn, 1)
    finally:
        await worker.stop()
    assert await conn.fetchval(
        "SELECT count(*) FROM hedge_order WHERE status <> 'FILLED'") == 0
    await _check_orders(app, conn, venues.submits)
    await check_books(client, conn, desk)


async def test_two_workers_share_the_jobs_and_run_each_once(
    settings: Settings, secrets: DaemonSecrets, aiohttp_client: AppClient,
    conn: asyncpg.Connection, dsn: str,
) -> None:
    fills = FILLS + FILLS
    app, client, desk = await hedging_desk(settings, secrets, aiohttp_client, fills)
    venues = Recording(app[VENUES])
    pools = [await db.create_pool(dsn, 1, 3) for _ in range(2)]
    workers = [hedge_worker(app, venues, pool) for pool in pools]
    for worker in workers:
        worker.start()
    try:
        await _all_hedged(conn, len(fills), within_s=20.0)
    finally:
        for worker in workers:
            await worker.stop()
        for pool in pools:
            await pool.close()
    await _check_orders(app, conn, venues.submits)
    fills_booked = await conn.fetchval(
        "SELECT count(*) FROM ledger_outbox WHERE payload->'metadata'->>'kind' = 'hedge_fill'")
    assert fills_booked == await conn.fetchval("SELECT count(*) FROM hedge_order")
    await check_books(client, conn, desk)


async def test_a_started_worker_reads_every_linked_lps_balances_before_any_fill(
    settings: Settings, secrets: DaemonSecrets, aiohttp_client: AppClient,
) -> None:
    app, _, desk = await hedging_desk(settings, secrets, aiohttp_client, fills=())
    venues = Recording(app[VENUES])
    worker = hedge_worker(app, venues=venues)
    worker.start()
    try:
        async def read() -> bool:
            return set(venues.balance_reads) == {uuid.UUID(lp) for lp in desk.lps}

        await eventually(read, within_s=5.0, every_s=0.02)
    finally:
        await worker.stop()
    assert all(count == 1 for count in venues.balance_reads.values())
