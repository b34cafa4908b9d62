from __future__ import annotations

from collections.abc import Iterator
from dataclasses import fields, is_dataclass, replace
from decimal import Decimal as D
from decimal import localcontext
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from pricing.book import LpBook
from pricing.errors import (
    InsufficientDepth,
    NotionalAboveMaximum,
    NotionalBelowMinimum,
    PriceNotPositive,
    QuoteRefused,
    SizeAboveMaximum,
    SizeBelowMinimum,
)
from pricing.quote import (
    InstrumentRules,
    Quote,
    QuoteRequest,
    QuotingConfig,
    Side,
    _ceiling_to,
    _floor_to,
    inventory_skew_bps,
    lot_for_scale,
    price_quote,
    quote_request,
    round_to_tick,
    spread_bps_for,
)
from pricing.sweep import SweepBook, consolidate_for_sweep

LOT = D("0.001")
RULES = InstrumentRules(tick_size=D("0.01"), lot_size=LOT)
NO_SPREAD = QuotingConfig(spread_bps=D(0))


def _lp(source: str = "a", fee: str = "0.001") -> LpBook:
    # asks cost 100.1 then 101.101 after the fee; bids earn 98.901 then 97.902
    return LpBook(source, "PAPER", D(fee), [(D("99"), D("1")), (D("98"), D("2"))],
                  [(D("100"), D("1")), (D("101"), D("2"))])


BOOK = consolidate_for_sweep([_lp()], LOT)


def _quote(side: Side | None, quantity: str | None = None, *, config: QuotingConfig = NO_SPREAD,
           rules: InstrumentRules = RULES, book: SweepBook = BOOK, **request: Any) -> Quote:
    return price_quote(QuoteRequest(side, rules, config,
                                    quantity=None if quantity is None else D(quantity),
                                    **request), book)


def test_ticks_round_in_the_dealers_favour_on_both_sides() -> None:
    ask = _quote("BUY", "2").for_side("BUY")
    assert ask.sweep.vwap == D("100.6005")
    assert (ask.price, ask.quote_quantity) == (D("100.61"), D("201.22"))  # rounded up
    bid = _quote("SELL", "2").for_side("SELL")
    assert bid.sweep.vwap == D("98.4015")
    assert (bid.price, bid.quote_quantity) == (D("98.40"), D("196.80"))  # rounded down
    spread = QuotingConfig(spread_bps=D(10))
    assert _quote("BUY", "2", config=spread).for_side("BUY").price == D("100.71")  # 100.7011005
    assert _quote("SELL", "2", config=spread).for_side("SELL").price == D("98.30")  # 98.3030985


def test_round_to_tick_is_exact_on_and_off_the_grid() -> None:
    assert round_to_tick(D("100.50"), D("0.5"), up=True) == D("100.5")
    assert round_to_tick(D("100.5000001"), D("0.5"), up=True) == D("101.0")
    assert round_to_tick(D("100.9999999"), D("0.5"), up=False) == D("100.5")
    assert round_to_tick(D("1.0"), D("0.3"), up=False) == D("0.9")
    assert round_to_tick(D("1.0"), D("0.3"), up=True) == D("1.2")


def test_quantities_round_down_to_the_lot_on_both_sides() -> None:
    quote = _quote(None, "1.2345")
    assert quote.quantity == D("1.234")
    for priced in (quote.for_side("BUY"), quote.for_side("SELL")):
        assert priced.quantity == D("1.234")
        assert priced.quote_quantity == priced.price * D("1.234")
    # asks: (100.1 + 0.234 * 101.101) / 1.234 = 100.2898... ; bids: 98.7115... down
    assert (quote.for_side("BUY").price, quote.for_side("SELL").price) == (D("100.29"),
                                                                          D("98.71"))
    with pytest.raises(SizeBelowMinimum) as raised:
        _quote("BUY", "0.0009")
    assert (raised.value.quantity, raised.value.minimum) == (D(0), LOT)


def test_two_way_quotes_price_both_sides_for_one_quantity() -> None:
    quote = _quote(None, "1.5", config=QuotingConfig(spread_bps=D(5)))
    assert quote.side is None
    bid, ask = quote.for_side("SELL"), quote.for_side("BUY")
    assert bid.quantity == ask.quantity == quote.quantity == D("1.5")
    assert bid.price < ask.price
    assert (bid.sweep.hedge_side, ask.sweep.hedge_side) == ("SELL", "BUY")
    one_sided = _quote("BUY", "1.5")
    assert one_sided.bid is None
    with pytest.raises(LookupError):
        one_sided.for_side("SELL")


