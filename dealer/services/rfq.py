"""RFQ: firm quotes from the dealer's fresh LP books, and their acceptance as QUOTED orders.

A quote is priced by `pricing` from the consolidated book of the dealer's fresh LPs and stored
with its hedge plan (the request path is `dealer.services.quoting`; its helpers are here). An
accept fills it at most once (the quote row is locked, its status moves OPEN → FILLED in the
accepting transaction), and writes the order, its execution, the client's ledger postings
(outbox) and the hedge job in that same transaction.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import asyncpg

from dealer.errors import ApiError, Errors
from dealer.marketdata import MarketDataService
from dealer.services.dealers import DealerConfig, get_dealer
from dealer.uow import UnitOfWork
from ledger.assets import ScaleTable, UnknownAsset
from ledger.outbox import enqueue_transaction
from ledger.postings import client_fill
from pricing.errors import (
    InsufficientDepth,
    NotionalAboveMaximum,
    NotionalBelowMinimum,
    QuoteRefused,
    SizeAboveMaximum,
    SizeBelowMinimum,
)
from pricing.quote import InstrumentRules, Quote, QuotingConfig
from pricing.sweep import consolidate_for_sweep, sweep_quantity
from venues.base import split_symbol

FERMATA = "FERMATA"


@dataclass(frozen=True, slots=True)
class QuoteCommand:
    dealer_account_id: uuid.UUID
    trading_account_id: uuid.UUID
    symbol: str
    side: str | None
    quantity: Decimal | None
    quote_quantity: Decimal | None


@dataclass(frozen=True, slots=True)
class QuoteRecord:
    quote_id: uuid.UUID
    dealer_account_id: uuid.UUID
    trading_account_id: uuid.UUID
    symbol: str
    order_side: str | None
    quantity: Decimal
    bid_price: Decimal | None
    ask_price: Decimal | None
    hedge_plan: dict[str, Any]
    status: str
    created_at: dt.datetime
    expire_at: dt.datetime
    filled_order_id: uuid.UUID | None

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> QuoteRecord:
        return cls(**{name: row[name] for name in cls.__slots__})

    def price_for(self, side: str) -> Decimal | None:
        return self.ask_price if side == "BUY" else self.bid_price


_QUOTE_COLUMNS = ", ".join(QuoteRecord.__slots__)


def rules_from_rows(rows: Sequence[Mapping[str, Any]]) -> InstrumentRules | None:
    """The FERMATA instrument's rules: the strictest of the LP venues' instruments (so every
    hedge leg is a valid order on any of them); None when no LP venue's instrument is synced."""
    if not rows:
        return None

    def values(name: str) -> list[Decimal]:
        return [Decimal(str(r[name])) for r in rows if r[name] is not None]

    maxima = values("max_quantity")
    return InstrumentRules(
        tick_size=max(values("tick_size")), lot_size=max(values("lot_size")),
        min_quantity=max(values("min_quantity")),
        max_quantity=min(maxima) if maxima else None,
        min_notional=max(values("min_notional")))


async def exposure_of(conn: asyncpg.Connection, dealer_account_id: uuid.UUID, base: str
                      ) -> Decimal:
    """The dealer's unhedged base position: what open hedge jobs still have to do."""
    value = await conn.fetchval(
        """SELECT coalesce(sum(CASE WHEN side = 'SELL' THEN quantity - hedged_quantity
                                    ELSE hedged_quantity - quantity END), 0)
           FROM hedge_job WHERE dealer_account_id = $1 AND status NOT IN ('HEDGED', 'CANCELLED')
             AND split_part(symbol, '/', 1) = $2""",
        dealer_account_id, base)
    return Decimal(value)


