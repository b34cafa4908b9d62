"""A desk for RFQ and hedging tests: three paper LPs (BINANCE spot, OKX trading, BYBIT spot)
linked to a BTC/USDT dealer, its clients, the quote/accept calls over HTTP, and what hedging
tests check (jobs settled, ledger balances, every asset summing to zero)."""

from __future__ import annotations

import asyncio
import collections
import random
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp import web

from dealer.app import create_app
from dealer.appkeys import ASSET_SCALES, CLOCK, MARKET_DATA, METRICS, POOL, VENUES
from dealer.auth import Role
from dealer.settings import DaemonSecrets, Settings
from hedging.worker import HedgeWorker
from tests.conftest import ADMIN, VIEWER, assert_ok, auth
from tests.helpers import (
    Client,
    connect_exchange_account,
    eventually,
    get,
    outbox_drained,
    post,
)
from venues.base import OrderRequest, OrderState, VenueAccount
from venues.paper.client import PaperVenue
from venues.paper.schemas import load_journal

QUOTE = "/api/v3/fermata/quote/request"
QUOTE_GET = "/api/v3/fermata/quote/get"
QUOTE_LIST = "/api/v3/fermata/quote/list"
SUBMIT = "/api/v3/trading/order/submit"
ORDERS = "/api/v3/trading/order/list"
TRANSACTIONS = "/api/v3/ledger/transaction/list"
DEALER_BOOK = "/api/v3/fermata/dealer/orderBook"
AppClient = Callable[[web.Application], Awaitable[Client]]  # the aiohttp_client fixture
INSTRUMENT = "FERMATA:BTC/USDT"
LOT = Decimal("0.00001")  # the strictest BTC/USDT lot of the three paper venues
TICK = Decimal("0.1")  # and tick
RFQ_TABLES = ("quote", "trade_order", "trade_execution", "hedge_job", "ledger_outbox")
QUOTE_FIELDS = {
    "quoteId", "dealerAccountId", "tradingAccountId", "instrumentId", "symbol", "orderSide",
    "price", "bidPrice", "askPrice", "quantity", "quoteQuantity", "bidQuoteQuantity",
    "askQuoteQuantity", "status", "createdAt", "createdAtDateTime", "expireAt",
    "expireAtDateTime",
}
ORDER_FIELDS = {  # seeds/001's TradeOrder
    "tradeOrderId", "tradingAccountId", "venue", "positionId", "instrumentId", "quoteId",
    "baseAsset", "quoteAsset", "orderSide", "orderType", "timeInForce", "status",
    "rejectReason", "cancelReason", "limitPrice", "stopPrice", "quantity", "orderQuantityType",
    "quantityRounding", "executedPrice", "executedQuantity", "executedCost", "fees",
    "executions", "createdAt", "createdAtDateTime", "updatedAt", "updatedAtDateTime",
    "expireAt", "expireAtDateTime", "canceledAt", "canceledAtDateTime",
}


@dataclass(frozen=True, slots=True)
class Desk:
    dealer: str
    lps: list[str]
    clients: list[str]

    @property
    def client(self) -> str:
        return self.clients[0]


async def new_client(client: Client, nickname: str) -> str:
    status, body = await post(client, "/api/v3/fermata/client/create", {"nickname": nickname})
    assert status == 200, body
    account: str = assert_ok(body)["tradingAccountId"]
    return account


async def make_desk(client: Client, *, clients: int = 1, link: bool = True,
                **config: Any) -> Desk:
    """Three paper LPs linked to a BTC/USDT dealer (config: extra dealer fields), its clients,
    and (when linked) every LP book fresh in the dealer's consolidated book."""
    lps = [await connect_exchange_account(client, venue, external)
           for venue, external in (("BINANCE", "spot"), ("OKX", "trading"), ("BYBIT", "spot"))]
    status, body = await post(client, "/api/v3/fermata/dealer/create",
                              {"symbols": ["BTC/USDT"], "nickname": "desk", **config})
    assert status == 200, body
    dealer: str = assert_ok(body)["dealerAccountId"]
    if link:
        for lp in lps:
            status, body = await post(client, "/api/v3/fermata/dealer/link",
                                      {"dealerAccountId": dealer, "tradingAccountId": lp})
            assert status == 200, body

        await books_fresh(client, dealer, "BTC/USDT")
    accounts = [await new_client(client, f"client {n}") for n in range(clients)]
    return Desk(dealer, lps, accounts)


