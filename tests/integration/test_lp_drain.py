"""Drain-then-unlink: an LP with hedge work in flight is not unlinked (refused, nothing written);
with `drain: true` it is marked DRAINING and a scheduled job unlinks it, as an admin's unlink
would, once that work is done. The order in flight is a real one: it reached the paper venue
and its answer never came back (the worker "crashed")."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import asyncpg
from aiohttp import web

from dealer.appkeys import ASSET_SCALES, CLOCK, METRICS, POOL, VENUES
from dealer.settings import DaemonSecrets, Settings
from hedging.worker import HedgeWorker
from tests.conftest import VIEWER, assert_error, assert_ok
from tests.desk import (
    DEALER_BOOK,
    AppClient,
    Desk,
    accept,
    app_with_desk,
    make_desk,
    metric_value,
    request_quote,
)
from tests.helpers import Client, assert_invalid, eventually, get, post, snapshot
from venues.base import ExecutionVenue, OrderRequest, OrderState, VenueAccount

UNLINK = "/api/v3/fermata/dealer/unlink"
LINKS = "/api/v3/fermata/dealer/listLinks"


class Hanging:
    """The venues as the worker sees them, except that the first submit reaches its venue and
    then never answers (the process hangs there, as if it had crashed)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.hung = asyncio.Event()
        self.hung_order = ""

    def execution(self, venue: str) -> ExecutionVenue:
        return _HangingProxy(self, self.inner.execution(venue))  # type: ignore[return-value]


class _HangingProxy:
    def __init__(self, owner: Hanging, venue: ExecutionVenue) -> None:
        self._owner, self._venue = owner, venue

    def __getattr__(self, name: str) -> Any:
        return getattr(self._venue, name)

    async def submit_order(self, account: VenueAccount, order: OrderRequest) -> OrderState:
        state = await self._venue.submit_order(account, order)
        if not self._owner.hung.is_set():
            self._owner.hung_order = order.client_order_id
            self._owner.hung.set()
            await asyncio.Event().wait()
        return state


def _worker(app: web.Application, venues: Any) -> HedgeWorker:
    return HedgeWorker(app[POOL], venues, app[ASSET_SCALES], app[METRICS], app[CLOCK],
                       poll_interval_s=0.02)


async def _unlink(client: Client, desk: Desk, lp: str, **fields: Any
                  ) -> tuple[int, dict[str, Any]]:
    return await post(client, UNLINK, {"dealerAccountId": desk.dealer, "tradingAccountId": lp,
                                       **fields})


async def _links(client: Client, desk: Desk) -> dict[str, dict[str, Any]]:
    status, body = await get(client, LINKS, {"dealerAccountId": desk.dealer}, VIEWER)
    assert status == 200, body
    return {link["tradingAccountId"]: link for link in assert_ok(body)}


async def _metric(client: Client, line_start: str) -> float:
    return await metric_value(client, line_start)


