"""Concurrent accepts across two replicas (two apps on one database): a quote fills once, its
fill, ledger entry and hedge job are written once, and idempotent retries racing each other
answer the one order they made."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Sequence
from typing import Any

import asyncpg

from dealer.app import create_app
from dealer.settings import DaemonSecrets, Settings
from tests.conftest import assert_error, assert_ok
from tests.desk import SUBMIT, AppClient, Desk, accept_body, make_desk, request_quote
from tests.helpers import Client, post


async def _replicas_and_desk(settings: Settings, secrets: DaemonSecrets,
                             aiohttp_client: AppClient) -> tuple[Client, Client, Desk]:
    """Two app instances (replicas) on the same database, both started, and a desk made
    through the first."""
    first = await aiohttp_client(create_app(settings, secrets))
    second = await aiohttp_client(create_app(settings, secrets))
    return first, second, await make_desk(first)


async def _quote(client: Client, desk: Desk) -> dict[str, Any]:
    return await request_quote(client, desk, orderSide="BUY", quantity="0.5")


async def _race(first: Client, second: Client, accepts: Sequence[dict[str, Any]]
                ) -> list[tuple[int, dict[str, Any]]]:
    """Fire every accept at once, at the two replicas in turn."""
    return list(await asyncio.gather(*(post(first if n % 2 == 0 else second, SUBMIT, body)
                                       for n, body in enumerate(accepts))))


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
    aiohttp_client: AppClient,
) -> None:
    first, second, desk = await _replicas_and_desk(settings, secrets, aiohttp_client)
    quote = await _quote(first, desk)
    results = await _race(first, second, [accept_body(quote, idempotencyKey=f"racer-{n}")
                                          for n in range(50)])

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
    aiohttp_client: AppClient,
) -> None:
    first, second, desk = await _replicas_and_desk(settings, secrets, aiohttp_client)
    quote = await _quote(first, desk)
    results = await _race(first, second, [accept_body(quote, idempotencyKey="one-key")
                                          for _ in range(20)])

    assert [status for status, _ in results] == [200] * 20, results
    orders = {assert_ok(body)[0]["tradeOrderId"] for _, body in results}
    assert len(orders) == 1
    assert await _written_for(conn, quote["quoteId"]) == {
        "trade_order": 1, "trade_execution": 1, "hedge_job": 1, "client_fill": 1}


async def test_one_idempotency_key_racing_on_several_quotes_fills_one_and_conflicts_the_rest(
    settings: Settings, secrets: DaemonSecrets, conn: asyncpg.Connection,
    aiohttp_client: AppClient,
) -> None:
    first, second, desk = await _replicas_and_desk(settings, secrets, aiohttp_client)
    quotes = [await _quote(first, desk) for _ in range(10)]
    results = await _race(first, second, [accept_body(quote, clientOrderId="shared")
                                          for quote in quotes])

    assert Counter(status for status, _ in results) == {200: 1, 409: 9}, results
    for status, body in results:
        if status == 409:
            assert_error(body, -160013)
    assert await conn.fetchval("SELECT count(*) FROM trade_order") == 1
    assert await conn.fetchval("SELECT count(*) FROM hedge_job") == 1
    assert await conn.fetchval(
        "SELECT count(*) FROM quote WHERE status = 'OPEN'") == 9
