"""Sweeps of the consolidated book: VWAP, worst price and the per-LP hedge plan of a size.

Pure: no I/O, no clock. Three steps, each done as rarely as its input changes:

1. `prepare_lp_book(book, lot_size)`, once per LP book update: each side's levels best first by
   fee-adjusted price (buying costs price * (1 + fee), selling earns price * (1 - fee)), counted in
   whole lots, with exact Decimal prefix sums of lots and of fee-adjusted and raw notional.
2. `consolidate_for_sweep(books, lot_size)`, per set of LP books: a `SweepBook` whose sides are
   merged across LPs on first use (numpy: one stable argsort of float64 keys), best first; equal
   prices go by LP source id, then by the LP's own level order.
3. `sweep_quantity` / `quantity_for_quote_amount`: a binary search on the merged cumulative lots
   and, per LP, one lookup in its prefix sums, whatever the depth crossed.

Exactness. Quantities are whole lots of the instrument (a level's sub-lot remainder cannot be
quoted or hedged, so it is left out) and are integers. float64 only orders levels across LPs and
estimates where a quote amount runs out: adjacent levels whose float keys are equal are re-ordered
by their exact Decimal prices, and the amount estimate is settled with exact sums, so the result
equals an all-Decimal sweep. Every number returned comes from the exact Decimal prefix sums
(computed in a context of unlimited precision, whatever the caller's decimal context). The only
rounding is a VWAP's division, to VWAP_QUANTUM against the dealer: up on asks (a hedge purchase
never looks cheaper), down on bids (hedge proceeds never look larger).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import (
    MAX_EMAX,
    MAX_PREC,
    MIN_EMIN,
    ROUND_CEILING,
    ROUND_FLOOR,
    Context,
    Decimal,
    DivisionByZero,
    InvalidOperation,
    Overflow,
    localcontext,
)
from itertools import accumulate
from operator import mul
from typing import Literal, NamedTuple, TypeVar

import numpy as np
import numpy.typing as npt

from pricing.book import Level, LpBook
from pricing.errors import InsufficientDepth

HedgeSide = Literal["BUY", "SELL"]
IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
ArrayT = TypeVar("ArrayT", IntArray, FloatArray)

# Products and sums of finite decimals are exact at this precision; nothing divides in it except
# integer division, so it never has to expand a repeating fraction.
EXACT = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN,
                traps=[InvalidOperation, DivisionByZero, Overflow])
# Divisions round in a stated direction at 80 digits and are then quantized the same way, which is
# exactly the directed rounding of the true quotient.
DIVIDE_UP = Context(prec=80, rounding=ROUND_CEILING, traps=[InvalidOperation, DivisionByZero])
DIVIDE_DOWN = Context(prec=80, rounding=ROUND_FLOOR, traps=[InvalidOperation, DivisionByZero])
# The operations as bound methods: looking a method up on a Context costs more than the
# operation itself on numbers this small, and a sweep performs dozens.
_mul, _add, _sub = EXACT.multiply, EXACT.add, EXACT.subtract
_divide_up, _quantize_up = DIVIDE_UP.divide, DIVIDE_UP.quantize
_divide_down, _quantize_down = DIVIDE_DOWN.divide, DIVIDE_DOWN.quantize
VWAP_QUANTUM = Decimal("1e-18")  # the wire format's finest decimal
_MAX_LOTS = 2**62  # an LP side's lot count, and a merged side's, stay inside int64
_ZERO = Decimal(0)
# Up to this many merged levels, counting each LP's levels in a Python loop beats numpy's call.
_COUNT_IN_PYTHON = 32
# A side keeps this many of its first merged levels as Python ints (see BookSide): one more than
# `_levels_before` counts in Python, since a sweep also reads the LP of the level it ends in.
_HEAD = _COUNT_IN_PYTHON + 1


@dataclass(frozen=True, slots=True, eq=False)  # arrays inside: compared by identity
class LpLadder:
    """One side of one LP's book: whole-lot levels, best first, with inclusive prefix sums."""

    adjusted_price: tuple[Decimal, ...]
    raw_price: tuple[Decimal, ...]
    cum_lots: tuple[int, ...]
    cum_notional: tuple[Decimal, ...]  # fee-adjusted, quote currency
    cum_raw_notional: tuple[Decimal, ...]
    merge_keys: FloatArray  # float64 adjusted prices, negated on bids: ascending is best first
    lots: IntArray


