"""A venue that charges one hedge order in two assets (a fee-token discount running out
mid-order): the worker books both fees, the hedge list shows both, and the PnL rebuilt from the
recorded facts still equals the dealer's ledger balances, folded or not."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import asyncpg

from dealer.app import create_app, utc_now
from dealer.appkeys import ASSET_SCALES, POOL, VENUES
from dealer.services import pnl
from dealer.settings import DaemonSecrets, Settings
from tests.conftest import VIEWER, assert_ok
from tests.desk import (
    AppClient,
    check_books,
    fill_all,
    hedge_worker,
    hedges_final,
    ledger_balances,
    make_desk,
    metric_value,
)
from tests.helpers import get
from venues.base import Execution, Fee, OrderState, VenueAccount

BNB_FEE = Decimal("0.00000123")  # the discount token's part of each order's fee


class FeeTokenVenue:
    """An exchange that takes part of an order's fee in BNB: the order's first execution is
    split in two halves, the first half's fee charged in BNB."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def submit_order(self, account: VenueAccount, order: Any) -> OrderState:
        return _split(await self._inner.submit_order(account, order))

    async def order_status(self, account: VenueAccount, client_order_id: str) -> OrderState:
        return _split(await self._inner.order_status(account, client_order_id))


def _split(state: OrderState) -> OrderState:
    if not state.executions:
        return state
    first, *rest = state.executions
    half = first.quantity / 2
    token = Execution(f"{first.execution_id}-bnb", first.price, half, Fee("BNB", BNB_FEE),
                      first.liquidity, first.ts_event)
    remainder = Execution(first.execution_id, first.price, first.quantity - half, first.fee,
                          first.liquidity, first.ts_event)
    return OrderState(**{**{name: getattr(state, name) for name in state.__slots__},
                         "executions": (token, remainder, *rest)})


class FeeTokenVenues:
    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def execution(self, venue: str) -> FeeTokenVenue:
        return FeeTokenVenue(self._inner.execution(venue))


async def test_a_hedge_order_charged_in_two_assets_is_booked_and_reported_whole(
    settings: Settings, secrets: DaemonSecrets, aiohttp_client: AppClient,
    conn: asyncpg.Connection,
) -> None:
    app = create_app(settings.model_copy(update={"asset_scales": {"BNB": 8}}), secrets)
    client = await aiohttp_client(app)
    desk = await make_desk(client)
    fills = (("BUY", "0.3"), ("SELL", "0.2"))
    await fill_all(client, desk, fills, concurrency=1)
    worker = hedge_worker(app, venues=FeeTokenVenues(app[VENUES]))
    worker.start()
    try:
        jobs = await hedges_final(conn, len(fills))
    finally:
        await worker.stop()
    assert [j["status"] for j in jobs] == ["HEDGED"] * len(jobs)

    executed = await conn.fetch(
        "SELECT * FROM hedge_order WHERE filled_quantity > 0 ORDER BY created_at")
    assert executed
    for order in executed:
        fees = json.loads(order["fees"])
        received = "BTC" if order["side"] == "BUY" else "USDT"
        assert set(fees) == {"BNB", received}, fees
        assert Decimal(fees["BNB"]) == BNB_FEE
        # fee_asset/fee_amount keep one of them: the base asset's when the venue charged one
        assert order["fee_amount"] == Decimal(fees[order["fee_asset"]])
        assert order["side"] == "SELL" or order["fee_asset"] == "BTC"

    _, body = await get(client, "/api/v3/fermata/hedge/list", {"dealerAccountId": desk.dealer},
                        VIEWER)
    listed = [o for j in assert_ok(body) for o in j["orders"] if Decimal(o["filledQuantity"])]
    assert len(listed) == len(executed)
    for order in listed:
        received = "BTC" if order["orderSide"] == "BUY" else "USDT"
        assert [f["asset"] for f in order["fees"]] == sorted({"BNB", received})
        assert {f["asset"]: f["amount"] for f in order["fees"]}[order["feeAsset"]] == order["fee"]

    balances = await check_books(client, conn, desk, reconcile=False)  # BNB is not at the venue
    bnb_paid = BNB_FEE * len(executed)
    assert balances["BNB/8"] == -bnb_paid
    lp_bnb = sum([(await ledger_balances(client, f"exchange:{lp}")).get("BNB/8", Decimal(0))
                  for lp in desk.lps], Decimal(0))
    assert lp_bnb == bnb_paid

    async def report() -> dict[str, Any]:
        status, body = await get(client, "/api/v3/fermata/dealer/pnl",
                                 {"dealerAccountId": desk.dealer}, VIEWER)
        assert status == 200, body
        data: dict[str, Any] = assert_ok(body)
        return data

    for _ in range(2):  # as rebuilt from the facts, then from the folded totals
        figures = await report()
        [usdt] = figures["quoteAssets"]
        assert Decimal(usdt["realised"]) == balances["USDT/6"]
        fees = {f["asset"]: f for f in figures["fees"]}
        assert Decimal(fees["BNB"]["amount"]) == Decimal(fees["BNB"]["booked"]) == bnb_paid
        async with app[POOL].acquire() as pooled:
            await pnl.fold_pending(pooled, app[ASSET_SCALES], utc_now())
    assert await conn.fetchval("SELECT count(*) FROM hedge_order WHERE NOT pnl_folded") == 0


async def test_a_fee_in_an_asset_without_a_scale_is_counted_and_kept_on_its_order(
    settings: Settings, secrets: DaemonSecrets, aiohttp_client: AppClient,
    conn: asyncpg.Connection,
) -> None:
    app = create_app(settings, secrets)  # no scale for BNB
    client = await aiohttp_client(app)
    desk = await make_desk(client)
    await fill_all(client, desk, (("BUY", "0.3"),), concurrency=1)
    worker = hedge_worker(app, venues=FeeTokenVenues(app[VENUES]))
    worker.start()
    try:
        jobs = await hedges_final(conn, 1)
    finally:
        await worker.stop()
    assert [j["status"] for j in jobs] == ["HEDGED"]  # the fill is booked, the fee cannot be
    executed = await conn.fetch("SELECT fees FROM hedge_order WHERE filled_quantity > 0")
    assert executed
    assert all(Decimal(json.loads(o["fees"])["BNB"]) == BNB_FEE for o in executed)
    assert await metric_value(client, "dealer_hedge_fees_unbooked_total ") == len(executed)
    balances = await ledger_balances(client, f"dealer:{desk.dealer}")
    assert "BNB/8" not in balances