async def books_fresh(client: Client, dealer: str, symbol: str, *, within_s: float = 3.0
                      ) -> None:
    """Wait until the app behind `client` has a fresh book of `symbol` from each of the
    dealer's three LPs."""

    async def all_fresh() -> bool:
        _, payload = await get(client, DEALER_BOOK, {"dealerAccountId": dealer,
                                                     "symbol": symbol, "depth": 1})
        lp_states = assert_ok(payload)["lps"]
        return len(lp_states) == 3 and all(lp["fresh"] for lp in lp_states)

    await eventually(all_fresh, within_s=within_s)


def quote_body(desk: Desk, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"dealerAccountId": desk.dealer, "tradingAccountId": desk.client,
                            "symbol": "BTC/USDT"}
    body.update(fields)
    return {k: v for k, v in body.items() if v is not None}


async def request_quote(client: Client, desk: Desk, headers: dict[str, str] = ADMIN,
                 **fields: Any) -> dict[str, Any]:
    status, body = await post(client, QUOTE, quote_body(desk, **fields), headers)
    assert status == 200, body
    quote: dict[str, Any] = assert_ok(body)
    assert set(quote) == QUOTE_FIELDS
    return quote


def accept_body(quote: dict[str, Any], side: str | None = None, **fields: Any
                 ) -> dict[str, Any]:
    body: dict[str, Any] = {
        "tradingAccountId": quote["tradingAccountId"], "instrumentId": quote["instrumentId"],
        "orderSide": side or quote["orderSide"], "orderType": "QUOTED",
        "quantity": quote["quantity"], "quoteId": quote["quoteId"]}
    body.update(fields)
    return {k: v for k, v in body.items() if v is not None}


async def accept(client: Client, quote: dict[str, Any], side: str | None = None,
                  headers: dict[str, str] = ADMIN, **fields: Any) -> dict[str, Any]:
    status, body = await post(client, SUBMIT, accept_body(quote, side, **fields), headers)
    assert status == 200, body
    orders = assert_ok(body)
    assert isinstance(orders, list), orders
    assert len(orders) == 1, orders
    order: dict[str, Any] = orders[0]
    assert set(order) == ORDER_FIELDS
    return order


# ---------------------------------------------------------------- hedging

FINAL = ("HEDGED", "FAILED", "CANCELLED")


def random_fill(rng: random.Random, *, smallest: str = "0.001", largest: str = "0.5"
                ) -> tuple[str, str]:
    """A client side and a whole-lot quantity between `smallest` and `largest` BTC."""
    low, high = int(Decimal(smallest) / LOT), int(Decimal(largest) / LOT)
    return rng.choice(("BUY", "SELL")), str(rng.randint(low, high) * LOT)


async def app_client(settings: Settings, secrets: DaemonSecrets, aiohttp_client: AppClient,
                     **changes: Any) -> tuple[web.Application, Client]:
    """An app on `settings` with `changes`, and its test client."""
    app = create_app(settings.model_copy(update=changes), secrets)
    return app, await aiohttp_client(app)


async def hedging_app(settings: Settings, secrets: DaemonSecrets, aiohttp_client: AppClient,
                      **changes: Any) -> tuple[web.Application, Client]:
    """`app_client` with the app's hedge worker polling every 20 ms (unless `changes` say
    otherwise), for the tests that wait for it."""
    return await app_client(settings, secrets, aiohttp_client,
                            **{"hedge_poll_ms": 20, **changes})


async def app_with_desk(settings: Settings, secrets: DaemonSecrets, aiohttp_client: AppClient,
                        **changes: Any) -> tuple[web.Application, Client, Desk]:
    """An app on `settings` with `changes`, its test client, and its desk (`make_desk`)."""
    app, client = await app_client(settings, secrets, aiohttp_client, **changes)
    return app, client, await make_desk(client)


async def desk_with_fills(settings: Settings, secrets: DaemonSecrets, aiohttp_client: AppClient,
                          fills: Sequence[tuple[str, str]] = (("BUY", "0.3"),), **changes: Any
                          ) -> tuple[web.Application, Client, Desk]:
    """An app on `settings` with `changes`, its desk, and its client `fills` (by default one
    BUY of 0.3 BTC) quoted and accepted one at a time, which the hedging tests then hedge
    their own way."""
    app, client, desk = await app_with_desk(settings, secrets, aiohttp_client, **changes)
    await fill_all(client, desk, fills, concurrency=1)
    return app, client, desk


async def hedging_desk(settings: Settings, secrets: DaemonSecrets, aiohttp_client: AppClient,
                       fills: Sequence[tuple[str, str]] = (("BUY", "0.3"),), **changes: Any
                       ) -> tuple[web.Application, Client, Desk]:
    """`desk_with_fills` on a `hedging_app`: the app's hedge worker polls every 20 ms."""
    return await desk_with_fills(settings, secrets, aiohttp_client, fills,
                                 **{"hedge_poll_ms": 20, **changes})


