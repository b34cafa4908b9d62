"""Ledger endpoints end to end over HTTP, with the app's own outbox relay and `local` journal:
LP wallets opened at link, transactions as booked, a dealer's net flow per LP, reconciliation of
venue balances against the ledger (DESIGN §7), and refusals of every kind."""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Any, cast

import asyncpg
import pytest
from aiohttp import web

from dealer.app import create_app
from dealer.appkeys import POOL, SCHEDULER, VENUES
from dealer.settings import DaemonSecrets, Settings
from dealer.wire import iso
from ledger.accounts import client_account, dealer_account, exchange_account
from ledger.assets import Asset, ScaleTable
from ledger.backend import LedgerTransaction, Posting
from ledger.outbox import enqueue_transaction, outbox_references
from ledger.postings import client_fill, hedge_fill
from tests.conftest import ADMIN, TRADER, VIEWER, assert_error, assert_ok
from tests.fakes.formance import FormanceEmulator, running_emulator
from tests.helpers import (
    Client,
    assert_invalid,
    connect_exchange_account,
    eventually,
    get,
    outbox_drained,
    post,
    until_lock_waiters,
)
from venues.base import (
    OrderRequest,
    OrderState,
    OrderStatus,
    OrderType,
    Side,
    VenueAccount,
)
from venues.paper.client import PaperVenue

ACCOUNT = "/api/v3/ledger/account"
TRANSACTIONS = "/api/v3/ledger/transaction/list"
NET_FLOW = "/api/v3/fermata/dealer/netFlow"
RECONCILIATION = "/api/v3/ledger/reconciliation"

BTC = Asset("BTC", 8)
USDT = Asset("USDT", 6)
SCALES = ScaleTable.default()
FILLED_AT = dt.datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=dt.UTC)
PLAIN_DECIMAL = re.compile(r"^-?\d+(\.\d+)?$")


# ---------------------------------------------------------------- helpers


async def _linked_lp(client: Client, venue: str = "BINANCE",
                     external_id: str = "spot") -> tuple[str, str]:
    """A dealer with one LP linked through the API: (dealerAccountId, tradingAccountId)."""
    account = await connect_exchange_account(client, venue, external_id)
    status, body = await post(client, "/api/v3/fermata/dealer/create", {"symbols": ["BTC/USDT"]})
    assert status == 200, body
    dealer: str = assert_ok(body)["dealerAccountId"]
    await _link(client, dealer, account)
    return dealer, account


async def _link(client: Client, dealer: str, account: str) -> None:
    status, body = await post(client, "/api/v3/fermata/dealer/link",
                              {"dealerAccountId": dealer, "tradingAccountId": account})
    assert status == 200, body


async def _book(app: web.Application, *transactions: LedgerTransaction) -> list[int]:
    """Enqueue the transactions in one database transaction, as a service would."""
    async with app[POOL].acquire() as proxy, proxy.transaction():
        conn = cast(asyncpg.Connection, proxy)
        return [await enqueue_transaction(conn, tx, FILLED_AT) for tx in transactions]


def _paper(app: web.Application) -> PaperVenue:
    venue = app[VENUES].execution("BINANCE")
    assert isinstance(venue, PaperVenue)
    return venue


def _hedge_of(state: OrderState, exchange: str, dealer: str) -> tuple[LedgerTransaction, ...]:
    """The ledger entries of a venue fill, from what the venue answered (price, quantity, fee)."""
    assert state.status is OrderStatus.FILLED, state
    price = state.average_price
    assert price is not None
    fee_assets = {e.fee.asset for e in state.executions}
    assert len(fee_assets) == 1, state
    fee = (SCALES.asset(fee_assets.pop()), sum((e.fee.amount for e in state.executions),
                                               Decimal(0)))
    base, quote = state.symbol.split("/")
    return hedge_fill(
        uuid.UUID(exchange), uuid.UUID(dealer), state.side.value, SCALES.asset(base),
        SCALES.asset(quote), state.filled_quantity, price, fee,
        reference=state.client_order_id, metadata={"orderId": state.venue_order_id},
        quote_amount=sum((e.price * e.quantity for e in state.executions), Decimal(0)),
        timestamp=FILLED_AT)