@dataclass(frozen=True, slots=True, eq=False)
class PreparedLpBook:
    """An LP book ready to merge, counted in lots of `lot_size`."""

    source: str
    lot_size: Decimal
    bids: LpLadder
    asks: LpLadder


@dataclass(frozen=True, slots=True)
class SweepLevel:
    """One merged level, exact: who quotes it, at what raw and fee-adjusted price, how much."""

    source: str
    raw_price: Decimal
    adjusted_price: Decimal
    quantity: Decimal


class _DerivedArrays:
    __slots__ = ("level_index", "notional_estimate", "sweep_ends")

    def __init__(self) -> None:
        self.level_index: IntArray | None = None
        self.notional_estimate: FloatArray | None = None
        self.sweep_ends: dict[int, _SweepEnd] = {}  # by merged level, as sweeps end there


@dataclass(frozen=True, slots=True, eq=False)
class BookSide:
    """One side of the consolidated book, merged best first.

    Merged level i is a level of LP `sources[lp_index[i]]` at the fee-adjusted price
    `adjusted_price[i]` (float64, for searching and display; exact values live in the ladders);
    `lots[i]` is its size in lots and `cum_lots[i]` counts the lots of levels 0..i. `lp_order`
    lists the LPs present by their best level. `cum_lots_head` and `lp_index_head` hold the first
    _HEAD entries of `cum_lots` and `lp_index` as Python ints: most sweeps end there, and reading a
    few ints is cheaper than a numpy call, while converting the whole side would cost more than
    the sweep. `merged_order` is each merged level's position in the LP ladders laid end to end,
    and `ladder_ends` where each ladder ends in that layout (both empty when the side is).
    """

    is_ask: bool
    lot_size: Decimal
    sources: tuple[str, ...]
    ladders: tuple[LpLadder, ...]
    adjusted_price: FloatArray
    lp_index: IntArray
    lots: IntArray
    cum_lots: IntArray
    lp_order: tuple[int, ...]
    cum_lots_head: tuple[int, ...]
    lp_index_head: tuple[int, ...]
    merged_order: IntArray
    ladder_ends: IntArray
    # arrays derived on first use, held apart since the dataclass is frozen (and
    # functools.cached_property needs an instance __dict__ and, before 3.12, locks every read)
    _derived: _DerivedArrays = field(init=False, default_factory=_DerivedArrays, repr=False)

    @property
    def name(self) -> Literal["BID", "ASK"]:
        return "ASK" if self.is_ask else "BID"

    @property
    def available_quantity(self) -> Decimal:
        """Whole-lot depth of the side, base currency."""
        lots = int(self.cum_lots[-1]) if self.cum_lots.size else 0
        return EXACT.multiply(Decimal(lots), self.lot_size)

    @property
    def best_price(self) -> Decimal | None:
        """The best fee-adjusted price, exact; None when the side is empty."""
        return self.ladders[self.lp_order[0]].adjusted_price[0] if self.lp_order else None

    @property
    def available_quote_quantity(self) -> Decimal:
        """Fee-adjusted notional of the whole side, quote currency."""
        return _notional_before(self, [len(ladder.cum_lots) for ladder in self.ladders])

    @property
    def level_index(self) -> IntArray:
        """Merged level i is level `level_index[i]` of its LP's ladder."""
        derived = self._derived
        if derived.level_index is None:
            starts = np.concatenate(([0], self.ladder_ends[:-1]))
            derived.level_index = _read_only(self.merged_order - starts[self.lp_index])
        return derived.level_index

    @property
    def notional_estimate(self) -> FloatArray:
        """float64 cumulative fee-adjusted notional: where a quote amount runs out, roughly."""
        derived = self._derived
        if derived.notional_estimate is None:
            derived.notional_estimate = _read_only(
                (self.adjusted_price * self.lots).cumsum() * float(self.lot_size))
        return derived.notional_estimate

    def levels(self) -> tuple[SweepLevel, ...]:
        """The merged levels, best first, as exact Decimals."""
        out = []
        for lp, level in zip(self.lp_index.tolist(), self.level_index.tolist(), strict=True):
            ladder = self.ladders[lp]
            lots = ladder.cum_lots[level] - (ladder.cum_lots[level - 1] if level else 0)
            out.append(SweepLevel(self.sources[lp], ladder.raw_price[level],
                                  ladder.adjusted_price[level],
                                  EXACT.multiply(Decimal(lots), self.lot_size)))
        return tuple(out)


