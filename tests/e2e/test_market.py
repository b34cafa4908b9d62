"""Market endpoints end to end over the paper connector: instruments, order books, venues,
portfolios, and the dealer's consolidated book following links at runtime."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp import web

from dealer.app import create_app
from dealer.settings import DaemonSecrets, Settings
from tests.conftest import TRADER, VIEWER, assert_error, assert_ok
from tests.helpers import (
    Client,
    assert_invalid,
    connect_exchange_account,
    eventually,
    get,
    post,
    snapshot,
)

SYNC = "/api/v3/market/instrument/sync"
INSTRUMENTS = "/api/v3/market/instrument/list"
BOOK = "/api/v3/market/orderBook/get"
BOOKS = "/api/v3/market/orderBook/list"
DEALER_BOOK = "/api/v3/fermata/dealer/orderBook"


# ---------------------------------------------------------------- instruments


async def test_sync_answers_the_seed_shape_and_counts_added_then_updated(client: Client) -> None:
    status, body = await post(client, SYNC, {"venue": "BINANCE"})
    assert status == 200, body
    first = assert_ok(body)
    assert set(first) == {"venue", "synced", "added", "updated"}
    assert first["venue"] == "BINANCE"
    assert first["synced"] == first["added"] >= 5
    assert first["updated"] == 0
    status, body = await post(client, SYNC, {"venue": "BINANCE", "symbols": ["BTC/USDT"]})
    assert assert_ok(body) == {"venue": "BINANCE", "synced": 1, "added": 0, "updated": 1}


async def test_sync_refuses_bad_requests_and_writes_nothing(client: Client,
                                                           conn: asyncpg.Connection) -> None:
    before = await conn.fetchval("SELECT count(*) FROM instrument")
    for body, errno in (({"venue": "BINANCE", "symbols": ["BTC/USDT", "NOPE/USDT"]}, -140001),
                        ({"venue": "NOWHERE"}, -100001), ({}, -100001),
                        ({"venue": "BINANCE", "symbols": ["BTCUSDT"]}, -100001),
                        ({"venue": "BINANCE", "symbols": []}, -100001),
                        ({"venue": "BINANCE", "symbols": "BTC/USDT"}, -100001)):
        status, payload = await post(client, SYNC, body)
        assert status == 400, (body, payload)
        assert_error(payload, errno)
    assert await conn.fetchval("SELECT count(*) FROM instrument") == before == 0
    for headers, status_code in (({}, 401), (VIEWER, 403), (TRADER, 403)):
        status, payload = await post(client, SYNC, {"venue": "BINANCE"}, headers)
        assert status == status_code


async def test_instruments_list_filter_and_page(client: Client) -> None:
    await post(client, SYNC, {"venue": "BINANCE"})
    await post(client, SYNC, {"venue": "OKX"})
    status, body = await get(client, INSTRUMENTS, {"venue": "OKX", "limit": 2})
    items = assert_ok(body)
    assert len(items) == 2
    assert body["pagination"]["hasNext"] is True
    assert all(i["venue"] == "OKX" for i in items)
    status, body = await get(client, INSTRUMENTS, [("symbols", "BTC/USDT"),
                                                   ("symbols", "ETH/USDT")])
    items = assert_ok(body)
    assert {(i["venue"], i["symbol"]) for i in items} == {
        ("BINANCE", "BTC/USDT"), ("BINANCE", "ETH/USDT"), ("OKX", "BTC/USDT"), ("OKX", "ETH/USDT")}
    btc = next(i for i in items if i["instrumentId"] == "BINANCE:BTC/USDT")
    assert btc["baseAsset"] == "BTC"
    assert btc["quoteAsset"] == "USDT"
    assert btc["status"] == "ACTIVE"
    assert float(btc["pipSize"]) > 0
    assert float(btc["lotSize"]) > 0
    for query in ({"venue": "NOPE"}, {"instrumentStatus": "GONE"}, {"limit": 0}):
        status, body = await get(client, INSTRUMENTS, query)
        assert status == 400
        assert_error(body, -100001)


async def test_disable_and_enable_an_instrument(client: Client) -> None:
    await post(client, SYNC, {"venue": "BINANCE", "symbols": ["BTC/USDT"]})
    status, body = await post(client, "/api/v3/market/instrument/disable",
                              {"instrumentId": "BINANCE:BTC/USDT"})
    assert assert_ok(body)["status"] == "DISABLED"
    status, body = await get(client, INSTRUMENTS, {"instrumentStatus": "DISABLED"})
    assert [i["instrumentId"] for i in assert_ok(body)] == ["BINANCE:BTC/USDT"]
    # A later sync keeps the desk's choice.
    await post(client, SYNC, {"venue": "BINANCE", "symbols": ["BTC/USDT"]})
    status, body = await get(client, INSTRUMENTS, {"instrumentStatus": "DISABLED"})
    assert len(assert_ok(body)) == 1
    status, body = await post(client, "/api/v3/market/instrument/enable",
                              {"instrumentId": "BINANCE:BTC/USDT"})
    assert assert_ok(body)["status"] == "ACTIVE"
    status, body = await post(client, "/api/v3/market/instrument/enable",
                              {"instrumentId": "BINANCE:NOPE/USDT"})
    assert status == 404
    assert_error(body, -140002)
    status, body = await post(client, "/api/v3/market/instrument/enable", {}, VIEWER)
    assert status == 403


# ---------------------------------------------------------------- order books


async def test_order_book_by_instrument_id_or_venue_and_symbol(client: Client) -> None:
    _, body = await get(client, BOOK, {"instrumentId": "BINANCE:BTC/USDT", "depth": 5},
                             VIEWER)
    book = assert_ok(body)
    assert book["instrumentId"] == "BINANCE:BTC/USDT"
    assert len(book["bids"]) == len(book["asks"]) == 5
    assert float(book["bids"][0][0]) < float(book["asks"][0][0])
    _status, body = await get(client, BOOK, {"venue": "OKX", "symbol": "ETH/USDT"}, TRADER)
    assert len(assert_ok(body)["asks"]) == 10  # the seed's default depth


@pytest.mark.parametrize(
    ("query", "status_code", "errno"),
    [
        ({}, 400, -140005),
        ({"venue": "BINANCE"}, 400, -140005),
        ({"instrumentId": "BINANCE:BTC/USDT", "venue": "BINANCE"}, 400, -140005),
        ({"instrumentId": "BTCUSDT"}, 400, -140005),
        ({"instrumentId": "NOWHERE:BTC/USDT"}, 400, -140005),
        ({"instrumentId": "BINANCE:NOPE/USDT"}, 400, -140001),
        ({"instrumentId": "BINANCE:BTC/USDT", "depth": 0}, 400, -100001),
        ({"instrumentId": "BINANCE:BTC/USDT", "depth": 1001}, 400, -100001),
    ],
)
async def test_order_book_refusals(client: Client, query: dict[str, Any], status_code: int,
                                   errno: int) -> None:
    status, body = await get(client, BOOK, query)
    assert status == status_code, body
    assert_error(body, errno)
    for value in query.values():  # what was sent is not echoed
        if isinstance(value, str) and ":" not in value:
            assert f"'{value}'" not in body["error"], body
    if query.get("instrumentId") in ("BTCUSDT", "NOWHERE:BTC/USDT"):
        assert query["instrumentId"] not in body["error"], body


async def test_order_book_list_and_venue_list(client: Client) -> None:
    _, body = await get(client, BOOKS, [("instrumentIds", "BINANCE:BTC/USDT"),
                                        ("instrumentIds", "OKX:BTC/USDT"), ("depth", "3")])
    books = assert_ok(body)
    assert [b["instrumentId"] for b in books] == ["BINANCE:BTC/USDT", "OKX:BTC/USDT"]
    _, body = await get(client, BOOKS, {"venue": "BYBIT", "symbols": "BTC/USDT"})
    assert [b["instrumentId"] for b in assert_ok(body)] == ["BYBIT:BTC/USDT"]
    _, body = await get(client, BOOKS, {"symbols": "BTC/USDT"})
    assert_error(body, -140005)
    _status, body = await get(client, "/api/v3/market/venue/list", VIEWER)
    venues = {v["venue"]: v for v in assert_ok(body)}
    assert venues["BINANCE"] == {"venue": "BINANCE", "status": "ONLINE", "connector": "paper"}


# ---------------------------------------------------------------- portfolios


async def test_portfolio_lists_connector_balances(client: Client) -> None:
    account = await connect_exchange_account(client, "BINANCE", "spot")
    status, body = await get(client, "/api/v3/portfolio/list", {"tradingAccountId": account})
    portfolios = assert_ok(body)
    assert len(portfolios) == 1
    balances = {b["securitySymbol"]: b for b in portfolios[0]["balances"]}
    assert balances["USDT"]["free"] == "1000000"
    assert balances["USDT"]["total"] == "1000000"
    assert portfolios[0]["error"] is None
    status, body = await get(client, "/api/v3/portfolio/list", {"currency": "BTC"})
    assert [b["securitySymbol"] for b in assert_ok(body)[0]["balances"]] == ["BTC"]
    status, body = await get(client, "/api/v3/portfolio/list", {}, TRADER)
    assert status == 403


# ---------------------------------------------------------------- consolidated book


async def _desk(client: Client) -> tuple[str, list[str]]:
    accounts = [await connect_exchange_account(client, venue, external)
                for venue, external in (("BINANCE", "spot"), ("OKX", "trading"),
                                        ("BYBIT", "spot"))]
    _status, body = await post(client, "/api/v3/fermata/dealer/create",
                              {"symbols": ["BTC/USDT"], "nickname": "desk"})
    return assert_ok(body)["dealerAccountId"], accounts


async def _sources(client: Client, dealer: str) -> set[str]:
    _status, body = await get(client, DEALER_BOOK, {"dealerAccountId": dealer,
                                                   "symbol": "BTC/USDT", "depth": 50})
    book = assert_ok(body)
    return {s["tradingAccountId"] for side in ("bids", "asks") for level in book[side]
            for s in level["sources"]}


async def test_linked_lps_appear_within_a_second_and_leave_on_unlink(client: Client) -> None:
    dealer, accounts = await _desk(client)
    assert await _sources(client, dealer) == set()
    for account in accounts:
        status, body = await post(client, "/api/v3/fermata/dealer/link",
                                  {"dealerAccountId": dealer, "tradingAccountId": account})
        assert status == 200, body

    async def all_three() -> bool:
        return await _sources(client, dealer) == set(accounts)

    await eventually(all_three, within_s=1.0)
    status, body = await post(client, "/api/v3/fermata/dealer/unlink",
                              {"dealerAccountId": dealer, "tradingAccountId": accounts[0]})
    assert status == 200

    async def two_left() -> bool:
        return await _sources(client, dealer) == set(accounts[1:])

    await eventually(two_left, within_s=1.0)


async def test_consolidated_levels_are_fee_adjusted_and_sorted(client: Client) -> None:
    dealer, accounts = await _desk(client)
    await post(client, "/api/v3/tradingAccount/update",
               {"tradingAccountId": accounts[1], "takerFee": "0.002"})
    for account in accounts:
        await post(client, "/api/v3/fermata/dealer/link",
                   {"dealerAccountId": dealer, "tradingAccountId": account})

    async def book() -> dict[str, Any] | None:
        _status, body = await get(client, DEALER_BOOK, {"dealerAccountId": dealer,
                                                       "symbol": "BTC/USDT", "depth": 20})
        data: dict[str, Any] = assert_ok(body)
        return data if all(lp["fresh"] for lp in data["lps"]) and data["asks"] else None

    data = await eventually(book)
    fees = {lp["tradingAccountId"]: lp["takerFee"] for lp in data["lps"]}
    assert fees == {accounts[0]: "0.001", accounts[1]: "0.002", accounts[2]: "0.001"}
    asks = [float(level["price"]) for level in data["asks"]]
    bids = [float(level["price"]) for level in data["bids"]]
    assert asks == sorted(asks)
    assert bids == sorted(bids, reverse=True)
    for side, sign in (("asks", 1), ("bids", -1)):
        for level in data[side]:
            for source in level["sources"]:
                fee = float(fees[source["tradingAccountId"]])
                assert float(level["price"]) == pytest.approx(
                    float(source["price"]) * (1 + sign * fee), rel=1e-12)


async def test_two_accounts_on_one_venue_count_its_book_once(client: Client) -> None:
    dealer, [spot, *_] = await _desk(client)
    margin = await connect_exchange_account(client, "BINANCE", "margin")
    await post(client, "/api/v3/tradingAccount/update",
               {"tradingAccountId": margin, "takerFee": "0.0005"})
    for account in (spot, margin):
        status, body = await post(client, "/api/v3/fermata/dealer/link",
                                  {"dealerAccountId": dealer, "tradingAccountId": account})
        assert status == 200, body

    async def book() -> dict[str, Any] | None:
        _status, body = await get(client, DEALER_BOOK, {"dealerAccountId": dealer,
                                                       "symbol": "BTC/USDT", "depth": 50})
        data: dict[str, Any] = assert_ok(body)
        return data if len(data["lps"]) == 2 and all(
            lp["fresh"] for lp in data["lps"]) and data["asks"] else None

    data = await eventually(book)
    # Both accounts take from BINANCE's one book: its depth is shown once, as quotes count it,
    # for the account that pays less to take it; the other says why it is not a source.
    for side in ("bids", "asks"):
        for level in data[side]:
            assert [s["tradingAccountId"] for s in level["sources"]] == [margin], level
            assert level["quantity"] == level["sources"][0]["quantity"], level
    reasons = {lp["tradingAccountId"]: lp["reason"] for lp in data["lps"]}
    assert reasons[margin] is None
    assert reasons[spot] == f"the BINANCE book counts once, for account {margin}"


async def test_the_book_shows_only_what_quotes_price_on(
    client: Client, conn: asyncpg.Connection
) -> None:
    """An LP on a venue where the instrument is disabled, and an LP being drained, are left out
    of the consolidated book as quotes leave them out; `lps` says why."""
    dealer, [binance, okx, bybit] = await _desk(client)
    for account in (binance, okx, bybit):
        status, body = await post(client, "/api/v3/fermata/dealer/link",
                                  {"dealerAccountId": dealer, "tradingAccountId": account})
        assert status == 200, body

    async def three() -> bool:
        return await _sources(client, dealer) == {binance, okx, bybit}

    await eventually(three)
    status, body = await post(client, "/api/v3/market/instrument/disable",
                              {"instrumentId": "OKX:BTC/USDT"})
    assert status == 200, body
    await conn.execute("UPDATE dealer_link SET draining = true WHERE trading_account_id = $1",
                       uuid.UUID(bybit))
    assert await _sources(client, dealer) == {binance}
    _status, body = await get(client, DEALER_BOOK, {"dealerAccountId": dealer,
                                                   "symbol": "BTC/USDT", "depth": 50})
    book = assert_ok(body)
    reasons = {lp["tradingAccountId"]: lp["reason"] for lp in book["lps"]}
    assert reasons == {binance: None,
                       okx: "BTC/USDT is not synced or is disabled on OKX",
                       bybit: "draining: unlinked once its hedge work is done"}
    assert book["asks"]
    assert book["bids"]


async def test_dealer_book_refusals(client: Client, conn: asyncpg.Connection) -> None:
    dealer, _ = await _desk(client)
    status, body = await get(client, DEALER_BOOK, {"dealerAccountId": dealer,
                                                   "symbol": "ETH/USDT"})
    assert status == 400
    assert_error(body, -130009)
    status, body = await get(client, DEALER_BOOK, {
        "dealerAccountId": "00000000-0000-0000-0000-000000000000", "symbol": "BTC/USDT"})
    assert status == 404
    assert_error(body, -130001)
    status, body = await get(client, DEALER_BOOK, {"dealerAccountId": "x", "symbol": "BTC/USDT"})
    assert status == 400
    status, body = await get(client, DEALER_BOOK, {"dealerAccountId": dealer,
                                                   "symbol": "BTC/USDT"}, {})
    assert status == 401
    # A symbol not in the BASE/QUOTE form is refused naming the field, never echoed (any
    # text could be sent there: a refusal names only a symbol of that form).
    for symbol in ("secret-looking-value", "btc/usdt", "BTC/USDT/X", "BTCUSDT"):
        status, body = await get(client, DEALER_BOOK, {"dealerAccountId": dealer,
                                                       "symbol": symbol}, TRADER)
        assert_invalid(status, body, "symbol")
        assert symbol not in orjson.dumps(body).decode(), body
    before = await snapshot(conn)
    assert await snapshot(conn) == before


# ---------------------------------------------------------------- replay


class ManualClock:
    def __init__(self, start: dt.datetime) -> None:
        self.now = start

    def __call__(self) -> dt.datetime:
        return self.now


def _snapshot_line(ts: int, mid: int) -> bytes:
    bids = [[f"{mid - i}.5", f"0.{i + 1}"] for i in range(3)]
    asks = [[f"{mid + i + 1}.5", f"1.{i}"] for i in range(3)]
    return orjson.dumps({"venue": "BINANCE", "symbol": "BTC/USDT", "ts": ts, "bids": bids,
                         "asks": asks})


async def test_replay_serves_exactly_the_file_levels_at_the_replayed_time(
    settings: Settings, secrets: DaemonSecrets, tmp_path: Path,
    aiohttp_client: Callable[[web.Application], Awaitable[Client]],
) -> None:
    folder = tmp_path / "books"
    folder.mkdir()
    first_ts = 1_700_000_000_000
    lines = [_snapshot_line(first_ts + k * 1000, 60_000 + 10 * k) for k in range(5)]
    (folder / "binance_btc_usdt.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    clock = ManualClock(dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    start = clock.now
    app = create_app(settings.model_copy(update={"paper_books_dir": folder}), secrets,
                     clock=clock)
    client = await aiohttp_client(app)

    async def book_after(ms: int) -> dict[str, Any]:
        clock.now = start + dt.timedelta(milliseconds=ms)
        _status, body = await get(client, BOOK, {"instrumentId": "BINANCE:BTC/USDT",
                                                "depth": 50})
        data: dict[str, Any] = assert_ok(body)
        return data

    # The recording spans 4001 ms (first to last ts, inclusive), then loops.
    for elapsed, index in ((0, 0), (999, 0), (1000, 1), (3500, 3), (4000, 4), (4001, 0),
                           (4002, 0), (5001, 1), (6001, 2)):
        expected = orjson.loads(lines[index])
        got = await book_after(elapsed)
        assert got["bids"] == expected["bids"], elapsed
        assert got["asks"] == expected["asks"], elapsed
    # The other venues and symbols keep their simulated books.
    _status, body = await get(client, BOOK, {"instrumentId": "OKX:BTC/USDT"})
    assert len(assert_ok(body)["asks"]) == 10


async def test_subscriptions_follow_a_change_of_the_dealers_symbols(client: Client) -> None:
    dealer, accounts = await _desk(client)
    await post(client, "/api/v3/fermata/dealer/link",
               {"dealerAccountId": dealer, "tradingAccountId": accounts[0]})
    status, body = await post(client, "/api/v3/fermata/dealer/update",
                              {"dealerAccountId": dealer, "symbols": ["BTC/USDT", "ETH/USDT"]})
    assert status == 200, body

    async def eth_priced() -> bool:
        _, payload = await get(client, DEALER_BOOK, {"dealerAccountId": dealer,
                                                     "symbol": "ETH/USDT"})
        return bool(assert_ok(payload)["asks"])

    await eventually(eth_priced, within_s=1.0)
    _, body = await get(client, BOOKS, {})
    followed = {b["instrumentId"] for b in assert_ok(body)}
    assert followed == {"BINANCE:BTC/USDT", "BINANCE:ETH/USDT"}
    await post(client, "/api/v3/fermata/dealer/update",
               {"dealerAccountId": dealer, "symbols": ["ETH/USDT"]})
    _, body = await get(client, BOOKS, {})
    assert {b["instrumentId"] for b in assert_ok(body)} == {"BINANCE:ETH/USDT"}
    # Disabling the LP account stops its books; enabling it brings them back.
    await post(client, "/api/v3/tradingAccount/disable", {"tradingAccountId": accounts[0]})
    _, body = await get(client, BOOKS, {})
    assert assert_ok(body) == []
    await post(client, "/api/v3/tradingAccount/enable", {"tradingAccountId": accounts[0]})
    await eventually(eth_priced, within_s=1.0)


async def test_the_scheduled_sync_fetches_instruments_of_linked_venues(
    app: web.Application, client: Client, conn: asyncpg.Connection
) -> None:
    from dealer.appkeys import SCHEDULER

    dealer, accounts = await _desk(client)
    await post(client, "/api/v3/fermata/dealer/link",
               {"dealerAccountId": dealer, "tradingAccountId": accounts[1]})
    app[SCHEDULER].get_job("instrument_sync").modify(
        next_run_time=dt.datetime.now(dt.UTC))

    async def synced() -> bool:
        return bool(await conn.fetchval("SELECT count(*) FROM instrument WHERE venue = 'OKX'"))

    await eventually(synced, within_s=3.0)
    assert await conn.fetchval("SELECT count(*) FROM instrument WHERE venue <> 'OKX'") == 0
    text = await (await client.get("/metrics")).text()
    assert 'dealer_scheduler_job_runs_total{job="instrument_sync",outcome="success"}' in text


# ---------------------------------------------------------------- decimals


PLAIN_DECIMAL = r"^\d+(\.\d+)?$"  # seeds/001's decimal (unsigned here): never an exponent


async def test_decimals_are_written_without_an_exponent(
    settings: Settings, secrets: DaemonSecrets, tmp_path: Path,
    aiohttp_client: Callable[[web.Application], Awaitable[Client]],
) -> None:
    """str() of a Decimal writes 1E-8 for a lot of 1e-8, 1.0E-7 for a size of 0.00000010 and
    6.4E+4 for a normalised 64000: every decimal of the market answers is plain digits."""
    folder = tmp_path / "books"
    folder.mkdir()
    (folder / "binance_btc_usdt.jsonl").write_bytes(orjson.dumps({
        "venue": "BINANCE", "symbol": "BTC/USDT", "ts": 1_700_000_000_000,
        "bids": [["64000.00", "0.00000010"], ["63990.5", "1"]],
        "asks": [["64010.00", "0.00000010"], ["64020.5", "1"]]}) + b"\n")
    app = create_app(settings.model_copy(update={
        "paper_books_dir": folder, "paper_balances": {"BTC": Decimal("0.00000010")}}), secrets)
    client = await aiohttp_client(app)
    _status, body = await get(client, BOOK, {"instrumentId": "BINANCE:BTC/USDT", "depth": 1})
    book = assert_ok(body)
    assert (book["bids"], book["asks"]) == ([["64000.00", "0.00000010"]],
                                            [["64010.00", "0.00000010"]])
    await post(client, SYNC, {"venue": "OKX"})
    _status, body = await get(client, INSTRUMENTS, {"venue": "OKX", "symbols": "BTC/USDT"})
    [okx] = assert_ok(body)
    assert okx["lotSize"] == "0.00000001"  # the paper OKX lot, 1e-8
    for item in assert_ok((await get(client, INSTRUMENTS, {"limit": 1000}))[1]):
        for name in ("lotSize", "pipSize", "minQuantity", "minNotional"):
            assert re.match(PLAIN_DECIMAL, item[name]), (item["instrumentId"], name, item[name])
    dealer, accounts = await _desk(client)
    _status, body = await get(client, "/api/v3/portfolio/list",
                              {"tradingAccountId": accounts[0], "currency": "BTC"})
    [balance] = assert_ok(body)[0]["balances"]
    assert (balance["free"], balance["total"], balance["net"]) == ("0.00000010",) * 3
    _status, body = await post(client, "/api/v3/tradingAccount/update",
                               {"tradingAccountId": accounts[0], "takerFee": "0"})
    assert assert_ok(body)["takerFee"] == "0"
    await post(client, "/api/v3/fermata/dealer/link",
               {"dealerAccountId": dealer, "tradingAccountId": accounts[0]})

    async def dealer_book() -> dict[str, Any] | None:
        _status, body = await get(client, DEALER_BOOK, {"dealerAccountId": dealer,
                                                       "symbol": "BTC/USDT", "depth": 1})
        data: dict[str, Any] = assert_ok(body)
        return data if data["bids"] else None

    level = (await eventually(dealer_book))["bids"][0]  # at a fee of 0, the raw price
    assert (level["price"], level["quantity"]) == ("64000", "0.00000010")
    assert (level["sources"][0]["price"], level["sources"][0]["quantity"]) == (
        "64000.00", "0.00000010")
    _status, body = await post(client, "/api/v3/tradingAccount/update",
                               {"tradingAccountId": accounts[0], "takerFee": "0.0000001"})
    assert assert_ok(body)["takerFee"] == "0.0000001"

    async def lp_fee() -> str | None:
        data = await dealer_book()
        fee: str | None = None if data is None else data["lps"][0]["takerFee"]
        return fee if fee != "0" else None

    assert await eventually(lp_fee, within_s=3) == "0.0000001"
