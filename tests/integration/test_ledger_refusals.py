"""Entries a ledger backend must refuse, visibly, without holding up the ones behind them: an
amount the local journal cannot hold, a reference reused with other postings; and an error
nobody classified, which keeps the order and shows on the entry."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator, Sequence

import asyncpg
import pytest

from dealer.metrics import Metrics
from ledger.accounts import client_account, dealer_account
from ledger.backend import (
    CommitOutcome,
    LedgerBackend,
    LedgerRefused,
    LedgerTransaction,
    Posting,
)
from ledger.formance import FormanceConfig, FormanceLedger
from ledger.local import LocalLedger
from ledger.outbox import OutboxRelay, enqueue_transaction, outbox_references
from tests.fakes.formance import running_emulator

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
TOO_LARGE = 10 ** 40  # valid for Formance (uint256), beyond the journal's numeric(38, 0)


def clock() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def fill(client: uuid.UUID, dealer: uuid.UUID, units: int, *, reference: str = "ignored"
         ) -> LedgerTransaction:
    return LedgerTransaction(reference=reference, postings=(
        Posting(client_account(client), dealer_account(dealer), units * 650, "USDT/6"),
        Posting(dealer_account(dealer), client_account(client), units, "BTC/8"),
    ), metadata={"kind": "client_fill"}, timestamp=NOW)


@pytest.fixture(params=["local", "formance"])
async def backend(request: pytest.FixtureRequest, pool: asyncpg.Pool
                  ) -> AsyncIterator[LedgerBackend]:
    if request.param == "local":
        yield LocalLedger(pool)
        return
    async with running_emulator() as running:
        made = FormanceLedger(FormanceConfig(base_url=running.url, ledger_name="refusals"))
        yield made
        await made.close()


async def _enqueue(pool: asyncpg.Pool, txs: Sequence[LedgerTransaction]) -> list[int]:
    ids = []
    async with pool.acquire() as conn:
        for tx in txs:
            async with conn.transaction():
                ids.append(await enqueue_transaction(conn, tx, NOW))
    return ids


async def _relay_all(relay: OutboxRelay) -> None:
    """Passes until nothing is pending (a pass answering a wait means it is held up)."""
    for _ in range(50):
        if not await relay.pending_count():
            return
        assert await relay.relay_once() == 0.0, "the relay is held up"
    raise AssertionError("the outbox never drained")


async def _outcomes(pool: asyncpg.Pool) -> list[tuple[str | None, str | None]]:
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT outcome, last_error FROM ledger_outbox "
                                "ORDER BY outbox_id")
    return [(r["outcome"], r["last_error"]) for r in rows]



# ---------------------------------------------------------------- 1: what the journal can't hold


@pytest.mark.parametrize("batch_size", [1, 100])  # sent alone, and inside a bulk
async def test_an_amount_the_local_journal_cannot_hold_is_refused_and_the_rest_booked(
        pool: asyncpg.Pool, batch_size: int) -> None:
    client, dealer = uuid.uuid4(), uuid.uuid4()
    ids = await _enqueue(pool, [fill(client, dealer, 100), fill(client, dealer, TOO_LARGE),
                                fill(client, dealer, 200)])
    metrics = Metrics()
    ledger = LocalLedger(pool)
    relay = OutboxRelay(pool, ledger, metrics, clock, batch_size=batch_size)

    await _relay_all(relay)

    outcomes = await _outcomes(pool)
    assert [outcome for outcome, _ in outcomes] == ["committed", "refused", "committed"]
    assert "numeric(38, 0)" in (outcomes[1][1] or "")
    assert metrics.registry.get_sample_value("dealer_ledger_relay_errors_total",
                                             {"kind": "refused"}) == 1
    booked, _ = await ledger.transactions(address=None, reference=None, limit=10, offset=0)
    assert [t.reference for t in booked] == await outbox_references(pool, [ids[2], ids[0]])
    assert (await ledger.balances(client_account(client)))["BTC/8"] == 300


async def test_a_balance_the_local_journal_cannot_hold_is_refused_and_the_rest_booked(
        pool: asyncpg.Pool) -> None:
    # Each amount fits; their sum on one account does not.
    client, dealer = uuid.uuid4(), uuid.uuid4()
    half = 6 * 10 ** 37 // 650
    await _enqueue(pool, [fill(client, dealer, half), fill(client, dealer, half),
                          fill(client, dealer, 5)])
    relay = OutboxRelay(pool, LocalLedger(pool), Metrics(), clock)

    await _relay_all(relay)

    assert [outcome for outcome, _ in await _outcomes(pool)] == [
        "committed", "refused", "committed"]


class _Broken:
    """A backend failing in a way it does not classify (a bug, an unknown answer)."""

    name = "broken"

    def __init__(self, inner: LedgerBackend) -> None:
        self._inner = inner
        self.failing = True

    async def commit(self, transactions: Sequence[LedgerTransaction]) -> list[CommitOutcome]:
        if self.failing:
            raise KeyError("unexpected answer")
        return await self._inner.commit(transactions)

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)


async def test_an_unclassified_backend_error_keeps_the_order_and_is_shown_on_the_entry(
        pool: asyncpg.Pool) -> None:
    # Not known to be the entry's fault (it may hit every entry): retried with backoff, never
    # refused; the entry shows why it waits and the failure is counted.
    client, dealer = uuid.uuid4(), uuid.uuid4()
    await _enqueue(pool, [fill(client, dealer, 1), fill(client, dealer, 2)])
    metrics = Metrics()
    broken = _Broken(LocalLedger(pool))
    relay = OutboxRelay(pool, broken, metrics, clock)  # type: ignore[arg-type]

    assert await relay.relay_once() > 0.0

    async with pool.acquire() as conn:
        head = await conn.fetchrow("SELECT attempts, last_error, sent_at FROM ledger_outbox "
                                   "ORDER BY outbox_id LIMIT 1")
    assert head is not None
    assert head["sent_at"] is None
    assert head["attempts"] == 1
    assert "KeyError" in head["last_error"]
    assert metrics.registry.get_sample_value("dealer_ledger_relay_errors_total",
                                             {"kind": "relay"}) == 1
    async with pool.acquire() as conn:
        await conn.execute("UPDATE ledger_outbox SET next_attempt_at = $1", NOW)
    broken.failing = False
    await _relay_all(relay)
    assert [outcome for outcome, _ in await _outcomes(pool)] == ["committed", "committed"]


# ---------------------------------------------------------------- 2: a reference reused


async def test_a_reference_held_with_other_postings_is_refused_not_a_duplicate(
        backend: LedgerBackend) -> None:
    client, dealer = uuid.uuid4(), uuid.uuid4()
    held = fill(client, dealer, 1000, reference="reused-1")
    assert await backend.commit([held]) == [CommitOutcome.COMMITTED]

    with pytest.raises(LedgerRefused, match="reused-1"):
        await backend.commit([fill(client, dealer, 999, reference="reused-1")])
    assert await backend.balances(client_account(client)) == {"BTC/8": 1000,
                                                              "USDT/6": -650000}
    # inside a bulk (whether the bulk's other entries stay booked is the backend's own rule:
    # the relay resends a refused bulk entry by entry)
    with pytest.raises(LedgerRefused, match="reused-1"):
        await backend.commit([fill(client, dealer, 5, reference="fresh-1"),
                              fill(client, dealer, 999, reference="reused-1")])
    # the same postings again are the entry already booked
    assert await backend.commit([held]) == [CommitOutcome.DUPLICATE]
    found, total = await backend.transactions(address=None, reference="reused-1", limit=10,
                                              offset=0)
    assert total == 1
    assert found[0].postings == held.postings


async def test_the_relay_parks_an_entry_whose_reference_is_held_with_other_postings(
        pool: asyncpg.Pool) -> None:
    client, dealer = uuid.uuid4(), uuid.uuid4()
    ids = await _enqueue(pool, [fill(client, dealer, 10), fill(client, dealer, 20)])
    ledger = LocalLedger(pool)
    # the journal already holds the first entry's reference, for something else
    held = (await outbox_references(pool, ids[:1]))[0]
    await ledger.commit([fill(client, dealer, 7, reference=held)])
    metrics = Metrics()

    await _relay_all(OutboxRelay(pool, ledger, metrics, clock))

    outcomes = await _outcomes(pool)
    assert [outcome for outcome, _ in outcomes] == ["refused", "committed"]
    assert "other postings" in (outcomes[0][1] or "")
    assert not metrics.registry.get_sample_value("dealer_ledger_relay_sent_total",
                                                 {"outcome": "duplicate"})
    assert (await ledger.balances(client_account(client)))["BTC/8"] == 27