class SweepBook:
    """The consolidated book of one instrument in lots of `lot_size`; a side merges on first use.

    Immutable once built (the merge is memoised), so one SweepBook can price any number of quotes.
    """

    __slots__ = ("_asks", "_bids", "_books", "lot_size", "sources")

    def __init__(self, books: Sequence[PreparedLpBook], lot_size: Decimal) -> None:
        self._books = tuple(sorted(books, key=lambda book: book.source))
        self.lot_size = lot_size
        self.sources = tuple(book.source for book in self._books)
        self._bids: BookSide | None = None
        self._asks: BookSide | None = None

    @property
    def bids(self) -> BookSide:
        if self._bids is None:
            self._bids = _merge(self.sources, tuple(b.bids for b in self._books), self.lot_size,
                                is_ask=False)
        return self._bids

    @property
    def asks(self) -> BookSide:
        if self._asks is None:
            self._asks = _merge(self.sources, tuple(b.asks for b in self._books), self.lot_size,
                                is_ask=True)
        return self._asks


# The results of a sweep are NamedTuples (immutable, compared by value) rather than frozen
# dataclasses: several are made per quote, and a frozen dataclass pays a call of
# object.__setattr__ for each field.
class HedgeLeg(NamedTuple):
    """What one LP fills in a sweep: quantity, its raw VWAP and its worst raw price."""

    source: str
    quantity: Decimal
    vwap: Decimal
    worst_price: Decimal


class Sweep(NamedTuple):
    """The result of sweeping one side for `quantity` base.

    `notional` and `raw_notional` are exact (with and without taker fees); the VWAPs are rounded
    to VWAP_QUANTUM against the dealer; `hedge_plan` quantities sum exactly to `quantity`, LPs in
    the order of their best level.
    """

    hedge_side: HedgeSide  # BUY when sweeping asks
    quantity: Decimal
    notional: Decimal
    raw_notional: Decimal
    vwap: Decimal
    raw_vwap: Decimal
    worst_price: Decimal
    worst_raw_price: Decimal
    hedge_plan: tuple[HedgeLeg, ...]


class _SweepEnd(NamedTuple):
    """What every sweep that ends in one merged level shares, whatever it takes of that level.

    The levels before it are taken in full, so the legs of the other LPs, the sums of the full
    levels and both worst prices depend on the level alone: worked out once per level of a side
    (`_sweep_end`), a sweep adds only what it takes of the last level.
    """

    lots_before: int  # the lots of the merged levels before this one
    source: str  # the LP of this level
    raw_price: Decimal  # this level's, exact
    # one lot's worth at this level, fee-adjusted and raw: a sweep multiplies them by the lots
    # it takes (the same exact product as the price times the quantity taken)
    adjusted_lot_price: Decimal
    raw_lot_price: Decimal
    lp_lots: int  # what the LP of this level has in the levels before it
    lp_raw_notional: Decimal
    # of the levels before, fee-adjusted and raw; None before the first merged level when a
    # sweep's sum is its product of this level as it is (see _sweep_end)
    notional: Decimal | None
    raw_notional: Decimal | None
    legs_before: tuple[HedgeLeg, ...]  # the other LPs' legs, in the order of the hedge plan
    legs_after: tuple[HedgeLeg, ...]
    worst_price: Decimal
    worst_raw_price: Decimal
    # VWAPs that do not depend on what a sweep takes of this level, worked out once (from one
    # lot: a VWAP is the directed rounding of the exact quotient, the same for any take). The
    # leg's of this level's LP when it has nothing before it (this is its first level); the
    # sweep's, fee-adjusted and raw, when nothing comes before this level (the first merged
    # level): else None.
    lp_vwap: Decimal | None
    vwap: Decimal | None
    raw_vwap: Decimal | None


def _read_only(array: ArrayT) -> ArrayT:
    array.setflags(write=False)  # a SweepBook is shared by every quote priced on it
    return array


def _check_lot_size(lot_size: Decimal) -> None:
    if not isinstance(lot_size, Decimal) or not lot_size.is_finite() or lot_size <= 0:
        raise ValueError(f"lot_size must be a positive Decimal, not {lot_size!r}")