def refusal(exc: QuoteRefused) -> ApiError:
    if isinstance(exc, InsufficientDepth):
        return ApiError(Errors.INSUFFICIENT_DEPTH, f"Not enough depth: {exc}", {"metadata": {
            "availableQuantity": str(exc.available_quantity)}})
    if isinstance(exc, SizeBelowMinimum | SizeAboveMaximum | NotionalBelowMinimum
                  | NotionalAboveMaximum):
        return ApiError(Errors.SIZE_OUT_OF_LIMITS, f"Size outside limits: {exc}")
    return ApiError(Errors.SIZE_OUT_OF_LIMITS, f"Cannot quote: {exc}")


def quoting_config(c: DealerConfig) -> QuotingConfig:
    return QuotingConfig(
        spread_bps=Decimal(c.spread_bps),
        spread_tiers=tuple((Decimal(t.up_to_notional), Decimal(t.spread_bps))
                           for t in c.spread_tiers),
        min_quote_notional=Decimal(c.min_quote_notional),
        max_quote_notional=Decimal(c.max_quote_notional),
        inventory_skew_bps=Decimal(c.inventory_skew_bps),
    )


def stored_plan(quote: Quote, lot_size: Decimal) -> dict[str, Any]:
    plan: dict[str, Any] = {}
    for name, side in (("bid", quote.bid), ("ask", quote.ask)):
        if side is None:
            continue
        sweep = side.sweep
        plan[name] = {
            "hedgeSide": sweep.hedge_side, "quantity": str(side.quantity),
            "lotSize": str(lot_size),
            "vwap": str(sweep.vwap), "worstPrice": str(sweep.worst_price),
            "worstRawPrice": str(sweep.worst_raw_price),
            "legs": [{"tradingAccountId": leg.source, "quantity": str(leg.quantity),
                      "vwap": str(leg.vwap), "worstPrice": str(leg.worst_price)}
                     for leg in side.hedge_plan],
        }
    return plan


async def get_quote(conn: asyncpg.Connection, quote_id: uuid.UUID) -> QuoteRecord:
    row = await conn.fetchrow(
        f"SELECT {_QUOTE_COLUMNS} FROM quote WHERE quote_id = $1", quote_id)  # noqa: S608
    if row is None:
        raise ApiError(Errors.QUOTE_NOT_FOUND)
    return QuoteRecord.from_row(row)


async def list_quotes(conn: asyncpg.Connection, *, dealer_account_id: uuid.UUID | None,
                      trading_account_id: uuid.UUID | None, status: str | None,
                      only: frozenset[uuid.UUID] | None, limit: int, offset: int
                      ) -> tuple[list[QuoteRecord], int]:
    where = """($1::uuid IS NULL OR dealer_account_id = $1)
               AND ($2::uuid IS NULL OR trading_account_id = $2)
               AND ($3::text IS NULL OR status = $3)
               AND ($4::uuid[] IS NULL OR trading_account_id = ANY($4::uuid[]))"""
    args = (dealer_account_id, trading_account_id, status,
            None if only is None else list(only))
    total = await conn.fetchval(f"SELECT count(*) FROM quote WHERE {where}", *args)  # noqa: S608
    rows = await conn.fetch(
        f"""SELECT {_QUOTE_COLUMNS} FROM quote WHERE {where}
            ORDER BY created_at DESC, quote_id LIMIT $5 OFFSET $6""",  # noqa: S608
        *args, limit, offset)
    return [QuoteRecord.from_row(r) for r in rows], int(total)


async def expire_quotes(conn: asyncpg.Connection, now: dt.datetime) -> int:
    """Mark quotes past their expiry (the accept path checks the time itself)."""
    result: str = await conn.execute(
        "UPDATE quote SET status = 'EXPIRED' WHERE status = 'OPEN' AND expire_at <= $1", now)
    return int(result.split()[-1])


# ---------------------------------------------------------------- accept


@dataclass(frozen=True, slots=True)
class AcceptCommand:
    trading_account_id: uuid.UUID
    instrument_id: str
    side: str
    quantity: Decimal
    quote_id: uuid.UUID
    idempotency_key: str | None
    client_order_id: str | None


