"""Hedging control and dealer risk: hedge jobs with their orders, retry and cancel, a dealer's
unhedged exposure with its kill switch, and its PnL."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Annotated, Literal

from aiohttp import web
from pydantic import AfterValidator, Field, StringConstraints

from dealer.api.framework import Api
from dealer.api.schemas import Side
from dealer.appkeys import ASSET_SCALES, CLOCK, MARKET_DATA, METRICS, POOL, SETTINGS
from dealer.auth import Principal, Role
from dealer.errors import Errors
from dealer.services import exposure, hedges, pnl
from dealer.services.dealers import DealerStatus, PausedBy
from dealer.settings import Settings
from dealer.uow import UnitOfWork, connection
from dealer.wire import ListQuery, Page, QueryModel, Uuid, WireModel, iso, millis
from ledger.assets import ScaleTable

TAG_HEDGING = "hedging"
TAG_DEALERS = "dealers"
ADMIN_ONLY = [Role.ADMIN]
# A dealer's hedges, exposure and PnL are the desk's own risk figures: admins and viewers read
# them (like net flow and reconciliation); traders, who act for clients, do not.
READERS = [Role.ADMIN, Role.VIEWER]

JobStatus = Literal["PENDING", "IN_PROGRESS", "HEDGED", "FAILED", "CANCELLED"]
HedgeOrderStatus = Literal["SENT", "FILLED", "PARTIALLY_FILLED", "EXPIRED", "REJECTED", "UNKNOWN"]


def _storable(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500),
                   AfterValidator(_storable)]


def plain(value: Decimal | None) -> str | None:
    """A decimal as the API carries it: digits, never an exponent."""
    if value is None:
        return None
    text = format(value.normalize(), "f")
    return "0" if text == "-0" else text


def _rounded(value: Decimal | None, asset: str, scales: ScaleTable) -> str | None:
    """An analytics figure (not a booked amount) shown at the asset's ledger scale."""
    if value is None:
        return None
    if asset in scales:
        value = value.quantize(Decimal(1).scaleb(-scales.asset(asset).scale),
                               rounding=ROUND_HALF_EVEN)
    return plain(value)


# ---------------------------------------------------------------- requests


class HedgeListQuery(ListQuery):
    dealer_account_id: Uuid | None = None
    status: JobStatus | None = None
    trade_order_id: Uuid | None = Field(default=None,
                                        description="The client order the job hedges")
    start_time: int | None = Field(default=None, ge=0, le=10**14,
                                   description="Jobs created at or after (unix ms)")
    end_time: int | None = Field(default=None, ge=0, le=10**14,
                                 description="Jobs created before (unix ms)")
    ascending: bool = False


class HedgeActionBody(WireModel):
    job_id: Uuid
    reason: Reason = Field(description="Why (kept with the job and logged with who and when)")


class DealerQuery(QueryModel):
    dealer_account_id: Uuid


# ---------------------------------------------------------------- responses


class OrderFeeOut(WireModel):
    asset: str
    amount: str


class HedgeOrderOut(WireModel):
    client_order_id: str = Field(description="h-<jobId>-<attempt>-<leg>")
    attempt: int
    leg: int
    trading_account_id: uuid.UUID = Field(description="The LP account")
    venue: str
    instrument_id: str
    symbol: str
    order_side: Side = Field(description="The dealer's side on the LP")
    quantity: str
    limit_price: str
    plan_price: str | None = Field(description="The quote-time plan's VWAP for this order "
                                   "(its leg's, or the job's when re-routed), before fees")
    status: HedgeOrderStatus = Field(description="SENT and UNKNOWN: in flight (no answer yet, "
                                     "or an outcome the venue will be asked for again)")
    filled_quantity: str
    avg_price: str | None
    fee_asset: str | None = Field(description="One fee asset of `fees` (the base asset's when "
                                  "the venue charged one)")
    fee: str | None = Field(description="The fee in `feeAsset`")
    fees: list[OrderFeeOut] = Field(description="Every fee asset the venue charged the order, "
                                    "by asset code")
    reject_reason: str | None
    created_at: int
    created_at_date_time: str
    updated_at: int
    updated_at_date_time: str


