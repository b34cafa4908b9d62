"""The PnL's pure part: the executed quote amount rebuilt from a recorded average, the realised
figure booked as the ledger books it, spread, slippage and fee conventions."""

from __future__ import annotations

import datetime as dt
import random
import uuid
from decimal import Decimal

import orjson

from dealer.services.hedges import plan_price
from dealer.services.pnl import (
    ClientFillFact,
    HedgeFillFact,
    PnlTotals,
    compute_pnl,
    dealer_postings,
    executed_quote_amount,
    fold,
)
from ledger.accounts import dealer_account, exchange_account
from ledger.assets import Asset, ScaleTable, from_minor
from ledger.postings import net_by_account
from venues.base import Execution, Fee, OrderState, OrderStatus, OrderType, Side, TimeInForce

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
SCALES = ScaleTable.default()
DEALER = uuid.uuid4()
CLIENT = uuid.uuid4()
LP = uuid.uuid4()


def _state(executions: list[tuple[Decimal, Decimal]]) -> OrderState:
    """A closed venue order as a connector reports it (its average is computed the same way)."""
    filled = sum((q for _, q in executions), Decimal(0))
    return OrderState(
        client_order_id="h-x-1-0", venue_order_id="v", symbol="BTC/USDT", side=Side.BUY,
        order_type=OrderType.LIMIT, time_in_force=TimeInForce.IOC, quantity=filled,
        limit_price=None, status=OrderStatus.FILLED, filled_quantity=filled,
        executions=tuple(Execution(str(n), p, q, Fee("BTC", Decimal(0)), "TAKER", 0)
                         for n, (p, q) in enumerate(executions)),
        ts_created=0, ts_updated=0)


def test_the_executed_quote_amount_is_rebuilt_exactly_from_the_average() -> None:
    rng = random.Random(11)
    for _ in range(3000):
        tick = rng.choice([Decimal("0.01"), Decimal("0.1"), Decimal("0.0001")])
        lot = rng.choice([Decimal("1e-8"), Decimal("0.00001"), Decimal("0.001")])
        executions = [(rng.randint(1, 10**7) * tick, rng.randint(1, 10**6) * lot)
                      for _ in range(rng.randint(1, 8))]
        state = _state(executions)
        assert state.average_price is not None
        exact = sum((p * q for p, q in executions), Decimal(0))
        assert executed_quote_amount(state.average_price, state.filled_quantity) == exact


def _client(side: str, quantity: str, price: str, vwap: str | None) -> ClientFillFact:
    return ClientFillFact(uuid.uuid4(), CLIENT, "BTC/USDT", side, Decimal(quantity),
                          Decimal(price), None if vwap is None else Decimal(vwap))


def _hedge(side: str, filled: str, average: str, plan: str | None, fee_asset: str | None,
           fee: str | None) -> HedgeFillFact:
    return HedgeFillFact(f"h-{uuid.uuid4()}-1-0", LP, "BTC/USDT", side, Decimal(filled),
                         Decimal(average), fee_asset, None if fee is None else Decimal(fee),
                         None if plan is None else Decimal(plan))


def _no_price(base: str) -> tuple[str, Decimal | None] | None:
    return None


def test_realised_is_the_dealer_balance_the_postings_book() -> None:
    clients = [_client("BUY", "0.5", "65010.1", "65000.05"),
               _client("SELL", "0.3", "64990.3", "65000.123")]
    hedges = [_hedge("BUY", "0.5", "65001.333333333333333333333", "65000.05", "BTC",
                     "0.0005"),
              _hedge("SELL", "0.3", "65000.1", "65000.123", "USDT", "19.50003")]
    report = compute_pnl(DEALER, clients, hedges, SCALES, _no_price, now=NOW)
    transactions, unbooked = dealer_postings(DEALER, clients, hedges, SCALES)
    assert unbooked == 0
    net = net_by_account(transactions)[dealer_account(DEALER)]
    usdt, btc = Asset("USDT", 6), Asset("BTC", 8)
    [quote] = report.quote_assets
    assert quote.realised == from_minor(net[str(usdt)], usdt)
    assert report.balances["USDT"] == quote.realised
    [inventory] = report.inventory
    assert inventory.quantity == from_minor(net[str(btc)], btc)
    # Bought back 0.5 less a 0.0005 BTC fee after selling 0.5, and sold 0.3 after buying 0.3.
    assert inventory.quantity == Decimal("-0.0005")
    # Client BUY received rounds up, client SELL paid rounds down, hedge BUY paid rounds down,
    # hedge SELL received rounds up, the USDT fee rounds down.
    received = Decimal("32505.050000") + Decimal("19500.030000")
    paid = Decimal("19497.090000") + Decimal("32500.666666") + Decimal("19.500030")
    assert quote.realised == received - paid


