"""Migration 0022: UPDATE operations written before the taker fee's detail was named as the API
names it read `takerFee` too; nothing else of the history changes."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from tests.helpers import apply_all, insert_trading_account, migrated_before

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

_OPERATION = """INSERT INTO trading_account_operation (operation_id, trading_account_id,
                    operation_type, status, detail, created_at)
                VALUES ($1, $2, $3, 'SUCCESS', $4, $5)"""


async def test_update_details_written_before_0022_name_the_taker_fee_takerfee(
    pg_server: Any,
) -> None:
    async with migrated_before(pg_server, 22) as conn:
        account = await insert_trading_account(conn, "BINANCE", "EXCHANGE", "spot", NOW)
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

        await apply_all(conn)

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
