"""One backend contract suite for `local` and `formance` (against the Ledger v2 emulator), and
the outbox relay through Formance outages, lost answers and restarts."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from aiohttp import web

from dealer.app import create_app
from dealer.metrics import Metrics
from dealer.settings import DaemonSecrets, Settings
from ledger.accounts import client_account, dealer_account, exchange_account
from ledger.backend import (
    AccountMetadata,
    CommitOutcome,
    LedgerBackend,
    LedgerTransaction,
    Posting,
)
from ledger.formance import FormanceConfig, FormanceLedger
from ledger.local import LocalLedger
from ledger.outbox import OutboxRelay, enqueue_transaction, outbox_references
from tests.conftest import assert_ok
from tests.fakes.formance import FormanceEmulator, running_emulator
from tests.helpers import Client, connect_exchange_account, eventually, get, post

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def clock() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def fill(reference: str, client: uuid.UUID, dealer: uuid.UUID, units: int) -> LedgerTransaction:
    return LedgerTransaction(reference=reference, postings=(
        Posting(client_account(client), dealer_account(dealer), units * 650, "USDT/6"),
        Posting(dealer_account(dealer), client_account(client), units, "BTC/8"),
    ), metadata={"kind": "client_fill"}, timestamp=NOW)


@pytest.fixture
async def emulator() -> AsyncIterator[tuple[str, FormanceEmulator]]:
    async with running_emulator() as running:
        yield running.url, running.emulator


@pytest.fixture(params=["local", "formance"])
async def backend(request: pytest.FixtureRequest, pool: asyncpg.Pool,
                  emulator: tuple[str, FormanceEmulator]) -> AsyncIterator[LedgerBackend]:
    made: LedgerBackend
    if request.param == "local":
        made = LocalLedger(pool)
    else:
        made = FormanceLedger(FormanceConfig(base_url=emulator[0], ledger_name="contract"))
    yield made
    await made.close()


# ---------------------------------------------------------------- contract


async def test_commit_books_once_per_reference(backend: LedgerBackend) -> None:
    client, dealer = uuid.uuid4(), uuid.uuid4()
    tx = fill("ref-1", client, dealer, 1000)
    assert await backend.commit([tx]) == [CommitOutcome.COMMITTED]
    assert await backend.commit([tx]) == [CommitOutcome.DUPLICATE]
    found, total = await backend.transactions(address=None, reference="ref-1", limit=10,
                                              offset=0)
    assert total == 1
    assert found[0].postings == tx.postings
    assert dict(found[0].metadata)["kind"] == "client_fill"
    assert await backend.balances(dealer_account(dealer)) == {"BTC/8": -1000, "USDT/6": 650000}


async def test_bulk_commits_in_order_and_replays_as_duplicates(backend: LedgerBackend) -> None:
    client, dealer = uuid.uuid4(), uuid.uuid4()
    txs = [fill(f"bulk-{n}", client, dealer, 10 + n) for n in range(5)]
    assert await backend.commit(txs) == [CommitOutcome.COMMITTED] * 5
    assert await backend.commit(txs[2:]) == [CommitOutcome.DUPLICATE] * 3
    found, total = await backend.transactions(address=client_account(client), reference=None,
                                              limit=10, offset=0)
    assert total == 5
    assert [t.reference for t in found] == [f"bulk-{n}" for n in reversed(range(5))]
    page, _ = await backend.transactions(address=None, reference=None, limit=2, offset=1)
    assert [t.reference for t in page] == ["bulk-3", "bulk-2"]


async def test_balances_by_prefix_and_accounts(backend: LedgerBackend) -> None:
    client, dealer = uuid.uuid4(), uuid.uuid4()
    await backend.commit([fill("p-1", client, dealer, 7)])
    by_prefix = await backend.balances_by_prefix("client:")
    assert by_prefix == {client_account(client): {"BTC/8": 7, "USDT/6": -4550}}
    lp = exchange_account(uuid.uuid4())
    assert await backend.account(lp) is None
    await backend.set_account_metadata([AccountMetadata(lp, {"venue": "BINANCE"})])
    await backend.set_account_metadata([AccountMetadata(lp, {"dealerAccountId": "d"})])
    assert await backend.account(lp) == ({"venue": "BINANCE", "dealerAccountId": "d"}, {})
    await backend.check()


# ---------------------------------------------------------------- relay through Formance


async def _stream(pool: asyncpg.Pool, client: uuid.UUID, dealer: uuid.UUID, count: int,
                  pause_s: float = 0.0) -> list[int]:
    ids = []
    async with pool.acquire() as conn:
        for n in range(count):
            async with conn.transaction():
                ids.append(await enqueue_transaction(
                    conn, fill("x", client, dealer, 100 + n), NOW))
            if pause_s:
                await asyncio.sleep(pause_s)
    return ids


def _booked(emulator: FormanceEmulator, ledger: str) -> list[str | None]:
    return [t.reference for t in emulator.ledger(ledger).transactions]



async def test_an_outage_delays_but_loses_and_doubles_nothing(
    pool: asyncpg.Pool, emulator: tuple[str, FormanceEmulator],
) -> None:
    url, fake = emulator
    backend = FormanceLedger(FormanceConfig(base_url=url, ledger_name="outage"))
    relay = OutboxRelay(pool, backend, Metrics(), clock, batch_size=10)
    relay.start()
    client, dealer = uuid.uuid4(), uuid.uuid4()
    try:
        first = await _stream(pool, client, dealer, 10)
        fake.available = False
        during = await _stream(pool, client, dealer, 20, pause_s=0.005)
        await asyncio.sleep(0.3)  # the relay keeps failing and backing off meanwhile
        fake.available = True
        relay.wake()
        last = await _stream(pool, client, dealer, 10)

        async def drained() -> bool:
            return await relay.pending_count() == 0

        await eventually(drained, within_s=30, every_s=0.1)
    finally:
        await relay.stop()
        await backend.close()
    assert _booked(fake, "outage") == await outbox_references(pool, first + during + last)
    assert fake.balance("outage", dealer_account(dealer), "BTC/8") == -sum(
        100 + n for n in list(range(10)) + list(range(20)) + list(range(10)))


async def test_a_lost_answer_and_a_restarted_relay_book_nothing_twice(
    pool: asyncpg.Pool, emulator: tuple[str, FormanceEmulator],
) -> None:
    url, fake = emulator
    client, dealer = uuid.uuid4(), uuid.uuid4()
    ids = await _stream(pool, client, dealer, 12)
    # The first bulk is booked but its answer never arrives (the relay "dies" before the ack).
    fake.drop_next_answer("v2CreateBulk")
    backend = FormanceLedger(FormanceConfig(base_url=url, ledger_name="lost"))
    first = OutboxRelay(pool, backend, Metrics(), clock, batch_size=5)
    await first.relay_once()
    assert await first.pending_count() == 12
    assert len(_booked(fake, "lost")) == 5
    await backend.close()
    # A new relay (a restarted daemon) sends everything again from the outbox.
    backend = FormanceLedger(FormanceConfig(base_url=url, ledger_name="lost"))
    metrics = Metrics()
    second = OutboxRelay(pool, backend, metrics, clock, batch_size=5)
    async with pool.acquire() as conn:
        await conn.execute("UPDATE ledger_outbox SET next_attempt_at = $1", NOW)
    while await second.pending_count():
        await second.relay_once()
    await backend.close()
    assert _booked(fake, "lost") == await outbox_references(pool, ids)
    assert metrics.registry.get_sample_value("dealer_ledger_relay_sent_total",
                                             {"outcome": "duplicate"}) == 5


# ---------------------------------------------------------------- the daemon on Formance


async def test_linking_with_formance_creates_the_wallet_and_net_flow_shows_it(
    settings: Settings, secrets: DaemonSecrets, emulator: tuple[str, FormanceEmulator],
    aiohttp_client: Callable[[web.Application], Awaitable[Client]],
) -> None:
    url, fake = emulator
    configured = settings.model_copy(update={"ledger_backend": "formance", "formance_url": url,
                                             "formance_ledger": "desk"})
    client = await aiohttp_client(create_app(configured, secrets))
    account = await connect_exchange_account(client, "BINANCE", "spot")
    _, body = await post(client, "/api/v3/fermata/dealer/create", {"symbols": ["BTC/USDT"]})
    dealer = assert_ok(body)["dealerAccountId"]
    status, body = await post(client, "/api/v3/fermata/dealer/link",
                              {"dealerAccountId": dealer, "tradingAccountId": account})
    assert status == 200, body
    address = f"exchange:{account}"

    async def wallet() -> dict[str, Any] | None:
        accounts = fake.ledger("desk").accounts if "desk" in fake.ledgers else {}
        found = accounts.get(address)
        return None if found is None else found.metadata

    metadata = await eventually(wallet, within_s=3)
    assert metadata["dealerAccountId"] == dealer
    assert metadata["venue"] == "BINANCE"
    assert metadata["linkedAt"].endswith("Z")
    _, body = await get(client, "/api/v3/fermata/dealer/netFlow", {"dealerAccountId": dealer})
    flow = assert_ok(body)
    assert flow["wallets"] == [{"tradingAccountId": account, "venue": "BINANCE",
                                "address": address, "exists": True, "balances": []}]
    _, body = await get(client, "/api/v3/ledger/account", {"address": address})
    assert assert_ok(body)["metadata"]["venue"] == "BINANCE"
    resp = await client.get("/api/v3/health")
    assert (await resp.json())["checks"]["ledger"]["backend"] == "formance"


async def test_a_database_restored_from_a_backup_books_its_new_entries(
    pool: asyncpg.Pool, emulator: tuple[str, FormanceEmulator],
) -> None:
    """A restore takes the outbox (and its id sequence) back to before entries that Formance
    has already booked: the entries written after it get those ids again, and are booked as
    new transactions, not refused as conflicts with the lost ones."""
    url, fake = emulator
    client, dealer = uuid.uuid4(), uuid.uuid4()
    lost = await _stream(pool, client, dealer, 3)
    backend = FormanceLedger(FormanceConfig(base_url=url, ledger_name="restored"))
    metrics = Metrics()
    relay = OutboxRelay(pool, backend, metrics, clock)
    try:
        while await relay.pending_count():
            await relay.relay_once()
        lost_references = await outbox_references(pool, lost)
        async with pool.acquire() as conn:  # the restore: those entries and their ids are gone
            await conn.execute("DELETE FROM ledger_outbox WHERE outbox_id = ANY($1::bigint[])",
                               lost)
            await conn.execute("SELECT setval('ledger_outbox_outbox_id_seq', $1, false)",
                               lost[0])
        written = await _stream(pool, client, dealer, 3)
        assert written == lost
        while await relay.pending_count():
            await relay.relay_once()
    finally:
        await relay.stop()
        await backend.close()
    new_references = await outbox_references(pool, written)
    assert set(new_references).isdisjoint(lost_references)
    assert _booked(fake, "restored") == lost_references + new_references
    async with pool.acquire() as conn:
        outcomes = [r["outcome"] for r in await conn.fetch(
            "SELECT outcome FROM ledger_outbox WHERE outbox_id = ANY($1::bigint[]) "
            "ORDER BY outbox_id", written)]
    assert outcomes == ["committed"] * 3
    assert metrics.registry.get_sample_value("dealer_ledger_relay_errors_total",
                                             {"kind": "refused"}) in (None, 0.0)
