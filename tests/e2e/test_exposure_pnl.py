"""A dealer's exposure and PnL over HTTP on a desk of three paper LPs. The PnL's realised figure
is rebuilt from the fills, hedge orders and fees, and must equal the dealer's balance in the
ledger once the outbox is drained: after hedges on both sides (the paper venue charges a BUY's
fee in base and a SELL's in quote), and before any hedge."""

from __future__ import annotations

import asyncio
import uuid
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import asyncpg
import pytest
from aiohttp import web

from dealer.app import create_app, utc_now
from dealer.appkeys import ASSET_SCALES, POOL
from dealer.services import pnl as pnl_service
from dealer.settings import DaemonSecrets, Settings
from tests.conftest import ADMIN, TRADER, VIEWER, assert_error, assert_ok
from tests.desk import AppClient, Desk, accept, make_desk, request_quote
from tests.helpers import Client, assert_invalid, eventually, get, outbox_drained, post

EXPOSURE = "/api/v3/fermata/dealer/exposure"
PNL = "/api/v3/fermata/dealer/pnl"
HEDGES = "/api/v3/fermata/hedge/list"
FILLS = (("BUY", "0.5"), ("SELL", "0.3"), ("BUY", "0.2"), ("SELL", "0.25"))
MICRO = Decimal("0.000001")


async def _fill(client: Client, desk: Desk, fills: tuple[tuple[str, str], ...]
                ) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    done = []
    for side, quantity in fills:
        quote = await request_quote(client, desk, orderSide=side, quantity=quantity)
        done.append((quote, await accept(client, quote)))
    return done


async def _exposure(client: Client, desk: Desk) -> dict[str, Any]:
    status, body = await get(client, EXPOSURE, {"dealerAccountId": desk.dealer}, VIEWER)
    assert status == 200, body
    data: dict[str, Any] = assert_ok(body)
    return data


async def _pnl(client: Client, desk: Desk) -> dict[str, Any]:
    status, body = await get(client, PNL, {"dealerAccountId": desk.dealer}, VIEWER)
    assert status == 200, body
    data: dict[str, Any] = assert_ok(body)
    return data


async def _ledger_balances(client: Client, desk: Desk) -> dict[str, Decimal]:
    status, body = await get(client, "/api/v3/ledger/account",
                             {"address": f"dealer:{desk.dealer}"}, VIEWER)
    assert status == 200, body
    return {b["asset"]: Decimal(b["amount"]) for b in assert_ok(body)["balances"]}


def _at_scale(value: Decimal) -> Decimal:
    return value.quantize(MICRO, rounding=ROUND_HALF_EVEN)


async def _hedging_desk(settings: Settings, secrets: DaemonSecrets, aiohttp_client: AppClient
                        ) -> tuple[web.Application, Client, Desk]:
    """A desk quoting 10 bps over its plan, on a daemon that hedges."""
    app = create_app(settings.model_copy(update={"hedge_enabled": True, "hedge_poll_ms": 20}),
                     secrets)
    client = await aiohttp_client(app)
    return app, client, await make_desk(client, spreadBps="10")


async def _all_hedged(conn: asyncpg.Connection, count: int) -> None:
    """Wait until `count` jobs are HEDGED (none FAILED) and their entries are in the ledger."""

    async def hedged() -> bool:
        statuses = [r["status"] for r in await conn.fetch("SELECT status FROM hedge_job")]
        assert "FAILED" not in statuses
        return statuses == ["HEDGED"] * count

    await eventually(hedged, within_s=20.0, every_s=0.05)
    await outbox_drained(conn, within_s=5.0)


# ---------------------------------------------------------------- exposure


