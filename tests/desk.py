"""A desk for RFQ and hedging tests: three paper LPs (BINANCE spot, OKX trading, BYBIT spot)
linked to a BTC/USDT dealer, its clients, and the quote/accept calls over HTTP."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from tests.conftest import ADMIN, assert_ok
from tests.helpers import Client, connect_exchange_account, eventually, get, post

QUOTE = "/api/v3/fermata/quote/request"
QUOTE_GET = "/api/v3/fermata/quote/get"
QUOTE_LIST = "/api/v3/fermata/quote/list"
SUBMIT = "/api/v3/trading/order/submit"
ORDERS = "/api/v3/trading/order/list"
TRANSACTIONS = "/api/v3/ledger/transaction/list"
DEALER_BOOK = "/api/v3/fermata/dealer/orderBook"
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
ORDER_FIELDS = {
    "tradeOrderId", "tradingAccountId", "venue", "instrumentId", "quoteId", "baseAsset",
    "quoteAsset", "orderSide", "orderType", "timeInForce", "status", "rejectReason",
    "cancelReason", "limitPrice", "quantity", "orderQuantityType", "executedPrice",
    "executedQuantity", "executedCost", "fees", "executions", "createdAt", "createdAtDateTime",
    "updatedAt", "updatedAtDateTime",
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

        async def all_fresh() -> bool:
            _, payload = await get(client, DEALER_BOOK, {"dealerAccountId": dealer,
                                                         "symbol": "BTC/USDT", "depth": 1})
            lp_states = assert_ok(payload)["lps"]
            return len(lp_states) == 3 and all(lp["fresh"] for lp in lp_states)

        await eventually(all_fresh, within_s=3.0)
    accounts = [await new_client(client, f"client {n}") for n in range(clients)]
    return Desk(dealer, lps, accounts)


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
