"""Unhedged exposure per dealer and base asset, its notional at the consolidated mid, and the
kill switch that pauses a dealer's quoting when that notional or its hedge failure rate goes
too far.

Unhedged exposure of a dealer in a base asset (the contract shared with the hedge worker):
Σ over its hedge jobs not HEDGED nor CANCELLED of (quantity - hedged_quantity + carry_in),
positive when the job hedges with a SELL (a client SELL left the dealer long), negative for a
BUY; minus the carry of its lanes in that base (a lane's carry is what it still has to buy).
FAILED jobs keep counting: their exposure is real until they are retried or cancelled. Once
the ledger outbox is drained and no hedge order is in flight, this is the base balance of
`dealer:<id>` (to the satoshi each booked amount rounds).
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal

import asyncpg

from dealer.errors import ApiError, Errors
from dealer.marketdata import MarketDataService
from dealer.metrics import Metrics
from dealer.services.dealers import DealerConfig, DealerStatus, PausedBy
from dealer.services.records import record_operation
from dealer.uow import connection
from venues.base import split_symbol

log = logging.getLogger(__name__)

KILL_SWITCH_REASONS: tuple[PausedBy, ...] = ("manual", "exposure", "hedge_failures")
# The hedge_job statuses that still hold exposure: every status but HEDGED and CANCELLED (the
# contract), listed so the status index serves a check that runs every second. A test compares
# this list with the statuses the table allows.
OPEN_STATUSES = ("PENDING", "IN_PROGRESS", "FAILED")
AUTOMATIC: tuple[PausedBy, ...] = ("exposure", "hedge_failures")
PriceOf = Callable[[str], Decimal | None]
# A hedge_job row's part of the unhedged exposure (the contract above), as SQL.
JOB_UNHEDGED_SQL = """CASE WHEN side = 'SELL' THEN quantity - hedged_quantity + carry_in
                      ELSE hedged_quantity - quantity - carry_in END"""


@dataclass(frozen=True, slots=True)
class KillSwitchPolicy:
    """When the hedge failure rate pauses a dealer: `failure_rate` or more of its last
    `window` finished (HEDGED or FAILED) jobs FAILED, once at least `min_jobs` finished."""

    failure_rate: Decimal
    window: int
    min_jobs: int


@dataclass(frozen=True, slots=True)
class FailureStats:
    finished: int
    failed: int

    @property
    def rate(self) -> Decimal | None:
        return None if self.finished == 0 else Decimal(self.failed) / Decimal(self.finished)


@dataclass(frozen=True, slots=True)
class AssetExposure:
    asset: str
    unhedged: Decimal
    carry: Decimal  # of `unhedged`: its lanes' carry (dust between hedges, same sign rule)
    open_jobs: int  # PENDING or IN_PROGRESS
    failed_jobs: int
    limit: Decimal | None  # the dealer's maxUnhedgedExposure for the asset
    price: Decimal | None  # consolidated mid of one unit in the notional asset; None: no fresh book

    @property
    def notional(self) -> Decimal | None:
        """Signed value in the notional asset (0 without a position, None without a price)."""
        if self.unhedged == 0:
            return Decimal(0)
        return None if self.price is None else self.unhedged * self.price


@dataclass(frozen=True, slots=True)
class DealerExposure:
    dealer_account_id: uuid.UUID
    status: DealerStatus
    paused_by: PausedBy | None
    pause_reason: str | None
    notional_asset: str
    max_unhedged_notional: Decimal
    assets: tuple[AssetExposure, ...]
    failures: FailureStats
    checked_at: dt.datetime

    @property
    def unhedged_notional(self) -> Decimal:
        """Gross notional (long and short positions add up) of the assets that have a price."""
        return sum((abs(n) for a in self.assets if (n := a.notional) is not None), Decimal(0))

    @property
    def notional_complete(self) -> bool:
        """False when an open position could not be valued (no fresh book)."""
        return all(a.notional is not None for a in self.assets)


# ---------------------------------------------------------------- prices


def consolidated_mid(market_data: MarketDataService, dealer_account_id: uuid.UUID, symbol: str,
                     now_ms: int) -> Decimal | None:
    """Mid of the best bid and best ask over the dealer's fresh, ACTIVE LP books of `symbol`."""
    bids: list[Decimal] = []
    asks: list[Decimal] = []
    for lp, state in market_data.lp_books(dealer_account_id, symbol):
        if (not lp.active or state is None or state.book is None
                or not state.is_fresh(now_ms, market_data.max_age_ms)):
            continue
        if (bid := state.book.best_bid) is not None:
            bids.append(bid)
        if (ask := state.book.best_ask) is not None:
            asks.append(ask)
    if not bids or not asks:
        return None
    return (max(bids) + min(asks)) / 2


