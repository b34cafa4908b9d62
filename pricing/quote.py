"""Firm client prices: sweep VWAP, spread by size tier, inventory skew, tick and lot rounding.

Pure: no I/O, no clock. Everything is Decimal and exact except where a rule says how it rounds.

Sides are the client's: a client BUY pays the dealer's ask and is hedged by sweeping the LPs'
asks (the dealer buys); a client SELL receives the dealer's bid and sweeps the LPs' bids.

    ask = ceil_to_tick(vwap_ask * (1 + (spread - skew) / 10 000))
    bid = floor_to_tick(vwap_bid * (1 - (spread + skew) / 10 000))

- vwap: the fee-adjusted VWAP of the sweep for the quoted quantity (pricing.sweep), rounded to
  1e-18 against the dealer (up on asks, down on bids).
- spread (bps): the first tier with sweep notional ≤ up_to_notional, else `spread_bps`; the
  notional is the exact fee-adjusted hedge notional, before spread.
- skew (bps) = inventory_skew_bps * exposure / max_exposure, exposure clipped to ±max_exposure, so
  skew ∈ [-inventory_skew_bps, +inventory_skew_bps]. Exposure is the dealer's base position:
  positive when long. A long dealer (skew > 0) lowers both prices, leaning to sell its inventory;
  a short dealer raises both. No skew without a max exposure. The skew is rounded to 1e-6 bps in
  the dealer's favour: down for the ask, up for the bid (each side reports the skew it applied).
  A skew larger than the spread can put the ask below the hedge VWAP (or the bid above it): that
  is the point of skewing, as such a trade reduces the dealer's position instead of adding to it.
  But never past the other side of the market: the ask stays at or above the best fee-adjusted
  bid, the bid at or below the best fee-adjusted ask (before tick rounding, which only moves
  them further), or a client could buy from the LPs and sell to the dealer at a profit. The
  bound is one price whatever the size, so prices stay monotone in size; with no level on the
  other side there is nothing to trade against and no bound.
- Ticks round in the dealer's favour: the ask (client BUY) up, the bid (client SELL) down.
- Quantity: a requested base quantity is rounded DOWN to the lot; a quote_quantity (an amount of
  quote currency) becomes the largest whole-lot quantity whose fee-adjusted hedge notional is at
  most that amount (before spread and tick rounding, so the client's quote_quantity can differ
  from the amount by those). Zero is refused.
- quote_quantity = price * quantity, exact (tick and lot decimals, no rounding); the ledger
  rounds it to the asset's scale.
- Checks, in order: lot-rounded quantity ≥ max(min_quantity, lot) and ≤ max_quantity; the sweep
  (InsufficientDepth); then per side quote_quantity ≥ the instrument's min_notional, ≥ the
  dealer's min_quote_notional and ≤ its max_quote_notional; a price must be positive.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Context, Decimal
from typing import Any, Literal, NamedTuple

from pricing.errors import (
    NotionalAboveMaximum,
    NotionalBelowMinimum,
    PriceNotPositive,
    SizeAboveMaximum,
    SizeBelowMinimum,
)
from pricing.sweep import (
    DIVIDE_DOWN,
    DIVIDE_UP,
    EXACT,
    HedgeLeg,
    Sweep,
    SweepBook,
    lots_in,
    quantity_for_quote_amount,
    sweep_lots,
)

Side = Literal["BUY", "SELL"]
SpreadTier = tuple[Decimal, Decimal]  # (up_to_notional in quote currency, spread in bps)
SKEW_QUANTUM = Decimal("1e-6")  # bps
_BPS = Decimal(10000)
# Bound once: a method looked up on a Context costs about as much as the operation.
_mul, _add, _sub = EXACT.multiply, EXACT.add, EXACT.subtract
_divide_int = EXACT.divide_int


def _exact_rounding(rounding: str) -> Context:
    context = EXACT.copy()
    context.rounding = rounding
    return context


# Quantizing to a tick: with EXACT's precision, only the last digit kept can round.
_ceiling_to = _exact_rounding(ROUND_CEILING).quantize
_floor_to = _exact_rounding(ROUND_FLOOR).quantize
_ZERO = Decimal(0)
_SIDES = ("BUY", "SELL", None)


def _check_decimal(name: str, value: object, *, positive: bool = False) -> Decimal:
    if not isinstance(value, Decimal) or not value.is_finite():
        raise TypeError(f"{name} must be a finite Decimal, not {value!r}")
    if value < 0 or (positive and value == 0):
        raise ValueError(f"{name} must be {'positive' if positive else 'non-negative'}")
    return value


@dataclass(frozen=True, slots=True)
class InstrumentRules:
    """Trading rules of the quoted instrument: tick, lot and size limits."""

    tick_size: Decimal
    lot_size: Decimal
    min_quantity: Decimal = _ZERO
    max_quantity: Decimal | None = None
    min_notional: Decimal = _ZERO
    # The tick itself when it is a power of ten (one digit 1: 0.01, not 0.010 or 0.5): then a
    # price goes on the grid with one quantize, which round_to_tick's three operations equal.
    tick_quantum: Decimal | None = field(init=False, repr=False, compare=False)
    # The smallest quantity quoted, max(min_quantity, lot_size): the same for every quote.
    min_size: Decimal = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_decimal("tick_size", self.tick_size, positive=True)
        object.__setattr__(self, "tick_quantum",
                           self.tick_size if self.tick_size.as_tuple().digits == (1,) else None)
        _check_decimal("lot_size", self.lot_size, positive=True)
        _check_decimal("min_quantity", self.min_quantity)
        object.__setattr__(self, "min_size", max(self.min_quantity, self.lot_size))
        _check_decimal("min_notional", self.min_notional)
        if self.max_quantity is not None and (
                _check_decimal("max_quantity", self.max_quantity) < self.min_quantity):
            raise ValueError("max_quantity must not be below min_quantity")


@dataclass(frozen=True, slots=True)
class QuotingConfig:
    """The dealer's pricing settings; tiers are (up_to_notional, spread_bps), increasing."""

    spread_bps: Decimal
    spread_tiers: tuple[SpreadTier, ...] = ()
    min_quote_notional: Decimal = _ZERO
    max_quote_notional: Decimal | None = None
    inventory_skew_bps: Decimal = _ZERO
    # What the ask's and the bid's VWAP are multiplied by when the spread is `spread_bps` and
    # there is no skew (no tiers, no skew: the usual configuration), worked out once:
    # (10 000 ± spread) / 10 000, exactly as `_quoted_side` works it out with a zero skew.
    ask_factor: Decimal = field(init=False, repr=False, compare=False)
    bid_factor: Decimal = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_decimal("spread_bps", self.spread_bps)
        object.__setattr__(self, "ask_factor", _price_factor(self.spread_bps, _ZERO, ask=True))
        object.__setattr__(self, "bid_factor", _price_factor(self.spread_bps, _ZERO, ask=False))
        _check_decimal("min_quote_notional", self.min_quote_notional)
        _check_decimal("inventory_skew_bps", self.inventory_skew_bps)
        if self.max_quote_notional is not None and (
                _check_decimal("max_quote_notional", self.max_quote_notional)
                < self.min_quote_notional):
            raise ValueError("max_quote_notional must not be below min_quote_notional")
        previous: Decimal | None = None
        for up_to, bps in self.spread_tiers:
            _check_decimal("spread tier up_to_notional", up_to, positive=True)
            _check_decimal("spread tier bps", bps)
            if previous is not None and up_to <= previous:
                raise ValueError("spread tiers must have strictly increasing up_to_notional")
            previous = up_to


