"""RFQ: firm quotes from the dealer's fresh LP books, and their acceptance as QUOTED orders.

A quote is priced by `pricing` from the consolidated book of the dealer's fresh LPs and stored
with its hedge plan (the request path is `dealer.services.quoting`; its helpers are here). An
accept fills it at most once (the quote row is locked, its status moves OPEN → FILLED in the
accepting transaction), and writes the order, its execution, the client's ledger postings
(outbox) and the hedge job in that same transaction.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal, NamedTuple, Protocol

import asyncpg

from dealer.errors import ApiError, Errors
from dealer.marketdata import MarketDataService
from dealer.services.dealers import DealerConfig
from dealer.services.exposure import JOB_UNHEDGED_SQL
from hedging.worker import InlineHedge
from ledger.assets import InvalidAmount, ScaleTable, UnknownAsset, booked_amount
from ledger.outbox import outbox_arguments, scale_refusal
from ledger.postings import InvalidFill, client_fill
from pricing.errors import (
    InsufficientDepth,
    NotionalAboveMaximum,
    NotionalBelowMinimum,
    QuoteRefused,
    SizeAboveMaximum,
    SizeBelowMinimum,
)
from pricing.quote import InstrumentRules, Quote, QuotingConfig
from pricing.sweep import EXACT, consolidate_for_sweep, sweep_quantity
from venues.base import split_symbol

log = logging.getLogger(__name__)

FERMATA = "FERMATA"
# The time in force a QUOTED order takes (an empty or omitted one is FOK): either fills the quote
# at once, whole, or not at all; the order keeps the one it was submitted with.
QuotedTimeInForce = Literal["FOK", "IOC"]


class QuoteCommand(NamedTuple):
    """A quote request, as the use case takes it (a tuple: one is made per request)."""

    dealer_account_id: uuid.UUID
    trading_account_id: uuid.UUID
    symbol: str
    side: str | None
    quantity: Decimal | None
    quote_quantity: Decimal | None


class QuoteRecord(NamedTuple):
    """A quote as stored. A NamedTuple rather than a frozen dataclass: one is made for every
    quote answered, and a frozen dataclass sets each of its 13 fields through a call."""

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
        return cls(**{name: row[name] for name in cls._fields})

    def price_for(self, side: str) -> Decimal | None:
        return self.ask_price if side == "BUY" else self.bid_price


def rules_from_rows(rows: Sequence[Mapping[str, Any]]) -> InstrumentRules | None:
    """The FERMATA instrument's rules: the strictest of the LP venues' instruments (largest
    tick and lot, highest minimums, checked on the quote's total; the hedger fits each leg to
    its own venue); None when no LP venue's instrument is synced."""
    if not rows:
        return None

    def values(name: str) -> list[Decimal]:
        return [Decimal(str(r[name])) for r in rows if r[name] is not None]

    maxima = values("max_quantity")
    minimum, maximum = max(values("min_quantity")), min(maxima) if maxima else None
    if maximum is not None and maximum < minimum:
        # No size suits every venue: the quote is refused for its size, which no request can
        # meet until the venues' rules change or an LP is unlinked.
        raise ApiError(Errors.SIZE_OUT_OF_LIMITS, f"The LP venues' size limits do not overlap: "
                       f"one's minimum {minimum} is above another's maximum {maximum}")
    return InstrumentRules(
        tick_size=max(values("tick_size")), lot_size=max(values("lot_size")),
        min_quantity=minimum, max_quantity=maximum,
        min_notional=max(values("min_notional")))