class HedgeJobOut(WireModel):
    job_id: uuid.UUID
    dealer_account_id: uuid.UUID
    trade_order_id: uuid.UUID | None = Field(description="The client fill this job hedges; "
                                             "null for a carry job")
    origin: Literal["FILL", "CARRY"] = Field(description="FILL: a client fill's hedge; CARRY: "
                                              "an idle lane's carry (its quantity) and the "
                                              "residuals riding it, once an LP would take "
                                              "them")
    instrument_id: str
    symbol: str
    hedge_side: Side = Field(description="The dealer's side on the LPs")
    quantity: str
    hedged_quantity: str
    remaining_quantity: str
    status: JobStatus
    attempts: int
    claimed_by: str | None
    claimed_until: int | None
    claimed_until_date_time: str | None
    last_error: str | None = Field(description="The worker's last error, or the desk's last "
                                   "action: RETRY/CANCEL by whom, when and why")
    plan_vwap: str | None = Field(description="The quote-time hedge plan's fee-adjusted VWAP")
    first_order_at: int | None
    first_order_at_date_time: str | None
    created_at: int
    created_at_date_time: str
    updated_at: int
    updated_at_date_time: str
    orders: list[HedgeOrderOut]


class FailureRateOut(WireModel):
    finished: int = Field(description="Last finished (HEDGED or FAILED) jobs looked at")
    failed: int
    rate: str | None
    threshold: str
    window: int
    min_jobs: int


class KillSwitchOut(WireModel):
    engaged: bool = Field(description="Quoting is paused")
    reason: PausedBy | None = Field(description="manual, exposure or hedge_failures")
    pause_reason: str | None
    hedge_failures: FailureRateOut


class AssetExposureOut(WireModel):
    asset: str
    unhedged_quantity: str = Field(description="Positive: long (to sell), negative: short")
    carry_quantity: str = Field(description="Of unhedgedQuantity: the hedge lanes' carry, "
                                "dust between hedges (same sign rule). It joins the lane's next "
                                "hedge; an idle lane's carry an LP would take is hedged by a "
                                "carry job; below every LP's minimum order it waits")
    max_unhedged_exposure: str | None
    mid: str | None = Field(description="Consolidated mid of one unit in the notional asset; "
                            "null without a fresh LP book")
    notional: str | None = Field(description="unhedgedQuantity * mid; null without a price")
    price_fresh: bool
    open_jobs: int = Field(description="PENDING or IN_PROGRESS jobs")
    failed_jobs: int


class ExposureOut(WireModel):
    dealer_account_id: uuid.UUID
    status: DealerStatus
    notional_asset: str = Field(description="The quote asset of the dealer's first symbol")
    unhedged_notional: str = Field(description="Σ |notional| of the assets with a price")
    notional_complete: bool = Field(description="False when a position has no price (its "
                                    "notional is left out)")
    max_unhedged_notional: str
    kill_switch: KillSwitchOut
    assets: list[AssetExposureOut]
    checked_at: int
    checked_at_date_time: str


class QuoteAssetPnlOut(WireModel):
    asset: str
    realised: str = Field(description="The dealer's balance in this asset from its fills, "
                          "hedges and fees, booked as the ledger books them: equals the "
                          "balance of dealer:<id> once the outbox is drained")
    spread_captured: str = Field(description="Σ (client price - plan VWAP) * quantity, signed "
                                 "for the dealer")
    hedge_slippage: str = Field(description="Σ (hedge price - plan price) * quantity; "
                                "positive: worse for the dealer")
    hedge_slippage_bps: str | None
    client_fills: int
    hedge_orders: int
    unrealised: str | None = Field(description="Inventory valued at mid in this asset; null "
                                   "without a fresh book")
    total: str | None = Field(description="realised + unrealised")


