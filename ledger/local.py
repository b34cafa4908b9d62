"""The `local` backend: the journal's accounts live in the daemon's own PostgreSQL."""

from __future__ import annotations

import datetime as dt
from typing import Any

import asyncpg

from ledger.accounts import validate_address


class LocalLedger:
    """Ledger accounts as rows of `ledger_account`, written in the caller's transaction."""

    name = "local"

    async def open_account(
        self,
        conn: asyncpg.Connection,
        address: str,
        metadata: dict[str, str],
        now: dt.datetime,
    ) -> None:
        """Create the account, or merge `metadata` into an existing one (idempotent)."""
        validate_address(address)
        await conn.execute(
            """INSERT INTO ledger_account (address, metadata, created_at, updated_at)
               VALUES ($1, $2, $3, $3)
               ON CONFLICT (address) DO UPDATE
               SET metadata = ledger_account.metadata || EXCLUDED.metadata,
                   updated_at = EXCLUDED.updated_at""",
            address, metadata, now,
        )

    async def account(self, conn: asyncpg.Connection, address: str) -> dict[str, Any] | None:
        row = await conn.fetchrow(
            "SELECT address, metadata, created_at FROM ledger_account WHERE address = $1",
            validate_address(address),
        )
        return None if row is None else dict(row)

    async def check(self, pool: asyncpg.Pool) -> None:
        """Raise if the journal cannot be read."""
        async with pool.acquire() as conn:
            await conn.fetchval("SELECT count(*) FROM ledger_account")