async def test_exposure_per_asset_with_its_notional_limits_and_kill_switch(
    client: Client, conn: asyncpg.Connection,
) -> None:
    desk = await make_desk(client, maxUnhedgedExposure={"BTC": "5"})
    fills = await _fill(client, desk, (("BUY", "0.5"), ("SELL", "0.2")))
    data = await _exposure(client, desk)
    assert set(data) == {"dealerAccountId", "status", "notionalAsset", "unhedgedNotional",
                         "notionalComplete", "maxUnhedgedNotional", "killSwitch", "assets",
                         "checkedAt", "checkedAtDateTime"}
    assert (data["dealerAccountId"], data["status"]) == (desk.dealer, "ACTIVE")
    assert (data["notionalAsset"], data["maxUnhedgedNotional"]) == ("USDT", "250000")
    assert data["killSwitch"] == {
        "engaged": False, "reason": None, "pauseReason": None,
        "hedgeFailures": {"finished": 0, "failed": 0, "rate": None, "threshold": "0.5",
                          "window": 20, "minJobs": 5}}
    [btc] = data["assets"]
    # The client BUY left the dealer short 0.5, the SELL long 0.2.
    assert (btc["asset"], btc["unhedgedQuantity"], btc["maxUnhedgedExposure"]) == (
        "BTC", "-0.3", "5")
    assert (btc["openJobs"], btc["failedJobs"], btc["priceFresh"]) == (2, 0, True)
    mid = Decimal(btc["mid"])
    price = Decimal(fills[0][0]["price"])
    assert abs(mid - price) / price < Decimal("0.005")
    assert Decimal(btc["notional"]) == Decimal("-0.3") * mid
    assert Decimal(data["unhedgedNotional"]) == abs(Decimal(btc["notional"]))
    assert data["notionalComplete"] is True

    # A FAILED job still counts, as a failed job.
    await conn.execute("UPDATE hedge_job SET status = 'FAILED' WHERE side = 'SELL'")
    [btc] = (await _exposure(client, desk))["assets"]
    assert (btc["unhedgedQuantity"], btc["openJobs"], btc["failedJobs"]) == ("-0.3", 1, 1)

    status, body = await post(client, "/api/v3/fermata/dealer/pause",
                              {"dealerAccountId": desk.dealer, "reason": "lunch"})
    assert assert_ok(body)["pausedBy"] == "manual"
    kill_switch = (await _exposure(client, desk))["killSwitch"]
    assert (kill_switch["engaged"], kill_switch["reason"], kill_switch["pauseReason"]) == (
        True, "manual", "lunch")

    # Without a fresh LP book the position has no price: null, flagged, left out of the sum.
    for lp in desk.lps:
        status, body = await post(client, "/api/v3/fermata/dealer/unlink",
                                  {"dealerAccountId": desk.dealer, "tradingAccountId": lp})
        assert status == 200, body
    data = await _exposure(client, desk)
    [btc] = data["assets"]
    assert (btc["mid"], btc["notional"], btc["priceFresh"]) == (None, None, False)
    assert (data["unhedgedNotional"], data["notionalComplete"]) == ("0", False)


async def test_exposure_refusals(client: Client) -> None:
    status, body = await get(client, EXPOSURE, {"dealerAccountId": str(uuid.uuid4())})
    assert status == 404
    assert_error(body, -130001)
    for params in ({}, {"dealerAccountId": "desk"}, {"dealerAccountId": str(uuid.uuid4()),
                                                     "asset": "BTC"}):
        for path in (EXPOSURE, PNL):
            status, body = await get(client, path, params)
            assert_invalid(status, body)
    for path in (EXPOSURE, PNL):
        status, body = await get(client, path, {"dealerAccountId": str(uuid.uuid4())}, TRADER)
        assert status == 403
        assert_error(body, -101004)
    status, body = await get(client, PNL, {"dealerAccountId": str(uuid.uuid4())}, ADMIN)
    assert status == 404
    assert_error(body, -130001)


# ---------------------------------------------------------------- PnL


