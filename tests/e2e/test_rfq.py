"""RFQ end to end over HTTP on a desk of three paper LPs (BINANCE spot, OKX trading, BYBIT spot):
quotes, their acceptance as QUOTED orders (seeds/001 TradeOrder), the ledger postings and hedge
job each fill leaves, the order and quote lists, and every refusal with nothing written."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Awaitable, Callable
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_FLOOR, ROUND_UP, Decimal
from typing import Any

import asyncpg
from aiohttp import web

from dealer.app import create_app
from dealer.appkeys import SCHEDULER
from dealer.auth import Role
from dealer.settings import DaemonSecrets, Settings
from tests.conftest import ADMIN, VIEWER, assert_error, assert_ok, auth
from tests.desk import (
    INSTRUMENT,
    LOT,
    ORDERS,
    QUOTE,
    QUOTE_GET,
    QUOTE_LIST,
    RFQ_TABLES,
    SUBMIT,
    TICK,
    TRANSACTIONS,
    accept,
    accept_body,
    make_desk,
    quote_body,
    request_quote,
)
from tests.helpers import (
    Client,
    assert_invalid,
    assert_moment,
    eventually,
    get,
    outbox_drained,
    post,
    post_raw,
    snapshot,
)


async def _state(conn: asyncpg.Connection) -> tuple[dict[str, list[str]], dict[str, int]]:
    """Every row of the tables admin endpoints write, and the RFQ tables' counts."""
    rows = await snapshot(conn)
    counts = {table: int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
              for table in RFQ_TABLES}
    return rows, counts


async def _refused(client: Client, path: str, body: dict[str, Any], status_code: int,
                   errno: int, headers: dict[str, str] = ADMIN) -> dict[str, Any]:
    status, payload = await post(client, path, body, headers)
    assert status == status_code, (body, payload)
    assert_error(payload, errno)
    return payload


def _minor(amount: Decimal, scale: int, rounding: str) -> str:
    return str(int((amount * 10**scale).to_integral_value(rounding=rounding)))


def _booked(amount: Decimal, client_side: str) -> Decimal:
    """A USDT amount as the ledger books it (USDT/6): up when the client pays it, down when
    the client gets it."""
    return amount.quantize(Decimal("0.000001"),
                           ROUND_CEILING if client_side == "BUY" else ROUND_FLOOR)


def _assert_filled(order: dict[str, Any], quote: dict[str, Any], side: str) -> None:
    """The seeds/001 TradeOrder of a filled quote: one execution at the quote price, costing
    what the quote showed for that side (what the ledger books)."""
    price = Decimal(quote["askPrice" if side == "BUY" else "bidPrice"])
    quantity = Decimal(quote["quantity"])
    cost = _booked(price * quantity, side)
    assert Decimal(quote["askQuoteQuantity" if side == "BUY" else "bidQuoteQuantity"]) == cost
    assert order["tradingAccountId"] == quote["tradingAccountId"]
    assert order["quoteId"] == quote["quoteId"]
    assert uuid.UUID(order["tradeOrderId"])
    assert (order["venue"], order["instrumentId"]) == ("FERMATA", INSTRUMENT)
    assert (order["baseAsset"], order["quoteAsset"]) == ("BTC", "USDT")
    assert (order["orderSide"], order["orderType"], order["status"]) == (side, "QUOTED",
                                                                         "FILLED")
    assert order["orderQuantityType"] == "BASE"
    assert order["rejectReason"] is None
    assert Decimal(order["quantity"]) == quantity
    assert Decimal(order["executedQuantity"]) == quantity
    assert Decimal(order["executedPrice"]) == price
    assert Decimal(order["executedCost"]) == cost
    [execution] = order["executions"]
    assert execution["instrumentId"] == INSTRUMENT
    assert execution["orderSide"] == side
    assert Decimal(execution["executedQuantity"]) == quantity
    assert Decimal(execution["executedPrice"]) == price
    assert Decimal(execution["executedCost"]) == cost
    assert_moment(execution["executedAt"], execution["executedAtDateTime"])
    assert_moment(order["createdAt"], order["createdAtDateTime"])
    assert_moment(order["updatedAt"], order["updatedAtDateTime"])
    assert order["createdAt"] <= quote["expireAt"]


async def _hedge_job(conn: asyncpg.Connection, order: dict[str, Any]) -> dict[str, Any]:
    """The order's one hedge job (its plan a JSON object, not a string inside jsonb)."""
    rows = await conn.fetch(
        "SELECT *, jsonb_typeof(plan) AS plan_type FROM hedge_job WHERE trade_order_id = $1",
        uuid.UUID(order["tradeOrderId"]))
    assert len(rows) == 1, rows
    job = dict(rows[0])
    assert job["plan_type"] == "object", job
    job["plan"] = json.loads(job["plan"])
    return job


async def _client_fills(client: Client, account: str) -> list[dict[str, Any]]:
    _, body = await get(client, TRANSACTIONS, {"address": f"client:{account}"})
    fills: list[dict[str, Any]] = assert_ok(body)
    return fills


# ---------------------------------------------------------------- the happy paths


