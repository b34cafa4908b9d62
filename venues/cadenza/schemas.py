"""Cadenza v3 wire shapes (seeds/001) and the explicit functions that turn them into domain types.

Only the fields the connector reads are modelled; unknown fields are ignored so Cadenza may add
fields freely. Decimals travel as strings and are parsed into `Decimal` (JSON numbers, if Cadenza
ever sends them, are decoded as `Decimal` too: see `decode_json`). Nothing here does I/O.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer
from pydantic.alias_generators import to_camel

from venues.base import (
    ApiCredential,
    Balance,
    BookSnapshot,
    Execution,
    Fee,
    Instrument,
    Level,
    OrderRequest,
    OrderState,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
    VenueIdentity,
    split_symbol,
)


class WireError(ValueError):
    """Cadenza answered something this connector cannot interpret."""


def decode_json(body: bytes) -> Any:
    """JSON with every non-integer number as an exact Decimal."""
    return json.loads(body, parse_float=Decimal)


def _empty_to_none(value: Any) -> Any:
    return None if value == "" else value


def _decimal_text(value: Decimal) -> str:
    """`^-?\\d+(\\.\\d+)?$` as the seed requires: never an exponent."""
    return format(value, "f")


OptionalDecimal = Annotated[Decimal | None, BeforeValidator(_empty_to_none)]
DecimalText = Annotated[Decimal, PlainSerializer(_decimal_text, return_type=str)]


class WireModel(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields ignored."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore",
                              frozen=True)


# ---------------------------------------------------------------- envelope


class Pagination(WireModel):
    offset: int = 0
    limit: int = 0
    total: int | None = None
    cursor: str | None = None
    has_next: bool = False


class Envelope(WireModel):
    """`{success, errno, error, details, data}` (+ `pagination` on lists)."""

    success: bool
    errno: int = 0
    error: str | None = None
    details: dict[str, Any] | None = None
    data: Any = None
    pagination: Pagination | None = None

    @property
    def code(self) -> str | None:
        """`details.code`, the machine-readable reason of an error (e.g. INVALID_TOKEN)."""
        if self.details is None:
            return None
        code = self.details.get("code")
        return code if isinstance(code, str) else None


# ---------------------------------------------------------------- orders


class WireFee(WireModel):
    security: str | None = None
    asset: str
    venue: str | None = None
    quantity: Decimal


class WireExecution(WireModel):
    execution_id: str
    external_trade_id: str | None = None
    venue: str | None = None
    instrument_id: str | None = None
    order_side: str | None = None
    executed_quantity: Decimal
    executed_price: Decimal
    executed_cost: OptionalDecimal = None
    fees: list[WireFee] = Field(default_factory=list)
    executed_at: int
    liquidity: str | None = None  # not in seeds/001; read when Cadenza sends it


class WireTradeOrder(WireModel):
    trade_order_id: str
    trading_account_id: str | None = None
    venue: str | None = None
    instrument_id: str
    # Not in the seed's TradeOrder, though submit takes it: the connector matches orders by it.
    client_order_id: str | None = None
    base_asset: str | None = None
    quote_asset: str | None = None
    order_side: str
    order_type: str
    time_in_force: str | None = None
    status: str
    reject_reason: str | None = None
    cancel_reason: str | None = None
    limit_price: OptionalDecimal = None
    quantity: Decimal
    executed_price: OptionalDecimal = None
    executed_quantity: OptionalDecimal = None
    executed_cost: OptionalDecimal = None
    fees: list[WireFee] = Field(default_factory=list)
    executions: list[WireExecution] = Field(default_factory=list)
    created_at: int
    updated_at: int | None = None


class SubmitOrderBody(WireModel):
    """POST /api/v3/trading/order/submit."""

    trading_account_id: str
    instrument_id: str
    idempotency_key: str
    client_order_id: str
    order_side: str
    order_type: str
    limit_price: DecimalText | None = None
    quantity: DecimalText
    quantity_type: str = "BASE"
    time_in_force: str
    await_closed: bool = True


class CancelOrderBody(WireModel):
    """POST /api/v3/trading/order/cancel."""

    trading_account_id: str
    trade_order_id: str


# ---------------------------------------------------------------- market data


class WireOrderBook(WireModel):
    instrument_id: str | None = None
    venue: str | None = None
    symbol: str | None = None
    asks: list[tuple[Decimal, Decimal]] = Field(default_factory=list)
    bids: list[tuple[Decimal, Decimal]] = Field(default_factory=list)
    timestamp: int


class WireInstrument(WireModel):
    instrument_id: str | None = None
    venue: str
    symbol: str
    external_symbol: str | None = None
    instrument_type: str | None = None
    # seeds/001's instrumentStatus: the daemon answers it again (and filters on it), so an
    # instrument with another status is skipped as malformed rather than passed on
    status: Literal["ACTIVE", "INACTIVE", "DISABLED", "DELISTED"] = "ACTIVE"
    base_asset: str | None = None
    quote_asset: str | None = None
    base_precision: int | None = None
    quote_precision: int | None = None
    lot_size: OptionalDecimal = None
    pip_size: OptionalDecimal = None
    min_quantity: OptionalDecimal = None
    max_quantity: OptionalDecimal = None
    min_notional: OptionalDecimal = None


class SyncInstrumentsBody(WireModel):
    """POST /api/v3/market/instrument/sync (seeds/004: symbols optional)."""

    venue: str
    symbols: list[str] | None = None


class WireSyncResult(WireModel):
    total: int | None = None  # seeds/001
    synced: int | None = None  # seeds/004


# ---------------------------------------------------------------- accounts and balances


class WireBalance(WireModel):
    security_symbol: str
    free: OptionalDecimal = None
    locked: OptionalDecimal = None
    total: OptionalDecimal = None


class WirePortfolio(WireModel):
    trading_account_id: str
    venue: str | None = None
    balances: list[WireBalance] = Field(default_factory=list)


class WireCredential(WireModel):
    credential_id: str
    venue: str | None = None
    credential_type: str | None = None
    status: str | None = None


class WireTradingAccount(WireModel):
    trading_account_id: str | None = None
    external_trading_account_id: str
    venue: str | None = None
    nickname: str | None = None
    account_type: str | None = None
    external_account_type: str | None = None
    credentials: list[WireCredential] = Field(default_factory=list)
    status: str | None = None


class WireVerifyResult(WireModel):
    """seeds/000's verify answer; seeds/001 answers the identities list itself."""

    status: str | None = None
    identities: list[WireTradingAccount] = Field(default_factory=list)