@dataclass(frozen=True, slots=True)
class OrderRecord:
    trade_order_id: uuid.UUID
    trading_account_id: uuid.UUID
    instrument_id: str
    quote_id: uuid.UUID | None
    order_side: str
    order_type: str
    status: str
    reject_reason: str | None
    quantity: Decimal
    price: Decimal | None
    executed_quantity: Decimal
    executed_cost: Decimal
    idempotency_key: str | None
    client_order_id: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    executions: tuple[dict[str, Any], ...] = ()


_ORDER_COLUMNS = ", ".join(n for n in OrderRecord.__slots__ if n != "executions")


async def _orders(conn: asyncpg.Connection, where: str, *args: object) -> list[OrderRecord]:
    """Orders with their executions, in one query (`where` may end with ORDER BY / LIMIT)."""
    rows = await conn.fetch(
        f"""SELECT {_ORDER_COLUMNS},
                   coalesce((SELECT json_agg(json_build_object(
                       'executionId', e.execution_id, 'quantity', e.quantity::text,
                       'price', e.price::text, 'cost', e.cost::text,
                       'executedAt', e.executed_at) ORDER BY e.executed_at)
                    FROM trade_execution e WHERE e.trade_order_id = o.trade_order_id),
                    '[]'::json) AS executions
            FROM trade_order o WHERE {where}""", *args)  # noqa: S608
    return [OrderRecord(**{n: row[n] for n in OrderRecord.__slots__ if n != "executions"},
                        executions=tuple(row["executions"])) for row in rows]


async def _order(conn: asyncpg.Connection, where: str, *args: object) -> OrderRecord | None:
    found = await _orders(conn, where, *args)
    return found[0] if found else None


async def _existing(conn: asyncpg.Connection, cmd: AcceptCommand) -> OrderRecord | None:
    """The order an earlier accept with the same idempotencyKey or clientOrderId made; a key
    used for another quote or side, or keys naming two different orders, conflict."""
    existing: OrderRecord | None = None
    for column, value in (("idempotency_key", cmd.idempotency_key),
                          ("client_order_id", cmd.client_order_id)):
        if value is None:
            continue
        found = await _order(conn, f"o.trading_account_id = $1 AND o.{column} = $2",
                             cmd.trading_account_id, value)
        if found is None:
            continue
        if (found.quote_id != cmd.quote_id or found.order_side != cmd.side
                or (existing is not None and existing.trade_order_id != found.trade_order_id)):
            raise ApiError(Errors.IDEMPOTENCY_CONFLICT)
        existing = found
    return existing


def last_look(market_data: MarketDataService, quote: QuoteRecord, side: str,
              limit_bps: Decimal, now: dt.datetime) -> str | None:
    """Why the fill must be refused (the market moved against the dealer by more than
    `limit_bps` since the quote), or None to fill. The hedge is re-swept on the fresh books."""
    plan = quote.hedge_plan["ask" if side == "BUY" else "bid"]
    quoted_vwap = Decimal(plan["vwap"])
    now_ms = int(now.timestamp() * 1000)
    fresh = market_data.fresh_books(quote.dealer_account_id, quote.symbol, now_ms)
    if not fresh:
        return "last look: no fresh LP book"
    lot = Decimal(plan.get("lotSize", "0")) or quote.quantity
    book = consolidate_for_sweep([market_data.prepared_book(lp, b, lot) for lp, b in fresh], lot)
    try:
        sweep = sweep_quantity(book.asks if side == "BUY" else book.bids, quote.quantity)
    except QuoteRefused:
        return "last look: not enough depth any more"
    moved = (sweep.vwap - quoted_vwap) / quoted_vwap * 10000
    adverse = moved if side == "BUY" else -moved
    if adverse > limit_bps:
        return f"last look: the market moved {adverse:.2f} bps against the quote"
    return None


