from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from decimal import Context, localcontext
from decimal import Decimal as D

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pricing.book import LpBook
from pricing.errors import InsufficientDepth, QuoteRefused
from pricing.sweep import (
    VWAP_QUANTUM,
    BookSide,
    _divide_down,
    _divide_up,
    _quantize_down,
    _quantize_up,
    consolidate_for_sweep,
    prepare_lp_book,
    quantity_for_quote_amount,
    sweep_quantity,
)

LOT = D("0.001")


def _book(source: str, fee: str, bids: Sequence[tuple[str, str]] = (),
          asks: Sequence[tuple[str, str]] = ()) -> LpBook:
    return LpBook(source, source.upper(), D(fee), [(D(p), D(q)) for p, q in bids],
                  [(D(p), D(q)) for p, q in asks])


def _single_lp() -> LpBook:
    return _book("a", "0.001", bids=[("99", "1"), ("98", "2")], asks=[("100", "1"), ("101", "2")])


def test_single_lp_sweep_of_asks_by_hand() -> None:
    swept = sweep_quantity(consolidate_for_sweep([_single_lp()], LOT).asks, D("2"))
    # 1 at 100 * 1.001 = 100.1, then 1 at 101 * 1.001 = 101.101
    assert swept.hedge_side == "BUY"
    assert swept.quantity == D("2")
    assert swept.notional == D("201.201")
    assert swept.raw_notional == D("201")
    assert swept.vwap == D("100.6005")
    assert swept.raw_vwap == D("100.5")
    assert (swept.worst_price, swept.worst_raw_price) == (D("101.101"), D("101"))
    assert [(leg.source, leg.quantity, leg.vwap, leg.worst_price) for leg in swept.hedge_plan] == [
        ("a", D("2"), D("100.5"), D("101"))]


def test_single_lp_sweep_of_bids_by_hand() -> None:
    swept = sweep_quantity(consolidate_for_sweep([_single_lp()], LOT).bids, D("1.5"))
    # 1 at 99 * 0.999 = 98.901, then 0.5 at 98 * 0.999 = 97.902
    assert swept.hedge_side == "SELL"
    assert swept.notional == D("98.901") + D("48.951")
    assert swept.vwap == D("98.568")
    assert swept.raw_vwap == D("98.666666666666666666")  # 148/1.5, rounded down on bids
    assert (swept.worst_price, swept.worst_raw_price) == (D("97.902"), D("98"))
    assert swept.hedge_plan[0].quantity == D("1.5")


def test_fees_change_the_order_and_so_the_allocation() -> None:
    # raw, "a" is the best on both sides; after fees, "b" is
    dear_fee = _book("a", "0.002", bids=[("100.00", "1")], asks=[("100.00", "1")])
    no_fee = _book("b", "0", bids=[("99.95", "1")], asks=[("100.10", "1")])
    book = consolidate_for_sweep([dear_fee, no_fee], LOT)
    assert [(level.source, level.adjusted_price) for level in book.asks.levels()] == [
        ("b", D("100.10")), ("a", D("100.200"))]

    one = sweep_quantity(book.asks, D("1"))
    assert [(leg.source, leg.quantity) for leg in one.hedge_plan] == [("b", D("1"))]
    assert one.vwap == D("100.10")

    more = sweep_quantity(book.asks, D("1.5"))
    assert [(leg.source, leg.quantity, leg.vwap, leg.worst_price) for leg in more.hedge_plan] == [
        ("b", D("1"), D("100.10"), D("100.10")), ("a", D("0.5"), D("100.00"), D("100.00"))]
    assert more.notional == D("150.2")
    assert more.vwap == D("100.133333333333333334")  # 150.2/1.5, rounded up on asks
    # the worst raw price is b's 100.10, reached before a's cheaper raw level
    assert (more.worst_price, more.worst_raw_price) == (D("100.2"), D("100.10"))

    sold = sweep_quantity(book.bids, D("1"))  # b: 99.95 beats a: 100 * 0.998 = 99.8
    assert [(leg.source, leg.worst_price) for leg in sold.hedge_plan] == [("b", D("99.95"))]

    without_fees = consolidate_for_sweep([_book("a", "0", asks=[("100.00", "1")]),
                                          _book("b", "0", asks=[("100.10", "1")])], LOT)
    assert sweep_quantity(without_fees.asks, D("1")).hedge_plan[0].source == "a"