async def test_an_lp_with_an_order_in_flight_is_drained_then_unlinked(
    settings: Settings, secrets: DaemonSecrets, aiohttp_client: AppClient,
    conn: asyncpg.Connection,
) -> None:
    app, client, desk = await app_with_desk(settings, secrets, aiohttp_client,
                                            exposure_check_ms=200)
    await accept(client, await request_quote(client, desk, orderSide="BUY", quantity="0.5"))
    venues = Hanging(app[VENUES])
    crashed = _worker(app, venues)
    crashed.start()
    await asyncio.wait_for(venues.hung.wait(), timeout=10)
    await crashed.stop(grace_s=0)
    # The plan may split the hedge over several LPs, all sent at once: the LP under test is
    # the one whose order hung; the others' orders may be left SENT too (the worker stopped).
    sent = await conn.fetchrow("SELECT * FROM hedge_order WHERE client_order_id = $1",
                               venues.hung_order)
    assert sent is not None
    assert sent["status"] == "SENT"
    lp = str(sent["trading_account_id"])

    # Plain unlink: refused, nothing written.
    before = await snapshot(conn)
    status, body = await _unlink(client, desk, lp)
    assert status == 409, body
    assert_error(body, -130010)
    assert body["details"]["metadata"] == {"ordersInFlight": 1, "jobsInProgress": 1}
    assert await snapshot(conn) == before

    # Drain: accepted at once, the link stays (draining) until its work is done.
    status, body = await _unlink(client, desk, lp, drain=True)
    assert status == 200, body
    assert assert_ok(body) == {"dealerAccountId": desk.dealer, "tradingAccountId": lp,
                               "state": "DRAINING", "ordersInFlight": 1, "jobsInProgress": 1}
    links = await _links(client, desk)
    assert (links[lp]["draining"], links[lp]["state"]) == (True, "DRAINING")
    assert {links[other]["state"] for other in desk.lps if other != lp} == {"LINKED"}
    # Asked again: the same answer, nothing more written.
    draining = await snapshot(conn)
    status, body = await _unlink(client, desk, lp, drain=True)
    assert assert_ok(body)["state"] == "DRAINING"
    assert await snapshot(conn) == draining
    status, body = await _unlink(client, desk, lp)
    assert_error(body, -130010)
    assert await conn.fetchval("SELECT count(*) FROM dealer_link") == 3
    assert await _metric(client, 'dealer_lp_link_changes_total{action="unlink"}') == 0.0

    # A worker restarts: it resolves the order by its client order id and finishes the job;
    # the scheduled drain then unlinks the LP.
    restarted = _worker(app, app[VENUES])
    restarted.start()
    try:
        async def unlinked() -> bool:
            return lp not in await _links(client, desk)

        await eventually(unlinked, within_s=15.0, every_s=0.1)
    finally:
        await restarted.stop()
    assert await conn.fetchval("SELECT status FROM hedge_order WHERE client_order_id = $1",
                               sent["client_order_id"]) == "FILLED"
    assert await conn.fetchval("SELECT status FROM hedge_job") == "HEDGED"
    operation = await conn.fetchrow(
        """SELECT detail FROM trading_account_operation WHERE trading_account_id = $1
           AND operation_type = 'UNLINK'""", uuid.UUID(lp))
    assert operation is not None
    assert json.loads(operation["detail"]) == {
        "dealerAccountId": desk.dealer, "ledgerAccount": f"exchange:{lp}", "drained": True}
    assert await _metric(client, 'dealer_lp_link_changes_total{action="unlink"}') == 1.0
    # Its book left the dealer's consolidated book; its ledger account stays.
    status, body = await get(client, DEALER_BOOK, {"dealerAccountId": desk.dealer,
                                                   "symbol": "BTC/USDT", "depth": 1})
    assert lp not in [x["tradingAccountId"] for x in assert_ok(body)["lps"]]
    assert await conn.fetchval("SELECT count(*) FROM ledger_account WHERE address = $1",
                               f"exchange:{lp}") == 1


async def test_an_in_progress_job_routed_to_the_lp_holds_its_unlink(
    settings: Settings, secrets: DaemonSecrets, aiohttp_client: AppClient,
    conn: asyncpg.Connection,
) -> None:
    _, client, desk = await app_with_desk(settings, secrets, aiohttp_client,
                                          exposure_check_ms=200)
    await accept(client, await request_quote(client, desk, orderSide="SELL", quantity="0.4"))
    plan = json.loads(await conn.fetchval("SELECT plan FROM hedge_job"))
    routed = {leg["tradingAccountId"] for leg in plan["legs"]}
    lp = next(iter(routed))
    # Between two passes of a worker: IN_PROGRESS, no order in flight.
    await conn.execute("UPDATE hedge_job SET status = 'IN_PROGRESS'")
    status, body = await _unlink(client, desk, lp)
    assert status == 409, body
    assert body["details"]["metadata"] == {"ordersInFlight": 0, "jobsInProgress": 1}
    status, body = await _unlink(client, desk, lp, drain=True)
    assert assert_ok(body)["state"] == "DRAINING"
    # Quoting and linking still see the LP linked.
    status, body = await post(client, "/api/v3/fermata/dealer/link",
                              {"dealerAccountId": desk.dealer, "tradingAccountId": lp})
    assert_error(body, -130007)
    await conn.execute("UPDATE hedge_job SET status = 'HEDGED'")

    async def unlinked() -> bool:
        return lp not in await _links(client, desk)

    await eventually(unlinked, within_s=5.0, every_s=0.1)
    # An LP the plan does not route to was never held.
    idle = next((x for x in desk.lps if x not in routed), None)
    if idle is not None:
        status, body = await _unlink(client, desk, idle)
        assert (status, assert_ok(body)) == (200, "ok")


async def test_drain_with_nothing_in_flight_unlinks_at_once(
    client: Client, conn: asyncpg.Connection,
) -> None:
    desk = await make_desk(client)
    status, body = await _unlink(client, desk, desk.lps[0], drain=True)
    assert status == 200, body
    assert assert_ok(body) == {"dealerAccountId": desk.dealer, "tradingAccountId": desk.lps[0],
                               "state": "UNLINKED", "ordersInFlight": 0, "jobsInProgress": 0}
    status, body = await _unlink(client, desk, desk.lps[1], drain=False)
    assert (status, assert_ok(body)) == (200, "ok")
    assert set(await _links(client, desk)) == {desk.lps[2]}
    status, body = await _unlink(client, desk, desk.lps[0], drain=True)
    assert status == 404
    assert_error(body, -130005)
    before = await snapshot(conn)
    for drain in ("yes", 1, None):
        status, body = await _unlink(client, desk, desk.lps[2], drain=drain)
        assert_invalid(status, body, "drain")
    assert await snapshot(conn) == before