async def test_request_accept_fills_books_the_ledger_and_leaves_a_hedge_job(
    client: Client, conn: asyncpg.Connection
) -> None:
    desk = await make_desk(client)
    quote = await request_quote(client, desk, orderSide="BUY", quantity="0.5")
    assert quote["dealerAccountId"] == desk.dealer
    assert quote["tradingAccountId"] == desk.client
    assert (quote["instrumentId"], quote["symbol"]) == (INSTRUMENT, "BTC/USDT")
    assert (quote["orderSide"], quote["status"]) == ("BUY", "OPEN")
    assert quote["price"] == quote["askPrice"]
    assert quote["bidPrice"] is None
    assert quote["bidQuoteQuantity"] is None
    assert Decimal(quote["quantity"]) == Decimal("0.5")
    price = Decimal(quote["price"])
    assert price > 0
    assert price % TICK == 0
    assert Decimal(quote["quoteQuantity"]) == price * Decimal("0.5")
    assert quote["askQuoteQuantity"] == quote["quoteQuantity"]
    assert_moment(quote["createdAt"], quote["createdAtDateTime"])
    assert_moment(quote["expireAt"], quote["expireAtDateTime"])
    assert quote["expireAt"] - quote["createdAt"] == 5000  # the default quoteTtlMs

    order = await accept(client, quote, idempotencyKey="first-fill")
    _assert_filled(order, quote, "BUY")

    # The quote is FILLED, for the client (trader token) and the desk alike.
    trader = auth(Role.TRADER, [uuid.UUID(desk.client)])
    for headers in (ADMIN, VIEWER, trader):
        status, body = await get(client, QUOTE_GET, {"quoteId": quote["quoteId"]}, headers)
        assert status == 200, body
        assert assert_ok(body) == {**quote, "status": "FILLED"}

    # The hedge job: the dealer buys back 0.5 on the LPs along the quote's plan.
    job = await _hedge_job(conn, order)
    assert (str(job["dealer_account_id"]), job["symbol"]) == (desk.dealer, "BTC/USDT")
    assert (job["side"], job["status"], job["quantity"]) == ("BUY", "PENDING", Decimal("0.5"))
    # stamped as the fill is written, after the accept came (the order's time)
    assert job["created_at"] >= await conn.fetchval(
        "SELECT created_at FROM trade_order WHERE trade_order_id = $1",
        uuid.UUID(order["tradeOrderId"]))
    plan = job["plan"]
    assert plan["hedgeSide"] == "BUY"
    legs = plan["legs"]
    assert legs
    assert sum(Decimal(leg["quantity"]) for leg in legs) == Decimal("0.5")
    assert {leg["tradingAccountId"] for leg in legs} <= set(desk.lps)
    assert all(Decimal(leg["quantity"]) % LOT == 0 for leg in legs)
    # The client pays at least the hedge's fee-adjusted worst price plus nothing negative.
    assert Decimal(plan["vwap"]) <= price

    # The ledger: client → dealer the quote asset (rounded up: the dealer receives it),
    # dealer → client the base, exact minor units.
    await outbox_drained(conn)
    [fill] = await _client_fills(client, desk.client)
    client_addr, dealer_addr = f"client:{desk.client}", f"dealer:{desk.dealer}"
    cost = price * Decimal("0.5")
    assert fill["postings"] == [
        {"source": client_addr, "destination": dealer_addr,
         "amount": _minor(cost, 6, ROUND_UP), "asset": "USDT/6",
         "quantity": f"{cost.quantize(Decimal('0.000001'), ROUND_UP)}"},
        {"source": dealer_addr, "destination": client_addr, "amount": "50000000",
         "asset": "BTC/8", "quantity": "0.50000000"},
    ]
    assert fill["metadata"]["kind"] == "client_fill"
    assert fill["metadata"]["clientSide"] == "BUY"
    assert Decimal(fill["metadata"]["price"]) == price
    assert fill["metadata"]["quoteId"] == quote["quoteId"]
    assert fill["metadata"]["orderId"] == order["tradeOrderId"]

    # order/list shows it, and so does quote/list.
    _, body = await get(client, ORDERS, {"tradeOrderId": order["tradeOrderId"]}, trader)
    assert assert_ok(body) == [order]
    _, body = await get(client, QUOTE_LIST, {"tradingAccountId": desk.client}, VIEWER)
    assert assert_ok(body) == [{**quote, "status": "FILLED"}]

    # The metrics count the quote, the accept and the fill.
    text = await (await client.get("/metrics")).text()
    for line in ('dealer_quotes_total{outcome="quoted",reason="ok"} 1.0',
                 'dealer_quote_accepts_total{outcome="filled",reason="ok"} 1.0',
                 'dealer_fills_total{side="BUY",symbol="BTC/USDT"} 1.0'):
        assert line in text, line
    assert "dealer_quote_duration_seconds_count 1.0" in text


async def test_the_quote_amount_the_order_cost_and_the_ledger_agree_when_they_round(
    client: Client, conn: asyncpg.Connection
) -> None:
    # 0.12345 BTC at a price in cents is an amount of 7 decimals, USDT books 6: the client
    # pays the amount rounded up and gets it rounded down, the same in all three places.
    desk = await make_desk(client)
    for side in ("BUY", "SELL"):
        quote = await request_quote(client, desk, orderSide=side, quantity="0.12345")
        price = Decimal(quote["price"])
        booked = _booked(price * Decimal("0.12345"), side)
        assert Decimal(quote["quoteQuantity"]) == booked
        order = await accept(client, quote)
        _assert_filled(order, quote, side)
        await outbox_drained(conn)
        fill = next(f for f in await _client_fills(client, desk.client)
                    if f["metadata"]["orderId"] == order["tradeOrderId"])
        [usdt] = [p for p in fill["postings"] if p["asset"] == "USDT/6"]
        assert Decimal(usdt["quantity"]) == booked
        # the entry names the hedge job the fill left
        job = await _hedge_job(conn, order)
        assert fill["metadata"]["jobId"] == str(job["job_id"])


async def test_a_two_way_quote_is_accepted_on_its_sell_side_at_the_bid(
    client: Client, conn: asyncpg.Connection
) -> None:
    desk = await make_desk(client)
    quote = await request_quote(client, desk, quantity="0.25")
    assert quote["orderSide"] is None
    assert quote["price"] is None
    assert quote["quoteQuantity"] is None
    bid, ask = Decimal(quote["bidPrice"]), Decimal(quote["askPrice"])
    assert 0 < bid < ask
    assert bid % TICK == 0
    assert ask % TICK == 0
    assert Decimal(quote["bidQuoteQuantity"]) == bid * Decimal("0.25")
    assert Decimal(quote["askQuoteQuantity"]) == ask * Decimal("0.25")

    order = await accept(client, quote, "SELL")
    _assert_filled(order, quote, "SELL")
    assert Decimal(order["executedPrice"]) == bid
    job = await _hedge_job(conn, order)
    assert (job["side"], job["quantity"]) == ("SELL", Decimal("0.25"))
    assert job["plan"]["hedgeSide"] == "SELL"
    assert sum(Decimal(leg["quantity"]) for leg in job["plan"]["legs"]) == Decimal("0.25")
    # Its other side is gone with the fill.
    await _refused(client, SUBMIT, accept_body(quote, "BUY"), 409, -160003)

    # The client sold: dealer → client the quote asset (rounded down: the dealer pays it),
    # client → dealer the base.
    await outbox_drained(conn)
    [fill] = await _client_fills(client, desk.client)
    client_addr, dealer_addr = f"client:{desk.client}", f"dealer:{desk.dealer}"
    assert [(p["source"], p["destination"], p["asset"], p["amount"])
            for p in fill["postings"]] == [
        (dealer_addr, client_addr, "USDT/6", _minor(bid * Decimal("0.25"), 6, ROUND_DOWN)),
        (client_addr, dealer_addr, "BTC/8", "25000000"),
    ]
    assert fill["metadata"]["clientSide"] == "SELL"