def prepare_lp_book(book: LpBook, lot_size: Decimal) -> PreparedLpBook:
    """Count `book` in whole lots of `lot_size`, best first, with exact prefix sums.

    Prices must be positive, quantities non-negative and the taker fee in (-1, 1); levels holding
    less than one lot are left out.
    """
    _check_lot_size(lot_size)
    fee = book.taker_fee
    if not fee.is_finite() or not -1 < fee < 1:
        raise ValueError(f"taker fee of {book.source} must be in (-1, 1)")
    with localcontext(EXACT):
        bids = _ladder(book.source, book.bids, 1 - fee, lot_size, is_ask=False)
        asks = _ladder(book.source, book.asks, 1 + fee, lot_size, is_ask=True)
    return PreparedLpBook(book.source, lot_size, bids=bids, asks=asks)


def _ladder(source: str, levels: Sequence[Level], factor: Decimal, lot_size: Decimal, *,
            is_ask: bool) -> LpLadder:
    """Runs in the EXACT context."""
    rows: list[tuple[Decimal, int, Decimal, Decimal, int]] = []
    for level_no, (price, quantity) in enumerate(levels):
        if not price.is_finite() or price <= 0:
            raise ValueError(f"{source}: price {price} is not positive")
        if not quantity.is_finite() or quantity < 0:
            raise ValueError(f"{source}: quantity {quantity} is negative")
        lots = int(quantity // lot_size)
        if lots:
            adjusted = price * factor
            rows.append((adjusted if is_ask else -adjusted, level_no, price, adjusted, lots))
    if not rows:
        return LpLadder((), (), (), (), (), _read_only(np.empty(0, np.float64)),
                        _read_only(np.empty(0, np.int64)))
    rows.sort()  # books come best first; sorting makes it a guarantee
    keys, _, raw_price, adjusted_price, lots_column = zip(*rows, strict=True)
    usable = [lots * lot_size for lots in lots_column]
    cum_lots = tuple(accumulate(lots_column))
    if cum_lots[-1] > _MAX_LOTS:
        raise ValueError(f"{source}: too many lots of {lot_size} in one side")
    return LpLadder(
        adjusted_price, raw_price, cum_lots,
        cum_notional=tuple(accumulate(map(mul, adjusted_price, usable))),
        cum_raw_notional=tuple(accumulate(map(mul, raw_price, usable))),
        merge_keys=_read_only(np.fromiter(map(float, keys), np.float64, len(keys))),
        lots=_read_only(np.array(lots_column, dtype=np.int64)),
    )


def consolidate_for_sweep(books: Sequence[LpBook | PreparedLpBook], lot_size: Decimal
                          ) -> SweepBook:
    """A SweepBook of `books` (LpBooks are prepared here; prepared ones must use `lot_size`)."""
    _check_lot_size(lot_size)
    prepared: list[PreparedLpBook] = []
    sources: set[str] = set()
    bid_lots = ask_lots = 0  # the merged sides' depth: their cumulative lots are int64 too
    for book in books:  # one pass: this runs for the first quote after any LP book update
        if not isinstance(book, PreparedLpBook):
            book = prepare_lp_book(book, lot_size)
        elif book.lot_size != lot_size:
            raise ValueError(f"every LP book must be prepared with the lot size {lot_size}")
        prepared.append(book)
        sources.add(book.source)
        if book.bids.cum_lots:
            bid_lots += book.bids.cum_lots[-1]
        if book.asks.cum_lots:
            ask_lots += book.asks.cum_lots[-1]
    if len(sources) != len(prepared):
        raise ValueError("each LP book needs its own source")
    if max(bid_lots, ask_lots) > _MAX_LOTS:
        raise ValueError(f"too many lots of {lot_size} in one merged side")
    return SweepBook(prepared, lot_size)


def _merge(sources: tuple[str, ...], ladders: tuple[LpLadder, ...], lot_size: Decimal, *,
           is_ask: bool) -> BookSide:
    present = [lp for lp, ladder in enumerate(ladders) if ladder.cum_lots]
    if not present:
        no_levels = _read_only(np.empty(0, np.int64))
        return BookSide(is_ask, lot_size, sources, ladders, _read_only(np.empty(0, np.float64)),
                        no_levels, no_levels, no_levels, (), (), (), no_levels, no_levels)
    ends = np.fromiter(accumulate(len(ladder.cum_lots) for ladder in ladders), np.int64,
                       len(ladders))
    keys = np.concatenate([ladder.merge_keys for ladder in ladders])
    # ladders are in source order and each is best first, so a stable sort breaks equal keys
    # by source, then by level
    order = keys.argsort(kind="stable")  # methods: the np.* functions add a Python wrapper call
    sorted_keys = keys[order]
    equal = (sorted_keys[1:] == sorted_keys[:-1]).nonzero()[0]
    if equal.size:
        _order_ties_exactly(order, equal, ends, ladders, is_ask)
        sorted_keys = keys[order]
    lp_index = ends.searchsorted(order, side="right")
    lots = np.concatenate([ladder.lots for ladder in ladders])[order]
    cum_lots = lots.cumsum()

    def best_level(lp: int) -> tuple[Decimal, int]:
        adjusted = ladders[lp].adjusted_price[0]
        return (adjusted if is_ask else EXACT.minus(adjusted), lp)

    return BookSide(
        is_ask, lot_size, sources, ladders,
        adjusted_price=_read_only(sorted_keys if is_ask else -sorted_keys),
        lp_index=_read_only(lp_index),
        lots=_read_only(lots),
        cum_lots=_read_only(cum_lots),
        # the merge is exact, so LPs come in the order of their exact best prices
        lp_order=tuple(sorted(present, key=best_level)),
        cum_lots_head=tuple(cum_lots[:_HEAD].tolist()),
        lp_index_head=tuple(lp_index[:_HEAD].tolist()),
        merged_order=_read_only(order),
        ladder_ends=_read_only(ends),
    )


def _cum_lots_at(side: BookSide, position: int) -> int:
    head = side.cum_lots_head
    return head[position] if position < len(head) else int(side.cum_lots[position])


def _lp_at(side: BookSide, position: int) -> int:
    head = side.lp_index_head
    return head[position] if position < len(head) else int(side.lp_index[position])


def _order_ties_exactly(order: npt.NDArray[np.intp], equal: npt.NDArray[np.intp],
                        ends: IntArray, ladders: tuple[LpLadder, ...], is_ask: bool) -> None:
    """Re-sort, in place, each run of equal float keys by exact price, source, then level."""

    def exact_key(position: int) -> tuple[Decimal, int, int]:
        lp = int(ends.searchsorted(position, side="right"))
        level = position - (int(ends[lp - 1]) if lp else 0)
        adjusted = ladders[lp].adjusted_price[level]
        return (adjusted if is_ask else EXACT.minus(adjusted), lp, level)

    run_starts = [int(equal[0])]
    run_ends = []
    for previous, current in zip(equal[:-1].tolist(), equal[1:].tolist(), strict=True):
        if current != previous + 1:
            run_ends.append(previous + 2)
            run_starts.append(current)
    run_ends.append(int(equal[-1]) + 2)
    for start, end in zip(run_starts, run_ends, strict=True):
        order[start:end] = sorted(order[start:end].tolist(), key=exact_key)


def lots_in(quantity: Decimal, lot_size: Decimal) -> int:
    """`quantity` in whole lots, rounded down (quantities are never negative)."""
    if not quantity.is_finite() or quantity < 0:
        raise ValueError(f"quantity {quantity} must be a finite non-negative amount")
    return int(EXACT.divide_int(quantity, lot_size))


def _exponent(value: Decimal) -> int:
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)  # finite
    return exponent