class InventoryOut(WireModel):
    asset: str
    quantity: str = Field(description="The dealer's balance in this base asset")
    price_asset: str | None
    mid: str | None
    unrealised: str | None


class PnlFeeOut(WireModel):
    asset: str
    amount: str = Field(description="As the venues charged it")
    booked: str = Field(description="As the ledger booked it (rounded down per fee)")


class PnlOut(WireModel):
    dealer_account_id: uuid.UUID
    quote_assets: list[QuoteAssetPnlOut]
    inventory: list[InventoryOut]
    fees: list[PnlFeeOut]
    unbooked_fills: int = Field(description="Fills whose facts could not be rebuilt as "
                                "postings (logged)")
    pending_entries: int = Field(description="Ledger entries still in the outbox")
    computed_at: int
    computed_at_date_time: str


# ---------------------------------------------------------------- conversion


def order_out(order: hedges.HedgeOrderRecord, plan: dict[str, object]) -> HedgeOrderOut:
    return HedgeOrderOut(
        client_order_id=order.client_order_id, attempt=order.attempt, leg=order.leg,
        trading_account_id=order.trading_account_id, venue=order.venue,
        instrument_id=f"{order.venue}:{order.symbol}", symbol=order.symbol,
        order_side=order.side, quantity=plain(order.quantity) or "0",
        limit_price=plain(order.limit_price) or "0",
        plan_price=plain(hedges.plan_price(plan, order.leg, order.trading_account_id)),
        status=order.status,
        filled_quantity=plain(order.filled_quantity) or "0", avg_price=plain(order.avg_price),
        fee_asset=order.fee_asset, fee=plain(order.fee_amount),
        fees=[OrderFeeOut(asset=code, amount=plain(order.fees[code]) or "0")
              for code in sorted(order.fees)],
        reject_reason=order.reject_reason,
        created_at=millis(order.created_at) or 0, created_at_date_time=iso(order.created_at) or "",
        updated_at=millis(order.updated_at) or 0, updated_at_date_time=iso(order.updated_at) or "")


def job_out(job: hedges.HedgeJobRecord) -> HedgeJobOut:
    return HedgeJobOut(
        job_id=job.job_id, dealer_account_id=job.dealer_account_id,
        trade_order_id=job.trade_order_id,
        origin="FILL" if job.trade_order_id is not None else "CARRY",
        instrument_id=f"FERMATA:{job.symbol}",
        symbol=job.symbol, hedge_side=job.side, quantity=plain(job.quantity) or "0",
        hedged_quantity=plain(job.hedged_quantity) or "0",
        remaining_quantity=plain(job.quantity - job.hedged_quantity) or "0",
        status=job.status,
        attempts=job.attempts, claimed_by=job.claimed_by,
        claimed_until=millis(job.claimed_until), claimed_until_date_time=iso(job.claimed_until),
        last_error=job.last_error, plan_vwap=plain(job.plan_vwap),
        first_order_at=millis(job.first_order_at),
        first_order_at_date_time=iso(job.first_order_at),
        created_at=millis(job.created_at) or 0, created_at_date_time=iso(job.created_at) or "",
        updated_at=millis(job.updated_at) or 0, updated_at_date_time=iso(job.updated_at) or "",
        orders=[order_out(o, job.plan) for o in job.orders])


def kill_switch_policy(settings: Settings) -> exposure.KillSwitchPolicy:
    return exposure.KillSwitchPolicy(
        failure_rate=Decimal(str(settings.kill_switch_failure_rate)),
        window=settings.kill_switch_failure_window, min_jobs=settings.kill_switch_min_jobs)