async def test_a_quote_for_an_amount_to_spend_solves_for_a_whole_lot_quantity(
    client: Client, conn: asyncpg.Connection
) -> None:
    desk = await make_desk(client)
    amount = Decimal("1000")
    quote = await request_quote(client, desk, instrumentId=INSTRUMENT, symbol=None, orderSide="BUY",
                         quoteQuantity=str(amount))
    price, quantity = Decimal(quote["price"]), Decimal(quote["quantity"])
    quote_quantity = Decimal(quote["quoteQuantity"])
    assert quantity > 0
    assert quantity % LOT == 0
    assert quote_quantity == _booked(price * quantity, "BUY")
    # The largest whole-lot quantity whose fee-adjusted hedge cost (the plan's VWAP) fits the
    # amount: one lot more would not (a lot costs well under two lots at the quote's price).
    plan = json.loads(await conn.fetchval("SELECT hedge_plan FROM quote WHERE quote_id = $1",
                                          uuid.UUID(quote["quoteId"])))
    hedge_cost = Decimal(plan["ask"]["vwap"]) * quantity
    assert amount - 2 * price * LOT < hedge_cost <= amount
    # The client's price adds the spread (10 bps by default) and at most a tick of rounding.
    assert quote_quantity <= amount * (1 + Decimal("0.001")) + TICK * quantity
    job_plan_quantity = quantity
    order = await accept(client, quote)
    _assert_filled(order, quote, "BUY")
    assert Decimal(order["executedCost"]) == quote_quantity
    job = await _hedge_job(conn, order)
    assert job["quantity"] == job_plan_quantity
    # A client SELL of an amount to receive solves the same way on the bids.
    sell = await request_quote(client, desk, orderSide="SELL", quoteQuantity="2500")
    assert Decimal(sell["quantity"]) % LOT == 0
    assert Decimal(sell["quoteQuantity"]) == _booked(
        Decimal(sell["price"]) * Decimal(sell["quantity"]), "SELL")
    assert Decimal(sell["price"]) < price


async def test_order_and_quote_lists_filter_sort_and_page(client: Client) -> None:
    desk = await make_desk(client, clients=2)
    first, second = desk.clients
    buy = await request_quote(client, desk, orderSide="BUY", quantity="0.1")
    two_way = await request_quote(client, desk, quantity="0.2")
    other = await request_quote(client, desk, tradingAccountId=second, orderSide="SELL",
                         quantity="0.3")
    open_quote = await request_quote(client, desk, orderSide="BUY", quantity="0.4")
    orders = [await accept(client, buy), await accept(client, two_way, "SELL"),
              await accept(client, other)]
    ids = [o["tradeOrderId"] for o in orders]
    times = [o["createdAt"] for o in orders]
    assert times == sorted(times)

    async def listed(params: dict[str, Any], headers: dict[str, str] = ADMIN
                     ) -> tuple[list[str], dict[str, Any]]:
        status, body = await get(client, ORDERS, params, headers)
        assert status == 200, (params, body)
        return [o["tradeOrderId"] for o in assert_ok(body)], body["pagination"]

    newest_first = ids[::-1]
    assert (await listed({}))[0] == newest_first
    assert (await listed({"ascending": "true"}))[0] == ids
    assert (await listed({"tradeOrderId": ids[1]}))[0] == [ids[1]]
    assert (await listed({"tradeOrderId": str(uuid.uuid4())}))[0] == []
    assert (await listed({"orderStatus": "FILLED"}))[0] == newest_first
    assert (await listed({"orderStatus": "CANCELLED"}))[0] == []
    assert (await listed({"orderStatus": ""}))[0] == newest_first
    assert (await listed({"tradingAccountId": first}))[0] == [ids[1], ids[0]]
    assert (await listed({"tradingAccountId": second}))[0] == [ids[2]]
    assert (await listed({"instrumentId": INSTRUMENT}))[0] == newest_first
    assert (await listed({"instrumentId": "FERMATA:ETH/USDT"}))[0] == []
    if times[0] < times[1]:
        # startTime is inclusive, endTime exclusive (unix ms of createdAt).
        assert (await listed({"startTime": times[1]}))[0] == [i for i, t in
                                                              zip(ids, times, strict=True)
                                                              if t >= times[1]][::-1]
        assert (await listed({"endTime": times[1], "ascending": "true"}))[0] == [ids[0]]
    assert (await listed({"startTime": times[0], "endTime": times[2] + 1,
                          "ascending": "true"}))[0] == ids
    assert (await listed({"startTime": times[2] + 1}))[0] == []
    page, pagination = await listed({"limit": 2})
    assert page == newest_first[:2]
    assert pagination == {"offset": 0, "limit": 2, "total": 3, "hasNext": True}
    page, pagination = await listed({"limit": 2, "offset": 2})
    assert page == newest_first[2:]
    assert pagination == {"offset": 2, "limit": 2, "total": 3, "hasNext": False}
    # A trader sees its own orders only; naming another client account is refused.
    trader = auth(Role.TRADER, [uuid.UUID(first)])
    assert (await listed({}, trader))[0] == [ids[1], ids[0]]
    assert (await listed({"tradingAccountId": first}, trader))[0] == [ids[1], ids[0]]
    status, body = await get(client, ORDERS, {"tradingAccountId": second}, trader)
    assert status == 403, body
    assert_error(body, -101005)
    assert (await listed({"tradeOrderId": ids[2]}, trader))[0] == []
    assert (await listed({}, VIEWER))[0] == newest_first
    assert (await listed({"tradingAccountId": second}, VIEWER))[0] == [ids[2]]
    for params in ({"orderStatus": "DONE"}, {"tradeOrderId": "x"}, {"startTime": "-1"},
                   {"ascending": "maybe"}, {"limit": "0"}):
        status, body = await get(client, ORDERS, params)
        assert_invalid(status, body)
    status, body = await get(client, ORDERS, {}, {})
    assert status == 401, body

    # quote/list: newest first, filtered by client, dealer and status; a trader sees its own.
    async def quotes(params: dict[str, Any], headers: dict[str, str] = ADMIN) -> list[str]:
        status, body = await get(client, QUOTE_LIST, params, headers)
        assert status == 200, (params, body)
        return [q["quoteId"] for q in assert_ok(body)]

    all_quotes = [q["quoteId"] for q in (open_quote, other, two_way, buy)]
    assert await quotes({}) == all_quotes
    assert await quotes({"dealerAccountId": desk.dealer}) == all_quotes
    assert await quotes({"dealerAccountId": str(uuid.uuid4())}) == []
    assert await quotes({"tradingAccountId": second}) == [other["quoteId"]]
    assert await quotes({"status": "OPEN"}) == [open_quote["quoteId"]]
    assert await quotes({"status": "FILLED"}) == all_quotes[1:]
    assert await quotes({"limit": 1, "offset": 1}) == [other["quoteId"]]
    assert await quotes({}, trader) == [open_quote["quoteId"], two_way["quoteId"],
                                        buy["quoteId"]]
    status, body = await get(client, QUOTE_LIST, {"tradingAccountId": second}, trader)
    assert status == 403, body
    assert_error(body, -101005)
    status, body = await get(client, QUOTE_GET, {"quoteId": other["quoteId"]}, trader)
    assert status == 403, body
    assert_error(body, -101005)
    status, body = await get(client, QUOTE_GET, {"quoteId": str(uuid.uuid4())})
    assert status == 404, body
    assert_error(body, -160001)
    status, body = await get(client, QUOTE_LIST, {"status": "GONE"})
    assert_invalid(status, body, "status")


