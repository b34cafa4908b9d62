"""The protocols every connector implements, and the domain types they speak.

Wire schemas stay in each connector (`venues/<name>/schemas.py`) and are converted into these
types at the edge. Money is Decimal; times are unix milliseconds passed in, never read here.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Protocol

# The seed's venue enum, plus BYBIT. FERMATA names accounts that live inside this service.
EXCHANGE_VENUES: tuple[str, ...] = (
    "BINANCE", "B2C2", "WINTERMUTE", "BLOCKFILLS", "STONEX", "CUMBERLAND", "IBKR", "DERIBIT",
    "BITFINEX", "OKX", "BYBIT", "BINANCE_UAT", "B2C2_UAT", "WINTERMUTE_UAT", "BLOCKFILLS_UAT",
    "STONEX_UAT", "CUMBERLAND_UAT", "IBKR_UAT", "DERIBIT_UAT", "BITFINEX_UAT", "OKX_UAT",
    "BINANCE_SANDBOX", "B2C2_SANDBOX", "IBKR_PAPER", "MOCK", "PAPER",
)
FERMATA_VENUE = "FERMATA"


def instrument_id(venue: str, symbol: str) -> str:
    """`{VENUE}:{BASE}/{QUOTE}` as in seeds/001."""
    return f"{venue}:{symbol}"


def split_symbol(symbol: str) -> tuple[str, str]:
    """`BTC/USDT` → (`BTC`, `USDT`); ValueError for anything else."""
    base, sep, quote = symbol.partition("/")
    if not sep or not base or not quote or "/" in quote:
        raise ValueError(f"symbol must be BASE/QUOTE, got {symbol!r}")
    return base, quote


# ---------------------------------------------------------------- credentials


@dataclass(frozen=True, slots=True)
class ApiCredential:
    """An exchange API credential in clear, only ever held in memory."""

    api_key: str
    api_secret: str | None = field(default=None, repr=False)
    api_passphrase: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        return "ApiCredential(<redacted>)"


@dataclass(frozen=True, slots=True)
class VenueIdentity:
    """A trading account the credential may act for (seeds/000 external trading account ids).

    `venue_ref` is the connector's own id for that account when it has one (the Cadenza
    tradingAccountId); the paper connector has none.
    """

    external_trading_account_id: str
    account_type: str
    external_account_type: str
    description: str
    venue_ref: str | None = None


@dataclass(frozen=True, slots=True)
class VenueAccount:
    """The account an execution call acts for: ours, and the connector's reference to it."""

    trading_account_id: uuid.UUID
    external_trading_account_id: str
    venue_ref: str | None = None
    credential: ApiCredential | None = field(default=None, repr=False)


# ---------------------------------------------------------------- market data


@dataclass(frozen=True, slots=True)
class Instrument:
    """Trading rules of one spot instrument on one venue."""

    venue: str
    symbol: str  # BASE/QUOTE
    external_symbol: str
    base: str
    quote: str
    tick_size: Decimal
    lot_size: Decimal
    min_quantity: Decimal
    max_quantity: Decimal | None
    min_notional: Decimal
    status: str = "ACTIVE"

    @property
    def instrument_id(self) -> str:
        return instrument_id(self.venue, self.symbol)


Level = tuple[Decimal, Decimal]  # price, quantity


@dataclass(frozen=True, slots=True)
class BookSnapshot:
    """A full order book: levels best first, the venue's time and a sequence number.

    `sequence` grows by exactly one per update of one stream; a jump is a gap.
    """

    venue: str
    symbol: str
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]
    ts_event: int
    sequence: int

    @property
    def best_bid(self) -> Decimal | None:
        return self.bids[0][0] if self.bids else None

    @property
    def best_ask(self) -> Decimal | None:
        return self.asks[0][0] if self.asks else None

    def is_crossed(self) -> bool:
        bid, ask = self.best_bid, self.best_ask
        return bid is not None and ask is not None and bid >= ask

    def is_well_formed(self) -> bool:
        """Positive sizes and prices, bids strictly descending, asks strictly ascending."""
        for side, descending in ((self.bids, True), (self.asks, False)):
            previous = None
            for price, qty in side:
                if price <= 0 or qty <= 0:
                    return False
                if previous is not None and (price >= previous if descending
                                             else price <= previous):
                    return False
                previous = price
        return True

    def top(self, depth: int) -> BookSnapshot:
        return BookSnapshot(self.venue, self.symbol, self.bids[:depth], self.asks[:depth],
                            self.ts_event, self.sequence)


# ---------------------------------------------------------------- execution


class Side(enum.StrEnum):
    BUY = "BUY"
    SELL = "SELL"


class OrderType(enum.StrEnum):
    MARKET = "MARKET"
    LIMIT = "LIMIT"