def _price_factor(spread: Decimal, skew: Decimal, *, ask: bool) -> Decimal:
    """1 + margin / 10 000, exact: what the VWAP is multiplied by. (The product then equals,
    exponent included, the VWAP times 10 000 + margin, scaled by 10^-4: exact products add
    their exponents.)"""
    margin = _sub(spread, skew) if ask else EXACT.minus(_add(spread, skew))
    return _add(_BPS, margin).scaleb(-4, EXACT)


class _QuoteRequestFields(NamedTuple):
    side: Side | None
    rules: InstrumentRules
    config: QuotingConfig
    quantity: Decimal | None = None
    quote_quantity: Decimal | None = None
    exposure: Decimal = _ZERO
    max_exposure: Decimal | None = None


# A NamedTuple checked in __new__ rather than a frozen dataclass: one is made per quote, and a
# frozen dataclass pays a call of object.__setattr__ per field, then one of __post_init__.
class QuoteRequest(_QuoteRequestFields):
    """One RFQ: the client's side (None for two-way) and a base quantity or a quote amount.

    `exposure` is the dealer's current base position (positive: long) and `max_exposure` the
    position at which the full inventory skew applies (None: no skew).
    """

    __slots__ = ()

    def __new__(cls, side: Side | None, rules: InstrumentRules, config: QuotingConfig,
                quantity: Decimal | None = None, quote_quantity: Decimal | None = None,
                exposure: Decimal = _ZERO, max_exposure: Decimal | None = None) -> QuoteRequest:
        request = quote_request(side, rules, config, quantity, quote_quantity, exposure,
                                max_exposure)
        return request if cls is QuoteRequest else tuple.__new__(cls, request)

    def _replace(self, **changes: Any) -> QuoteRequest:
        """A copy with `changes`, checked as a new request is."""
        return QuoteRequest(**{**self._asdict(), **changes})


