"""A dealer's PnL: spread captured on client fills, hedge slippage against the quote-time plan,
fees, and the realised figure per quote asset, which equals the quote-asset balance of the
ledger account `dealer:<id>` once the outbox is drained.

The realised figure is not read from the ledger: it is rebuilt from the facts the bookings were
built from (client orders and executed hedge orders with their fees) by the same posting
builders (`ledger.postings`), so amounts and rounding are those the ledger received, minor unit
for minor unit. Comparing it with the ledger balance checks that the facts and the books agree.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from typing import Any

import asyncpg

from dealer.errors import ApiError, Errors
from dealer.services.hedges import order_fees
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
from ledger.postings import InvalidFill, client_fill, hedge_fill, net_by_account, other_fee
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
    # the fees the venue charged in other assets than `fee_asset` (one order, several assets)
    other_fees: tuple[tuple[str, Decimal], ...] = ()

    def fees(self) -> list[tuple[str, Decimal]]:
        """Every fee asset of the order and its amount."""
        first = [(self.fee_asset, self.fee_amount)] if self.fee_asset and self.fee_amount else []
        return first + list(self.other_fees)


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
            reference = f"hedge-{hedge.client_order_id}"
            transactions.extend(hedge_fill(
                hedge.lp_account_id, dealer_account_id, hedge.side, scales.asset(base),
                scales.asset(quote), hedge.filled_quantity, hedge.average_price, fee,
                reference=reference, metadata={},
                quote_amount=executed_quote_amount(hedge.average_price,
                                                   hedge.filled_quantity)))
            # A fee in another asset is its own transaction, as the hedge worker books it.
            for code, amount in hedge.other_fees:
                extra = other_fee(hedge.lp_account_id, dealer_account_id,
                                  (scales.asset(code), amount), fill_reference=reference,
                                  metadata={}) if code in scales else None
                if extra is not None:
                    transactions.append(extra)
        except (InvalidFill, InvalidAmount, UnknownAsset) as exc:
            unbooked += 1
            log.warning("hedge order %s cannot be rebuilt for the PnL: %s",
                        hedge.client_order_id, exc)
    return transactions, unbooked


@dataclass(slots=True)
class QuoteAssetTotals:
    """The additive analytics of one quote asset (see `QuoteAssetPnl`)."""

    spread_captured: Decimal = Decimal(0)
    hedge_slippage: Decimal = Decimal(0)
    planned_hedge_notional: Decimal = Decimal(0)
    client_fills: int = 0
    hedge_orders: int = 0


@dataclass(slots=True)
class PnlTotals:
    """What a PnL adds up from its facts. Every figure is a sum, so the totals of two sets of
    facts merge into those of both: `fold` adds facts to totals, and the totals of a dealer's
    finished facts are kept (`pnl_checkpoint`) so a PnL reads only what came after them."""

    balances: dict[str, int] = field(default_factory=dict)  # asset notation → minor units
    quote_assets: dict[str, QuoteAssetTotals] = field(default_factory=dict)
    bases: set[str] = field(default_factory=set)
    fees_charged: dict[str, Decimal] = field(default_factory=dict)
    fees_booked: dict[str, Decimal] = field(default_factory=dict)
    unbooked: int = 0

    def to_json(self) -> dict[str, Any]:
        """Exact text for every figure: minor units too, which pass 64 bits at scale 18."""
        return {
            "balances": {notation: str(units) for notation, units in self.balances.items()},
            "quoteAssets": {code: {
                "spreadCaptured": str(t.spread_captured), "hedgeSlippage": str(t.hedge_slippage),
                "plannedHedgeNotional": str(t.planned_hedge_notional),
                "clientFills": t.client_fills, "hedgeOrders": t.hedge_orders}
                for code, t in self.quote_assets.items()},
            "bases": sorted(self.bases),
            "feesCharged": {code: str(v) for code, v in self.fees_charged.items()},
            "feesBooked": {code: str(v) for code, v in self.fees_booked.items()},
            "unbooked": self.unbooked,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PnlTotals:
        return cls(
            balances={notation: int(units) for notation, units in data["balances"].items()},
            quote_assets={code: QuoteAssetTotals(
                Decimal(t["spreadCaptured"]), Decimal(t["hedgeSlippage"]),
                Decimal(t["plannedHedgeNotional"]), int(t["clientFills"]),
                int(t["hedgeOrders"])) for code, t in data["quoteAssets"].items()},
            bases=set(data["bases"]),
            fees_charged={code: Decimal(v) for code, v in data["feesCharged"].items()},
            fees_booked={code: Decimal(v) for code, v in data["feesBooked"].items()},
            unbooked=int(data["unbooked"]))


def fold(totals: PnlTotals, dealer_account_id: uuid.UUID,
         client_fills: Iterable[ClientFillFact], hedge_fills: Sequence[HedgeFillFact],
         scales: ScaleTable) -> PnlTotals:
    """Add these facts to `totals` (changed in place, and answered)."""
    client_fills = list(client_fills)
    transactions, unbooked = dealer_postings(dealer_account_id, client_fills, hedge_fills,
                                             scales)
    totals.unbooked += unbooked
    net = net_by_account(transactions).get(dealer_account(dealer_account_id), {})
    for notation, units in net.items():
        totals.balances[notation] = totals.balances.get(notation, 0) + units

    def quote_totals(asset: str) -> QuoteAssetTotals:
        found = totals.quote_assets.get(asset)
        if found is None:
            found = totals.quote_assets[asset] = QuoteAssetTotals()
        return found

    with localcontext() as context:
        context.prec = _PRECISION
        for fill in client_fills:
            base, quote = split_symbol(fill.symbol)
            totals.bases.add(base)
            pnl = quote_totals(quote)
            pnl.client_fills += 1
            if fill.plan_vwap is not None:
                edge = fill.price - fill.plan_vwap if fill.side == "BUY" \
                    else fill.plan_vwap - fill.price
                pnl.spread_captured += edge * fill.quantity
        for hedge in hedge_fills:
            base, quote = split_symbol(hedge.symbol)
            totals.bases.add(base)
            pnl = quote_totals(quote)
            pnl.hedge_orders += 1
            if hedge.plan_price is not None:
                worse = hedge.average_price - hedge.plan_price if hedge.side == "BUY" \
                    else hedge.plan_price - hedge.average_price
                pnl.hedge_slippage += worse * hedge.filled_quantity
                pnl.planned_hedge_notional += hedge.plan_price * hedge.filled_quantity
            for code, amount in hedge.fees():
                totals.fees_charged[code] = totals.fees_charged.get(code, Decimal(0)) + amount
                if code in scales:
                    asset = scales.asset(code)
                    totals.fees_booked[code] = totals.fees_booked.get(code, Decimal(0)) \
                        + from_minor(minor_paid_by_dealer(amount, asset), asset)
    return totals


def compute_pnl(dealer_account_id: uuid.UUID, client_fills: Sequence[ClientFillFact],
                hedge_fills: Sequence[HedgeFillFact], scales: ScaleTable,
                price_of: Callable[[str], tuple[str, Decimal | None] | None],
                *, pending_entries: int = 0, now: dt.datetime,
                folded: PnlTotals | None = None) -> DealerPnl:
    """The PnL of these fills, on top of the `folded` totals of earlier ones; `price_of(base)`
    answers (quote asset, mid) to value inventory. Quote assets, inventory and fees are listed
    by asset code."""
    totals = fold(PnlTotals.from_json(folded.to_json()) if folded is not None else PnlTotals(),
                  dealer_account_id, client_fills, hedge_fills, scales)
    balances = {Asset.parse(notation).code: from_minor(units, Asset.parse(notation))
                for notation, units in totals.balances.items()}
    by_quote = {code: QuoteAssetPnl(
        code, spread_captured=t.spread_captured, hedge_slippage=t.hedge_slippage,
        planned_hedge_notional=t.planned_hedge_notional, client_fills=t.client_fills,
        hedge_orders=t.hedge_orders) for code, t in totals.quote_assets.items()}
    inventory = []
    for base in sorted(totals.bases):
        priced = price_of(base)
        quantity = balances.get(base, Decimal(0))
        held = Inventory(base, quantity, None if priced is None else priced[0],
                         None if priced is None else priced[1])
        inventory.append(held)
        if held.price_asset is None:
            continue
        pnl = by_quote.setdefault(held.price_asset, QuoteAssetPnl(held.price_asset))
        value = held.unrealised
        pnl.unrealised = None if value is None or pnl.unrealised is None \
            else pnl.unrealised + value
    for asset, pnl in by_quote.items():
        pnl.realised = balances.get(asset, Decimal(0))
    fees = tuple(FeePaid(code, totals.fees_charged[code],
                         totals.fees_booked.get(code, Decimal(0)))
                 for code in sorted(totals.fees_charged))
    return DealerPnl(
        dealer_account_id=dealer_account_id,
        quote_assets=tuple(by_quote[code] for code in sorted(by_quote)),
        inventory=tuple(inventory), fees=fees, balances=balances,
        unbooked=totals.unbooked, pending_entries=pending_entries, computed_at=now)


# ---------------------------------------------------------------- reads


_CLIENT_FACTS = """
SELECT o.trade_order_id, o.trading_account_id, o.order_side, o.quantity, o.price, q.symbol,
       j.plan ->> 'vwap' AS plan_vwap
