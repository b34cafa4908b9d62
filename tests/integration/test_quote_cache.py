"""The quote path caches quoting facts (dealer, client, instrument rules) in memory; a change made
on another replica, or straight in the database, is never quoted past: the quote's INSERT checks
that the quoting epoch the facts were read at has not moved, and refusals are only answered on
freshly read facts."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from dealer.api.rfq import QuoteRequestBody
from dealer.app import create_app
from dealer.appkeys import CLOCK, QUOTER
from dealer.errors import Errors
from dealer.settings import DaemonSecrets, Settings
from tests.conftest import assert_error
from tests.desk import (
    QUOTE,
    Desk,
    app_with_desk,
    make_desk,
    metric_value,
    quote_body,
    request_quote,
)
from tests.helpers import Client, eventually, post

VENUES = ("BINANCE", "OKX", "BYBIT")


async def _replicas(settings: Settings, secrets: DaemonSecrets,
                    aiohttp_client: Any) -> tuple[Client, Client]:
    first: Client = await aiohttp_client(create_app(settings, secrets))
    second: Client = await aiohttp_client(create_app(settings, secrets))
    return first, second


async def _refused(client: Client, desk: Desk, errno: int) -> None:
    status, body = await post(client, QUOTE, quote_body(desk, orderSide="BUY", quantity="0.1"))
    assert_error(body, errno)
    assert status >= 400, body


async def _quote_count(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM quote"))


async def test_admin_changes_on_another_replica_apply_to_the_next_quote(
        settings: Settings, secrets: DaemonSecrets, aiohttp_client: Any,
        conn: asyncpg.Connection) -> None:
    first, second = await _replicas(settings, secrets, aiohttp_client)
    desk = await make_desk(first)
    await request_quote(first, desk, orderSide="BUY", quantity="0.1")  # warms first's cache
    dealer = {"dealerAccountId": desk.dealer}

    # Paused on the second replica: the first refuses at once, and quotes again once resumed.
    status, body = await post(second, "/api/v3/fermata/dealer/pause", dealer)
    assert status == 200, body
    before = await _quote_count(conn)
    await _refused(first, desk, Errors.DEALER_PAUSED.errno)
    assert await _quote_count(conn) == before
    status, body = await post(second, "/api/v3/fermata/dealer/resume", dealer)
    assert status == 200, body
    await request_quote(first, desk, orderSide="BUY", quantity="0.1")

    # The client disabled, then enabled again.
    client = {"tradingAccountId": desk.client}
    status, body = await post(second, "/api/v3/tradingAccount/disable", client)
    assert status == 200, body
    await _refused(first, desk, Errors.ACCOUNT_NOT_ACTIVE.errno)
    status, body = await post(second, "/api/v3/tradingAccount/enable", client)
    assert status == 200, body
    await request_quote(first, desk, orderSide="BUY", quantity="0.1")

    # The instrument disabled on every LP venue: the symbol cannot be quoted.
    for venue in VENUES:
        status, body = await post(second, "/api/v3/market/instrument/disable",
                                  {"instrumentId": f"{venue}:BTC/USDT"})
        assert status == 200, body
    await _refused(first, desk, Errors.SYMBOL_NOT_QUOTED.errno)
    for venue in VENUES:
        await post(second, "/api/v3/market/instrument/enable",
                   {"instrumentId": f"{venue}:BTC/USDT"})
    await request_quote(first, desk, orderSide="BUY", quantity="0.1")

    # Every LP unlinked: nothing to quote from.
    for lp in desk.lps:
        status, body = await post(second, "/api/v3/fermata/dealer/unlink",
                                  {**dealer, "tradingAccountId": lp})
        assert status == 200, body
    await _refused(first, desk, Errors.NO_LINKED_LP.errno)


async def test_a_quote_priced_on_facts_changed_since_they_were_read_is_priced_again(
        settings: Settings, secrets: DaemonSecrets, aiohttp_client: Any,
        conn: asyncpg.Connection) -> None:
    first, _ = await _replicas(settings, secrets, aiohttp_client)
    desk = await make_desk(first)
    narrow = await request_quote(first, desk, orderSide="BUY", quantity="0.1")
    # Changed behind every replica's back (no API call, no notification): the cached spread of
    # 10 bps is stale, and the quote must not be stored at it.
    await conn.execute(
        """UPDATE dealer SET config = jsonb_set(config, '{spreadBps}', '"500"')
           WHERE dealer_account_id = $1::uuid""", desk.dealer)
    wide = await request_quote(first, desk, orderSide="BUY", quantity="0.1")
    ratio = Decimal(wide["price"]) / Decimal(narrow["price"])
    assert ratio > Decimal("1.04"), (narrow["price"], wide["price"])
    stored = await conn.fetchval("SELECT ask_price FROM quote WHERE quote_id = $1::uuid",
                                 wide["quoteId"])
    assert stored == Decimal(wide["price"])


async def test_quotes_requested_together_are_all_stored(client: Client,
                                                        conn: asyncpg.Connection) -> None:
    desk = await make_desk(client)
    quotes = await asyncio.gather(*(
        request_quote(client, desk, orderSide=side, quantity=quantity)
        for side in ("BUY", "SELL") for quantity in ("0.1", "0.2", "0.3", "0.4", "0.5")))
    ids = {q["quoteId"] for q in quotes}
    assert len(ids) == 10
    rows = await conn.fetch("SELECT quote_id::text, quantity, status FROM quote")
    assert {r["quote_id"] for r in rows} == ids
    assert all(r["status"] == "OPEN" for r in rows)
    by_id = {r["quote_id"]: r["quantity"] for r in rows}
    assert all(by_id[q["quoteId"]] == Decimal(q["quantity"]) for q in quotes)


async def test_a_draining_lp_prices_no_new_quote(client: Client, conn: asyncpg.Connection
                                                 ) -> None:
    desk = await make_desk(client)
    before = await request_quote(client, desk, orderSide="BUY", quantity="0.01")
    drained = min(await _plan_lps(conn, before["quoteId"]))  # an LP the sweep used
    await conn.execute("UPDATE dealer_link SET draining = true WHERE trading_account_id = $1",
                       uuid.UUID(drained))
    after = await request_quote(client, desk, orderSide="BUY", quantity="0.01")
    assert drained not in await _plan_lps(conn, after["quoteId"])


async def _plan_lps(conn: asyncpg.Connection, quote_id: str) -> set[str]:
    plan = await conn.fetchval("SELECT hedge_plan::text FROM quote WHERE quote_id = $1",
                               uuid.UUID(quote_id))
    return {leg["tradingAccountId"] for leg in json.loads(plan)["ask"]["legs"]}


async def test_quotes_answer_an_outage_then_recover_when_connections_are_cut(
        client: Client, conn: asyncpg.Connection) -> None:
    desk = await make_desk(client)
    await request_quote(client, desk, orderSide="BUY", quantity="0.1")  # the writer holds one
    await conn.execute(
        """SELECT pg_terminate_backend(pid) FROM pg_stat_activity
           WHERE datname = current_database() AND pid <> pg_backend_pid()""")

    async def quoted() -> bool:
        # Each answer comes promptly: 200, or the outage envelope while connections renew.
        status, body = await asyncio.wait_for(
            post(client, QUOTE, quote_body(desk, orderSide="BUY", quantity="0.1")), 5.0)
        if status == 200:
            return True
        assert (status, body["errno"]) == (503, Errors.SERVICE_UNAVAILABLE.errno), body
        return False

    await eventually(quoted, within_s=10.0, every_s=0.05)
    quotes = [await request_quote(client, desk, orderSide="SELL", quantity="0.1")
              for _ in range(3)]
    stored = await conn.fetchval("SELECT count(*) FROM quote WHERE quote_id = ANY($1::uuid[])",
                                 [q["quoteId"] for q in quotes])
    assert stored == 3


async def _epoch(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT epoch FROM quoting_epoch"))


async def test_the_quoting_epoch_moves_with_every_quoting_fact_and_only_with_them(
        client: Client, conn: asyncpg.Connection) -> None:
    desk = await make_desk(client)
    dealer, lp, client_id = (uuid.UUID(desk.dealer), uuid.UUID(desk.lps[0]),
                             uuid.UUID(desk.client))
    moves = [
        ("UPDATE dealer SET config = jsonb_set(config, '{spreadBps}', '\"25\"') "
         "WHERE dealer_account_id = $1", dealer),
        ("UPDATE dealer SET status = 'PAUSED', pause_reason = 'test' "
         "WHERE dealer_account_id = $1", dealer),
        ("UPDATE dealer_link SET draining = true WHERE trading_account_id = $1", lp),
        ("DELETE FROM dealer_link WHERE trading_account_id = $1", lp),
        ("INSERT INTO dealer_link (dealer_account_id, trading_account_id, linked_at) "
         "SELECT $1, $2, now()", (dealer, lp)),
        ("UPDATE trading_account SET status = 'INACTIVE' WHERE trading_account_id = $1",
         client_id),
        ("UPDATE trading_account SET kind = 'DEALER', venue = 'FERMATA' "
         "WHERE trading_account_id = $1", lp),
        ("UPDATE instrument SET tick_size = tick_size * 10 WHERE symbol = 'BTC/USDT' "
         "AND venue = $1", "BINANCE"),
        # The same tick written with another scale is another rule for the hedge plan's text.
        ("UPDATE instrument SET lot_size = lot_size::numeric(30, 12) WHERE symbol = 'BTC/USDT' "
         "AND venue = $1", "BINANCE"),
        ("UPDATE instrument SET enabled = false WHERE venue = $1", "OKX"),
        ("INSERT INTO instrument (instrument_id, venue, symbol, external_symbol, base_asset, "
         "quote_asset, tick_size, lot_size, min_quantity, min_notional, venue_status, synced_at, "
         "created_at, updated_at) SELECT 'KRAKEN:BTC/USDT', $1, 'BTC/USDT', 'XBTUSDT', 'BTC', "
         "'USDT', 0.1, 0.0001, 0.0001, 5, 'ACTIVE', now(), now(), now()", "KRAKEN"),
        ("DELETE FROM instrument WHERE venue = $1", "BYBIT"),
        ("TRUNCATE dealer_link", None),
    ]
    for statement, arg in moves:
        before = await _epoch(conn)
        args = arg if isinstance(arg, tuple) else () if arg is None else (arg,)
        done = await conn.execute(statement, *args)
        assert done == "TRUNCATE TABLE" or done.split()[-1] != "0", statement
        assert await _epoch(conn) == before + 1, statement

    # What no quote reads leaves it: a rename, a nickname, an instrument sync that changes no
    # rule (the sync's own upsert, which writes every rule again).
    before = await _epoch(conn)
    await conn.execute("UPDATE dealer SET updated_at = now() WHERE dealer_account_id = $1",
                       dealer)
    await conn.execute("UPDATE trading_account SET nickname = 'renamed', updated_at = now() "
                       "WHERE trading_account_id = $1", client_id)
    await conn.execute(
        """INSERT INTO instrument SELECT * FROM instrument
           ON CONFLICT (instrument_id) DO UPDATE SET
               external_symbol = EXCLUDED.external_symbol, tick_size = EXCLUDED.tick_size,
               lot_size = EXCLUDED.lot_size, min_quantity = EXCLUDED.min_quantity,
               max_quantity = EXCLUDED.max_quantity, min_notional = EXCLUDED.min_notional,
               venue_status = EXCLUDED.venue_status, synced_at = now(), updated_at = now()""")
    assert await _epoch(conn) == before


async def test_a_transaction_moves_the_quoting_epoch_once_and_at_its_commit(
        dsn: str, conn: asyncpg.Connection) -> None:
    other = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            """INSERT INTO instrument (instrument_id, venue, symbol, external_symbol, base_asset,
                   quote_asset, tick_size, lot_size, min_quantity, min_notional, venue_status,
                   synced_at, created_at, updated_at)
               SELECT v || ':BTC/USDT', v, 'BTC/USDT', 'BTCUSDT', 'BTC', 'USDT', 0.01, 0.00001,
                      0.00001, 5, 'ACTIVE', now(), now(), now()
               FROM unnest(ARRAY['BINANCE', 'OKX']) AS v""")
        before = await _epoch(conn)
        async with conn.transaction():
            await conn.execute("UPDATE instrument SET enabled = NOT enabled")
            await conn.execute("UPDATE instrument SET enabled = NOT enabled")
            assert await _epoch(other) == before  # nothing seen before the commit
        assert await _epoch(conn) == before + 1

        # A change undone by a savepoint's rollback does not move it.
        async with conn.transaction():
            savepoint = conn.transaction()
            await savepoint.start()
            await conn.execute("UPDATE instrument SET tick_size = tick_size * 10")
            await savepoint.rollback()
        assert await _epoch(conn) == before + 1
        transaction = conn.transaction()
        await transaction.start()
        await conn.execute("UPDATE instrument SET tick_size = tick_size * 10")
        await transaction.rollback()
        assert await _epoch(conn) == before + 1

        with pytest.raises(asyncpg.RaiseError):
            await conn.execute("DELETE FROM quoting_epoch")
    finally:
        await other.close()


async def test_a_client_created_after_a_refusal_is_quoted(
        client: Client, conn: asyncpg.Connection) -> None:
    desk = await make_desk(client)
    await request_quote(client, desk, orderSide="BUY", quantity="0.1")
    # An id the cache has learnt to be no client, then created straight in the database (which
    # leaves the epoch: a refusal on cached facts is always worked out again on fresh ones).
    unknown = uuid.uuid4()
    status, body = await post(client, QUOTE, {**quote_body(desk, orderSide="BUY",
                                                           quantity="0.1"),
                                              "tradingAccountId": str(unknown)})
    assert_error(body, Errors.CLIENT_NOT_FOUND.errno)
    assert status >= 400, body
    await conn.execute(
        """INSERT INTO trading_account (trading_account_id, venue, kind,
               external_trading_account_id, account_type, external_account_type, status,
               created_at, updated_at)
           VALUES ($1, 'FERMATA', 'CLIENT', $2, 'CLIENT', 'CLIENT', 'ACTIVE', now(), now())""",
        unknown, str(unknown))
    quote = await request_quote(client, desk, orderSide="BUY", quantity="0.1",
                                tradingAccountId=str(unknown))
    assert quote["tradingAccountId"] == str(unknown)


async def test_quotes_sent_back_for_their_facts_together_share_one_read(
        settings: Settings, secrets: DaemonSecrets, aiohttp_client: Any,
        conn: asyncpg.Connection) -> None:
    app, client, desk = await app_with_desk(settings, secrets, aiohttp_client)
    quoter = app[QUOTER]
    await request_quote(client, desk, orderSide="BUY", quantity="0.1")  # facts cached
    started = quoter.reads_started
    counted = await metric_value(client, "dealer_quote_fact_reads_total ")
    # The epoch moves behind the cache's back: every quote of the next group is refused by
    # its INSERT and goes back for the same facts at once.
    await conn.execute("UPDATE dealer SET config = jsonb_set(config, '{spreadBps}', '\"12\"') "
                       "WHERE dealer_account_id = $1::uuid", desk.dealer)
    # Asked together in-process, so priced together on the cached facts and written in one group.
    commands = [QuoteRequestBody.model_validate(quote_body(
        desk, orderSide="SELL", quantity=f"0.{n}")).command for n in range(1, 10)]
    now = app[CLOCK]()
    quotes = await asyncio.gather(*(quoter.request_quote(cmd, now) for cmd in commands))
    assert len({q.quote_id for q in quotes}) == 9
    assert quoter.reads_started - started == 1
    assert await metric_value(client, "dealer_quote_fact_reads_total ") == counted + 1
    stored = await conn.fetchval("SELECT count(*) FROM quote WHERE quote_id = ANY($1::uuid[])",
                                 [q.quote_id for q in quotes])
    assert stored == 9


async def test_a_quote_priced_again_is_priced_at_the_time_of_its_second_try(
        settings: Settings, secrets: DaemonSecrets, aiohttp_client: Any,
        conn: asyncpg.Connection) -> None:
    app, client, desk = await app_with_desk(settings, secrets, aiohttp_client)
    quoter = app[QUOTER]
    await request_quote(client, desk, orderSide="BUY", quantity="0.1")  # facts cached
    await conn.execute("UPDATE dealer SET config = jsonb_set(config, '{spreadBps}', '\"12\"') "
                       "WHERE dealer_account_id = $1::uuid", desk.dealer)
    cmd = QuoteRequestBody.model_validate(quote_body(desk, orderSide="BUY",
                                                     quantity="0.1")).command
    # The first try, on the cached facts, is refused by its write; the second is priced at the
    # clock's time, not at the (here much earlier) arrival time.
    arrived = app[CLOCK]() - dt.timedelta(seconds=30)
    before_second_try = app[CLOCK]()
    quote = await quoter.request_quote(cmd, arrived)
    assert quote.created_at >= before_second_try
    created, expire = await conn.fetchrow(
        "SELECT created_at, expire_at FROM quote WHERE quote_id = $1", quote.quote_id)
    assert created >= before_second_try
    assert expire - created == dt.timedelta(seconds=5)
