"""Reconciliation: what each linked LP's venue balances did since the link against what the
ledger says flowed through its `exchange:` wallet (DESIGN §7: venue change = -wallet balance)."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

import asyncpg

from dealer.uow import connection
from ledger.accounts import exchange_account
from ledger.assets import Asset, from_minor
from ledger.backend import LedgerBackend, LedgerUnavailable
from ledger.rounding import rounding_totals
from venues.base import VenueAccount, VenueError
from venues.registry import VenueRegistry

log = logging.getLogger(__name__)
DEFAULT_TOLERANCE = Decimal("0.00000001")
AssetStatus = Literal["OK", "DRIFT", "IN_FLIGHT"]
LpStatus = Literal["OK", "DRIFT", "IN_FLIGHT", "NO_BASELINE", "VENUE_UNAVAILABLE",
                   "LEDGER_UNAVAILABLE"]


@dataclass(frozen=True, slots=True)
class AssetCheck:
    asset: str
    baseline: Decimal
    venue_balance: Decimal
    venue_change: Decimal
    ledger_net_flow: Decimal
    drift: Decimal  # venue change + ledger net flow
    rounding: Decimal | None  # what the bookings since the baseline rounded off (None: unknown)
    unexplained: Decimal  # drift - rounding: zero when the books agree with the venue
    status: AssetStatus


@dataclass(frozen=True, slots=True)
class LpCheck:
    trading_account_id: uuid.UUID
    dealer_account_id: uuid.UUID
    venue: str
    address: str
    status: LpStatus
    pending_entries: int
    assets: tuple[AssetCheck, ...]
    detail: str | None = None


async def capture_baseline(pool: asyncpg.Pool, venues: VenueRegistry, ledger: LedgerBackend,
                           trading_account_id: uuid.UUID, now: dt.datetime) -> bool:
    """Record the LP's venue balances once (its first link), with its `exchange:` wallet's net
    flow at that moment; False when it cannot be taken now (venue or ledger down, or a hedge of
    the LP in flight or not yet in the ledger: the two reads would not match)."""
    async with connection(pool) as conn:
        row = await conn.fetchrow(
            """SELECT venue, external_trading_account_id, venue_ref,
                      EXISTS (SELECT 1 FROM lp_balance_baseline b
                              WHERE b.trading_account_id = t.trading_account_id) AS has
               FROM trading_account t WHERE trading_account_id = $1""", trading_account_id)
    if row is None or row["has"]:
        return row is not None
    address = exchange_account(trading_account_id)
    before = await _activity(pool, trading_account_id, address)
    if before is None:
        return False
    account = VenueAccount(trading_account_id, row["external_trading_account_id"],
                           row["venue_ref"])
    try:
        balances = await venues.execution(row["venue"]).balances(account)
        # no order and no entry yet (a new link): nothing can have flowed, the ledger need
        # not be asked (nor be up)
        wallet = await ledger.balances(address) if any(before) else {}
    except (VenueError, LedgerUnavailable) as exc:
        log.warning("no balance baseline for %s yet: %s", trading_account_id, exc)
        return False
    async with connection(pool) as conn:
        rounding = await rounding_totals(conn, address)
    if await _activity(pool, trading_account_id, address) != before:
        return False  # a hedge of the LP moved between the two reads: next time
    flow: dict[str, Decimal] = {}
    for notation, units in wallet.items():
        asset = Asset.parse(notation)
        flow[asset.code] = flow.get(asset.code, Decimal(0)) + from_minor(units, asset)
    amounts = {b.asset: b.total for b in balances}
    rows = [(trading_account_id, code, amounts.get(code, Decimal(0)),
             flow.get(code, Decimal(0)), rounding.get(code, Decimal(0)), now)
            for code in sorted(set(amounts) | set(flow) | set(rounding))]
    async with connection(pool) as conn:
        await conn.executemany(
            """INSERT INTO lp_balance_baseline (trading_account_id, asset, amount, ledger_flow,
                                                rounding, taken_at)
               VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING""",
            rows or [(trading_account_id, "-", Decimal(0), Decimal(0), Decimal(0), now)],
        )
    return True


async def _activity(pool: asyncpg.Pool, trading_account_id: uuid.UUID, address: str
                    ) -> tuple[int, int] | None:
    """The LP's hedge orders and ledger entries so far (None while one is in flight or not
    yet in the ledger): equal before and after two reads, nothing moved between them."""
    async with connection(pool) as conn:
        row = await conn.fetchrow(
            """SELECT (SELECT count(*) FROM hedge_order WHERE trading_account_id = $1) AS orders,
                      (SELECT count(*) FROM hedge_order WHERE trading_account_id = $1
                         AND status IN ('SENT', 'UNKNOWN')) AS open_orders,
                      (SELECT count(*) FROM ledger_outbox WHERE kind = 'transaction'
                         AND strpos(payload::text, $2) > 0) AS entries,
                      (SELECT count(*) FROM ledger_outbox WHERE kind = 'transaction'
                         AND sent_at IS NULL AND strpos(payload::text, $2) > 0) AS pending""",
            trading_account_id, address)
    assert row is not None  # a SELECT of scalar subqueries answers one row
    if row["open_orders"] or row["pending"]:
        return None
    return int(row["orders"]), int(row["entries"])


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


async def _open_hedge_orders(pool: asyncpg.Pool, trading_account_id: uuid.UUID) -> int:
    """The LP's hedge orders sent whose answer is not recorded yet."""
    async with connection(pool) as conn:
        count: int = await conn.fetchval(
            """SELECT count(*) FROM hedge_order WHERE trading_account_id = $1
               AND status IN ('SENT', 'UNKNOWN')""", trading_account_id)
    return count