class CreateCredentialBody(WireModel):
    """POST /api/v3/credential/create. Secrets are excluded from repr."""

    venue: str
    credential_type: str = "API_KEY"
    nickname: str | None = None
    api_key: str = Field(repr=False)
    api_secret: str | None = Field(default=None, repr=False)
    api_passphrase: str | None = Field(default=None, repr=False)


class VerifyCredentialBody(WireModel):
    credential_ids: list[str]


class ConnectTradingAccountBody(WireModel):
    credential_ids: list[str]
    external_trading_account_id: str
    nickname: str | None = None


# ---------------------------------------------------------------- websocket (Centrifugo)


class WsPublication(WireModel):
    data: dict[str, Any]
    offset: int | None = None  # Centrifugo omits a zero offset and channels without history


# ---------------------------------------------------------------- parse: wire → domain

_OPEN_STATUSES = frozenset({"", "CREATED", "SUBMITTED", "ACCEPTED", "PENDING_CANCEL",
                            "PENDING_REPLACE", "REPLACED", "UNKNOWN"})
_CLOSED_STATUSES = {
    "FILLED": OrderStatus.FILLED,
    "CANCELLED": OrderStatus.CANCELLED,
    "REVOKED": OrderStatus.CANCELLED,
    "REJECTED": OrderStatus.REJECTED,
    "EXPIRED": OrderStatus.EXPIRED,
}


def parse_order_status(status: str, executed_quantity: Decimal) -> OrderStatus:
    """The seed's order statuses as ours.

    Every not-yet-final status (CREATED, SUBMITTED, ACCEPTED, PENDING_CANCEL, PENDING_REPLACE,
    REPLACED, and UNKNOWN, which Cadenza uses while it has not heard from the exchange) is an open
    order: ACCEPTED, or PARTIALLY_FILLED once something executed. Callers poll open orders again.
    """
    if status in _OPEN_STATUSES:
        return OrderStatus.PARTIALLY_FILLED if executed_quantity > 0 else OrderStatus.ACCEPTED
    if status == "PARTIALLY_FILLED":
        return OrderStatus.PARTIALLY_FILLED
    closed = _CLOSED_STATUSES.get(status)
    if closed is None:
        raise WireError(f"unknown Cadenza order status {status!r}")
    return closed