def _vwap(notional: Decimal, quantity: Decimal, is_ask: bool) -> Decimal:
    """notional / quantity, rounded to VWAP_QUANTUM against the dealer."""
    if is_ask:
        return _quantize_up(_divide_up(notional, quantity), VWAP_QUANTUM)
    return _quantize_down(_divide_down(notional, quantity), VWAP_QUANTUM)


def _levels_before(side: BookSide, position: int) -> list[int]:
    """How many levels of each LP come before merged level `position` (always a prefix)."""
    if position <= _COUNT_IN_PYTHON:  # the usual sweep ends in the first levels
        counts = [0] * len(side.ladders)
        for lp in side.lp_index_head[:position]:
            counts[lp] += 1
        return counts
    deep: list[int] = np.bincount(side.lp_index[:position],
                                  minlength=len(side.ladders)).tolist()
    return deep


def _notional_before(side: BookSide, counts: list[int]) -> Decimal:
    total = _ZERO
    for ladder, count in zip(side.ladders, counts, strict=True):
        if count:
            total = _add(total, ladder.cum_notional[count - 1])
    return total


def _level_notional(ladder: LpLadder, level: int) -> Decimal:
    if not level:
        return ladder.cum_notional[0]
    return _sub(ladder.cum_notional[level], ladder.cum_notional[level - 1])


