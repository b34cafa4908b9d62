"""The daemon killed (SIGKILL) in the middle of a hedging burst, then started again on the same
database and data directory: no client order id reaches a venue twice, no fill loses its hedge
job, every job ends HEDGED and the books net out as after an uninterrupted burst.

The paper venues journal their orders in the data directory (`DEALER_PAPER_JOURNAL`), so the
restarted daemon meets venues that still know every order the killed one sent, as real
exchanges would, and the journals say how often each client order id arrived."""

from __future__ import annotations

import asyncio
import contextlib
import random
from pathlib import Path

import aiohttp
import asyncpg

from tests.conftest import JWT_SECRET, SECRETS_KEY
from tests.desk import (
    Desk,
    accept,
    check_books,
    hedges_final,
    make_desk,
    random_fill,
    request_quote,
    venue_submits,
)
from tests.helpers import eventually
from tests.integration.daemon import Daemon, daemon_env, start_daemon
from venues.paper.schemas import load_journal

FILLS = 80


async def _burst(client: aiohttp.ClientSession, desk: Desk, count: int) -> None:
    """Quotes and accepts, eight at a time, until the daemon dies under them."""
    rng = random.Random(31)
    gate = asyncio.Semaphore(8)

    async def one() -> None:
        side, quantity = random_fill(rng, largest="0.3")
        async with gate:
            with contextlib.suppress(aiohttp.ClientError, AssertionError, OSError):
                await accept(client, await request_quote(  # type: ignore[arg-type]
                    client, desk, orderSide=side, quantity=quantity))  # type: ignore[arg-type]

    await asyncio.gather(*(one() for _ in range(count)))


def _venue_fills(data_dir: Path) -> dict[str, object]:
    """The last state each venue journalled for each client order id: what really traded."""
    last: dict[str, object] = {}
    for path in (data_dir / "paper").glob("*.jsonl"):
        for entry in load_journal(path):
            if entry.order is not None:
                last[entry.order.client_order_id] = entry.order.filled_quantity
    return last


async def test_a_daemon_killed_mid_burst_hedges_everything_once_after_restart(
    dsn: str, tmp_path: Path, conn: asyncpg.Connection,
) -> None:
    env = daemon_env(tmp_path, DEALER_DATABASE_URL=dsn, DEALER_JWT_SECRET=JWT_SECRET,
                     DEALER_SECRETS_KEY=SECRETS_KEY, DEALER_PAPER_JOURNAL="1",
                     DEALER_PAPER_LATENCY_MS="5", DEALER_PAPER_TIMEOUT_RATIO="0.2",
                     DEALER_HEDGE_LEASE_MS="1500", DEALER_HEDGE_BACKOFF_MS="50",
                     DEALER_HEDGE_UNKNOWN_GRACE_MS="1000", DEALER_HEDGE_MAX_ATTEMPTS="10")
    first: Daemon = start_daemon(env)
    killed = False
    try:
        async with aiohttp.ClientSession(base_url=first.url) as client:
            # A limit no burst reaches: the kill switch (tested on its own) stays out of this.
            desk = await make_desk(client,  # type: ignore[arg-type]
                                   maxUnhedgedNotional="100000000")
            burst = asyncio.create_task(_burst(client, desk, FILLS))

            async def hedging() -> bool:
                return bool(await conn.fetchval("SELECT count(*) FROM hedge_order") >= 15)

            await eventually(hedging, within_s=20.0, every_s=0.005)
            first.process.kill()  # SIGKILL: no shutdown, no draining
            first.process.wait(timeout=10)
            killed = True
            await burst
    finally:
        if not killed:
            first.stop()
    open_jobs = await conn.fetchval(
        "SELECT count(*) FROM hedge_job WHERE status IN ('PENDING', 'IN_PROGRESS')")
    in_flight = await conn.fetchval(
        "SELECT count(*) FROM hedge_order WHERE status IN ('SENT', 'UNKNOWN')")
    assert open_jobs > 0, "the daemon was killed after the burst was hedged"
    assert in_flight > 0, "the kill left no hedge order in flight"

    second = start_daemon(env)
    try:
        async with aiohttp.ClientSession(base_url=second.url) as client:
            filled = await conn.fetchval(
                "SELECT count(*) FROM trade_order WHERE status = 'FILLED'")
            jobs = await hedges_final(conn, filled, within_s=30.0)
            assert {j["status"] for j in jobs} == {"HEDGED"}, second.log_tail()
            assert all(j["hedged_quantity"] == j["quantity"] for j in jobs)
            # no fill lost its job: one job per filled order
            assert await conn.fetchval(
                """SELECT count(*) FROM trade_order o WHERE o.status = 'FILLED'
                   AND NOT EXISTS (SELECT 1 FROM hedge_job j
                                   WHERE j.trade_order_id = o.trade_order_id)""") == 0
            orders = await conn.fetch("SELECT * FROM hedge_order")
            assert {o["status"] for o in orders} <= {"FILLED", "PARTIALLY_FILLED", "EXPIRED",
                                                     "REJECTED"}
            submits = venue_submits(tmp_path)
            assert submits
            assert all(count == 1 for count in submits.values()), [
                key for key, count in submits.items() if count > 1]
            traded = _venue_fills(tmp_path)
            for order in orders:  # what the ledger booked is what the venues did
                if order["reject_reason"] == "the venue never received it":
                    assert order["client_order_id"] not in traded
                else:
                    assert traded[order["client_order_id"]] == order["filled_quantity"]
            await check_books(client, conn, desk)  # type: ignore[arg-type]
    finally:
        assert second.stop() == 0, second.log_tail()