def test_exhausted_depth_raises_with_what_is_available() -> None:
    book = consolidate_for_sweep([_single_lp()], LOT)
    with pytest.raises(InsufficientDepth) as raised:
        sweep_quantity(book.asks, D("3.001"))
    error = raised.value
    assert isinstance(error, QuoteRefused)
    assert error.book_side == "ASK"
    assert error.requested_quantity == D("3.001")
    assert error.requested_quote_quantity is None
    assert error.available_quantity == D("3")
    assert error.available_quote_quantity == D("302.302")
    assert sweep_quantity(book.asks, D("3")).quantity == D("3")  # exactly the depth is fine

    with pytest.raises(InsufficientDepth) as empty:
        sweep_quantity(consolidate_for_sweep([], LOT).bids, D("1"))
    assert (empty.value.book_side, empty.value.available_quantity) == ("BID", D(0))


def test_depth_is_counted_in_whole_lots() -> None:
    book = consolidate_for_sweep([_book("a", "0", asks=[("100", "0.0015"), ("101", "0.0009")])],
                                 LOT)
    # 1.5 lots gives 1; 0.9 of a lot is not hedgeable
    assert [level.quantity for level in book.asks.levels()] == [D("0.001")]
    assert book.asks.available_quantity == D("0.001")
    with pytest.raises(InsufficientDepth):
        sweep_quantity(book.asks, D("0.002"))


def test_equal_adjusted_prices_go_by_source_then_level() -> None:
    book = consolidate_for_sweep([_book("z", "0", asks=[("100", "1"), ("100", "2")]),
                                  _book("m", "0", asks=[("100", "3")])], LOT)
    assert [(level.source, level.quantity) for level in book.asks.levels()] == [
        ("m", D("3")), ("z", D("1")), ("z", D("2"))]
    plan = sweep_quantity(book.asks, D("3.5")).hedge_plan
    assert [(leg.source, leg.quantity) for leg in plan] == [("m", D("3")), ("z", D("0.5"))]


def test_prices_that_share_a_float64_are_still_ordered_exactly() -> None:
    nudged = D("100.00000000000000001")
    assert float(nudged) == float(D(100))
    book = consolidate_for_sweep([_book("a", "0", bids=[("100", "1")], asks=[(str(nudged), "1")]),
                                  _book("b", "0", bids=[(str(nudged), "1")], asks=[("100", "1")])],
                                 LOT)
    assert [level.source for level in book.asks.levels()] == ["b", "a"]
    assert [level.source for level in book.bids.levels()] == ["b", "a"]
    assert sweep_quantity(book.asks, D("1")).hedge_plan[0].source == "b"
    assert sweep_quantity(book.asks, D("2")).notional == D(100) + nudged


def test_prepared_books_are_reused_as_they_are() -> None:
    prepared = prepare_lp_book(_single_lp(), LOT)
    assert (sweep_quantity(consolidate_for_sweep([prepared], LOT).asks, D("2.5"))
            == sweep_quantity(consolidate_for_sweep([_single_lp()], LOT).asks, D("2.5")))
    with pytest.raises(ValueError, match="lot size"):
        consolidate_for_sweep([prepared], D("0.01"))
    # one SweepBook serves many quotes: its arrays cannot be written to
    asks = consolidate_for_sweep([prepared], LOT).asks
    for array in (asks.cum_lots, asks.lp_index, asks.adjusted_price, asks.merged_order,
                  asks.ladder_ends, asks.level_index, asks.notional_estimate,
                  prepared.asks.lots):
        with pytest.raises(ValueError, match="read-only"):
            array[0] = 0


def test_the_quote_amount_search_settles_float_sums_exactly() -> None:
    # float64 sums 0.1 + 0.2 to 0.30000000000000004: the estimate stops a level early
    tiny = D("1e-18")
    asks = consolidate_for_sweep([_book("a", "0", asks=[("0.1", "1"), ("0.2", "1"),
                                                         ("0.3", "1")])], tiny).asks
    # 0.3 buys the first two units; 1e-17 more buys 33 lots of the third at 0.3
    assert quantity_for_quote_amount(asks, D("0.30000000000000001")) == D(2) + 33 * tiny
    assert quantity_for_quote_amount(asks, D("0.6")) == D(3)
    # and 0.1 + 0.7 to 0.7999999999999999: the estimate goes a level too far
    asks = consolidate_for_sweep([_book("a", "0", asks=[("0.1", "1"), ("0.7", "1"),
                                                         ("1", "1")])], D(1)).asks
    assert quantity_for_quote_amount(asks, D("0.79999999999999999")) == D(1)
    assert quantity_for_quote_amount(asks, D("0.8")) == D(2)


