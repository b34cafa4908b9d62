"""RFQ endpoints: request a firm quote, read quotes, accept one with a QUOTED order (seeds/001),
and list orders."""

from __future__ import annotations

import datetime as dt
import re
import time
import uuid
from decimal import Decimal
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import Field, StringConstraints, model_validator

from dealer import logs
from dealer.api.framework import Api
from dealer.api.schemas import OrderStatus, OrderType, Side, Symbol, TimeInForce
from dealer.appkeys import (
    ASSET_SCALES,
    CLOCK,
    HEDGE_WORKER,
    MARKET_DATA,
    METRICS,
    POOL,
    QUOTE_ROUTE,
    SETTINGS,
)
from dealer.auth import Principal, Role
from dealer.errors import ApiError, Errors, invalid_fields
from dealer.middlewares import answered_code
from dealer.services import rfq
from dealer.uow import connection
from dealer.wire import (
    DecimalString,
    ListQuery,
    Page,
    QueryModel,
    Serialized,
    TimeTexts,
    Uuid,
    UuidTable,
    WireModel,
    iso,
    millis,
)
from ledger.assets import ScaleTable, booked_amount
from venues.base import split_symbol

QuoteStatus = Literal["OPEN", "FILLED", "EXPIRED"]
InstrumentId = Annotated[str, StringConstraints(pattern=r"^FERMATA:[A-Z0-9]{1,20}/[A-Z0-9]{1,20}$")]
# The order list's filter: an instrument id, or empty for any. One pattern rather than a union
# with "", whose refusal would name each member ("instrumentId.literal['']") for the field.
InstrumentIdFilter = Annotated[str, StringConstraints(
    pattern=r"^(FERMATA:[A-Z0-9]{1,20}/[A-Z0-9]{1,20})?$")]
Key = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$")]
TRADERS = [Role.ADMIN, Role.TRADER]
EVERYONE = [Role.ADMIN, Role.VIEWER, Role.TRADER]


# The usual quote request, read without the model (`quick_quote_command`): these keys only, the
# symbol and a base quantity in the model's own grammar (ASCII digits, as `DecimalString`).
_QUICK_KEYS = frozenset({"dealerAccountId", "tradingAccountId", "symbol", "orderSide",
                         "quantity"})
_QUICK_SYMBOL = re.compile(r"[A-Z0-9]{1,20}/[A-Z0-9]{1,20}")
_QUICK_AMOUNT = re.compile(r"-?[0-9]+(\.[0-9]+)?")
_SIDES = frozenset({"BUY", "SELL"})


def quick_quote_command(body: dict[str, Any], uuids: UuidTable) -> rfq.QuoteCommand | None:
    """The command of a quote request in its usual form, read without the model: ids this app
    has read before (`UuidTable`), a symbol, an optional side and a positive base quantity, of
    the types strict validation takes. None for anything else (an id not seen yet, an
    instrumentId, a quoteQuantity, a value of another type or form, another key), which the
    model validates: it accepts or refuses it with the field named. Whatever this answers, the
    model's validation gives the same command (tests/unit/test_quick_quote_command.py)."""
    if not body.keys() <= _QUICK_KEYS:
        return None
    dealer, client = body.get("dealerAccountId"), body.get("tradingAccountId")
    symbol, side, quantity = body.get("symbol"), body.get("orderSide"), body.get("quantity")
    if (type(dealer) is not str or type(client) is not str or type(symbol) is not str
            or type(quantity) is not str or not (side is None or type(side) is str)):
        return None
    dealer_id, client_id = uuids.get(dealer), uuids.get(client)
    if (dealer_id is None or client_id is None or _QUICK_SYMBOL.fullmatch(symbol) is None
            or (side is not None and side not in _SIDES) or len(quantity) > 64
            or _QUICK_AMOUNT.fullmatch(quantity) is None or not _positive(quantity)):
        return None
    return rfq.QuoteCommand(dealer_id, client_id, symbol, side, Decimal(quantity), None)


