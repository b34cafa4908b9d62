"""A fake Cadenza v3 server (seeds/001) for the cadenza connector's tests.

It speaks the seed's shapes: the `{success, errno, error, details, data}` envelope (+ `pagination`
on lists), Bearer auth (401 envelope without it), decimals as strings, times as unix ms plus ISO
strings, and the Centrifugo JSON protocol on `/connection/websocket`. Orders are matched by the
paper connector's `MatchingEngine` (same fees, starting balances and instrument rules as paper,
so one contract suite runs against both). One liberty, documented in the connector: TradeOrders
echo the `clientOrderId` they were submitted with (`echo_client_order_ids = False` answers
`null`, as a server keeping to the seed's TradeOrder shape would).

Test controls (all synchronous, callable from the test's event loop):
`set_book` (publishes to subscribers with the next offset; crossed books welcome), `skip_offsets`
(the next publication jumps: a gap), `set_balance`, `add_account`, `fail_next` (the next N
requests answer an error envelope), `drop_next_answer` (apply the request, then lose or delay the
answer), `reject_api_key`; `await kill_websockets()` ends every websocket. Observations:
`requests`, `ws_connections`, `pongs`, `subscribers(channel)`.

Run it with `async with running(FakeCadenza()) as server:` (127.0.0.1, a free port), or
`FakeServer(fake).start()` / `.close()` where a context manager does not fit; `unused_port()`
gives an address where nothing answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import socket as sockets
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web
from aiohttp.test_utils import TestServer

from venues.base import (
    BookSnapshot,
    Instrument,
    Level,
    OrderRequest,
    OrderState,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
    UnknownOrder,
    split_symbol,
)
from venues.fees import default_fees
from venues.paper.config import (
    CATALOGUE,
    catalogue_instrument,
    default_starting_balances,
    identities_for,
)
from venues.paper.engine import MatchingEngine

TOKEN = "fake-cadenza-token"
API = "/api/v3"
WS_PATH = "/connection/websocket"
SUBMIT_PATH = f"{API}/trading/order/submit"
ORDER_BOOK_CHANNEL = "market:orderBook:"

# (errno, details.code) of the errors the fake answers, in the seed's style.
_ERRORS: dict[str, tuple[int, int]] = {
    "INTERNAL": (500, -1),
    "SERVICE_UNAVAILABLE": (503, -2),
    "INVALID_REQUEST": (400, -100001),
    "UNAUTHENTICATED": (401, -101001),
    "INVALID_TOKEN": (401, -101002),
    "FORBIDDEN": (403, -101004),
    "TOO_MANY_REQUESTS": (429, -100006),
    "CREDENTIAL_NOT_FOUND": (404, -110001),
    "CREDENTIAL_NOT_VERIFIED": (400, -110003),
    "CREDENTIAL_VERIFICATION_FAILED": (400, -110004),
    "TRADING_ACCOUNT_NOT_FOUND": (404, -120001),
    "TRADING_ACCOUNT_ALREADY_CONNECTED": (409, -120002),
    "EXTERNAL_ACCOUNT_UNKNOWN": (422, -120003),
    "INSTRUMENT_NOT_FOUND": (404, -140002),
    "ORDER_NOT_FOUND": (404, -150001),
}
_MESSAGES = {
    "INTERNAL": "Internal error",
    "SERVICE_UNAVAILABLE": "Service temporarily unavailable",
    "UNAUTHENTICATED": "Bearer token required",
    "INVALID_TOKEN": "Invalid access token",
    "FORBIDDEN": "Insufficient permissions",
    "TOO_MANY_REQUESTS": "Too many requests",
    "INVALID_REQUEST": "Invalid request",
}


def _code_of(status: int) -> str:
    by_status = {503: "SERVICE_UNAVAILABLE", 401: "INVALID_TOKEN", 403: "FORBIDDEN",
                 429: "TOO_MANY_REQUESTS", 400: "INVALID_REQUEST"}
    return by_status.get(status, "INTERNAL")


def text(value: Decimal) -> str:
    return format(value, "f")


def iso(millis: int) -> str:
    moment = dt.datetime.fromtimestamp(millis / 1000, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{millis % 1000:03d}Z"


class FakeError(Exception):
    """Answered as the seed's error envelope."""

    def __init__(self, code: str, message: str | None = None) -> None:
        super().__init__(message or _MESSAGES.get(code, code))
        self.code = code
        self.status, self.errno = _ERRORS[code]


