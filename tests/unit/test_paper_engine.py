"""The paper matching engine: fills, fees, balances and refusals, computed by hand."""

from __future__ import annotations

from decimal import Decimal

import pytest

from venues.base import (
    Balance,
    BookSnapshot,
    Fee,
    Instrument,
    Level,
    OrderRequest,
    OrderState,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
    UnknownOrder,
)
from venues.paper.engine import INSUFFICIENT_BALANCE, MAKER, TAKER, MatchingEngine

D = Decimal
NOW = 1_000_000
ALICE = "alice"
BOB = "bob"
INSTRUMENT = Instrument(
    venue="TEST", symbol="BTC/USDT", external_symbol="BTCUSDT", base="BTC", quote="USDT",
    tick_size=D("0.01"), lot_size=D("0.001"), min_quantity=D("0.002"), max_quantity=D("100"),
    min_notional=D("10"),
)
ASKS: tuple[Level, ...] = ((D(100), D(1)), (D(101), D(2)), (D(102), D(5)))
BIDS: tuple[Level, ...] = ((D(99), D(1)), (D(98), D(2)), (D(97), D(5)))


def engine(usdt: str = "10000", btc: str = "10") -> MatchingEngine:
    return MatchingEngine("TEST", maker_fee=D("0.001"), taker_fee=D("0.002"),
                          starting_balances={"USDT": D(usdt), "BTC": D(btc)},
                          instruments={"BTC/USDT": INSTRUMENT})


def book(sequence: int = 1, bids: tuple[Level, ...] = BIDS,
         asks: tuple[Level, ...] = ASKS) -> BookSnapshot:
    return BookSnapshot("TEST", "BTC/USDT", bids, asks, NOW, sequence)


def market(cid: str, side: Side, quantity: str,
           tif: TimeInForce = TimeInForce.GTC) -> OrderRequest:
    return OrderRequest(cid, "BTC/USDT", side, OrderType.MARKET, D(quantity), None, tif)


def limit(cid: str, side: Side, quantity: str, price: str,
          tif: TimeInForce = TimeInForce.GTC) -> OrderRequest:
    return OrderRequest(cid, "BTC/USDT", side, OrderType.LIMIT, D(quantity), D(price), tif)


def balance(matching: MatchingEngine, account: str, asset: str) -> Balance:
    return next(b for b in matching.balances(account) if b.asset == asset)


def submitted(order: OrderRequest) -> tuple[MatchingEngine, OrderState]:
    """A fresh engine, and the state of Alice's `order` submitted to it on the first book."""
    matching = engine()
    return matching, matching.submit(ALICE, order, book(), NOW)


def assert_expired_unfilled(state: OrderState) -> None:
    assert state.status is OrderStatus.EXPIRED
    assert state.filled_quantity == 0
    assert state.executions == ()


def test_market_buy_sweeps_levels_at_their_prices_and_pays_the_fee_in_base() -> None:
    matching, state = submitted(market("m1", Side.BUY, "2.5"))
    assert state.status is OrderStatus.FILLED
    assert [(e.price, e.quantity) for e in state.executions] == [(D(100), D(1)),
                                                                (D(101), D("1.5"))]
    assert state.filled_quantity == D("2.5")
    assert state.average_price == D("100.6")  # (100 + 151.5) / 2.5
    assert [e.liquidity for e in state.executions] == [TAKER, TAKER]
    assert [(e.fee.asset, e.fee.amount) for e in state.executions] == [("BTC", D("0.002")),
                                                                      ("BTC", D("0.003"))]
    assert [e.execution_id for e in state.executions] == ["TEST-1", "TEST-2"]
    assert state.venue_order_id == "TEST-O1"
    assert state.ts_created == state.ts_updated == NOW
    assert balance(matching, ALICE, "USDT") == Balance("USDT", D("9748.5"), D(0))
    assert balance(matching, ALICE, "BTC") == Balance("BTC", D("12.495"), D(0))