def _positive(amount: str) -> bool:
    """Whether a DecimalString (digits, an optional sign and point) is above zero, read from
    its text: a digit other than 0, and no minus sign."""
    return not amount.startswith("-") and bool(amount.strip("0."))


def plain(value: Decimal | None) -> str | None:
    """A decimal as the seeds carry it: digits, never an exponent."""
    return None if value is None else format(value.normalize(), "f")


class QuoteRequestBody(WireModel):
    dealer_account_id: Uuid
    trading_account_id: Uuid = Field(description="The client account")
    symbol: Symbol | None = Field(default=None, description="BASE/QUOTE")
    instrument_id: InstrumentId | None = Field(default=None, description="FERMATA:BASE/QUOTE")
    order_side: Side | None = Field(default=None, description="The client's side; omitted: "
                                    "two-way quote")
    quantity: DecimalString | None = Field(default=None, description="Base quantity")
    quote_quantity: DecimalString | None = Field(default=None, description="Quote-currency "
                                                 "amount to spend or receive")

    @model_validator(mode="after")
    def _one_of_each(self) -> QuoteRequestBody:
        # Rules over several fields: refused naming those fields (a ValueError here would name
        # only "body"). Raised past pydantic, which passes on what is not a ValueError.
        problems: list[tuple[str, str]] = []
        if (self.symbol is None) == (self.instrument_id is None):
            message = "give exactly one of symbol and instrumentId"
            problems += [("symbol", message), ("instrumentId", message)]
        if (self.quantity is None) == (self.quote_quantity is None):
            message = "give exactly one of quantity and quoteQuantity"
            problems += [("quantity", message), ("quoteQuantity", message)]
        elif not _positive(self.quantity or self.quote_quantity or "0"):
            problems.append(("quantity" if self.quantity is not None else "quoteQuantity",
                             "must be positive"))
        elif self.quote_quantity is not None and self.order_side is None:
            problems.append(("orderSide", "is required with quoteQuantity (a two-way quote "
                             "needs a base quantity)"))
        if problems:
            raise invalid_fields(problems)
        return self

    @property
    def resolved_symbol(self) -> str:
        return self.symbol or (self.instrument_id or "").removeprefix("FERMATA:")

    @property
    def command(self) -> rfq.QuoteCommand:
        """The use case's command."""
        return rfq.QuoteCommand(
            self.dealer_account_id, self.trading_account_id, self.resolved_symbol,
            self.order_side, None if self.quantity is None else Decimal(self.quantity),
            None if self.quote_quantity is None else Decimal(self.quote_quantity))


class QuoteOut(WireModel):
    quote_id: uuid.UUID
    dealer_account_id: uuid.UUID
    trading_account_id: uuid.UUID
    instrument_id: str
    symbol: str
    order_side: Side | None
    price: str | None = Field(description="The price of the requested side (null: two-way)")
    bid_price: str | None = Field(description="What the dealer pays when the client SELLs")
    ask_price: str | None = Field(description="What the client pays when it BUYs")
    quantity: str
    quote_quantity: str | None = Field(description="price * quantity (null: two-way)")
    bid_quote_quantity: str | None
    ask_quote_quantity: str | None
    status: QuoteStatus = Field(description="As of the read: a quote past its expireAt is "
                                "EXPIRED, even before the expiry job has marked it")
    created_at: int
    created_at_date_time: str
    expire_at: int
    expire_at_date_time: str


class QuoteIdQuery(QueryModel):
    quote_id: Uuid


class QuoteListQuery(ListQuery):
    dealer_account_id: Uuid | None = None
    trading_account_id: Uuid | None = None
    status: QuoteStatus | None = Field(default=None, description="As of the read (a quote past "
                                       "its expireAt is EXPIRED)")