FROM trade_order o
JOIN quote q ON q.quote_id = o.quote_id
LEFT JOIN hedge_job j ON j.trade_order_id = o.trade_order_id
WHERE q.dealer_account_id = $1 AND o.status = 'FILLED' AND NOT o.pnl_folded
ORDER BY o.created_at, o.trade_order_id"""
# Only the plan figures an order needs leave the database (whole plans are large): its leg's LP
# and VWAP, and the legs' exact Σ quantity * vwap and Σ quantity. `{final}` narrows the orders.
_HEDGE_FACTS = """
SELECT h.client_order_id, h.trading_account_id, h.symbol, h.side, h.filled_quantity,
       h.avg_price, h.fee_asset, h.fee_amount, h.fees,
       j.plan -> 'legs' -> h.leg ->> 'tradingAccountId' AS leg_account,
       j.plan -> 'legs' -> h.leg ->> 'vwap' AS leg_vwap,
       legs.cost AS legs_cost, legs.quantity AS legs_quantity
FROM hedge_order h JOIN hedge_job j USING (job_id)
LEFT JOIN LATERAL (
    SELECT sum((l ->> 'quantity')::numeric * (l ->> 'vwap')::numeric) AS cost,
           sum((l ->> 'quantity')::numeric) AS quantity
    FROM jsonb_array_elements(CASE WHEN jsonb_typeof(j.plan -> 'legs') = 'array'
                                   THEN j.plan -> 'legs' END) l) legs ON true