@dataclass
class FakeCredential:
    credential_id: str
    venue: str
    api_key: str
    status: str = "CREATED"
    created_at: int = 0


@dataclass
class FakeAccount:
    trading_account_id: str
    venue: str
    external_id: str
    account_type: str
    external_account_type: str
    nickname: str
    api_key: str | None
    credential_ids: list[str] = field(default_factory=list)
    status: str = "ACTIVE"
    created_at: int = 0


@dataclass
class FakeOrder:
    trade_order_id: str
    trading_account_id: str
    venue: str
    client_order_id: str


@dataclass
class _Failure:
    status: int
    path: str | None
    code: str | None
    body: bytes | None


@dataclass
class _Drop:
    path: str
    hang_s: float | None


@dataclass(eq=False)
class _Socket:
    ws: web.WebSocketResponse
    outbox: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    channels: set[str] = field(default_factory=set)
    connected: bool = False


@dataclass(frozen=True)
class RunningFake:
    fake: FakeCadenza
    url: str
    ws_url: str


class FakeCadenza:
    """The state of a fake Cadenza and the aiohttp application serving it."""

    def __init__(
        self,
        *,
        token: str = TOKEN,
        ping_interval_s: float = 25.0,
        send_pings: bool = True,
        starting_balances: Mapping[str, Decimal] | None = None,
        fees: tuple[Decimal, Decimal] | None = None,
    ) -> None:
        self.token = token
        self.ping_interval_s = ping_interval_s
        self.send_pings = send_pings  # False: announce pings, never send them (a dead link)
        # False: verify leaves tradingAccountId out of identities already connected.
        self.verify_reports_accounts = True
        # False: TradeOrders carry no clientOrderId, as the seed's TradeOrder shape has none.
        self.echo_client_order_ids = True
        self._starting_balances = (default_starting_balances() if starting_balances is None
                                   else dict(starting_balances))
        self._fees = fees
        self._engines: dict[str, MatchingEngine] = {}
        self._instruments: dict[str, dict[str, Instrument]] = {}
        self._books: dict[str, BookSnapshot] = {}  # instrumentId → latest book
        self._offsets: dict[str, int] = {}  # channel → last publication offset
        self._skips: dict[str, int] = {}
        self._credentials: dict[str, FakeCredential] = {}
        self._accounts: dict[str, FakeAccount] = {}
        self._orders: dict[str, FakeOrder] = {}  # tradeOrderId → order
        self._order_ids: dict[tuple[str, str], str] = {}  # (account, clientOrderId) → id
        self._account_orders: dict[str, list[str]] = {}  # account → ids, oldest first
        self._failures: deque[_Failure] = deque()
        self._drops: deque[_Drop] = deque()
        self._rejected_keys: set[str] = set()
        self._sockets: set[_Socket] = set()
        self._last_ms = 0
        self.requests: list[tuple[str, str]] = []
        self.ws_connections = 0
        self.pongs = 0
        self.syncs = 0

    # ------------------------------------------------------------ test controls

    def now_ms(self) -> int:
        """Strictly increasing unix ms: a later event never shares a moment with an earlier."""
        self._last_ms = max(time.time_ns() // 1_000_000, self._last_ms + 1)
        return self._last_ms

    def instruments(self, venue: str) -> dict[str, Instrument]:
        listed = self._instruments.get(venue)
        if listed is None:
            listed = {}
            for symbol in CATALOGUE:
                instrument = catalogue_instrument(venue, symbol)
                if instrument is not None:
                    listed[symbol] = instrument
            self._instruments[venue] = listed
        return listed

    def engine(self, venue: str) -> MatchingEngine:
        engine = self._engines.get(venue)
        if engine is None:
            maker, taker = self._fees or default_fees(venue)
            engine = MatchingEngine(venue, maker, taker, self._starting_balances,
                                    self.instruments(venue))
            self._engines[venue] = engine
        return engine

    def add_account(self, venue: str = "BINANCE", external_id: str = "spot") -> str:
        """A trading account connected already (no credential); answers its tradingAccountId."""
        account = FakeAccount(str(uuid.uuid4()), venue, external_id, "SPOT", "SPOT",
                              f"{venue.lower()} {external_id}", None, created_at=self.now_ms())
        self._accounts[account.trading_account_id] = account
        return account.trading_account_id

    def set_balance(self, trading_account_id: str, asset: str, amount: Decimal) -> None:
        account = self._accounts[trading_account_id]
        self.engine(account.venue).set_balance(trading_account_id, asset, amount)

    def set_book(self, venue: str, symbol: str, bids: Sequence[Level], asks: Sequence[Level],
                 *, timestamp: int | None = None) -> BookSnapshot:
        """Replace the book and publish it with the next offset (its `sequence`)."""
        instrument = f"{venue}:{symbol}"
        channel = ORDER_BOOK_CHANNEL + instrument
        offset = self._offsets.get(channel, 0) + 1 + self._skips.pop(channel, 0)
        self._offsets[channel] = offset
        now = self.now_ms()
        book = BookSnapshot(venue, symbol, tuple(bids), tuple(asks),
                            timestamp if timestamp is not None else now, offset)
        self._books[instrument] = book
        if symbol in self.instruments(venue):
            self.engine(venue).on_book(symbol, book, now)
        frame = json.dumps({"push": {"channel": channel, "pub": {
            "data": self._book_json(instrument, book), "offset": offset}}})
        for socket in self._sockets:
            if channel in socket.channels:
                socket.outbox.put_nowait(frame)
        return book

    def skip_offsets(self, venue: str, symbol: str, count: int = 1) -> None:
        """The next publication of this book jumps `count` offsets (as if some were lost)."""
        channel = ORDER_BOOK_CHANNEL + f"{venue}:{symbol}"
        self._skips[channel] = self._skips.get(channel, 0) + count

    def fail_next(self, count: int = 1, status: int = 503, path: str | None = None, *,
                  code: str | None = None, body: bytes | None = None) -> None:
        """The next `count` requests (to `path` only, when given) answer `status` without being
        applied: the error envelope of `code` (by default as the status implies), or `body`."""
        self._failures.extend(_Failure(status, path, code, body) for _ in range(count))

    def drop_next_answer(self, path: str = SUBMIT_PATH, *, hang_s: float | None = None) -> None:
        """Apply the next request to `path`, then lose its answer: close the connection, or
        answer only after `hang_s` seconds (past the client's timeout)."""
        self._drops.append(_Drop(path, hang_s))

    def reject_api_key(self, api_key: str) -> None:
        """Verification of credentials with this API key fails (the exchange refuses it)."""
        self._rejected_keys.add(api_key)

    async def kill_websockets(self) -> None:
        """Close every websocket connection (clients see the connection end)."""
        for socket in list(self._sockets):
            socket.connected = False
            await socket.ws.close(code=WSCloseCode.GOING_AWAY, message=b"killed by the test")

    def subscribers(self, channel: str) -> int:
        return sum(1 for s in self._sockets if channel in s.channels)

    def count(self, method: str, path: str) -> int:
        return sum(1 for r in self.requests if r == (method, path))

    def account(self, trading_account_id: str) -> FakeAccount:
        return self._accounts[trading_account_id]

    # ------------------------------------------------------------ application

    def make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        routes = [
            web.get(f"{API}/market/instrument/list", self._instrument_list),
            web.post(f"{API}/market/instrument/sync", self._instrument_sync),
            web.get(f"{API}/market/orderBook/get", self._order_book),
            web.post(SUBMIT_PATH, self._submit),
            web.post(f"{API}/trading/order/cancel", self._cancel),
            web.get(f"{API}/trading/order/list", self._order_list),
            web.get(f"{API}/portfolio/list", self._portfolio_list),
            web.get(f"{API}/tradingAccount/list", self._account_list),
            web.post(f"{API}/tradingAccount/connect", self._connect),
            web.post(f"{API}/credential/create", self._credential_create),
            web.post(f"{API}/credential/verify", self._credential_verify),
            web.get(WS_PATH, self._websocket),
        ]
        app.add_routes(routes)
        app.on_shutdown.append(self._on_shutdown)
        return app

    async def _on_shutdown(self, app: web.Application) -> None:
        await self.kill_websockets()

    @web.middleware
    async def _middleware(
        self, request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        if request.path == WS_PATH:
            return await handler(request)
        failure: _Failure | None = None
        try:
            self._authenticate(request)
            failure = self._take_failure(request.path)
            if failure is not None and failure.body is not None:
                return web.Response(status=failure.status, body=failure.body,
                                    content_type="text/html")
            if failure is not None:
                raise FakeError(failure.code or _code_of(failure.status))
            response = await handler(request)
        except FakeError as exc:
            return self._error(request, exc, failure.status if failure else exc.status)
        drop = next((d for d in self._drops if d.path == request.path), None)
        if drop is not None:
            self._drops.remove(drop)
            if drop.hang_s is None:
                assert request.transport is not None
                request.transport.close()
            else:
                await asyncio.sleep(drop.hang_s)
        return response

    def _take_failure(self, path: str) -> _Failure | None:
        for failure in self._failures:
            if failure.path is None or failure.path == path:
                self._failures.remove(failure)
                return failure
        return None

    def _authenticate(self, request: web.Request) -> None:
        header = request.headers.get("Authorization", "")
        scheme, _, credentials = header.partition(" ")
        if scheme != "Bearer" or not credentials:
            raise FakeError("UNAUTHENTICATED")
        if credentials != self.token:
            raise FakeError("INVALID_TOKEN")

    def _error(self, request: web.Request, exc: FakeError, status: int) -> web.Response:
        return web.json_response(status=status, data={
            "success": False, "errno": exc.errno, "error": str(exc),
            "details": {"code": exc.code, "resource": request.path,
                        "action": request.method.lower(), "request_id": str(uuid.uuid4())},
            "data": None,
        })

    @staticmethod
    def _ok(data: Any, pagination: dict[str, Any] | None = None) -> web.Response:
        body: dict[str, Any] = {"success": True, "errno": 0, "error": None, "data": data}
        if pagination is not None:
            body["pagination"] = pagination
        return web.json_response(body)

    @staticmethod
    def _page(request: web.Request, items: list[Any]) -> web.Response:
        limit = _int_param(request, "limit", 50, 1, 1000)
        offset = _int_param(request, "offset", 0, 0, 10**9)
        page = items[offset:offset + limit]
        return FakeCadenza._ok(page, {"offset": offset, "limit": limit, "total": len(items),
                                      "cursor": None, "hasNext": offset + len(page) < len(items)})

    # ------------------------------------------------------------ market data

    async def _instrument_list(self, request: web.Request) -> web.Response:
        venue = request.query.get("venue", "BINANCE")
        wanted = request.query.getall("symbols", [])
        listed = [i for s, i in self.instruments(venue).items() if not wanted or s in wanted]
        return self._page(request, [self._instrument_json(i) for i in listed])

    async def _instrument_sync(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        venue = body.get("venue")
        if not isinstance(venue, str) or not venue:
            raise FakeError("INVALID_REQUEST", "venue is required")
        self.syncs += 1
        symbols = body.get("symbols") or list(self.instruments(venue))
        synced = sum(1 for s in symbols if s in self.instruments(venue))
        return self._ok({"venue": venue, "total": synced, "synced": synced, "added": 0,
                         "updated": synced})

    async def _order_book(self, request: web.Request) -> web.Response:
        instrument = request.query.get("instrumentId")
        if instrument is None:
            venue, symbol = request.query.get("venue"), request.query.get("symbol")
            if not venue or not symbol:
                raise FakeError("INVALID_REQUEST", "give instrumentId or venue and symbol")
            instrument = f"{venue}:{symbol}"
        depth = _int_param(request, "depth", 10, 1, 1000)
        venue, _, symbol = instrument.partition(":")
        if symbol not in self.instruments(venue):
            raise FakeError("INSTRUMENT_NOT_FOUND", f"Instrument {instrument} not found")
        book = self._books.get(instrument) or BookSnapshot(venue, symbol, (), (),
                                                           self.now_ms(), 0)
        return self._ok(self._book_json(instrument, book.top(depth)))

    @staticmethod
    def _book_json(instrument: str, book: BookSnapshot) -> dict[str, Any]:
        return {"instrumentId": instrument, "venue": book.venue, "symbol": book.symbol,
                "asks": [[text(p), text(q)] for p, q in book.asks],
                "bids": [[text(p), text(q)] for p, q in book.bids],
                "timestamp": book.ts_event}

    @staticmethod
    def _instrument_json(i: Instrument) -> dict[str, Any]:
        return {
            "instrumentId": i.instrument_id, "venue": i.venue, "symbol": i.symbol,
            "externalSymbol": i.external_symbol, "description": f"{i.base} / {i.quote}",
            "instrumentType": "SPOT", "status": i.status, "baseAsset": i.base,
            "quoteAsset": i.quote, "baseSecurityType": "CRYPTO", "quoteSecurityType": "CRYPTO",
            "lotSize": text(i.lot_size), "pipSize": text(i.tick_size),
            "minQuantity": text(i.min_quantity),
            "maxQuantity": text(i.max_quantity) if i.max_quantity is not None else "0",
            "minNotional": text(i.min_notional), "orderTypes": ["MARKET", "LIMIT"],
            "timeInForceOptions": ["GTC", "IOC", "FOK"],
        }

    # ------------------------------------------------------------ orders

    async def _submit(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        account = self._account_of(body.get("tradingAccountId"))
        instrument = _required(body, "instrumentId")
        venue, _, symbol = instrument.partition(":")
        if venue != account.venue:
            raise FakeError("INVALID_REQUEST", "instrumentId is not of the account's venue")
        order = _order_request(body, symbol)
        engine = self.engine(venue)
        now = self.now_ms()
        key = (account.trading_account_id, order.client_order_id)
        if key not in self._order_ids:
            trade_order_id = str(uuid.uuid4())
            self._order_ids[key] = trade_order_id
            self._orders[trade_order_id] = FakeOrder(trade_order_id, account.trading_account_id,
                                                     venue, order.client_order_id)
            self._account_orders.setdefault(account.trading_account_id, []).append(
                trade_order_id)
        if symbol not in self.instruments(venue):
            state = engine.reject(account.trading_account_id, order,
                                  f"unknown instrument {instrument}", now)
        else:
            book = self._books.get(instrument) or BookSnapshot(venue, symbol, (), (), now, 0)
            state = engine.submit(account.trading_account_id, order, book, now)
        return self._ok([self._order_json(self._orders[self._order_ids[key]], state)])

    async def _cancel(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        account = self._account_of(body.get("tradingAccountId"))
        order = self._orders.get(str(body.get("tradeOrderId")))
        if order is None or order.trading_account_id != account.trading_account_id:
            raise FakeError("ORDER_NOT_FOUND", "Trade order not found")
        state = self.engine(order.venue).cancel(order.trading_account_id,
                                                order.client_order_id, self.now_ms())
        return self._ok(self._order_json(order, state))

    async def _order_list(self, request: web.Request) -> web.Response:
        query = request.query
        account_id = query.get("tradingAccountId")
        ids = (self._account_orders.get(account_id, []) if account_id
               else list(self._orders))
        if "tradeOrderId" in query:
            ids = [i for i in ids if i == query["tradeOrderId"]]
        if query.get("ascending", "false").lower() != "true":
            ids = list(reversed(ids))  # newest first
        items = []
        for trade_order_id in ids:
            order = self._orders[trade_order_id]
            try:
                state = self.engine(order.venue).status(order.trading_account_id,
                                                        order.client_order_id)
            except UnknownOrder:
                continue  # recorded, but the engine refused to hold it (malformed request)
            wire = self._order_json(order, state)
            if query.get("orderStatus") and wire["status"] != query["orderStatus"]:
                continue
            if query.get("instrumentId") and wire["instrumentId"] != query["instrumentId"]:
                continue
            items.append(wire)
        return self._page(request, items)

    def _order_json(self, order: FakeOrder, state: OrderState) -> dict[str, Any]:
        base, quote = split_symbol(state.symbol)
        instrument = f"{order.venue}:{state.symbol}"
        fee_totals: dict[str, Decimal] = {}
        executions = []
        for e in state.executions:
            fee_totals[e.fee.asset] = fee_totals.get(e.fee.asset, Decimal(0)) + e.fee.amount
            executions.append({
                "executionId": str(uuid.uuid5(uuid.NAMESPACE_URL, e.execution_id)),
                "externalTradeId": e.execution_id, "venue": order.venue,
                "instrumentId": instrument, "orderSide": state.side.value,
                "executedQuantity": text(e.quantity), "executedPrice": text(e.price),
                "executedCost": text(e.price * e.quantity),
                "fees": [self._fee_json(order.venue, e.fee.asset, e.fee.amount)],
                "executedAt": e.ts_event, "executedAtDateTime": iso(e.ts_event),
            })
        cost = sum((e.price * e.quantity for e in state.executions), Decimal(0))
        average = state.average_price
        closed_by_cancel = state.status is OrderStatus.CANCELLED
        return {
            "tradeOrderId": order.trade_order_id, "tradingAccountId": order.trading_account_id,
            "venue": order.venue, "instrumentId": instrument,
            "clientOrderId": order.client_order_id if self.echo_client_order_ids else None,
            "baseAsset": base, "quoteAsset": quote, "orderSide": state.side.value,
            "orderType": state.order_type.value, "timeInForce": state.time_in_force.value,
            "status": state.status.value,
            "rejectReason": state.reject_reason if state.status is OrderStatus.REJECTED else None,
            "cancelReason": "cancelled by user" if closed_by_cancel else None,
            "limitPrice": text(state.limit_price) if state.limit_price is not None else None,
            "quantity": text(state.quantity), "orderQuantityType": "BASE",
            "executedPrice": text(average) if average is not None else None,
            "executedQuantity": text(state.filled_quantity), "executedCost": text(cost),
            "fees": [self._fee_json(order.venue, a, q) for a, q in fee_totals.items()],
            "executions": executions,
            "createdAt": state.ts_created, "createdAtDateTime": iso(state.ts_created),
            "updatedAt": state.ts_updated, "updatedAtDateTime": iso(state.ts_updated),
        }

    @staticmethod
    def _fee_json(venue: str, asset: str, amount: Decimal) -> dict[str, Any]:
        return {"security": f"{venue}:{asset}", "asset": asset, "venue": venue,
                "quantity": text(amount)}

    # ------------------------------------------------------------ accounts and credentials

    def _account_of(self, trading_account_id: object) -> FakeAccount:
        account = self._accounts.get(str(trading_account_id))
        if account is None:
            raise FakeError("TRADING_ACCOUNT_NOT_FOUND", "Trading account not found")
        return account

    async def _portfolio_list(self, request: web.Request) -> web.Response:
        wanted = request.query.get("tradingAccountId")
        venue = request.query.get("venue")
        portfolios = []
        for account in self._accounts.values():
            if (wanted and account.trading_account_id != wanted) or (
                    venue and account.venue != venue):
                continue
            now = self.now_ms()
            balances = [{
                "securitySymbol": b.asset, "securityType": "CRYPTO",
                "tradingAccountId": account.trading_account_id, "status": "ACTIVE",
                "free": text(b.free), "locked": text(b.locked), "borrowed": "0",
                "total": text(b.total), "net": text(b.total), "updatedAt": now,
                "updatedAtDateTime": iso(now),
            } for b in self.engine(account.venue).balances(account.trading_account_id)]
            portfolios.append({"tradingAccountId": account.trading_account_id,
                               "venue": account.venue, "positions": [], "balances": balances,
                               "updatedAt": now, "updatedAtDateTime": iso(now)})
        return self._page(request, portfolios)

    async def _account_list(self, request: web.Request) -> web.Response:
        query = request.query
        accounts = [a for a in self._accounts.values()
                    if (not query.get("venue") or a.venue == query["venue"])
                    and (not query.get("tradingAccountId")
                         or a.trading_account_id == query["tradingAccountId"])
                    and (not query.get("accountStatus") or a.status == query["accountStatus"])]
        return self._page(request, [self._account_json(a) for a in accounts])

    async def _connect(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        credential_ids = body.get("credentialIds")
        if not isinstance(credential_ids, list) or not credential_ids:
            raise FakeError("INVALID_REQUEST", "credentialIds is required")
        external_id = _required(body, "externalTradingAccountId")
        credentials = [self._credential(str(c)) for c in credential_ids]
        credential = credentials[0]
        if any(c.status != "VERIFIED" for c in credentials):
            raise FakeError("CREDENTIAL_NOT_VERIFIED")
        identity = next((i for i in identities_for(credential.venue)
                         if i.external_trading_account_id == external_id), None)
        if identity is None:
            raise FakeError("EXTERNAL_ACCOUNT_UNKNOWN")
        if self._connected(credential.venue, credential.api_key, external_id) is not None:
            raise FakeError("TRADING_ACCOUNT_ALREADY_CONNECTED")
        now = self.now_ms()
        account = FakeAccount(
            str(uuid.uuid4()), credential.venue, external_id, identity.account_type,
            identity.external_account_type,
            str(body.get("nickname") or identity.description), credential.api_key,
            [c.credential_id for c in credentials], created_at=now)
        self._accounts[account.trading_account_id] = account
        return self._ok(self._account_json(account))

    def _connected(self, venue: str, api_key: str, external_id: str) -> FakeAccount | None:
        return next((a for a in self._accounts.values()
                     if (a.venue, a.api_key, a.external_id) == (venue, api_key, external_id)
                     and a.status == "ACTIVE"), None)

    def _account_json(self, account: FakeAccount) -> dict[str, Any]:
        return {
            "tradingAccountId": account.trading_account_id,
            "externalTradingAccountId": account.external_id, "venue": account.venue,
            "nickname": account.nickname, "accountType": account.account_type,
            "externalAccountType": account.external_account_type,
            "positionMode": "NETTING", "collateralMode": "CROSS", "marginMode": "STANDARD",
            "credentials": [self._credential_json(self._credentials[c])
                            for c in account.credential_ids],
            "status": account.status, "createdAt": account.created_at,
            "createdAtDateTime": iso(account.created_at), "updatedAt": account.created_at,
            "updatedAtDateTime": iso(account.created_at),
        }

    def _credential(self, credential_id: str) -> FakeCredential:
        credential = self._credentials.get(credential_id)
        if credential is None:
            raise FakeError("CREDENTIAL_NOT_FOUND", "Credential not found")
        return credential

    @staticmethod
    def _credential_json(credential: FakeCredential) -> dict[str, Any]:
        return {"credentialId": credential.credential_id, "venue": credential.venue,
                "credentialType": "API_KEY", "nickname": None, "status": credential.status,
                "createdAt": credential.created_at,
                "createdAtDateTime": iso(credential.created_at),
                "updatedAt": credential.created_at,
                "updatedAtDateTime": iso(credential.created_at)}

    async def _credential_create(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        venue = _required(body, "venue")
        if body.get("credentialType") != "API_KEY":
            raise FakeError("INVALID_REQUEST", "credentialType must be API_KEY")
        api_key = _required(body, "apiKey")
        credential = FakeCredential(str(uuid.uuid4()), venue, api_key,
                                    created_at=self.now_ms())
        self._credentials[credential.credential_id] = credential
        return self._ok(self._credential_json(credential))

    async def _credential_verify(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        credential_ids = body.get("credentialIds")
        if not isinstance(credential_ids, list) or not credential_ids:
            raise FakeError("INVALID_REQUEST", "credentialIds is required")
        credentials = [self._credential(str(c)) for c in credential_ids]
        if any(c.api_key in self._rejected_keys for c in credentials):
            raise FakeError("CREDENTIAL_VERIFICATION_FAILED",
                            "The exchange refused the API key")
        identities = []
        for credential in credentials:
            credential.status = "VERIFIED"
            for identity in identities_for(credential.venue):
                connected = self._connected(credential.venue, credential.api_key,
                                            identity.external_trading_account_id)
                identities.append({
                    "tradingAccountId": (connected.trading_account_id
                                         if connected and self.verify_reports_accounts
                                         else None),
                    "externalTradingAccountId": identity.external_trading_account_id,
                    "venue": credential.venue, "nickname": identity.description,
                    "accountType": identity.account_type,
                    "externalAccountType": identity.external_account_type,
                    "credentials": [self._credential_json(credential)],
                    "status": "ACTIVE" if connected else "SETUP",
                })
        return self._ok(identities)

    # ------------------------------------------------------------ websocket (Centrifugo JSON)

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        socket = _Socket(ws)
        self._sockets.add(socket)
        self.ws_connections += 1
        writer = asyncio.create_task(self._ws_writer(socket))
        pinger = asyncio.create_task(self._ws_pinger(socket))
        try:
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    continue
                for line in str(msg.data).split("\n"):
                    if line.strip():
                        await self._ws_command(socket, json.loads(line))
        finally:
            self._sockets.discard(socket)
            writer.cancel()
            pinger.cancel()
            await asyncio.gather(writer, pinger, return_exceptions=True)
        return ws

    async def _ws_writer(self, socket: _Socket) -> None:
        while True:
            frame = await socket.outbox.get()
            with contextlib.suppress(ConnectionError, RuntimeError):
                await socket.ws.send_str(frame)

    async def _ws_pinger(self, socket: _Socket) -> None:
        while True:
            await asyncio.sleep(self.ping_interval_s)
            if socket.connected and self.send_pings:
                socket.outbox.put_nowait("{}")

    async def _ws_command(self, socket: _Socket, frame: dict[str, Any]) -> None:
        if not frame:
            self.pongs += 1
            return
        command_id = frame.get("id")

        def reply(body: dict[str, Any]) -> None:
            socket.outbox.put_nowait(json.dumps({"id": command_id, **body}))

        if "connect" in frame:
            if frame["connect"].get("token") != self.token:
                reply({"error": {"code": 101, "message": "unauthorized"}})
                return
            socket.connected = True
            ping = self.ping_interval_s
            reply({"connect": {"client": str(uuid.uuid4()), "version": "5.0.0",
                               "expires": False, "ttl": 0,
                               "ping": int(ping) if ping >= 1 else ping, "pong": True,
                               "time": self.now_ms()}})
        elif not socket.connected:
            reply({"error": {"code": 101, "message": "unauthorized"}})
        elif "subscribe" in frame:
            channel = str(frame["subscribe"].get("channel", ""))
            instrument = channel.removeprefix(ORDER_BOOK_CHANNEL)
            venue, _, symbol = instrument.partition(":")
            if not channel.startswith(ORDER_BOOK_CHANNEL) or symbol not in self.instruments(
                    venue):
                reply({"error": {"code": 102, "message": "unknown channel"}})
                return
            socket.channels.add(channel)
            reply({"subscribe": {"recoverable": False, "epoch": "fake",
                                 "offset": self._offsets.get(channel, 0)}})
        elif "unsubscribe" in frame:
            socket.channels.discard(str(frame["unsubscribe"].get("channel", "")))
            reply({"unsubscribe": {}})


def unused_port() -> int:
    """A local TCP port nothing listens on (just released by the OS)."""
    with sockets.socket(sockets.AF_INET, sockets.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


class FakeServer:
    """A `FakeCadenza` served on 127.0.0.1 at a free port."""

    def __init__(self, fake: FakeCadenza) -> None:
        self.fake = fake
        self._server = TestServer(fake.make_app(), host="127.0.0.1")
        self.url = ""
        self.ws_url = ""

    async def start(self) -> RunningFake:
        await self._server.start_server()
        self.url = str(self._server.make_url("/")).rstrip("/")
        self.ws_url = self.url.replace("http://", "ws://", 1) + WS_PATH
        return RunningFake(self.fake, self.url, self.ws_url)

    async def close(self) -> None:
        await self._server.close()


@contextlib.asynccontextmanager
async def running(fake: FakeCadenza) -> AsyncIterator[RunningFake]:
    """Serve `fake` on 127.0.0.1 at a free port for the duration of the block."""
    server = FakeServer(fake)
    try:
        yield await server.start()
    finally:
        await server.close()


# ---------------------------------------------------------------- request parsing


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.read())
    except ValueError:
        raise FakeError("INVALID_REQUEST", "Request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise FakeError("INVALID_REQUEST", "Request body must be a JSON object")
    return body


def _required(body: Mapping[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise FakeError("INVALID_REQUEST", f"{name} is required")
    return value


def _decimal(body: Mapping[str, Any], name: str) -> Decimal | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise FakeError("INVALID_REQUEST", f"{name} must be a decimal string")
    try:
        return Decimal(value)
    except InvalidOperation:
        raise FakeError("INVALID_REQUEST", f"{name} must be a decimal string") from None


def _order_request(body: Mapping[str, Any], symbol: str) -> OrderRequest:
    try:
        side = Side(_required(body, "orderSide"))
        order_type = OrderType(_required(body, "orderType"))
        tif = TimeInForce(body.get("timeInForce") or "GTC")
    except ValueError as exc:
        raise FakeError("INVALID_REQUEST", str(exc)) from None
    quantity = _decimal(body, "quantity")
    if quantity is None:
        raise FakeError("INVALID_REQUEST", "quantity is required")
    client_order_id = body.get("clientOrderId") or str(uuid.uuid4())
    return OrderRequest(str(client_order_id), symbol, side, order_type, quantity,
                        _decimal(body, "limitPrice"), tif)


def _int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise FakeError("INVALID_REQUEST", f"{name} must be an integer") from None
    if not low <= value <= high:
        raise FakeError("INVALID_REQUEST", f"{name} must be within [{low}, {high}]")
    return value