class SubmitOrderBody(WireModel):
    trading_account_id: Uuid
    instrument_id: str = Field(max_length=100)
    order_side: Side
    order_type: OrderType
    quantity: DecimalString = Field(description="The quote's base quantity (QUOTED)")
    quote_id: Uuid | None = None
    idempotency_key: Key | None = None
    client_order_id: Key | None = None
    # Fields of other order types: a QUOTED order refuses those that would change or restrict
    # what it fills (see `_quoted_order_fields`), rather than ignore them.
    limit_price: DecimalString | None = Field(default=None, description="Not for QUOTED orders")
    stop_price: DecimalString | None = Field(default=None, description="Not for QUOTED orders")
    quantity_type: Literal["BASE", "QUOTE", "POSITION_RATIO", "POSITION_PERCENTAGE"] | None = \
        Field(default=None, description="QUOTED orders: BASE or omitted")
    quantity_rounding: Literal["", "UP", "DOWN", "NEAREST", "CEIL", "FLOOR", "HALF_UP",
                               "HALF_DOWN", "HALF_EVEN"] | None = Field(
        default=None, description="QUOTED orders: no effect, the quantity must be the quote's")
    position_id: Uuid | None = Field(default=None, description="Not for QUOTED orders")
    time_in_force: TimeInForce | None = Field(
        default=None, description="QUOTED orders: FOK, IOC, empty or omitted (FOK). The order "
                                  "keeps it and answers it; either is filled at once, whole, "
                                  "or not at all. A retry with the same key and another time "
                                  "in force is -160013")
    expire_at: int | None = Field(default=None, description="Not for QUOTED orders")
    leverage: int | None = Field(default=None, description="QUOTED orders: 0 or omitted")
    await_closed: bool | None = Field(default=None, description="QUOTED orders answer their "
                                      "final state (FILLED or REJECTED) in any case")


class FeeOut(WireModel):
    security: str
    asset: str
    venue: str
    quantity: str


class ExecutionOut(WireModel):
    execution_id: uuid.UUID
    external_trade_id: str | None
    venue: str
    instrument_id: str
    order_side: Side
    executed_quantity: str
    executed_price: str
    executed_cost: str
    fees: list[FeeOut]
    executed_at: int
    executed_at_date_time: str


class TradeOrderOut(WireModel):
    """seeds/001's TradeOrder, every field in its order; a QUOTED order is final when made, so
    it has no position, stop, rounding, expiry or cancellation."""

    trade_order_id: uuid.UUID
    trading_account_id: uuid.UUID
    venue: str
    position_id: uuid.UUID | None = None
    instrument_id: str
    quote_id: uuid.UUID | None
    base_asset: str
    quote_asset: str
    order_side: Side
    order_type: OrderType = Field(description="QUOTED")
    time_in_force: rfq.QuotedTimeInForce = Field(
        description="As submitted: FOK or IOC (FOK when it was empty or omitted); either is "
                    "filled at once, whole, or not at all")
    status: OrderStatus = Field(description="A QUOTED order is FILLED, or REJECTED by the "
                                "dealer's last look")
    reject_reason: str | None
    cancel_reason: str | None
    limit_price: str | None
    stop_price: str | None = None
    quantity: str
    order_quantity_type: str
    quantity_rounding: str = ""
    executed_price: str | None
    executed_quantity: str
    executed_cost: str
    fees: list[FeeOut]
    executions: list[ExecutionOut]
    created_at: int
    created_at_date_time: str
    updated_at: int
    updated_at_date_time: str
    expire_at: int | None = None
    expire_at_date_time: str | None = None
    canceled_at: int | None = None
    canceled_at_date_time: str | None = None


