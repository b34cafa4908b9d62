"""The paper connector through its protocols: market data, orders, faults, the harness."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest

from tests.contract.paper_harness import START_MS, ManualClock, ManualSleep, PaperHarness
from venues.base import (
    ApiCredential,
    Balance,
    BookSnapshot,
    CredentialRejected,
    ExecutionVenue,
    MarketDataVenue,
    OrderRequest,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
    UnknownInstrument,
    UnknownOrder,
    VenueAccount,
    VenueTimeout,
)
from venues.paper.client import INJECTED_REJECT, PaperVenue
from venues.paper.config import PaperConfig

D = Decimal
ACCOUNT = VenueAccount(uuid.UUID(int=1), "spot")
OTHER = VenueAccount(uuid.UUID(int=2), "spot")
BALANCES = {"USDT": D(100_000), "BTC": D(2)}


def paper(
    venue: str = "BINANCE", *, books_dir: Path | None = None, seed: int = 7,
    book_interval_ms: int = 100, latency_ms: int = 0, reject_ratio: float = 0.0,
    timeout_ratio: float = 0.0,
) -> tuple[PaperVenue, ManualClock, ManualSleep]:
    """A paper venue on a manual clock whose accounts start with BALANCES."""
    clock = ManualClock()
    sleep = ManualSleep(clock)
    config = PaperConfig(books_dir=books_dir, seed=seed, book_interval_ms=book_interval_ms,
                         latency_ms=latency_ms, reject_ratio=reject_ratio,
                         timeout_ratio=timeout_ratio, starting_balances=dict(BALANCES))
    return PaperVenue(venue, config, clock, sleep=sleep), clock, sleep


def ioc(cid: str, side: Side, quantity: str, price: str) -> OrderRequest:
    return OrderRequest(cid, "BTC/USDT", side, OrderType.LIMIT, D(quantity), D(price),
                        TimeInForce.IOC)


def gtc(cid: str, side: Side, quantity: str, price: str) -> OrderRequest:
    return OrderRequest(cid, "BTC/USDT", side, OrderType.LIMIT, D(quantity), D(price))


def pin_simple_book(venue: PaperVenue) -> BookSnapshot:
    return venue.pin_book("BTC/USDT", [(D(60_000), D(1)), (D("59999.99"), D(2))],
                          [(D("60000.01"), D("0.5")), (D("60000.50"), D(1))])


async def take(stream: AsyncIterator[BookSnapshot], count: int) -> list[BookSnapshot]:
    return [await anext(stream) for _ in range(count)]


# ---------------------------------------------------------------- identity


async def test_verify_credential_is_unchanged() -> None:
    binance = PaperVenue("BINANCE")
    identities = await binance.verify_credential(ApiCredential("key", "secret"))
    assert [i.external_trading_account_id for i in identities] == [
        "spot", "margin", "isolated_margin", "futures", "coin_futures"]
    assert [i.external_trading_account_id
            for i in await PaperVenue("DERIBIT").verify_credential(ApiCredential("k"))] == ["spot"]
    with pytest.raises(CredentialRejected, match="API key is empty"):
        await binance.verify_credential(ApiCredential("   "))


async def test_the_default_constructor_serves_both_protocols() -> None:
    venue = PaperVenue("OKX")
    market: MarketDataVenue = venue
    execution: ExecutionVenue = venue
    assert market.connector == execution.connector == "paper"
    assert venue.venue == "OKX"
    assert await venue.connect_account(ApiCredential("key"), "trading") is None
    with pytest.raises(CredentialRejected):
        await venue.connect_account(ApiCredential(""), "trading")
    book = await venue.order_book("BTC/USDT", 5)
    assert len(book.bids) == len(book.asks) == 5
    assert venue.engine.maker_fee == D("0.0008")
    assert venue.engine.taker_fee == D("0.001")
    await venue.close()


def test_configured_fees_override_the_venue_defaults() -> None:
    assert PaperConfig().fees_for("BYBIT") == (D("0.001"), D("0.001"))
    assert PaperConfig(maker_fee=D(0), taker_fee=D("0.002")).fees_for("OKX") == (D(0),
                                                                               D("0.002"))


def test_the_config_refuses_impossible_settings() -> None:
    with pytest.raises(ValueError, match="reject_ratio"):
        PaperConfig(reject_ratio=1.5)
    with pytest.raises(ValueError, match="book_interval_ms"):
        PaperConfig(book_interval_ms=0)
    with pytest.raises(ValueError, match="starting balance of BTC"):
        PaperConfig(starting_balances={"BTC": D(-1)})


# ---------------------------------------------------------------- market data


async def test_instruments_lists_the_catalogue_and_leaves_out_unknown_symbols() -> None:
    venue, _, _ = paper()
    everything = await venue.instruments()
    assert [i.symbol for i in everything] == ["BTC/USDC", "BTC/USDT", "ETH/BTC", "ETH/USDT",
                                              "SOL/USDT"]
    asked = await venue.instruments(["SOL/USDT", "DOGE/USDT", "BTC/USDT", "SOL/USDT"])
    assert [(i.symbol, i.external_symbol) for i in asked] == [("SOL/USDT", "SOLUSDT"),
                                                              ("BTC/USDT", "BTCUSDT")]


async def test_order_book_answers_the_current_book_to_the_depth_asked() -> None:
    venue, clock, _ = paper()
    book = await venue.order_book("ETH/USDT", 10)
    assert len(book.bids) == len(book.asks) == 10
    assert book.sequence == START_MS // 100
    assert book.is_well_formed()
    assert not book.is_crossed()
    assert await venue.order_book("ETH/USDT", 10) == book
    clock.advance(100)
    assert (await venue.order_book("ETH/USDT", 10)).sequence == book.sequence + 1
    with pytest.raises(UnknownInstrument):
        await venue.order_book("DOGE/USDT", 10)
    with pytest.raises(ValueError, match="depth"):
        await venue.order_book("ETH/USDT", 0)


async def test_book_stream_yields_every_sequence_at_the_book_interval() -> None:
    venue, _, sleep = paper(book_interval_ms=250)
    books = await take(venue.book_stream("BTC/USDT"), 5)
    sequences = [book.sequence for book in books]
    assert sequences == list(range(sequences[0], sequences[0] + 5))
    assert set(sleep.waits) == {0.25}
    assert all(book.is_well_formed() and not book.is_crossed() for book in books)


async def test_book_stream_catches_up_on_missed_updates() -> None:
    venue, clock, _ = paper()
    stream = venue.book_stream("BTC/USDT")
    first = await anext(stream)
    clock.advance(350)  # the reader was away for three more updates
    caught_up = await take(stream, 4)
    assert [book.sequence for book in caught_up] == [first.sequence + n for n in range(1, 5)]
    assert caught_up[0] == venue.books.source("BTC/USDT").book_for_sequence(first.sequence + 1)


async def test_book_stream_follows_a_pinned_book() -> None:
    venue, _, sleep = paper(book_interval_ms=100)
    pinned = pin_simple_book(venue)
    stream = venue.book_stream("BTC/USDT")
    first = await anext(stream)
    assert (first.sequence, first.bids) == (pinned.sequence, pinned.bids)
    venue.pin_book("BTC/USDT", [(D(1), D(1))], [(D(2), D(1))])
    second = await anext(stream)
    assert second.sequence == first.sequence + 1
    assert second.bids == ((D(1), D(1)),)
    assert len(sleep.waits) >= 1  # it waited for the change rather than spinning


async def test_book_stream_on_the_real_clock_with_tiny_sleeps() -> None:
    venue = PaperVenue("BYBIT", PaperConfig(book_interval_ms=10))
    books = await take(venue.book_stream("SOL/USDT"), 3)
    assert [b.sequence - books[0].sequence for b in books] == [0, 1, 2]


async def test_book_stream_of_an_unknown_symbol_raises() -> None:
    venue, _, _ = paper()
    with pytest.raises(UnknownInstrument):
        await anext(venue.book_stream("DOGE/USDT"))


async def test_replayed_books_come_exactly_from_the_file(tmp_path: Path) -> None:
    lines = [{"venue": "OKX", "symbol": "BTC/USDT", "ts": 100,
              "bids": [["30243.4", "0.0012029"]], "asks": [["30243.5", "0.5"]]},
             {"venue": "OKX", "symbol": "BTC/USDT", "ts": 1100,
              "bids": [["30240.0", "1"]], "asks": [["30241.2", "0.25"], ["30242", "3"]]}]
    (tmp_path / "okx_btc_usdt.jsonl").write_text(
        "".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    venue, clock, _ = paper("OKX", books_dir=tmp_path)
    first = await venue.order_book("BTC/USDT", 50)
    assert first.bids == ((D("30243.4"), D("0.0012029")),)
    assert (first.sequence, first.ts_event) == (0, START_MS)
    clock.advance(1000)
    second = await venue.order_book("BTC/USDT", 1)
    assert (second.sequence, second.asks) == (1, ((D("30241.2"), D("0.25")),))
    clock.advance(1001)  # the 1001 ms recording loops
    assert (await venue.order_book("BTC/USDT", 50)).sequence == 3


# ---------------------------------------------------------------- orders


async def test_ioc_order_fills_what_the_book_holds_and_balances_follow() -> None:
    venue, _, _ = paper()
    pin_simple_book(venue)
    state = await venue.submit_order(ACCOUNT, ioc("h1", Side.BUY, "1.6", "60000.50"))
    assert state.status is OrderStatus.EXPIRED  # 0.5 + 1 crossed; the last 0.1 went
    assert state.filled_quantity == D("1.5")
    assert [(e.price, e.quantity) for e in state.executions] == [
        (D("60000.01"), D("0.5")), (D("60000.50"), D(1))]
    assert await venue.balances(ACCOUNT) == [
        Balance("BTC", D("3.5") - D("0.0005") - D("0.001"), D(0)),  # Binance taker fee 0.1 %
        Balance("USDT", D(100_000) - D("30000.005") - D("60000.50"), D(0))]
    assert await venue.order_status(ACCOUNT, "h1") == state


async def test_gtc_rests_until_the_market_comes_and_cancel_unlocks() -> None:
    venue, _, _ = paper()
    pin_simple_book(venue)
    resting = await venue.submit_order(ACCOUNT, gtc("g1", Side.BUY, "1", "59990"))
    assert resting.status is OrderStatus.ACCEPTED
    assert (await venue.balances(ACCOUNT))[1] == Balance("USDT", D(40_010), D(59_990))
    venue.pin_book("BTC/USDT", [(D(59_000), D(1))], [(D(59_980), D("0.4"))])
    partly = await venue.order_status(ACCOUNT, "g1")
    assert partly.status is OrderStatus.PARTIALLY_FILLED
    assert [(e.price, e.quantity, e.liquidity) for e in partly.executions] == [
        (D(59_990), D("0.4"), "MAKER")]
    cancelled = await venue.cancel_order(ACCOUNT, "g1")
    assert cancelled.status is OrderStatus.CANCELLED
    assert cancelled.filled_quantity == D("0.4")
    assert await venue.balances(ACCOUNT) == [
        Balance("BTC", D("2.4") - D("0.0004"), D(0)),
        Balance("USDT", D(100_000) - D(59_990) * D("0.4"), D(0))]
    assert await venue.cancel_order(ACCOUNT, "g1") == cancelled


async def test_a_resting_order_fills_as_the_simulated_market_walks() -> None:
    venue, clock, _ = paper()
    book = await venue.order_book("BTC/USDT", 1)
    assert book.best_ask is not None
    price = book.best_ask - D(5)
    state = await venue.submit_order(ACCOUNT, gtc("w1", Side.BUY, "0.01", str(price)))
    assert state.status is OrderStatus.ACCEPTED
    for _ in range(600):
        clock.advance(1000)
        state = await venue.order_status(ACCOUNT, "w1")
        if state.status is OrderStatus.FILLED:
            break
    assert state.status is OrderStatus.FILLED
    assert all(e.price == price and e.liquidity == "MAKER" for e in state.executions)
    assert state.ts_updated > state.ts_created


async def test_book_stream_fills_resting_orders(tmp_path: Path) -> None:
    lines = [{"symbol": "BTC/USDT", "ts": 0, "bids": [["100", "1"]], "asks": [["101", "1"]]},
             {"symbol": "BTC/USDT", "ts": 100, "bids": [["98", "1"]], "asks": [["99", "1"]]}]
    (tmp_path / "binance_btc_usdt.jsonl").write_text(
        "".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    venue, _, _ = paper(books_dir=tmp_path, book_interval_ms=100)
    await venue.submit_order(ACCOUNT, gtc("s1", Side.BUY, "0.5", "99.5"))
    stream = venue.book_stream("BTC/USDT")
    await take(stream, 2)
    # read the engine directly: no call of the venue advanced the book but the stream
    assert venue.engine.status(str(ACCOUNT.trading_account_id), "s1").status \
        is OrderStatus.FILLED


async def test_unknown_orders_and_symbols() -> None:
    venue, _, _ = paper()
    with pytest.raises(UnknownOrder):
        await venue.order_status(ACCOUNT, "never")
    with pytest.raises(UnknownOrder):
        await venue.cancel_order(ACCOUNT, "never")
    order = OrderRequest("d1", "DOGE/USDT", Side.BUY, OrderType.MARKET, D(1))
    state = await venue.submit_order(ACCOUNT, order)
    assert state.status is OrderStatus.REJECTED
    assert state.reject_reason == "unknown instrument DOGE/USDT"


async def test_duplicate_submit_and_accounts_apart() -> None:
    venue, _, _ = paper()
    pin_simple_book(venue)
    first = await venue.submit_order(ACCOUNT, ioc("x", Side.SELL, "1", "60000"))
    assert await venue.submit_order(ACCOUNT, ioc("x", Side.SELL, "1", "60000")) == first
    assert (await venue.balances(ACCOUNT))[0].free == D(1)
    assert await venue.balances(OTHER) == [Balance("BTC", D(2), D(0)),
                                           Balance("USDT", D(100_000), D(0))]
    venue.set_balance(OTHER, "BTC", D(0))
    refused = await venue.submit_order(OTHER, ioc("x", Side.SELL, "1", "60000"))
    assert refused.reject_reason == "insufficient balance"


# ---------------------------------------------------------------- faults


async def test_reject_ratio_one_rejects_every_order() -> None:
    venue, _, _ = paper(reject_ratio=1.0)
    pin_simple_book(venue)
    state = await venue.submit_order(ACCOUNT, ioc("r1", Side.BUY, "0.1", "60001"))
    assert state.status is OrderStatus.REJECTED
    assert state.reject_reason == INJECTED_REJECT
    assert await venue.order_status(ACCOUNT, "r1") == state
    assert await venue.balances(ACCOUNT) == [Balance("BTC", D(2), D(0)),
                                             Balance("USDT", D(100_000), D(0))]


async def test_timeout_ratio_one_applies_the_order_but_the_caller_never_hears() -> None:
    venue, _, _ = paper(timeout_ratio=1.0)
    pin_simple_book(venue)
    with pytest.raises(VenueTimeout, match="t1"):
        await venue.submit_order(ACCOUNT, ioc("t1", Side.SELL, "0.5", "60000"))
    state = await venue.order_status(ACCOUNT, "t1")
    assert state.status is OrderStatus.FILLED
    assert state.executions[0].price == D(60_000)
    # resubmitting the same client order id does not trade twice
    with pytest.raises(VenueTimeout):
        await venue.submit_order(ACCOUNT, ioc("t1", Side.SELL, "0.5", "60000"))
    assert (await venue.balances(ACCOUNT))[0] == Balance("BTC", D("1.5"), D(0))


async def test_faults_are_drawn_from_the_seed() -> None:
    def outcomes(venue: PaperVenue) -> list[OrderStatus]:
        return [venue.engine.status(str(ACCOUNT.trading_account_id), f"o{n}").status
                for n in range(40)]

    runs = []
    for _ in range(2):
        venue, _, _ = paper(reject_ratio=0.5, seed=11)
        pin_simple_book(venue)
        for n in range(40):
            await venue.submit_order(ACCOUNT, ioc(f"o{n}", Side.SELL, "0.001", "59000"))
        runs.append(outcomes(venue))
    assert runs[0] == runs[1]
    assert set(runs[0]) == {OrderStatus.REJECTED, OrderStatus.FILLED}


async def test_latency_is_added_to_every_order_call() -> None:
    venue, clock, sleep = paper(latency_ms=250)
    pin_simple_book(venue)
    sent_at = clock()
    state = await venue.submit_order(ACCOUNT, ioc("l1", Side.SELL, "0.5", "60000"))
    assert sleep.waits == [0.25]
    assert state.ts_created == sent_at + 250
    await venue.order_status(ACCOUNT, "l1")
    await venue.cancel_order(ACCOUNT, "l1")
    assert sleep.waits == [0.25, 0.25, 0.25]
    await venue.balances(ACCOUNT)
    await venue.order_book("BTC/USDT", 1)
    assert len(sleep.waits) == 3


# ---------------------------------------------------------------- the contract harness


async def test_the_harness_gives_empty_distinct_accounts_and_pinned_books() -> None:
    harness = PaperHarness()
    venue = await harness.venue()
    assert await harness.venue() is venue
    first, second = harness.account(), harness.account()
    assert first.trading_account_id != second.trading_account_id
    assert await venue.balances(first) == []
    await harness.set_balance(first, "USDT", D(1000))
    await harness.set_book(harness.symbol, [(D(99), D(1))], [(D(100), D(2))])
    bought = await venue.submit_order(first, OrderRequest(
        "c1", harness.symbol, Side.BUY, OrderType.LIMIT, D(3), D(100), TimeInForce.IOC))
    assert bought.filled_quantity == D(2)
    fee = bought.executions[0].fee
    assert fee.amount == D(2) * harness.taker_fee
    assert await venue.balances(first) == [Balance(fee.asset, D(2) - fee.amount, D(0)),
                                           Balance("USDT", D(800), D(0))]
    assert await venue.balances(second) == []
    await harness.close()
