"""The execution contract every connector honours, run against each harness (conftest.py).

The book of BTC/USDT in these tests, (price, quantity) best first:
    bids (64990, 1), (64980, 2)
    asks (65010, 0.5), (65020, 1), (65030, 2)
"""

from __future__ import annotations

from decimal import ROUND_UP, Decimal

import pytest

from tests.contract.conftest import Harness
from venues.base import (
    Execution,
    OrderRequest,
    OrderState,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
    UnknownOrder,
    VenueAccount,
    split_symbol,
)

D = Decimal
BIDS = [(D("64990"), D("1")), (D("64980"), D("2"))]
ASKS = [(D("65010"), D("0.5")), (D("65020"), D("1")), (D("65030"), D("2"))]
START_QUOTE = D("1000000")
START_BASE = D("10")
FEE_QUANTUM = D("0.00000001")

Balances = dict[str, tuple[Decimal, Decimal]]  # asset → (free, locked)


async def funded(harness: Harness) -> VenueAccount:
    """A new account with quote and base to trade, and the test book in place."""
    account = harness.account()
    base, quote = split_symbol(harness.symbol)
    await harness.set_balance(account, quote, START_QUOTE)
    await harness.set_balance(account, base, START_BASE)
    await harness.set_book(harness.symbol, BIDS, ASKS)
    return account


async def balances(harness: Harness, account: VenueAccount) -> Balances:
    venue = await harness.venue()
    return {b.asset: (b.free, b.locked) for b in await venue.balances(account)}


def free(snapshot: Balances, asset: str) -> Decimal:
    return snapshot.get(asset, (D(0), D(0)))[0]


def locked(snapshot: Balances, asset: str) -> Decimal:
    return snapshot.get(asset, (D(0), D(0)))[1]


def order(client_order_id: str, side: Side, order_type: OrderType, quantity: str,
          limit_price: str | None = None, tif: TimeInForce = TimeInForce.IOC) -> OrderRequest:
    return OrderRequest(client_order_id, "BTC/USDT", side, order_type, D(quantity),
                        D(limit_price) if limit_price is not None else None, tif)


def fills(state: OrderState) -> list[tuple[Decimal, Decimal]]:
    return [(e.price, e.quantity) for e in state.executions]


def assert_fee(execution: Execution, side: Side, rate: Decimal) -> None:
    """The fee is the rate applied to what the fill delivered, in whichever asset it is charged."""
    base, quote = split_symbol("BTC/USDT")
    assert execution.fee.asset in (base, quote)
    charged_on = execution.quantity if execution.fee.asset == base else (
        execution.price * execution.quantity)
    expected = (charged_on * rate).quantize(FEE_QUANTUM, rounding=ROUND_UP)
    assert abs(execution.fee.amount - expected) <= FEE_QUANTUM, (execution, side, rate)


def expected_after(before: Balances, state: OrderState) -> dict[str, Decimal]:
    """Free balances after the order's fills and fees (nothing resting)."""
    base, quote = split_symbol(state.symbol)
    result = {base: free(before, base), quote: free(before, quote)}
    sign = 1 if state.side is Side.BUY else -1
    for e in state.executions:
        result[base] += sign * e.quantity
        result[quote] -= sign * e.price * e.quantity
        result[e.fee.asset] -= e.fee.amount
    return result


@pytest.mark.parametrize(("order_type", "limit_price"), [
    (OrderType.MARKET, None), (OrderType.LIMIT, "65020")])
async def test_buy_sweeps_several_levels_and_pays_taker_fees(
    harness: Harness, order_type: OrderType, limit_price: str | None,
) -> None:
    account = await funded(harness)
    venue = await harness.venue()
    before = await balances(harness, account)

    state = await venue.submit_order(
        account, order("sweep-1", Side.BUY, order_type, "1.2", limit_price))

    assert state.status is OrderStatus.FILLED
    assert state.client_order_id == "sweep-1"
    assert state.venue_order_id
    assert state.filled_quantity == D("1.2")
    assert fills(state) == [(D("65010"), D("0.5")), (D("65020"), D("0.7"))]
    assert state.average_price == (D("65010") * D("0.5") + D("65020") * D("0.7")) / D("1.2")
    for execution in state.executions:
        assert execution.liquidity == "TAKER"
        assert_fee(execution, Side.BUY, harness.taker_fee)
    after = await balances(harness, account)
    for asset, amount in expected_after(before, state).items():
        assert free(after, asset) == amount, asset
        assert locked(after, asset) == 0