class OrderListQuery(ListQuery):
    trade_order_id: Uuid | None = None
    order_status: Literal["", OrderStatus] | None = Field(default=None,
                                                         description="Empty: any status")
    trading_account_id: Uuid | None = None
    instrument_id: InstrumentIdFilter | None = Field(
        default=None, description="FERMATA:BASE/QUOTE (empty: any, as for orderStatus)")
    start_time: int | None = Field(default=None, ge=0, le=10**14, description="Orders created "
                                   "at or after (unix ms)")
    end_time: int | None = Field(default=None, ge=0, le=10**14, description="Orders created "
                                 "before (unix ms); after startTime")
    cursor: str | None = Field(default=None, max_length=200, description="Not used: pages by "
                               "offset")
    ascending: bool = False

    @model_validator(mode="after")
    def _window(self) -> OrderListQuery:
        if (self.start_time is not None and self.end_time is not None
                and self.start_time >= self.end_time):
            # An empty page would read as "no orders then"; the window itself is wrong (it
            # holds no time at all: startTime is in it, endTime is not).
            raise invalid_fields([("startTime", "must be before endTime"),
                                  ("endTime", "must be after startTime")])
        return self


_QUOTE_ERRORS = [Errors.DEALER_NOT_FOUND, Errors.CLIENT_NOT_FOUND, Errors.ACCOUNT_NOT_ACTIVE,
                 Errors.ACCOUNT_FORBIDDEN, Errors.DEALER_PAUSED, Errors.SYMBOL_NOT_QUOTED,
                 Errors.NO_LINKED_LP, Errors.BOOKS_STALE, Errors.INSUFFICIENT_DEPTH,
                 Errors.SIZE_OUT_OF_LIMITS, Errors.EXPOSURE_LIMIT]
_ACCEPT_ERRORS = [Errors.UNSUPPORTED_ORDER_TYPE, Errors.ACCOUNT_FORBIDDEN,
                  Errors.ACCOUNT_NOT_ACTIVE, Errors.QUOTE_NOT_FOUND, Errors.QUOTE_FOREIGN_CLIENT,
                  Errors.QUOTE_MISMATCH,
                  Errors.QUOTE_EXPIRED, Errors.QUOTE_ALREADY_FILLED, Errors.IDEMPOTENCY_CONFLICT,
                  Errors.SYMBOL_NOT_QUOTED]


# What quote/get and quote/list say of a quote's status (`rfq.get_quote`, `rfq.list_quotes`).
_READ_STATUS_NOTE = (
    "A quote's status is worked out when it is read: a quote past its expireAt reads EXPIRED "
    "even before the scheduled expiry job has marked it (the job runs every "
    "DEALER_QUOTE_EXPIRY_MS and marks a quote a few seconds after its expireAt), so a read "
    "never offers a quote that an accept would refuse as expired (-160002).")


def register(api: Api) -> None:
    api.post("/api/v3/fermata/quote/request", summary="A firm quote from the dealer's fresh LP "
             "books (one side, or two-way when orderSide is omitted)", tag="rfq",
             roles=TRADERS, body=QuoteRequestBody, response=QuoteOut,
             errors=_QUOTE_ERRORS, repeated_bodies=True, refused=_quote_refused,
             reads=_quote_command, quick=quick_quote_command)(request_quote)
    api.get("/api/v3/fermata/quote/get", summary="One quote", tag="rfq", roles=EVERYONE,
            query=QuoteIdQuery, response=QuoteOut, description=_READ_STATUS_NOTE,
            errors=[Errors.QUOTE_NOT_FOUND, Errors.ACCOUNT_FORBIDDEN])(get_quote)
    api.get("/api/v3/fermata/quote/list", summary="Quotes, newest first (a trader sees its "
            "own)", tag="rfq", roles=EVERYONE, query=QuoteListQuery,
            description=_READ_STATUS_NOTE + " The status filter matches the status as read.",
            response=Page[QuoteOut], errors=[Errors.ACCOUNT_FORBIDDEN])(list_quotes)
    api.post("/api/v3/trading/order/submit", summary="Accept a quote: orderType QUOTED with "
             "its quoteId, side and quantity (seeds/001); answers the filled TradeOrder",
             tag="orders", roles=TRADERS, body=SubmitOrderBody, response=list[TradeOrderOut],
             errors=_ACCEPT_ERRORS, refused=_accept_refused)(submit_order)
    api.get("/api/v3/trading/order/list", summary="Orders with the seeds/001 filters (a trader "
            "sees its own)", tag="orders", roles=EVERYONE, query=OrderListQuery,
            response=Page[TradeOrderOut], errors=[Errors.ACCOUNT_FORBIDDEN])(list_orders)