def exposure_out(report: exposure.DealerExposure,
                 policy: exposure.KillSwitchPolicy) -> ExposureOut:
    engaged = report.status == "PAUSED"
    failures = report.failures
    return ExposureOut(
        dealer_account_id=report.dealer_account_id, status=report.status,
        notional_asset=report.notional_asset,
        unhedged_notional=plain(report.unhedged_notional) or "0",
        notional_complete=report.notional_complete,
        max_unhedged_notional=plain(report.max_unhedged_notional) or "0",
        kill_switch=KillSwitchOut(
            engaged=engaged, reason=(report.paused_by or "manual") if engaged else None,
            pause_reason=report.pause_reason,
            hedge_failures=FailureRateOut(
                finished=failures.finished, failed=failures.failed,
                rate=plain(failures.rate), threshold=plain(policy.failure_rate) or "0",
                window=policy.window, min_jobs=policy.min_jobs)),
        assets=[AssetExposureOut(
            asset=a.asset, unhedged_quantity=plain(a.unhedged) or "0",
            carry_quantity=plain(a.carry) or "0",
            max_unhedged_exposure=plain(a.limit), mid=plain(a.price),
            notional=plain(a.notional), price_fresh=a.price is not None,
            open_jobs=a.open_jobs, failed_jobs=a.failed_jobs) for a in report.assets],
        checked_at=millis(report.checked_at) or 0,
        checked_at_date_time=iso(report.checked_at) or "")


def pnl_out(report: pnl.DealerPnl, scales: ScaleTable) -> PnlOut:
    return PnlOut(
        dealer_account_id=report.dealer_account_id,
        quote_assets=[QuoteAssetPnlOut(
            asset=q.asset, realised=plain(q.realised) or "0",
            spread_captured=_rounded(q.spread_captured, q.asset, scales) or "0",
            hedge_slippage=_rounded(q.hedge_slippage, q.asset, scales) or "0",
            hedge_slippage_bps=None if q.hedge_slippage_bps is None
            else plain(q.hedge_slippage_bps.quantize(Decimal("0.0001"))),
            client_fills=q.client_fills, hedge_orders=q.hedge_orders,
            unrealised=_rounded(q.unrealised, q.asset, scales),
            total=_rounded(q.total, q.asset, scales)) for q in report.quote_assets],
        inventory=[InventoryOut(
            asset=i.asset, quantity=plain(i.quantity) or "0", price_asset=i.price_asset,
            mid=plain(i.price), unrealised=None if i.price_asset is None
            else _rounded(i.unrealised, i.price_asset, scales)) for i in report.inventory],
        fees=[PnlFeeOut(asset=f.asset, amount=plain(f.amount) or "0",
                     booked=plain(f.booked) or "0") for f in report.fees],
        unbooked_fills=report.unbooked, pending_entries=report.pending_entries,
        computed_at=millis(report.computed_at) or 0,
        computed_at_date_time=iso(report.computed_at) or "")


# ---------------------------------------------------------------- registration


def register(api: Api) -> None:
    api.get("/api/v3/fermata/hedge/list", summary="Hedge jobs with their orders, newest "
            "first", tag=TAG_HEDGING, roles=READERS, query=HedgeListQuery,
            response=Page[HedgeJobOut])(list_jobs)
    api.post("/api/v3/fermata/hedge/retry", summary="Put a FAILED hedge job back to PENDING "
             "with a fresh attempt budget", tag=TAG_HEDGING, roles=ADMIN_ONLY,
             body=HedgeActionBody, response=HedgeJobOut,
             errors=[Errors.HEDGE_JOB_NOT_FOUND, Errors.HEDGE_JOB_NOT_FAILED],
             description="Admin only. Audited: `lastError` and the log keep who, when and "
             "why.")(retry_job)
    api.post("/api/v3/fermata/hedge/cancel", summary="Cancel a PENDING or FAILED hedge job "
             "(the desk hedges the rest by hand): its remainder no longer counts as exposure",
             tag=TAG_HEDGING, roles=ADMIN_ONLY, body=HedgeActionBody, response=HedgeJobOut,
             errors=[Errors.HEDGE_JOB_NOT_FOUND, Errors.HEDGE_JOB_NOT_CANCELLABLE,
                     Errors.HEDGE_JOB_CLAIMED, Errors.HEDGE_ORDERS_IN_FLIGHT],
             description="Admin only. Refused while a hedge worker holds the job or one of "
             "its orders has no known outcome. Audited like retry.")(cancel_job)
    api.get("/api/v3/fermata/dealer/exposure", summary="A dealer's unhedged exposure per base "
            "asset, its notional at the consolidated mid, its limits and kill switch",
            tag=TAG_DEALERS, roles=READERS, query=DealerQuery, response=ExposureOut,
            errors=[Errors.DEALER_NOT_FOUND])(dealer_exposure)
    api.get("/api/v3/fermata/dealer/pnl", summary="A dealer's PnL per quote asset: spread "
            "captured, hedge slippage, fees, realised (= its ledger balance) and unrealised",
            tag=TAG_DEALERS, roles=READERS, query=DealerQuery, response=PnlOut,
            errors=[Errors.DEALER_NOT_FOUND])(dealer_pnl)