async def test_realised_pnl_equals_the_ledger_balance_after_hedging(
    settings: Settings, secrets: DaemonSecrets, aiohttp_client: AppClient,
    conn: asyncpg.Connection,
) -> None:
    _, client, desk = await _hedging_desk(settings, secrets, aiohttp_client)
    fills = await _fill(client, desk, FILLS)
    await _all_hedged(conn, len(FILLS))
    pnl = await _pnl(client, desk)
    ledger = await _ledger_balances(client, desk)
    assert (pnl["pendingEntries"], pnl["unbookedFills"]) == (0, 0)
    [usdt] = pnl["quoteAssets"]
    assert usdt["asset"] == "USDT"
    assert Decimal(usdt["realised"]) == ledger["USDT/6"]
    [btc] = pnl["inventory"]
    assert (btc["asset"], Decimal(btc["quantity"])) == ("BTC", ledger.get("BTC/8", Decimal(0)))
    assert abs(Decimal(btc["quantity"])) <= Decimal("0.00001")  # hedged to within a lot

    _, body = await get(client, HEDGES, {"dealerAccountId": desk.dealer}, VIEWER)
    jobs = assert_ok(body)
    executed = [o for j in jobs for o in j["orders"] if Decimal(o["filledQuantity"]) > 0]
    assert usdt["clientFills"] == len(FILLS)
    assert usdt["hedgeOrders"] == len(executed)
    # Fees as the venues charged them (BUYs in BTC, SELLs in USDT), and as the ledger took them.
    charged: dict[str, Decimal] = {}
    for order in executed:
        charged[order["feeAsset"]] = charged.get(order["feeAsset"], Decimal(0)) \
            + Decimal(order["fee"])
    fees = {f["asset"]: f for f in pnl["fees"]}
    assert set(fees) == {"BTC", "USDT"} == set(charged)
    for asset, fee in fees.items():
        assert Decimal(fee["amount"]) == charged[asset]
        assert 0 < Decimal(fee["booked"]) <= Decimal(fee["amount"])

    # Spread against each quote's plan VWAP; slippage of each execution against its plan price.
    plan_vwap = {j["tradeOrderId"]: Decimal(j["planVwap"]) for j in jobs}
    spread = Decimal(0)
    notional = Decimal(0)
    for quote, order in fills:
        edge = Decimal(quote["price"]) - plan_vwap[order["tradeOrderId"]]
        spread += (edge if order["orderSide"] == "BUY" else -edge) * Decimal(quote["quantity"])
        notional += Decimal(quote["quoteQuantity"])
    assert Decimal(usdt["spreadCaptured"]) == _at_scale(spread)
    # The quotes were priced 10 bps off their plan VWAP, rounded to the tick for the dealer.
    assert spread >= notional * Decimal("0.0009")
    slippage = Decimal(0)
    for order in executed:
        worse = Decimal(order["avgPrice"]) - Decimal(order["planPrice"])
        slippage += (worse if order["orderSide"] == "BUY" else -worse) \
            * Decimal(order["filledQuantity"])
    assert Decimal(usdt["hedgeSlippage"]) == _at_scale(slippage)
    assert usdt["hedgeSlippageBps"] is not None
    assert usdt["total"] is not None
    assert Decimal(usdt["total"]) == _at_scale(
        Decimal(usdt["realised"]) + Decimal(usdt["unrealised"]))
    assert Decimal(btc["unrealised"]) == _at_scale(Decimal(btc["quantity"]) * Decimal(btc["mid"]))


async def test_realised_pnl_equals_the_ledger_balance_before_hedging(
    client: Client, conn: asyncpg.Connection,
) -> None:
    desk = await make_desk(client)
    empty = await _pnl(client, desk)
    assert (empty["quoteAssets"], empty["inventory"], empty["fees"]) == ([], [], [])
    await _fill(client, desk, (("BUY", "0.5"), ("SELL", "0.2"), ("BUY", "0.00123")))
    await outbox_drained(conn)
    pnl = await _pnl(client, desk)
    ledger = await _ledger_balances(client, desk)
    [usdt] = pnl["quoteAssets"]
    [btc] = pnl["inventory"]
    assert Decimal(usdt["realised"]) == ledger["USDT/6"]
    assert Decimal(btc["quantity"]) == ledger["BTC/8"] == Decimal("-0.30123")
    assert (usdt["hedgeOrders"], usdt["hedgeSlippage"], usdt["hedgeSlippageBps"]) == (
        0, "0", None)
    assert pnl["fees"] == []
    assert btc["priceAsset"] == "USDT"
    unrealised = Decimal(btc["quantity"]) * Decimal(btc["mid"])
    assert Decimal(btc["unrealised"]) == _at_scale(unrealised)
    assert Decimal(usdt["unrealised"]) == _at_scale(unrealised)
    # Short BTC bought back at mid: what the spread earned, give or take the market's move.
    assert Decimal(usdt["total"]) == _at_scale(Decimal(usdt["realised"]) + unrealised)
    assert Decimal(usdt["spreadCaptured"]) > 0


# ---------------------------------------------------------------- folded PnL totals