# ---------------------------------------------------------------- accept refusals


class ManualClock:
    def __init__(self, start: dt.datetime) -> None:
        self.now = start

    def __call__(self) -> dt.datetime:
        return self.now


async def test_an_accept_at_or_after_expire_at_is_refused_and_writes_nothing(
    settings: Settings, secrets: DaemonSecrets, conn: asyncpg.Connection,
    aiohttp_client: Callable[[web.Application], Awaitable[Client]],
) -> None:
    clock = ManualClock(dt.datetime.now(dt.UTC).replace(microsecond=0))
    app = create_app(settings, secrets, clock=clock)
    client = await aiohttp_client(app)
    desk = await make_desk(client, quoteTtlMs=500)
    late = await request_quote(client, desk, orderSide="BUY", quantity="0.1")
    in_time = await request_quote(client, desk, orderSide="SELL", quantity="0.1")
    assert late["expireAt"] - late["createdAt"] == 500
    clock.now += dt.timedelta(milliseconds=499)
    _assert_filled(await accept(client, in_time), in_time, "SELL")
    clock.now += dt.timedelta(milliseconds=1)
    before = await _state(conn)
    body = await _refused(client, SUBMIT, accept_body(late), 400, -160002)
    assert "expired" in body["error"].lower()
    assert await _state(conn) == before

    # The expiry job marks it EXPIRED once its grace after expireAt is over (reads say
    # EXPIRED already); accepting it stays refused.
    clock.now += dt.timedelta(seconds=5)
    app[SCHEDULER].get_job("quote_expiry").modify(next_run_time=dt.datetime.now(dt.UTC))

    async def expired() -> bool:
        status = await conn.fetchval("SELECT status FROM quote WHERE quote_id = $1",
                                     uuid.UUID(late["quoteId"]))
        return bool(status == "EXPIRED")

    await eventually(expired, within_s=3.0)
    _, payload = await get(client, QUOTE_LIST, {"status": "EXPIRED"})
    assert [q["quoteId"] for q in assert_ok(payload)] == [late["quoteId"]]
    text = await (await client.get("/metrics")).text()
    assert "dealer_quotes_expired_total 1.0" in text  # the late quote; the other was filled
    await _refused(client, SUBMIT, accept_body(late), 400, -160002)
    assert (await _state(conn))[1] == before[1]


async def test_accept_refusals_answer_their_errno_and_write_nothing(
    client: Client, conn: asyncpg.Connection
) -> None:
    desk = await make_desk(client, clients=2)
    owner, stranger = desk.clients
    quote = await request_quote(client, desk, orderSide="BUY", quantity="0.5")
    sell = await request_quote(client, desk, orderSide="SELL", quantity="0.5")
    owner_token = auth(Role.TRADER, [uuid.UUID(owner)])
    stranger_token = auth(Role.TRADER, [uuid.UUID(stranger)])
    before = await _state(conn)
    unknown = str(uuid.uuid4())
    for body, status_code, errno, headers in (
        (accept_body(quote, quoteId=unknown), 404, -160001, ADMIN),
        (accept_body(quote, quoteId=unknown), 404, -160001, owner_token),
        # another client: the desk on its behalf, or its own token
        (accept_body(quote, tradingAccountId=stranger), 403, -160005, ADMIN),
        (accept_body(quote, tradingAccountId=stranger), 403, -160005, stranger_token),
        # the owner's quote, but not what was quoted
        (accept_body(quote, quantity="0.4"), 400, -160004, owner_token),
        (accept_body(quote, quantity="0.50001"), 400, -160004, ADMIN),
        (accept_body(quote, "SELL"), 400, -160004, ADMIN),
        (accept_body(sell, "BUY"), 400, -160004, ADMIN),
        (accept_body(quote, instrumentId="FERMATA:ETH/USDT"), 400, -160004, ADMIN),
        (accept_body(quote, instrumentId="BINANCE:BTC/USDT"), 400, -160004, ADMIN),
        (accept_body(quote, instrumentId="BTC/USDT"), 400, -160004, ADMIN),
        # only QUOTED orders with their quoteId
        (accept_body(quote, orderType="MARKET"), 400, -160012, ADMIN),
        (accept_body(quote, orderType="LIMIT", limitPrice="1"), 400, -160012, ADMIN),
        (accept_body(quote, orderType=""), 400, -160012, ADMIN),
        ({k: v for k, v in accept_body(quote).items() if k != "quoteId"}, 400, -160012,
         ADMIN),
        # a trader token that does not list the account
        (accept_body(quote), 403, -101005, stranger_token),
        (accept_body(quote), 403, -101005, auth(Role.TRADER, [])),
        # roles
        (accept_body(quote), 403, -101004, VIEWER),
        (accept_body(quote), 401, -101001, {}),
    ):
        await _refused(client, SUBMIT, body, status_code, errno, headers)
    assert await _state(conn) == before

    order = await accept(client, quote, headers=owner_token)
    _assert_filled(order, quote, "BUY")
    after_fill = await _state(conn)
    assert after_fill[1] == {**before[1], "trade_order": 1, "trade_execution": 1,
                             "hedge_job": 1, "ledger_outbox": before[1]["ledger_outbox"] + 1}
    # Accepting it again, with or without a fresh idempotency key: already filled.
    for headers, fields in ((owner_token, {}), (ADMIN, {"idempotencyKey": "again"}),
                            (ADMIN, {"clientOrderId": "again"})):
        await _refused(client, SUBMIT, accept_body(quote, **fields), 409, -160003, headers)
    assert await _state(conn) == after_fill
    text = await (await client.get("/metrics")).text()
    for line in ('dealer_quote_accepts_total{outcome="refused",reason="QUOTE_ALREADY_FILLED"} 3.0',
                 'dealer_quote_accepts_total{outcome="refused",reason="QUOTE_MISMATCH"} 7.0',
                 'dealer_quote_accepts_total{outcome="refused",reason="QUOTE_NOT_FOUND"} 2.0'):
        assert line in text, line