def unit_price(asset: str, notional_asset: str, symbols: Sequence[str],
               mid: PriceOf) -> Decimal | None:
    """One unit of `asset` in `notional_asset`, from the dealer's symbols: directly
    (`ASSET/NOTIONAL`) or through one cross (`ASSET/X` then `X/NOTIONAL`)."""
    if asset == notional_asset:
        return Decimal(1)
    direct = f"{asset}/{notional_asset}"
    if direct in symbols:
        return mid(direct)
    for symbol in symbols:
        base, quote = split_symbol(symbol)
        cross = f"{quote}/{notional_asset}"
        if base == asset and cross in symbols:
            first, second = mid(symbol), mid(cross)
            return None if first is None or second is None else first * second
    return None


def base_assets(symbols: Iterable[str]) -> list[str]:
    """The base assets of `symbols`, in their order, once each."""
    seen: dict[str, None] = {}
    for symbol in symbols:
        seen.setdefault(split_symbol(symbol)[0], None)
    return list(seen)


# ---------------------------------------------------------------- reads


@dataclass(frozen=True, slots=True)
class _Position:
    unhedged: Decimal
    carry: Decimal  # the lanes' part of `unhedged`
    open_jobs: int
    failed_jobs: int


async def _positions(conn: asyncpg.Connection, dealer_account_id: uuid.UUID | None
                     ) -> dict[uuid.UUID, dict[str, _Position]]:
    rows = await conn.fetch(
        f"""SELECT dealer_account_id, split_part(symbol, '/', 1) AS asset,
                  sum(unhedged) AS unhedged, sum(carry) AS carry,
                  count(*) FILTER (WHERE status IN ('PENDING', 'IN_PROGRESS')) AS open_jobs,
                  count(*) FILTER (WHERE status = 'FAILED') AS failed_jobs
           FROM (SELECT dealer_account_id, symbol, status, 0 AS carry,
                        {JOB_UNHEDGED_SQL} AS unhedged
                 FROM hedge_job
                 WHERE status = ANY($2::text[]) AND ($1::uuid IS NULL OR dealer_account_id = $1)
                 UNION ALL
                 SELECT dealer_account_id, symbol, NULL, -carry, -carry FROM hedge_lane
                 WHERE carry <> 0 AND ($1::uuid IS NULL OR dealer_account_id = $1)) open
           GROUP BY 1, 2""",  # noqa: S608
        dealer_account_id, list(OPEN_STATUSES))
    found: dict[uuid.UUID, dict[str, _Position]] = {}
    for r in rows:
        found.setdefault(r["dealer_account_id"], {})[r["asset"]] = _Position(
            Decimal(r["unhedged"]), Decimal(r["carry"]), int(r["open_jobs"]),
            int(r["failed_jobs"]))
    return found


async def _failures(conn: asyncpg.Connection, window: int, dealer_account_id: uuid.UUID | None
                    ) -> dict[uuid.UUID, FailureStats]:
    # The last `window` finished jobs by fill time, taken from each final status's newest
    # (the status index serves both, however long the history). CANCELLED jobs are the desk's
    # decision, not a hedge outcome: they are left out.
    rows = await conn.fetch(
        """SELECT d.dealer_account_id, count(*) AS finished,
                  count(*) FILTER (WHERE last.status = 'FAILED') AS failed
           FROM dealer d CROSS JOIN LATERAL (
               SELECT status FROM (
                   (SELECT status, created_at, job_id FROM hedge_job
                    WHERE status = 'HEDGED' AND dealer_account_id = d.dealer_account_id
                    ORDER BY created_at DESC, job_id LIMIT $1)
                   UNION ALL
                   (SELECT status, created_at, job_id FROM hedge_job
                    WHERE status = 'FAILED' AND dealer_account_id = d.dealer_account_id
                    ORDER BY created_at DESC, job_id LIMIT $1)) finished
               ORDER BY created_at DESC, job_id LIMIT $1) last
           WHERE $2::uuid IS NULL OR d.dealer_account_id = $2
           GROUP BY 1""",
        window, dealer_account_id)
    return {r["dealer_account_id"]: FailureStats(int(r["finished"]), int(r["failed"]))
            for r in rows}