WHERE j.dealer_account_id = $1 AND NOT h.pnl_folded AND {which}
ORDER BY h.created_at, h.client_order_id"""
_EXECUTED = "h.filled_quantity > 0 AND h.avg_price IS NOT NULL"
# A hedge order can change until it leaves SENT and UNKNOWN (the worker updates open orders only).
_FINAL = "h.status NOT IN ('SENT', 'UNKNOWN')"


@dataclass(frozen=True, slots=True)
class PnlFacts:
    """What a PnL is computed from, read in one snapshot."""

    client_fills: list[ClientFillFact]  # not folded yet
    hedge_fills: list[HedgeFillFact]  # not folded yet
    pending_entries: int
    folded: PnlTotals | None  # the totals of the facts folded so far


async def load_facts(conn: asyncpg.Connection, dealer_account_id: uuid.UUID) -> PnlFacts:
    """The dealer's folded totals, the client fills and executed hedge orders not folded into
    them, and the pending outbox entries, in one snapshot; DEALER_NOT_FOUND for an unknown
    dealer."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        if await conn.fetchval("SELECT 1 FROM dealer WHERE dealer_account_id = $1",
                               dealer_account_id) is None:
            raise ApiError(Errors.DEALER_NOT_FOUND)
        folded = await conn.fetchval(
            "SELECT totals FROM pnl_checkpoint WHERE dealer_account_id = $1", dealer_account_id)
        client_rows = await conn.fetch(_CLIENT_FACTS, dealer_account_id)
        hedge_rows = await conn.fetch(_HEDGE_FACTS.format(which=_EXECUTED), dealer_account_id)
        pending = await conn.fetchval("SELECT count(*) FROM ledger_outbox WHERE sent_at IS NULL")
    return PnlFacts([_client_fact(r) for r in client_rows], [_hedge_fact(r) for r in hedge_rows],
                    int(pending), None if folded is None else PnlTotals.from_json(folded))


@dataclass(frozen=True, slots=True)
class Folded:
    client_fills: int
    hedge_orders: int
    busy: bool = False  # another replica was folding this dealer: nothing done


FOLD_LIMIT = 1000