def test_sell_pays_the_fee_in_quote() -> None:
    matching, state = submitted(limit("s1", Side.SELL, "1.5", "98", TimeInForce.IOC))
    assert state.status is OrderStatus.FILLED
    assert [(e.price, e.quantity) for e in state.executions] == [(D(99), D(1)), (D(98), D("0.5"))]
    # 99 * 0.002 = 0.198 and 49 * 0.002 = 0.098, in USDT
    assert [(e.fee.asset, e.fee.amount) for e in state.executions] == [("USDT", D("0.198")),
                                                                      ("USDT", D("0.098"))]
    assert balance(matching, ALICE, "USDT").free == D("10000") + D("148") - D("0.296")
    assert balance(matching, ALICE, "BTC").free == D("8.5")


def test_fees_round_up_to_eight_decimals() -> None:
    cases = {"0.0003": D("0.0000369"),  # 0.123 * 0.0003, exact
             "0.000313": D("0.00003850")}  # 0.123 * 0.000313 = 0.000038499, rounded up
    for rate, fee in cases.items():
        matching = MatchingEngine("TEST", D("0.001"), D(rate), {"USDT": D(1000)},
                                  {"BTC/USDT": INSTRUMENT})
        bought = matching.submit(ALICE, market("b1", Side.BUY, "0.123"), book(), NOW)
        assert bought.executions[0].fee == Fee("BTC", fee)
        assert balance(matching, ALICE, "BTC").free == D("0.123") - fee


def test_ioc_limit_takes_what_crosses_and_the_remainder_expires() -> None:
    matching, state = submitted(limit("i1", Side.BUY, "4", "101", TimeInForce.IOC))
    assert state.status is OrderStatus.EXPIRED
    assert state.filled_quantity == D(3)
    assert [(e.price, e.quantity) for e in state.executions] == [(D(100), D(1)), (D(101), D(2))]
    assert balance(matching, ALICE, "USDT") == Balance("USDT", D("9698"), D(0))
    assert balance(matching, ALICE, "BTC") == Balance("BTC", D("12.994"), D(0))


def test_ioc_that_crosses_nothing_expires_unfilled() -> None:
    _, state = submitted(limit("i1", Side.BUY, "1", "99.5", TimeInForce.IOC))
    assert_expired_unfilled(state)


def test_market_order_never_rests_whatever_its_time_in_force() -> None:
    matching, state = submitted(market("m1", Side.SELL, "9"))
    assert state.status is OrderStatus.EXPIRED
    assert state.filled_quantity == D(8)
    assert matching.resting_symbols() == []
    assert balance(matching, ALICE, "BTC") == Balance("BTC", D(2), D(0))


def test_fok_that_cannot_fill_in_full_expires_without_any_fill() -> None:
    matching, state = submitted(limit("f1", Side.BUY, "4", "101", TimeInForce.FOK))
    assert_expired_unfilled(state)
    assert matching.balances(ALICE) == [Balance("BTC", D(10), D(0)),
                                        Balance("USDT", D(10000), D(0))]
    market_fok = matching.submit(ALICE, market("f2", Side.BUY, "9", TimeInForce.FOK), book(), NOW)
    assert market_fok.status is OrderStatus.EXPIRED
    assert market_fok.filled_quantity == 0


def test_fok_that_can_fill_fills_in_full() -> None:
    _, state = submitted(limit("f1", Side.BUY, "3", "101", TimeInForce.FOK))
    assert state.status is OrderStatus.FILLED
    assert state.filled_quantity == D(3)


