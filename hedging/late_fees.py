"""Hedge fees booked late.

A venue may charge a hedge order's fee in an asset the ledger has no scale for (a fee token the
desk never configured). The worker then books the fill without that fee, counts it
(`dealer_hedge_fees_unbooked_total`) and records it in `hedge_fee_pending` (migration 0019),
in the transaction that records the fill. Once a daemon has a scale for the asset
(`DEALER_ASSET_SCALES`), `book_late_fees` books each such fee as the entry the fill would have
had for it (`postings.other_fee`: `dealer:<d> → exchange:<lp>`, rounded in the dealer's favour,
the fill's metadata), adds what that rounded off to the LP wallet's rounding totals, and marks
the fee booked, all in one transaction: each fee is booked once, whichever replica gets to it.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

import asyncpg

from ledger.accounts import exchange_account
from ledger.assets import InvalidAmount, ScaleTable
from ledger.outbox import enqueue_transaction
from ledger.postings import InvalidFill, other_fee, rounding_kept
from ledger.rounding import PendingRounding

log = logging.getLogger(__name__)


async def record_left_out(conn: asyncpg.Connection, client_order_id: str,
                          fees: Sequence[tuple[str, Decimal]], metadata: Mapping[str, str],
                          now: dt.datetime) -> None:
    """Record the fees (asset code, amount) of a hedge order's fill that were not booked, in
    the caller's transaction (the one that records the fill), on a connection of the daemon's
    pool (its codec writes jsonb)."""
    await conn.executemany(
        """INSERT INTO hedge_fee_pending (client_order_id, asset, amount, metadata, recorded_at)
           VALUES ($1, $2, $3, $4, $5) ON CONFLICT (client_order_id, asset) DO NOTHING""",
        [(client_order_id, code, amount, dict(metadata), now)
         for code, amount in fees if amount != 0])


@dataclass(frozen=True, slots=True)
class LateFees:
    """What a run of `book_late_fees` did."""

    booked: int  # fees booked by this run (an entry each, or none under one minor unit)
    refused: int  # fees this run could not book (the reason is kept in last_error and logged)
    waiting: int  # fees not booked after the run: no scale here yet, refused, or held


_WAITING = """
SELECT p.client_order_id, p.asset, p.amount, p.metadata, p.last_error, o.trading_account_id,
       j.dealer_account_id
FROM hedge_fee_pending p
JOIN hedge_order o ON o.client_order_id = p.client_order_id
JOIN hedge_job j ON j.job_id = o.job_id
WHERE p.booked_at IS NULL AND p.held IS NULL AND p.asset = ANY($1::text[])
ORDER BY p.last_error IS NOT NULL, p.recorded_at, p.client_order_id, p.asset
LIMIT $2
FOR UPDATE OF p SKIP LOCKED"""


async def book_late_fees(conn: asyncpg.Connection, scales: ScaleTable, now: dt.datetime, *,
                         batch: int = 200,
                         counted: Callable[[int], None] | None = None) -> LateFees:
    """Book the waiting fees whose asset `scales` has (oldest first, those refused before
    last; none that is `held` for a person), `batch` a transaction, on `conn` (a connection
    of the daemon's pool); fees another replica is booking are left to it. `counted` hears
    each committed transaction's count (a later one may fail)."""
    booked = refused = 0
    while True:
        batch_booked, batch_refused, selected = await _book_batch(conn, scales, now, batch)
        if counted is not None and batch_booked:
            counted(batch_booked)
        booked, refused = booked + batch_booked, refused + batch_refused
        if selected < batch or not batch_booked:
            break
    waiting: int = await conn.fetchval(
        "SELECT count(*) FROM hedge_fee_pending WHERE booked_at IS NULL")
    return LateFees(booked, refused, waiting)


async def _book_batch(conn: asyncpg.Connection, scales: ScaleTable, now: dt.datetime,
                      batch: int) -> tuple[int, int, int]:
    """One transaction: (fees booked, fees refused, fees selected)."""
    booked = refused = 0
    async with conn.transaction():
        rows = await conn.fetch(_WAITING, sorted(scales.scales), batch)
        rounding = PendingRounding()
        for row in rows:
            error = await _book(conn, row, scales, rounding, now)
            if error is None:
                booked += 1
                continue
            refused += 1
            if error != row["last_error"]:  # logged once, not at every run
                log.error("hedge order %s: fee of %s %s cannot be booked: %s",
                          row["client_order_id"], row["amount"], row["asset"], error)
                await conn.execute(
                    """UPDATE hedge_fee_pending SET last_error = $3
                       WHERE client_order_id = $1 AND asset = $2""",
                    row["client_order_id"], row["asset"], error)
        await rounding.write(conn)  # last: the rounding rows after every other lock
    return booked, refused, len(rows)


async def _book(conn: asyncpg.Connection, row: asyncpg.Record, scales: ScaleTable,
                rounding: PendingRounding, now: dt.datetime) -> str | None:
    """One waiting fee booked (None), or why it cannot be (nothing of it written)."""
    lp: uuid.UUID = row["trading_account_id"]
    code: str = row["asset"]
    amount: Decimal = row["amount"]
    metadata: dict[str, str] = dict(row["metadata"])  # the pool's codec decodes jsonb
    try:
        tx = other_fee(lp, row["dealer_account_id"], (scales.asset(code), amount),
                       fill_reference=f"hedge-{row['client_order_id']}", metadata=metadata,
                       timestamp=now)
    except (InvalidFill, InvalidAmount) as exc:  # e.g. a rebate: no fee entry books one
        return str(exc)
    try:
        async with conn.transaction():  # a savepoint: a refusal undoes this fee only
            outbox_id = None if tx is None else await enqueue_transaction(conn, tx, now)
            await conn.execute(
                """UPDATE hedge_fee_pending SET booked_at = $3, outbox_id = $4,
                       last_error = NULL
                   WHERE client_order_id = $1 AND asset = $2""",
                row["client_order_id"], code, now, outbox_id)
    except ValueError as exc:  # the outbox's refusal: the asset is pinned at another scale
        return str(exc)
    # The venue took the exact amount; the entry booked it in whole minor units (or none).
    rounding.add(exchange_account(lp),
                 rounding_kept([] if tx is None else [tx], lp, {code: -amount}))
    return None