def sweep_quantity(side: BookSide, quantity: Decimal) -> Sweep:
    """Sweep `side` best first for `quantity` base, a positive whole number of lots.

    Raises InsufficientDepth (carrying the side's whole-lot depth) when the side holds less.
    """
    wanted = lots_in(quantity, side.lot_size)
    if wanted == 0 or _mul(Decimal(wanted), side.lot_size) != quantity:
        raise ValueError(f"quantity {quantity} must be a positive multiple of {side.lot_size}")
    return sweep_lots(side, wanted, quantity)


def sweep_lots(side: BookSide, wanted: int, quantity: Decimal) -> Sweep:
    """`sweep_quantity` of a quantity already counted: `quantity` is exactly `wanted` lots, and
    `wanted` is positive (unchecked: the caller worked them out)."""
    head = side.cum_lots_head
    if head and head[-1] >= wanted:
        last = bisect_left(head, wanted)  # the merged level the sweep ends in
    elif not head or int(side.cum_lots[-1]) < wanted:
        raise InsufficientDepth(side.name, side.available_quantity,
                                side.available_quote_quantity, requested_quantity=quantity)
    else:
        last = int(side.cum_lots.searchsorted(wanted))
    end = side._derived.sweep_ends.get(last)
    if end is None:
        end = side._derived.sweep_ends[last] = _sweep_end(side, last)
    (lots_before, source, raw_price, adjusted_lot_price, raw_lot_price, lp_lots,
     lp_raw_notional, notional, raw_notional, legs_before, legs_after, worst_price,
     worst_raw_price, lp_vwap, vwap, raw_vwap) = end
    # ints multiplied as they are: a context converts one exactly (the Decimal of it, exponent
    # 0) at less cost than Decimal() does
    take = wanted - lots_before
    raw_take = _mul(raw_lot_price, take)
    taken = _mul(adjusted_lot_price, take)
    # exact sums: the same terms in another order give the same Decimal, exponent included
    notional = taken if notional is None else _add(notional, taken)
    raw_notional = raw_take if raw_notional is None else _add(raw_notional, raw_take)
    # _vwap inlined (a call per VWAP costs more than its division)
    hedge_side: HedgeSide
    if side.is_ask:
        divide, quantize, hedge_side = _divide_up, _quantize_up, "BUY"
    else:
        divide, quantize, hedge_side = _divide_down, _quantize_down, "SELL"
    lp_quantity = _mul(lp_lots + take, side.lot_size)
    if lp_lots:
        lp_vwap = quantize(divide(_add(lp_raw_notional, raw_take), lp_quantity), VWAP_QUANTUM)
    if vwap is None:
        vwap = quantize(divide(notional, quantity), VWAP_QUANTUM)
        raw_vwap = quantize(divide(raw_notional, quantity), VWAP_QUANTUM)
    # tuple.__new__ itself: a NamedTuple's own __new__ would be one more Python call each
    leg = tuple.__new__(HedgeLeg, (source, lp_quantity, lp_vwap, raw_price))
    return tuple.__new__(Sweep, (
        hedge_side, quantity, notional, raw_notional, vwap, raw_vwap, worst_price,
        worst_raw_price, (*legs_before, leg, *legs_after)))