async def _market_order(app: web.Application, account: str, order_id: str, side: Side,
                        quantity: str) -> OrderState:
    return await _paper(app).submit_order(
        VenueAccount(uuid.UUID(account), "spot"),
        OrderRequest(order_id, "BTC/USDT", side, OrderType.MARKET, Decimal(quantity)))


@contextlib.asynccontextmanager
async def _ledger_writes_blocked(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """Hold locks that stop the relay inside its journal writes (reads still work), so what
    is enqueued meanwhile stays pending in the outbox until the block ends."""
    holder = await asyncpg.connect(dsn)
    try:
        async with holder.transaction():
            await holder.execute(
                "LOCK TABLE ledger_balance, ledger_account IN EXCLUSIVE MODE")
            yield holder
    finally:
        await holder.close()


def _by_asset(lp: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {a["asset"]: a for a in lp["assets"]}


def _assert_plain_decimals(lp: dict[str, Any]) -> None:
    """Decimals travel as plain strings (DESIGN §3), never in exponent notation."""
    for check in lp["assets"]:
        for field in ("baseline", "venueBalance", "venueChange", "ledgerNetFlow", "drift"):
            assert PLAIN_DECIMAL.fullmatch(check[field]), (field, check)


async def _reconciliation(client: Client, dealer: str) -> dict[str, Any]:
    status, body = await get(client, RECONCILIATION, {"dealerAccountId": dealer}, VIEWER)
    assert status == 200, body
    data = assert_ok(body)
    assert len(data["lps"]) == 1, data
    lp: dict[str, Any] = data["lps"][0]
    _assert_plain_decimals(lp)
    return lp


async def _refused_without_token_or_role(client: Client, path: str,
                                         params: dict[str, str]) -> None:
    status, body = await get(client, path, params, {})
    assert status == 401, body
    assert_error(body, -101001)
    status, body = await get(client, path, params, TRADER)
    assert status == 403, body
    assert_error(body, -101004)


# ---------------------------------------------------------------- ledger/account


async def test_linking_opens_the_lp_wallet_with_its_metadata(
    client: Client, conn: asyncpg.Connection
) -> None:
    dealer, account = await _linked_lp(client)
    await outbox_drained(conn)
    address = f"exchange:{account}"
    linked_at = await conn.fetchval(
        "SELECT linked_at FROM dealer_link WHERE trading_account_id = $1", uuid.UUID(account))
    for headers in (VIEWER, ADMIN):
        status, body = await get(client, ACCOUNT, {"address": address}, headers)
        assert status == 200, body
        assert assert_ok(body) == {
            "address": address,
            "metadata": {"dealerAccountId": dealer, "venue": "BINANCE",
                         "linkedAt": iso(linked_at)},
            "balances": [],
        }


async def test_account_balances_in_minor_units_and_decimals(
    app: web.Application, client: Client, conn: asyncpg.Connection
) -> None:
    client_id, dealer_id = uuid.uuid4(), uuid.uuid4()
    bought = client_fill(client_id, dealer_id, "BUY", BTC, USDT, Decimal("0.25"),
                         Decimal("65000.5"), reference="rfq-1", metadata={"quoteId": "q-1"},
                         timestamp=FILLED_AT)
    sold = client_fill(client_id, dealer_id, "SELL", BTC, USDT, Decimal("0.25"),
                       Decimal("65000.5"), reference="rfq-2", metadata={"quoteId": "q-2"},
                       timestamp=FILLED_AT)
    await _book(app, bought, sold)
    await outbox_drained(conn)
    status, body = await get(client, ACCOUNT, {"address": client_account(client_id)})
    assert status == 200, body
    # The client bought and sold back the same quantity at the same price: both legs net to
    # zero, and a zero balance is still a plain decimal of the asset's scale.
    assert assert_ok(body) == {
        "address": client_account(client_id), "metadata": {},
        "balances": [{"asset": "BTC/8", "balance": "0", "amount": "0.00000000"},
                     {"asset": "USDT/6", "balance": "0", "amount": "0.000000"}],
    }
    # Then it buys 0.1 BTC, and another client 12 satoshis for 0.00780006 USDT, rounded up
    # to 0.007801 (the dealer receives it): amounts below 1e-6 are plain decimals too.
    small_id = uuid.uuid4()
    await _book(app, *(client_fill(buyer, dealer_id, "BUY", BTC, USDT, Decimal(quantity),
                                   Decimal("65000.5"), reference="rfq", metadata={},
                                   timestamp=FILLED_AT)
                       for buyer, quantity in ((client_id, "0.1"), (small_id, "0.00000012"))))
    await outbox_drained(conn)
    for address, expected in (
        (dealer_account(dealer_id), [
            {"asset": "BTC/8", "balance": "-10000012", "amount": "-0.10000012"},
            {"asset": "USDT/6", "balance": "6500057801", "amount": "6500.057801"}]),
        (client_account(client_id), [
            {"asset": "BTC/8", "balance": "10000000", "amount": "0.10000000"},
            {"asset": "USDT/6", "balance": "-6500050000", "amount": "-6500.050000"}]),
        (client_account(small_id), [
            {"asset": "BTC/8", "balance": "12", "amount": "0.00000012"},
            {"asset": "USDT/6", "balance": "-7801", "amount": "-0.007801"}]),
    ):
        _, body = await get(client, ACCOUNT, {"address": address}, VIEWER)
        assert assert_ok(body)["balances"] == expected, address


async def test_account_refusals(client: Client) -> None:
    for address in ("bad address!", "a::b", "exchange:", ":a", "exchange:x/y"):
        status, body = await get(client, ACCOUNT, {"address": address})
        assert status == 400, (address, body)
        assert_error(body, -150001)
    missing = exchange_account(uuid.uuid4())
    status, body = await get(client, ACCOUNT, {"address": missing})
    assert status == 404, body
    assert_error(body, -150002)
    assert missing.split(":")[1] not in body["error"]
    for params, field in (({}, "address"), ({"address": ""}, "address"),
                          ({"address": "a" * 201}, "address"),
                          ({"address": "world", "limit": "5"}, None)):
        status, body = await get(client, ACCOUNT, params)
        assert_invalid(status, body, field)
    await _refused_without_token_or_role(client, ACCOUNT, {"address": "world"})


# ---------------------------------------------------------------- ledger/transaction/list


async def test_transactions_newest_first_with_outbox_references_filters_and_pages(
    app: web.Application, client: Client, conn: asyncpg.Connection
) -> None:
    client_id, dealer_id, lp_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    client_addr, dealer_addr = client_account(client_id), dealer_account(dealer_id)
    lp_addr = exchange_account(lp_id)
    # The client buys 0.25 BTC at 65000.5 (16250.125 USDT); the dealer hedges on the LP,
    # buying 0.25 BTC at 64990 (16247.5 USDT) and paying 0.00025 BTC of fee.
    [fill_id] = await _book(app, client_fill(
        client_id, dealer_id, "BUY", BTC, USDT, Decimal("0.25"), Decimal("65000.5"),
        reference="rfq-1", metadata={"quoteId": "q-1"}, timestamp=FILLED_AT))
    hedge_id, fee_id = await _book(app, *hedge_fill(
        lp_id, dealer_id, "BUY", BTC, USDT, Decimal("0.25"), Decimal("64990"),
        (BTC, Decimal("0.00025")), reference="hedge-1", metadata={"orderId": "o-1"},
        timestamp=FILLED_AT))
    await outbox_drained(conn)
    booked = [fill_id, hedge_id, fee_id]
    references = dict(zip(booked, await outbox_references(conn, booked), strict=True))

    status, body = await get(client, TRANSACTIONS, None, VIEWER)
    assert status == 200, body
    items = assert_ok(body)
    assert body["pagination"] == {"offset": 0, "limit": 50, "total": 3, "hasNext": False}
    assert [t["reference"] for t in items] == [references[i] for i in (fee_id, hedge_id,
                                                                          fill_id)]
    ids = [t["transactionId"] for t in items]
    assert ids == sorted(ids, reverse=True)
    fee, hedge, fill = items
    assert fill["postings"] == [
        {"source": client_addr, "destination": dealer_addr, "amount": "16250125000",
         "asset": "USDT/6", "quantity": "16250.125000"},
        {"source": dealer_addr, "destination": client_addr, "amount": "25000000",
         "asset": "BTC/8", "quantity": "0.25000000"},
    ]
    assert fill["metadata"] == {"kind": "client_fill", "clientSide": "BUY", "price": "65000.5",
                                "quoteId": "q-1"}
    assert fill["timestamp"] == int(FILLED_AT.timestamp() * 1000)
    assert fill["timestampDateTime"] == "2026-01-02T03:04:05.678Z"
    assert hedge["postings"] == [
        {"source": lp_addr, "destination": dealer_addr, "amount": "25000000", "asset": "BTC/8",
         "quantity": "0.25000000"},
        {"source": dealer_addr, "destination": lp_addr, "amount": "16247500000",
         "asset": "USDT/6", "quantity": "16247.500000"},
    ]
    assert hedge["metadata"] == {"kind": "hedge_fill", "dealerSide": "BUY", "price": "64990",
                                 "orderId": "o-1"}
    assert fee["postings"] == [{"source": dealer_addr, "destination": lp_addr, "amount": "25000",
                                "asset": "BTC/8", "quantity": "0.00025000"}]
    assert fee["metadata"]["kind"] == "fee"
    assert fee["metadata"]["orderId"] == "o-1"

    # Filters: by an account touched as source or destination, by reference, or both.
    for params, expected in (
        ({"address": lp_addr}, [fee_id, hedge_id]),
        ({"address": client_addr}, [fill_id]),
        ({"address": dealer_addr}, [fee_id, hedge_id, fill_id]),
        ({"address": exchange_account(uuid.uuid4())}, []),
        ({"reference": references[hedge_id]}, [hedge_id]),
        ({"reference": "hedge-1"}, []),
        ({"address": client_addr, "reference": references[hedge_id]}, []),
        ({"address": lp_addr, "reference": references[fee_id]}, [fee_id]),
    ):
        _, body = await get(client, TRANSACTIONS, params)
        assert [t["reference"] for t in assert_ok(body)] == [references[i] for i in expected]
        assert body["pagination"]["total"] == len(expected), params

    # Pages.
    _, body = await get(client, TRANSACTIONS, {"limit": 2})
    assert [t["reference"] for t in assert_ok(body)] == [references[fee_id],
                                                         references[hedge_id]]
    assert body["pagination"] == {"offset": 0, "limit": 2, "total": 3, "hasNext": True}
    _, body = await get(client, TRANSACTIONS, {"limit": 2, "offset": 2})
    assert [t["reference"] for t in assert_ok(body)] == [references[fill_id]]
    assert body["pagination"] == {"offset": 2, "limit": 2, "total": 3, "hasNext": False}
    _, body = await get(client, TRANSACTIONS, {"offset": 10})
    assert assert_ok(body) == []
    assert body["pagination"] == {"offset": 10, "limit": 50, "total": 3, "hasNext": False}


async def test_transactions_refusals(client: Client) -> None:
    for address in ("bad address!", "a::b"):
        status, body = await get(client, TRANSACTIONS, {"address": address})
        assert status == 400, body
        assert_error(body, -150001)
    for params, field in (({"limit": "0"}, "limit"), ({"limit": "1001"}, "limit"),
                          ({"offset": "-1"}, "offset"), ({"limit": "ten"}, "limit"),
                          ({"address": "a" * 201}, "address"),
                          ({"reference": "r" * 201}, "reference"), ({"sort": "asc"}, None)):
        status, body = await get(client, TRANSACTIONS, params)
        assert_invalid(status, body, field)
    await _refused_without_token_or_role(client, TRANSACTIONS, {})


# ---------------------------------------------------------------- fermata/dealer/netFlow


async def test_net_flow_shows_each_linked_lp_wallet_per_asset(
    app: web.Application, client: Client, conn: asyncpg.Connection
) -> None:
    dealer, binance = await _linked_lp(client)
    okx = await connect_exchange_account(client, "OKX", "trading")
    await _link(client, dealer, okx)
    # The dealer BUYS 0.5 BTC at 65000 on the Binance LP and pays 0.0005 BTC of fee: the
    # wallet gives 0.5 BTC and receives 32500 USDT and the 0.0005 BTC fee (DESIGN §7), so it
    # holds -0.4995 BTC and +32500 USDT: the venue's change with the opposite sign.
    await _book(app, *hedge_fill(
        uuid.UUID(binance), uuid.UUID(dealer), "BUY", BTC, USDT, Decimal("0.5"),
        Decimal("65000"), (BTC, Decimal("0.0005")), reference="h-1", metadata={}))
    await outbox_drained(conn)
    status, body = await get(client, NET_FLOW, {"dealerAccountId": dealer}, VIEWER)
    assert status == 200, body
    assert assert_ok(body) == {
        "dealerAccountId": dealer,
        "wallets": [
            {"tradingAccountId": binance, "venue": "BINANCE", "address": f"exchange:{binance}",
             "exists": True, "balances": [{"asset": "BTC", "amount": "-0.49950000"},
                                          {"asset": "USDT", "amount": "32500.000000"}]},
            {"tradingAccountId": okx, "venue": "OKX", "address": f"exchange:{okx}",
             "exists": True, "balances": []},
        ],
        "pendingEntries": 0,
    }
    # A dealer without LPs has no wallets.
    _, body = await post(client, "/api/v3/fermata/dealer/create", {"symbols": ["ETH/USDT"]})
    lonely = assert_ok(body)["dealerAccountId"]
    _, body = await get(client, NET_FLOW, {"dealerAccountId": lonely})
    assert assert_ok(body) == {"dealerAccountId": lonely, "wallets": [], "pendingEntries": 0}


async def test_net_flow_counts_pending_entries_and_shows_wallets_not_yet_opened(
    app: web.Application, client: Client, dsn: str
) -> None:
    async with _ledger_writes_blocked(dsn) as holder:
        dealer, account = await _linked_lp(client)
        await until_lock_waiters(holder, 1)  # the relay is stuck opening the wallet
        # The wallet's metadata waits in the outbox: the link stands, the wallet is not open.
        _, body = await get(client, NET_FLOW, {"dealerAccountId": dealer})
        flow = assert_ok(body)
        assert flow["wallets"] == [{
            "tradingAccountId": account, "venue": "BINANCE", "address": f"exchange:{account}",
            "exists": False, "balances": []}]
        assert flow["pendingEntries"] == 1
        await _book(app, *hedge_fill(
            uuid.UUID(account), uuid.UUID(dealer), "SELL", BTC, USDT, Decimal("0.1"),
            Decimal("65000"), None, reference="h-1", metadata={}))
        _, body = await get(client, NET_FLOW, {"dealerAccountId": dealer})
        flow = assert_ok(body)
        assert flow["pendingEntries"] == 2
        assert flow["wallets"][0]["exists"] is False

    async def booked() -> Any:
        _, body = await get(client, NET_FLOW, {"dealerAccountId": dealer})
        flow = assert_ok(body)
        return flow["pendingEntries"] == 0 and flow

    flow = await eventually(booked, within_s=3.0)
    assert flow["wallets"][0]["exists"] is True
    assert flow["wallets"][0]["balances"] == [{"asset": "BTC", "amount": "0.10000000"},
                                              {"asset": "USDT", "amount": "-6500.000000"}]


async def test_net_flow_refusals(client: Client) -> None:
    status, body = await get(client, NET_FLOW, {"dealerAccountId": str(uuid.uuid4())})
    assert status == 404, body
    assert_error(body, -130001)
    for params, field in (({}, "dealerAccountId"), ({"dealerAccountId": "dealer-1"},
                                                    "dealerAccountId"),
                          ({"dealerAccountId": str(uuid.uuid4()), "asset": "BTC"}, None)):
        status, body = await get(client, NET_FLOW, params)
        assert_invalid(status, body, field)
    await _refused_without_token_or_role(client, NET_FLOW, {"dealerAccountId": str(uuid.uuid4())})


# ---------------------------------------------------------------- ledger/reconciliation


async def test_reconciliation_follows_the_venue_against_the_ledger(
    app: web.Application, client: Client, conn: asyncpg.Connection, dsn: str
) -> None:
    dealer, account = await _linked_lp(client)
    await outbox_drained(conn)

    # Right after the link nothing moved: every asset of the baseline is OK.
    lp = await _reconciliation(client, dealer)
    assert {k: lp[k] for k in ("tradingAccountId", "dealerAccountId", "venue", "address",
                               "status", "pendingEntries", "detail")} == {
        "tradingAccountId": account, "dealerAccountId": dealer, "venue": "BINANCE",
        "address": f"exchange:{account}", "status": "OK", "pendingEntries": 0, "detail": None}
    assets = _by_asset(lp)
    assert set(assets) == {"BTC", "ETH", "USDC", "USDT"}
    for check in assets.values():
        assert check["status"] == "OK"
        assert Decimal(check["baseline"]) == Decimal(check["venueBalance"]) > 0
        assert Decimal(check["drift"]) == Decimal(check["ledgerNetFlow"]) == 0

    # A hedge executed on the venue and booked as the venue reported it: they agree.
    venue = _paper(app)
    venue.pin_book("BTC/USDT", [(Decimal("64990"), Decimal("2"))],
                   [(Decimal("65000"), Decimal("2"))])
    bought = await _market_order(app, account, "h-1", Side.BUY, "0.5")
    assert [(e.price, e.quantity, e.fee.asset, e.fee.amount) for e in bought.executions] == [
        (Decimal("65000"), Decimal("0.5"), "BTC", Decimal("0.0005"))]
    await _book(app, *_hedge_of(bought, account, dealer))
    await outbox_drained(conn)
    lp = await _reconciliation(client, dealer)
    assert lp["status"] == "OK", lp
    assets = _by_asset(lp)
    assert {a: (c["status"], Decimal(c["drift"])) for a, c in assets.items()} == {
        a: ("OK", Decimal(0)) for a in ("BTC", "ETH", "USDC", "USDT")}
    assert (assets["BTC"]["venueChange"], assets["BTC"]["ledgerNetFlow"]) == (
        "0.49950000", "-0.49950000")
    assert Decimal(assets["USDT"]["venueChange"]) == Decimal("-32500")
    assert assets["USDT"]["ledgerNetFlow"] == "32500.000000"

    # The venue moved again and its entries wait in the outbox: IN_FLIGHT, not DRIFT.
    async with _ledger_writes_blocked(dsn) as holder:
        sold = await _market_order(app, account, "h-2", Side.SELL, "0.2")
        assert [(e.price, e.fee.asset, e.fee.amount) for e in sold.executions] == [
            (Decimal("64990"), "USDT", Decimal("12.998"))]
        await _book(app, *_hedge_of(sold, account, dealer))
        await until_lock_waiters(holder, 1)  # the relay is stuck in the journal write
        lp = await _reconciliation(client, dealer)
        assert (lp["status"], lp["pendingEntries"]) == ("IN_FLIGHT", 2), lp
        assets = _by_asset(lp)
        assert {a: c["status"] for a, c in assets.items()} == {
            "BTC": "IN_FLIGHT", "ETH": "OK", "USDC": "OK", "USDT": "IN_FLIGHT"}
        assert Decimal(assets["BTC"]["drift"]) == Decimal("-0.2")
        assert Decimal(assets["USDT"]["drift"]) == Decimal("12985.002")
    await outbox_drained(conn)
    lp = await _reconciliation(client, dealer)
    assert (lp["status"], lp["pendingEntries"]) == ("OK", 0), lp
    assets = _by_asset(lp)
    assert assets["USDT"]["ledgerNetFlow"] == "19514.998000"
    assert Decimal(assets["USDT"]["venueChange"]) == Decimal("-19514.998")

    # A posting with no venue counterpart: the ledger says 1.5 USDT more went to the LP.
    await _book(app, LedgerTransaction(
        reference="phantom", postings=(Posting(dealer_account(uuid.UUID(dealer)),
                                               exchange_account(uuid.UUID(account)),
                                               1_500_000, "USDT/6"),),
        metadata={"kind": "fee", "orderId": "phantom"}, timestamp=FILLED_AT))
    await outbox_drained(conn)
    lp = await _reconciliation(client, dealer)
    assert lp["status"] == "DRIFT", lp
    assets = _by_asset(lp)
    assert {a: c["status"] for a, c in assets.items()} == {
        "BTC": "OK", "ETH": "OK", "USDC": "OK", "USDT": "DRIFT"}
    assert Decimal(assets["USDT"]["drift"]) == Decimal("1.5")

    # The scheduled job exports the drift per LP and asset.
    app[SCHEDULER].get_job("reconciliation").modify(next_run_time=dt.datetime.now(dt.UTC))

    async def exported() -> str | None:
        text = await (await client.get("/metrics")).text()
        return text if "dealer_reconciliation_drift{" in text else None

    text = await eventually(exported, within_s=3.0)
    drift = {line.rsplit(" ", 1)[0]: line.rsplit(" ", 1)[1] for line in text.splitlines()
             if line.startswith("dealer_reconciliation_drift{")}
    assert drift == {
        f'dealer_reconciliation_drift{{asset="{asset}",trading_account_id="{account}"}}': value
        for asset, value in (("BTC", "0.0"), ("ETH", "0.0"), ("USDC", "0.0"), ("USDT", "1.5"))}


async def test_reconciliation_of_every_lp_and_without_baseline(
    client: Client, conn: asyncpg.Connection
) -> None:
    first_dealer, first = await _linked_lp(client)
    second_dealer, second = await _linked_lp(client, "OKX", "trading")
    await outbox_drained(conn)
    _, body = await get(client, RECONCILIATION, None)
    data = assert_ok(body)
    assert [(lp["dealerAccountId"], lp["tradingAccountId"], lp["status"])
            for lp in data["lps"]] == [(first_dealer, first, "OK"), (second_dealer, second, "OK")]
    assert data["pendingEntries"] == 0
    assert data["checkedAtDateTime"].endswith("Z")
    # An LP whose baseline is missing is reported as such, and the baseline is taken then.
    await conn.execute("DELETE FROM lp_balance_baseline WHERE trading_account_id = $1",
                       uuid.UUID(second))
    lp = await _reconciliation(client, second_dealer)
    assert (lp["status"], lp["assets"], lp["detail"]) == ("NO_BASELINE", [], None)
    lp = await _reconciliation(client, second_dealer)
    assert lp["status"] == "OK"


async def test_reconciliation_refusals(client: Client) -> None:
    status, body = await get(client, RECONCILIATION, {"dealerAccountId": str(uuid.uuid4())})
    assert status == 404, body
    assert_error(body, -130001)
    for params, field in (({"dealerAccountId": "x"}, "dealerAccountId"),
                          ({"tradingAccountId": str(uuid.uuid4())}, None)):
        status, body = await get(client, RECONCILIATION, params)
        assert_invalid(status, body, field)
    _, body = await get(client, RECONCILIATION, None, VIEWER)
    assert assert_ok(body)["lps"] == []
    await _refused_without_token_or_role(client, RECONCILIATION, {})


# ---------------------------------------------------------------- an unreachable ledger


@pytest.fixture
async def emulator() -> AsyncIterator[FormanceEmulator]:
    async with running_emulator() as running:
        yield running.emulator


@pytest.fixture
async def formance_client(
    emulator: FormanceEmulator, settings: Settings, secrets: DaemonSecrets,
    aiohttp_client: Callable[[web.Application], Awaitable[Client]],
) -> Client:
    configured = settings.model_copy(update={
        "ledger_backend": "formance", "formance_url": emulator.url, "formance_ledger": "desk"})
    return await aiohttp_client(create_app(configured, secrets))


async def test_an_unreachable_ledger_is_502_and_reconciliation_says_so(
    formance_client: Client, emulator: FormanceEmulator
) -> None:
    client = formance_client
    dealer, account = await _linked_lp(client)
    address = f"exchange:{account}"

    async def opened() -> bool:
        return "desk" in emulator.ledgers and address in emulator.ledger("desk").accounts

    await eventually(opened, within_s=3.0)
    emulator.available = False
    try:
        for path, params in ((ACCOUNT, {"address": address}), (TRANSACTIONS, {}),
                             (NET_FLOW, {"dealerAccountId": dealer})):
            status, body = await get(client, path, params)
            assert status == 502, (path, body)
            assert_error(body, -150003)
        lp = await _reconciliation(client, dealer)
        assert (lp["status"], lp["assets"]) == ("LEDGER_UNAVAILABLE", []), lp
        assert lp["detail"]
    finally:
        emulator.available = True
    _, body = await get(client, ACCOUNT, {"address": address})
    assert assert_ok(body)["metadata"]["venue"] == "BINANCE"


# ---------------------------------------------------------------- health


async def test_health_reports_the_local_ledger(client: Client) -> None:
    resp = await client.get("/api/v3/health")
    assert resp.status == 200
    ledger = (await resp.json())["checks"]["ledger"]
    assert ledger["status"] == "healthy"
    assert ledger["backend"] == "local"
    assert ledger["latencyMs"] >= 0