def test_quote_amount_solves_for_the_largest_whole_lot_quantity() -> None:
    asks = consolidate_for_sweep([_single_lp()], LOT).asks
    # 100.1 buys the first unit; 50.05 more buys 50.05 / 101.101 = 0.49505... -> 0.495
    assert quantity_for_quote_amount(asks, D("150.15")) == D("1.495")
    assert quantity_for_quote_amount(asks, D("201.201")) == D("2")
    assert quantity_for_quote_amount(asks, D("302.302")) == D("3")  # all of it, exactly
    assert quantity_for_quote_amount(asks, D("0.1")) == D("0")  # one lot costs 0.1001
    with pytest.raises(InsufficientDepth) as raised:
        quantity_for_quote_amount(asks, D("302.303"))
    assert raised.value.requested_quote_quantity == D("302.303")
    assert raised.value.available_quote_quantity == D("302.302")
    assert raised.value.available_quantity == D("3")
    with pytest.raises(InsufficientDepth) as empty:
        quantity_for_quote_amount(consolidate_for_sweep([], LOT).asks, D("1"))
    assert (empty.value.available_quantity, empty.value.available_quote_quantity) == (D(0), D(0))
    # bids: 98.901 for the first unit, then 97.902 a unit
    bids = consolidate_for_sweep([_single_lp()], LOT).bids
    assert quantity_for_quote_amount(bids, D("147.852")) == D("1.5")


def test_inputs_are_checked() -> None:
    book = consolidate_for_sweep([_single_lp()], LOT)
    with pytest.raises(ValueError, match="multiple"):
        sweep_quantity(book.asks, D("1.0005"))
    with pytest.raises(ValueError, match="multiple"):
        sweep_quantity(book.asks, D("0"))
    with pytest.raises(ValueError, match="positive"):
        quantity_for_quote_amount(book.asks, D("-1"))
    with pytest.raises(ValueError, match="source"):
        consolidate_for_sweep([_single_lp(), _single_lp()], LOT)
    with pytest.raises(ValueError, match="fee"):
        consolidate_for_sweep([_book("a", "1", asks=[("100", "1")])], LOT)
    with pytest.raises(ValueError, match="positive"):
        consolidate_for_sweep([_book("a", "0", asks=[("0", "1")])], LOT)
    with pytest.raises(ValueError, match="negative"):
        consolidate_for_sweep([_book("a", "0", bids=[("1", "-1")])], LOT)
    with pytest.raises(ValueError, match="lot_size"):
        consolidate_for_sweep([_single_lp()], D(0))


def test_results_do_not_depend_on_the_callers_decimal_context() -> None:
    book = _book("a", "0.00075", asks=[("65000.12345678", "0.12345678"), ("65001", "3")])
    expected = sweep_quantity(consolidate_for_sweep([book], D("0.00000001")).asks, D("1"))
    with localcontext() as context:
        context.prec = 6
        assert sweep_quantity(consolidate_for_sweep([book], D("0.00000001")).asks,
                              D("1")) == expected
    # bids whose prices share a float64 are ordered exactly in any context: the better first
    bids = [_book("a", "0", bids=[("1.00000000000000001", "1")]),
            _book("b", "0", bids=[("1.00000000000000002", "1")])]
    expected = sweep_quantity(consolidate_for_sweep(bids, LOT).bids, D("1"))
    assert expected.hedge_plan[0].source == "b"
    with localcontext() as context:
        context.prec = 6
        assert sweep_quantity(consolidate_for_sweep(bids, LOT).bids, D("1")) == expected


# Properties: the sweep against a plain Decimal walk of the same levels, best first.

FEES = ["0", "0.0005", "0.001", "0.002", "0.0075"]
LOTS = [D("0.001"), D("0.01"), D("0.0001")]
EXACT_ENOUGH = Context(prec=200)