def _exposure_of(row: asyncpg.Record, positions: Mapping[str, _Position],
                 failures: FailureStats, market_data: MarketDataService,
                 now: dt.datetime) -> DealerExposure:
    config = DealerConfig.model_validate(row["config"])
    dealer_account_id: uuid.UUID = row["dealer_account_id"]
    notional_asset = split_symbol(config.symbols[0])[1]
    now_ms = int(now.timestamp() * 1000)
    mids: dict[str, Decimal | None] = {}

    def mid(symbol: str) -> Decimal | None:
        if symbol not in mids:
            mids[symbol] = consolidated_mid(market_data, dealer_account_id, symbol, now_ms)
        return mids[symbol]

    # The bases the dealer quotes, then any other base an open job still holds (a symbol
    # removed from the configuration leaves its jobs' exposure behind).
    names = base_assets(config.symbols)
    names += sorted(set(positions) - set(names))
    assets = []
    for name in names:
        position = positions.get(name, _Position(Decimal(0), Decimal(0), 0, 0))
        limit = config.max_unhedged_exposure.get(name)
        assets.append(AssetExposure(
            asset=name, unhedged=position.unhedged, carry=position.carry,
            open_jobs=position.open_jobs,
            failed_jobs=position.failed_jobs, limit=None if limit is None else Decimal(limit),
            price=unit_price(name, notional_asset, config.symbols, mid)))
    return DealerExposure(
        dealer_account_id=dealer_account_id, status=row["status"], paused_by=row["paused_by"],
        pause_reason=row["pause_reason"], notional_asset=notional_asset,
        max_unhedged_notional=Decimal(config.max_unhedged_notional), assets=tuple(assets),
        failures=failures, checked_at=now)


_DEALERS = """SELECT dealer_account_id, status, paused_by, pause_reason, config FROM dealer
              WHERE ($1::uuid IS NULL OR dealer_account_id = $1)
              ORDER BY created_at, dealer_account_id"""


async def exposures(conn: asyncpg.Connection, market_data: MarketDataService,
                    policy: KillSwitchPolicy, now: dt.datetime,
                    dealer_account_id: uuid.UUID | None = None) -> list[DealerExposure]:
    """Every dealer's exposure (or one dealer's), read in one snapshot."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        dealers = await conn.fetch(_DEALERS, dealer_account_id)
        positions = await _positions(conn, dealer_account_id)
        failures = await _failures(conn, policy.window, dealer_account_id)
    return [_exposure_of(row, positions.get(row["dealer_account_id"], {}),
                         failures.get(row["dealer_account_id"], FailureStats(0, 0)),
                         market_data, now)
            for row in dealers]


async def dealer_exposure(conn: asyncpg.Connection, market_data: MarketDataService,
                          policy: KillSwitchPolicy, now: dt.datetime,
                          dealer_account_id: uuid.UUID) -> DealerExposure:
    """One dealer's exposure, or DEALER_NOT_FOUND."""
    found = await exposures(conn, market_data, policy, now, dealer_account_id)
    if not found:
        raise ApiError(Errors.DEALER_NOT_FOUND)
    return found[0]


# ---------------------------------------------------------------- the kill switch


