"""RFQ reads and housekeeping on a desk of three paper LPs: what quote/get, quote/list and
order/list answer (status, pagination), the expiry job against an accept in flight, and the
accept metrics as documented."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from dealer.appkeys import ASSET_SCALES, CLOCK, MARKET_DATA, POOL, QUOTER
from dealer.auth import Role
from dealer.errors import ApiError, Errors
from dealer.services import rfq
from dealer.settings import DaemonSecrets, Settings
from tests.conftest import ADMIN, assert_ok, auth
from tests.desk import (
    QUOTE,
    QUOTE_GET,
    QUOTE_LIST,
    SUBMIT,
    AppClient,
    accept,
    accept_body,
    app_client,
    app_with_desk,
    make_desk,
    quote_body,
    request_quote,
)
from tests.e2e.test_rfq import ManualClock
from tests.helpers import get, post


async def test_a_quote_past_its_expire_at_reads_expired_before_the_expiry_job_marks_it(
    settings: Settings, secrets: DaemonSecrets, aiohttp_client: AppClient,
) -> None:
    # No expiry run during the test: what is read must not depend on when the job last ran.
    from dealer.app import create_app

    clock = ManualClock(dt.datetime.now(dt.UTC).replace(microsecond=0))
    app = create_app(settings.model_copy(update={"quote_expiry_ms": 60_000}), secrets,
                     clock=clock)
    client = await aiohttp_client(app)
    desk = await make_desk(client, quoteTtlMs=500)
    stale = await request_quote(client, desk, orderSide="BUY", quantity="0.1")
    clock.now += dt.timedelta(milliseconds=500)  # at expireAt: an accept is refused (-160002)
    fresh = await request_quote(client, desk, orderSide="SELL", quantity="0.1")
    trader = auth(Role.TRADER, [uuid.UUID(desk.client)])

    for headers in (ADMIN, trader):
        status, body = await get(client, QUOTE_GET, {"quoteId": stale["quoteId"]}, headers)
        assert status == 200, body
        assert assert_ok(body) == {**stale, "status": "EXPIRED"}

    async def listed(params: dict[str, Any]) -> list[tuple[str, str]]:
        status, body = await get(client, QUOTE_LIST, params)
        assert status == 200, body
        return [(q["quoteId"], q["status"]) for q in assert_ok(body)]

    assert await listed({}) == [(fresh["quoteId"], "OPEN"), (stale["quoteId"], "EXPIRED")]
    assert await listed({"status": "OPEN"}) == [(fresh["quoteId"], "OPEN")]
    assert await listed({"status": "EXPIRED"}) == [(stale["quoteId"], "EXPIRED")]
    _, body = await get(client, QUOTE_LIST, {"status": "OPEN"})
    assert body["pagination"]["total"] == 1


class _WriteBetween:
    """A connection that lets another session commit `statement` right after its first
    `fetchval` (a list's count), as a concurrent writer would."""

    def __init__(self, conn: asyncpg.Connection, other: asyncpg.Connection,
                 statement: str) -> None:
        self._conn, self._other, self._statement = conn, other, statement
        self._done = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    async def fetchval(self, query: str, *args: Any) -> Any:
        value = await self._conn.fetchval(query, *args)
        if not self._done:
            self._done = True
            await self._other.execute(self._statement)
        return value


async def test_a_list_page_and_its_total_come_from_one_snapshot(
    settings: Settings, secrets: DaemonSecrets, aiohttp_client: AppClient,
    conn: asyncpg.Connection,
) -> None:
    app, client, desk = await app_with_desk(settings, secrets, aiohttp_client)
    quote = await request_quote(client, desk, orderSide="BUY", quantity="0.1")
    await accept(client, quote)
    # Another quote, and another order, committed between the count and the page.
    new_quote = """INSERT INTO quote SELECT gen_random_uuid(), dealer_account_id,
                       trading_account_id, symbol, order_side, quantity, bid_price, ask_price,
                       hedge_plan, 'OPEN', created_at + interval '1 second',
                       expire_at + interval '1 second', NULL FROM quote LIMIT 1"""
    new_order = """INSERT INTO trade_order (trade_order_id, trading_account_id, instrument_id,
                       quote_id, order_side, order_type, status, reject_reason, quantity, price,
                       created_at, updated_at)
                   SELECT gen_random_uuid(), trading_account_id, instrument_id, quote_id,
                          order_side, 'QUOTED', 'REJECTED', 'test', quantity, price,
                          created_at + interval '1 second', updated_at + interval '1 second'
                   FROM trade_order LIMIT 1"""
    async with app[POOL].acquire() as pooled:
        quotes, total = await rfq.list_quotes(
            _WriteBetween(pooled, conn, new_quote), dealer_account_id=None,
            trading_account_id=None, status=None, only=None, now=app[CLOCK](), limit=10,
            offset=0)
        assert (len(quotes), total) == (1, 1)
        orders, total = await rfq.list_orders(
            _WriteBetween(pooled, conn, new_order), trade_order_id=None, status=None,
            trading_account_id=None, instrument_id=None, start=None, end=None, only=None,
            ascending=False, limit=10, offset=0)
        assert (len(orders), total) == (1, 1)


class _ExpireBeforeFill:
    """A connection on which the scheduled expiry (as the app builds it) runs at `at`, on
    another session, just before the accept's fill statement."""

    def __init__(self, conn: asyncpg.Connection, other: asyncpg.Connection,
                 at: dt.datetime) -> None:
        self._conn, self._other, self._at = conn, other, at
        self.expired: int | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    async def fetchrow(self, query: str, *args: Any) -> Any:
        if query is rfq._FILL and self.expired is None:
            self.expired = await rfq.QuoteExpiry().run(self._other, self._at)
        return await self._conn.fetchrow(query, *args)


async def test_an_accept_that_came_in_time_is_not_refused_by_an_expiry_run_meanwhile(
    settings: Settings, secrets: DaemonSecrets, aiohttp_client: AppClient,
    conn: asyncpg.Connection,
) -> None:
    app, client = await app_client(settings, secrets, aiohttp_client, quote_expiry_ms=60_000)
    desk = await make_desk(client, quoteTtlMs=500)
    quote = await request_quote(client, desk, orderSide="BUY", quantity="0.1")
    expire_at = dt.datetime.fromtimestamp(quote["expireAt"] / 1000, tz=dt.UTC)
    cmd = rfq.AcceptCommand(uuid.UUID(desk.client), quote["instrumentId"], "BUY",
                            Decimal(quote["quantity"]), uuid.UUID(quote["quoteId"]), None, None)
    async with app[POOL].acquire() as pooled:
        # The accept came 1 ms before expireAt; the expiry job (every 200 ms by default) runs
        # 100 ms after expireAt, while the accept is on its way to the database.
        racing = _ExpireBeforeFill(pooled, conn, expire_at + dt.timedelta(milliseconds=100))
        order, created = await rfq.accept_quote(
            racing, cmd, app[ASSET_SCALES], expire_at - dt.timedelta(milliseconds=1),
            app[MARKET_DATA])
    assert racing.expired == 0
    assert (order.status, created) == ("FILLED", True)
    assert await conn.fetchval("SELECT status FROM quote WHERE quote_id = $1",
                               cmd.quote_id) == "FILLED"
    # Once the grace is over the expiry marks what nobody accepted.
    other = await request_quote(client, desk, orderSide="SELL", quantity="0.1")
    later = dt.datetime.fromtimestamp(other["expireAt"] / 1000, tz=dt.UTC)
    assert await rfq.QuoteExpiry().run(conn, later + dt.timedelta(seconds=10)) == 1


async def test_quotes_and_accepts_that_fail_are_counted_under_the_code_answered(
    settings: Settings, secrets: DaemonSecrets, aiohttp_client: AppClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app, client, desk = await app_with_desk(settings, secrets, aiohttp_client)
    quote = await request_quote(client, desk, orderSide="BUY", quantity="0.1")

    async def outage(*args: Any, **kwargs: Any) -> Any:
        raise asyncpg.PostgresConnectionError("connection lost")

    async def bug(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(rfq, "accept_quote", outage)
    monkeypatch.setattr(app[QUOTER], "request_quote", bug)
    status, body = await post(client, SUBMIT, accept_body(quote))
    assert (status, body["errno"]) == (503, -2), body
    status, body = await post(client, QUOTE, quote_body(desk, orderSide="BUY", quantity="0.1"))
    assert (status, body["errno"]) == (500, -1), body
    text = await (await client.get("/metrics")).text()
    for line in ('dealer_quote_accepts_total{outcome="failed",reason="SERVICE_UNAVAILABLE"} 1.0',
                 'dealer_quotes_total{outcome="failed",reason="INTERNAL"} 1.0',
                 'dealer_quotes_total{outcome="quoted",reason="ok"} 1.0'):
        assert line in text, line


async def test_an_accept_whose_quote_no_longer_fits_the_asset_scales_is_refused(
    settings: Settings, secrets: DaemonSecrets, aiohttp_client: AppClient,
    conn: asyncpg.Connection,
) -> None:
    """A quote made under other scales (DEALER_ASSET_SCALES changed for an asset never booked):
    its accept is refused with the symbol's errno, not answered 500, and nothing is written."""
    app, client, desk = await app_with_desk(settings, secrets, aiohttp_client)
    quote = await request_quote(client, desk, orderSide="BUY", quantity="0.12345")
    cmd = rfq.AcceptCommand(uuid.UUID(desk.client), quote["instrumentId"], "BUY",
                            Decimal(quote["quantity"]), uuid.UUID(quote["quoteId"]), None, None)
    coarser = app[ASSET_SCALES].merged({"BTC": 4})  # 0.12345 BTC has no place in 4 decimals
    outbox = await conn.fetchval("SELECT count(*) FROM ledger_outbox")  # the desk's own
    async with app[POOL].acquire() as pooled:
        with pytest.raises(ApiError) as refused:
            await rfq.accept_quote(pooled, cmd, coarser, app[CLOCK]())
    assert refused.value.error is Errors.SYMBOL_NOT_QUOTED
    assert "request a new quote" in str(refused.value)
    assert await conn.fetchval("SELECT status FROM quote WHERE quote_id = $1",
                               cmd.quote_id) == "OPEN"
    assert await conn.fetchval("SELECT count(*) FROM trade_order") == 0
    assert await conn.fetchval("SELECT count(*) FROM ledger_outbox") == outbox
    # Under the scales it was made with, the same accept fills it.
    async with app[POOL].acquire() as pooled:
        order, created = await rfq.accept_quote(pooled, cmd, app[ASSET_SCALES], app[CLOCK]())
    assert (order.status, created) == ("FILLED", True)