def test_gtc_rests_locks_funds_and_fills_as_maker_on_later_books() -> None:
    matching = engine()
    state = matching.submit(ALICE, limit("g1", Side.BUY, "2", "99.5"), book(1), NOW)
    assert state.status is OrderStatus.ACCEPTED
    assert state.filled_quantity == 0
    assert balance(matching, ALICE, "USDT") == Balance("USDT", D(9801), D(199))
    assert matching.resting_symbols() == ["BTC/USDT"]

    # the market comes down: 0.5 at 99 and 1 at 99.5 trade through the bid, 3 at 99.6 do not
    lower = ((D(99), D("0.5")), (D("99.5"), D(1)), (D("99.6"), D(3)))
    changed = matching.on_book("BTC/USDT", book(2, bids=((D(98), D(1)),), asks=lower), NOW + 100)
    assert len(changed) == 1
    state = changed[0]
    assert state.status is OrderStatus.PARTIALLY_FILLED
    assert state.filled_quantity == D("1.5")
    # a maker fills at its own limit price, whatever level it met
    assert [(e.price, e.quantity, e.liquidity) for e in state.executions] == [
        (D("99.5"), D("0.5"), MAKER), (D("99.5"), D(1), MAKER)]
    assert [e.fee for e in state.executions] == [Fee("BTC", D("0.0005")), Fee("BTC", D("0.001"))]
    assert state.ts_updated == NOW + 100
    assert balance(matching, ALICE, "USDT") == Balance("USDT", D(9801), D("49.75"))
    assert balance(matching, ALICE, "BTC").free == D("11.4985")
    assert matching.status(ALICE, "g1") == state

    # the same snapshot again changes nothing
    assert matching.on_book("BTC/USDT", book(2, asks=lower), NOW + 150) == []

    changed = matching.on_book("BTC/USDT", book(3, asks=((D("99.4"), D(7)),)), NOW + 200)
    assert [s.status for s in changed] == [OrderStatus.FILLED]
    assert changed[0].filled_quantity == D(2)
    assert balance(matching, ALICE, "USDT") == Balance("USDT", D(9801), D(0))
    assert balance(matching, ALICE, "BTC").free == D("11.998")
    assert matching.resting_symbols() == []


def test_gtc_that_crosses_takes_first_and_rests_the_remainder() -> None:
    matching, state = submitted(limit("g1", Side.BUY, "4", "101"))
    assert state.status is OrderStatus.PARTIALLY_FILLED
    assert state.filled_quantity == D(3)
    assert [e.liquidity for e in state.executions] == [TAKER, TAKER]
    # paid 100 + 202, locked 1 * 101 for the rest
    assert balance(matching, ALICE, "USDT") == Balance("USDT", D(9597), D(101))


def test_resting_sell_fills_when_bids_come_up() -> None:
    matching, state = submitted(limit("g1", Side.SELL, "1", "100"))
    assert state.status is OrderStatus.ACCEPTED
    assert balance(matching, ALICE, "BTC") == Balance("BTC", D(9), D(1))
    changed = matching.on_book("BTC/USDT", book(2, bids=((D(101), D(5)),)), NOW + 1)
    assert changed[0].status is OrderStatus.FILLED
    assert changed[0].executions[0].price == D(100)
    assert changed[0].executions[0].fee.amount == D("0.1")  # 100 * 0.001 maker, in USDT
    assert balance(matching, ALICE, "BTC") == Balance("BTC", D(9), D(0))
    assert balance(matching, ALICE, "USDT").free == D("10099.9")


def test_cancel_unlocks_the_remainder_and_is_idempotent() -> None:
    matching = engine()
    matching.submit(ALICE, limit("g1", Side.SELL, "2", "105"), book(), NOW)
    assert balance(matching, ALICE, "BTC") == Balance("BTC", D(8), D(2))
    cancelled = matching.cancel(ALICE, "g1", NOW + 5)
    assert cancelled.status is OrderStatus.CANCELLED
    assert cancelled.ts_updated == NOW + 5
    assert balance(matching, ALICE, "BTC") == Balance("BTC", D(10), D(0))
    assert matching.resting_symbols() == []
    assert matching.cancel(ALICE, "g1", NOW + 9) == cancelled
    # a cancelled order never fills
    assert matching.on_book("BTC/USDT", book(2, bids=((D(200), D(5)),)), NOW + 10) == []