def trip_reason(exposure: DealerExposure, policy: KillSwitchPolicy
                ) -> tuple[PausedBy, str] | None:
    """Why the kill switch should pause this dealer now, or None."""
    notional = exposure.unhedged_notional
    if notional > exposure.max_unhedged_notional:
        return "exposure", (
            f"kill switch: unhedged notional {_plain(notional)} {exposure.notional_asset} is "
            f"over the limit {_plain(exposure.max_unhedged_notional)}")
    stats = exposure.failures
    rate = stats.rate
    if stats.finished >= policy.min_jobs and rate is not None and rate >= policy.failure_rate:
        return "hedge_failures", (
            f"kill switch: {stats.failed} of the last {stats.finished} finished hedge jobs "
            f"FAILED (threshold {_plain(policy.failure_rate * 100)} %)")
    return None


async def engage(conn: asyncpg.Connection, dealer_account_id: uuid.UUID, reason: PausedBy,
                 text: str, now: dt.datetime) -> bool:
    """Pause an ACTIVE dealer for `reason`, with its PAUSE operation in the same transaction;
    False when it was paused already (by anyone)."""
    async with conn.transaction():
        changed = await conn.fetchval(
            """UPDATE dealer SET status = 'PAUSED', paused_by = $2, pause_reason = $3,
                   updated_at = $4
               WHERE dealer_account_id = $1 AND status = 'ACTIVE' RETURNING 1""",
            dealer_account_id, reason, text[:500], now)
        if changed is None:
            return False
        await record_operation(conn, dealer_account_id, "PAUSE", now, {
            "by": reason, "reason": text[:500], "previousStatus": "ACTIVE",
            "previousPausedBy": None})
    return True


async def check_and_engage(pool: asyncpg.Pool, market_data: MarketDataService,
                           policy: KillSwitchPolicy, now: dt.datetime) -> list[DealerExposure]:
    """Value every dealer's exposure and pause the ACTIVE ones whose kill switch trips.

    Several replicas may run this at once: the pause only applies to an ACTIVE dealer, so one
    of them pauses it and the others find it paused.
    """
    async with connection(pool) as conn:
        found = await exposures(conn, market_data, policy, now)
        checked = []
        for exposure in found:
            trip = trip_reason(exposure, policy) if exposure.status == "ACTIVE" else None
            if trip is None:
                checked.append(exposure)
                continue
            if await engage(conn, exposure.dealer_account_id, *trip, now):
                log.warning("kill switch engaged for dealer %s: %s", exposure.dealer_account_id,
                            trip[1], extra={"event": "kill_switch_engaged",
                                            "dealer_account_id": str(exposure.dealer_account_id),
                                            "reason": trip[0]})
            # Whoever paused it (this check, another replica's, an admin), report its state now.
            state = await conn.fetchrow(
                "SELECT status, paused_by, pause_reason FROM dealer WHERE dealer_account_id = $1",
                exposure.dealer_account_id)
            if state is not None:
                exposure = replace(exposure, status=state["status"], paused_by=state["paused_by"],
                                   pause_reason=state["pause_reason"])
            checked.append(exposure)
    return checked


# ---------------------------------------------------------------- metrics


def export_kill_switch(metrics: Metrics, dealer_account_id: uuid.UUID, status: str,
                       paused_by: str | None) -> None:
    """`dealer_kill_switch_engaged`: 1 for the reason the dealer is paused for, 0 for the others
    (a pause without a recorded reason is an admin's)."""
    engaged = (paused_by or "manual") if status == "PAUSED" else None
    for reason in KILL_SWITCH_REASONS:
        metrics.kill_switch.labels(str(dealer_account_id), reason).set(
            1 if reason == engaged else 0)


def export_exposures(metrics: Metrics, checked: Sequence[DealerExposure]) -> None:
    """Replace the exposure, notional and kill-switch gauges with this check's figures."""
    metrics.unhedged_exposure.clear()
    metrics.unhedged_notional.clear()
    metrics.kill_switch.clear()
    for exposure in checked:
        dealer = str(exposure.dealer_account_id)
        for asset in exposure.assets:
            metrics.unhedged_exposure.labels(dealer, asset.asset).set(float(asset.unhedged))
        metrics.unhedged_notional.labels(dealer).set(float(exposure.unhedged_notional))
        export_kill_switch(metrics, exposure.dealer_account_id, exposure.status,
                           exposure.paused_by)


def _plain(value: Decimal) -> str:
    return format(value.normalize(), "f")