async def accept_quote(uow: UnitOfWork, cmd: AcceptCommand, scales: ScaleTable,
                       now: dt.datetime, market_data: MarketDataService | None = None
                       ) -> tuple[OrderRecord, bool]:
    """Fill the quote once; answers the order and whether this call created it."""
    conn = uow.conn
    existing = await _existing(conn, cmd)
    if existing is not None:
        return existing, False
    row = await conn.fetchrow(
        f"SELECT {_QUOTE_COLUMNS} FROM quote WHERE quote_id = $1 FOR UPDATE",  # noqa: S608
        cmd.quote_id)
    if row is None:
        raise ApiError(Errors.QUOTE_NOT_FOUND)
    # Again under the quote's lock: a retry racing the accept it repeats waited for that
    # accept's commit above, and answers its order rather than "already filled".
    existing = await _existing(conn, cmd)
    if existing is not None:
        return existing, False
    quote = QuoteRecord.from_row(row)
    if quote.trading_account_id != cmd.trading_account_id:
        raise ApiError(Errors.QUOTE_FOREIGN_CLIENT)
    if cmd.instrument_id != f"{FERMATA}:{quote.symbol}":
        raise ApiError(Errors.QUOTE_MISMATCH,
                       f"The quote is for {FERMATA}:{quote.symbol}, not {cmd.instrument_id}")
    price = quote.price_for(cmd.side)
    if price is None or (quote.order_side is not None and quote.order_side != cmd.side):
        raise ApiError(Errors.QUOTE_MISMATCH, f"The quote has no {cmd.side} side")
    if cmd.quantity != quote.quantity:
        raise ApiError(Errors.QUOTE_MISMATCH,
                       f"The quote is for quantity {quote.quantity}, not {cmd.quantity}")
    if quote.status == "FILLED":
        raise ApiError(Errors.QUOTE_ALREADY_FILLED)
    if quote.status == "EXPIRED" or now >= quote.expire_at:
        raise ApiError(Errors.QUOTE_EXPIRED)
    dealer = await get_dealer(conn, quote.dealer_account_id)
    if dealer.config.last_look_bps is not None and market_data is not None:
        reason = last_look(market_data, quote, cmd.side, Decimal(dealer.config.last_look_bps),
                           now)
        if reason is not None:
            return await _reject(uow, cmd, quote, reason, now), True
    base_code, quote_code = split_symbol(quote.symbol)
    try:
        base, quote_asset = scales.asset(base_code), scales.asset(quote_code)
    except UnknownAsset as exc:
        raise ApiError(Errors.SYMBOL_NOT_QUOTED, str(exc)) from None
    order_id = uuid.uuid4()
    cost = price * quote.quantity
    plan = quote.hedge_plan["ask" if cmd.side == "BUY" else "bid"]
    try:
        # The fill in one statement (it sits between the client and the hedge): the order,
        # its execution, the quote filled and the hedge job (whose trigger wakes the hedgers).
        await conn.execute(
            """WITH filled AS (
                   INSERT INTO trade_order (trade_order_id, trading_account_id, instrument_id,
                       quote_id, order_side, order_type, status, quantity, price,
                       executed_quantity, executed_cost, idempotency_key, client_order_id,
                       created_at, updated_at)
                   VALUES ($1, $2, $3, $4, $5, 'QUOTED', 'FILLED', $6, $7, $6, $8, $9, $10,
                           $11, $11)
                   RETURNING trade_order_id),
               execution AS (
                   INSERT INTO trade_execution (execution_id, trade_order_id, quantity, price,
                       cost, executed_at)
                   SELECT $12, trade_order_id, $6, $7, $8, $11 FROM filled),
               quote AS (
                   UPDATE quote SET status = 'FILLED', filled_order_id = $1
                   WHERE quote_id = $4)
               INSERT INTO hedge_job (job_id, dealer_account_id, trade_order_id, symbol, side,
                   quantity, plan, status, created_at, updated_at)
               SELECT $13, $14, trade_order_id, $15, $16, $6, $17, 'PENDING', $11, $11
               FROM filled""",
            order_id, cmd.trading_account_id, cmd.instrument_id, quote.quote_id, cmd.side,
            quote.quantity, price, cost, cmd.idempotency_key, cmd.client_order_id, now,
            uuid.uuid4(), uuid.uuid4(), quote.dealer_account_id, quote.symbol,
            plan["hedgeSide"], plan)
    except asyncpg.UniqueViolationError as exc:
        # The same key, committed meanwhile by an accept of another quote (the quote's own
        # fills are serialised by its lock): the key belongs to that order.
        if exc.constraint_name in ("trade_order_idempotency_uq", "trade_order_client_order_uq"):
            raise ApiError(Errors.IDEMPOTENCY_CONFLICT) from None
        raise
    await enqueue_transaction(conn, client_fill(
        cmd.trading_account_id, quote.dealer_account_id, cmd.side, base, quote_asset,
        quote.quantity, price, reference=f"order-{order_id}",
        metadata={"quoteId": str(quote.quote_id), "orderId": str(order_id)},
        timestamp=now), now)
    order = await _order(conn, "o.trade_order_id = $1", order_id)
    assert order is not None
    await uow.commit()
    return order, True