def test_cancel_after_a_partial_fill_unlocks_only_the_remainder() -> None:
    matching = engine()
    matching.submit(ALICE, limit("g1", Side.BUY, "2", "99"), book(), NOW)
    matching.on_book("BTC/USDT", book(2, asks=((D(99), D("0.5")),)), NOW + 1)
    assert balance(matching, ALICE, "USDT") == Balance("USDT", D(9802), D("148.5"))
    state = matching.cancel(ALICE, "g1", NOW + 2)
    assert state.status is OrderStatus.CANCELLED
    assert state.filled_quantity == D("0.5")
    assert balance(matching, ALICE, "USDT") == Balance("USDT", D("9950.5"), D(0))


def test_cancel_or_status_of_an_unknown_order_raises() -> None:
    matching = engine()
    with pytest.raises(UnknownOrder):
        matching.cancel(ALICE, "nope", NOW)
    with pytest.raises(UnknownOrder):
        matching.status(ALICE, "nope")
    matching.submit(ALICE, market("m1", Side.BUY, "0.5"), book(), NOW)
    with pytest.raises(UnknownOrder):
        matching.status(BOB, "m1")  # client order ids belong to one account


def test_insufficient_balance_rejects_and_changes_nothing() -> None:
    matching = engine(usdt="100", btc="0.5")
    before = matching.balances(ALICE)
    buy = matching.submit(ALICE, limit("b1", Side.BUY, "1", "101", TimeInForce.IOC), book(), NOW)
    assert buy.status is OrderStatus.REJECTED
    assert buy.reject_reason == INSUFFICIENT_BALANCE
    assert buy.executions == ()
    sell = matching.submit(ALICE, market("s1", Side.SELL, "0.6"), book(), NOW)
    assert sell.status is OrderStatus.REJECTED
    assert sell.reject_reason == INSUFFICIENT_BALANCE
    assert matching.balances(ALICE) == before
    # the rejected orders took no liquidity: the whole first ask level is still there
    other = matching.submit(BOB, market("m1", Side.BUY, "1"), book(), NOW)
    assert [(e.price, e.quantity) for e in other.executions] == [(D(100), D(1))]
    assert matching.status(ALICE, "b1") == buy


def test_market_buy_needs_the_swept_cost_only() -> None:
    matching = engine(usdt="100")
    # 1 at 100 costs exactly 100: enough; 1.001 would cost 100.101
    assert matching.submit(ALICE, market("m1", Side.BUY, "1"), book(), NOW).status \
        is OrderStatus.FILLED
    matching = engine(usdt="100")
    refused = matching.submit(ALICE, market("m2", Side.BUY, "1.001"), book(), NOW)
    assert refused.reject_reason == INSUFFICIENT_BALANCE


def test_duplicate_client_order_id_answers_the_existing_order_unchanged() -> None:
    matching = engine()
    first = matching.submit(ALICE, market("dup", Side.BUY, "1"), book(), NOW)
    again = matching.submit(ALICE, market("dup", Side.BUY, "3"), book(2), NOW + 50)
    assert again == first
    assert balance(matching, ALICE, "USDT").free == D(9900)
    assert matching.reject(ALICE, market("dup", Side.BUY, "1"), "whatever", NOW) == first
    # the same id from another account is another order
    other = matching.submit(BOB, market("dup", Side.BUY, "1"), book(), NOW)
    assert other.venue_order_id != first.venue_order_id
    assert other.executions[0].price == D(101)  # Alice took the 100 level of this snapshot


