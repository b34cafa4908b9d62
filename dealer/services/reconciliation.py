"""Reconciliation: what each linked LP's venue balances did since the link against what the
ledger says flowed through its `exchange:` wallet (DESIGN §7: venue change = -wallet balance)."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from dataclasses import dataclass
from decimal import Decimal

import asyncpg

from dealer.uow import connection
from ledger.accounts import exchange_account
from ledger.assets import Asset, from_minor
from ledger.backend import LedgerBackend, LedgerUnavailable
from venues.base import VenueAccount, VenueError
from venues.registry import VenueRegistry

log = logging.getLogger(__name__)
DEFAULT_TOLERANCE = Decimal("0.00000001")


@dataclass(frozen=True, slots=True)
class AssetCheck:
    asset: str
    baseline: Decimal
    venue_balance: Decimal
    venue_change: Decimal
    ledger_net_flow: Decimal
    drift: Decimal
    status: str  # OK | DRIFT | IN_FLIGHT


@dataclass(frozen=True, slots=True)
class LpCheck:
    trading_account_id: uuid.UUID
    dealer_account_id: uuid.UUID
    venue: str
    address: str
    status: str  # OK | DRIFT | IN_FLIGHT | NO_BASELINE | VENUE_UNAVAILABLE | LEDGER_UNAVAILABLE
    pending_entries: int
    assets: tuple[AssetCheck, ...]
    detail: str | None = None


async def capture_baseline(pool: asyncpg.Pool, venues: VenueRegistry,
                           trading_account_id: uuid.UUID, now: dt.datetime) -> bool:
    """Record the LP's venue balances once (its first link); False if the venue is down."""
    async with connection(pool) as conn:
        row = await conn.fetchrow(
            """SELECT venue, external_trading_account_id, venue_ref,
                      EXISTS (SELECT 1 FROM lp_balance_baseline b
                              WHERE b.trading_account_id = t.trading_account_id) AS has
               FROM trading_account t WHERE trading_account_id = $1""", trading_account_id)
    if row is None or row["has"]:
        return row is not None
    account = VenueAccount(trading_account_id, row["external_trading_account_id"],
                           row["venue_ref"])
    try:
        balances = await venues.execution(row["venue"]).balances(account)
    except VenueError as exc:
        log.warning("no balance baseline for %s yet: %s", trading_account_id, exc)
        return False
    async with connection(pool) as conn:
        await conn.executemany(
            """INSERT INTO lp_balance_baseline (trading_account_id, asset, amount, taken_at)
               VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING""",
            [(trading_account_id, b.asset, b.total, now) for b in balances]
            or [(trading_account_id, "-", Decimal(0), now)],
        )
    return True


async def reconcile(pool: asyncpg.Pool, venues: VenueRegistry, ledger: LedgerBackend,
                    now: dt.datetime, *, dealer_account_id: uuid.UUID | None = None,
                    tolerance: Decimal = DEFAULT_TOLERANCE) -> list[LpCheck]:
    """Check every linked LP (of one dealer when given)."""
    async with connection(pool) as conn:
        links = await conn.fetch(
            """SELECT l.dealer_account_id, l.trading_account_id, t.venue,
                      t.external_trading_account_id, t.venue_ref
               FROM dealer_link l JOIN trading_account t USING (trading_account_id)
               WHERE $1::uuid IS NULL OR l.dealer_account_id = $1
               ORDER BY l.linked_at, l.trading_account_id""", dealer_account_id)
    checks = []
    for link in links:
        checks.append(await _check_lp(pool, venues, ledger, link, now, tolerance))
    return checks


async def pending_entries(pool: asyncpg.Pool, address: str | None = None) -> int:
    """Outbox entries not yet in the ledger (touching `address` when given)."""
    async with connection(pool) as conn:
        count: int = await conn.fetchval(
            """SELECT count(*) FROM ledger_outbox WHERE sent_at IS NULL
               AND ($1::text IS NULL OR strpos(payload::text, $1) > 0)""", address)
    return count


async def _check_lp(pool: asyncpg.Pool, venues: VenueRegistry, ledger: LedgerBackend,
                    link: asyncpg.Record, now: dt.datetime, tolerance: Decimal) -> LpCheck:
    account_id: uuid.UUID = link["trading_account_id"]
    address = exchange_account(account_id)
    pending = await pending_entries(pool, address)

    def result(status: str, assets: tuple[AssetCheck, ...] = (), detail: str | None = None
               ) -> LpCheck:
        return LpCheck(account_id, link["dealer_account_id"], link["venue"], address, status,
                       pending, assets, detail)

    async with connection(pool) as conn:
        baseline = {r["asset"]: r["amount"] for r in await conn.fetch(
            "SELECT asset, amount FROM lp_balance_baseline WHERE trading_account_id = $1",
            account_id)}
    if not baseline:
        taken = await capture_baseline(pool, venues, account_id, now)
        return result("NO_BASELINE", detail=None if taken else "venue unavailable")
    baseline.pop("-", None)
    try:
        balances = await venues.execution(link["venue"]).balances(VenueAccount(
            account_id, link["external_trading_account_id"], link["venue_ref"]))
    except VenueError as exc:
        return result("VENUE_UNAVAILABLE", detail=str(exc))
    try:
        wallet = await ledger.balances(address)
        _, bookings = await ledger.transactions(address=address, reference=None, limit=1,
                                                offset=0)
    except LedgerUnavailable as exc:
        return result("LEDGER_UNAVAILABLE", detail=str(exc))
    venue_now = {b.asset: b.total for b in balances}
    ledger_flow: dict[str, Decimal] = {}
    allowed: dict[str, Decimal] = {}
    for notation, units in wallet.items():
        asset = Asset.parse(notation)
        ledger_flow[asset.code] = ledger_flow.get(asset.code, Decimal(0)) + from_minor(units,
                                                                                       asset)
        # Each booking rounds its quote and fee legs to the asset's scale, by less than one
        # minor unit each, in the dealer's favour: that much is rounding, not drift.
        unit = Decimal(1).scaleb(-asset.scale)
        allowed[asset.code] = max(tolerance, unit * 2 * bookings)
    assets = []
    for code in sorted(set(baseline) | set(venue_now) | set(ledger_flow)):
        base = baseline.get(code, Decimal(0))
        current = venue_now.get(code, Decimal(0))
        flow = ledger_flow.get(code, Decimal(0))
        change = current - base
        drift = change + flow
        limit = allowed.get(code, tolerance)
        status = "OK" if abs(drift) <= limit else ("IN_FLIGHT" if pending else "DRIFT")
        assets.append(AssetCheck(code, base, current, change, flow, drift, status))
    worst = "OK"
    for check in assets:
        if check.status == "DRIFT" or (check.status == "IN_FLIGHT" and worst == "OK"):
            worst = check.status
    return result(worst, tuple(assets))
