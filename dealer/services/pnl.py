"""A dealer's PnL: spread captured on client fills, hedge slippage against the quote-time plan,
fees, and the realised figure per quote asset, which equals the quote-asset balance of the
ledger account `dealer:<id>` once the outbox is drained.

The realised figure is not read from the ledger: it is rebuilt from the facts the bookings were
built from (client orders and executed hedge orders with their fees) by the same posting
builders (`ledger.postings`), so amounts and rounding are those the ledger received, minor unit
for minor unit. Comparing it with the ledger balance checks that the facts and the books agree.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal, localcontext

import asyncpg

from dealer.errors import ApiError, Errors
from ledger.accounts import dealer_account
from ledger.assets import (
    Asset,
    InvalidAmount,
    ScaleTable,
    UnknownAsset,
    from_minor,
    minor_paid_by_dealer,
)
from ledger.backend import LedgerTransaction
from ledger.postings import InvalidFill, client_fill, hedge_fill, net_by_account
from venues.base import split_symbol

log = logging.getLogger(__name__)

BPS = Decimal(10000)
# Analytics sums (spread, slippage) are exact at this precision for any realistic desk.
_PRECISION = 60


@dataclass(frozen=True, slots=True)
class ClientFillFact:
    """A FILLED QUOTED order: the client's side, at the quote's price and quantity."""

    trade_order_id: uuid.UUID
    client_account_id: uuid.UUID
    symbol: str
    side: str
    quantity: Decimal
    price: Decimal
    plan_vwap: Decimal | None  # the quote-time hedge plan's fee-adjusted VWAP


@dataclass(frozen=True, slots=True)
class HedgeFillFact:
    """An executed (part of a) hedge order, as its hedge_order row records it."""

    client_order_id: str
    lp_account_id: uuid.UUID
    symbol: str
    side: str  # the dealer's side
    filled_quantity: Decimal
    average_price: Decimal
    fee_asset: str | None
    fee_amount: Decimal | None
    plan_price: Decimal | None  # the plan's VWAP of this order's leg (else of the whole job)


@dataclass(slots=True)
class QuoteAssetPnl:
    asset: str
    realised: Decimal = Decimal(0)
    spread_captured: Decimal = Decimal(0)
    hedge_slippage: Decimal = Decimal(0)
    planned_hedge_notional: Decimal = Decimal(0)
    client_fills: int = 0
    hedge_orders: int = 0
    unrealised: Decimal | None = Decimal(0)

    @property
    def hedge_slippage_bps(self) -> Decimal | None:
        if not self.planned_hedge_notional:
            return None
        return self.hedge_slippage / self.planned_hedge_notional * BPS

    @property
    def total(self) -> Decimal | None:
        return None if self.unrealised is None else self.realised + self.unrealised


@dataclass(frozen=True, slots=True)
class Inventory:
    asset: str
    quantity: Decimal
    price_asset: str | None  # the quote asset the inventory is valued in
    price: Decimal | None  # consolidated mid; None: no fresh book or no symbol to value it

    @property
    def unrealised(self) -> Decimal | None:
        if self.quantity == 0:
            return Decimal(0)
        return None if self.price is None else self.quantity * self.price


@dataclass(frozen=True, slots=True)
class FeePaid:
    asset: str
    amount: Decimal  # as the venues charged it
    booked: Decimal  # as the ledger booked it (each fee rounded down to the asset's scale)


@dataclass(frozen=True, slots=True)
class DealerPnl:
    dealer_account_id: uuid.UUID
    quote_assets: tuple[QuoteAssetPnl, ...]
    inventory: tuple[Inventory, ...]
    fees: tuple[FeePaid, ...]
    balances: Mapping[str, Decimal]  # every asset of dealer:<id> as the facts book it
    unbooked: int  # fills whose facts could not be turned into postings (see the log)
    pending_entries: int
    computed_at: dt.datetime = field(compare=False)


# ---------------------------------------------------------------- the pure part


def executed_quote_amount(average_price: Decimal, filled_quantity: Decimal) -> Decimal:
    """The quote amount the venue executed (Σ price * quantity), from the recorded average.

    The average was that sum divided by the quantity at 28 significant digits, so multiplying
    back may miss the exact sum in its last digits; rounding the product at 25 significant
    digits, far beyond any venue's price and size decimals yet far above that error, restores
    the exact sum the booking used.
    """
    with localcontext() as context:
        context.prec = _PRECISION
        product = average_price * filled_quantity
        if not product:
            return product
        quantum = Decimal(1).scaleb(product.adjusted() - 24)
        return product.quantize(quantum, rounding=ROUND_HALF_EVEN).normalize()


def dealer_postings(dealer_account_id: uuid.UUID, client_fills: Iterable[ClientFillFact],
                    hedge_fills: Iterable[HedgeFillFact], scales: ScaleTable
                    ) -> tuple[list[LedgerTransaction], int]:
    """The transactions the fills were booked with, and how many fills could not be rebuilt."""
    transactions: list[LedgerTransaction] = []
    unbooked = 0
    for fill in client_fills:
        base, quote = split_symbol(fill.symbol)
        try:
            transactions.append(client_fill(
                fill.client_account_id, dealer_account_id, fill.side, scales.asset(base),
                scales.asset(quote), fill.quantity, fill.price,
                reference=f"order-{fill.trade_order_id}", metadata={}))
        except (InvalidFill, InvalidAmount, UnknownAsset) as exc:
            unbooked += 1
            log.warning("client fill %s cannot be rebuilt for the PnL: %s",
                        fill.trade_order_id, exc)
    for hedge in hedge_fills:
        base, quote = split_symbol(hedge.symbol)
        try:
            fee: tuple[Asset, Decimal] | None = None
            # The hedge worker books no fee in an asset without a scale; neither does this.
            if hedge.fee_asset and hedge.fee_amount and hedge.fee_asset in scales:
                fee = (scales.asset(hedge.fee_asset), hedge.fee_amount)
            transactions.extend(hedge_fill(
                hedge.lp_account_id, dealer_account_id, hedge.side, scales.asset(base),
                scales.asset(quote), hedge.filled_quantity, hedge.average_price, fee,
                reference=f"hedge-{hedge.client_order_id}", metadata={},
                quote_amount=executed_quote_amount(hedge.average_price,
                                                   hedge.filled_quantity)))
        except (InvalidFill, InvalidAmount, UnknownAsset) as exc:
            unbooked += 1
            log.warning("hedge order %s cannot be rebuilt for the PnL: %s",
                        hedge.client_order_id, exc)
    return transactions, unbooked


def compute_pnl(dealer_account_id: uuid.UUID, client_fills: Sequence[ClientFillFact],
                hedge_fills: Sequence[HedgeFillFact], scales: ScaleTable,
                price_of: Callable[[str], tuple[str, Decimal | None] | None],
                *, pending_entries: int = 0, now: dt.datetime) -> DealerPnl:
    """The PnL of these fills; `price_of(base)` answers (quote asset, mid) to value inventory."""
    transactions, unbooked = dealer_postings(dealer_account_id, client_fills, hedge_fills,
                                             scales)
    net = net_by_account(transactions).get(dealer_account(dealer_account_id), {})
    balances = {Asset.parse(notation).code: from_minor(units, Asset.parse(notation))
                for notation, units in net.items()}
    by_quote: dict[str, QuoteAssetPnl] = {}

    def quote_pnl(asset: str) -> QuoteAssetPnl:
        return by_quote.setdefault(asset, QuoteAssetPnl(asset))

    bases: dict[str, None] = {}
    with localcontext() as context:
        context.prec = _PRECISION
        for fill in client_fills:
            base, quote = split_symbol(fill.symbol)
            bases.setdefault(base, None)
            pnl = quote_pnl(quote)
            pnl.client_fills += 1
            if fill.plan_vwap is not None:
                edge = fill.price - fill.plan_vwap if fill.side == "BUY" \
                    else fill.plan_vwap - fill.price
                pnl.spread_captured += edge * fill.quantity
        for hedge in hedge_fills:
            base, quote = split_symbol(hedge.symbol)
            bases.setdefault(base, None)
            pnl = quote_pnl(quote)
            pnl.hedge_orders += 1
            if hedge.plan_price is not None:
                worse = hedge.average_price - hedge.plan_price if hedge.side == "BUY" \
                    else hedge.plan_price - hedge.average_price
                pnl.hedge_slippage += worse * hedge.filled_quantity
                pnl.planned_hedge_notional += hedge.plan_price * hedge.filled_quantity
    for asset, pnl in by_quote.items():
        pnl.realised = balances.get(asset, Decimal(0))
    inventory = []
    for base in bases:
        priced = price_of(base)
        quantity = balances.get(base, Decimal(0))
        held = Inventory(base, quantity, None if priced is None else priced[0],
                         None if priced is None else priced[1])
        inventory.append(held)
        if held.price_asset is None:
            continue
        pnl = quote_pnl(held.price_asset)
        value = held.unrealised
        pnl.unrealised = None if value is None or pnl.unrealised is None \
            else pnl.unrealised + value
    return DealerPnl(
        dealer_account_id=dealer_account_id, quote_assets=tuple(by_quote.values()),
        inventory=tuple(inventory), fees=_fees(hedge_fills, scales), balances=balances,
        unbooked=unbooked, pending_entries=pending_entries, computed_at=now)


def _fees(hedge_fills: Iterable[HedgeFillFact], scales: ScaleTable) -> tuple[FeePaid, ...]:
    charged: defaultdict[str, Decimal] = defaultdict(Decimal)
    booked: defaultdict[str, Decimal] = defaultdict(Decimal)
    for hedge in hedge_fills:
        if not hedge.fee_asset or not hedge.fee_amount:
            continue
        charged[hedge.fee_asset] += hedge.fee_amount
        if hedge.fee_asset in scales:
            asset = scales.asset(hedge.fee_asset)
            booked[hedge.fee_asset] += from_minor(
                minor_paid_by_dealer(hedge.fee_amount, asset), asset)
    return tuple(FeePaid(code, charged[code], booked[code]) for code in sorted(charged))


# ---------------------------------------------------------------- reads


async def load_facts(conn: asyncpg.Connection, dealer_account_id: uuid.UUID
                     ) -> tuple[list[ClientFillFact], list[HedgeFillFact], int]:
    """The dealer's client fills and executed hedge orders, and the pending outbox entries, in
    one snapshot; DEALER_NOT_FOUND for an unknown dealer."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        if await conn.fetchval("SELECT 1 FROM dealer WHERE dealer_account_id = $1",
                               dealer_account_id) is None:
            raise ApiError(Errors.DEALER_NOT_FOUND)
        client_rows = await conn.fetch(
            """SELECT o.trade_order_id, o.trading_account_id, o.order_side, o.quantity, o.price,
                      q.symbol, j.plan ->> 'vwap' AS plan_vwap
               FROM trade_order o
               JOIN quote q ON q.quote_id = o.quote_id
               LEFT JOIN hedge_job j ON j.trade_order_id = o.trade_order_id
               WHERE q.dealer_account_id = $1 AND o.status = 'FILLED'
               ORDER BY o.created_at, o.trade_order_id""",
            dealer_account_id)
        # Only the plan figures an order needs leave the database (whole plans are large):
        # its leg's LP and VWAP, and the legs' exact Σ quantity * vwap and Σ quantity.
        hedge_rows = await conn.fetch(
            """SELECT h.client_order_id, h.trading_account_id, h.symbol, h.side,
                      h.filled_quantity, h.avg_price, h.fee_asset, h.fee_amount,
                      j.plan -> 'legs' -> h.leg ->> 'tradingAccountId' AS leg_account,
                      j.plan -> 'legs' -> h.leg ->> 'vwap' AS leg_vwap,
                      legs.cost AS legs_cost, legs.quantity AS legs_quantity
               FROM hedge_order h JOIN hedge_job j USING (job_id)
               LEFT JOIN LATERAL (
                   SELECT sum((l ->> 'quantity')::numeric * (l ->> 'vwap')::numeric) AS cost,
                          sum((l ->> 'quantity')::numeric) AS quantity
                   FROM jsonb_array_elements(CASE WHEN jsonb_typeof(j.plan -> 'legs') = 'array'
                                                  THEN j.plan -> 'legs' END) l) legs ON true
               WHERE j.dealer_account_id = $1 AND h.filled_quantity > 0
                 AND h.avg_price IS NOT NULL
               ORDER BY h.created_at, h.client_order_id""",
            dealer_account_id)
        pending = await conn.fetchval("SELECT count(*) FROM ledger_outbox WHERE sent_at IS NULL")
    client_fills = [
        ClientFillFact(
            trade_order_id=r["trade_order_id"], client_account_id=r["trading_account_id"],
            symbol=r["symbol"], side=r["order_side"], quantity=Decimal(r["quantity"]),
            price=Decimal(r["price"]),
            plan_vwap=None if r["plan_vwap"] is None else Decimal(r["plan_vwap"]))
        for r in client_rows]
    hedge_fills = []
    for r in hedge_rows:
        hedge_fills.append(HedgeFillFact(
            client_order_id=r["client_order_id"], lp_account_id=r["trading_account_id"],
            symbol=r["symbol"], side=r["side"], filled_quantity=Decimal(r["filled_quantity"]),
            average_price=Decimal(r["avg_price"]), fee_asset=r["fee_asset"],
            fee_amount=None if r["fee_amount"] is None else Decimal(r["fee_amount"]),
            plan_price=_plan_price(r)))
    return client_fills, hedge_fills, int(pending)


def _plan_price(row: asyncpg.Record) -> Decimal | None:
    """`hedges.plan_price` from the figures the query extracted (the same rule and digits)."""
    if row["leg_vwap"] is not None and row["leg_account"] == str(row["trading_account_id"]):
        return Decimal(row["leg_vwap"])
    if not row["legs_quantity"]:
        return None
    return Decimal(row["legs_cost"]) / Decimal(row["legs_quantity"])