def test_spread_and_slippage_are_signed_for_the_dealer() -> None:
    clients = [_client("BUY", "2", "101", "100"),  # sold to the client 1 above the plan
               _client("SELL", "1", "98", "100"),  # bought from the client 2 below
               _client("BUY", "1", "100", None)]  # no plan: no spread figure
    hedges = [_hedge("BUY", "2", "100.5", "100", None, None),  # paid 0.5 more than planned
              _hedge("SELL", "1", "100.25", "100", None, None),  # got 0.25 more than planned
              _hedge("SELL", "1", "99", None, None, None)]  # no plan price: left out
    report = compute_pnl(DEALER, clients, hedges, SCALES, _no_price, now=NOW)
    [quote] = report.quote_assets
    assert quote.spread_captured == Decimal(2 * 1 + 1 * 2)
    assert quote.hedge_slippage == Decimal("1.0") - Decimal("0.25")
    assert quote.planned_hedge_notional == Decimal(300)
    assert quote.hedge_slippage_bps == Decimal("0.75") / 300 * 10000
    assert (quote.client_fills, quote.hedge_orders) == (3, 3)


def test_fees_are_reported_as_charged_and_as_booked() -> None:
    hedges = [_hedge("BUY", "0.1", "100", "100", "BTC", "0.000000019"),
              _hedge("SELL", "0.1", "100", "100", "USDT", "0.0100009"),
              _hedge("SELL", "0.1", "100", "100", "USDT", "0.0000001"),  # books nothing
              _hedge("SELL", "0.1", "100", "100", "BNB", "0.01")]  # no scale: not booked
    report = compute_pnl(DEALER, [], hedges, SCALES, _no_price, now=NOW)
    fees = {f.asset: (f.amount, f.booked) for f in report.fees}
    assert fees == {"BNB": (Decimal("0.01"), Decimal(0)),
                    "BTC": (Decimal("0.000000019"), Decimal("0.00000001")),
                    "USDT": (Decimal("0.0100010"), Decimal("0.010000"))}
    # The booked fees are what left the dealer's balances besides the trades.
    assert report.balances["USDT"] == Decimal(30) - Decimal(10) - Decimal("0.010000")
    assert report.balances["BTC"] == Decimal("0.1") - Decimal("0.3") - Decimal("0.00000001")


def test_inventory_is_valued_at_the_mid_into_the_total() -> None:
    clients = [_client("SELL", "0.5", "64990", "65000")]

    def price_of(base: str) -> tuple[str, Decimal | None] | None:
        return ("USDT", Decimal("65010")) if base == "BTC" else None

    report = compute_pnl(DEALER, clients, [], SCALES, price_of, now=NOW)
    [quote] = report.quote_assets
    [inventory] = report.inventory
    assert inventory.quantity == Decimal("0.5")
    assert inventory.unrealised == Decimal("32505")
    assert quote.realised == Decimal("-32495")
    assert quote.total == Decimal(10)

    def stale(base: str) -> tuple[str, Decimal | None] | None:
        return "USDT", None

    report = compute_pnl(DEALER, clients, [], SCALES, stale, now=NOW)
    assert report.inventory[0].unrealised is None
    assert report.quote_assets[0].unrealised is None
    assert report.quote_assets[0].total is None


def test_a_fill_that_cannot_be_booked_is_counted_not_fatal() -> None:
    odd = ClientFillFact(uuid.uuid4(), CLIENT, "DOGE/USDT", "BUY", Decimal(1), Decimal(1), None)
    report = compute_pnl(DEALER, [odd, _client("BUY", "1", "100", "99")], [], SCALES,
                         _no_price, now=NOW)
    assert report.unbooked == 1
    assert report.balances["USDT"] == Decimal(100)


def test_the_plan_price_is_the_legs_or_the_jobs_vwap() -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    plan = {"vwap": "100.2", "legs": [
        {"tradingAccountId": str(a), "quantity": "1", "vwap": "100", "worstPrice": "101"},
        {"tradingAccountId": str(b), "quantity": "3", "vwap": "104", "worstPrice": "105"}]}
    assert plan_price(plan, 0, a) == Decimal(100)
    assert plan_price(plan, 1, b) == Decimal(104)
    # An order on another LP than its leg's (re-routed): the whole plan's raw VWAP.
    assert plan_price(plan, 1, a) == Decimal(103)
    assert plan_price(plan, 5, uuid.uuid4()) == Decimal(103)
    assert plan_price({}, 0, a) is None
    assert plan_price({"legs": [{"quantity": "1"}]}, 0, a) is None