@st.composite
def lp_books(draw: st.DrawFn, deep: bool = False) -> list[LpBook]:
    """1-4 LPs; prices in cents, some nudged by 1e-17 so that distinct prices share a float64.

    `deep`: 3-4 LPs of 12-20 levels a side, so that a merged side runs past the levels a BookSide
    keeps as Python ints.
    """
    books = []
    for number in range(draw(st.integers(3, 4) if deep else st.integers(1, 4))):
        levels = st.lists(st.tuples(st.integers(1, 60), st.integers(0, 2), st.integers(0, 30000)),
                          min_size=12 if deep else 0, max_size=20 if deep else 8)
        bids = [(D(9000 + tick) / 100 + D(nudge) / 10**17, D(quantity) / 10000)
                for tick, nudge, quantity in draw(levels)]
        asks = [(D(10000 + tick) / 100 + D(nudge) / 10**17, D(quantity) / 10000)
                for tick, nudge, quantity in draw(levels)]
        books.append(LpBook(f"lp{number}", "PAPER", D(draw(st.sampled_from(FEES))), bids, asks))
    return books


def _reference_walk(books: list[LpBook], lot: D, is_ask: bool, quantity: D
                    ) -> tuple[D, D, D, D, dict[str, D], dict[str, D]]:
    """notional, raw notional, worst adjusted, worst raw, quantity and worst raw price per LP."""
    levels = []
    for book in books:
        factor = 1 + book.taker_fee if is_ask else 1 - book.taker_fee
        for number, (price, size) in enumerate(book.asks if is_ask else book.bids):
            usable = (size // lot) * lot
            if usable:
                adjusted = price * factor
                levels.append((adjusted if is_ask else -adjusted, book.source, number, price,
                               usable))
    levels.sort()
    left, notional, raw_notional = quantity, D(0), D(0)
    worst_adjusted, worst_raw = D(0), D(0)
    taken: dict[str, D] = {}
    worst_by_lp: dict[str, D] = {}
    for key, source, _, price, usable in levels:
        if not left:
            break
        take = min(left, usable)
        left -= take
        notional += abs(key) * take
        raw_notional += price * take
        worst_adjusted = abs(key)
        worst_raw = price if not worst_raw else (max if is_ask else min)(worst_raw, price)
        taken[source] = taken.get(source, D(0)) + take
        worst_by_lp[source] = price
    assert not left
    return notional, raw_notional, worst_adjusted, worst_raw, taken, worst_by_lp


@given(st.booleans().flatmap(lp_books), st.sampled_from(LOTS), st.booleans(),
       st.integers(1, 1000))
def test_the_sweep_matches_a_plain_decimal_walk(books: list[LpBook], lot: D, is_ask: bool,
                                                permille: int) -> None:
    side: BookSide = getattr(consolidate_for_sweep(books, lot), "asks" if is_ask else "bids")
    if not side.available_quantity:
        return
    with localcontext(EXACT_ENOUGH):  # the reference's arithmetic must not round
        quantity = max(lot, (side.available_quantity * permille / 1000 // lot) * lot)
        swept = sweep_quantity(side, quantity)
        notional, raw_notional, worst, worst_raw, taken, worst_by_lp = _reference_walk(
            books, lot, is_ask, quantity)
        assert (swept.notional, swept.raw_notional) == (notional, raw_notional)
        assert (swept.worst_price, swept.worst_raw_price) == (worst, worst_raw)
        assert {leg.source: leg.quantity for leg in swept.hedge_plan} == taken
        assert {leg.source: leg.worst_price for leg in swept.hedge_plan} == worst_by_lp
        assert sum((leg.quantity for leg in swept.hedge_plan), D(0)) == quantity
        # VWAPs are the exact quotient rounded to 1e-18 against the dealer
        for vwap, total in ((swept.vwap, notional), (swept.raw_vwap, raw_notional)):
            assert vwap == vwap.quantize(VWAP_QUANTUM)
            if is_ask:
                assert vwap * quantity >= total > (vwap - VWAP_QUANTUM) * quantity
            else:
                assert vwap * quantity <= total < (vwap + VWAP_QUANTUM) * quantity


@given(st.booleans().flatmap(lp_books), st.sampled_from(LOTS), st.booleans(),
       st.integers(1, 1100))
def test_the_quote_amount_quantity_is_the_largest_affordable(
        books: list[LpBook], lot: D, is_ask: bool, permille: int) -> None:
    side: BookSide = getattr(consolidate_for_sweep(books, lot), "asks" if is_ask else "bids")
    # an amount from a thousandth of the side's worth to a tenth more than it, in cents
    amount = max(D("0.01"), (side.available_quote_quantity * permille / 1000).quantize(D("0.01")))
    if side.available_quote_quantity < amount:
        with pytest.raises(InsufficientDepth):
            quantity_for_quote_amount(side, amount)
        return
    quantity = quantity_for_quote_amount(side, amount)
    assert quantity % lot == 0
    if quantity:
        assert sweep_quantity(side, quantity).notional <= amount
    if quantity < side.available_quantity:
        assert sweep_quantity(side, quantity + lot).notional > amount


def _three_ladders(third_fee: str) -> list[LpBook]:
    """Three LPs of 20 levels a side (60 merged levels), each with its own step and fee."""
    return [_book(source, fee,
                  bids=[(str(95 - level * step), "0.5") for level in range(20)],
                  asks=[(str(105 + level * step), "0.5") for level in range(20)])
            for source, fee, step in (("a", "0", 1), ("b", "0.001", 2), ("c", third_fee, 3))]


def test_sweeps_that_end_on_a_level_boundary_match_the_walk_at_any_depth() -> None:
    # three LPs of 20 levels: 60 merged levels, past the first ones a side keeps as Python ints
    books = _three_ladders("0.002")
    book = consolidate_for_sweep(books, LOT)
    for is_ask, side in ((True, book.asks), (False, book.bids)):
        assert side.cum_lots.size == 60
        total = side.cum_lots.tolist()[-1]
        for boundary in side.cum_lots.tolist():
            # the sweep that ends on the boundary, and those one lot short of it and past it
            for lots in (boundary - 1, boundary, boundary + 1):
                if not 0 < lots <= total:
                    continue
                quantity = lots * LOT
                swept = sweep_quantity(side, quantity)
                with localcontext(EXACT_ENOUGH):
                    notional, raw_notional, worst, worst_raw, taken, worst_by_lp = \
                        _reference_walk(books, LOT, is_ask, quantity)
                assert (swept.notional, swept.raw_notional) == (notional, raw_notional)
                assert (swept.worst_price, swept.worst_raw_price) == (worst, worst_raw)
                assert {leg.source: leg.quantity for leg in swept.hedge_plan} == taken
                assert {leg.source: leg.worst_price for leg in swept.hedge_plan} == worst_by_lp
                # the exact notional of a quantity buys exactly that quantity
                assert quantity_for_quote_amount(side, notional) == quantity
        with pytest.raises(InsufficientDepth):
            sweep_quantity(side, (total + 1) * LOT)


def test_a_merged_side_too_deep_to_count_in_int64_is_refused() -> None:
    # each LP holds 2**62 lots of 1e-18, within the limit of one book; together they pass it
    lot = D("1e-18")
    books = [_book(source, "0", asks=[("100", str(2**62 * lot))]) for source in ("a", "b")]
    assert consolidate_for_sweep(books[:1], lot).asks.available_quantity == 2**62 * lot
    with pytest.raises(ValueError, match="too many lots"):
        consolidate_for_sweep(books, lot)


def _fingerprint(swept: object) -> str:
    return repr(swept)  # Decimals by their digits and exponent: equal means bit-identical


def test_a_side_reused_by_many_sweeps_gives_what_a_fresh_side_gives() -> None:
    # what sweeps ending in a level share is kept with the side: a sweep on a side many sweeps
    # used must equal, digit for digit, the same sweep on a side just merged
    books = _three_ladders("0.0015")
    shared = consolidate_for_sweep(books, LOT)
    for is_ask in (True, False):
        side = shared.asks if is_ask else shared.bids
        total = side.cum_lots.tolist()[-1]
        for lots in [*range(1, total + 1, 7), *range(total, 0, -5)]:
            fresh = consolidate_for_sweep(books, LOT)
            fresh_side = fresh.asks if is_ask else fresh.bids
            assert _fingerprint(sweep_quantity(side, lots * LOT)) == _fingerprint(
                sweep_quantity(fresh_side, lots * LOT))


def test_a_new_book_is_swept_on_its_own_levels() -> None:
    # the shared part of a sweep lives with the merged side, so a new book starts afresh
    before = consolidate_for_sweep([_single_lp()], LOT)
    # 1 at 100 * 1.001 and 0.5 at 101 * 1.001, rounded up
    assert sweep_quantity(before.asks, D("1.5")).vwap == D("100.433666666666666667")
    changed = _book("a", "0.001", asks=[("200", "1"), ("201", "2")])
    after = consolidate_for_sweep([changed], LOT)
    assert sweep_quantity(after.asks, D("1.5")).vwap == D("200.533666666666666667")


@given(st.booleans().flatmap(lp_books), st.sampled_from(LOTS), st.booleans(),
       st.integers(1, 1000), st.integers(1, 3), st.integers(0, 999))
def test_vwaps_kept_with_a_level_are_the_sweeps_own_quotients(
        books: list[LpBook], lot: D, is_ask: bool, permille: int, levels: int,
        finer: int) -> None:
    # a sweep ending in the first merged level (or in the first level of that level's LP)
    # takes its VWAPs from the level: they must be the quotients a sweep works out, digit for
    # digit, whatever it takes of the level
    # raw prices finer than a VWAP too, so that raw VWAPs round
    books = [replace(book, bids=[(price + D(finer) / 10**21, size) for price, size in book.bids],
                     asks=[(price + D(finer) / 10**21, size) for price, size in book.asks])
             for book in books]
    side: BookSide = getattr(consolidate_for_sweep(books, lot), "asks" if is_ask else "bids")
    if not side.available_quantity:
        return
    # mostly sweeps ending in the first levels, where the kept VWAPs are used
    within = side.cum_lots.tolist()[min(levels, len(side.cum_lots)) - 1]
    wanted = max(1, within * permille // 1000)
    swept = sweep_quantity(side, wanted * lot)
    divide, quantize = (_divide_up, _quantize_up) if is_ask else (_divide_down, _quantize_down)
    for vwap, total in ((swept.vwap, swept.notional), (swept.raw_vwap, swept.raw_notional)):
        assert vwap.as_tuple() == quantize(divide(total, swept.quantity), VWAP_QUANTUM).as_tuple()
    for leg in swept.hedge_plan:
        # each leg's raw notional, from the reference walk's levels of its LP
        book = next(book for book in books if book.source == leg.source)
        left, raw = leg.quantity, D(0)
        with localcontext(EXACT_ENOUGH):  # the reference's arithmetic must not round
            for price, size in sorted(book.asks if is_ask else book.bids,
                                      key=lambda level: level[0], reverse=not is_ask):
                take = min(left, size // lot * lot)
                left, raw = left - take, raw + price * take
        assert not left
        assert leg.vwap.as_tuple() == quantize(divide(raw, leg.quantity), VWAP_QUANTUM).as_tuple()


@pytest.mark.parametrize("lot", ["0.001", "0.5", "10", "1E+1", "1E+2"])
@pytest.mark.parametrize("price", ["100", "1E+2", "100.25", "2E+3"])
@pytest.mark.parametrize("fee", ["0", "0.001"])
def test_a_sweep_of_the_first_level_sums_as_from_zero(lot: str, price: str, fee: str) -> None:
    # a sweep ending in the first merged level skips adding the zero before it where that
    # changes nothing: its sums must be 0 + price * quantity, exponent included
    lot_size = D(lot)
    book = consolidate_for_sweep([_book("a", fee, bids=[(price, "1E+4")], asks=[(price, "1E+4")])],
                                 lot_size)
    exact = Context(prec=200)
    for is_ask in (True, False):
        factor = exact.add(1, D(fee)) if is_ask else exact.subtract(1, D(fee))
        for lots in (1, 3, 7):
            quantity = exact.multiply(lots, lot_size)
            swept = sweep_quantity(book.asks if is_ask else book.bids, quantity)
            assert swept.notional.as_tuple() == exact.add(D(0), exact.multiply(
                exact.multiply(D(price), factor), quantity)).as_tuple()
            assert swept.raw_notional.as_tuple() == exact.add(
                D(0), exact.multiply(D(price), quantity)).as_tuple()