def test_the_first_covering_tier_sets_the_spread() -> None:
    config = QuotingConfig(spread_bps=D(30), spread_tiers=((D(150), D(5)), (D(250), D(10))))
    assert spread_bps_for(config, D(150)) == D(5)  # a tier covers its own bound
    assert spread_bps_for(config, D("150.01")) == D(10)
    assert spread_bps_for(config, D(251)) == D(30)
    # the tier is picked on the sweep's fee-adjusted notional: 100.1, 201.201, 302.302
    assert [_quote("BUY", size, config=config).for_side("BUY").spread_bps
            for size in ("1", "2", "3")] == [D(5), D(10), D(30)]
    assert _quote("BUY", "1", config=config).for_side("BUY").price == D("100.16")  # 100.15005


def test_a_long_dealer_lowers_both_prices_and_a_short_one_raises_them() -> None:
    config = QuotingConfig(spread_bps=D(20), inventory_skew_bps=D(10))

    def prices(exposure: str, max_exposure: str | None = "2") -> tuple[D, D]:
        quote = _quote(None, "1", config=config, exposure=D(exposure),
                       max_exposure=None if max_exposure is None else D(max_exposure))
        return quote.for_side("SELL").price, quote.for_side("BUY").price

    # vwaps: bid 98.901, ask 100.1; flat: bid * (1 - 20bps), ask * (1 + 20bps)
    assert prices("0") == (D("98.70"), D("100.31"))
    # long half the limit: skew +5 bps -> bid * (1 - 25bps) = 98.6537, ask * (1 + 15bps) = 100.2501
    assert prices("1") == (D("98.65"), D("100.26"))
    # short: skew -5 bps -> bid * (1 - 15bps) = 98.7526, ask * (1 + 25bps) = 100.3502
    assert prices("-1") == (D("98.75"), D("100.36"))
    # beyond the limit the skew stays at 10 bps
    assert prices("5") == prices("2") == (D("98.60"), D("100.21"))
    assert prices("-5") == prices("-2")
    assert prices("1", max_exposure=None) == prices("0")
    quote = _quote(None, "1", config=config, exposure=D(1), max_exposure=D(2))
    assert (quote.for_side("SELL").skew_bps, quote.for_side("BUY").skew_bps) == (D(5), D(5))


def test_a_skew_past_the_spread_stops_at_the_other_side_of_the_market() -> None:
    config = QuotingConfig(spread_bps=D(20), inventory_skew_bps=D(1000))

    def prices(exposure: str, book: SweepBook = BOOK) -> tuple[D, D]:
        quote = _quote(None, "1", config=config, book=book, exposure=D(exposure),
                       max_exposure=D(10))
        return quote.for_side("SELL").price, quote.for_side("BUY").price

    # long at the limit: ask 100.1 * (1 - 980bps) = 90.29 would undercut the best bid, 98.901
    assert prices("10")[1] == D("98.91")
    # short at the limit: bid 98.901 * (1 + 980bps) = 108.59 would top the best ask, 100.1
    assert prices("-10")[0] == D("100.10")
    # a skew within the spread is not bounded
    assert prices("0.1") == (D("98.60"), D("100.21"))  # skew 10 bps: 98.604, 100.2001
    # with no level on the other side there is nothing to trade against: no bound
    asks_only = consolidate_for_sweep(
        [LpBook("a", "PAPER", D("0.001"), [], [(D("100"), D("3"))])], LOT)
    ask = _quote("BUY", "1", config=config, book=asks_only, exposure=D(10),
                 max_exposure=D(10)).for_side("BUY")
    assert ask.price == D("90.30")  # 100.1 * 0.902 = 90.2902, up


def test_the_skew_does_not_depend_on_the_callers_decimal_context() -> None:
    config = QuotingConfig(spread_bps=D(20), inventory_skew_bps=D(1000))
    huge = D("1" * 29)  # more digits than the default context's 28
    short = -huge
    expected = _quote(None, "1", config=config, exposure=short, max_exposure=huge)
    assert expected.for_side("BUY").skew_bps == D(-1000)
    with localcontext() as context:
        context.prec = 3
        assert _quote(None, "1", config=config, exposure=short, max_exposure=huge) == expected