async def test_a_client_disabled_since_its_quote_cannot_accept_it(
    client: Client, conn: asyncpg.Connection
) -> None:
    desk = await make_desk(client, clients=2, quoteTtlMs=60_000)
    owner = desk.clients[0]
    quote = await request_quote(client, desk, orderSide="BUY", quantity="0.1")
    status, body = await post(client, "/api/v3/tradingAccount/disable",
                              {"tradingAccountId": owner})
    assert status == 200, body
    before = await _state(conn)
    for headers in (ADMIN, auth(Role.TRADER, [uuid.UUID(owner)])):
        payload = await _refused(client, SUBMIT, accept_body(quote), 400, -130004, headers)
        assert "INACTIVE" in payload["error"]
    # keyed too: no order of its keys exists to answer
    await _refused(client, SUBMIT, accept_body(quote, idempotencyKey="k"), 400, -130004)
    assert await _state(conn) == before
    # another client's accept of it is refused as foreign, whatever the owner's status
    await _refused(client, SUBMIT, accept_body(quote, tradingAccountId=desk.clients[-1]),
                   403, -160005)
    status, body = await post(client, "/api/v3/tradingAccount/enable",
                              {"tradingAccountId": owner})
    assert status == 200, body
    _assert_filled(await accept(client, quote), quote, "BUY")


async def test_idempotency_key_and_client_order_id_replay_the_same_order(
    client: Client, conn: asyncpg.Connection
) -> None:
    desk = await make_desk(client)
    first = await request_quote(client, desk, quantity="0.1")
    second = await request_quote(client, desk, quantity="0.1")
    third = await request_quote(client, desk, orderSide="BUY", quantity="0.1")
    order = await accept(client, first, "BUY", idempotencyKey="key-1")
    after = await _state(conn)
    # A retry with the same key answers the same order and writes nothing.
    for _ in range(2):
        assert await accept(client, first, "BUY", idempotencyKey="key-1") == order
    assert await _state(conn) == after
    assert await conn.fetchval("SELECT count(*) FROM trade_order WHERE idempotency_key = $1",
                               "key-1") == 1
    # The same quantity written otherwise is the same request.
    assert await accept(client, first, "BUY", idempotencyKey="key-1", quantity="0.10") == order
    # The same key for another quote, the other side of the same quote, another quantity or
    # instrument, or with a client order id the order does not have: a conflict.
    for body in (accept_body(second, "BUY", idempotencyKey="key-1"),
                 accept_body(first, "SELL", idempotencyKey="key-1"),
                 accept_body(first, "BUY", idempotencyKey="key-1", quantity="0.2"),
                 accept_body(first, "BUY", idempotencyKey="key-1",
                             instrumentId="FERMATA:ETH/USDT"),
                 accept_body(first, "BUY", idempotencyKey="key-1", clientOrderId="new-id")):
        await _refused(client, SUBMIT, body, 409, -160013)
    assert await _state(conn) == after

    # clientOrderId likewise.
    by_client_id = await accept(client, second, "SELL", clientOrderId="mine-1")
    _assert_filled(by_client_id, second, "SELL")
    after = await _state(conn)
    assert await accept(client, second, "SELL", clientOrderId="mine-1") == by_client_id
    for body in (accept_body(third, clientOrderId="mine-1"),
                 accept_body(third, clientOrderId="mine-1", idempotencyKey="key-3")):
        await _refused(client, SUBMIT, body, 409, -160013)
    assert await _state(conn) == after
    # A key known for one order and a client id known for another: a conflict too.
    await _refused(client, SUBMIT, accept_body(first, "BUY", idempotencyKey="key-1",
                                                 clientOrderId="mine-1"), 409, -160013)
    assert await _state(conn) == after
    # Fresh keys on the third quote fill it.
    _assert_filled(await accept(client, third, idempotencyKey="key-3", clientOrderId="mine-3"),
                   third, "BUY")
    assert await conn.fetchval("SELECT count(*) FROM trade_order") == 3
    text = await (await client.get("/metrics")).text()
    assert 'dealer_quote_accepts_total{outcome="replayed",reason="ok"} 4.0' in text


async def _listed_orders(client: Client, headers: dict[str, str] = ADMIN
                         ) -> dict[str, dict[str, Any]]:
    """order/list's orders by tradeOrderId."""
    status, body = await get(client, ORDERS, {}, headers)
    assert status == 200, body
    return {o["tradeOrderId"]: o for o in assert_ok(body)}


async def test_an_order_answers_the_time_in_force_it_was_submitted_with(
    client: Client, conn: asyncpg.Connection
) -> None:
    """IOC is kept and answered as IOC; FOK, empty and omitted are FOK. Either fills the quote
    whole, as the same TradeOrder on submit, on a keyed replay and in order/list."""
    desk = await make_desk(client)
    quotes = [await request_quote(client, desk, orderSide="BUY", quantity="0.1")
              for _ in range(4)]
    sent: list[dict[str, Any]] = [{"timeInForce": "IOC"}, {"timeInForce": "FOK"},
                                  {"timeInForce": ""}, {}]
    orders = [await accept(client, quote, idempotencyKey=f"tif-{n}", **fields)
              for n, (quote, fields) in enumerate(zip(quotes, sent, strict=True))]
    assert [o["timeInForce"] for o in orders] == ["IOC", "FOK", "FOK", "FOK"]
    for quote, order in zip(quotes, orders, strict=True):
        _assert_filled(order, quote, "BUY")
    after = await _state(conn)
    for n, (quote, fields, order) in enumerate(zip(quotes, sent, orders, strict=True)):
        assert await accept(client, quote, idempotencyKey=f"tif-{n}", **fields) == order
    assert await _state(conn) == after
    trader = auth(Role.TRADER, [uuid.UUID(desk.client)])
    for headers in (ADMIN, trader):
        assert await _listed_orders(client, headers) == {o["tradeOrderId"]: o for o in orders}
    status, body = await get(client, ORDERS, {"tradeOrderId": orders[0]["tradeOrderId"]})
    assert status == 200, body
    assert assert_ok(body) == [orders[0]]