def test_totals_folded_in_parts_and_stored_give_the_pnl_of_all_the_facts() -> None:
    rng = random.Random(5)
    symbols = ("BTC/USDT", "ETH/USDT", "ETH/BTC")
    sides = ("BUY", "SELL")
    clients = [ClientFillFact(uuid.uuid4(), CLIENT, rng.choice(symbols), rng.choice(sides),
                              Decimal(rng.randint(1, 10**6)) / 10**5,
                              Decimal(rng.randint(10**6, 10**7)) / 100,
                              rng.choice((None, Decimal(rng.randint(10**6, 10**7)) / 100)))
               for _ in range(60)]
    hedges = [HedgeFillFact(f"h-{uuid.uuid4()}-1-0", LP, rng.choice(symbols),
                            rng.choice(sides), Decimal(rng.randint(1, 10**6)) / 10**5,
                            Decimal(rng.randint(10**8, 10**9)) / 10**4,
                            rng.choice((None, "BTC", "USDT", "BNB")),
                            Decimal(rng.randint(1, 10**6)) / 10**7,
                            rng.choice((None, Decimal(rng.randint(10**6, 10**7)) / 100)))
              for _ in range(60)]

    def price_of(base: str) -> tuple[str, Decimal | None] | None:
        return ("USDT", Decimal("1234.5")) if base != "USDT" else None

    whole = compute_pnl(DEALER, clients, hedges, SCALES, price_of, now=NOW)
    totals = PnlTotals()
    for cut in range(0, 40, 10):  # four folds, each stored and read back as the checkpoint
        fold(totals, DEALER, clients[cut:cut + 10], hedges[cut:cut + 10], SCALES)
        totals = PnlTotals.from_json(orjson.loads(orjson.dumps(totals.to_json())))
    parts = compute_pnl(DEALER, clients[40:], hedges[40:], SCALES, price_of, now=NOW,
                        folded=totals)
    assert parts == whole
    assert [q.asset for q in whole.quote_assets] == ["BTC", "USDT"]
    assert [i.asset for i in whole.inventory] == ["BTC", "ETH"]
    assert [f.asset for f in whole.fees] == ["BNB", "BTC", "USDT"]
    assert sum(q.client_fills for q in whole.quote_assets) == 60


def test_stored_totals_keep_minor_units_beyond_64_bits() -> None:
    scales = ScaleTable.default().merged({"DAI": 18})
    fill = ClientFillFact(uuid.uuid4(), CLIENT, "ETH/DAI", "SELL", Decimal("1"),
                          Decimal("3000"), None)
    totals = fold(PnlTotals(), DEALER, [fill], [], scales)
    assert totals.balances["DAI/18"] == -3000 * 10**18
    stored = orjson.loads(orjson.dumps(totals.to_json()))
    assert PnlTotals.from_json(stored) == totals


def test_a_fee_in_a_second_asset_is_booked_and_reported() -> None:
    scales = ScaleTable.default().merged({"BNB": 8})
    hedge = HedgeFillFact(f"h-{uuid.uuid4()}-1-0", LP, "BTC/USDT", "BUY", Decimal("0.5"),
                          Decimal("65000"), "BTC", Decimal("0.0004"), Decimal("65000"),
                          other_fees=(("BNB", Decimal("0.000123456789")),))
    report = compute_pnl(DEALER, [], [hedge], scales, _no_price, now=NOW)
    # Each fee rounded down to its asset's scale, paid by the dealer to the LP's exchange wallet.
    assert report.balances["BNB"] == Decimal("-0.00012345")
    assert report.balances["BTC"] == Decimal("0.4996")
    assert [(f.asset, f.amount, f.booked) for f in report.fees] == [
        ("BNB", Decimal("0.000123456789"), Decimal("0.00012345")),
        ("BTC", Decimal("0.0004"), Decimal("0.0004"))]
    transactions, unbooked = dealer_postings(DEALER, [], [hedge], scales)
    assert unbooked == 0
    net = net_by_account(transactions)
    assert net[dealer_account(DEALER)]["BNB/8"] == -12345
    assert net[exchange_account(LP)]["BNB/8"] == 12345