class TimeInForce(enum.StrEnum):
    GTC = "GTC"
    IOC = "IOC"
    FOK = "FOK"


class OrderStatus(enum.StrEnum):
    """seeds/001 order statuses the connectors produce."""

    ACCEPTED = "ACCEPTED"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELLED = "CANCELLED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"

    @property
    def is_closed(self) -> bool:
        return self in (OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.REJECTED,
                        OrderStatus.EXPIRED)


@dataclass(frozen=True, slots=True)
class OrderRequest:
    client_order_id: str
    symbol: str
    side: Side
    order_type: OrderType
    quantity: Decimal
    limit_price: Decimal | None = None
    time_in_force: TimeInForce = TimeInForce.GTC


@dataclass(frozen=True, slots=True)
class Fee:
    asset: str
    amount: Decimal


@dataclass(frozen=True, slots=True)
class Execution:
    """One trade of an order. `fee` is its fee; a venue that charged one trade in several assets
    (a fee-token discount that ran out mid-trade) lists the others, one per asset, in
    `other_fees`."""

    execution_id: str
    price: Decimal
    quantity: Decimal
    fee: Fee
    liquidity: str  # TAKER | MAKER
    ts_event: int
    other_fees: tuple[Fee, ...] = ()

    @property
    def fees(self) -> tuple[Fee, ...]:
        """Every fee of the trade: `fee`, then `other_fees`."""
        return (self.fee, *self.other_fees)


@dataclass(frozen=True, slots=True)
class OrderState:
    client_order_id: str
    venue_order_id: str
    symbol: str
    side: Side
    order_type: OrderType
    time_in_force: TimeInForce
    quantity: Decimal
    limit_price: Decimal | None
    status: OrderStatus
    filled_quantity: Decimal
    executions: tuple[Execution, ...]
    ts_created: int
    ts_updated: int
    reject_reason: str | None = None

    @property
    def average_price(self) -> Decimal | None:
        if not self.filled_quantity:
            return None
        cost = sum((e.price * e.quantity for e in self.executions), Decimal(0))
        return cost / self.filled_quantity


@dataclass(frozen=True, slots=True)
class Balance:
    asset: str
    free: Decimal
    locked: Decimal

    @property
    def total(self) -> Decimal:
        return self.free + self.locked


# ---------------------------------------------------------------- errors


class VenueError(Exception):
    """The venue could not do what was asked; the message is safe to show."""


class CredentialRejected(VenueError):
    """The venue refused the credential (never carries the secret)."""


class VenueUnavailable(VenueError):
    """The venue could not be reached or answered a server error."""


class VenueTimeout(VenueError):
    """No answer in time: the call's outcome is unknown (an order may still have filled)."""


class UnknownOrder(VenueError):
    """The venue has no order with that client order id."""


class UnknownInstrument(VenueError):
    """The venue does not list that symbol."""


# ---------------------------------------------------------------- protocols


class MarketDataVenue(Protocol):
    """Public side of a connector: instruments and order books of one venue."""

    venue: str
    connector: str

    async def instruments(self, symbols: Sequence[str] | None = None) -> list[Instrument]:
        """Instruments of the venue (only `symbols` when given)."""
        ...

    async def order_book(self, symbol: str, depth: int) -> BookSnapshot:
        """A snapshot of the book, at most `depth` levels a side."""
        ...

    def book_stream(self, symbol: str) -> AsyncIterator[BookSnapshot]:
        """Snapshots as the book changes, each with the next sequence number.

        The iterator ends (or raises VenueUnavailable) when the feed is lost; the caller
        resubscribes.
        """
        ...


class ExecutionVenue(Protocol):
    """Private side of a connector: what a credential may trade on one venue."""

    venue: str
    connector: str

    async def verify_credential(self, credential: ApiCredential) -> list[VenueIdentity]:
        """The trading accounts the credential gives access to; CredentialRejected if none."""
        ...

    async def connect_account(
        self, credential: ApiCredential, external_trading_account_id: str
    ) -> str | None:
        """Make the account usable through this connector; answer its `venue_ref` (if any)."""
        ...

    async def submit_order(self, account: VenueAccount, order: OrderRequest) -> OrderState:
        """Submit and answer the order's state once it is closed or resting (awaitClosed).

        Raises VenueTimeout when the outcome is unknown: ask `order_status` later.
        """
        ...

    async def cancel_order(self, account: VenueAccount, client_order_id: str) -> OrderState:
        ...

    async def order_status(self, account: VenueAccount, client_order_id: str) -> OrderState:
        """The order's current state; UnknownOrder if the venue never received it."""
        ...

    async def balances(self, account: VenueAccount) -> list[Balance]:
        ...
