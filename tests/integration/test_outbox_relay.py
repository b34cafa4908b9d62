"""The outbox relay against the local journal: order, exactly once, restarts."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg
import pytest

from dealer import db
from dealer.metrics import Metrics
from ledger.accounts import client_account, dealer_account, exchange_account
from ledger.backend import (
    AccountMetadata,
    CommitOutcome,
    LedgerTransaction,
    LedgerUnavailable,
    Posting,
)
from ledger.local import LocalLedger
from ledger.outbox import (
    RELAY_LOCK_KEY,
    OutboxRelay,
    enqueue_account_metadata,
    enqueue_transaction,
    outbox_references,
)
from tests.helpers import empty_database, eventually

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def clock() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def fill(client: uuid.UUID, dealer: uuid.UUID, units: int) -> LedgerTransaction:
    """A client buying `units` satoshis for 65000 USDT per BTC (DESIGN §7 client BUY)."""
    usdt = units * 65000 // 100  # satoshi → micro-USDT at 65 000: 1e-8 BTC * 65000 = 6.5e-4
    return LedgerTransaction(reference="ignored", postings=(
        Posting(client_account(client), dealer_account(dealer), usdt, "USDT/6"),
        Posting(dealer_account(dealer), client_account(client), units, "BTC/8"),
    ), metadata={"kind": "client_fill"}, timestamp=NOW)


async def _enqueue(pool: asyncpg.Pool, txs: list[LedgerTransaction]) -> list[int]:
    ids = []
    async with pool.acquire() as conn:
        for tx in txs:
            async with conn.transaction():
                ids.append(await enqueue_transaction(conn, tx, NOW))
    return ids


async def _journal_references(pool: asyncpg.Pool) -> list[str]:
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT reference FROM ledger_transaction ORDER BY "
                                "transaction_id")
    return [r["reference"] for r in rows]



async def test_entries_are_booked_in_outbox_order_exactly_once(pool: asyncpg.Pool) -> None:
    client, dealer = uuid.uuid4(), uuid.uuid4()
    ids = await _enqueue(pool, [fill(client, dealer, 1000 + n) for n in range(30)])
    relay = OutboxRelay(pool, LocalLedger(pool), Metrics(), clock, batch_size=7)
    relay.start()
    try:
        async def done() -> bool:
            return await relay.pending_count() == 0

        await eventually(done, within_s=5)
    finally:
        await relay.stop()
    assert await _journal_references(pool) == await outbox_references(pool, ids)
    ledger = LocalLedger(pool)
    btc = sum(1000 + n for n in range(30))
    assert (await ledger.balances(dealer_account(dealer)))["BTC/8"] == -btc
    assert (await ledger.balances(client_account(client)))["BTC/8"] == btc
    # Every asset sums to zero over all accounts.
    async with pool.acquire() as conn:
        sums = await conn.fetch("SELECT asset, sum(input - output) AS net FROM ledger_balance "
                                "GROUP BY asset")
    assert {r["asset"]: int(r["net"]) for r in sums} == {"BTC/8": 0, "USDT/6": 0}


async def test_a_relay_killed_between_send_and_ack_books_nothing_twice(
    pool: asyncpg.Pool,
) -> None:
    client, dealer = uuid.uuid4(), uuid.uuid4()
    ids = await _enqueue(pool, [fill(client, dealer, 500 + n) for n in range(10)])
    ledger = LocalLedger(pool)
    # What a relay that died right after sending the first 6 left behind: booked, not marked.
    from ledger.outbox import _transaction_from

    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT reference, payload FROM ledger_outbox "
                                "ORDER BY outbox_id LIMIT 6")
    await ledger.commit([_transaction_from(r["reference"], r["payload"]) for r in rows])
    metrics = Metrics()
    relay = OutboxRelay(pool, ledger, metrics, clock)
    while await relay.relay_once() == 0.0 and await relay.pending_count():
        pass
    assert await relay.pending_count() == 0
    assert await _journal_references(pool) == await outbox_references(pool, ids)
    async with pool.acquire() as conn:
        outcomes = [r["outcome"] for r in await conn.fetch(
            "SELECT outcome FROM ledger_outbox ORDER BY outbox_id")]
    assert outcomes == ["duplicate"] * 6 + ["committed"] * 4
    assert metrics.registry.get_sample_value("dealer_ledger_relay_sent_total",
                                             {"outcome": "duplicate"}) == 6


async def test_account_metadata_creates_the_wallet_and_merges(pool: asyncpg.Pool) -> None:
    lp = uuid.uuid4()
    async with pool.acquire() as conn:
        await enqueue_account_metadata(conn, AccountMetadata(exchange_account(lp), {
            "venue": "BINANCE"}), NOW)
        await enqueue_account_metadata(conn, AccountMetadata(exchange_account(lp), {
            "dealerAccountId": "d"}), NOW)
    relay = OutboxRelay(pool, LocalLedger(pool), Metrics(), clock)
    await relay.relay_once()
    found = await LocalLedger(pool).account(exchange_account(lp))
    assert found == ({"venue": "BINANCE", "dealerAccountId": "d"}, {})


async def test_only_one_relay_works_at_a_time(pool: asyncpg.Pool) -> None:
    client, dealer = uuid.uuid4(), uuid.uuid4()
    ids = await _enqueue(pool, [fill(client, dealer, 100 + n) for n in range(20)])
    relays = [OutboxRelay(pool, LocalLedger(pool), Metrics(), clock, batch_size=3)
              for _ in range(3)]
    for relay in relays:
        relay.start()
    try:
        async def done() -> bool:
            return await relays[0].pending_count() == 0

        await eventually(done, within_s=5)
        await asyncio.sleep(0.1)
    finally:
        for relay in relays:
            await relay.stop()
    assert await _journal_references(pool) == await outbox_references(pool, ids)


async def test_an_asset_scale_is_pinned_by_its_first_use(pool: asyncpg.Pool) -> None:
    client, dealer = uuid.uuid4(), uuid.uuid4()
    await _enqueue(pool, [fill(client, dealer, 10)])
    wrong = LedgerTransaction(reference="x", postings=(
        Posting(client_account(client), dealer_account(dealer), 1, "USDT/8"),), timestamp=NOW)
    async with pool.acquire() as conn:
        with pytest.raises(ValueError, match="USDT is pinned at scale 6"):
            async with conn.transaction():
                await enqueue_transaction(conn, wrong, NOW)
        assert await conn.fetchval("SELECT count(*) FROM ledger_outbox") == 1
        pinned = dict(await conn.fetch("SELECT code, scale FROM ledger_asset_scale"))
    assert pinned == {"BTC": 8, "USDT": 6}


async def test_a_scale_pinned_by_a_concurrent_transaction_is_honoured(pool: asyncpg.Pool) -> None:
    """Two first uses of an asset at once: the second waits for the first's pin, then sees it
    (after a fresh read) and is written; a wrong scale is still refused with nothing written."""
    client, dealer = uuid.uuid4(), uuid.uuid4()
    async with pool.acquire() as first, pool.acquire() as second:
        tx_first = first.transaction()
        await tx_first.start()
        await enqueue_transaction(first, fill(client, dealer, 10), NOW)
        async with second.transaction():
            waiting = asyncio.create_task(
                enqueue_transaction(second, fill(client, dealer, 20), NOW))

            async def blocked() -> bool:
                return await first.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                ) == 1
            await eventually(blocked, within_s=5)
            await tx_first.commit()
            second_id = await waiting
        assert await second.fetchval("SELECT count(*) FROM ledger_outbox") == 2
        assert await second.fetchval(
            "SELECT payload->'postings'->0->>2 FROM ledger_outbox WHERE outbox_id = $1",
            second_id) == str(20 * 65000 // 100)
        wrong = LedgerTransaction(reference="x", postings=(
            Posting(client_account(client), dealer_account(dealer), 1, "BTC/6"),),
            timestamp=NOW)
        with pytest.raises(ValueError, match="BTC is pinned at scale 8"):
            async with second.transaction():
                await enqueue_transaction(second, wrong, NOW)
        assert await second.fetchval("SELECT count(*) FROM ledger_outbox") == 2


async def test_a_woken_relay_lingers_so_entries_written_meanwhile_join_its_batch(
    pool: asyncpg.Pool,
) -> None:
    client, dealer = uuid.uuid4(), uuid.uuid4()
    batches: list[int] = []
    lingering, release = asyncio.Event(), asyncio.Event()

    class CountingLedger(LocalLedger):
        async def commit(self, transactions: Sequence[LedgerTransaction]
                         ) -> list[CommitOutcome]:
            batches.append(len(transactions))
            return await super().commit(transactions)

    async def sleep(seconds: float) -> None:
        if seconds == 0.25:  # the linger (the relay's other waits are its 1 s restart pause)
            lingering.set()
            await release.wait()
        else:
            await asyncio.sleep(seconds)

    first_pass = asyncio.Event()

    class WatchedMetrics(Metrics):
        def outbox_state(self, pending: int, oldest_age_s: float) -> None:
            super().outbox_state(pending, oldest_age_s)
            first_pass.set()  # the relay listens and has read the (empty) outbox once

    relay = OutboxRelay(pool, CountingLedger(pool), WatchedMetrics(), clock, linger_s=0.25,
                        sleep=sleep)
    relay.start()
    try:
        await asyncio.wait_for(first_pass.wait(), 5)
        await _enqueue(pool, [fill(client, dealer, 10)])
        await asyncio.wait_for(lingering.wait(), 5)
        assert batches == []  # woken, but nothing sent yet
        await _enqueue(pool, [fill(client, dealer, 20), fill(client, dealer, 30)])
        release.set()

        async def done() -> bool:
            return await relay.pending_count() == 0

        await eventually(done, within_s=5)
    finally:
        await relay.stop()
    assert batches == [3]


async def test_a_relay_whose_lock_connection_dies_stops_leading(pool: asyncpg.Pool,
                                                                 dsn: str) -> None:
    # The relay holds its lock on a connection of its own; when that session ends the lock is
    # gone, so the relay must stop relaying until it holds the lock again.
    relay = OutboxRelay(pool, LocalLedger(pool), Metrics(), clock, poll_interval_s=0.05,
                        listen_connect=lambda: db.connect(dsn))
    relay.start()
    try:
        async def holder() -> int | None:
            async with pool.acquire() as conn:
                pid: int | None = await conn.fetchval(
                    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted")
            return pid

        first = await eventually(holder, within_s=5)
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT pg_terminate_backend($1)", first)

        async def led_again() -> bool:
            pid = await holder()
            return pid is not None and pid != first

        await eventually(led_again, within_s=5)
        client, dealer = uuid.uuid4(), uuid.uuid4()
        await _enqueue(pool, [fill(client, dealer, 7)])

        async def sent() -> bool:
            return await relay.pending_count() == 0

        await eventually(sent, within_s=5)
    finally:
        await relay.stop()


async def test_entries_written_before_migration_0020_keep_their_reference(
        pg_server: Any) -> None:
    """An entry written before references were stored may have been sent as `fermata-<id>`:
    its resend must be answered as a duplicate, so the migration gives it that reference.
    Entries written after it get random bits after their id."""
    dsn = await empty_database(pg_server)
    migrations = db.bundled_migrations()
    conn = await db.connect(dsn)
    try:
        await db.apply_migrations(conn, [m for m in migrations if m.version < 20])
        client, dealer = uuid.uuid4(), uuid.uuid4()
        old = [await enqueue_transaction(conn, fill(client, dealer, units), NOW)
               for units in (1, 2)]
        await db.apply_migrations(conn, migrations)
        assert await outbox_references(conn, old) == [f"fermata-{i}" for i in old]
        new = [await enqueue_transaction(conn, fill(client, dealer, units), NOW)
               for units in (3, 4)]
        references = await outbox_references(conn, new)
    finally:
        await conn.close()
    for outbox_id, reference in zip(new, references, strict=True):
        assert re.fullmatch(f"fermata-{outbox_id}-[0-9a-f]{{16}}", reference), reference
    assert references[0][-16:] != references[1][-16:]


async def test_a_relay_that_stops_leading_stops_reporting_the_outbox(pool: asyncpg.Pool,
                                                                      dsn: str) -> None:
    """The outbox gauges are the leading relay's (the alerts and panels take their max over the
    replicas): one that led while entries waited, then lost its lock to another, shows 0
    instead of the backlog it last saw, frozen."""

    class DownLedger(LocalLedger):
        async def commit(self, transactions: Sequence[LedgerTransaction]
                         ) -> list[CommitOutcome]:
            raise LedgerUnavailable("the ledger is down")

    metrics = Metrics()

    def gauges() -> tuple[float | None, float | None]:
        return (metrics.registry.get_sample_value("dealer_ledger_outbox_pending"),
                metrics.registry.get_sample_value("dealer_ledger_outbox_oldest_age_seconds"))

    await _enqueue(pool, [fill(uuid.uuid4(), uuid.uuid4(), 7)])
    relay = OutboxRelay(pool, DownLedger(pool), metrics, clock, poll_interval_s=0.05,
                        listen_connect=lambda: db.connect(dsn))
    relay.start()
    other = await asyncpg.connect(dsn)  # stands for another replica's relay
    try:
        async def backlog_shown() -> bool:
            pending, age = gauges()
            return pending == 1 and age is not None and age > 0

        await eventually(backlog_shown, within_s=5)
        async with pool.acquire() as conn:
            leader = await conn.fetchval(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted")
            assert await conn.fetchval("SELECT pg_terminate_backend($1)", leader)
        await other.execute("SELECT pg_advisory_lock($1)", RELAY_LOCK_KEY)

        async def zero_shown() -> bool:
            return gauges() == (0.0, 0.0)

        await eventually(zero_shown, within_s=5)
        assert await relay.pending_count() == 1  # the entry still waits, for the leader
    finally:
        await other.close()
        await relay.stop()