async def test_market_sell_sweeps_bids_and_credits_quote_net_of_fees(harness: Harness) -> None:
    account = await funded(harness)
    venue = await harness.venue()
    before = await balances(harness, account)

    state = await venue.submit_order(account, order("sell-1", Side.SELL, OrderType.MARKET, "1.5"))

    assert state.status is OrderStatus.FILLED
    assert fills(state) == [(D("64990"), D("1")), (D("64980"), D("0.5"))]
    for execution in state.executions:
        assert_fee(execution, Side.SELL, harness.taker_fee)
    after = await balances(harness, account)
    assert free(after, "BTC") == START_BASE - D("1.5") - sum(
        (e.fee.amount for e in state.executions if e.fee.asset == "BTC"), D(0))
    for asset, amount in expected_after(before, state).items():
        assert free(after, asset) == amount, asset


async def test_ioc_larger_than_the_book_fills_what_is_there_and_lets_the_rest_go(
    harness: Harness,
) -> None:
    account = await funded(harness)
    venue = await harness.venue()

    state = await venue.submit_order(
        account, order("ioc-1", Side.BUY, OrderType.LIMIT, "5", "65030"))

    assert state.status.is_closed
    assert state.status in (OrderStatus.EXPIRED, OrderStatus.CANCELLED)
    assert state.filled_quantity == D("3.5")
    assert fills(state) == [(D("65010"), D("0.5")), (D("65020"), D("1")), (D("65030"), D("2"))]
    after = await balances(harness, account)
    assert locked(after, "USDT") == 0  # nothing stays reserved for the remainder


async def test_fok_that_cannot_fill_in_full_does_not_fill_at_all(harness: Harness) -> None:
    account = await funded(harness)
    venue = await harness.venue()
    before = await balances(harness, account)

    state = await venue.submit_order(
        account, order("fok-1", Side.BUY, OrderType.LIMIT, "5", "65030", TimeInForce.FOK))

    assert state.status.is_closed
    assert state.status is not OrderStatus.FILLED
    assert state.filled_quantity == 0
    assert state.executions == ()
    assert await balances(harness, account) == before


async def test_fok_that_can_fill_fills_in_full(harness: Harness) -> None:
    account = await funded(harness)
    venue = await harness.venue()

    state = await venue.submit_order(
        account, order("fok-2", Side.BUY, OrderType.LIMIT, "1.5", "65020", TimeInForce.FOK))

    assert state.status is OrderStatus.FILLED
    assert state.filled_quantity == D("1.5")


async def test_gtc_rests_locks_funds_and_cancel_releases_them(harness: Harness) -> None:
    account = await funded(harness)
    venue = await harness.venue()

    resting = await venue.submit_order(account, order(
        "gtc-1", Side.BUY, OrderType.LIMIT, "1", "64000", TimeInForce.GTC))

    assert resting.status is OrderStatus.ACCEPTED
    assert not resting.status.is_closed
    assert resting.filled_quantity == 0
    held = await balances(harness, account)
    assert free(held, "USDT") == START_QUOTE - D("64000")
    assert locked(held, "USDT") == D("64000")
    assert (await venue.order_status(account, "gtc-1")).status is OrderStatus.ACCEPTED

    cancelled = await venue.cancel_order(account, "gtc-1")

    assert cancelled.status is OrderStatus.CANCELLED
    assert cancelled.venue_order_id == resting.venue_order_id
    assert cancelled.filled_quantity == 0
    released = await balances(harness, account)
    assert (free(released, "USDT"), locked(released, "USDT")) == (START_QUOTE, D(0))
    assert (await venue.order_status(account, "gtc-1")).status is OrderStatus.CANCELLED