async def _reject(uow: UnitOfWork, cmd: AcceptCommand, quote: QuoteRecord, reason: str,
                  now: dt.datetime) -> OrderRecord:
    """A REJECTED order (the quote is spent: it expires); nothing is booked or hedged."""
    order_id = uuid.uuid4()
    await uow.conn.execute(
        """INSERT INTO trade_order (trade_order_id, trading_account_id, instrument_id, quote_id,
               order_side, order_type, status, reject_reason, quantity, price,
               idempotency_key, client_order_id, created_at, updated_at)
           VALUES ($1, $2, $3, $4, $5, 'QUOTED', 'REJECTED', $6, $7, $8, $9, $10, $11, $11)""",
        order_id, cmd.trading_account_id, cmd.instrument_id, quote.quote_id, cmd.side, reason,
        quote.quantity, quote.price_for(cmd.side), cmd.idempotency_key, cmd.client_order_id,
        now)
    await uow.conn.execute("UPDATE quote SET status = 'EXPIRED' WHERE quote_id = $1",
                           quote.quote_id)
    order = await _order(uow.conn, "o.trade_order_id = $1", order_id)
    assert order is not None
    await uow.commit()
    return order


async def list_orders(conn: asyncpg.Connection, *, trade_order_id: uuid.UUID | None,
                      status: str | None, trading_account_id: uuid.UUID | None,
                      instrument_id: str | None, start: dt.datetime | None,
                      end: dt.datetime | None, only: frozenset[uuid.UUID] | None,
                      ascending: bool, limit: int, offset: int
                      ) -> tuple[list[OrderRecord], int]:
    where = """($1::uuid IS NULL OR o.trade_order_id = $1)
               AND ($2::text IS NULL OR o.status = $2)
               AND ($3::uuid IS NULL OR o.trading_account_id = $3)
               AND ($4::text IS NULL OR o.instrument_id = $4)
               AND ($5::timestamptz IS NULL OR o.created_at >= $5)
               AND ($6::timestamptz IS NULL OR o.created_at < $6)
               AND ($7::uuid[] IS NULL OR o.trading_account_id = ANY($7::uuid[]))"""
    args = (trade_order_id, status, trading_account_id, instrument_id, start, end,
            None if only is None else list(only))
    total = await conn.fetchval(
        f"SELECT count(*) FROM trade_order o WHERE {where}", *args)  # noqa: S608
    orders = await _orders(
        conn, f"""{where} ORDER BY o.created_at {'ASC' if ascending else 'DESC'},
                  o.trade_order_id LIMIT $8 OFFSET $9""", *args, limit, offset)
    return orders, int(total)
