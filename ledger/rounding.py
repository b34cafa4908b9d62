"""Running totals of the rounding the bookings on a wallet kept, per asset (migration 0018).

A hedge fill moves exact amounts on the venue and whole minor units in the ledger (see
`postings.rounding_kept`). The total is kept in the dealer's database, added to in the same
transaction that enqueues the fill's entries, so it always matches the outbox.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

import asyncpg


async def add_rounding(conn: asyncpg.Connection, address: str,
                       amounts: Mapping[str, Decimal]) -> None:
    """Add `amounts` (by asset code) to the wallet's totals, inside the caller's transaction.
    Rows are taken in asset order, so two transactions on one wallet cannot deadlock."""
    rows = [(address, code, amounts[code]) for code in sorted(amounts) if amounts[code] != 0]
    if rows:
        await conn.executemany(
            """INSERT INTO ledger_rounding (address, asset, amount) VALUES ($1, $2, $3)
               ON CONFLICT (address, asset)
               DO UPDATE SET amount = ledger_rounding.amount + EXCLUDED.amount""", rows)


async def rounding_totals(conn: asyncpg.Connection, address: str) -> dict[str, Decimal]:
    """The wallet's totals by asset code (none: nothing rounded yet)."""
    rows = await conn.fetch(
        "SELECT asset, amount FROM ledger_rounding WHERE address = $1", address)
    return {row["asset"]: row["amount"] for row in rows}