def test_a_skew_that_does_not_divide_rounds_for_the_dealer() -> None:
    # 10 * 1/3 bps: the ask applies less skew (higher ask), the bid more (lower bid)
    assert inventory_skew_bps(D(10), D(1), D(3), round_up=False) == D("3.333333")
    assert inventory_skew_bps(D(10), D(1), D(3), round_up=True) == D("3.333334")
    assert inventory_skew_bps(D(10), D(-1), D(3), round_up=False) == D("-3.333334")
    assert inventory_skew_bps(D(10), D(-1), D(3), round_up=True) == D("-3.333333")
    assert inventory_skew_bps(D(0), D(1), D(3), round_up=True) == D(0)


def test_a_quote_amount_buys_the_largest_whole_lot_quantity() -> None:
    ask = _quote("BUY", quote_quantity=D("150.15")).for_side("BUY")
    # 100.1 + 0.495 * 101.101 = 150.144995 <= 150.15; one more lot would cost 150.246096
    assert ask.quantity == D("1.495")
    assert ask.sweep.notional == D("150.144995")
    assert ask.price == D("100.44")  # 150.144995 / 1.495 = 100.4314... up
    assert ask.quote_quantity == D("150.15780")
    bid = _quote("SELL", quote_quantity=D("147.852")).for_side("SELL")
    assert (bid.quantity, bid.price) == (D("1.5"), D("98.56"))  # vwap 98.568 down
    with pytest.raises(SizeBelowMinimum):
        _quote("BUY", quote_quantity=D("0.1"))  # one lot costs 0.1001
    with pytest.raises(InsufficientDepth) as raised:
        _quote("BUY", quote_quantity=D("1000"))
    assert raised.value.available_quote_quantity == D("302.302")


def test_size_and_notional_limits_refuse_with_the_limit() -> None:
    rules = InstrumentRules(tick_size=D("0.01"), lot_size=LOT, min_quantity=D("0.01"),
                            max_quantity=D(2), min_notional=D(150))
    with pytest.raises(SizeBelowMinimum) as small:
        _quote("BUY", "0.005", rules=rules)
    assert (small.value.quantity, small.value.minimum) == (D("0.005"), D("0.01"))
    with pytest.raises(SizeAboveMaximum) as large:
        _quote("BUY", "2.5", rules=rules)
    assert (large.value.quantity, large.value.maximum) == (D("2.5"), D(2))
    with pytest.raises(NotionalBelowMinimum) as instrument:
        _quote("BUY", "1", rules=rules)
    assert (instrument.value.notional, instrument.value.minimum,
            instrument.value.limit) == (D("100.10"), D(150), "instrument")
    dealer = QuotingConfig(spread_bps=D(0), min_quote_notional=D(150),
                           max_quote_notional=D(200))
    with pytest.raises(NotionalBelowMinimum) as below:
        _quote("BUY", "1", config=dealer)
    assert (below.value.minimum, below.value.limit) == (D(150), "dealer")
    with pytest.raises(NotionalAboveMaximum) as above:
        _quote("BUY", "2", config=dealer)
    assert (above.value.notional, above.value.maximum) == (D("201.22"), D(200))
    assert _quote("BUY", "1.9", config=dealer).quantity == D("1.9")
    with pytest.raises(InsufficientDepth) as deep:
        _quote("SELL", "3.5")
    assert (deep.value.book_side, deep.value.available_quantity) == ("BID", D(3))
    with pytest.raises(PriceNotPositive):
        _quote("SELL", "1", config=QuotingConfig(spread_bps=D(10000)))
    assert all(issubclass(error, QuoteRefused) for error in (
        SizeBelowMinimum, SizeAboveMaximum, NotionalBelowMinimum, NotionalAboveMaximum,
        InsufficientDepth, PriceNotPositive))


