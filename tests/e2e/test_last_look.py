"""Last look: an accept is REJECTED (with its reason) when the fresh books moved against the
dealer by more than the dealer's lastLookBps since the quote; otherwise it fills."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from aiohttp import web

from dealer.appkeys import VENUES
from dealer.services import rfq
from tests.conftest import assert_error, assert_ok
from tests.desk import LP_VENUES, accept_buy, buy_quote, lp_desk
from tests.helpers import Client, eventually, get


async def _move_against(app: web.Application, client: Client, dealer: str,
                        headers: dict[str, str], quote: dict[str, Any]) -> None:
    """Every LP's asks jump 5 %: buying the hedge now costs far more than quoted."""
    for venue, _ in LP_VENUES:
        paper = app[VENUES].market_data(venue)
        current = await paper.order_book("BTC/USDT", 50)
        paper.pin_book("BTC/USDT", current.bids,  # type: ignore[attr-defined]
                       [(p * Decimal("1.05"), q) for p, q in current.asks])

    async def moved() -> bool:
        _, body = await get(client, "/api/v3/fermata/dealer/orderBook",
                            {"dealerAccountId": dealer, "symbol": "BTC/USDT"}, headers)
        best = Decimal(assert_ok(body)["asks"][0]["price"])
        return best > Decimal(quote["price"]) * Decimal("1.02")

    await eventually(moved, within_s=3)


async def test_a_quiet_market_fills(client: Client) -> None:
    dealer, customer, headers = await lp_desk(client, "1000")
    quote = await buy_quote(client, dealer, customer, headers)
    status, body = await accept_buy(client, customer, quote, headers)
    assert status == 200, body
    assert assert_ok(body)[0]["status"] == "FILLED"


async def test_an_adverse_move_rejects_the_accept_and_books_nothing(
    app: web.Application, client: Client, conn: asyncpg.Connection,
) -> None:
    dealer, customer, headers = await lp_desk(client, "5")
    quote = await buy_quote(client, dealer, customer, headers)
    await _move_against(app, client, dealer, headers, quote)
    status, body = await accept_buy(client, customer, quote, headers)
    assert status == 200, body
    [order] = assert_ok(body)
    assert order["status"] == "REJECTED"
    assert order["rejectReason"].startswith("last look: the market moved")
    assert order["executions"] == []
    assert await conn.fetchval("SELECT count(*) FROM hedge_job") == 0
    assert await conn.fetchval("SELECT count(*) FROM trade_execution") == 0
    assert await conn.fetchval(
        "SELECT count(*) FROM ledger_outbox WHERE kind = 'transaction'") == 0
    # The quote is spent, before its expireAt, and the answer says why.
    status, body = await accept_buy(client, customer, quote, headers)
    assert status == 400
    assert_error(body, -160002)
    assert body["error"] == ("The quote is spent: a last look rejected an accept of it; "
                             "request a new quote")


async def test_racing_rejects_of_two_quotes_with_one_key_reject_one_and_refuse_the_other(
    app: web.Application, client: Client, conn: asyncpg.Connection,
) -> None:
    dealer, customer, headers = await lp_desk(client, "5", quoteTtlMs=60_000)
    pairs = [(await buy_quote(client, dealer, customer, headers),
              await buy_quote(client, dealer, customer, headers)) for _ in range(4)]
    await _move_against(app, client, dealer, headers, pairs[0][0])
    for number, (first, second) in enumerate(pairs):
        key = f"racing-{number}"
        answers = await asyncio.gather(
            accept_buy(client, customer, first, headers, idempotencyKey=key),
            accept_buy(client, customer, second, headers, idempotencyKey=key))
        # whichever commits first is REJECTED; the other finds the key taken: 409, never 500
        rejected = [body for status, body in answers if status == 200]
        refused = [body for status, body in answers if status != 200]
        assert len(rejected) == 1, answers
        assert len(refused) == 1, answers
        assert assert_ok(rejected[0])[0]["status"] == "REJECTED"
        assert [status for status, _ in answers if status != 200] == [409], answers
        assert_error(refused[0], -160013)
        # the refused accept wrote nothing: its quote is still OPEN
        loser = second if answers[0][0] == 200 else first
        assert await conn.fetchval("SELECT status FROM quote WHERE quote_id = $1",
                                   uuid.UUID(loser["quoteId"])) == "OPEN"
    assert await conn.fetchval("SELECT count(*) FROM trade_order") == len(pairs)


async def test_a_keyed_retry_that_meets_the_rejection_it_repeats_answers_the_rejected_order(
    app: web.Application, client: Client, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A retry looks for its key before the accept it repeats has committed (nothing yet); that
    accept then commits its REJECTED order, which takes the quote (EXPIRED); the retry then reads
    the quote. It answers the rejected order, as every retry of an accept does, not "expired"."""
    dealer, customer, headers = await lp_desk(client, "5", quoteTtlMs=60_000)
    quote = await buy_quote(client, dealer, customer, headers)
    await _move_against(app, client, dealer, headers, quote)
    looked_up = rfq._existing
    first: list[tuple[int, dict[str, Any]]] = []
    repeated = asyncio.Event()  # set once the accept the retry repeats has run

    async def existing(conn: asyncpg.Connection, cmd: rfq.AcceptCommand
                       ) -> rfq.OrderRecord | None:
        found = await looked_up(conn, cmd)
        if not repeated.is_set():  # the retry's first look: the accept it repeats runs now
            repeated.set()
            first.append(await accept_buy(client, customer, quote, headers,
                                          idempotencyKey="retried"))
        return found

    monkeypatch.setattr(rfq, "_existing", existing)
    status, body = await accept_buy(client, customer, quote, headers, idempotencyKey="retried")
    [(first_status, first_body)] = first
    assert first_status == 200, first_body
    [rejected] = assert_ok(first_body)
    assert rejected["status"] == "REJECTED"
    assert status == 200, body
    assert assert_ok(body) == [rejected]


async def test_a_rejected_ioc_order_answers_ioc_on_submit_replay_and_list(
    app: web.Application, client: Client,
) -> None:
    dealer, customer, headers = await lp_desk(client, "5")
    quote = await buy_quote(client, dealer, customer, headers)
    await _move_against(app, client, dealer, headers, quote)
    status, body = await accept_buy(client, customer, quote, headers, idempotencyKey="ioc",
                                    timeInForce="IOC")
    assert status == 200, body
    [order] = assert_ok(body)
    assert (order["status"], order["timeInForce"]) == ("REJECTED", "IOC")
    status, body = await accept_buy(client, customer, quote, headers, idempotencyKey="ioc",
                                    timeInForce="IOC")
    assert status == 200, body
    assert assert_ok(body) == [order]
    status, body = await accept_buy(client, customer, quote, headers, idempotencyKey="ioc")
    assert status == 409, body
    assert_error(body, -160013)
    status, body = await get(client, "/api/v3/trading/order/list", {}, headers)
    assert status == 200, body
    assert assert_ok(body) == [order]
