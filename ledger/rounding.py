"""Running totals of the rounding the bookings on a wallet kept, per asset (migration 0018).

A hedge fill moves exact amounts on the venue and whole minor units in the ledger (see
`postings.rounding_kept`). The totals are kept in the dealer's database, added to in the same
transaction that enqueues the fills' entries, so they always match the outbox.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

import asyncpg


class PendingRounding:
    """What one transaction's bookings rounded off, by wallet and asset, written once at its end
    (`write`): every transaction then takes the total rows in the same order, after all its
    other locks, so two that book on the same wallets cannot deadlock on them."""

    def __init__(self) -> None:
        self._amounts: dict[tuple[str, str], Decimal] = {}

    def add(self, address: str, amounts: Mapping[str, Decimal]) -> None:
        """Add `amounts` (by asset code) kept on the wallet at `address`."""
        for code, amount in amounts.items():
            key = (address, code)
            self._amounts[key] = self._amounts.get(key, Decimal(0)) + amount

    async def write(self, conn: asyncpg.Connection) -> None:
        """Add everything to the totals, inside the caller's transaction, as its last
        statement: rows in (address, asset) order."""
        rows = [(address, code, amount)
                for (address, code), amount in sorted(self._amounts.items()) if amount != 0]
        self._amounts.clear()
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
