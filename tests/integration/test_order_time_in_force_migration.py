"""Migration 0021: orders made before a QUOTED order kept its timeInForce read back as FOK (what
they were answered), and the column holds only what a QUOTED order takes."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import asyncpg
import pytest

from dealer.api.rfq import order_out
from dealer.services import rfq
from tests.helpers import apply_all, insert_trading_account, migrated_before

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


async def _client_order(conn: asyncpg.Connection, client: uuid.UUID) -> uuid.UUID:
    """A REJECTED QUOTED order of `client` written without a time in force, as before 0021."""
    order_id = uuid.uuid4()
    await conn.execute(
        """INSERT INTO trade_order (trade_order_id, trading_account_id, instrument_id,
               order_side, order_type, status, reject_reason, quantity, price, created_at,
               updated_at)
           VALUES ($1, $2, 'FERMATA:BTC/USDT', 'BUY', 'QUOTED', 'REJECTED', 'last look', 0.1,
                   65000, $3, $3)""", order_id, client, NOW)
    return order_id


async def test_orders_made_before_migration_0021_read_back_as_fok(pg_server: Any) -> None:
    async with migrated_before(pg_server, 21) as conn:
        client = await insert_trading_account(conn, "FERMATA", "CLIENT", "client", NOW)
        old = [await _client_order(conn, client) for _ in range(2)]
        await apply_all(conn)
        orders, total = await rfq.list_orders(
            conn, trade_order_id=None, status=None, trading_account_id=client,
            instrument_id=None, start=None, end=None, only=None, ascending=True, limit=10,
            offset=0)
        assert total == 2
        assert {o.trade_order_id for o in orders} == set(old)
        assert [o.time_in_force for o in orders] == ["FOK", "FOK"]
        assert [order_out(o).time_in_force for o in orders] == ["FOK", "FOK"]
        # A QUOTED order is FOK or IOC; anything else is not stored.
        for refused in ("GTC", ""):
            with pytest.raises(asyncpg.CheckViolationError):
                await conn.execute("UPDATE trade_order SET time_in_force = $1 "
                                   "WHERE trade_order_id = $2", refused, old[0])
        await conn.execute("UPDATE trade_order SET time_in_force = 'IOC' "
                           "WHERE trade_order_id = $1", old[0])