def symbol_of(instrument_id: str) -> str:
    """`BINANCE:BTC/USDT` → `BTC/USDT`."""
    venue, sep, symbol = instrument_id.partition(":")
    if not sep or not venue:
        raise WireError(f"instrumentId must be VENUE:BASE/QUOTE, got {instrument_id!r}")
    try:
        split_symbol(symbol)
    except ValueError as exc:
        raise WireError(str(exc)) from None
    return symbol


def _side(value: str) -> Side:
    try:
        return Side(value)
    except ValueError:
        raise WireError(f"unsupported Cadenza order side {value!r}") from None


def _order_type(value: str) -> OrderType:
    try:
        return OrderType(value)
    except ValueError:
        raise WireError(f"unsupported Cadenza order type {value!r}") from None


def _time_in_force(value: str | None, order_type: OrderType) -> TimeInForce:
    if not value:
        return TimeInForce.IOC if order_type is OrderType.MARKET else TimeInForce.GTC
    try:
        return TimeInForce(value)
    except ValueError:
        raise WireError(f"unsupported Cadenza time in force {value!r}") from None


def _fees_of(fees: Sequence[WireFee], default_asset: str) -> tuple[Fee, tuple[Fee, ...]]:
    """The fees of one execution (or of an order), one per asset in the order first listed:
    the execution's `fee` and its `other_fees`. None listed: a zero fee in `default_asset`."""
    if not fees:
        return Fee(default_asset, Decimal(0)), ()
    by_asset: dict[str, Decimal] = {}
    for fee in fees:
        by_asset[fee.asset] = by_asset.get(fee.asset, Decimal(0)) + fee.quantity
    first, *others = (Fee(asset, amount) for asset, amount in by_asset.items())
    return first, tuple(others)


def _liquidity(execution: WireExecution, order: WireTradeOrder, tif: TimeInForce) -> str:
    if execution.liquidity in ("TAKER", "MAKER"):
        return execution.liquidity
    # Without the venue's flag: only a resting GTC limit order can trade as maker, and it rests
    # only after the moment it was created.
    resting = order.order_type == "LIMIT" and tif is TimeInForce.GTC
    return "MAKER" if resting and execution.executed_at > order.created_at else "TAKER"


def parse_order_state(wire: WireTradeOrder, client_order_id: str) -> OrderState:
    """A TradeOrder as our OrderState; `client_order_id` is ours (the wire may omit it)."""
    symbol = symbol_of(wire.instrument_id)
    _, quote = split_symbol(symbol)
    quote_asset = wire.quote_asset or quote
    order_type = _order_type(wire.order_type)
    tif = _time_in_force(wire.time_in_force, order_type)
    executions: list[Execution] = []
    for e in wire.executions:
        fee, other_fees = _fees_of(e.fees, quote_asset)
        executions.append(Execution(
            execution_id=e.execution_id,
            price=e.executed_price,
            quantity=e.executed_quantity,
            fee=fee,
            liquidity=_liquidity(e, wire, tif),
            ts_event=e.executed_at,
            other_fees=other_fees,
        ))
    executed = (wire.executed_quantity if wire.executed_quantity is not None
                else sum((e.quantity for e in executions), Decimal(0)))
    if not executions and executed > 0:
        # A venue that reports only the aggregate: one execution at the average price.
        if wire.executed_price is None:
            raise WireError("order reports an executed quantity without an executed price")
        fee, other_fees = _fees_of(wire.fees, quote_asset)
        executions.append(Execution(
            execution_id=f"{wire.trade_order_id}:aggregate", price=wire.executed_price,
            quantity=executed, fee=fee, liquidity="TAKER",
            ts_event=wire.updated_at or wire.created_at, other_fees=other_fees))
    elif executions and wire.fees and all(not e.fees for e in wire.executions):
        # Fees only at order level: book them on the last execution so the total is kept.
        last = executions[-1]
        fee, other_fees = _fees_of(wire.fees, quote_asset)
        executions[-1] = Execution(last.execution_id, last.price, last.quantity, fee,
                                   last.liquidity, last.ts_event, other_fees)
    status = parse_order_status(wire.status, executed)
    reason = wire.reject_reason or wire.cancel_reason or None
    return OrderState(
        client_order_id=client_order_id,
        venue_order_id=wire.trade_order_id,
        symbol=symbol,
        side=_side(wire.order_side),
        order_type=order_type,
        time_in_force=tif,
        quantity=wire.quantity,
        limit_price=wire.limit_price,
        status=status,
        filled_quantity=executed,
        executions=tuple(executions),
        ts_created=wire.created_at,
        ts_updated=wire.updated_at or wire.created_at,
        reject_reason=reason if status in (OrderStatus.REJECTED, OrderStatus.CANCELLED,
                                           OrderStatus.EXPIRED) else None,
    )


