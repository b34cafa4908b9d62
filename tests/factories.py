"""Rows written straight into the database, for tests that need an account to exist."""

from __future__ import annotations

import datetime as dt
import uuid

import asyncpg


async def insert_exchange_account(
    conn: asyncpg.Connection,
    venue: str = "BINANCE",
    status: str = "ACTIVE",
    external_id: str = "spot",
) -> uuid.UUID:
    """An exchange trading account as `tradingAccount/connect` would leave it (no credential)."""
    account_id = uuid.uuid4()
    now = dt.datetime.now(dt.UTC)
    await conn.execute(
        """INSERT INTO trading_account (trading_account_id, venue, kind,
               external_trading_account_id, account_type, external_account_type, nickname,
               status, created_at, updated_at)
           VALUES ($1, $2, 'EXCHANGE', $3, 'SPOT', 'SPOT', $4, $5, $6, $6)""",
        account_id, venue, external_id, f"{venue.lower()} {external_id}", status, now,
    )
    return account_id