async def test_a_keyed_retry_with_another_time_in_force_conflicts(
    client: Client, conn: asyncpg.Connection
) -> None:
    """A retry repeats its request: the same key with another time in force is -160013, writes
    nothing, and leaves the order as it was; FOK, empty and omitted are one time in force."""
    desk = await make_desk(client)
    ioc_quote = await request_quote(client, desk, orderSide="BUY", quantity="0.1")
    fok_quote = await request_quote(client, desk, orderSide="SELL", quantity="0.1")
    ioc = await accept(client, ioc_quote, idempotencyKey="ioc", timeInForce="IOC")
    fok = await accept(client, fok_quote, clientOrderId="fok")
    after = await _state(conn)
    for fields in ({"timeInForce": "FOK"}, {"timeInForce": ""}, {}):
        await _refused(client, SUBMIT, accept_body(ioc_quote, idempotencyKey="ioc", **fields),
                       409, -160013)
    await _refused(client, SUBMIT, accept_body(fok_quote, clientOrderId="fok",
                                               timeInForce="IOC"), 409, -160013)
    assert await _state(conn) == after
    for fields in ({"timeInForce": "FOK"}, {"timeInForce": ""}, {}):
        assert await accept(client, fok_quote, clientOrderId="fok", **fields) == fok
    assert await accept(client, ioc_quote, idempotencyKey="ioc", timeInForce="IOC") == ioc
    assert await _state(conn) == after
    listed = await _listed_orders(client)
    assert [listed[o["tradeOrderId"]]["timeInForce"] for o in (ioc, fok)] == ["IOC", "FOK"]


# ---------------------------------------------------------------- quote refusals


async def test_quote_refusals_answer_their_errno_and_write_nothing(
    client: Client, conn: asyncpg.Connection
) -> None:
    desk = await make_desk(client, clients=2, maxQuoteNotional="100000",
                       maxUnhedgedExposure={"BTC": "0.1"})
    owner, stranger = desk.clients
    small = await request_quote(client, desk, orderSide="BUY", quantity="0.01")
    price = Decimal(small["price"])
    assert price < Decimal("90000"), "1 BTC must fit the 100000 notional limit"
    too_big = (Decimal("150000") / price).quantize(LOT, ROUND_UP)
    _, body = await post(client, "/api/v3/fermata/dealer/create", {"symbols": ["BTC/USDT"]})
    unlinked = assert_ok(body)["dealerAccountId"]

    async def refusals(cases: list[tuple[dict[str, Any], int, int]],
                       headers: dict[str, str] = ADMIN) -> None:
        before = await _state(conn)
        for fields, status_code, errno in cases:
            await _refused(client, QUOTE, quote_body(desk, **fields), status_code, errno,
                           headers)
        assert await _state(conn) == before

    await refusals([
        ({"symbol": "ETH/USDT", "quantity": "1"}, 400, -130009),
        ({"instrumentId": "FERMATA:SOL/USDT", "symbol": None, "quantity": "1"}, 400, -130009),
        ({"dealerAccountId": unlinked, "quantity": "0.1"}, 400, -160006),
        ({"dealerAccountId": str(uuid.uuid4()), "quantity": "0.1"}, 404, -130001),
        ({"tradingAccountId": str(uuid.uuid4()), "quantity": "0.1"}, 404, -130002),
        ({"tradingAccountId": desk.lps[0], "quantity": "0.1"}, 404, -130002),
        ({"tradingAccountId": desk.dealer, "quantity": "0.1"}, 404, -130002),
        ({"orderSide": "BUY", "quantity": "100000"}, 400, -160009),
        ({"quantity": "100000"}, 400, -160009),
        ({"orderSide": "SELL", "quantity": "0.00001"}, 400, -160010),  # below min quantity
        ({"orderSide": "BUY", "quantity": "0.0001"}, 400, -160010),  # below min notional
        ({"orderSide": "BUY", "quantity": str(too_big)}, 400, -160010),  # above maxQuoteNotional
        ({"orderSide": "BUY", "quoteQuantity": "5"}, 400, -160010),
        ({"orderSide": "BUY", "quantity": "1"}, 400, -160011),
        ({"orderSide": "SELL", "quantity": "1"}, 400, -160011),
        ({"quantity": "0.2"}, 400, -160011),
    ])
    status, payload = await post(client, QUOTE, quote_body(desk, quantity="100000",
                                                             orderSide="BUY"))
    assert Decimal(payload["details"]["metadata"]["availableQuantity"]) < 100000
    # Trader tokens: only for the accounts they list; viewers and anonymous callers: never.
    await refusals([({"quantity": "0.1"}, 403, -101005)],
                   auth(Role.TRADER, [uuid.UUID(stranger)]))
    await refusals([({"quantity": "0.1"}, 403, -101004)], VIEWER)
    await refusals([({"quantity": "0.1"}, 401, -101001)], {})
    await request_quote(client, desk, auth(Role.TRADER, [uuid.UUID(owner)]), orderSide="SELL",
                 quantity="0.05")

    # A paused dealer does not quote; resumed, it does again.
    status, body = await post(client, "/api/v3/fermata/dealer/pause",
                              {"dealerAccountId": desk.dealer, "reason": "maintenance"})
    assert status == 200, body
    await refusals([({"quantity": "0.05"}, 400, -160007),
                    ({"quantity": "0.05", "symbol": "ETH/USDT"}, 400, -160007)])
    status, body = await post(client, "/api/v3/fermata/dealer/resume",
                              {"dealerAccountId": desk.dealer})
    assert status == 200, body
    await request_quote(client, desk, quantity="0.05")

    # Without a fresh LP book (every LP account disabled): retry later.
    for lp in desk.lps:
        status, body = await post(client, "/api/v3/tradingAccount/disable",
                                  {"tradingAccountId": lp})
        assert status == 200, body
    await refusals([({"quantity": "0.05"}, 503, -160008),
                    ({"orderSide": "BUY", "quoteQuantity": "100"}, 503, -160008)])

    text = await (await client.get("/metrics")).text()
    for reason, count in (("BOOKS_STALE", 2), ("DEALER_PAUSED", 2), ("EXPOSURE_LIMIT", 3),
                          ("INSUFFICIENT_DEPTH", 3), ("SIZE_OUT_OF_LIMITS", 4),
                          ("ACCOUNT_FORBIDDEN", 1), ("NO_LINKED_LP", 1)):
        line = f'dealer_quotes_total{{outcome="refused",reason="{reason}"}} {float(count)}'
        assert line in text, line


# ---------------------------------------------------------------- validation


