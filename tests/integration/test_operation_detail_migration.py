"""Migration 0022: UPDATE operations written before the taker fee's detail was named as the API
names it read `takerFee` too; nothing else of the history changes."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from dealer import db
from tests.helpers import empty_database

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

_OPERATION = """INSERT INTO trading_account_operation (operation_id, trading_account_id,
                    operation_type, status, detail, created_at)
                VALUES ($1, $2, $3, 'SUCCESS', $4, $5)"""


async def test_update_details_written_before_0022_name_the_taker_fee_takerfee(
    pg_server: Any,
) -> None:
    dsn = await empty_database(pg_server)
    migrations = db.bundled_migrations()
    conn = await db.connect(dsn)
    try:
        await db.apply_migrations(conn, [m for m in migrations if m.version < 22])
        account = uuid.uuid4()
        await conn.execute(
            """INSERT INTO trading_account (trading_account_id, venue, kind,
                   external_trading_account_id, account_type, external_account_type, status,
                   created_at, updated_at)
               VALUES ($1, 'BINANCE', 'EXCHANGE', 'spot', 'SPOT', 'spot', 'ACTIVE', $2, $2)""",
            account, NOW)
        written = {
            "fee and nickname": ("UPDATE", {"taker_fee": "0.0004", "nickname": "lp"}),
            "fee back to the default": ("UPDATE", {"taker_fee": None}),
            "nickname alone": ("UPDATE", {"nickname": "desk"}),
            "another operation": ("LINK", {"dealerAccountId": str(uuid.uuid4()),
                                           "taker_fee": "kept"}),
        }
        ids = {}
        for minute, (name, (kind, detail)) in enumerate(written.items()):
            ids[name] = uuid.uuid4()
            await conn.execute(_OPERATION, ids[name], account, kind, detail,
                               NOW + dt.timedelta(minutes=minute))
        before = await conn.fetch("SELECT operation_id, operation_type, status, created_at "
                                  "FROM trading_account_operation ORDER BY created_at")

        await db.apply_migrations(conn, migrations)

        details = {name: await conn.fetchval(
            "SELECT detail FROM trading_account_operation WHERE operation_id = $1", ids[name])
            for name in written}
        assert details == {
            "fee and nickname": {"takerFee": "0.0004", "nickname": "lp"},
            "fee back to the default": {"takerFee": None},
            "nickname alone": {"nickname": "desk"},
            "another operation": written["another operation"][1],
        }
        assert await conn.fetch("SELECT operation_id, operation_type, status, created_at "
                                "FROM trading_account_operation ORDER BY created_at") == before
    finally:
        await conn.close()
