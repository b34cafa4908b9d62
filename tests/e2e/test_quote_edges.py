"""Quotes at the edges of a desk's setup: two LP accounts on one venue, an exposure already past
the limit, no fresh book on the only venue with the instrument, venues' size limits that do not
overlap, and a ledger that books the base asset in fewer decimals than the instrument's lot."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from dealer.app import create_app
from dealer.settings import DaemonSecrets, Settings
from tests.conftest import assert_error, assert_ok
from tests.desk import (
    QUOTE,
    SUBMIT,
    AppClient,
    accept,
    accept_body,
    make_desk,
    quote_body,
    request_quote,
)
from tests.helpers import Client, connect_exchange_account, eventually, post


@pytest.fixture
async def steady_client(settings: Settings, secrets: DaemonSecrets,
                        aiohttp_client: Any) -> Client:
    """A client of a daemon whose paper books stay as they are for a minute: a depth read at
    one moment is the depth at the next (the default books move every 100 ms)."""
    steady = settings.model_copy(update={"paper_book_interval_ms": 60000})
    made: Client = await aiohttp_client(create_app(steady, secrets))
    return made


async def test_two_accounts_on_one_venue_count_its_book_once(steady_client: Client) -> None:
    client = steady_client
    spot = await connect_exchange_account(client, "BINANCE", "spot")
    _, body = await post(client, "/api/v3/fermata/dealer/create",
                         {"symbols": ["BTC/USDT"], "maxQuoteNotional": "1000000000"})
    dealer = assert_ok(body)["dealerAccountId"]
    status, body = await post(client, "/api/v3/fermata/dealer/link",
                              {"dealerAccountId": dealer, "tradingAccountId": spot})
    assert status == 200, body
    _, body = await post(client, "/api/v3/fermata/client/create", {})
    request = {"dealerAccountId": dealer, "tradingAccountId": assert_ok(body)["tradingAccountId"],
               "symbol": "BTC/USDT", "orderSide": "BUY", "quantity": "100000"}

    async def depth() -> Decimal | None:
        status, payload = await post(client, QUOTE, request)
        if status == 400 and payload["errno"] == -160009:
            return Decimal(payload["details"]["metadata"]["availableQuantity"])
        return None

    one_account = await eventually(depth, within_s=5)  # every BINANCE ask
    margin = await connect_exchange_account(client, "BINANCE", "margin")
    status, body = await post(client, "/api/v3/fermata/dealer/link",
                              {"dealerAccountId": dealer, "tradingAccountId": margin})
    assert status == 200, body
    # Half again the venue's whole ask side: BINANCE cannot fill it, whichever account sends it.
    status, body = await post(client, QUOTE, {**request, "quantity": str(one_account * 3 / 2)})
    assert status == 400, body
    assert_error(body, -160009)
    assert Decimal(body["details"]["metadata"]["availableQuantity"]) == one_account


async def test_past_the_exposure_limit_a_trade_back_towards_flat_is_quoted(
        client: Client) -> None:
    desk = await make_desk(client, maxUnhedgedExposure={"BTC": "0.1"})
    # Two client SELLs, each within the limit when quoted, both filled before any hedge (no
    # hedger runs here, as after hedges that failed): the dealer is long 0.16 BTC.
    for quote in [await request_quote(client, desk, orderSide="SELL", quantity="0.08")
                  for _ in range(2)]:
        await accept(client, quote)
    # A client BUY takes the dealer back towards flat (0.15, then -0.14): quoted.
    for quantity in ("0.01", "0.3"):
        await request_quote(client, desk, orderSide="BUY", quantity=quantity)
    # Further away on either side is refused: 0.17 long, 0.24 short, a two-way quote's SELL.
    for fields in ({"orderSide": "SELL", "quantity": "0.01"},
                   {"orderSide": "BUY", "quantity": "0.4"}, {"quantity": "0.01"}):
        status, body = await post(client, QUOTE, quote_body(desk, **fields))
        assert status == 400, (fields, body)
        assert_error(body, -160011)


async def test_no_fresh_book_on_the_only_venue_with_the_instrument_is_books_stale(
        client: Client) -> None:
    desk = await make_desk(client)
    for venue in ("BINANCE", "OKX"):
        status, body = await post(client, "/api/v3/market/instrument/disable",
                                  {"instrumentId": f"{venue}:BTC/USDT"})
        assert status == 200, body
    await request_quote(client, desk, orderSide="BUY", quantity="0.1")  # BYBIT prices it
    status, body = await post(client, "/api/v3/tradingAccount/disable",
                              {"tradingAccountId": desk.lps[2]})  # the BYBIT account
    assert status == 200, body
    # BINANCE's and OKX's books are fresh, but their instruments are disabled; BYBIT has the
    # instrument and no fresh book: "retry later", as with no fresh book at all.
    status, body = await post(client, QUOTE, quote_body(desk, orderSide="BUY", quantity="0.1"))
    assert status == 503, body
    assert_error(body, -160008)


async def test_venues_whose_size_limits_do_not_overlap_refuse_every_size(
        client: Client, conn: asyncpg.Connection) -> None:
    desk = await make_desk(client)
    await conn.execute("UPDATE instrument SET max_quantity = 0.5 "
                       "WHERE instrument_id = 'BINANCE:BTC/USDT'")
    await conn.execute("UPDATE instrument SET min_quantity = 1 "
                       "WHERE instrument_id = 'OKX:BTC/USDT'")
    for quantity in ("0.1", "0.7", "2"):
        status, body = await post(client, QUOTE, quote_body(desk, orderSide="BUY",
                                                            quantity=quantity))
        assert status == 400, body
        assert_error(body, -160010)
    assert await conn.fetchval("SELECT count(*) FROM quote") == 0


async def test_a_base_asset_booked_in_fewer_decimals_than_the_lot_counts_in_its_step(
        settings: Settings, secrets: DaemonSecrets, aiohttp_client: AppClient,
        conn: asyncpg.Connection) -> None:
    # The ledger books BTC in 4 decimals; the venues' lot is 0.00001 BTC.
    client = await aiohttp_client(create_app(
        settings.model_copy(update={"asset_scales": {"BTC": 4}}), secrets))
    desk = await make_desk(client)
    quote = await request_quote(client, desk, orderSide="BUY", quantity="0.12345")
    assert quote["quantity"] == "0.1234"  # rounded down to the ledger's step, as to a lot
    order = await accept(client, quote)
    assert (order["status"], order["executedQuantity"]) == ("FILLED", "0.1234")
    booked = await conn.fetchval(
        """SELECT p ->> 2 FROM ledger_outbox, jsonb_array_elements(payload -> 'postings') p
           WHERE kind = 'transaction' AND p ->> 3 = 'BTC/4'""")
    assert booked == "1234"
    spend = await request_quote(client, desk, orderSide="BUY", quoteQuantity="5000")
    assert Decimal(spend["quantity"]) % Decimal("0.0001") == 0
    status, body = await post(client, SUBMIT, accept_body(spend))
    assert status == 200, body


async def test_a_side_whose_quote_leg_would_book_nothing_is_refused_when_quoted(
        settings: Settings, secrets: DaemonSecrets, aiohttp_client: AppClient,
        conn: asyncpg.Connection) -> None:
    """The ledger books what the dealer pays rounded down to whole minor units: a client SELL
    whose proceeds are under one minor unit of the quote asset would book 0, which no fill can
    carry. Such a quote is refused when asked for, not accepted into a 500."""
    # The ledger books USDT in whole units; the dealer and the venues set no minimum notional,
    # and the venues' smallest quantity is one lot.
    client = await aiohttp_client(create_app(
        settings.model_copy(update={"asset_scales": {"USDT": 0}}), secrets))
    desk = await make_desk(client, minQuoteNotional="0")
    await conn.execute("UPDATE instrument SET min_notional = 0, min_quantity = lot_size "
                       "WHERE symbol = 'BTC/USDT'")
    lot = "0.00001"  # about 0.65 USDT: books 0 USDT paid by the dealer, 1 USDT received
    for fields in ({"orderSide": "SELL", "quantity": lot}, {"quantity": lot},
                   {"orderSide": "SELL", "quoteQuantity": "0.9"}):  # one lot
        status, body = await post(client, QUOTE, quote_body(desk, **fields))
        assert status == 400, (fields, body)
        assert_error(body, -160010)
        assert "ledger minimum 1" in body["error"], body
    assert await conn.fetchval("SELECT count(*) FROM quote") == 0
    # The client BUY of the same size books 1 USDT (received by the dealer, rounded up).
    buy = await request_quote(client, desk, orderSide="BUY", quantity=lot)
    assert buy["askQuoteQuantity"] == buy["quoteQuantity"] == "1"
    order = await accept(client, buy)
    assert (order["status"], order["executedCost"]) == ("FILLED", "1")
    # A SELL whose proceeds reach one USDT is quoted and filled, booked in whole USDT.
    sell = await request_quote(client, desk, orderSide="SELL", quantity="0.0001")
    assert Decimal(sell["quoteQuantity"]) >= 1
    assert Decimal(sell["quoteQuantity"]) % 1 == 0
    order = await accept(client, sell)
    assert order["status"] == "FILLED"
    assert order["executedCost"] == sell["quoteQuantity"]