def _levels(levels: Sequence[tuple[Decimal, Decimal]]) -> tuple[Level, ...]:
    return tuple((price, quantity) for price, quantity in levels)


def parse_book(wire: WireOrderBook, venue: str, symbol: str, sequence: int) -> BookSnapshot:
    """An order book as the domain snapshot, levels in the order Cadenza sent them.

    Nothing is sorted, dropped or uncrossed: the market-data service judges the book.
    """
    return BookSnapshot(venue=venue, symbol=symbol, bids=_levels(wire.bids),
                        asks=_levels(wire.asks), ts_event=wire.timestamp, sequence=sequence)


def _power_of_ten(precision: int | None) -> Decimal | None:
    return None if precision is None else Decimal(1).scaleb(-precision)


def parse_instrument(wire: WireInstrument) -> Instrument:
    try:
        base, quote = split_symbol(wire.symbol)
    except ValueError as exc:
        raise WireError(str(exc)) from None
    tick = wire.pip_size or _power_of_ten(wire.quote_precision)
    lot = wire.lot_size or _power_of_ten(wire.base_precision)
    if tick is None or lot is None:
        raise WireError(f"instrument {wire.symbol!r} has no tick size or lot size")
    return Instrument(
        venue=wire.venue,
        symbol=wire.symbol,
        external_symbol=wire.external_symbol or wire.symbol,
        base=wire.base_asset or base,
        quote=wire.quote_asset or quote,
        tick_size=tick,
        lot_size=lot,
        min_quantity=wire.min_quantity or lot,
        max_quantity=wire.max_quantity or None,  # "0" means no maximum
        min_notional=wire.min_notional or Decimal(0),
        status=wire.status,
    )


def parse_balances(portfolio: WirePortfolio) -> list[Balance]:
    """Balances of one account; `total` is derived (free + locked) in the domain."""
    return [
        Balance(asset=b.security_symbol, free=b.free or Decimal(0),
                locked=b.locked or Decimal(0))
        for b in portfolio.balances
    ]


def parse_identity(account: WireTradingAccount) -> VenueIdentity:
    account_type = account.account_type or "SPOT"
    return VenueIdentity(
        external_trading_account_id=account.external_trading_account_id,
        account_type=account_type,
        external_account_type=account.external_account_type or account_type,
        description=account.nickname or f"{account_type.title()} account",
        venue_ref=account.trading_account_id or None,
    )


# ---------------------------------------------------------------- build: domain → wire


def submit_body(trading_account_id: str, venue: str, order: OrderRequest) -> SubmitOrderBody:
    """The submit request; the client order id doubles as Cadenza's idempotency key."""
    return SubmitOrderBody(
        trading_account_id=trading_account_id,
        instrument_id=f"{venue}:{order.symbol}",
        idempotency_key=order.client_order_id,
        client_order_id=order.client_order_id,
        order_side=order.side.value,
        order_type=order.order_type.value,
        limit_price=order.limit_price if order.order_type is OrderType.LIMIT else None,
        quantity=order.quantity,
        time_in_force=order.time_in_force.value,
    )


def credential_body(venue: str, credential: ApiCredential) -> CreateCredentialBody:
    return CreateCredentialBody(venue=venue, api_key=credential.api_key,
                                api_secret=credential.api_secret,
                                api_passphrase=credential.api_passphrase)


def dump(body: WireModel) -> dict[str, Any]:
    """A request body as JSON-ready camelCase, without absent optional fields."""
    return body.model_dump(mode="json", by_alias=True, exclude_none=True)
