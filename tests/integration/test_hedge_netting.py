"""NETTED hedging: a window's fills offset each other and only the net goes to the LPs; the
window closes early at the threshold; a net below every LP's minimum is carried, visible as
exposure, into the next window."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import asyncpg
from aiohttp import web

from dealer.app import create_app
from dealer.services.rfq import exposure_of
from dealer.settings import DaemonSecrets, Settings
from tests.desk import (
    AppClient,
    Desk,
    check_books,
    fill_all,
    hedges_final,
    make_desk,
    venue_submits,
)
from tests.helpers import Client, eventually


async def _netted_desk(settings: Settings, secrets: DaemonSecrets, aiohttp_client: AppClient,
                       **config: Any) -> tuple[web.Application, Client, Desk]:
    app = create_app(settings.model_copy(update={
        "hedge_enabled": True, "hedge_poll_ms": 20, "paper_journal": True}), secrets)
    client = await aiohttp_client(app)
    return app, client, await make_desk(client, hedgeMode="NETTED", **config)


async def test_a_window_hedges_only_the_net_of_its_fills(
    settings: Settings, secrets: DaemonSecrets, aiohttp_client: AppClient,
    conn: asyncpg.Connection,
) -> None:
    _, client, desk = await _netted_desk(settings, secrets, aiohttp_client,
                                         hedgeNettingWindowMs=1500)
    fills = (("BUY", "0.4"), ("SELL", "0.3"), ("BUY", "0.2"), ("SELL", "0.1"))
    await fill_all(client, desk, fills, concurrency=1)
    jobs = await hedges_final(conn, len(fills), within_s=10.0)
    assert {j["status"] for j in jobs} == {"HEDGED"}
    assert all(j["hedged_quantity"] == j["quantity"] for j in jobs)
    orders = await conn.fetch("SELECT * FROM hedge_order")
    # one group: the dealer is short 0.2 net, bought once (grossed up for the BUY fees)
    assert {o["side"] for o in orders} == {"BUY"}
    assert {o["attempt"] for o in orders} == {1}
    assert len({o["job_id"] for o in orders}) == 1
    bought = sum(o["filled_quantity"] for o in orders)
    assert Decimal("0.2") <= bought <= Decimal("0.2") / Decimal("0.999") + Decimal("0.00003")
    oldest = min(j["created_at"] for j in jobs)
    # the window was kept
    assert min(o["created_at"] for o in orders) - oldest >= dt.timedelta(milliseconds=1400)
    assert all(count == 1 for count in venue_submits(settings.data_dir).values())
    await check_books(client, conn, desk)


async def test_the_threshold_closes_a_window_early(
    settings: Settings, secrets: DaemonSecrets, aiohttp_client: AppClient,
    conn: asyncpg.Connection,
) -> None:
    _, client, desk = await _netted_desk(settings, secrets, aiohttp_client,
                                         hedgeNettingWindowMs=60000,
                                         maxUnhedgedNotional="40000")
    await fill_all(client, desk, (("SELL", "0.1"),))
    # 0.1 BTC is about 6 500 USDT: below half the 40 000 limit, the window stays open
    [job] = await conn.fetch("SELECT * FROM hedge_job")
    assert job["status"] == "PENDING"
    await fill_all(client, desk, (("SELL", "0.3"),))  # 0.4 net: over 20 000, it closes
    jobs = await hedges_final(conn, 2, within_s=5.0)
    assert {j["status"] for j in jobs} == {"HEDGED"}
    assert len(await conn.fetch("SELECT DISTINCT job_id FROM hedge_order")) == 1
    await check_books(client, conn, desk)


async def test_a_net_below_every_minimum_is_carried_into_the_next_window(
    settings: Settings, secrets: DaemonSecrets, aiohttp_client: AppClient,
    conn: asyncpg.Connection,
) -> None:
    _, client, desk = await _netted_desk(settings, secrets, aiohttp_client,
                                         hedgeNettingWindowMs=300)
    await fill_all(client, desk, (("SELL", "0.3"), ("BUY", "0.29996")), concurrency=1)

    async def carried() -> list[asyncpg.Record] | None:
        rows = await conn.fetch("SELECT * FROM hedge_job ORDER BY created_at")
        return rows if {r["status"] for r in rows} == {"HEDGED", "PENDING"} else None

    first, second = await eventually(carried, within_s=5.0)
    # the 0.00004 BTC net (about 2.6 USDT) is below every LP's minimum: nothing was sent
    assert await conn.fetchval("SELECT count(*) FROM hedge_order") == 0
    assert (first["status"], first["residual"]) == ("PENDING", True)
    assert first["quantity"] - first["hedged_quantity"] == Decimal("0.00004")
    assert "residual below every LP venue's minimum order" in first["last_error"]
    assert second["status"] == "HEDGED"
    dealer = first["dealer_account_id"]
    assert await exposure_of(conn, dealer, "BTC") == Decimal("0.00004")  # long, visible

    await fill_all(client, desk, (("SELL", "0.1"),))  # the next window takes it
    jobs = await hedges_final(conn, 3, within_s=5.0)
    assert {j["status"] for j in jobs} == {"HEDGED"}
    assert await exposure_of(conn, dealer, "BTC") == 0
    sold = sum(o["filled_quantity"] for o in await conn.fetch("SELECT * FROM hedge_order"))
    assert sold == Decimal("0.10004")
    await check_books(client, conn, desk)