async def test_resting_gtc_fills_as_maker_when_the_book_trades_through(harness: Harness) -> None:
    account = await funded(harness)
    venue = await harness.venue()
    await venue.submit_order(account, order(
        "gtc-2", Side.BUY, OrderType.LIMIT, "1", "64000", TimeInForce.GTC))

    await harness.set_book(harness.symbol, [(D("63900"), D("1"))],
                           [(D("63990"), D("3")), (D("64100"), D("1"))])
    state = await venue.order_status(account, "gtc-2")

    assert state.status is OrderStatus.FILLED
    assert fills(state) == [(D("64000"), D("1"))]  # at its own limit price
    [execution] = state.executions
    assert execution.liquidity == "MAKER"
    assert_fee(execution, Side.BUY, harness.maker_fee)
    after = await balances(harness, account)
    assert locked(after, "USDT") == 0
    assert free(after, "USDT") == START_QUOTE - D("64000") - (
        execution.fee.amount if execution.fee.asset == "USDT" else 0)


async def test_cancel_of_a_closed_order_answers_it_unchanged(harness: Harness) -> None:
    account = await funded(harness)
    venue = await harness.venue()
    filled = await venue.submit_order(account, order("done-1", Side.BUY, OrderType.MARKET, "0.1"))

    again = await venue.cancel_order(account, "done-1")

    assert again.status is OrderStatus.FILLED
    assert again.executions == filled.executions


async def test_status_by_client_order_id_answers_what_submit_answered(harness: Harness) -> None:
    account = await funded(harness)
    venue = await harness.venue()
    submitted = await venue.submit_order(
        account, order("status-1", Side.BUY, OrderType.MARKET, "0.8"))

    status = await venue.order_status(account, "status-1")

    assert status == submitted


async def test_status_of_an_unknown_client_order_id_is_unknown_order(harness: Harness) -> None:
    account = await funded(harness)
    venue = await harness.venue()
    await venue.submit_order(account, order("known-1", Side.BUY, OrderType.MARKET, "0.1"))

    with pytest.raises(UnknownOrder):
        await venue.order_status(account, "never-sent")
    with pytest.raises(UnknownOrder):
        await venue.order_status(harness.account(), "known-1")  # another account's id


async def test_resubmitting_a_client_order_id_answers_the_first_order_once(
    harness: Harness,
) -> None:
    account = await funded(harness)
    venue = await harness.venue()
    request = order("twice-1", Side.BUY, OrderType.MARKET, "1")
    first = await venue.submit_order(account, request)
    after_first = await balances(harness, account)

    second = await venue.submit_order(account, request)

    assert second.venue_order_id == first.venue_order_id
    assert second.executions == first.executions
    assert second.filled_quantity == first.filled_quantity == D("1")
    assert await balances(harness, account) == after_first


async def test_liquidity_taken_by_one_order_is_gone_for_the_next(harness: Harness) -> None:
    account = await funded(harness)
    venue = await harness.venue()
    await venue.submit_order(account, order("take-1", Side.BUY, OrderType.MARKET, "0.5"))

    second = await venue.submit_order(account, order("take-2", Side.BUY, OrderType.MARKET, "0.5"))

    assert fills(second) == [(D("65020"), D("0.5"))]


async def test_buy_beyond_the_balance_is_rejected_and_changes_nothing(harness: Harness) -> None:
    account = harness.account()
    await harness.set_balance(account, "USDT", D("1000"))
    await harness.set_book(harness.symbol, BIDS, ASKS)
    venue = await harness.venue()
    before = await balances(harness, account)

    state = await venue.submit_order(account, order("poor-1", Side.BUY, OrderType.MARKET, "1"))

    assert state.status is OrderStatus.REJECTED
    assert state.reject_reason
    assert state.executions == ()
    assert await balances(harness, account) == before


async def test_a_new_account_holds_nothing_until_funded(harness: Harness) -> None:
    venue = await harness.venue()
    account = harness.account()
    assert all(b.total == 0 for b in await venue.balances(account))
    await harness.set_balance(account, "USDT", D("250.5"))
    assert free(await balances(harness, account), "USDT") == D("250.5")
