"""The optional quote retention: EXPIRED quotes no order refers to are deleted once older than
DEALER_QUOTE_RETENTION_HOURS; filled quotes, quotes an order refused, recent and open quotes
stay. Off by default: every quote is kept."""

from __future__ import annotations

import datetime as dt
import uuid

import asyncpg

from dealer.appkeys import CLOCK, POOL, SCHEDULER
from dealer.services.rfq import QuotePurge, purge_quotes
from dealer.settings import DaemonSecrets, Settings
from tests.desk import (
    AppClient,
    accept,
    app_client,
    app_with_desk,
    make_desk,
    metric_value,
    request_quote,
)


async def test_old_expired_quotes_no_order_refers_to_are_purged(
    settings: Settings, secrets: DaemonSecrets, aiohttp_client: AppClient,
    conn: asyncpg.Connection,
) -> None:
    # The expiry job must not run during the test: its first run reads every quote, and would
    # expire the quote left OPEN below (made to look 25 hours old) on a slow machine.
    app, client = await app_client(settings, secrets, aiohttp_client, quote_retention_hours=24,
                                   quote_expiry_ms=60_000)
    assert app[SCHEDULER].get_job("quote_purge") is not None
    desk = await make_desk(client)
    quotes = {name: await request_quote(client, desk, orderSide="BUY", quantity="0.1")
              for name in ("old", "old_filled", "old_refused", "recent", "old_open")}
    await accept(client, quotes["old_filled"])
    await accept(client, quotes["old_refused"])
    # As a last look leaves a refused quote: EXPIRED, with its REJECTED order.
    refused = uuid.UUID(quotes["old_refused"]["quoteId"])
    await conn.execute("UPDATE quote SET status = 'EXPIRED' WHERE quote_id = $1", refused)
    await conn.execute("UPDATE trade_order SET status = 'REJECTED' WHERE quote_id = $1", refused)
    ids = {name: uuid.UUID(q["quoteId"]) for name, q in quotes.items()}
    await conn.execute("UPDATE quote SET status = 'EXPIRED' WHERE quote_id = ANY($1::uuid[])",
                       [ids["old"], ids["recent"]])
    now = app[CLOCK]()
    await conn.execute(
        """UPDATE quote SET created_at = $2::timestamptz,
                              expire_at = $2::timestamptz + interval '5 seconds'
           WHERE quote_id = ANY($1::uuid[])""",
        [ids[n] for n in ("old", "old_filled", "old_refused", "old_open")],
        now - dt.timedelta(hours=25))

    batches: list[int] = []
    async with app[POOL].acquire() as pooled:
        assert await purge_quotes(pooled, now - dt.timedelta(hours=24), batch=1,
                                  counted=batches.append) == 1
        assert await purge_quotes(pooled, now - dt.timedelta(hours=24)) == 0
    assert batches == [1]
    left = {r["quote_id"] for r in await conn.fetch("SELECT quote_id FROM quote")}
    assert left == {ids[n] for n in ("old_filled", "old_refused", "recent", "old_open")}
    # The orders keep their quotes.
    assert await conn.fetchval(
        "SELECT count(*) FROM trade_order o JOIN quote q USING (quote_id)") == 2


async def test_the_scheduled_purge_counts_what_it_deleted(
    settings: Settings, secrets: DaemonSecrets, aiohttp_client: AppClient,
    conn: asyncpg.Connection,
) -> None:
    app, client, desk = await app_with_desk(settings, secrets, aiohttp_client,
                                            quote_retention_hours=1)
    quote = await request_quote(client, desk, orderSide="SELL", quantity="0.1")
    await conn.execute(
        """UPDATE quote SET status = 'EXPIRED', created_at = created_at - interval '2 hours'
           WHERE quote_id = $1""", uuid.UUID(quote["quoteId"]))
    job = app[SCHEDULER].get_job("quote_purge")
    await job.func()
    assert await conn.fetchval("SELECT count(*) FROM quote") == 0
    assert await metric_value(client, "dealer_quotes_purged_total ") == 1


async def test_every_quote_is_kept_by_default(
    settings: Settings, secrets: DaemonSecrets, aiohttp_client: AppClient,
) -> None:
    app, _ = await app_client(settings, secrets, aiohttp_client)
    assert app[SCHEDULER].get_job("quote_purge") is None


async def test_a_run_after_the_first_reads_only_quotes_since_the_last_cutoff(
    settings: Settings, secrets: DaemonSecrets, aiohttp_client: AppClient,
    conn: asyncpg.Connection,
) -> None:
    app, client, desk = await app_with_desk(settings, secrets, aiohttp_client)
    ids = [uuid.UUID((await request_quote(client, desk, orderSide="BUY", quantity="0.1"))
                     ["quoteId"]) for _ in range(3)]
    now = app[CLOCK]()
    retention = dt.timedelta(hours=1)
    purge = QuotePurge(retention, margin=dt.timedelta(minutes=10))

    async def age(quote_id: uuid.UUID, created: dt.datetime, status: str) -> None:
        await conn.execute("UPDATE quote SET created_at = $2, status = $3 WHERE quote_id = $1",
                           quote_id, created, status)

    # Long past the cutoff but still OPEN (no expiry ran): the first, full run keeps it.
    await age(ids[0], now - 3 * retention, "OPEN")
    async with app[POOL].acquire() as pooled:
        assert await purge.run(pooled, now) == 0
        # Marked EXPIRED later: only a full run reads that far back now.
        await age(ids[0], now - 3 * retention, "EXPIRED")
        await age(ids[1], now - retention - dt.timedelta(minutes=5), "EXPIRED")  # in the margin
        later = now + dt.timedelta(minutes=1)
        assert await purge.run(pooled, later) == 1
        left = {r["quote_id"] for r in await conn.fetch("SELECT quote_id FROM quote")}
        assert left == {ids[0], ids[2]}
        # The next full run (a day on) reads everything again.
        assert await purge.run(pooled, now + dt.timedelta(days=1, minutes=1)) == 1
    assert {r["quote_id"] for r in await conn.fetch("SELECT quote_id FROM quote")} == {ids[2]}
