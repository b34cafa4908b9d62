"""Why a quote is refused: one typed error per reason, each carrying the limits it broke.

All are `QuoteRefused`, so a caller can map the family to one response and each member to its own
message. Amounts are Decimal; quantities are in base, notionals in quote currency.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

BookSideName = Literal["BID", "ASK"]
# "ledger": one minor unit of the quote asset, the least a side the dealer pays can book.
NotionalLimit = Literal["instrument", "dealer", "ledger"]


class QuoteRefused(Exception):
    """Base class of every reason pricing refuses to quote."""


class InsufficientDepth(QuoteRefused):
    """The consolidated side cannot fill the request.

    `available_quantity` is the whole-lot depth of that side and `available_quote_quantity` its
    fee-adjusted notional; exactly one of the two `requested_*` fields is set.
    """

    def __init__(self, book_side: BookSideName, available_quantity: Decimal,
                 available_quote_quantity: Decimal, *, requested_quantity: Decimal | None = None,
                 requested_quote_quantity: Decimal | None = None) -> None:
        requested = (f"{requested_quantity} base" if requested_quantity is not None
                     else f"{requested_quote_quantity} quote")
        super().__init__(f"not enough depth on the {book_side.lower()}s: requested {requested}, "
                         f"available {available_quantity} base "
                         f"({available_quote_quantity} quote)")
        self.book_side = book_side
        self.available_quantity = available_quantity
        self.available_quote_quantity = available_quote_quantity
        self.requested_quantity = requested_quantity
        self.requested_quote_quantity = requested_quote_quantity


class SizeBelowMinimum(QuoteRefused):
    """The lot-rounded quantity is zero or below the instrument's minimum quantity."""

    def __init__(self, quantity: Decimal, minimum: Decimal) -> None:
        super().__init__(f"quantity {quantity} is below the minimum {minimum}")
        self.quantity = quantity
        self.minimum = minimum


class SizeAboveMaximum(QuoteRefused):
    """The quantity is above the instrument's maximum quantity."""

    def __init__(self, quantity: Decimal, maximum: Decimal) -> None:
        super().__init__(f"quantity {quantity} is above the maximum {maximum}")
        self.quantity = quantity
        self.maximum = maximum


class NotionalBelowMinimum(QuoteRefused):
    """The quote's notional is below the instrument's minimum notional, the dealer's minimum, or
    what the ledger can book (one minor unit of the quote asset)."""

    def __init__(self, notional: Decimal, minimum: Decimal, limit: NotionalLimit) -> None:
        super().__init__(f"notional {notional} is below the {limit} minimum {minimum}")
        self.notional = notional
        self.minimum = minimum
        self.limit = limit


class NotionalAboveMaximum(QuoteRefused):
    """The quote's notional is above the dealer's maximum quote notional."""

    def __init__(self, notional: Decimal, maximum: Decimal) -> None:
        super().__init__(f"notional {notional} is above the dealer maximum {maximum}")
        self.notional = notional
        self.maximum = maximum


class PriceNotPositive(QuoteRefused):
    """Spread and skew (or tick rounding) leave no positive price to quote."""

    def __init__(self, price: Decimal) -> None:
        super().__init__(f"the quoted price would be {price}, not positive")
        self.price = price
