"""A quote prices only liquidity its hedge can use: LPs linked and not draining, on venues where
the instrument is synced; last look re-sweeps the same LPs."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal
from typing import Any

import asyncpg
from aiohttp import web

from dealer.appkeys import CLOCK, MARKET_DATA, SCHEDULER, VENUES
from tests.conftest import assert_error, assert_ok
from tests.desk import accept_buy, buy_quote, lp_desk
from tests.helpers import Client, eventually, post


async def _pin_asks(app: web.Application, venue: str, factor: str) -> Decimal:
    """The venue's book, both sides (a crossed book is refused), times `factor` from now on;
    answers its new best ask."""
    paper = app[VENUES].market_data(venue)
    current = await paper.order_book("BTC/USDT", 50)
    bids, asks = ([((price * Decimal(factor)).quantize(Decimal("0.01")), quantity)
                   for price, quantity in side] for side in (current.bids, current.asks))
    paper.pin_book("BTC/USDT", bids, asks)  # type: ignore[attr-defined]
    return asks[0][0]


async def _ingested(app: web.Application, dealer: str, best_asks: dict[str, Decimal]) -> None:
    """Wait until the daemon's fresh books show these best asks, by venue."""
    async def shown() -> bool:
        now_ms = int(app[CLOCK]().timestamp() * 1000)
        books = app[MARKET_DATA].fresh_books(uuid.UUID(dealer), "BTC/USDT", now_ms)
        seen = {lp.venue: book.asks[0][0] for lp, book in books if book.asks}
        return all(seen.get(venue) == best for venue, best in best_asks.items())

    await eventually(shown, within_s=3)


async def _plan_sources(conn: asyncpg.Connection, quote: dict[str, Any]) -> set[str]:
    plan = await conn.fetchval("SELECT hedge_plan FROM quote WHERE quote_id = $1",
                               uuid.UUID(quote["quoteId"]))
    plan = json.loads(plan) if isinstance(plan, str) else plan
    return {leg["tradingAccountId"] for leg in plan["ask"]["legs"]}


async def _lp_of(conn: asyncpg.Connection, dealer: str, venue: str) -> uuid.UUID:
    lp: uuid.UUID = await conn.fetchval(
        """SELECT l.trading_account_id FROM dealer_link l
           JOIN trading_account a ON a.trading_account_id = l.trading_account_id
           WHERE l.dealer_account_id = $1 AND a.venue = $2""", uuid.UUID(dealer), venue)
    return lp


async def test_a_venue_without_the_instrument_prices_no_quote(
    app: web.Application, client: Client, conn: asyncpg.Connection,
) -> None:
    dealer, customer, headers = await lp_desk(client, "1000")
    cheap = await _pin_asks(app, "BINANCE", "0.9")  # far below the other LPs
    await _ingested(app, dealer, {"BINANCE": cheap})
    binance = await _lp_of(conn, dealer, "BINANCE")
    priced = await buy_quote(client, dealer, customer, headers)
    assert str(binance) in await _plan_sources(conn, priced)
    assert Decimal(priced["price"]) < cheap * Decimal("1.01")

    # BINANCE stops listing the instrument: its book is no hedge for a quote any more
    await conn.execute("UPDATE instrument SET enabled = false "
                       "WHERE venue = 'BINANCE' AND symbol = 'BTC/USDT'")
    quote = await buy_quote(client, dealer, customer, headers)
    assert str(binance) not in await _plan_sources(conn, quote)
    assert Decimal(quote["price"]) > cheap * Decimal("1.05")
    status, body = await accept_buy(client, customer, quote, headers)
    assert status == 200, body
    assert assert_ok(body)[0]["status"] == "FILLED"


async def test_last_look_leaves_out_a_draining_lp_as_the_quote_did(
    app: web.Application, client: Client, conn: asyncpg.Connection,
) -> None:
    # With no hedge of it in flight, the drain job would unlink the LP at its next run: this
    # test is about a draining LP still linked.
    app[SCHEDULER].pause_job("lp_drain")
    dealer, customer, headers = await lp_desk(client, "50")
    binance = await _lp_of(conn, dealer, "BINANCE")
    await conn.execute("UPDATE dealer_link SET draining = true WHERE trading_account_id = $1",
                       binance)
    quote = await buy_quote(client, dealer, customer, headers)
    assert str(binance) not in await _plan_sources(conn, quote)
    # The LPs the quote used move 5 % against the dealer; the draining one gets cheap. A
    # re-sweep that took the draining LP in would find the hedge cheaper and fill.
    moved = {venue: await _pin_asks(app, venue, "1.05") for venue in ("OKX", "BYBIT")}
    moved["BINANCE"] = await _pin_asks(app, "BINANCE", "0.9")
    await _ingested(app, dealer, moved)
    status, body = await accept_buy(client, customer, quote, headers)
    assert status == 200, body
    [order] = assert_ok(body)
    assert order["status"] == "REJECTED"
    assert order["rejectReason"].startswith("last look: the market moved")
    # A quote on the books as they are now fills.
    fresh = await buy_quote(client, dealer, customer, headers)
    status, body = await accept_buy(client, customer, fresh, headers)
    assert status == 200, body
    assert assert_ok(body)[0]["status"] == "FILLED"


async def test_an_lp_unlinked_elsewhere_prices_nothing_before_the_subscriptions_catch_up(
    app: web.Application, client: Client, conn: asyncpg.Connection,
) -> None:
    dealer, customer, headers = await lp_desk(client, "1000")
    cheap = await _pin_asks(app, "BINANCE", "0.9")
    await _ingested(app, dealer, {"BINANCE": cheap})
    binance = await _lp_of(conn, dealer, "BINANCE")
    # Unlinked by another replica (here, in SQL): this one's market data subscriptions still
    # hold the LP until their next refresh, but its quoting facts are read again at once.
    await conn.execute("DELETE FROM dealer_link WHERE trading_account_id = $1", binance)
    quote = await buy_quote(client, dealer, customer, headers)
    assert str(binance) not in await _plan_sources(conn, quote)
    assert Decimal(quote["price"]) > cheap * Decimal("1.05")


async def test_a_symbol_the_ledger_cannot_book_is_not_quoted(
    client: Client, conn: asyncpg.Connection,
) -> None:
    # SOL has no ledger scale by default: its accept could not be booked, so no quote is made
    dealer, customer, headers = await lp_desk(client, "1000", symbols=["BTC/USDT", "SOL/USDT"])
    status, body = await post(client, "/api/v3/fermata/quote/request", {
        "dealerAccountId": dealer, "tradingAccountId": customer, "symbol": "SOL/USDT",
        "orderSide": "BUY", "quantity": "2"}, headers)
    assert status == 400, body
    assert_error(body, -130009)
    assert "DEALER_ASSET_SCALES" in body["error"]
    assert await conn.fetchval("SELECT count(*) FROM quote") == 0
