"""A venue that charges one hedge order in two assets (a fee-token discount running out
mid-order): the worker books both fees, the hedge list shows both, and the PnL rebuilt from the
recorded facts still equals the dealer's ledger balances, folded or not. A fee in an asset the
ledger has no scale for is left out of its fill, kept, and booked once a scale is configured
(`hedging.late_fees`), once however many replicas look."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg

import dealer.migrations
from dealer.app import create_app, utc_now
from dealer.appkeys import ASSET_SCALES, POOL, SCHEDULER, VENUES
from dealer.services import pnl
from dealer.settings import DaemonSecrets, Settings
from hedging.late_fees import book_late_fees
from ledger.accounts import exchange_account
from ledger.rounding import rounding_totals
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


async def test_a_fee_in_an_asset_without_a_scale_is_kept_then_booked_once_a_scale_is_set(
    settings: Settings, secrets: DaemonSecrets, aiohttp_client: AppClient,
    conn: asyncpg.Connection,
) -> None:
    app = create_app(settings, secrets)  # no scale for BNB
    client = await aiohttp_client(app)
    desk = await make_desk(client)
    await fill_all(client, desk, (("BUY", "0.3"), ("SELL", "0.2")), concurrency=1)
    worker = hedge_worker(app, venues=FeeTokenVenues(app[VENUES]))
    worker.start()
    try:
        jobs = await hedges_final(conn, 2)
    finally:
        await worker.stop()
    assert [j["status"] for j in jobs] == ["HEDGED"] * 2  # the fills are booked, the fees not
    executed = await conn.fetch(
        """SELECT o.client_order_id, o.fees, o.trading_account_id, j.job_id, j.trade_order_id
           FROM hedge_order o JOIN hedge_job j USING (job_id) WHERE o.filled_quantity > 0""")
    assert executed
    assert all(Decimal(json.loads(o["fees"])["BNB"]) == BNB_FEE for o in executed)
    assert await metric_value(client, "dealer_hedge_fees_unbooked_total ") == len(executed)
    assert "BNB/8" not in await ledger_balances(client, f"dealer:{desk.dealer}")

    # Each fee left out waits, with the metadata its fill was booked with.
    waiting = {r["client_order_id"]: r for r in await conn.fetch(
        "SELECT * FROM hedge_fee_pending WHERE booked_at IS NULL")}
    assert set(waiting) == {o["client_order_id"] for o in executed}
    for order in executed:
        row = waiting[order["client_order_id"]]
        assert (row["asset"], row["amount"]) == ("BNB", BNB_FEE)
        metadata = json.loads(row["metadata"])
        assert metadata["clientOrderId"] == order["client_order_id"]
        assert metadata["jobId"] == str(order["job_id"])
        assert metadata["orderId"] == str(order["trade_order_id"])
        assert metadata["quoteId"] == str(await conn.fetchval(
            "SELECT quote_id FROM trade_order WHERE trade_order_id = $1",
            order["trade_order_id"]))
        assert metadata["venueOrderId"]

    async def book(scales: Any) -> Any:
        async with app[POOL].acquire() as pooled:
            return await book_late_fees(pooled, scales, utc_now())

    # Without a scale for BNB nothing is booked; they stay waiting, and the daemon's job says so.
    late = await book(app[ASSET_SCALES])
    assert (late.booked, late.refused, late.waiting) == (0, 0, len(executed))
    await app[SCHEDULER].get_job("late_fees").func()
    assert await metric_value(client, "dealer_hedge_fees_waiting ") == len(executed)

    # With one (scale 6: each fee rounds in the dealer's favour), two replicas at once book
    # each fee once.
    scales = app[ASSET_SCALES].merged({"BNB": 6})
    rounding_before = {o["trading_account_id"]: await rounding_totals(
        conn, exchange_account(o["trading_account_id"])) for o in executed}
    runs = await asyncio.gather(book(scales), book(scales))
    assert sum(run.booked for run in runs) == len(executed)
    again = await book(scales)
    assert (again.booked, again.waiting) == (0, 0)  # booked, and never again
    entries = await conn.fetch(
        """SELECT b.payload FROM hedge_fee_pending p JOIN ledger_outbox b USING (outbox_id)""")
    assert len(entries) == len(executed)
    for entry in entries:
        payload = json.loads(entry["payload"])
        assert payload["metadata"]["kind"] == "fee"
        assert payload["metadata"]["fillReference"] == (
            f"hedge-{payload['metadata']['clientOrderId']}")
        [[_, _, units, asset]] = payload["postings"]
        assert (units, asset) == ("1", "BNB/6")  # 1.23 minor units: the dealer pays 1

    balances = await check_books(client, conn, desk, reconcile=False)  # BNB is not at the venue
    booked_bnb = Decimal("0.000001") * len(executed)
    assert balances["BNB/6"] == -booked_bnb
    # What the entries rounded off is kept with the LP's rounding, as for any fill's fee.
    for order in executed:
        lp = order["trading_account_id"]
        after = await rounding_totals(conn, exchange_account(lp))
        kept = after.get("BNB", Decimal(0)) - rounding_before[lp].get("BNB", Decimal(0))
        fills_on_lp = sum(1 for o in executed if o["trading_account_id"] == lp)
        assert kept == (Decimal("0.000001") - BNB_FEE) * fills_on_lp


async def test_the_fees_left_out_before_the_pending_table_are_found_in_the_outbox(
    settings: Settings, secrets: DaemonSecrets, aiohttp_client: AppClient,
    conn: asyncpg.Connection,
) -> None:
    """Migration 0019 finds the fees left out before it: a fee asset of a filled hedge order
    with no posting in any of the order's ledger entries. The fees that were booked (the
    order's other asset) are not taken for unbooked. What it finds is held for a person (one
    may have been corrected by hand), and booked once released."""
    app = create_app(settings, secrets)  # no scale for BNB
    client = await aiohttp_client(app)
    desk = await make_desk(client)
    await fill_all(client, desk, (("BUY", "0.3"),), concurrency=1)
    worker = hedge_worker(app, venues=FeeTokenVenues(app[VENUES]))
    worker.start()
    try:
        await hedges_final(conn, 1)
    finally:
        await worker.stop()
    recorded = [dict(r) for r in await conn.fetch(
        """SELECT client_order_id, asset, amount, metadata FROM hedge_fee_pending
           ORDER BY client_order_id""")]
    assert recorded
    assert {r["asset"] for r in recorded} == {"BNB"}
    await conn.execute("DELETE FROM hedge_fee_pending")

    migration = (Path(dealer.migrations.__file__).parent
                 / "0019_hedge_fee_pending.sql").read_text()
    await conn.execute(migration[migration.index("WITH booked AS"):])

    found = [dict(r) for r in await conn.fetch(
        """SELECT client_order_id, asset, amount, metadata FROM hedge_fee_pending
           ORDER BY client_order_id""")]
    # the metadata of the entries it read (their fills' quoteId came later: not theirs)
    for row in recorded:
        metadata = json.loads(row["metadata"])
        assert metadata.pop("quoteId")
        row["metadata"] = json.dumps(metadata)
    assert [{**r, "metadata": json.loads(r["metadata"])} for r in found] == [
        {**r, "metadata": json.loads(r["metadata"])} for r in recorded]
    assert await conn.fetchval("SELECT bool_and(held IS NOT NULL) FROM hedge_fee_pending")

    scales = app[ASSET_SCALES].merged({"BNB": 8})
    async with app[POOL].acquire() as pooled:
        held = await book_late_fees(pooled, scales, utc_now())
        assert (held.booked, held.waiting) == (0, len(recorded))
        await pooled.execute("UPDATE hedge_fee_pending SET held = NULL")
        released = await book_late_fees(pooled, scales, utc_now())
        assert (released.booked, released.waiting) == (len(recorded), 0)