async def test_malformed_requests_are_refused_before_anything_else(
    client: Client, conn: asyncpg.Connection
) -> None:
    desk = await make_desk(client)
    quote = await request_quote(client, desk, orderSide="BUY", quantity="0.1")
    before = await _state(conn)
    quote_cases: list[tuple[dict[str, Any], str | None]] = [
        # rules over several fields name those fields
        ({"instrumentId": INSTRUMENT, "quantity": "1"}, "instrumentId"),  # both
        ({"symbol": None, "quantity": "1"}, "symbol"),  # neither
        ({"orderSide": "BUY"}, "quantity"),  # neither quantity nor quoteQuantity
        ({"orderSide": "BUY", "quantity": "1", "quoteQuantity": "100"}, "quoteQuantity"),
        ({"quantity": "-1"}, "quantity"),
        ({"quantity": "0"}, "quantity"),
        ({"orderSide": "BUY", "quoteQuantity": "0.0"}, "quoteQuantity"),
        ({"quoteQuantity": "100"}, "orderSide"),  # two-way quotes need a base quantity
        ({"quantity": 1}, "quantity"),
        ({"quantity": "1e3"}, "quantity"),
        ({"quantity": "abc"}, "quantity"),
        ({"orderSide": "HOLD", "quantity": "1"}, "orderSide"),
        ({"orderSide": "UNKNOWN", "quantity": "1"}, "orderSide"),
        ({"symbol": "btc/usdt", "quantity": "1"}, "symbol"),
        ({"symbol": "BTCUSDT", "quantity": "1"}, "symbol"),
        ({"symbol": None, "instrumentId": "BINANCE:BTC/USDT", "quantity": "1"},
         "instrumentId"),
        ({"dealerAccountId": "desk", "quantity": "1"}, "dealerAccountId"),
        ({"dealerAccountId": None, "quantity": "1"}, "dealerAccountId"),
        ({"tradingAccountId": None, "quantity": "1"}, "tradingAccountId"),
        ({"tradingAccountId": 7, "quantity": "1"}, "tradingAccountId"),
        # digits of other scripts: the pattern's \d is 0-9, as JSON Schema reads it
        ({"quantity": "\u0660.\u0661"}, "quantity"),
        ({"quantity": "\uff10.\uff11"}, "quantity"),
        ({"orderSide": "BUY", "quoteQuantity": "\u0661\u0660\u0660"}, "quoteQuantity"),
        # PostgreSQL text cannot hold NUL: refused before any query
        ({"symbol": None, "instrumentId": "FERMATA:BTC/USDT\u0000"}, None),
    ]
    for fields, field in quote_cases:
        status, body = await post(client, QUOTE, quote_body(desk, **fields))
        assert_invalid(status, body, field)
    submit_cases: list[tuple[dict[str, Any], str]] = [
        ({"quantity": None}, "quantity"),
        ({"quantity": 0.1}, "quantity"),
        ({"orderSide": None}, "orderSide"),
        ({"orderSide": "buy"}, "orderSide"),
        ({"orderType": None}, "orderType"),
        ({"orderType": "BEST"}, "orderType"),
        ({"quoteId": "q-1"}, "quoteId"),
        ({"tradingAccountId": None}, "tradingAccountId"),
        ({"instrumentId": None}, "instrumentId"),
        ({"idempotencyKey": ""}, "idempotencyKey"),
        ({"idempotencyKey": "k" * 129}, "idempotencyKey"),
        ({"idempotencyKey": "with space"}, "idempotencyKey"),
        ({"clientOrderId": 12}, "clientOrderId"),
        ({"quantity": "\u0660.\u0661"}, "quantity"),
        ({"timeInForce": "XYZ"}, "timeInForce"),
        ({"quantityRounding": "whatever"}, "quantityRounding"),
        # fields a QUOTED order cannot honour are refused, not ignored
        ({"quantity": "0"}, "quantity"),
        ({"quantity": "-0.1"}, "quantity"),
        ({"limitPrice": "1"}, "limitPrice"),
        ({"stopPrice": "1"}, "stopPrice"),
        ({"positionId": str(uuid.uuid4())}, "positionId"),
        ({"expireAt": 1632933600000}, "expireAt"),
        ({"quantityType": "QUOTE"}, "quantityType"),
        ({"timeInForce": "GTC"}, "timeInForce"),
        ({"leverage": 10}, "leverage"),
        ({"instrumentId": "FERMATA:BTC/USDT\u0000"}, None),
    ]
    for fields, field in submit_cases:
        status, body = await post(client, SUBMIT, accept_body(quote, **fields))
        assert_invalid(status, body, field)
    assert await _state(conn) == before
    # A refusal names the quote's values, never what was sent (it could be a secret).
    status, body = await post(client, SUBMIT, accept_body(
        quote, instrumentId="secret-looking-value", quantity="0.123"))
    assert status == 400, body
    assert "secret-looking" not in json.dumps(body), body
    assert_error(body, -160004)
    status, body = await post(client, SUBMIT, accept_body(quote, quantity="0.123"))
    assert "0.123" not in json.dumps(body), body
    assert "quantity 0.1" in body["error"], body
    # Query strings: a NUL, or a parameter given twice, is refused before any query.
    for params in ({"instrumentId": "FERMATA:\x00"}, {"instrumentId": "a\x00b"},
                   [("limit", "5"), ("limit", "7")],
                   [("orderStatus", "FILLED"), ("orderStatus", "REJECTED")]):
        status, body = await get(client, ORDERS, params)
        assert_invalid(status, body)
    status, body = await get(client, QUOTE_LIST, [("status", "OPEN"), ("status", "FILLED")])
    assert_invalid(status, body, "status")
    # A window with no time in it (endTime is exclusive) is refused, naming both ends.
    for window in ({"startTime": "2", "endTime": "1"}, {"startTime": "1", "endTime": "1"}):
        status, body = await get(client, ORDERS, window)
        assert_invalid(status, body, "startTime")
        assert_invalid(status, body, "endTime")
    status, body = await get(client, ORDERS, {"startTime": "1", "endTime": "2"})
    assert status == 200, body
    # instrumentId: empty is no filter (as orderStatus); one not shaped FERMATA:BASE/QUOTE is
    # refused rather than matching nothing
    status, body = await get(client, ORDERS, {"instrumentId": ""})
    assert status == 200, body
    for malformed in ("btcusdt", "BTC/USDT", "BINANCE:BTC/USDT", "FERMATA:btc/usdt"):
        status, body = await get(client, ORDERS, {"instrumentId": malformed})
        assert_invalid(status, body, "instrumentId")
        assert [f["field"] for f in body["details"]["fields"]] == ["instrumentId"], body
        assert malformed not in json.dumps(body), body
    assert await _state(conn) == before
    # Still OPEN and acceptable after all that, with the fields a QUOTED order may carry.
    _assert_filled(await accept(client, quote, timeInForce="FOK", quantityType="BASE",
                                quantityRounding="DOWN", leverage=0, awaitClosed=True),
                   quote, "BUY")