def quote_request(side: Side | None, rules: InstrumentRules, config: QuotingConfig,
                  quantity: Decimal | None = None, quote_quantity: Decimal | None = None,
                  exposure: Decimal = _ZERO, max_exposure: Decimal | None = None
                  ) -> QuoteRequest:
    """`QuoteRequest(...)`, checked the same, for less: calling a class with its own __new__
    goes through type.__call__ and a lookup of __new__, where this is one plain call (the quote
    path makes one per quote)."""
    if side not in _SIDES:
        raise ValueError(f"side must be BUY, SELL or None, not {side!r}")
    if quantity is not None:
        if quote_quantity is not None:
            raise ValueError("give exactly one of quantity and quote_quantity")
        # the usual request passes this test; _check_decimal says what is wrong otherwise
        if not (isinstance(quantity, Decimal) and quantity.is_finite() and quantity > _ZERO):
            _check_decimal("quantity", quantity, positive=True)
    elif quote_quantity is None:
        raise ValueError("give exactly one of quantity and quote_quantity")
    else:
        _check_decimal("quote_quantity", quote_quantity, positive=True)
        if side is None:
            raise ValueError("a two-way quote needs a base quantity")
    if not isinstance(exposure, Decimal) or not exposure.is_finite():
        raise TypeError(f"exposure must be a finite Decimal, not {exposure!r}")
    if max_exposure is not None:
        _check_decimal("max_exposure", max_exposure, positive=True)
    # tuple.__new__ itself: the NamedTuple's own __new__ would be one more Python call
    return tuple.__new__(QuoteRequest, (side, rules, config, quantity, quote_quantity,
                                        exposure, max_exposure))


# NamedTuples (immutable, compared by value) like the sweep's results, made per quote.
class QuotedSide(NamedTuple):
    """A firm price for one client side, with the sweep that hedges it."""

    side: Side
    price: Decimal
    quantity: Decimal
    quote_quantity: Decimal
    spread_bps: Decimal
    skew_bps: Decimal
    sweep: Sweep

    @property
    def hedge_plan(self) -> tuple[HedgeLeg, ...]:
        """Per-LP quantities (summing exactly to `quantity`), raw VWAPs and worst raw prices."""
        return self.sweep.hedge_plan


class Quote(NamedTuple):
    """The answer to a QuoteRequest: `ask` prices a client BUY, `bid` a client SELL."""

    side: Side | None
    quantity: Decimal
    bid: QuotedSide | None
    ask: QuotedSide | None

    def for_side(self, side: Side) -> QuotedSide:
        """The priced side a client `side` order would take."""
        priced = self.ask if side == "BUY" else self.bid
        if priced is None:
            raise LookupError(f"this quote has no price for a client {side}")
        return priced


def spread_bps_for(config: QuotingConfig, notional: Decimal) -> Decimal:
    """The spread of the first tier whose up_to_notional covers `notional`, else the base one."""
    for up_to, bps in config.spread_tiers:
        if notional <= up_to:
            return bps
    return config.spread_bps


def inventory_skew_bps(skew_bps: Decimal, exposure: Decimal, max_exposure: Decimal | None, *,
                       round_up: bool) -> Decimal:
    """skew_bps * exposure / max_exposure with exposure clipped to ±max_exposure, in 1e-6 bps."""
    if max_exposure is None or not skew_bps or not exposure:
        return _ZERO
    clipped = min(max(exposure, EXACT.minus(max_exposure)), max_exposure)
    context = DIVIDE_UP if round_up else DIVIDE_DOWN
    return context.divide(EXACT.multiply(skew_bps, clipped), max_exposure).quantize(
        SKEW_QUANTUM, context=context)


def lot_for_scale(lot_size: Decimal, scale: int) -> Decimal:
    """A lot the ledger can book every multiple of, when the base asset is booked in `scale`
    decimals: the smallest multiple of `lot_size` that is also a multiple of 10^-scale
    (`lot_size` itself when it already is, as usual)."""
    step = Decimal(1).scaleb(-scale)
    if not EXACT.remainder(lot_size, step):
        return lot_size
    exponent = min(int(lot_size.as_tuple().exponent), -scale)
    lots, steps = int(lot_size.scaleb(-exponent)), int(step.scaleb(-exponent))
    return Decimal(math.lcm(lots, steps)).scaleb(exponent)