def registry_value(app: web.Application, name: str, **labels: str) -> float:
    """A sample of the app's metrics registry (0 when it has none yet)."""
    return app[METRICS].registry.get_sample_value(name, labels) or 0.0


async def metric_value(client: Client, line_start: str) -> float:
    """The value of the first /metrics line starting with `line_start` (0 when none)."""
    text = await (await client.get("/metrics")).text()
    for line in text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def fill_all(client: Client, desk: Desk, fills: Sequence[tuple[str, str]], *,
                   concurrency: int = 8) -> list[dict[str, Any]]:
    """Quote and accept every (side, quantity), `concurrency` at a time; the orders, in order."""
    gate = asyncio.Semaphore(concurrency)

    async def one(side: str, quantity: str) -> dict[str, Any]:
        async with gate:
            quote = await request_quote(client, desk, orderSide=side, quantity=quantity)
            return await accept(client, quote)

    return list(await asyncio.gather(*(one(side, quantity) for side, quantity in fills)))


async def hedges_final(conn: asyncpg.Connection, count: int, *, within_s: float = 20.0
                       ) -> list[asyncpg.Record]:
    """Wait until the hedge jobs of `count` client fills exist and no job (carry jobs too) is
    open; answers them all."""

    async def settled() -> list[asyncpg.Record] | None:
        rows = await conn.fetch("SELECT * FROM hedge_job ORDER BY created_at")
        fills = sum(1 for r in rows if r["trade_order_id"] is not None)
        if fills == count and all(r["status"] in FINAL for r in rows):
            return rows
        return None

    rows: list[asyncpg.Record] = await eventually(settled, within_s=within_s, every_s=0.05)
    return rows


async def ledger_balances(client: Client, address: str) -> dict[str, Decimal]:
    status, body = await get(client, "/api/v3/ledger/account", {"address": address}, VIEWER)
    assert status == 200, body
    return {b["asset"]: Decimal(b["amount"]) for b in assert_ok(body)["balances"]}


async def assets_sum_to_zero(conn: asyncpg.Connection) -> None:
    sums = await conn.fetch(
        "SELECT asset, sum(input - output) AS total FROM ledger_balance GROUP BY asset")
    assert sums
    assert all(r["total"] == 0 for r in sums), [dict(r) for r in sums]


def venue_submits(data_dir: Path) -> collections.Counter[tuple[str, str]]:
    """How often each (venue, client order id) reached a paper venue, from the venues' journals
    (`DEALER_PAPER_JOURNAL`): a repeated submit of one id shows as a count above one."""
    counts: collections.Counter[tuple[str, str]] = collections.Counter()
    for path in sorted((data_dir / "paper").glob("*.jsonl")):
        venue = path.stem.upper()
        for entry in load_journal(path):
            if entry.event in ("submit", "duplicate") and entry.order is not None:
                counts[(venue, entry.order.client_order_id)] += 1
    return counts


def hedge_worker(app: web.Application, venues: Any = None, pool: asyncpg.Pool | None = None,
                 **options: Any) -> HedgeWorker:
    """A hedge worker on the app's database, books and venues (or `venues`), quick to retry."""
    options = {"poll_interval_s": 0.02, "backoff_s": 0.02, "unknown_grace_s": 0.5, **options}
    return HedgeWorker(pool or app[POOL], venues or app[VENUES], app[ASSET_SCALES],
                       app[METRICS], app[CLOCK], books=app[MARKET_DATA].fresh_book, **options)


def paper_venue(app: web.Application, venue: str) -> PaperVenue:
    connector = app[VENUES].execution(venue)
    assert isinstance(connector, PaperVenue)
    return connector


async def move_venue_balance(app: web.Application, venue: str, trading_account_id: str,
                             asset: str, delta: Decimal) -> None:
    """Move an LP's free balance on its paper venue by hand (what no booking explains)."""
    connector = paper_venue(app, venue)
    account = VenueAccount(uuid.UUID(trading_account_id), "")
    [balance] = [b for b in await connector.balances(account) if b.asset == asset]
    connector.set_balance(account, asset, balance.free + delta)


async def unlinked_by_drain(conn: asyncpg.Connection, desk: Desk,
                            drained: Sequence[uuid.UUID | str]) -> Desk:
    """Once the drain job unlinked every `drained` LP (with no hedge of it in flight, its next
    run does), the desk without them."""
    gone = {str(lp) for lp in drained}

    async def unlinked() -> bool:
        return not await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM dealer_link WHERE trading_account_id::text = ANY($1))",
            list(gone))

    await eventually(unlinked, within_s=5.0, every_s=0.05)
    return Desk(desk.dealer, [lp for lp in desk.lps if lp not in gone], desk.clients)


