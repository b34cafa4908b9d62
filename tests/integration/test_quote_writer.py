"""The quote writer: quotes handed over while a group is being written go in the next group;
stopping writes what is queued first; quote ids are random version-4 UUIDs."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from decimal import Decimal

import pytest

from dealer import db
from dealer.errors import ApiError, Errors
from dealer.services.quoting import QuoteDraft, QuoteWriter, _QuoteIds
from dealer.services.rfq import QuoteRecord


def _draft(quote_id: uuid.UUID) -> QuoteDraft:
    now = dt.datetime.now(dt.UTC)
    # Priced on facts of an epoch that never was: nothing is written.
    record = QuoteRecord(quote_id, uuid.uuid4(), uuid.uuid4(), "BTC/USDT", "BUY", Decimal("0.1"),
                         None, Decimal(65000), {}, "OPEN", now, now + dt.timedelta(seconds=5),
                         None)
    return QuoteDraft(record, epoch=-1)


async def test_stopping_answers_every_queued_quote_first(dsn: str) -> None:
    pool = await db.create_pool(dsn, 1, 2)
    try:
        writer = QuoteWriter(pool, max_batch=3)
        writer.start()
        ids = _QuoteIds()
        answers = [writer.submit(_draft(ids.next())) for _ in range(10)]
        await writer.stop()
        assert all(answer.done() for answer in answers)
        assert [answer.result() for answer in answers] == [False] * 10  # stale: not written
        with pytest.raises(ApiError) as refused:  # a stopped writer takes no more quotes
            writer.submit(_draft(ids.next()))
        assert refused.value.error is Errors.SERVICE_UNAVAILABLE
    finally:
        await pool.close()


async def test_an_idle_writer_wakes_for_each_quote(dsn: str) -> None:
    pool = await db.create_pool(dsn, 1, 2)
    try:
        writer = QuoteWriter(pool)
        writer.start()
        ids = _QuoteIds()
        for _ in range(3):
            assert await asyncio.wait_for(writer.write(_draft(ids.next())), 5.0) is False
        await writer.stop()
    finally:
        await pool.close()


async def test_a_group_writes_the_quotes_of_the_current_epoch_and_answers_the_others(
        dsn: str) -> None:
    pool = await db.create_pool(dsn, 1, 2)
    try:
        dealer, client = uuid.uuid4(), uuid.uuid4()
        async with pool.acquire() as conn:
            await conn.execute(
                """INSERT INTO trading_account (trading_account_id, venue, kind,
                       external_trading_account_id, account_type, external_account_type,
                       status, created_at, updated_at)
                   VALUES ($1, 'FERMATA', 'DEALER', $3, 'DEALER', 'DEALER', 'ACTIVE',
                           now(), now()),
                          ($2, 'FERMATA', 'CLIENT', $4, 'CLIENT', 'CLIENT', 'ACTIVE',
                           now(), now())""", dealer, client, str(dealer), str(client))
            await conn.execute("""INSERT INTO dealer (dealer_account_id, status, config,
                                      created_at, updated_at)
                                  VALUES ($1, 'ACTIVE', '{}', now(), now())""", dealer)
            epoch = await conn.fetchval("SELECT epoch FROM quoting_epoch")
        writer = QuoteWriter(pool)
        writer.start()
        ids = _QuoteIds()
        current, stale = ids.next(), ids.next()

        def draft(quote_id: uuid.UUID, epoch: int) -> QuoteDraft:
            now = dt.datetime.now(dt.UTC)
            return QuoteDraft(QuoteRecord(quote_id, dealer, client, "BTC/USDT", "BUY",
                                          Decimal("0.1"), None, Decimal(65000), {}, "OPEN", now,
                                          now + dt.timedelta(seconds=5), None), epoch)

        # Handed over together, so written in one group: one on the current epoch, one older.
        answers = [writer.submit(draft(current, epoch)), writer.submit(draft(stale, epoch - 1))]
        assert [await answer for answer in answers] == [True, False]
        await writer.stop()
        async with pool.acquire() as conn:
            assert [r["quote_id"] for r in await conn.fetch("SELECT quote_id FROM quote")] == [
                current]
    finally:
        await pool.close()


def test_quote_ids_are_distinct_random_version_4_uuids() -> None:
    ids = _QuoteIds()
    drawn = [ids.next() for _ in range(1000)]  # several 4 KiB blocks
    assert len(set(drawn)) == len(drawn)
    assert {(u.version, u.variant) for u in drawn} == {(4, uuid.RFC_4122)}
    assert all(uuid.UUID(str(u)) == u for u in drawn[:10])