def test_requests_and_settings_are_checked() -> None:
    with pytest.raises(TypeError, match="Decimal"):
        QuoteRequest("BUY", RULES, NO_SPREAD, quantity=1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Decimal"):
        QuoteRequest("BUY", RULES, NO_SPREAD, quantity=D(1), exposure=0.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="exactly one"):
        QuoteRequest("BUY", RULES, NO_SPREAD, quantity=D(1), quote_quantity=D(100))
    with pytest.raises(ValueError, match="exactly one"):
        QuoteRequest("BUY", RULES, NO_SPREAD)
    with pytest.raises(ValueError, match="two-way"):
        QuoteRequest(None, RULES, NO_SPREAD, quote_quantity=D(100))
    with pytest.raises(ValueError, match="side"):
        QuoteRequest("HOLD", RULES, NO_SPREAD, quantity=D(1))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive"):
        QuoteRequest("BUY", RULES, NO_SPREAD, quantity=D(0))
    with pytest.raises(TypeError, match="finite"):
        QuoteRequest("BUY", RULES, NO_SPREAD, quantity=D("Infinity"))
    with pytest.raises(ValueError, match="positive"):
        QuoteRequest("BUY", RULES, NO_SPREAD, quantity=D(1), max_exposure=D(0))
    request = QuoteRequest("BUY", RULES, NO_SPREAD, quantity=D(1))
    with pytest.raises(ValueError, match="positive"):
        request._replace(quantity=D(-1))  # a copy is checked as a new request is
    with pytest.raises(AttributeError):
        request.quantity = D(2)  # type: ignore[misc]
    with pytest.raises(ValueError, match="increasing"):
        QuotingConfig(spread_bps=D(1), spread_tiers=((D(10), D(1)), (D(10), D(2))))
    with pytest.raises(ValueError, match="max_quote_notional"):
        QuotingConfig(spread_bps=D(1), min_quote_notional=D(10), max_quote_notional=D(5))
    with pytest.raises(ValueError, match="tick_size"):
        InstrumentRules(tick_size=D(0), lot_size=LOT)
    with pytest.raises(TypeError, match="finite"):
        InstrumentRules(tick_size=D("NaN"), lot_size=LOT)
    with pytest.raises(ValueError, match="lot"):
        _quote("BUY", "1", rules=replace(RULES, lot_size=D("0.01")))


def _leaves(value: object) -> Iterator[object]:
    if is_dataclass(value) and not isinstance(value, type):
        for field in fields(value):
            yield from _leaves(getattr(value, field.name))
    elif isinstance(value, tuple):
        for item in value:
            yield from _leaves(item)
    else:
        yield value


def _assert_no_float(value: object) -> None:
    leaves = list(_leaves(value))
    assert any(isinstance(leaf, D) for leaf in leaves)
    for leaf in leaves:
        assert leaf is None or isinstance(leaf, D | str), f"{leaf!r} is not a Decimal"


def test_every_number_in_a_quote_and_a_refusal_is_a_decimal() -> None:
    config = QuotingConfig(spread_bps=D(7), inventory_skew_bps=D(3),
                           spread_tiers=((D(100), D(5)),))
    _assert_no_float(_quote(None, "2.25", config=config, exposure=D("0.7"), max_exposure=D(3)))
    _assert_no_float(_quote("BUY", quote_quantity=D("123.45")))
    with pytest.raises(InsufficientDepth) as raised:
        _quote("BUY", "10")
    assert all(isinstance(value, D) for value in (
        raised.value.available_quantity, raised.value.available_quote_quantity,
        raised.value.requested_quantity))


# Properties over random books and settings.

FEES = ["0", "0.0005", "0.001", "0.002", "0.0075"]


@st.composite
def books_and_rules(draw: st.DrawFn) -> tuple[list[LpBook], InstrumentRules]:
    books = []
    for number in range(draw(st.integers(1, 4))):
        levels = st.lists(st.tuples(st.integers(1, 400), st.integers(1, 30000)), min_size=1,
                          max_size=8)
        bids = [(D(9000 + tick) / 100, D(quantity) / 10000) for tick, quantity in draw(levels)]
        asks = [(D(10000 + tick) / 100, D(quantity) / 10000) for tick, quantity in draw(levels)]
        books.append(LpBook(f"lp{number}", "PAPER", D(draw(st.sampled_from(FEES))), bids, asks))
    rules = InstrumentRules(tick_size=D(draw(st.sampled_from(["0.01", "0.05", "0.5", "1"]))),
                            lot_size=D(draw(st.sampled_from(["0.001", "0.01", "0.0001"]))))
    return books, rules


@st.composite
def quoting_configs(draw: st.DrawFn) -> QuotingConfig:
    """Spreads that never narrow with size: tiers' bps and the base spread are non-decreasing."""
    bps = sorted(draw(st.lists(st.integers(0, 300), min_size=1, max_size=4)))
    bounds = sorted(draw(st.sets(st.integers(1, 3000), min_size=len(bps) - 1,
                                 max_size=len(bps) - 1)))
    tiers = tuple((D(bound), D(spread)) for bound, spread in zip(bounds, bps, strict=False))
    # skews up to 1000 bps: past the spread and the books' width, where the other side bounds
    return QuotingConfig(spread_bps=D(bps[-1]), spread_tiers=tiers,
                         inventory_skew_bps=D(draw(st.integers(0, 1000))))


@given(books_and_rules(), quoting_configs(), st.integers(1, 2 * 10**5), st.integers(-200, 200))
def test_quotes_respect_the_book_the_ticks_and_the_lots(
        market: tuple[list[LpBook], InstrumentRules], config: QuotingConfig, ten_thousandths: int,
        exposure: int) -> None:
    books, rules = market
    book = consolidate_for_sweep(books, rules.lot_size)
    quantity = D(ten_thousandths) / 10000
    try:
        quote = price_quote(QuoteRequest(None, rules, config, quantity=quantity,
                                         exposure=D(exposure) / 10, max_exposure=D(10)), book)
    except (InsufficientDepth, SizeBelowMinimum):
        assume(False)
        return
    assert quote.quantity <= quantity < quote.quantity + rules.lot_size
    assert quote.quantity % rules.lot_size == 0
    _assert_no_float(quote)
    for priced in (quote.for_side("BUY"), quote.for_side("SELL")):
        assert priced.price % rules.tick_size == 0
        assert sum((leg.quantity for leg in priced.hedge_plan), D(0)) == quote.quantity
        assert all(leg.quantity > 0 and leg.quantity % rules.lot_size == 0
                   for leg in priced.hedge_plan)
        assert priced.quote_quantity == priced.price * priced.quantity
    ask, bid = quote.for_side("BUY"), quote.for_side("SELL")
    best_bid, best_ask = book.bids.levels()[0].adjusted_price, book.asks.levels()[0].adjusted_price
    with localcontext() as exact:
        exact.prec = 100
        exact_ask = ask.sweep.vwap * (1 + (ask.spread_bps - ask.skew_bps) / 10000)
        exact_bid = bid.sweep.vwap * (1 - (bid.spread_bps + bid.skew_bps) / 10000)
    # a skew past the spread stops at the other side's best price
    if ask.skew_bps > ask.spread_bps:
        exact_ask = max(exact_ask, best_bid)
    if -bid.skew_bps > bid.spread_bps:
        exact_bid = min(exact_bid, best_ask)
    assert ask.price - rules.tick_size < exact_ask <= ask.price
    assert bid.price <= exact_bid < bid.price + rules.tick_size
    # so no client can buy from the LPs and sell to the dealer at a profit, nor the reverse
    assert ask.price >= best_bid
    assert bid.price <= best_ask
    if not exposure:
        assert ask.price >= book.asks.levels()[0].adjusted_price
        assert bid.price <= book.bids.levels()[0].adjusted_price


@given(books_and_rules(), quoting_configs(), st.sampled_from(["BUY", "SELL"]),
       st.lists(st.integers(1, 2 * 10**5), min_size=2, max_size=5), st.integers(-200, 200))
def test_prices_worsen_for_the_client_as_size_grows(
        market: tuple[list[LpBook], InstrumentRules], config: QuotingConfig, side: Side,
        sizes: list[int], exposure: int) -> None:
    books, rules = market
    book = consolidate_for_sweep(books, rules.lot_size)
    prices = []
    for size in sorted(sizes):
        try:
            quote = price_quote(QuoteRequest(side, rules, config, quantity=D(size) / 10000,
                                             exposure=D(exposure) / 10, max_exposure=D(10)),
                                book)
        except SizeBelowMinimum:
            continue
        except InsufficientDepth:
            break
        prices.append(quote.for_side(side).price)
    assert prices == sorted(prices, reverse=side == "SELL")


@pytest.mark.parametrize(("lot", "scale", "booked"), [
    ("0.001", 8, "0.001"),      # the usual case: the ledger books finer than the lot
    ("0.0001", 4, "0.0001"),    # just as fine
    ("0.00001", 4, "0.0001"),   # the ledger's step is the coarser
    ("0.00003", 4, "0.0003"),   # neither divides the other: their least common multiple
    ("0.25", 1, "0.5"),
    ("5", 0, "5"),
    ("0.5", 0, "1"),
])
def test_a_lot_the_ledger_books_every_multiple_of(lot: str, scale: int, booked: str) -> None:
    result = lot_for_scale(D(lot), scale)
    assert result == D(booked)
    assert result % D(lot) == 0
    assert result.scaleb(scale) % 1 == 0


def test_a_lot_the_ledger_already_books_is_kept_as_it_is() -> None:
    lot = D("0.001")
    assert lot_for_scale(lot, 8) is lot


@given(st.sampled_from(["0.01", "1", "1E+1", "0.0001", "0.5", "0.010", "0.25"]),
       st.decimals(min_value=D("-1000"), max_value=D("100000"), places=20),
       st.booleans())
def test_a_power_of_ten_tick_rounds_with_one_quantize_as_round_to_tick_does(
        tick: str, price: D, up: bool) -> None:
    rules = InstrumentRules(tick_size=D(tick), lot_size=LOT)
    assert (rules.tick_quantum is not None) == (tick in ("0.01", "1", "1E+1", "0.0001"))
    assert replace(rules, lot_size=D("0.01")).tick_quantum == rules.tick_quantum
    if rules.tick_quantum is not None:
        quantize = _ceiling_to if up else _floor_to
        # digit for digit: the same value and exponent
        assert repr(quantize(price, rules.tick_quantum)) == repr(
            round_to_tick(price, rules.tick_size, up=up))


def _priced_or_refusal(request: QuoteRequest, book: SweepBook) -> Quote | type[QuoteRefused]:
    try:
        return price_quote(request, book)
    except QuoteRefused as exc:
        return type(exc)


@given(books_and_rules(), st.sampled_from(["0", "7", "2.5", "0.250", "1E+1", "35.00", "9999",
                                            "10000", "12000"]),
       st.integers(1, 2 * 10**5), st.sampled_from([None, "BUY", "SELL"]),
       st.sampled_from([None, "0", "3"]))
def test_a_spread_without_tiers_or_skew_prices_as_the_tiers_path_does(
        market: tuple[list[LpBook], InstrumentRules], spread: str, ten_thousandths: int,
        side: Side | None, exposure: str | None) -> None:
    """The usual configuration prices with a factor its config works out once: the same
    Decimals, exponents included, as the path that works the margin out per quote."""
    books, rules = market
    book = consolidate_for_sweep(books, rules.lot_size)
    # no skew: no max exposure, a skew of 0 bps, or a skew and no exposure to skew by
    skew = {} if exposure is None else {"exposure": D(exposure), "max_exposure": D(10)}
    plain = QuotingConfig(spread_bps=D(spread),
                          inventory_skew_bps=D(50) if exposure == "0" else D(0))
    # one tier covering every notional: the same spread, worked out per quote
    tiered = replace(plain, spread_tiers=((D("1E+30"), D(spread)),))
    quantity = D(ten_thousandths) / 10000
    quote = _priced_or_refusal(QuoteRequest(side, rules, plain, quantity=quantity, **skew), book)
    other = _priced_or_refusal(QuoteRequest(side, rules, tiered, quantity=quantity, **skew), book)
    if not isinstance(quote, Quote) or not isinstance(other, Quote):
        assert quote == other
        return
    assert quote.quantity.as_tuple() == other.quantity.as_tuple()
    for mine, theirs in ((quote.bid, other.bid), (quote.ask, other.ask)):
        assert (mine is None) == (theirs is None)
        if mine is not None and theirs is not None:
            assert [value.as_tuple() for value in mine[1:6]] == [
                value.as_tuple() for value in theirs[1:6]]
            assert mine.sweep == theirs.sweep


@pytest.mark.parametrize(("side", "amounts"), [
    ("BUY", {"quantity": D("1.5")}),
    (None, {"quantity": D("0.001"), "exposure": D(-3), "max_exposure": D(10)}),
    ("SELL", {"quote_quantity": D(100)}),
    ("BUY", {"quantity": 1.5}),
    ("BUY", {"quantity": D(1), "quote_quantity": D(100)}),
    (None, {"quote_quantity": D(100)}),
    ("HOLD", {"quantity": D(1)}),
    ("BUY", {"quantity": D(0)}),
    ("BUY", {"quantity": D(1), "max_exposure": D(0)}),
])
def test_quote_request_makes_what_the_class_makes(side: Any, amounts: dict[str, Any]) -> None:
    # the quote path's plain call: the same request, or the same refusal
    def made(make: Any) -> object:
        try:
            return make(side, RULES, NO_SPREAD, **amounts)
        except (TypeError, ValueError) as exc:
            return type(exc), str(exc)

    made_here, made_by_class = made(quote_request), made(QuoteRequest)
    assert made_here == made_by_class
    assert type(made_here) is type(made_by_class)