async def fold_dealer(conn: asyncpg.Connection, dealer_account_id: uuid.UUID,
                      scales: ScaleTable, now: dt.datetime, *, limit: int = FOLD_LIMIT
                      ) -> Folded:
    """Fold up to `limit` client fills and `limit` final hedge orders of the dealer into its
    checkpoint, and mark them folded, in one transaction. A fold holds the dealer's checkpoint
    row and reads the facts after taking it, so a fact is folded once; a replica that finds the
    row taken leaves the dealer to the one folding it (`busy`)."""
    async with conn.transaction():
        await conn.execute(
            """INSERT INTO pnl_checkpoint (dealer_account_id, totals, client_fills,
                                           hedge_orders, updated_at)
               VALUES ($1, $2, 0, 0, $3) ON CONFLICT (dealer_account_id) DO NOTHING""",
            dealer_account_id, PnlTotals().to_json(), now)
        stored = await conn.fetchval(
            """SELECT totals FROM pnl_checkpoint WHERE dealer_account_id = $1
               FOR UPDATE SKIP LOCKED""", dealer_account_id)
        if stored is None:
            return Folded(0, 0, busy=True)
        totals = PnlTotals.from_json(stored)
        client_rows = await conn.fetch(f"{_CLIENT_FACTS} LIMIT $2", dealer_account_id, limit)
        hedge_rows = await conn.fetch(f"{_HEDGE_FACTS.format(which=_FINAL)} LIMIT $2",
                                      dealer_account_id, limit)
        if not client_rows and not hedge_rows:
            return Folded(0, 0)
        executed = [r for r in hedge_rows
                    if r["filled_quantity"] > 0 and r["avg_price"] is not None]
        # About 30 µs a fact of pure Python (the postings are rebuilt): in a thread, so the
        # event loop keeps serving quotes and hedges between the interpreter's switches.
        await asyncio.to_thread(fold, totals, dealer_account_id,
                                [_client_fact(r) for r in client_rows],
                                [_hedge_fact(r) for r in executed], scales)
        await conn.execute(
            """UPDATE pnl_checkpoint SET totals = $2, client_fills = client_fills + $3,
                      hedge_orders = hedge_orders + $4, updated_at = $5
               WHERE dealer_account_id = $1""",
            dealer_account_id, totals.to_json(), len(client_rows), len(hedge_rows), now)
        await conn.execute(
            "UPDATE trade_order SET pnl_folded = true WHERE trade_order_id = ANY($1::uuid[])",
            [r["trade_order_id"] for r in client_rows])
        await conn.execute(
            "UPDATE hedge_order SET pnl_folded = true WHERE client_order_id = ANY($1::text[])",
            [r["client_order_id"] for r in hedge_rows])
    return Folded(len(client_rows), len(hedge_rows))


async def fold_pending(conn: asyncpg.Connection, scales: ScaleTable, now: dt.datetime, *,
                       limit: int = FOLD_LIMIT) -> Folded:
    """Fold every dealer's final facts not folded yet (the `pnl_fold` job), `limit` at a
    time per transaction."""
    dealers = await conn.fetch(
        """SELECT q.dealer_account_id FROM trade_order o JOIN quote q USING (quote_id)
           WHERE o.status = 'FILLED' AND NOT o.pnl_folded
           UNION
           SELECT j.dealer_account_id FROM hedge_order h JOIN hedge_job j USING (job_id)
           WHERE NOT h.pnl_folded AND h.status NOT IN ('SENT', 'UNKNOWN')""")
    client_fills = hedge_orders = 0
    failed: list[uuid.UUID] = []
    for row in dealers:
        dealer_account_id = row["dealer_account_id"]
        while True:
            try:
                done = await fold_dealer(conn, dealer_account_id, scales, now, limit=limit)
            except Exception:
                # One dealer's facts must not keep the others' from being folded; its own
                # PnL stays right (nothing of it was marked), only slower.
                log.exception("PnL fold of dealer %s failed", dealer_account_id)
                failed.append(dealer_account_id)
                break
            client_fills += done.client_fills
            hedge_orders += done.hedge_orders
            if done.busy or (done.client_fills < limit and done.hedge_orders < limit):
                break
    if failed:  # the job's run counts as a failure
        raise RuntimeError(f"PnL fold failed for dealers {', '.join(map(str, failed))}")
    return Folded(client_fills, hedge_orders)


def _client_fact(r: asyncpg.Record) -> ClientFillFact:
    return ClientFillFact(
        trade_order_id=r["trade_order_id"], client_account_id=r["trading_account_id"],
        symbol=r["symbol"], side=r["order_side"], quantity=Decimal(r["quantity"]),
        price=Decimal(r["price"]),
        plan_vwap=None if r["plan_vwap"] is None else Decimal(r["plan_vwap"]))


def _hedge_fact(r: asyncpg.Record) -> HedgeFillFact:
    fees = order_fees(r["fees"], r["fee_asset"], r["fee_amount"])
    return HedgeFillFact(
        client_order_id=r["client_order_id"], lp_account_id=r["trading_account_id"],
        symbol=r["symbol"], side=r["side"], filled_quantity=Decimal(r["filled_quantity"]),
        average_price=Decimal(r["avg_price"]), fee_asset=r["fee_asset"],
        fee_amount=None if r["fee_amount"] is None else Decimal(r["fee_amount"]),
        plan_price=_plan_price(r),
        other_fees=tuple((code, amount) for code, amount in sorted(fees.items())
                         if code != r["fee_asset"]))


def _plan_price(row: asyncpg.Record) -> Decimal | None:
    """`hedges.plan_price` from the figures the query extracted (the same rule and digits)."""
    if row["leg_vwap"] is not None and row["leg_account"] == str(row["trading_account_id"]):
        return Decimal(row["leg_vwap"])
    if not row["legs_quantity"]:
        return None
    return Decimal(row["legs_cost"]) / Decimal(row["legs_quantity"])
