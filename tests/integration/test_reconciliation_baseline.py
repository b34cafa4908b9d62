"""A balance baseline taken after the LP traded (its venue was down when it was linked) counts
only what flowed through the LP's wallet since: no false drift."""

from __future__ import annotations

import asyncpg

from dealer.app import create_app
from dealer.settings import DaemonSecrets, Settings
from tests.conftest import VIEWER, assert_ok
from tests.desk import AppClient, check_books, fill_all, hedge_worker, hedges_final, make_desk
from tests.helpers import get, outbox_drained


async def test_a_baseline_taken_after_hedges_reconciles_without_drift(
    settings: Settings, secrets: DaemonSecrets, aiohttp_client: AppClient,
    conn: asyncpg.Connection,
) -> None:
    app = create_app(settings, secrets)
    client = await aiohttp_client(app)
    desk = await make_desk(client)
    await fill_all(client, desk, (("BUY", "0.3"), ("SELL", "0.1"), ("BUY", "0.2")))
    worker = hedge_worker(app)
    worker.start()
    try:
        await hedges_final(conn, 3)
    finally:
        await worker.stop()
    await outbox_drained(conn, within_s=10.0)
    assert await conn.fetchval(  # the hedges traded on the LPs
        "SELECT count(DISTINCT trading_account_id) FROM hedge_order WHERE filled_quantity > 0")
    # as if every venue had been down when its LP was linked: no baseline yet
    await conn.execute("DELETE FROM lp_balance_baseline")
    _, body = await get(client, "/api/v3/ledger/reconciliation",
                        {"dealerAccountId": desk.dealer}, VIEWER)
    assert {lp["status"] for lp in assert_ok(body)["lps"]} == {"NO_BASELINE"}
    # taken now, with each wallet's flow so far: every LP reconciles
    await check_books(client, conn, desk)
    flows = await conn.fetch("SELECT asset, ledger_flow FROM lp_balance_baseline "
                             "WHERE ledger_flow <> 0")
    assert flows  # the baseline kept what had flowed before it