def _may_act_for(principal: Principal | None, account: uuid.UUID) -> None:
    assert principal is not None
    if principal.role is not Role.ADMIN and not principal.may_act_for(account):
        raise ApiError(Errors.ACCOUNT_FORBIDDEN)


def _may_read(principal: Principal | None, account: uuid.UUID | None) -> None:
    """A list filtered by a client account a trader's token does not list is refused rather
    than answered empty (which would read as "nothing there")."""
    own = _own(principal)
    if account is not None and own is not None and account not in own:
        raise ApiError(Errors.ACCOUNT_FORBIDDEN)


def _own(principal: Principal | None) -> frozenset[uuid.UUID] | None:
    assert principal is not None
    return principal.accounts if principal.role is Role.TRADER else None


def _outcome(exc: Exception) -> tuple[str, str]:
    """How a quote request or accept that raised `exc` is counted: `refused` with the code it
    is answered with (`dealer.middlewares.answered_code`), or `failed` when the daemon could
    not answer it (database out of reach, stopping, a crash: retry)."""
    code = answered_code(exc)
    failed = code is Errors.SERVICE_UNAVAILABLE or code is Errors.INTERNAL
    return ("failed" if failed else "refused"), code.code


def _quote_refused(app: web.Application, exc: Exception) -> None:
    app[METRICS].quote_outcome(*_outcome(exc))


def _accept_refused(app: web.Application, exc: Exception) -> None:
    app[METRICS].accepts.labels(*_outcome(exc)).inc()


def quote_wire(q: rfq.QuoteRecord, scales: ScaleTable,
               times: TimeTexts | None = None) -> dict[str, Any]:
    """A quote in its wire form, exactly what QuoteOut dumps (camelCase keys in its field order;
    UUIDs are left to orjson, which writes them as QuoteOut does). The quote endpoint answers
    this directly: a QuoteOut validated and dumped again per request cost more than the rest of
    the serialisation. Quote-currency amounts are what the ledger books for each side (rounded
    to the asset's scale in the dealer's favour), the amount its fill will show. `times`: the
    quote endpoint's (a fresh one otherwise)."""
    bid_price, ask_price, quantity = q.bid_price, q.ask_price, q.quantity
    bid_plain, ask_plain = plain(bid_price), plain(ask_price)
    code = q.symbol.partition("/")[2]
    asset = scales.asset(code) if code in scales else None  # None: a scale since removed
    ask_qq = None if ask_price is None else plain(
        ask_price * quantity if asset is None
        else booked_amount(ask_price * quantity, asset, received_by_dealer=True))
    bid_qq = None if bid_price is None else plain(
        bid_price * quantity if asset is None
        else booked_amount(bid_price * quantity, asset, received_by_dealer=False))
    if q.order_side is None:
        price_plain = quote_quantity = None
    elif q.order_side == "BUY":
        price_plain, quote_quantity = ask_plain, ask_qq
    else:
        price_plain, quote_quantity = bid_plain, bid_qq
    if times is None:
        times = TimeTexts()
    created_ms, created_text = times.of(q.created_at)
    expire_ms, expire_text = times.of(q.expire_at)
    return {
        "quoteId": q.quote_id, "dealerAccountId": q.dealer_account_id,
        "tradingAccountId": q.trading_account_id, "instrumentId": f"FERMATA:{q.symbol}",
        "symbol": q.symbol, "orderSide": q.order_side, "price": price_plain,
        "bidPrice": bid_plain, "askPrice": ask_plain, "quantity": plain(quantity) or "0",
        "quoteQuantity": quote_quantity, "bidQuoteQuantity": bid_qq, "askQuoteQuantity": ask_qq,
        "status": q.status,
        "createdAt": created_ms, "createdAtDateTime": created_text,
        "expireAt": expire_ms, "expireAtDateTime": expire_text,
    }