async def check_books(client: Client, conn: asyncpg.Connection, desk: Desk, *,
                      reconcile: bool = True) -> dict[str, Decimal]:
    """The dealer's base back within a lot of zero, every asset summing to zero, and (unless
    a test moved LP balances by hand) every LP reconciled with its venue up to the bookings'
    rounding, which the hedge worker kept; answers the dealer's balances."""
    await outbox_drained(conn, within_s=10.0)
    balances = await ledger_balances(client, f"dealer:{desk.dealer}")
    assert abs(balances.get("BTC/8", Decimal(0))) < LOT, balances
    await assets_sum_to_zero(conn)
    if not reconcile:
        return balances
    status, body = await get(client, "/api/v3/ledger/reconciliation",
                             {"dealerAccountId": desk.dealer}, VIEWER)
    assert status == 200, body
    lps = assert_ok(body)["lps"]
    assert len(lps) == len(desk.lps)
    # USDT is booked at scale 6 and each hedge's quote leg and fee round in the dealer's
    # favour, while the paper venue keeps 8+ decimals: the hedge worker keeps what every
    # booking rounded off, and that must explain the venue exactly.
    for lp in lps:
        assert lp["pendingEntries"] == 0, lp
        for asset in lp["assets"]:
            assert asset["rounding"] is not None, (lp["venue"], asset)
            assert Decimal(asset["drift"]) == Decimal(asset["rounding"]), (lp["venue"], asset)
            assert Decimal(asset["unexplained"]) == 0, (lp["venue"], asset)
    return balances


# ---------------------------------------------------------------- three LPs, one BUY size

LP_VENUES = (("BINANCE", "spot"), ("OKX", "trading"), ("BYBIT", "spot"))


async def lp_desk(client: Client, last_look_bps: str, **config: Any
                  ) -> tuple[str, str, dict[str, str]]:
    """A BTC/USDT dealer (with `lastLookBps` and `config`) linked to one paper LP on each of
    LP_VENUES, and a client: dealer id, client id, the client's trader token."""
    accounts = [await connect_exchange_account(client, v, e) for v, e in LP_VENUES]
    _, body = await post(client, "/api/v3/fermata/dealer/create",
                         {"symbols": ["BTC/USDT"], "lastLookBps": last_look_bps, **config})
    dealer = assert_ok(body)["dealerAccountId"]
    for account in accounts:
        status, body = await post(client, "/api/v3/fermata/dealer/link",
                                  {"dealerAccountId": dealer, "tradingAccountId": account})
        assert status == 200, body
    _, body = await post(client, "/api/v3/fermata/client/create", {})
    customer = assert_ok(body)["tradingAccountId"]
    return dealer, customer, auth(Role.TRADER, [uuid.UUID(customer)])


async def buy_quote(client: Client, dealer: str, customer: str, headers: dict[str, str]
                    ) -> dict[str, Any]:
    """A BUY quote for 0.5 BTC, once the LPs' books are in."""
    async def quoted() -> dict[str, Any] | None:
        status, body = await post(client, QUOTE, {
            "dealerAccountId": dealer, "tradingAccountId": customer, "symbol": "BTC/USDT",
            "orderSide": "BUY", "quantity": "0.5"}, headers)
        return body["data"] if status == 200 else None

    result: dict[str, Any] = await eventually(quoted, within_s=3)
    return result


async def accept_buy(client: Client, customer: str, quote: dict[str, Any],
                     headers: dict[str, str], **fields: str) -> tuple[int, dict[str, Any]]:
    """Accept a `buy_quote`: status and body."""
    return await post(client, SUBMIT, {
        "tradingAccountId": customer, "instrumentId": "FERMATA:BTC/USDT", "orderSide": "BUY",
        "orderType": "QUOTED", "quantity": quote["quantity"], "quoteId": quote["quoteId"],
        **fields}, headers)


# ---------------------------------------------------------------- venues that answer otherwise

class VenueProxies:
    """The app's venues with `submit_order` replaced by `submit(venue, account, order)`, which
    gets the real connector (for hedge workers meeting late, open or held answers)."""

    def __init__(self, inner: Any, submit: Any) -> None:
        self.inner, self.submit = inner, submit

    def execution(self, venue: str) -> Any:
        return _VenueProxy(self, self.inner.execution(venue))


class _VenueProxy:
    def __init__(self, owner: VenueProxies, venue: Any) -> None:
        self._owner, self._venue = owner, venue

    def __getattr__(self, name: str) -> Any:
        return getattr(self._venue, name)

    async def submit_order(self, account: VenueAccount, order: OrderRequest) -> OrderState:
        state: OrderState = await self._owner.submit(self._venue, account, order)
        return state