def test_quantities_and_prices_off_the_rules_are_refused_not_rounded() -> None:
    matching = engine()
    cases = {
        "lot": (market("c1", Side.BUY, "0.0025"), "not a multiple of the lot size 0.001"),
        "min": (market("c2", Side.BUY, "0.001"), "below the minimum quantity 0.002"),
        "max": (market("c3", Side.BUY, "101"), "above the maximum quantity 100"),
        "zero": (market("c4", Side.BUY, "0"), "quantity must be positive"),
        "tick": (limit("c5", Side.BUY, "1", "100.005"), "not a multiple of the tick size 0.01"),
        "notional": (limit("c6", Side.BUY, "0.05", "100"), "below the minimum notional 10"),
        "market notional": (market("c7", Side.SELL, "0.1"), "below the minimum notional 10"),
        "no price": (OrderRequest("c8", "BTC/USDT", Side.BUY, OrderType.LIMIT, D(1)),
                     "needs a limit price"),
    }
    for name, (order, reason) in cases.items():
        state = matching.submit(ALICE, order, book(), NOW)
        assert state.status is OrderStatus.REJECTED, name
        assert reason in (state.reject_reason or ""), name
        assert state.executions == (), name
    assert matching.balances(ALICE) == [Balance("BTC", D(10), D(0)),
                                        Balance("USDT", D(10000), D(0))]


def test_unknown_instrument_is_rejected() -> None:
    matching = engine()
    order = OrderRequest("x1", "ETH/USDT", Side.BUY, OrderType.MARKET, D(1))
    eth_book = BookSnapshot("TEST", "ETH/USDT", BIDS, ASKS, NOW, 1)
    state = matching.submit(ALICE, order, eth_book, NOW)
    assert state.status is OrderStatus.REJECTED
    assert state.reject_reason == "unknown instrument ETH/USDT"


def test_liquidity_of_one_snapshot_is_taken_once() -> None:
    matching = engine()
    snapshot = book(7)
    first = matching.submit(ALICE, market("a", Side.BUY, "1.5"), snapshot, NOW)
    second = matching.submit(BOB, market("b", Side.BUY, "2"), snapshot, NOW)
    assert [(e.price, e.quantity) for e in first.executions] == [(D(100), D(1)),
                                                                (D(101), D("0.5"))]
    assert [(e.price, e.quantity) for e in second.executions] == [(D(101), D("1.5")),
                                                                 (D(102), D("0.5"))]
    # a resting order cannot take it again either
    resting = matching.submit(ALICE, limit("c", Side.BUY, "1", "101"), snapshot, NOW)
    assert resting.status is OrderStatus.ACCEPTED
    assert matching.on_book("BTC/USDT", snapshot, NOW) == []
    # the bid side is untouched, and the next sequence is a fresh market
    sold = matching.submit(BOB, market("d", Side.SELL, "1"), snapshot, NOW)
    assert sold.executions[0].price == D(99)
    fresh = matching.submit(BOB, market("e", Side.BUY, "1"), book(8), NOW)
    assert fresh.executions[0].price == D(100)


def test_reject_records_the_order() -> None:
    matching = engine()
    state = matching.reject(ALICE, market("r1", Side.BUY, "1"), "injected reject", NOW)
    assert state.status is OrderStatus.REJECTED
    assert state.reject_reason == "injected reject"
    assert matching.status(ALICE, "r1") == state
    assert matching.submit(ALICE, market("r1", Side.BUY, "1"), book(), NOW) == state


def test_set_balance_and_starting_balances_per_account() -> None:
    matching = engine()
    matching.set_balance(ALICE, "ETH", D("2.5"))
    assert matching.balances(ALICE) == [Balance("BTC", D(10), D(0)), Balance("ETH", D("2.5"), D(0)),
                                        Balance("USDT", D(10000), D(0))]
    assert matching.balances(BOB) == [Balance("BTC", D(10), D(0)),
                                      Balance("USDT", D(10000), D(0))]
    with pytest.raises(ValueError, match="non-negative"):
        matching.set_balance(ALICE, "ETH", D(-1))


def test_a_book_of_another_symbol_is_refused() -> None:
    matching = engine()
    other = BookSnapshot("TEST", "ETH/USDT", BIDS, ASKS, NOW, 1)
    with pytest.raises(ValueError, match="book of ETH/USDT"):
        matching.submit(ALICE, market("m", Side.BUY, "1"), other, NOW)
    with pytest.raises(ValueError, match="book of ETH/USDT"):
        matching.on_book("BTC/USDT", other, NOW)