def quote_out(q: rfq.QuoteRecord, scales: ScaleTable) -> QuoteOut:
    return QuoteOut.model_validate(quote_wire(q, scales))


def _quote_command(body: QuoteRequestBody) -> rfq.QuoteCommand:
    return body.command


async def request_quote(request: web.Request, principal: Principal | None,
                        command: rfq.QuoteCommand) -> Serialized:
    """Takes the request's command (`_quote_command`, `quick_quote_command`)."""
    route = request.app[QUOTE_ROUTE]
    metrics = route.metrics
    started = time.perf_counter()
    try:
        _may_act_for(principal, command.trading_account_id)
        record = await route.quoter.request_quote(command, route.clock())
    except Exception as exc:
        metrics.quote_outcome(*_outcome(exc))
        raise
    metrics.quote_outcome("quoted", "ok")
    metrics.quote_duration(time.perf_counter() - started)
    metrics.fills_known(record.symbol)
    logs.bind_one("quote_id", record.quote_id)
    return Serialized(quote_wire(record, route.scales, route.times))


async def get_quote(request: web.Request, principal: Principal | None,
                    params: QuoteIdQuery) -> QuoteOut:
    async with connection(request.app[POOL]) as conn:
        record = await rfq.get_quote(conn, params.quote_id, request.app[CLOCK]())
    own = _own(principal)
    if own is not None and record.trading_account_id not in own:
        raise ApiError(Errors.ACCOUNT_FORBIDDEN)
    return quote_out(record, request.app[ASSET_SCALES])


async def list_quotes(request: web.Request, principal: Principal | None,
                      params: QuoteListQuery) -> Page[QuoteOut]:
    _may_read(principal, params.trading_account_id)
    async with connection(request.app[POOL]) as conn:
        records, total = await rfq.list_quotes(
            conn, dealer_account_id=params.dealer_account_id,
            trading_account_id=params.trading_account_id, status=params.status,
            only=_own(principal), now=request.app[CLOCK](), limit=params.limit,
            offset=params.offset)
    scales = request.app[ASSET_SCALES]
    return Page([quote_out(r, scales) for r in records], total, params.limit, params.offset)


def order_out(order: rfq.OrderRecord) -> TradeOrderOut:
    base, quote = split_symbol(order.instrument_id.partition(":")[2])
    executions = [
        ExecutionOut(
            execution_id=uuid.UUID(str(e["executionId"])), external_trade_id=None,
            venue="FERMATA", instrument_id=order.instrument_id, order_side=order.order_side,
            executed_quantity=plain(Decimal(e["quantity"])) or "0",
            executed_price=plain(Decimal(e["price"])) or "0",
            executed_cost=plain(Decimal(e["cost"])) or "0", fees=[],
            executed_at=millis(_time(e["executedAt"])) or 0,
            executed_at_date_time=iso(_time(e["executedAt"])) or "")
        for e in order.executions
    ]
    return TradeOrderOut(
        trade_order_id=order.trade_order_id, trading_account_id=order.trading_account_id,
        venue="FERMATA", instrument_id=order.instrument_id, quote_id=order.quote_id,
        base_asset=base, quote_asset=quote, order_side=order.order_side,
        order_type=order.order_type, time_in_force=order.time_in_force, status=order.status,
        reject_reason=order.reject_reason, cancel_reason=None, limit_price=None,
        quantity=plain(order.quantity) or "0", order_quantity_type="BASE",
        executed_price=plain(order.price if order.executed_quantity else None),
        executed_quantity=plain(order.executed_quantity) or "0",
        executed_cost=plain(order.executed_cost) or "0", fees=[], executions=executions,
        created_at=millis(order.created_at) or 0,
        created_at_date_time=iso(order.created_at) or "",
        updated_at=millis(order.updated_at) or 0,
        updated_at_date_time=iso(order.updated_at) or "")