def _without_mid(pnl: dict[str, Any]) -> dict[str, Any]:
    """The PnL's figures that do not move with the market (the mid values the inventory)."""
    moving = {"unrealised", "total", "mid", "computedAt", "computedAtDateTime"}
    return {key: ([{k: v for k, v in item.items() if k not in moving} for item in value]
                  if isinstance(value, list) else value)
            for key, value in pnl.items() if key not in moving}


async def test_folding_the_history_leaves_every_pnl_figure_as_it_was(
    settings: Settings, secrets: DaemonSecrets, aiohttp_client: AppClient,
    conn: asyncpg.Connection,
) -> None:
    app, client, desk = await _hedging_desk(settings, secrets, aiohttp_client)
    pool, scales = app[POOL], app[ASSET_SCALES]
    await _fill(client, desk, FILLS)
    await _all_hedged(conn, len(FILLS))
    rebuilt = await _pnl(client, desk)
    # Two replicas folding at once: each fact is folded by one of them, once.
    async with pool.acquire() as first, pool.acquire() as second:
        done = await asyncio.gather(pnl_service.fold_pending(first, scales, utc_now()),
                                    pnl_service.fold_pending(second, scales, utc_now()))
    orders = await conn.fetchval("SELECT count(*) FROM hedge_order")
    assert sum(d.client_fills for d in done) == len(FILLS)
    assert sum(d.hedge_orders for d in done) == orders
    checkpoint = await conn.fetchrow("SELECT client_fills, hedge_orders FROM pnl_checkpoint")
    assert tuple(checkpoint) == (len(FILLS), orders)
    assert await conn.fetchval("SELECT count(*) FROM trade_order WHERE NOT pnl_folded") == 0
    assert await conn.fetchval("SELECT count(*) FROM hedge_order WHERE NOT pnl_folded") == 0
    folded = await _pnl(client, desk)
    assert _without_mid(folded) == _without_mid(rebuilt)
    async with pool.acquire() as again:  # nothing left to fold
        assert await pnl_service.fold_pending(again, scales, utc_now()) == pnl_service.Folded(0, 0)

    # Folded totals and facts after them: the realised figure is still the ledger's balance.
    more = (("SELL", "0.4"), ("BUY", "0.05"))
    await _fill(client, desk, more)
    await _all_hedged(conn, len(FILLS) + len(more))
    after = await _pnl(client, desk)
    ledger = await _ledger_balances(client, desk)
    [usdt] = after["quoteAssets"]
    assert Decimal(usdt["realised"]) == ledger["USDT/6"]
    assert usdt["clientFills"] == len(FILLS) + len(more)
    [btc] = after["inventory"]
    assert Decimal(btc["quantity"]) == ledger.get("BTC/8", Decimal(0))
    async with pool.acquire() as last:
        await pnl_service.fold_pending(last, scales, utc_now())
    assert _without_mid(await _pnl(client, desk)) == _without_mid(after)


async def test_a_dealer_whose_fold_fails_leaves_the_others_folded(
    client: Client, conn: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch,
) -> None:
    first, second = await make_desk(client), await make_desk(client)
    await _fill(client, first, (("BUY", "0.5"),))
    await _fill(client, second, (("SELL", "0.2"), ("BUY", "0.1")))
    app = client.app
    assert app is not None
    fold_dealer = pnl_service.fold_dealer

    async def failing(conn: Any, dealer_account_id: uuid.UUID, *args: Any, **kwargs: Any
                      ) -> pnl_service.Folded:
        if str(dealer_account_id) == first.dealer:
            raise ValueError("a corrupt fact")
        return await fold_dealer(conn, dealer_account_id, *args, **kwargs)

    monkeypatch.setattr(pnl_service, "fold_dealer", failing)
    async with app[POOL].acquire() as pooled:
        with pytest.raises(RuntimeError, match=first.dealer):
            await pnl_service.fold_pending(pooled, app[ASSET_SCALES], utc_now())
    folded = dict(await conn.fetch(
        """SELECT q.dealer_account_id::text, bool_and(o.pnl_folded) FROM trade_order o
           JOIN quote q USING (quote_id) WHERE o.status = 'FILLED'
           GROUP BY q.dealer_account_id"""))
    assert folded == {first.dealer: False, second.dealer: True}