def _sweep_end(side: BookSide, last: int) -> _SweepEnd:
    """What the sweeps ending in merged level `last` share (the sweep of that level's LP taking
    nothing of it)."""
    counts = _levels_before(side, last)
    last_lp = _lp_at(side, last)
    notional = raw_notional = lp_raw_notional_before = _ZERO
    worst_raw_price: Decimal | None = None
    legs_before: list[HedgeLeg] = []
    legs_after: list[HedgeLeg] = []
    lp_lots_before = 0
    past_last = False
    for lp in side.lp_order:
        ladder, full = side.ladders[lp], counts[lp]
        lots = ladder.cum_lots[full - 1] if full else 0
        lp_notional = ladder.cum_notional[full - 1] if full else _ZERO
        lp_raw_notional = ladder.cum_raw_notional[full - 1] if full else _ZERO
        if lp == last_lp:  # its next level, `full`, is the one the sweep ends in
            lp_lots_before, lp_raw_notional_before = lots, lp_raw_notional
            lp_worst = ladder.raw_price[full]
            past_last = True
        elif full:
            lp_worst = ladder.raw_price[full - 1]
        else:
            continue
        notional = _add(notional, lp_notional)
        raw_notional = _add(raw_notional, lp_raw_notional)
        if worst_raw_price is None or (
                lp_worst > worst_raw_price if side.is_ask else lp_worst < worst_raw_price):
            worst_raw_price = lp_worst
        if lp != last_lp:
            lp_quantity = _mul(Decimal(lots), side.lot_size)
            (legs_after if past_last else legs_before).append(HedgeLeg(
                side.sources[lp], lp_quantity, _vwap(lp_raw_notional, lp_quantity, side.is_ask),
                lp_worst))
    assert worst_raw_price is not None  # the LP of the last level always takes part
    last_ladder, last_level = side.ladders[last_lp], counts[last_lp]
    raw_price, lot_size = last_ladder.raw_price[last_level], side.lot_size
    adjusted_lot_price = _mul(last_ladder.adjusted_price[last_level], lot_size)
    raw_lot_price = _mul(raw_price, lot_size)
    # worked out only where sweeps use them: a VWAP too large for its context raises as a
    # sweep's own would
    lp_vwap = None if lp_lots_before else _vwap(raw_lot_price, lot_size, side.is_ask)
    if not last:
        # Nothing before the first level: the sums before are a zero of exponent 0, and adding
        # it to a product of this level's lot price and an int leaves the product as it is
        # when that exponent is not positive (a sum takes the smaller exponent), as usual.
        notional_before: Decimal | None = None if _exponent(adjusted_lot_price) <= 0 else notional
        raw_before: Decimal | None = None if _exponent(raw_lot_price) <= 0 else raw_notional
    else:
        notional_before, raw_before = notional, raw_notional
    return _SweepEnd(
        lots_before=_cum_lots_at(side, last - 1) if last else 0,
        source=side.sources[last_lp],
        raw_price=raw_price,
        adjusted_lot_price=adjusted_lot_price,
        raw_lot_price=raw_lot_price,
        lp_lots=lp_lots_before,
        lp_raw_notional=lp_raw_notional_before,
        notional=notional_before,
        raw_notional=raw_before,
        legs_before=tuple(legs_before),
        legs_after=tuple(legs_after),
        worst_price=last_ladder.adjusted_price[last_level],
        worst_raw_price=worst_raw_price,
        lp_vwap=lp_vwap,
        vwap=None if last else _vwap(adjusted_lot_price, lot_size, side.is_ask),
        raw_vwap=None if last else lp_vwap,
    )


def quantity_for_quote_amount(side: BookSide, amount: Decimal) -> Decimal:
    """The largest whole-lot base quantity whose fee-adjusted notional on `side` is ≤ `amount`.

    May be zero when one lot already costs more. Raises InsufficientDepth when the whole side is
    worth less than `amount`.
    """
    if not amount.is_finite() or amount <= 0:
        raise ValueError(f"amount {amount} must be positive")
    depth = len(side.cum_lots)
    # levels [0, within) are affordable in full: the float estimate finds `within`, exact sums
    # settle it (float rounding can only put it a level or so off)
    within = int(side.notional_estimate.searchsorted(float(amount), side="right"))
    counts = _levels_before(side, within)
    spent = _notional_before(side, counts)
    while within > 0 and spent > amount:
        within -= 1
        lp = _lp_at(side, within)
        counts[lp] -= 1
        spent = _sub(spent, _level_notional(side.ladders[lp], counts[lp]))
    while within < depth:
        lp = _lp_at(side, within)
        with_level = _add(spent, _level_notional(side.ladders[lp], counts[lp]))
        if with_level > amount:
            break
        spent, within = with_level, within + 1
        counts[lp] += 1
    if within == depth:  # the whole side is affordable: enough only if it is worth `amount`
        if spent < amount:
            raise InsufficientDepth(side.name, side.available_quantity, spent,
                                    requested_quote_quantity=amount)
        return side.available_quantity
    lp = _lp_at(side, within)
    lot_cost = _mul(side.ladders[lp].adjusted_price[counts[lp]], side.lot_size)
    lots = (_cum_lots_at(side, within - 1) if within else 0) + int(
        EXACT.divide_int(_sub(amount, spent), lot_cost))
    return _mul(Decimal(lots), side.lot_size)

