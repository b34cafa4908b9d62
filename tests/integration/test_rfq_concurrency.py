"""Concurrent accepts across two replicas (two apps on one database): a quote fills once, its
fill, ledger entry and hedge job are written once, and idempotent retries racing each other
answer the one order they made."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from aiohttp import web

from dealer.app import create_app
from dealer.settings import DaemonSecrets, Settings
from tests.conftest import assert_error, assert_ok
from tests.helpers import Client, connect_exchange_account, eventually, get, post

QUOTE = "/api/v3/fermata/quote/request"
SUBMIT = "/api/v3/trading/order/submit"
DEALER_BOOK = "/api/v3/fermata/dealer/orderBook"
ClientFactory = Callable[[web.Application], Awaitable[Client]]


async def _replicas(settings: Settings, secrets: DaemonSecrets,
                    aiohttp_client: ClientFactory) -> tuple[Client, Client]:
    """Two app instances (replicas) on the same database, both started."""
    first = await aiohttp_client(create_app(settings, secrets))
    second = await aiohttp_client(create_app(settings, secrets))
    return first, second


async def _desk(client: Client) -> tuple[str, str]:
    """Three paper LPs linked to a BTC/USDT dealer, a client; answers (dealer, client)."""
    lps = [await connect_exchange_account(client, venue, external)
           for venue, external in (("BINANCE", "spot"), ("OKX", "trading"), ("BYBIT", "spot"))]
    _, body = await post(client, "/api/v3/fermata/dealer/create", {"symbols": ["BTC/USDT"]})
    dealer: str = assert_ok(body)["dealerAccountId"]
    for lp in lps:
        status, body = await post(client, "/api/v3/fermata/dealer/link",
                                  {"dealerAccountId": dealer, "tradingAccountId": lp})
        assert status == 200, body
    _, body = await post(client, "/api/v3/fermata/client/create", {"nickname": "racer"})
    account: str = assert_ok(body)["tradingAccountId"]

    async def fresh() -> bool:
        _, payload = await get(client, DEALER_BOOK, {"dealerAccountId": dealer,
                                                     "symbol": "BTC/USDT", "depth": 1})
        states = assert_ok(payload)["lps"]
        return len(states) == 3 and all(lp["fresh"] for lp in states)

    await eventually(fresh, within_s=3.0)
    return dealer, account


async def _quote(client: Client, dealer: str, account: str) -> dict[str, Any]:
    status, body = await post(client, QUOTE, {
        "dealerAccountId": dealer, "tradingAccountId": account, "symbol": "BTC/USDT",
        "orderSide": "BUY", "quantity": "0.5"})
    assert status == 200, body
    quote: dict[str, Any] = assert_ok(body)
    return quote


def _accept(quote: dict[str, Any], **fields: str) -> dict[str, Any]:
    return {"tradingAccountId": quote["tradingAccountId"], "instrumentId": quote["instrumentId"],
            "orderSide": "BUY", "orderType": "QUOTED", "quantity": quote["quantity"],
            "quoteId": quote["quoteId"], **fields}


async def _race(calls: list[tuple[Client, dict[str, Any]]]
                ) -> list[tuple[int, dict[str, Any]]]:
    """Fire every accept at once, each at its replica."""
    return list(await asyncio.gather(*(post(client, SUBMIT, body) for client, body in calls)))


async def _written_for(conn: asyncpg.Connection, quote_id: str) -> dict[str, int]:
    quote = uuid.UUID(quote_id)
    return {
        "trade_order": await conn.fetchval(
            "SELECT count(*) FROM trade_order WHERE quote_id = $1", quote),
        "trade_execution": await conn.fetchval(
            """SELECT count(*) FROM trade_execution e JOIN trade_order o USING (trade_order_id)
               WHERE o.quote_id = $1""", quote),
        "hedge_job": await conn.fetchval(
            """SELECT count(*) FROM hedge_job h JOIN trade_order o USING (trade_order_id)
               WHERE o.quote_id = $1""", quote),
        "client_fill": await conn.fetchval(
            """SELECT count(*) FROM ledger_outbox WHERE kind = 'transaction'
               AND payload::text LIKE '%' || $1 || '%'""", quote_id),
    }


async def test_fifty_concurrent_accepts_on_two_replicas_fill_the_quote_once(
    settings: Settings, secrets: DaemonSecrets, conn: asyncpg.Connection,
    aiohttp_client: ClientFactory,
) -> None:
    first, second = await _replicas(settings, secrets, aiohttp_client)
    dealer, account = await _desk(first)
    quote = await _quote(first, dealer, account)
    calls = [(first if n % 2 == 0 else second, _accept(quote, idempotencyKey=f"racer-{n}"))
             for n in range(50)]
    results = await _race(calls)

    assert Counter(status for status, _ in results) == {200: 1, 409: 49}, results
    [filled] = [body for status, body in results if status == 200]
    [order] = assert_ok(filled)
    assert (order["status"], order["quoteId"], order["executedQuantity"]) == (
        "FILLED", quote["quoteId"], quote["quantity"])
    for status, body in results:
        if status == 409:
            assert_error(body, -160003)
    assert await _written_for(conn, quote["quoteId"]) == {
        "trade_order": 1, "trade_execution": 1, "hedge_job": 1, "client_fill": 1}
    assert await conn.fetchval("SELECT count(*) FROM trade_order") == 1
    assert await conn.fetchval("SELECT status FROM quote WHERE quote_id = $1",
                               uuid.UUID(quote["quoteId"])) == "FILLED"
    # Each replica counted what it answered.
    totals: Counter[str] = Counter()
    for client in (first, second):
        text = await (await client.get("/metrics")).text()
        for line in text.splitlines():
            if line.startswith("dealer_quote_accepts_total{"):
                labels, value = line.rsplit(" ", 1)
                if float(value):  # the series exported at 0 before their first event
                    totals[labels] += int(float(value))
    assert totals == {
        'dealer_quote_accepts_total{outcome="filled",reason="ok"}': 1,
        'dealer_quote_accepts_total{outcome="refused",reason="QUOTE_ALREADY_FILLED"}': 49,
    }


async def test_racing_retries_of_one_idempotency_key_all_answer_the_one_order(
    settings: Settings, secrets: DaemonSecrets, conn: asyncpg.Connection,
    aiohttp_client: ClientFactory,
) -> None:
    first, second = await _replicas(settings, secrets, aiohttp_client)
    dealer, account = await _desk(first)
    quote = await _quote(first, dealer, account)
    results = await _race([(first if n % 2 == 0 else second,
                            _accept(quote, idempotencyKey="one-key")) for n in range(20)])

    assert [status for status, _ in results] == [200] * 20, results
    orders = {assert_ok(body)[0]["tradeOrderId"] for _, body in results}
    assert len(orders) == 1
    assert await _written_for(conn, quote["quoteId"]) == {
        "trade_order": 1, "trade_execution": 1, "hedge_job": 1, "client_fill": 1}


async def test_one_idempotency_key_racing_on_several_quotes_fills_one_and_conflicts_the_rest(
    settings: Settings, secrets: DaemonSecrets, conn: asyncpg.Connection,
    aiohttp_client: ClientFactory,
) -> None:
    first, second = await _replicas(settings, secrets, aiohttp_client)
    dealer, account = await _desk(first)
    quotes = [await _quote(first, dealer, account) for _ in range(10)]
    results = await _race([(first if n % 2 == 0 else second,
                            _accept(quote, clientOrderId="shared"))
                           for n, quote in enumerate(quotes)])

    assert Counter(status for status, _ in results) == {200: 1, 409: 9}, results
    for status, body in results:
        if status == 409:
            assert_error(body, -160013)
    assert await conn.fetchval("SELECT count(*) FROM trade_order") == 1
    assert await conn.fetchval("SELECT count(*) FROM hedge_job") == 1
    assert await conn.fetchval(
        "SELECT count(*) FROM quote WHERE status = 'OPEN'") == 9