def round_to_tick(price: Decimal, tick_size: Decimal, *, up: bool) -> Decimal:
    """`price` on the tick grid, up or down, exactly."""
    ticks, rest = EXACT.divmod(price, tick_size)
    if up and rest > 0:
        ticks = _add(ticks, 1)
    elif not up and rest < 0:
        ticks = _sub(ticks, 1)
    return _mul(ticks, tick_size)


def price_quote(request: QuoteRequest, book: SweepBook) -> Quote:
    """Price `request` on `book` (built with the instrument's lot size); see the module rules.

    Raises a QuoteRefused subclass: SizeBelowMinimum, SizeAboveMaximum, InsufficientDepth,
    NotionalBelowMinimum, NotionalAboveMaximum or PriceNotPositive.
    """
    rules = request.rules
    lot_size = rules.lot_size
    if book.lot_size != lot_size:
        raise ValueError(f"the book counts lots of {book.lot_size}, the instrument's lot is "
                         f"{lot_size}")
    if request.quantity is not None:
        # lots_in without its checks: QuoteRequest holds a finite positive quantity
        # an integer quotient has the exponent 0, as Decimal(lots) has
        counted = _divide_int(request.quantity, lot_size)
        lots = int(counted)
        quantity = _mul(counted, lot_size)
    else:
        assert request.quote_quantity is not None  # QuoteRequest holds exactly one of the two
        swept = book.asks if request.side == "BUY" else book.bids
        quantity = quantity_for_quote_amount(swept, request.quote_quantity)
        lots = lots_in(quantity, lot_size)
    if quantity < rules.min_size:
        raise SizeBelowMinimum(quantity, rules.min_size)
    if rules.max_quantity is not None and quantity > rules.max_quantity:
        raise SizeAboveMaximum(quantity, rules.max_quantity)
    side = request.side
    ask = _quoted_side("BUY", request, book, quantity, lots) if side != "SELL" else None
    bid = _quoted_side("SELL", request, book, quantity, lots) if side != "BUY" else None
    return tuple.__new__(Quote, (side, quantity, bid, ask))


def _quoted_side(side: Side, request: QuoteRequest, book: SweepBook, quantity: Decimal,
                 lots: int) -> QuotedSide:
    """`quantity` is `lots` whole lots, at least one."""
    client_buys = side == "BUY"
    config, rules = request.config, request.rules
    sweep = sweep_lots(book.asks if client_buys else book.bids, lots, quantity)
    # a larger skew lowers both prices: rounding it down favours the ask, up favours the bid
    skew = _ZERO if request.max_exposure is None else inventory_skew_bps(
        config.inventory_skew_bps, request.exposure, request.max_exposure,
        round_up=not client_buys)
    if skew is _ZERO and not config.spread_tiers:
        # The usual configuration: the config's spread and no skew (inventory_skew_bps answers
        # _ZERO itself then), whose factor the config worked out with this very zero. The
        # margin is the spread then, never past the other side.
        spread = config.spread_bps
        unrounded = _mul(sweep.vwap, config.ask_factor if client_buys else config.bid_factor)
    else:
        spread = (spread_bps_for(config, sweep.notional) if config.spread_tiers
                  else config.spread_bps)
        margin = _sub(spread, skew) if client_buys else EXACT.minus(_add(spread, skew))
        unrounded = _mul(sweep.vwap, _add(_BPS, margin)).scaleb(-4, EXACT)
        # a skew past the spread (the price better for the client than the hedge's VWAP):
        # never past the other side's best price
        if margin < 0 if client_buys else margin > 0:
            best_other = (book.bids if client_buys else book.asks).best_price
            if best_other is not None:
                unrounded = (max(unrounded, best_other) if client_buys
                             else min(unrounded, best_other))
    quantum = rules.tick_quantum
    if quantum is None:
        price = round_to_tick(unrounded, rules.tick_size, up=client_buys)
    else:
        price = (_ceiling_to if client_buys else _floor_to)(unrounded, quantum)
    if price <= _ZERO:  # a Decimal: an int would be converted for every comparison
        raise PriceNotPositive(price)
    quote_quantity = _mul(price, quantity)
    if quote_quantity < rules.min_notional:
        raise NotionalBelowMinimum(quote_quantity, rules.min_notional, "instrument")
    if quote_quantity < config.min_quote_notional:
        raise NotionalBelowMinimum(quote_quantity, config.min_quote_notional, "dealer")
    if config.max_quote_notional is not None and quote_quantity > config.max_quote_notional:
        raise NotionalAboveMaximum(quote_quantity, config.max_quote_notional)
    # tuple.__new__ itself: the NamedTuple's __new__ would be one more Python call
    return tuple.__new__(QuotedSide, (side, price, quantity, quote_quantity, spread, skew,
                                      sweep))