async def test_stored_quotes_read_back_as_they_were_answered(
    client: Client, conn: asyncpg.Connection
) -> None:
    # Quotes are written in groups as one JSON parameter: every value must land exactly.
    desk = await make_desk(client)
    answered = [await request_quote(client, desk, orderSide="BUY", quantity="0.1"),
                await request_quote(client, desk, orderSide="SELL", quantity="0.12345"),
                await request_quote(client, desk, quantity="0.05")]
    for quote in answered:
        status, body = await get(client, QUOTE_GET, {"quoteId": quote["quoteId"]})
        assert status == 200, body
        assert body["data"] == quote
        row = await conn.fetchrow(
            "SELECT quantity, bid_price, ask_price, hedge_plan, created_at, expire_at "
            "FROM quote WHERE quote_id = $1", uuid.UUID(quote["quoteId"]))
        assert row["created_at"].tzinfo is not None
        assert int(row["created_at"].timestamp() * 1000) == quote["createdAt"]
        assert int(row["expire_at"].timestamp() * 1000) == quote["expireAt"]
        assert row["quantity"] == Decimal(quote["quantity"])
        plan = json.loads(row["hedge_plan"]) if isinstance(row["hedge_plan"], str) \
            else row["hedge_plan"]
        for side, price in (("bid", quote["bidPrice"]), ("ask", quote["askPrice"])):
            assert (side in plan) == (price is not None)
            if price is not None:
                column = row[f"{side}_price"]
                assert column == Decimal(price)
                assert Decimal(plan[side]["quantity"]) == row["quantity"]


async def test_the_expiry_reads_the_quotes_expired_since_its_last_run_and_all_of_them_now_and_then(
    settings: Settings, secrets: DaemonSecrets, conn: asyncpg.Connection,
    aiohttp_client: Callable[[web.Application], Awaitable[Client]],
) -> None:
    from dealer.services.rfq import QuoteExpiry

    start = dt.datetime.now(dt.UTC).replace(microsecond=0)
    clock = ManualClock(start)
    client = await aiohttp_client(create_app(settings, secrets, clock=clock))
    desk = await make_desk(client, quoteTtlMs=1000)
    first = await request_quote(client, desk, orderSide="BUY", quantity="0.1")
    second = await request_quote(client, desk, orderSide="SELL", quantity="0.1")

    async def statuses() -> dict[str, str]:
        rows = await conn.fetch("SELECT quote_id::text, status FROM quote")
        return {r["quote_id"]: r["status"] for r in rows}

    expiry = QuoteExpiry(margin=dt.timedelta(seconds=2), full_every=dt.timedelta(minutes=1),
                         grace=dt.timedelta(0))
    assert await expiry.run(conn, start) == 0  # the first run reads all; none is due
    # The second quote as a late commit would leave it: expired before the last run's margin.
    await conn.execute("UPDATE quote SET expire_at = $1 WHERE quote_id = $2",
                       start - dt.timedelta(seconds=3), uuid.UUID(second["quoteId"]))
    assert await expiry.run(conn, start + dt.timedelta(seconds=5)) == 1
    assert await statuses() == {first["quoteId"]: "EXPIRED", second["quoteId"]: "OPEN"}
    assert await expiry.run(conn, start + dt.timedelta(seconds=30)) == 0
    # A minute after the last full run, a run reads all the open quotes again.
    assert await expiry.run(conn, start + dt.timedelta(seconds=61)) == 1
    assert await statuses() == {first["quoteId"]: "EXPIRED", second["quoteId"]: "EXPIRED"}


async def test_every_quote_request_and_accept_is_counted_once_from_zero(
        client: Client) -> None:
    """The series the accept ratio divides exist at 0 before the first quote, and a request
    refused before its handler (token, role, body) is counted like one refused inside it."""
    text = await (await client.get("/metrics")).text()
    for line in ('dealer_quotes_total{outcome="quoted",reason="ok"} 0.0',
                 'dealer_quote_accepts_total{outcome="filled",reason="ok"} 0.0',
                 'dealer_quote_accepts_total{outcome="rejected",reason="last_look"} 0.0'):
        assert line in text, line
    desk = await make_desk(client)

    async def fill_series() -> bool | None:
        text = await (await client.get("/metrics")).text()
        return ('dealer_fills_total{side="SELL",symbol="BTC/USDT"} 0.0' in text
                and 'dealer_fill_notional_total{quote_asset="USDT"} 0.0' in text) or None

    assert await eventually(fill_series, within_s=5)  # the subscription refresh, no quote yet
    quote = await request_quote(client, desk, orderSide="BUY", quantity="0.1")
    for path, send, status_code, errno in (
        (QUOTE, lambda: post(client, QUOTE, quote_body(desk, orderSide="BUY")), 400, -100001),
        (QUOTE, lambda: post_raw(client, QUOTE, b"{oops"), 400, -100002),
        (QUOTE, lambda: post(client, QUOTE, quote_body(desk, quantity="0.1"), {}), 401,
         -101001),
        (QUOTE, lambda: post(client, QUOTE, quote_body(desk, quantity="0.1"), VIEWER), 403,
         -101004),
        (SUBMIT, lambda: post(client, SUBMIT, accept_body(quote, quantity="abc")), 400,
         -100001),
        (SUBMIT, lambda: post(client, SUBMIT, accept_body(quote, quantity="-1")), 400,
         -100001),
        (SUBMIT, lambda: post(client, SUBMIT, accept_body(quote), {}), 401, -101001),
        (SUBMIT, lambda: post(client, SUBMIT, accept_body(quote), VIEWER), 403, -101004),
    ):
        status, payload = await send()
        assert status == status_code, (path, payload)
        assert_error(payload, errno)
    text = await (await client.get("/metrics")).text()
    for line in ('dealer_quotes_total{outcome="quoted",reason="ok"} 1.0',
                 'dealer_quotes_total{outcome="refused",reason="INVALID_REQUEST"} 1.0',
                 'dealer_quotes_total{outcome="refused",reason="MALFORMED_JSON"} 1.0',
                 'dealer_quotes_total{outcome="refused",reason="UNAUTHENTICATED"} 1.0',
                 'dealer_quotes_total{outcome="refused",reason="FORBIDDEN"} 1.0',
                 'dealer_quote_accepts_total{outcome="refused",reason="INVALID_REQUEST"} 2.0',
                 'dealer_quote_accepts_total{outcome="refused",reason="UNAUTHENTICATED"} 1.0',
                 'dealer_quote_accepts_total{outcome="refused",reason="FORBIDDEN"} 1.0'):
        assert line in text, line