def _quoted_order_fields(params: SubmitOrderBody) -> None:
    """Refuse (-100001, nothing written) the fields a QUOTED order cannot honour: its price,
    quantity and timing are the quote's."""
    problems: list[tuple[str, str]] = []
    if Decimal(params.quantity) <= 0:
        problems.append(("quantity", "must be positive"))
    for field, value in (("limitPrice", params.limit_price), ("stopPrice", params.stop_price),
                         ("positionId", params.position_id), ("expireAt", params.expire_at)):
        if value is not None:
            problems.append((field, "does not apply to a QUOTED order"))
    if params.quantity_type not in (None, "BASE"):
        problems.append(("quantityType", "must be BASE for a QUOTED order"))
    if params.time_in_force not in (None, "", "FOK", "IOC"):
        problems.append(("timeInForce", "must be FOK or IOC for a QUOTED order"))
    if params.leverage not in (None, 0):
        problems.append(("leverage", "must be 0 for a QUOTED order"))
    if problems:
        raise invalid_fields(problems, "quoted_order")


def _quoted_time_in_force(params: SubmitOrderBody) -> rfq.QuotedTimeInForce:
    """The time in force of a QUOTED order whose fields `_quoted_order_fields` let through."""
    return "IOC" if params.time_in_force == "IOC" else "FOK"


def _time(value: object) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value
    return dt.datetime.fromisoformat(str(value))


async def submit_order(request: web.Request, principal: Principal | None,
                       params: SubmitOrderBody) -> list[TradeOrderOut]:
    app = request.app
    metrics = app[METRICS]
    try:
        if params.order_type != "QUOTED" or params.quote_id is None:
            raise ApiError(Errors.UNSUPPORTED_ORDER_TYPE)
        _quoted_order_fields(params)
        _may_act_for(principal, params.trading_account_id)
        cmd = rfq.AcceptCommand(
            params.trading_account_id, params.instrument_id, params.order_side,
            Decimal(params.quantity), params.quote_id, params.idempotency_key,
            params.client_order_id, _quoted_time_in_force(params))
        async with connection(app[POOL]) as conn:
            order, created = await rfq.accept_quote(
                conn, cmd, app[ASSET_SCALES], app[CLOCK](), app[MARKET_DATA], clock=app[CLOCK],
                hedger=app[HEDGE_WORKER] if app[SETTINGS].hedge_inline else None)
    except Exception as exc:
        metrics.accepts.labels(*_outcome(exc)).inc()
        raise
    logs.bind(trade_order_id=order.trade_order_id)
    if created and order.status == "REJECTED":
        metrics.accepts.labels("rejected", "last_look").inc()
    elif created:
        metrics.accepts.labels("filled", "ok").inc()
        symbol = order.instrument_id.partition(":")[2]
        metrics.fills.labels(symbol, order.order_side).inc()
        metrics.fill_notional.labels(split_symbol(symbol)[1]).inc(float(order.executed_cost))
    else:
        metrics.accepts.labels("replayed", "ok").inc()
    return [order_out(order)]


async def list_orders(request: web.Request, principal: Principal | None,
                      params: OrderListQuery) -> Page[TradeOrderOut]:
    def moment(ms: int | None) -> dt.datetime | None:
        return None if ms is None else dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)

    _may_read(principal, params.trading_account_id)

    async with connection(request.app[POOL]) as conn:
        orders, total = await rfq.list_orders(
            conn, trade_order_id=params.trade_order_id, status=params.order_status or None,
            trading_account_id=params.trading_account_id,
            instrument_id=params.instrument_id or None, start=moment(params.start_time),
            end=moment(params.end_time), only=_own(principal),
            ascending=params.ascending, limit=params.limit, offset=params.offset)
    return Page([order_out(o) for o in orders], total, params.limit, params.offset)