# ---------------------------------------------------------------- handlers


def _moment(ms: int | None) -> dt.datetime | None:
    return None if ms is None else dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)


def _actor(principal: Principal | None) -> str:
    return "unknown" if principal is None else principal.subject


async def list_jobs(request: web.Request, principal: Principal | None,
                    params: HedgeListQuery) -> Page[HedgeJobOut]:
    where = hedges.JobFilter(
        dealer_account_id=params.dealer_account_id, status=params.status,
        trade_order_id=params.trade_order_id, start=_moment(params.start_time),
        end=_moment(params.end_time), ascending=params.ascending, limit=params.limit,
        offset=params.offset)
    async with connection(request.app[POOL]) as conn:
        jobs, total = await hedges.list_jobs(conn, where)
    return Page([job_out(j) for j in jobs], total, params.limit, params.offset)


async def retry_job(request: web.Request, principal: Principal | None,
                    params: HedgeActionBody) -> HedgeJobOut:
    async with UnitOfWork(request.app[POOL]) as uow:
        job = await hedges.retry_job(uow, request.app[CLOCK](), params.job_id,
                                     actor=_actor(principal), reason=params.reason)
    return job_out(job)


async def cancel_job(request: web.Request, principal: Principal | None,
                     params: HedgeActionBody) -> HedgeJobOut:
    async with UnitOfWork(request.app[POOL]) as uow:
        job = await hedges.cancel_job(uow, request.app[CLOCK](), params.job_id,
                                      actor=_actor(principal), reason=params.reason)
    request.app[METRICS].hedge_job_finished(hedges.CANCELLED, None)
    return job_out(job)


async def dealer_exposure(request: web.Request, principal: Principal | None,
                          params: DealerQuery) -> ExposureOut:
    app = request.app
    policy = kill_switch_policy(app[SETTINGS])
    async with connection(app[POOL]) as conn:
        report = await exposure.dealer_exposure(conn, app[MARKET_DATA], policy, app[CLOCK](),
                                                params.dealer_account_id)
    return exposure_out(report, policy)


async def dealer_pnl(request: web.Request, principal: Principal | None,
                     params: DealerQuery) -> PnlOut:
    app = request.app
    now = app[CLOCK]()
    scales = app[ASSET_SCALES]
    async with connection(app[POOL]) as conn:
        facts = await pnl.load_facts(conn, params.dealer_account_id)
        symbols = await conn.fetchval(
            "SELECT config -> 'symbols' FROM dealer WHERE dealer_account_id = $1",
            params.dealer_account_id)
    market_data = app[MARKET_DATA]
    now_ms = millis(now) or 0

    def price_of(base: str) -> tuple[str, Decimal | None] | None:
        # The first symbol the dealer quotes with this base values its inventory.
        for symbol in symbols or []:
            symbol_base, quote = symbol.split("/", 1)
            if symbol_base == base:
                return quote, exposure.consolidated_mid(market_data, params.dealer_account_id,
                                                        symbol, now_ms)
        return None

    report = pnl.compute_pnl(params.dealer_account_id, facts.client_fills, facts.hedge_fills,
                             scales, price_of, pending_entries=facts.pending_entries, now=now,
                             folded=facts.folded)
    return pnl_out(report, scales)