async def exposure_of(conn: asyncpg.Connection, dealer_account_id: uuid.UUID, base: str
                      ) -> Decimal:
    """The dealer's unhedged base position (positive: long): what its open hedge jobs still
    have to do, and the carry of its lanes (see `dealer.services.exposure`)."""
    value = await conn.fetchval(
        f"""SELECT coalesce((
               SELECT sum({JOB_UNHEDGED_SQL})
               FROM hedge_job WHERE dealer_account_id = $1
                 AND status NOT IN ('HEDGED', 'CANCELLED')
                 AND split_part(symbol, '/', 1) = $2), 0)
             - coalesce((SELECT sum(carry) FROM hedge_lane WHERE dealer_account_id = $1
                         AND split_part(symbol, '/', 1) = $2), 0)""",  # noqa: S608
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
    # both sides quote the quote's quantity (the same Decimal): its text, and the lot's, once
    quantity, lot = str(quote.quantity), str(lot_size)
    for name, side in (("bid", quote.bid), ("ask", quote.ask)):
        if side is None:
            continue
        sweep = side.sweep
        # a loop, not a list comprehension: on Python 3.11 that is a function call, for what
        # is usually one leg
        legs = []
        for leg in sweep.hedge_plan:
            legs.append({"tradingAccountId": leg.source, "quantity": str(leg.quantity),
                         "vwap": str(leg.vwap), "worstPrice": str(leg.worst_price)})
        plan[name] = {
            "hedgeSide": sweep.hedge_side, "quantity": quantity, "lotSize": lot,
            "vwap": str(sweep.vwap), "worstPrice": str(sweep.worst_price),
            "worstRawPrice": str(sweep.worst_raw_price), "legs": legs,
        }
    return plan


# A quote as read: past its expireAt it is EXPIRED whether or not the expiry job has marked it
# yet (that job runs every DEALER_QUOTE_EXPIRY_MS, and leaves a grace to accepts in flight), so
# a read never offers a quote that an accept would refuse. `{now}` is the parameter of the time.
_READ_STATUS = ("CASE WHEN status = 'OPEN' AND expire_at <= {now} THEN 'EXPIRED' "
                "ELSE status END")


def _read_columns(now: str) -> str:
    status = _READ_STATUS.format(now=now)
    return ", ".join(f"{status} AS status" if name == "status" else name
                     for name in QuoteRecord._fields)


async def get_quote(conn: asyncpg.Connection, quote_id: uuid.UUID, now: dt.datetime
                    ) -> QuoteRecord:
    row = await conn.fetchrow(
        f"SELECT {_read_columns('$2::timestamptz')} FROM quote WHERE quote_id = $1",  # noqa: S608
        quote_id, now)
    if row is None:
        raise ApiError(Errors.QUOTE_NOT_FOUND)
    return QuoteRecord.from_row(row)


async def list_quotes(conn: asyncpg.Connection, *, dealer_account_id: uuid.UUID | None,
                      trading_account_id: uuid.UUID | None, status: str | None,
                      only: frozenset[uuid.UUID] | None, now: dt.datetime, limit: int,
                      offset: int) -> tuple[list[QuoteRecord], int]:
    """A page of quotes (newest first) and how many match, as of `now` (see `_READ_STATUS`)."""
    where = f"""($1::uuid IS NULL OR dealer_account_id = $1)
               AND ($2::uuid IS NULL OR trading_account_id = $2)
               AND ($3::text IS NULL OR {_READ_STATUS.format(now='$5::timestamptz')} = $3)
               AND ($4::uuid[] IS NULL OR trading_account_id = ANY($4::uuid[]))"""
    args = (dealer_account_id, trading_account_id, status,
            None if only is None else list(only), now)
    # One snapshot for the count and the page: quotes committed in between would otherwise
    # make the total disagree with the page (and hasNext with what is left).
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        total = await conn.fetchval(
            f"SELECT count(*) FROM quote WHERE {where}", *args)  # noqa: S608
        rows = await conn.fetch(
            f"""SELECT {_read_columns('$5::timestamptz')} FROM quote WHERE {where}
                ORDER BY created_at DESC, quote_id LIMIT $6 OFFSET $7""",  # noqa: S608
            *args, limit, offset)
    return [QuoteRecord.from_row(r) for r in rows], int(total)


async def expire_quotes(conn: asyncpg.Connection, now: dt.datetime,
                        since: dt.datetime | None = None) -> int:
    """Mark quotes past their expiry (the accept path checks the time itself); with `since`,
    only those that expired after it. Answers how many."""
    if since is None:
        result: str = await conn.execute(
            "UPDATE quote SET status = 'EXPIRED' WHERE status = 'OPEN' AND expire_at <= $1",
            now)
    else:
        result = await conn.execute(
            """UPDATE quote SET status = 'EXPIRED'
               WHERE status = 'OPEN' AND expire_at <= $1 AND expire_at > $2""", now, since)
    return int(result.split()[-1])


async def purge_quotes(conn: asyncpg.Connection, created_before: dt.datetime, *,
                       created_from: dt.datetime | None = None, batch: int = 5000,
                       counted: Callable[[int], None] | None = None) -> int:
    """Delete EXPIRED quotes created before `created_before` (and not before `created_from`)
    that no order refers to (a filled quote, or one a last look refused, stays with its order),
    `batch` per statement so no statement holds many row locks for long; `counted` hears each
    statement's count. Answers how many."""
    purged = 0
    while True:
        result: str = await conn.execute(
            """DELETE FROM quote WHERE quote_id IN (
                   SELECT q.quote_id FROM quote q
                   WHERE q.status = 'EXPIRED' AND q.created_at < $1
                     AND ($3::timestamptz IS NULL OR q.created_at >= $3)
                     AND NOT EXISTS (SELECT 1 FROM trade_order o WHERE o.quote_id = q.quote_id)
                   LIMIT $2)""", created_before, batch, created_from)
        deleted = int(result.split()[-1])
        purged += deleted
        if counted is not None and deleted:
            counted(deleted)
        if deleted < batch:
            return purged


class QuotePurge:
    """The quote retention's runs. A run reads only the quotes created since the previous
    run's cutoff, less `margin`: what is older was purged then, or stays for good (an order
    refers to it). A process's first run, and one every `full_every`, reads them all (a quote
    still OPEN past the cutoff because no daemon ran the expiry for that long)."""

    def __init__(self, retention: dt.timedelta, *,
                 margin: dt.timedelta = dt.timedelta(minutes=10),
                 full_every: dt.timedelta = dt.timedelta(days=1)) -> None:
        self._retention = retention
        self._margin = margin
        self._full_every = full_every
        self._since: dt.datetime | None = None
        self._last_full: dt.datetime | None = None

    async def run(self, conn: asyncpg.Connection, now: dt.datetime,
                  counted: Callable[[int], None] | None = None) -> int:
        cutoff = now - self._retention
        last_full = self._last_full
        full = last_full is None or not last_full <= now < last_full + self._full_every
        purged = await purge_quotes(conn, cutoff, created_from=None if full else self._since,
                                    counted=counted)
        if full:
            self._last_full = now
        self._since = cutoff - self._margin
        return purged


class QuoteExpiry:
    """The scheduled expiry of quotes. A run reads only the quotes that expired since the
    previous run, less `margin` (for a quote its writer committed late): the open quotes'
    index keeps the entries of expired quotes until a vacuum, and reading all of them every
    run cost more with every quote made. Every `full_every`, a run reads them all (a quote
    committed later still, or a clock that went back). That run reads every entry the index
    kept since its last vacuum (46 ms of PostgreSQL after 150,000 quotes): ten minutes apart,
    since a quote it finds late is already answered EXPIRED by the reads and refused by
    the accept, which judge the time themselves; only its mark (and so its purge) waits.

    A quote is marked `grace` after its expireAt: an accept that came before expireAt is
    judged by the time it came (`accept_quote`'s `now`), but its fill only finds the quote
    OPEN if no run marked it meanwhile, so a run right after expireAt refused accepts that
    came in time, depending on when the job happened to run (or on another replica's clock).
    Reads do not wait for the mark (see `_READ_STATUS`)."""

    def __init__(self, *, margin: dt.timedelta = dt.timedelta(seconds=2),
                 full_every: dt.timedelta = dt.timedelta(minutes=10),
                 grace: dt.timedelta = dt.timedelta(seconds=5)) -> None:
        self._margin = margin
        self._full_every = full_every
        self._grace = grace
        self._since: dt.datetime | None = None
        self._last_full: dt.datetime | None = None

    async def run(self, conn: asyncpg.Connection, now: dt.datetime) -> int:
        last_full = self._last_full
        full = last_full is None or not last_full <= now < last_full + self._full_every
        cutoff = now - self._grace
        expired = await expire_quotes(conn, cutoff, None if full else self._since)
        if full:
            self._last_full = now
        self._since = cutoff - self._margin
        return expired


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
    time_in_force: QuotedTimeInForce = "FOK"


@dataclass(frozen=True, slots=True)
class OrderRecord:
    trade_order_id: uuid.UUID
    trading_account_id: uuid.UUID
    instrument_id: str
    quote_id: uuid.UUID | None
    order_side: str
    order_type: str
    time_in_force: QuotedTimeInForce
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
# One execution as the API shows it (`e` is a trade_execution row).
_EXECUTION_JSON = """json_build_object('executionId', e.execution_id, 'quantity', e.quantity::text,
    'price', e.price::text, 'cost', e.cost::text, 'executedAt', e.executed_at)"""


async def _orders(conn: asyncpg.Connection, where: str, *args: object) -> list[OrderRecord]:
    """Orders with their executions, in one query (`where` may end with ORDER BY / LIMIT)."""
    rows = await conn.fetch(
        f"""SELECT {_ORDER_COLUMNS},
                   coalesce((SELECT json_agg({_EXECUTION_JSON} ORDER BY e.executed_at)
                    FROM trade_execution e WHERE e.trade_order_id = o.trade_order_id),
                    '[]'::json) AS executions
            FROM trade_order o WHERE {where}""", *args)  # noqa: S608
    return [_order_from(row) for row in rows]


def _order_from(row: asyncpg.Record) -> OrderRecord:
    return OrderRecord(**{n: row[n] for n in OrderRecord.__slots__ if n != "executions"},
                       executions=tuple(row["executions"]))


async def _order(conn: asyncpg.Connection, where: str, *args: object) -> OrderRecord | None:
    found = await _orders(conn, where, *args)
    return found[0] if found else None


async def _existing(conn: asyncpg.Connection, cmd: AcceptCommand) -> OrderRecord | None:
    """The order an earlier accept with the same idempotencyKey or clientOrderId made. A retry
    repeats its request: keys naming two different orders, or an order made for another quote,
    side, quantity, instrument or time in force, or with another value of a key the request
    gives, conflict."""
    if cmd.idempotency_key is None and cmd.client_order_id is None:
        return None
    found = await _orders(
        conn, "o.trading_account_id = $1 AND (o.idempotency_key = $2 OR o.client_order_id = $3)",
        cmd.trading_account_id, cmd.idempotency_key, cmd.client_order_id)
    if not found:
        return None
    order = found[0]
    if (len(found) > 1 or order.quote_id != cmd.quote_id or order.order_side != cmd.side
            or order.quantity != cmd.quantity or order.instrument_id != cmd.instrument_id
            or order.time_in_force != cmd.time_in_force
            or cmd.idempotency_key not in (None, order.idempotency_key)
            or cmd.client_order_id not in (None, order.client_order_id)):
        raise ApiError(Errors.IDEMPOTENCY_CONFLICT)
    return order


def _key_conflict(exc: asyncpg.UniqueViolationError) -> ApiError | None:
    """The same key, committed meanwhile by an accept of another quote (a quote's own accepts
    are serialised by its lock): the key belongs to that order."""
    if exc.constraint_name in ("trade_order_idempotency_uq", "trade_order_client_order_uq"):
        return ApiError(Errors.IDEMPOTENCY_CONFLICT)
    return None


_QUOTE_AND_DEALER = f"""
SELECT {", ".join(f"q.{name}" for name in QuoteRecord._fields)}, d.config AS dealer_config,
       l.carry AS lane_carry, c.status AS client_status
FROM quote q JOIN dealer d ON d.dealer_account_id = q.dealer_account_id
JOIN trading_account c ON c.trading_account_id = q.trading_account_id
LEFT JOIN hedge_lane l ON l.dealer_account_id = q.dealer_account_id AND l.symbol = q.symbol
WHERE q.quote_id = $1"""  # noqa: S608
# The locked path: the quote, and its client's account against a disable meanwhile.
_QUOTE_AND_DEALER_LOCKED = _QUOTE_AND_DEALER + " FOR UPDATE OF q FOR SHARE OF c"

# The fill: the quote locked and still OPEN, the order, its execution, the quote FILLED, the
# hedge job (whose trigger wakes the hedgers) and the client's ledger entry (outbox). Nothing is
# written, and no row answered, when the quote is no longer OPEN once locked.
_FILL = f"""
WITH client AS (  -- still ACTIVE: a disable waits for this fill, or this fill finds it
    SELECT 1 FROM trading_account WHERE trading_account_id = $2 AND status = 'ACTIVE'
    FOR SHARE),
open_quote AS (
    SELECT quote_id FROM quote WHERE quote_id = $4 AND status = 'OPEN'
      AND EXISTS (SELECT 1 FROM client)
    FOR UPDATE),
filled AS (
    INSERT INTO trade_order (trade_order_id, trading_account_id, instrument_id, quote_id,
        order_side, order_type, time_in_force, status, quantity, price, executed_quantity,
        executed_cost, idempotency_key, client_order_id, created_at, updated_at)
    SELECT $1, $2, $3, quote_id, $5, 'QUOTED', $36, 'FILLED', $6, $7, $6, $8, $9, $10, $11,
           $11
    FROM open_quote
    RETURNING *),
execution AS (
    INSERT INTO trade_execution (execution_id, trade_order_id, quantity, price, cost,
        executed_at)
    SELECT $12, trade_order_id, $6, $7, $8, $11 FROM filled
    RETURNING *),
quote_filled AS (
    UPDATE quote SET status = 'FILLED', filled_order_id = $1
    WHERE quote_id = (SELECT quote_id FROM filled)),
gate AS (  -- an inline hedge (see accept_quote): the lane not leased, its carry as read (up
            -- to less than a lot: an answer's dust recorded meanwhile is the next round's)
    SELECT 1 FROM hedge_lane l
    WHERE $22 AND EXISTS (SELECT 1 FROM open_quote)
      AND l.dealer_account_id = $14 AND l.symbol = $15 AND abs(l.carry - $23) < $35
      AND (l.claimed_until IS NULL OR l.claimed_until < $21)
      AND NOT EXISTS (  -- a residual waiting for a host is the lane's claim's to place
        SELECT 1 FROM hedge_job r
        WHERE r.dealer_account_id = $14 AND r.symbol = $15 AND r.residual
          AND r.status IN ('PENDING', 'IN_PROGRESS'))
    FOR NO KEY UPDATE),
accounts AS (  -- still ACTIVE (a disable waits for this, then sees the orders in flight);
               -- locked before the links, as an unlink does
    SELECT trading_account_id FROM trading_account
    WHERE $22 AND trading_account_id = ANY($29::uuid[]) AND status = 'ACTIVE'
    FOR SHARE),
links AS (
    SELECT trading_account_id FROM dealer_link
    WHERE $22 AND dealer_account_id = $14 AND NOT draining
      AND trading_account_id IN (SELECT trading_account_id FROM accounts)
    FOR SHARE),
inline AS (
    SELECT EXISTS (SELECT 1 FROM gate) AND NOT EXISTS (
        SELECT 1 FROM unnest($29::uuid[]) a(account)
        WHERE a.account NOT IN (SELECT trading_account_id FROM links)) AS ok),
job AS (
    INSERT INTO hedge_job (job_id, dealer_account_id, trade_order_id, symbol, side, quantity,
        plan, status, created_at, updated_at, attempts, hedged_quantity, carry_in,
        first_order_at, claimed_by, claimed_until)
    SELECT $13, $14, trade_order_id, $15, $16, $6, $17,
           CASE WHEN i.ok THEN 'IN_PROGRESS' ELSE 'PENDING' END, $21, $21,
           CASE WHEN i.ok THEN 1 ELSE 0 END, CASE WHEN i.ok THEN $24::numeric ELSE 0 END,
           CASE WHEN i.ok THEN $25::numeric ELSE 0 END, CASE WHEN i.ok THEN $21 END,
           CASE WHEN i.ok THEN $27 END, CASE WHEN i.ok THEN $28::timestamptz END
    FROM filled, inline i
    RETURNING status),
hedge_orders AS (
    INSERT INTO hedge_order (client_order_id, job_id, attempt, leg, trading_account_id, venue,
        symbol, side, quantity, limit_price, status, sent_by, created_at, updated_at)
    SELECT o.coid, $13, 1, o.leg, o.account, o.venue, $15, $16, o.quantity, o.limit_price,
           'SENT', $27, $21, $21
    FROM unnest($30::text[], $29::uuid[], $31::text[], $32::int[], $33::numeric[],
                $34::numeric[]) AS o(coid, account, venue, leg, quantity, limit_price)
    WHERE (SELECT ok FROM inline) AND EXISTS (SELECT 1 FROM filled)),
lane AS (
    UPDATE hedge_lane SET carry = carry + $26, updated_at = $21
    WHERE (SELECT ok FROM inline) AND EXISTS (SELECT 1 FROM filled)
      AND dealer_account_id = $14 AND symbol = $15),
entry AS (
    SELECT ledger_enqueue_transaction($18, $19, $20, $11) AS outbox_id FROM filled)
SELECT {", ".join(f"o.{name}" for name in _ORDER_COLUMNS.split(", "))},
       json_build_array({_EXECUTION_JSON}) AS executions, (SELECT outbox_id FROM entry),
       (SELECT status FROM job) AS job_status
FROM filled o, execution e"""  # noqa: S608


class InlineHedger(Protocol):
    """The hedge worker of this process, as the accept uses it (`hedging.worker`)."""

    async def plan_inline(self, conn: asyncpg.Connection, dealer_account_id: uuid.UUID,
                          symbol: str, config: object, job_id: uuid.UUID,
                          trade_order_id: uuid.UUID, side: str, quantity: Decimal,
                          plan: Mapping[str, object], created_at: dt.datetime, carry: Decimal
                          ) -> InlineHedge | None: ...

    def inline_written(self, inline: InlineHedge, written: bool) -> None: ...


@dataclass(frozen=True, slots=True)
class _InlineFill:
    hedger: InlineHedger
    dealer_config: object
    lane_carry: Decimal


def _client_active(quote: QuoteRecord, cmd: AcceptCommand, status: str) -> None:
    """A client account disabled since its quote fills nothing more (as it gets no new quote);
    a foreign client is refused as such first, without learning the account's status."""
    if quote.trading_account_id == cmd.trading_account_id and status != "ACTIVE":
        raise ApiError(Errors.ACCOUNT_NOT_ACTIVE,
                       f"Client account is not ACTIVE (status {status})")


def _checked_price(quote: QuoteRecord, cmd: AcceptCommand, now: dt.datetime) -> Decimal:
    """The quote's price for this accept, or the refusal."""
    if quote.trading_account_id != cmd.trading_account_id:
        raise ApiError(Errors.QUOTE_FOREIGN_CLIENT)
    # the messages name the quote's values only: what was sent is never echoed
    if cmd.instrument_id != f"{FERMATA}:{quote.symbol}":
        raise ApiError(Errors.QUOTE_MISMATCH, f"The quote is for {FERMATA}:{quote.symbol}")
    price = quote.price_for(cmd.side)
    if price is None or (quote.order_side is not None and quote.order_side != cmd.side):
        raise ApiError(Errors.QUOTE_MISMATCH, f"The quote has no {cmd.side} side")
    if cmd.quantity != quote.quantity:
        raise ApiError(Errors.QUOTE_MISMATCH,
                       f"The quote is for quantity {format(quote.quantity.normalize(), 'f')}")
    if quote.status == "FILLED":
        raise ApiError(Errors.QUOTE_ALREADY_FILLED)
    if now >= quote.expire_at:
        raise ApiError(Errors.QUOTE_EXPIRED)
    if quote.status == "EXPIRED":
        # Spent before its time: only a last look's REJECTED order marks a quote so (the expiry
        # job marks quotes seconds after their expireAt).
        raise ApiError(Errors.QUOTE_EXPIRED, "The quote is spent: a last look rejected an "
                       "accept of it; request a new quote")
    return price


# The LPs a quote may be priced on (as `Quoter._check` picks them): linked, not draining, on a
# venue where the instrument is synced.
_PRICING_LPS = """
SELECT coalesce(array_agg(l.trading_account_id), '{}') FROM dealer_link l
JOIN trading_account a ON a.trading_account_id = l.trading_account_id
WHERE l.dealer_account_id = $1 AND NOT l.draining
  AND EXISTS (SELECT 1 FROM instrument i WHERE i.venue = a.venue AND i.symbol = $2
              AND i.enabled)"""


def last_look(market_data: MarketDataService, quote: QuoteRecord, side: str,
              limit_bps: Decimal, now: dt.datetime, pricing_lps: Collection[uuid.UUID]
              ) -> str | None:
    """Why the fill must be refused (the market moved against the dealer by more than
    `limit_bps` since the quote), or None to fill. The hedge is re-swept on the fresh books of
    `pricing_lps`, the LPs a quote may price on now."""
    plan = quote.hedge_plan["ask" if side == "BUY" else "bid"]
    quoted_vwap = Decimal(plan["vwap"])
    now_ms = int(now.timestamp() * 1000)
    fresh = [(lp, book) for lp, book
             in market_data.fresh_books(quote.dealer_account_id, quote.symbol, now_ms)
             if lp.trading_account_id in pricing_lps]
    if not fresh:
        return "last look: no fresh LP book"
    lot = Decimal(plan.get("lotSize", "0")) or quote.quantity
    book = consolidate_for_sweep([market_data.prepared_book(lp, b, lot) for lp, b in fresh], lot)
    try:
        sweep = sweep_quantity(book.asks if side == "BUY" else book.bids, quote.quantity)
    except QuoteRefused:
        return "last look: not enough depth any more"
    # adverse move > limit_bps, decided exactly (no division): the VWAP's move against the
    # dealer, times 10 000, against limit_bps times the quoted VWAP
    against = EXACT.subtract(sweep.vwap, quoted_vwap)
    if side != "BUY":
        against = EXACT.minus(against)
    if EXACT.multiply(against, 10000) > EXACT.multiply(limit_bps, quoted_vwap):
        adverse = against * 10000 / quoted_vwap  # for the reason only
        return f"last look: the market moved {adverse:.2f} bps against the quote"
    return None


async def accept_quote(conn: asyncpg.Connection, cmd: AcceptCommand, scales: ScaleTable,
                       now: dt.datetime, market_data: MarketDataService | None = None, *,
                       clock: Callable[[], dt.datetime] | None = None,
                       hedger: InlineHedger | None = None) -> tuple[OrderRecord, bool]:
    """Fill the quote once; answers the order and whether this call created it.

    `conn` is a connection outside any transaction. The usual accept is two statements, each
    its own transaction: the quote is read and checked, then `_FILL` locks it and fills it
    while it is still OPEN, ledger entry and hedge job included. When that statement finds the
    quote taken meanwhile, or the dealer has a last look, the accept is made again under the
    quote's lock in one transaction, which answers what happened to it (an earlier accept with
    the same keys, already filled, expired) or fills it.

    `now` is when the accept came (the order's and execution's time, checked against the
    quote's expiry); the hedge job is stamped with `clock()` as the fill is written, the time
    its hedge latency counts from (`now` without a clock).

    With `hedger` (this process's hedge worker, when it runs), the usual accept sizes the
    job's first hedge before its fill statement, which records it with the fill when the lane
    is not leased and its carry is as read: the orders go out as soon as the fill commits,
    with no notice and no second statement. Otherwise the job waits for its notice.
    """
    filled_at = clock or (lambda: now)
    existing = await _existing(conn, cmd)
    if existing is not None:
        return existing, False
    row = await conn.fetchrow(_QUOTE_AND_DEALER, cmd.quote_id)
    if row is None:
        raise ApiError(Errors.QUOTE_NOT_FOUND)
    quote = QuoteRecord.from_row(row)
    last_look_bps = DealerConfig.model_validate(row["dealer_config"]).last_look_bps
    # A quote taken since `_existing` looked (FILLED, or EXPIRED by a last look's rejection)
    # may have been taken by the accept this one retries: the locked path below looks for its
    # order again.
    keyed = cmd.idempotency_key is not None or cmd.client_order_id is not None
    if not (keyed and quote.status != "OPEN"):
        _client_active(quote, cmd, row["client_status"])
        price = _checked_price(quote, cmd, now)
        if last_look_bps is None or market_data is None:
            carry = row["lane_carry"]
            hedge = None if hedger is None or carry is None else _InlineFill(
                hedger, row["dealer_config"], Decimal(carry))
            order = await _fill(conn, cmd, quote, price, scales, now, filled_at, hedge)
            if order is not None:
                return order, True
    async with conn.transaction():
        # The quote's lock first, then the keys: a retry racing the accept it repeats waits
        # here for that accept's commit, and answers its order rather than "already filled".
        row = await conn.fetchrow(_QUOTE_AND_DEALER_LOCKED, cmd.quote_id)
        existing = await _existing(conn, cmd)
        if existing is not None:
            return existing, False
        if row is None:
            raise ApiError(Errors.QUOTE_NOT_FOUND)
        quote = QuoteRecord.from_row(row)
        _client_active(quote, cmd, row["client_status"])
        price = _checked_price(quote, cmd, now)
        if last_look_bps is not None and market_data is not None:
            pricing_lps = set(await conn.fetchval(_PRICING_LPS, quote.dealer_account_id,
                                                  quote.symbol))
            reason = last_look(market_data, quote, cmd.side, Decimal(last_look_bps), now,
                               pricing_lps)
            if reason is not None:
                return await _reject(conn, cmd, quote, reason, now), True
        order = await _fill(conn, cmd, quote, price, scales, now, filled_at)
    assert order is not None, "an OPEN quote under its lock is filled"
    return order, True


async def _fill(conn: asyncpg.Connection, cmd: AcceptCommand, quote: QuoteRecord,
                price: Decimal, scales: ScaleTable, now: dt.datetime,
                filled_at: Callable[[], dt.datetime], hedge: _InlineFill | None = None
                ) -> OrderRecord | None:
    """The fill in one statement (it sits between the client and the hedge); None when the
    quote is no longer OPEN once locked (nothing written). The hedge job is stamped with
    `filled_at()` as the statement is sent. With `hedge` (outside any transaction only: the
    orders go out once this statement has committed), the job's first hedge is recorded with
    it when its lane allows, and the hedger is told either way."""
    base_code, quote_code = split_symbol(quote.symbol)
    try:
        base, quote_asset = scales.asset(base_code), scales.asset(quote_code)
    except UnknownAsset as exc:
        raise ApiError(Errors.SYMBOL_NOT_QUOTED, str(exc)) from None
    order_id, job_id = uuid.uuid4(), uuid.uuid4()
    plan = quote.hedge_plan["ask" if cmd.side == "BUY" else "bid"]
    # What the client pays or gets is what the ledger books (the quote showed it so too).
    cost = booked_amount(price * quote.quantity, quote_asset,
                         received_by_dealer=cmd.side == "BUY")
    try:
        entry = outbox_arguments(client_fill(
            cmd.trading_account_id, quote.dealer_account_id, cmd.side, base, quote_asset,
            quote.quantity, price, reference=f"order-{order_id}", quote_amount=cost,
            metadata={"quoteId": str(quote.quote_id), "orderId": str(order_id),
                      "jobId": str(job_id)}, timestamp=now))
    except (InvalidAmount, InvalidFill) as exc:
        # A quote made under other asset scales (DEALER_ASSET_SCALES changed since, for an
        # asset not booked yet): its amounts do not fit the ledger's scales now. A refusal,
        # nothing written; the client asks for a quote again.
        log.warning("quote %s cannot be booked at the ledger's asset scales: %s",
                    quote.quote_id, exc)
        raise ApiError(Errors.SYMBOL_NOT_QUOTED,
                       f"The quote's amounts do not fit the ledger's asset scales of "
                       f"{quote.symbol} (changed since it was made); request a new quote"
                       ) from None
    inline = None if hedge is None else await hedge.hedger.plan_inline(
        conn, quote.dealer_account_id, quote.symbol, hedge.dealer_config, job_id, order_id,
        plan["hedgeSide"], quote.quantity, plan, now, hedge.lane_carry)
    orders = [] if inline is None else inline.orders
    written = False
    stamp = max(filled_at(), now)  # the fill, its hedge planned already
    if inline is not None:
        inline = dataclasses.replace(inline, created_at=stamp)
    try:
        row = await conn.fetchrow(
            _FILL, order_id, cmd.trading_account_id, cmd.instrument_id, quote.quote_id,
            cmd.side, quote.quantity, price, cost, cmd.idempotency_key,
            cmd.client_order_id, now, uuid.uuid4(), job_id, quote.dealer_account_id,
            quote.symbol, plan["hedgeSide"], plan, entry.entry, entry.codes, entry.scales,
            stamp, inline is not None,
            None if inline is None else inline.carry_read,
            None if inline is None else inline.hedged,
            None if inline is None else inline.carry_in,
            None if inline is None else inline.lane_delta,
            None if inline is None else inline.worker_id,
            None if inline is None else inline.claimed_until,
            [o.lp.trading_account_id for o in orders], [o.coid for o in orders],
            [o.lp.venue for o in orders], list(range(len(orders))),
            [o.quantity for o in orders], [o.limit for o in orders],
            None if inline is None else inline.dust, cmd.time_in_force)
        written = row is not None and row["job_status"] == "IN_PROGRESS"
    except asyncpg.UniqueViolationError as exc:
        conflict = _key_conflict(exc)
        if conflict is not None:
            raise conflict from None
        raise
    except asyncpg.PostgresError as exc:
        refusal = scale_refusal(exc)
        if refusal is not None:
            raise refusal from None
        raise
    finally:
        if inline is not None and hedge is not None:
            hedge.hedger.inline_written(inline, written)
    return None if row is None else _order_from(row)


async def _reject(conn: asyncpg.Connection, cmd: AcceptCommand, quote: QuoteRecord,
                  reason: str, now: dt.datetime) -> OrderRecord:
    """A REJECTED order (the quote is spent: it expires); nothing is booked or hedged."""
    order_id = uuid.uuid4()
    try:
        await conn.execute(
            """INSERT INTO trade_order (trade_order_id, trading_account_id, instrument_id,
                   quote_id, order_side, order_type, time_in_force, status, reject_reason,
                   quantity, price, idempotency_key, client_order_id, created_at, updated_at)
               VALUES ($1, $2, $3, $4, $5, 'QUOTED', $12, 'REJECTED', $6, $7, $8, $9, $10,
                       $11, $11)""",
            order_id, cmd.trading_account_id, cmd.instrument_id, quote.quote_id, cmd.side,
            reason, quote.quantity, quote.price_for(cmd.side), cmd.idempotency_key,
            cmd.client_order_id, now, cmd.time_in_force)
    except asyncpg.UniqueViolationError as exc:  # the caller's transaction rolls back
        conflict = _key_conflict(exc)
        if conflict is not None:
            raise conflict from None
        raise
    await conn.execute("UPDATE quote SET status = 'EXPIRED' WHERE quote_id = $1",
                       quote.quote_id)
    order = await _order(conn, "o.trade_order_id = $1", order_id)
    assert order is not None
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
    # One snapshot for the count and the page (see `list_quotes`).
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        total = await conn.fetchval(
            f"SELECT count(*) FROM trade_order o WHERE {where}", *args)  # noqa: S608
        orders = await _orders(
            conn, f"""{where} ORDER BY o.created_at {'ASC' if ascending else 'DESC'},
                      o.trade_order_id LIMIT $8 OFFSET $9""", *args, limit, offset)
    return orders, int(total)