async def _check_lp(pool: asyncpg.Pool, venues: VenueRegistry, ledger: LedgerBackend,
                    link: asyncpg.Record, now: dt.datetime, tolerance: Decimal) -> LpCheck:
    account_id: uuid.UUID = link["trading_account_id"]
    address = exchange_account(account_id)
    async with connection(pool) as conn:
        rounding_before = await rounding_totals(conn, address)
    pending = await pending_entries(pool, address)
    sending = await _open_hedge_orders(pool, account_id)

    def result(status: LpStatus, assets: tuple[AssetCheck, ...] = (), detail: str | None = None
               ) -> LpCheck:
        return LpCheck(account_id, link["dealer_account_id"], link["venue"], address, status,
                       pending, assets, detail)

    async with connection(pool) as conn:
        rows = await conn.fetch(
            """SELECT asset, amount, ledger_flow, rounding FROM lp_balance_baseline
               WHERE trading_account_id = $1""", account_id)
    if not rows:
        taken = await capture_baseline(pool, venues, ledger, account_id, now)
        return result("NO_BASELINE", detail=None if taken else
                      "not taken yet: venue or ledger unavailable, or a hedge in flight")
    baseline = {r["asset"]: r["amount"] for r in rows if r["asset"] != "-"}
    flow_then = {r["asset"]: r["ledger_flow"] for r in rows if r["asset"] != "-"}
    # A baseline taken before the totals were kept (migration 0018) cannot say what the
    # bookings before it rounded: its LP is checked within two minor units per booking.
    rounding_then = (None if any(r["rounding"] is None for r in rows)
                     else {r["asset"]: r["rounding"] for r in rows if r["asset"] != "-"})
    try:
        balances = await venues.execution(link["venue"]).balances(VenueAccount(
            account_id, link["external_trading_account_id"], link["venue_ref"]))
    except VenueError as exc:
        return result("VENUE_UNAVAILABLE", detail=str(exc))
    try:
        wallet = await ledger.balances(address)
        bookings = 0 if rounding_then is not None else (await ledger.transactions(
            address=address, reference=None, limit=1, offset=0))[1]
    except LedgerUnavailable as exc:
        return result("LEDGER_UNAVAILABLE", detail=str(exc))
    # A difference while entries or hedge orders of the LP are on their way (a fill the venue
    # made whose answer is not recorded yet) is in flight, not drift: the next run tells. The
    # orders, the entries waiting and the rounding totals are read before the reads and
    # after them (a hedge sent and answered meanwhile leaves an entry or a total behind).
    async with connection(pool) as conn:
        rounding_now = await rounding_totals(conn, address)
    in_flight = bool(pending or sending or rounding_now != rounding_before
                     or await _open_hedge_orders(pool, account_id)
                     or await pending_entries(pool, address))
    venue_now = {b.asset: b.total for b in balances}
    ledger_flow: dict[str, Decimal] = {}
    allowed: dict[str, Decimal] = {}
    for notation, units in wallet.items():
        asset = Asset.parse(notation)
        ledger_flow[asset.code] = ledger_flow.get(asset.code, Decimal(0)) + from_minor(units,
                                                                                       asset)
        # Without the rounding totals: each booking rounds its quote and fee legs to the
        # asset's scale, by less than one minor unit each.
        unit = Decimal(1).scaleb(-asset.scale)
        allowed[asset.code] = max(tolerance, unit * 2 * bookings)
    assets = []
    for code in sorted(set(baseline) | set(venue_now) | set(ledger_flow) | set(rounding_now)):
        base = baseline.get(code, Decimal(0))
        current = venue_now.get(code, Decimal(0))
        # what flowed through the wallet since the baseline's venue balances were read
        flow = ledger_flow.get(code, Decimal(0)) - flow_then.get(code, Decimal(0))
        change = current - base
        drift = change + flow
        if rounding_then is None:
            rounding = None
            unexplained = Decimal(0) if abs(drift) <= allowed.get(code, tolerance) else drift
        else:
            rounding = rounding_now.get(code, Decimal(0)) - rounding_then.get(code, Decimal(0))
            unexplained = drift - rounding
        status: AssetStatus = ("OK" if abs(unexplained) <= tolerance
                               else "IN_FLIGHT" if in_flight else "DRIFT")
        assets.append(AssetCheck(code, base, current, change, flow, drift, rounding,
                                 unexplained, status))
    worst: LpStatus = "OK"
    for check in assets:
        if check.status == "DRIFT" or (check.status == "IN_FLIGHT" and worst == "OK"):
            worst = check.status
    return result(worst, tuple(assets))
