"""FormanceLedger against the Ledger v2 emulator, through the real formance-sdk-python."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import AsyncIterator

import pytest

from ledger.backend import (
    AccountMetadata,
    CommitOutcome,
    LedgerBackend,
    LedgerRefused,
    LedgerTransaction,
    LedgerUnavailable,
    Posting,
)
from ledger.formance import FormanceConfig, FormanceLedger
from tests.fakes.formance import FormanceEmulator, RunningEmulator, running_emulator

LEDGER = "fermata"
COMMITTED = CommitOutcome.COMMITTED
DUPLICATE = CommitOutcome.DUPLICATE
# The SDK reads its own deprecated `order` field when it builds a list request.
pytestmark = pytest.mark.filterwarnings(
    "ignore::DeprecationWarning:formance_sdk_python.utils.queryparams")


@pytest.fixture
async def served() -> AsyncIterator[RunningEmulator]:
    async with running_emulator() as running:
        yield running


@pytest.fixture
async def backend(served: RunningEmulator) -> AsyncIterator[FormanceLedger]:
    ledger = FormanceLedger(FormanceConfig(served.url, ledger_name=LEDGER))
    yield ledger
    await ledger.close()


def sale(reference: str, amount: int = 100, *, client: str = "client:c1",
         dealer: str = "dealer:d1", timestamp: dt.datetime | None = None) -> LedgerTransaction:
    """A client buys: USDT from the client to the dealer, BTC back."""
    return LedgerTransaction(
        reference=reference,
        postings=(Posting(client, dealer, amount * 1000, "USDT/6"),
                  Posting(dealer, client, amount, "BTC/8")),
        metadata={"kind": "client_trade", "quoteId": f"q-{reference}"},
        timestamp=timestamp,
    )


def stored_references(served: RunningEmulator) -> list[str | None]:
    return [tx.reference for tx in served.emulator.ledger(LEDGER).transactions]


def test_formance_ledger_is_a_ledger_backend(backend: FormanceLedger) -> None:
    as_protocol: LedgerBackend = backend
    assert as_protocol.name == "formance"


# ---------------------------------------------------------------- commit


async def test_commit_one_books_it_forced_with_reference_metadata_and_time(
        backend: FormanceLedger, served: RunningEmulator) -> None:
    when = dt.datetime(2026, 2, 3, 4, 5, 6, 789000, tzinfo=dt.UTC)

    outcomes = await backend.commit([sale("ob-1", timestamp=when)])

    assert outcomes == [COMMITTED]
    (stored,) = served.emulator.ledger(LEDGER).transactions
    assert stored.reference == "ob-1"
    assert stored.metadata == {"kind": "client_trade", "quoteId": "q-ob-1"}
    assert stored.timestamp == when
    assert [(p.source, p.destination, p.amount, p.asset) for p in stored.postings] == [
        ("client:c1", "dealer:d1", 100_000, "USDT/6"), ("dealer:d1", "client:c1", 100, "BTC/8")]
    # Forced: both non-world sources went negative.
    assert served.emulator.balance(LEDGER, "client:c1", "USDT/6") == -100_000
    assert served.emulator.balance(LEDGER, "dealer:d1", "BTC/8") == -100
    assert ("POST", f"/api/ledger/v2/{LEDGER}", "v2CreateLedger") in served.emulator.requests


async def test_the_ledger_is_created_once_and_an_existing_one_is_used(
        served: RunningEmulator) -> None:
    served.emulator.add_ledger("existing")
    fresh = FormanceLedger(FormanceConfig(served.url, ledger_name="created"))
    reused = FormanceLedger(FormanceConfig(served.url, ledger_name="existing"))
    try:
        await fresh.commit([sale("c-1")])
        await fresh.commit([sale("c-2")])
        await reused.commit([sale("e-1")])
    finally:
        await fresh.close()
        await reused.close()

    assert served.emulator.operation_counts["v2CreateLedger"] == 1
    assert served.emulator.operation_counts["v2GetLedger"] == 2
    assert len(served.emulator.ledger("created").transactions) == 2
    assert len(served.emulator.ledger("existing").transactions) == 1


async def test_committing_the_same_reference_again_is_a_duplicate_by_idempotency(
        backend: FormanceLedger, served: RunningEmulator) -> None:
    await backend.commit([sale("dup-1")])

    again = await backend.commit([sale("dup-1")])

    assert again == [DUPLICATE]
    assert stored_references(served) == ["dup-1"]


async def test_a_reference_booked_without_the_key_is_a_duplicate_by_conflict(
        backend: FormanceLedger, served: RunningEmulator) -> None:
    # Booked by a bulk (no idempotency key), then sent alone: 409 CONFLICT on the reference.
    await backend.commit([sale("cf-1"), sale("cf-2")])

    alone = await backend.commit([sale("cf-2")])

    assert alone == [DUPLICATE]
    assert stored_references(served) == ["cf-1", "cf-2"]
    assert served.emulator.operation_counts["v2ListTransactions"] == 1


async def test_a_reference_held_with_other_postings_is_refused(
        backend: FormanceLedger, served: RunningEmulator) -> None:
    await backend.commit([sale("other-1"), sale("other-2")])

    with pytest.raises(LedgerRefused, match="other-2 with other postings"):
        await backend.commit([sale("other-3"), sale("other-2", amount=7)])
    # Through the idempotency key: the same key with another body is VALIDATION.
    await backend.commit([sale("other-4")])
    with pytest.raises(LedgerRefused, match="VALIDATION"):
        await backend.commit([sale("other-4", amount=8)])

    assert stored_references(served) == ["other-1", "other-2", "other-3", "other-4"]


async def test_commit_many_uses_bulks_in_order(served: RunningEmulator) -> None:
    backend = FormanceLedger(FormanceConfig(served.url, ledger_name=LEDGER, bulk_max=2))
    try:
        await backend.commit([sale("m-2")])
        outcomes = await backend.commit([sale(f"m-{n}") for n in range(5)])
    finally:
        await backend.close()

    assert outcomes == [COMMITTED, COMMITTED, DUPLICATE, COMMITTED, COMMITTED]
    assert served.emulator.operation_counts["v2CreateBulk"] == 3
    assert stored_references(served) == ["m-2", "m-0", "m-1", "m-3", "m-4"]


async def test_a_smaller_server_bulk_limit_is_followed(served: RunningEmulator) -> None:
    served.emulator.bulk_max_size = 2
    backend = FormanceLedger(FormanceConfig(served.url, ledger_name=LEDGER, bulk_max=5))
    try:
        outcomes = await backend.commit([sale(f"s-{n}") for n in range(5)])
    finally:
        await backend.close()

    assert outcomes == [COMMITTED] * 5
    assert stored_references(served) == [f"s-{n}" for n in range(5)]


@pytest.mark.parametrize("invalid", [
    LedgerTransaction("bad-1", ()),
    LedgerTransaction("bad-2", (Posting("world", "dealer:d1", 0, "USD/2"),)),
    LedgerTransaction("bad-3", (Posting("world", "dealer:d1", -5, "USD/2"),)),
    LedgerTransaction("bad-4", (Posting("world", "dealer d1", 5, "USD/2"),)),
    LedgerTransaction("bad-5", (Posting("world", "dealer:d1", 5, "usd/2"),)),
    LedgerTransaction("bad-6", (Posting("world", "dealer:d1", 5, "USD/2"),),
                      timestamp=dt.datetime(2026, 1, 1)),
    LedgerTransaction("", (Posting("world", "dealer:d1", 5, "USD/2"),)),
])
async def test_an_invalid_transaction_is_refused_before_anything_is_sent(
        backend: FormanceLedger, served: RunningEmulator, invalid: LedgerTransaction) -> None:
    with pytest.raises(LedgerRefused):
        await backend.commit([sale("ok-1"), invalid])

    assert served.emulator.requests == []


async def test_a_refusal_by_the_server_is_ledger_refused(
        backend: FormanceLedger, served: RunningEmulator) -> None:
    await backend.commit([sale("srv-1")])
    # Another client took our idempotency key for something else.
    served.emulator.ledger(LEDGER).idempotency["srv-2"] = (
        served.emulator.ledger(LEDGER).idempotency["srv-1"])

    with pytest.raises(LedgerRefused, match="HTTP 400 VALIDATION"):
        await backend.commit([sale("srv-2")])


# ---------------------------------------------------------------- outages


async def test_an_outage_is_unavailable_then_the_commit_goes_through(
        backend: FormanceLedger, served: RunningEmulator) -> None:
    served.emulator.available = False
    with pytest.raises(LedgerUnavailable, match="HTTP 503"):
        await backend.commit([sale("out-1")])

    served.emulator.available = True
    assert await backend.commit([sale("out-1")]) == [COMMITTED]


async def test_a_stopped_server_is_unavailable_until_it_is_back(
        backend: FormanceLedger, served: RunningEmulator) -> None:
    await backend.commit([sale("stop-1")])
    await served.emulator.stop()

    with pytest.raises(LedgerUnavailable):
        await backend.commit([sale("stop-2")])
    with pytest.raises(LedgerUnavailable):
        await backend.commit([sale("stop-3"), sale("stop-4")])
    with pytest.raises(LedgerUnavailable):
        await backend.check()

    await served.emulator.start()
    assert await backend.commit([sale("stop-2")]) == [COMMITTED]
    assert await backend.commit([sale("stop-3"), sale("stop-4")]) == [COMMITTED, COMMITTED]
    await backend.check()


async def test_server_errors_are_unavailable(
        backend: FormanceLedger, served: RunningEmulator) -> None:
    served.emulator.fail_next(1, status=500, operation="v2CreateTransaction")
    with pytest.raises(LedgerUnavailable, match="HTTP 500 INTERNAL"):
        await backend.commit([sale("err-1")])
    served.emulator.fail_next(1, status=503, operation="v2CreateBulk")
    with pytest.raises(LedgerUnavailable, match="HTTP 503 INTERNAL"):
        await backend.commit([sale("err-2"), sale("err-3")])

    assert stored_references(served) == []


async def test_a_dropped_answer_then_retry_is_a_duplicate_booked_once(
        backend: FormanceLedger, served: RunningEmulator) -> None:
    await backend.check()
    served.emulator.drop_next_answer("v2CreateTransaction")
    with pytest.raises(LedgerUnavailable):
        await backend.commit([sale("drop-1")])

    assert await backend.commit([sale("drop-1")]) == [DUPLICATE]
    assert stored_references(served) == ["drop-1"]


async def test_a_dropped_bulk_answer_then_retry_is_duplicates_booked_once(
        backend: FormanceLedger, served: RunningEmulator) -> None:
    await backend.check()
    served.emulator.drop_next_answer("v2CreateBulk")
    batch = [sale("bd-1"), sale("bd-2"), sale("bd-3")]
    with pytest.raises(LedgerUnavailable):
        await backend.commit(batch)

    assert await backend.commit([*batch, sale("bd-4")]) == [
        DUPLICATE, DUPLICATE, DUPLICATE, COMMITTED]
    assert stored_references(served) == ["bd-1", "bd-2", "bd-3", "bd-4"]


async def test_a_late_answer_is_a_timeout_then_a_duplicate(served: RunningEmulator) -> None:
    backend = FormanceLedger(FormanceConfig(served.url, ledger_name=LEDGER, timeout_ms=200))
    try:
        await backend.check()
        served.emulator.drop_next_answer("v2CreateTransaction", hang_s=0.6)
        with pytest.raises(LedgerUnavailable, match="timed out"):
            await backend.commit([sale("late-1")])

        assert await backend.commit([sale("late-1")]) == [DUPLICATE]
    finally:
        await backend.close()
    assert stored_references(served) == ["late-1"]


async def test_a_ledger_gone_is_unavailable_then_created_again(
        backend: FormanceLedger, served: RunningEmulator) -> None:
    await backend.commit([sale("gone-1")])
    del served.emulator.ledgers[LEDGER]

    with pytest.raises(LedgerUnavailable, match="LEDGER_NOT_FOUND"):
        await backend.commit([sale("gone-2")])

    assert await backend.commit([sale("gone-2")]) == [COMMITTED]
    assert stored_references(served) == ["gone-2"]


async def test_close_is_idempotent_and_final(backend: FormanceLedger) -> None:
    await backend.check()
    await backend.close()
    await backend.close()

    with pytest.raises(LedgerUnavailable, match="closed"):
        await backend.balances("dealer:d1")


# ---------------------------------------------------------------- account metadata


async def test_account_metadata_creates_the_account(
        backend: FormanceLedger, served: RunningEmulator) -> None:
    await backend.set_account_metadata([
        AccountMetadata("exchange:e1", {"venue": "paper", "dealerAccountId": "d1"})])
    await backend.set_account_metadata([AccountMetadata("exchange:e1", {"venue": "paper"})])

    assert await backend.account("exchange:e1") == (
        {"venue": "paper", "dealerAccountId": "d1"}, {})
    assert served.emulator.operation_counts["v2AddMetadataToAccount"] == 2


async def test_account_metadata_of_many_goes_in_bulks(served: RunningEmulator) -> None:
    backend = FormanceLedger(FormanceConfig(served.url, ledger_name=LEDGER, bulk_max=2))
    try:
        await backend.set_account_metadata(
            [AccountMetadata(f"exchange:e{n}", {"n": str(n)}) for n in range(3)])
        with pytest.raises(LedgerRefused):
            await backend.set_account_metadata([AccountMetadata("exchange:bad:", {})])
    finally:
        await backend.close()

    accounts = served.emulator.ledger(LEDGER).accounts
    assert {a: accounts[a].metadata for a in accounts} == {
        "exchange:e0": {"n": "0"}, "exchange:e1": {"n": "1"}, "exchange:e2": {"n": "2"}}
    assert served.emulator.operation_counts["v2CreateBulk"] == 2


# ---------------------------------------------------------------- reads


async def test_balances_and_accounts(backend: FormanceLedger) -> None:
    await backend.commit([sale("b-1", 3), sale("b-2", 4, client="client:c2")])
    await backend.set_account_metadata([AccountMetadata("dealer:d1", {"name": "desk"})])

    assert await backend.balances("dealer:d1") == {"USDT/6": 7000, "BTC/8": -7}
    assert await backend.balances("client:c2") == {"USDT/6": -4000, "BTC/8": 4}
    assert await backend.balances("client:never") == {}
    assert await backend.account("dealer:d1") == ({"name": "desk"},
                                                  {"USDT/6": 7000, "BTC/8": -7})
    assert await backend.account("client:never") is None


async def test_balances_by_prefix(backend: FormanceLedger) -> None:
    await backend.commit([
        sale("p-1", 1, client="client:c1"), sale("p-2", 2, client="client:c2"),
        sale("p-3", 3, client="client:c2:sub", dealer="dealer:d2"),
        sale("p-4", 4, client="clients:other"),
    ])
    await backend.set_account_metadata([AccountMetadata("client:c3", {"never": "moved"})])

    assert await backend.balances_by_prefix("client:") == {
        "client:c1": {"USDT/6": -1000, "BTC/8": 1},
        "client:c2": {"USDT/6": -2000, "BTC/8": 2},
        "client:c2:sub": {"USDT/6": -3000, "BTC/8": 3},
    }
    assert await backend.balances_by_prefix("client:c2") == {
        "client:c2": {"USDT/6": -2000, "BTC/8": 2},
        "client:c2:sub": {"USDT/6": -3000, "BTC/8": 3},
    }
    assert set(await backend.balances_by_prefix("client")) == {
        "client:c1", "client:c2", "client:c2:sub", "clients:other"}
    assert await backend.balances_by_prefix("dealer:d2") == {
        "dealer:d2": {"USDT/6": 3000, "BTC/8": -3}}
    assert await backend.balances_by_prefix("nothing:") == {}


async def test_transactions_newest_first_filtered_with_total(backend: FormanceLedger) -> None:
    when = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
    await backend.commit([sale(f"t-{n}", n + 1, client=f"client:c{n % 2}", timestamp=when)
                          for n in range(5)])

    everything, total = await backend.transactions(address=None, reference=None, limit=10,
                                                   offset=0)
    for_c0, c0_total = await backend.transactions(address="client:c0", reference=None,
                                                  limit=10, offset=0)
    middle, _ = await backend.transactions(address=None, reference=None, limit=2, offset=1)
    by_reference, one = await backend.transactions(address=None, reference="t-3", limit=10,
                                                   offset=0)
    both, none = await backend.transactions(address="client:c0", reference="t-3", limit=10,
                                            offset=0)
    nothing, counted = await backend.transactions(address=None, reference=None, limit=0,
                                                  offset=0)

    assert [t.reference for t in everything] == ["t-4", "t-3", "t-2", "t-1", "t-0"]
    assert total == 5
    assert [t.reference for t in for_c0] == ["t-4", "t-2", "t-0"]
    assert c0_total == 3
    assert [t.reference for t in middle] == ["t-3", "t-2"]
    (found,) = by_reference
    assert one == 1
    assert found.transaction_id == 4
    assert found.metadata == {"kind": "client_trade", "quoteId": "q-t-3"}
    assert found.timestamp == when
    assert found.postings == sale("t-3", 4, client="client:c1").postings
    assert (both, none) == ([], 0)
    assert (nothing, counted) == ([], 5)


async def test_transactions_page_through_cursors(
        backend: FormanceLedger, served: RunningEmulator) -> None:
    await backend.commit([sale(f"pg-{n}") for n in range(205)])
    listed_before = served.emulator.operation_counts["v2ListTransactions"]

    page, total = await backend.transactions(address=None, reference=None, limit=4,
                                             offset=198)

    assert total == 205
    assert [t.reference for t in page] == ["pg-6", "pg-5", "pg-4", "pg-3"]
    assert served.emulator.operation_counts["v2ListTransactions"] - listed_before == 3


# ---------------------------------------------------------------- credentials


async def test_client_credentials_are_used_and_never_shown(
        caplog: pytest.LogCaptureFixture) -> None:
    secret = "s3cr3t-value-for-formance"
    emulator = FormanceEmulator()
    emulator.require_oauth("fermata-backend-test", secret)
    caplog.set_level(logging.DEBUG)
    async with running_emulator(emulator) as (url, _):
        config = FormanceConfig(url, ledger_name=LEDGER, client_id="fermata-backend-test",
                                client_secret=secret)
        backend = FormanceLedger(config)
        anonymous = FormanceLedger(FormanceConfig(url, ledger_name=LEDGER))
        try:
            assert await backend.commit([sale("auth-1")]) == [COMMITTED]
            with pytest.raises(LedgerUnavailable, match="HTTP 401") as refused:
                await anonymous.check()
        finally:
            await backend.close()
            await anonymous.close()

    # The SDK asks one token per set of scopes (ledger:read, ledger:write) and keeps it.
    assert emulator.tokens_issued == 2
    sent = [a for (_, _, operation), a in zip(emulator.requests, emulator.authorizations,
                                              strict=True) if operation != "oauthToken"]
    assert sent[:3] == ["Bearer emulated-token-1", "Bearer emulated-token-2",
                        "Bearer emulated-token-2"]
    assert sent[3] == ""  # the anonymous backend
    assert secret not in repr(config)
    assert secret not in str(refused.value)
    assert secret not in caplog.text


def test_config_rejects_half_credentials_and_silly_sizes() -> None:
    with pytest.raises(ValueError, match="together"):
        FormanceConfig("http://ledger", client_id="only-id")
    with pytest.raises(ValueError, match="bulk_max"):
        FormanceConfig("http://ledger", bulk_max=0)
