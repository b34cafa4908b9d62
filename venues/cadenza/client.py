"""The cadenza connector: one venue served through the Cadenza v3 API (seeds/001).

`CadenzaVenue` implements both `MarketDataVenue` and `ExecutionVenue` for one venue; the
instrument of a symbol is `{venue}:{symbol}`. It owns one aiohttp session (created on first use,
closed by `close()`) and one websocket feed (see `venues.cadenza.stream` for the book stream
contract).

Every REST call carries the bearer token, a timeout and goes through a token bucket
(`rate_limit_per_s`, burst `CadenzaConfig.burst`, retries included); the venues served by one
Cadenza share one budget when they are given the same `rate_limiter(config)`. The envelope is
checked: `success: false` or an HTTP error becomes a domain error with a safe message (no token,
no secret, bounded length).
Idempotent calls (GETs: order book, instruments, order list, portfolio, trading accounts) are
retried on timeouts, connection errors, 408, 429 and 5xx, at most `max_retries` times, with
exponential backoff and jitter (honouring `Retry-After`). POSTs are never retried: a submit whose
answer is lost (timeout, dropped connection, 5xx, unreadable body) raises `VenueTimeout`, and the
caller asks `order_status` with the same client order id before doing anything else.

`order_status` finds an order by client order id although the seed's order list has no such
filter: an order this process submitted is read by its tradeOrderId (`order/list?tradeOrderId=`);
any other (e.g. after a restart) by scanning the account's most recent orders, newest first, for
the `clientOrderId` Cadenza echoes on each TradeOrder (up to `status_lookup_limit` orders, pages
of `status_page_size`). It answers UnknownOrder only when the scan read every order of the
account and they carry client order ids; a scan cut short by the limit, or over orders without
client order ids (the seed's TradeOrder has none), leaves the outcome open (VenueUnavailable).
The client order id is also sent as `idempotencyKey`, so a resubmit of the same id answers the
first order.

`verify_credential` creates a Cadenza credential (API_KEY) and verifies it; the identities are
the TradingAccounts the verify answers (`venue_ref` = their tradingAccountId when connected).
The credentialId is remembered per process under a SHA-256 of the key material (never the
key). `connect_account` verifies, then `tradingAccount/connect`s; a 409 (already connected)
answers the existing account: the verified identity's id, else the one live account in
`tradingAccount/list` holding this credential, else the only live one with that external id.

Endpoints used: GET market/instrument/list, POST market/instrument/sync, GET market/orderBook/get,
POST trading/order/submit (awaitClosed), POST trading/order/cancel, GET trading/order/list,
GET portfolio/list, POST credential/create, POST credential/verify, POST tradingAccount/connect,
GET tradingAccount/list, and the Centrifugo websocket.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import re
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

import aiohttp
from pydantic import BaseModel, ValidationError

from venues.base import (
    ApiCredential,
    Balance,
    BookSnapshot,
    CredentialRejected,
    Instrument,
    OrderRequest,
    OrderState,
    UnknownInstrument,
    UnknownOrder,
    VenueAccount,
    VenueError,
    VenueIdentity,
    VenueTimeout,
    VenueUnavailable,
    instrument_id,
    split_symbol,
)
from venues.cadenza.config import CadenzaConfig
from venues.cadenza.schemas import (
    CancelOrderBody,
    ConnectTradingAccountBody,
    Envelope,
    SyncInstrumentsBody,
    VerifyCredentialBody,
    WireError,
    WireInstrument,
    WireModel,
    WireOrderBook,
    WirePortfolio,
    WireSyncResult,
    WireTradeOrder,
    WireTradingAccount,
    WireVerifyResult,
    credential_body,
    decode_json,
    dump,
    parse_balances,
    parse_book,
    parse_identity,
    parse_instrument,
    parse_order_state,
    submit_body,
)
from venues.cadenza.stream import BookFeed

log = logging.getLogger(__name__)

API = "/api/v3"
AWAIT_CLOSED_MS = 1000  # awaitClosed lets Cadenza hold a submit up to one second
PAGE_LIMIT = 1000
MAX_MESSAGE = 200

M = TypeVar("M", bound=BaseModel)


class CadenzaAuthRejected(VenueUnavailable):
    """Cadenza refused the connector's bearer token (401) or its permissions (403)."""


class CadenzaRefused(VenueError):
    """Cadenza understood the request and refused it (4xx, or `success: false`)."""

    def __init__(self, message: str, *, http_status: int, errno: int, code: str | None) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.errno = errno
        self.code = code


# `details.code` values whose meaning does not depend on the call.
_CODE_ERRORS: dict[str, type[VenueError]] = {
    "UNAUTHENTICATED": CadenzaAuthRejected,
    "INVALID_TOKEN": CadenzaAuthRejected,
    "TOKEN_EXPIRED": CadenzaAuthRejected,
    "FORBIDDEN": CadenzaAuthRejected,
    "INSTRUMENT_NOT_FOUND": UnknownInstrument,
    "ORDER_NOT_FOUND": UnknownOrder,
    "TRADE_ORDER_NOT_FOUND": UnknownOrder,
}
_RETRYABLE_STATUS = frozenset({408, 429})
_ALREADY_CONNECTED = frozenset({"TRADING_ACCOUNT_ALREADY_CONNECTED", "ALREADY_CONNECTED"})
_GONE_ACCOUNT_STATUSES = frozenset({"DISCONNECTED", "DELETED"})


class TokenBucket:
    """`rate` calls per second on average, `burst` at once.

    Each caller reserves the next token and sleeps until it is due, so concurrent callers are
    spaced `1 / rate` apart in arrival order (and no float rounding can keep one spinning).
    """

    def __init__(self, rate: float, burst: int, clock: Callable[[], float],
                 sleep: Callable[[float], Awaitable[None]]) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._clock = clock
        self._sleep = sleep
        self._updated = clock()

    async def acquire(self) -> None:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._updated) * self._rate)
        self._updated = now
        self._tokens -= 1
        if self._tokens < 0:
            await self._sleep(-self._tokens / self._rate)


def rate_limiter(
    config: CadenzaConfig, *, clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> TokenBucket:
    """The bucket of `config`; give the same one to every CadenzaVenue sharing that budget."""
    return TokenBucket(config.rate_limit_per_s, config.burst, clock, sleep)


@dataclass(frozen=True, slots=True)
class _Call:
    """What one REST call is, for retries and error messages."""

    method: str
    path: str
    purpose: str
    idempotent: bool
    not_found: type[VenueError] | None = None  # 404 class when not CadenzaRefused
    refused: type[VenueError] | None = None  # other 4xx class when not CadenzaRefused
    timeout_ms: int | None = None


class _Retryable(Exception):
    def __init__(self, error: VenueError, retry_after_s: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after_s = retry_after_s


def _default_session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession()


def _credential_digest(credential: ApiCredential) -> str:
    parts = (credential.api_key, credential.api_secret or "", credential.api_passphrase or "")
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


class CadenzaVenue:
    """Market data and execution of one venue through Cadenza."""

    connector = "cadenza"

    def __init__(
        self,
        venue: str,
        config: CadenzaConfig,
        session_factory: Callable[[], aiohttp.ClientSession] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        limiter: TokenBucket | None = None,
    ) -> None:
        self.venue = venue
        self._config = config
        self._session_factory = session_factory or _default_session
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._bucket = limiter or rate_limiter(config, clock=clock, sleep=sleep)
        self._feed = BookFeed(venue, config, self._get_session, rng=self._rng)
        # (tradingAccountId, clientOrderId) → tradeOrderId of orders this process submitted.
        self._trade_order_ids: dict[tuple[str, str], str] = {}
        # sha256 of a credential → the Cadenza credentialId created for it by this process.
        self._credential_ids: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"CadenzaVenue({self.venue!r}, {self._config.base_url!r})"

    async def __aenter__(self) -> CadenzaVenue:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        """End the book streams, the websocket and the HTTP session."""
        self._closed = True
        await self._feed.close()
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    @property
    def feed_connected(self) -> bool:
        """True while the book websocket is up (false before the first stream starts)."""
        return self._feed.connected

    # ------------------------------------------------------------ market data

    async def instruments(self, symbols: Sequence[str] | None = None) -> list[Instrument]:
        """Instruments Cadenza lists for the venue (only `symbols` when given)."""
        if symbols is not None and not symbols:
            return []
        params: list[tuple[str, str]] = [("venue", self.venue)]
        params += [("symbols", s) for s in symbols or ()]
        call = _Call("GET", "/market/instrument/list", "instrument list", idempotent=True)
        found: list[Instrument] = []
        for item in await self._list_all(call, params):
            try:
                instrument = parse_instrument(WireInstrument.model_validate(item))
            except (ValidationError, WireError) as exc:
                log.warning("cadenza %s: instrument skipped: %s", self.venue, _first_line(exc))
                continue
            if instrument.venue == self.venue and (symbols is None or instrument.symbol
                                                   in symbols):
                found.append(instrument)
        return found

    async def sync_instruments(self, symbols: Sequence[str] | None = None) -> int:
        """Ask Cadenza to refresh the venue's instruments (seeds/004); answer how many synced."""
        body = SyncInstrumentsBody(venue=self.venue,
                                   symbols=list(symbols) if symbols is not None else None)
        call = _Call("POST", "/market/instrument/sync", "instrument sync", idempotent=False)
        result = self._model(WireSyncResult, (await self._request(call, body=body)).data, call)
        return result.synced if result.synced is not None else result.total or 0

    async def order_book(self, symbol: str, depth: int) -> BookSnapshot:
        """A REST snapshot, at most `depth` levels a side; `sequence` is 0 (not a stream)."""
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        instrument = self._instrument_id(symbol)
        call = _Call("GET", "/market/orderBook/get", f"order book of {instrument}",
                     idempotent=True, not_found=UnknownInstrument)
        params = [("instrumentId", instrument), ("depth", str(max(1, min(depth, 1000))))]
        wire = self._model(WireOrderBook, (await self._request(call, params=params)).data, call)
        return parse_book(wire, self.venue, symbol, 0).top(depth)

    def book_stream(self, symbol: str) -> AsyncGenerator[BookSnapshot, None]:
        """Snapshots from the websocket; raises VenueUnavailable once when the feed is lost."""
        return self._feed.stream(symbol)

    # ------------------------------------------------------------ credentials and accounts

    async def verify_credential(self, credential: ApiCredential) -> list[VenueIdentity]:
        """Create the credential at Cadenza, verify it, answer the accounts it can trade."""
        _, identities = await self._verified(credential)
        return [parse_identity(a) for a in identities]

    async def connect_account(
        self, credential: ApiCredential, external_trading_account_id: str
    ) -> str | None:
        """Connect the account at Cadenza (or find it connected); answer its tradingAccountId."""
        credential_id, identities = await self._verified(credential)
        matching = [a for a in identities
                    if a.external_trading_account_id == external_trading_account_id]
        if not matching:
            raise CredentialRejected(
                f"the credential gives no access to trading account "
                f"{external_trading_account_id!r} on {self.venue}")
        call = _Call("POST", "/tradingAccount/connect", "trading account connect",
                     idempotent=False)
        body = ConnectTradingAccountBody(credential_ids=[credential_id],
                                         external_trading_account_id=external_trading_account_id)
        try:
            envelope = await self._request(call, body=body)
        except CadenzaRefused as exc:
            if exc.http_status != 409 and exc.code not in _ALREADY_CONNECTED:
                raise
            return await self._connected_account(credential_id, external_trading_account_id,
                                                 matching[0].trading_account_id, exc)
        account = self._model(WireTradingAccount, envelope.data, call)
        if not account.trading_account_id:
            raise VenueUnavailable("Cadenza connected the account but answered no id")
        return account.trading_account_id

    async def _connected_account(self, credential_id: str, external_id: str,
                                 verified_ref: str | None, conflict: CadenzaRefused) -> str:
        """The account Cadenza says is already connected."""
        if verified_ref:
            return verified_ref
        call = _Call("GET", "/tradingAccount/list", "trading account list", idempotent=True)
        accounts = [self._model(WireTradingAccount, item, call)
                    for item in await self._list_all(call, [("venue", self.venue)])]
        live = [a for a in accounts if a.external_trading_account_id == external_id
                and a.trading_account_id and a.status not in _GONE_ACCOUNT_STATUSES]
        ours = [a for a in live if any(c.credential_id == credential_id for c in a.credentials)]
        chosen = ours or (live if len(live) == 1 else [])
        if not chosen or not chosen[0].trading_account_id:
            raise conflict
        return chosen[0].trading_account_id

    async def _verified(
        self, credential: ApiCredential
    ) -> tuple[str, list[WireTradingAccount]]:
        if not credential.api_key.strip():
            raise CredentialRejected("API key is empty")
        digest = _credential_digest(credential)
        credential_id = self._credential_ids.get(digest)
        if credential_id is not None:
            try:
                return credential_id, await self._verify(credential_id, credential)
            except CredentialRejected:
                self._credential_ids.pop(digest, None)  # revoked or forgotten: create anew
        credential_id = await self._create_credential(credential)
        identities = await self._verify(credential_id, credential)
        self._credential_ids[digest] = credential_id
        return credential_id, identities

    async def _create_credential(self, credential: ApiCredential) -> str:
        call = _Call("POST", "/credential/create", "credential create", idempotent=False,
                     refused=CredentialRejected)
        envelope = await self._request(call, body=credential_body(self.venue, credential),
                                       secrets=_secrets_of(credential))
        data = envelope.data
        credential_id = data.get("credentialId") if isinstance(data, dict) else None
        if not isinstance(credential_id, str) or not credential_id:
            raise VenueUnavailable("Cadenza created the credential but answered no id")
        return credential_id

    async def _verify(self, credential_id: str,
                      credential: ApiCredential) -> list[WireTradingAccount]:
        call = _Call("POST", "/credential/verify", "credential verify", idempotent=False,
                     not_found=CredentialRejected, refused=CredentialRejected)
        data = (await self._request(call, body=VerifyCredentialBody(
            credential_ids=[credential_id]), secrets=_secrets_of(credential))).data
        if isinstance(data, dict):
            result = self._model(WireVerifyResult, data, call)
            if result.status is not None and result.status != "VERIFIED":
                raise CredentialRejected(f"Cadenza could not verify the credential "
                                         f"(status {_safe(result.status, ())})")
            accounts = result.identities
        elif isinstance(data, list):
            accounts = [self._model(WireTradingAccount, item, call) for item in data]
        else:
            raise VenueUnavailable("Cadenza answered credential verify without identities")
        accounts = [a for a in accounts if a.venue in (None, "", self.venue)]
        if not accounts:
            raise CredentialRejected(
                f"the credential gives access to no trading account on {self.venue}")
        return accounts

    # ------------------------------------------------------------ orders and balances

    async def submit_order(self, account: VenueAccount, order: OrderRequest) -> OrderState:
        """Submit with awaitClosed; VenueTimeout when the outcome is unknown (ask order_status)."""
        ref = self._account_ref(account)
        self._instrument_id(order.symbol)
        call = _Call("POST", "/trading/order/submit", f"order submit {order.client_order_id}",
                     idempotent=False,
                     timeout_ms=self._config.timeout_ms + AWAIT_CLOSED_MS)
        envelope = await self._request(call, body=submit_body(ref, self.venue, order))
        try:
            wire = self._pick_order(envelope.data, order.client_order_id)
            state = parse_order_state(wire, order.client_order_id)
        except (ValidationError, WireError) as exc:
            raise VenueTimeout(f"Cadenza accepted order {order.client_order_id} but its answer "
                               f"could not be read ({_first_line(exc)}); ask its status") from None
        self._trade_order_ids[(ref, order.client_order_id)] = state.venue_order_id
        return state

    async def cancel_order(self, account: VenueAccount, client_order_id: str) -> OrderState:
        """Cancel an open order; a closed one is answered as it is."""
        current = await self.order_status(account, client_order_id)
        if current.status.is_closed:
            return current
        call = _Call("POST", "/trading/order/cancel", f"order cancel {client_order_id}",
                     idempotent=False, not_found=UnknownOrder)
        body = CancelOrderBody(trading_account_id=self._account_ref(account),
                               trade_order_id=current.venue_order_id)
        try:
            envelope = await self._request(call, body=body)
        except CadenzaRefused:
            # Typically the order closed meanwhile; a closed state answers the cancel.
            after = await self.order_status(account, client_order_id)
            if after.status.is_closed:
                return after
            raise
        wire = self._model(WireTradeOrder, envelope.data, call)
        return self._parse(wire, client_order_id, call)

    async def order_status(self, account: VenueAccount, client_order_id: str) -> OrderState:
        """The order with this client order id, read from Cadenza's order list.

        The order list has no clientOrderId filter: an order this process submitted is read by
        its tradeOrderId; any other is found by scanning the account's most recent orders
        (newest first, up to `status_lookup_limit`) for the clientOrderId Cadenza echoes.
        """
        ref = self._account_ref(account)
        call = _Call("GET", "/trading/order/list", f"order status {client_order_id}",
                     idempotent=True)
        known = self._trade_order_ids.get((ref, client_order_id))
        if known is not None:
            envelope = await self._request(call, params=[("tradingAccountId", ref),
                                                          ("tradeOrderId", known)])
            for item in _items(envelope.data):
                if isinstance(item, dict) and item.get("tradeOrderId") == known:
                    return self._parse(self._model(WireTradeOrder, item, call),
                                       client_order_id, call)
        page = min(self._config.status_page_size, self._config.status_lookup_limit)
        offset = 0
        echoed = False  # some listed order carries its clientOrderId
        more = True
        while more and offset < self._config.status_lookup_limit:
            envelope = await self._request(call, params=[
                ("tradingAccountId", ref), ("limit", str(page)), ("offset", str(offset))])
            items = _items(envelope.data)
            for item in items:
                if not isinstance(item, dict) or item.get("clientOrderId") is None:
                    continue
                echoed = True
                if item["clientOrderId"] == client_order_id:
                    wire = self._model(WireTradeOrder, item, call)
                    self._trade_order_ids[(ref, client_order_id)] = wire.trade_order_id
                    return self._parse(wire, client_order_id, call)
            offset += len(items)
            more = bool(items) and (envelope.pagination.has_next if envelope.pagination
                                    else len(items) == page)
        # "Unknown" lets the caller conclude the order never arrived and trade again, so it is
        # said only when the scan shows it: every order of the account read, and Cadenza
        # echoing client order ids (the seed's TradeOrder has no such field). Otherwise the
        # outcome stays open, to be asked again.
        if more:
            raise VenueUnavailable(
                f"order {client_order_id!r} is not among the account's "
                f"{self._config.status_lookup_limit} most recent orders; its outcome is unknown")
        if offset and not echoed:
            raise VenueUnavailable(
                f"Cadenza's orders carry no clientOrderId: order {client_order_id!r} cannot be "
                "told apart from the account's other orders; its outcome is unknown")
        raise UnknownOrder(f"Cadenza has no order {client_order_id!r} on this account")

    async def balances(self, account: VenueAccount) -> list[Balance]:
        """The account's balances from its Cadenza portfolio (empty if it has none yet)."""
        ref = self._account_ref(account)
        call = _Call("GET", "/portfolio/list", "portfolio list", idempotent=True)
        for item in await self._list_all(call, [("tradingAccountId", ref)]):
            portfolio = self._model(WirePortfolio, item, call)
            if portfolio.trading_account_id == ref:
                return parse_balances(portfolio)
        return []

    # ------------------------------------------------------------ helpers

    def _account_ref(self, account: VenueAccount) -> str:
        if not account.venue_ref:
            raise VenueError("the trading account is not connected through Cadenza "
                             "(no Cadenza tradingAccountId)")
        return account.venue_ref

    def _instrument_id(self, symbol: str) -> str:
        try:
            split_symbol(symbol)
        except ValueError:
            raise UnknownInstrument(f"{symbol!r} is not a BASE/QUOTE symbol") from None
        return instrument_id(self.venue, symbol)

    def _pick_order(self, data: Any, client_order_id: str) -> WireTradeOrder:
        """Submit answers a list of TradeOrders (seeds/001); a single object is accepted too."""
        candidates = [WireTradeOrder.model_validate(item) for item in _items(data)]
        if not candidates:
            raise WireError("no trade order in the answer")
        for wire in candidates:
            if wire.client_order_id == client_order_id:
                return wire
        return candidates[0]

    def _parse(self, wire: WireTradeOrder, client_order_id: str, call: _Call) -> OrderState:
        try:
            return parse_order_state(wire, client_order_id)
        except WireError as exc:
            raise VenueUnavailable(f"Cadenza answered {call.purpose} with an order this "
                                   f"connector cannot read: {_safe(str(exc), ())}") from None

    def _model(self, model: type[M], data: Any, call: _Call) -> M:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise VenueUnavailable(f"Cadenza answered {call.purpose} in an unexpected shape "
                                   f"({_first_line(exc)})") from None

    async def _list_all(self, call: _Call, params: list[tuple[str, str]]) -> list[Any]:
        """Every item of a paginated list."""
        found: list[Any] = []
        offset = 0
        while True:
            envelope = await self._request(call, params=[
                *params, ("limit", str(PAGE_LIMIT)), ("offset", str(offset))])
            items = _items(envelope.data)
            found.extend(items)
            offset += len(items)
            if not items or envelope.pagination is None or not envelope.pagination.has_next:
                return found

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise VenueUnavailable("the Cadenza connector is closed")
        if self._session is None or self._session.closed:
            self._session = self._session_factory()
        return self._session

    def _backoff_s(self, attempt: int, retry_after_s: float | None) -> float:
        cap = self._config.reconnect_max_ms / 1000
        delay = min(cap, self._config.backoff_base_ms / 1000 * 2.0 ** attempt)
        delay *= self._rng.uniform(0.5, 1.0)
        if retry_after_s is not None:
            delay = max(delay, min(cap, retry_after_s))
        return delay

    async def _request(
        self,
        call: _Call,
        *,
        params: list[tuple[str, str]] | None = None,
        body: WireModel | None = None,
        secrets: Iterable[str] = (),
    ) -> Envelope:
        """One logical call: rate limited, retried when idempotent, envelope checked."""
        hidden = (self._config.token, *(s for s in secrets if s))
        payload = dump(body) if body is not None else None
        attempts = 1 + (self._config.max_retries if call.idempotent else 0)
        for attempt in range(attempts):
            await self._bucket.acquire()
            try:
                return await self._attempt(call, params, payload, hidden)
            except _Retryable as retry:
                if attempt + 1 >= attempts:
                    raise retry.error from None
                log.warning("cadenza %s: %s failed (%s); retry %d of %d", self.venue,
                            call.purpose, retry.error, attempt + 1, attempts - 1)
                await self._sleep(self._backoff_s(attempt, retry.retry_after_s))
        raise AssertionError("unreachable")

    async def _attempt(self, call: _Call, params: list[tuple[str, str]] | None,
                       payload: dict[str, Any] | None, hidden: tuple[str, ...]) -> Envelope:
        timeout_ms = call.timeout_ms or self._config.timeout_ms
        url = f"{self._config.rest_root}{API}{call.path}"
        headers = {"Authorization": f"Bearer {self._config.token}", "Accept": "application/json"}
        # A lost answer to a call that changes something leaves its outcome unknown.
        lost: type[VenueError] = VenueUnavailable if call.idempotent else VenueTimeout
        try:
            async with self._get_session().request(
                call.method, url, params=params, json=payload, headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout_ms / 1000),
            ) as response:
                raw = await response.read()
                status = response.status
                retry_after = _retry_after(response.headers.get("Retry-After"))
        except aiohttp.ConnectionTimeoutError:
            raise _Retryable(VenueUnavailable(
                f"Cadenza could not be reached for {call.purpose} (connect timeout)")) from None
        except TimeoutError:
            raise _Retryable(VenueTimeout(
                f"Cadenza did not answer {call.purpose} within {timeout_ms} ms")) from None
        except aiohttp.ClientConnectorError as exc:
            raise _Retryable(VenueUnavailable(
                f"Cadenza could not be reached for {call.purpose} "
                f"({type(exc).__name__})")) from None
        except aiohttp.ClientError as exc:
            raise _Retryable(lost(f"the answer to {call.purpose} was lost "
                                  f"({type(exc).__name__})")) from None
        log.debug("cadenza %s %s → %d", call.method, call.path, status)
        envelope = _envelope(raw)
        if 200 <= status < 300 and envelope is not None and envelope.success:
            return envelope
        if status >= 500 or status in _RETRYABLE_STATUS or (status < 300 and envelope is None):
            message = _failure_message(call, status, envelope, hidden)
            # 429: refused before doing anything, so never an unknown outcome.
            raise _Retryable(VenueUnavailable(message) if status == 429 else lost(message),
                             retry_after)
        raise _error_for(call, status, envelope or Envelope(success=False), hidden)


def _envelope(raw: bytes) -> Envelope | None:
    try:
        return Envelope.model_validate(decode_json(raw))
    except (ValueError, ValidationError):
        return None


def _error_for(call: _Call, status: int, envelope: Envelope, hidden: tuple[str, ...]) -> VenueError:
    """A refusal (4xx or `success: false`) as the domain error it means."""
    message = _failure_message(call, status, envelope, hidden)
    by_code = _CODE_ERRORS.get(envelope.code or "")
    if status in (401, 403) or by_code is CadenzaAuthRejected:
        return CadenzaAuthRejected(message)
    if by_code is not None:
        return by_code(message)
    if status == 404 and call.not_found is not None:
        return call.not_found(message)
    if status != 404 and call.refused is not None:
        return call.refused(message)
    return CadenzaRefused(message, http_status=status, errno=envelope.errno, code=envelope.code)


def _failure_message(call: _Call, status: int, envelope: Envelope | None,
                     hidden: tuple[str, ...]) -> str:
    if envelope is None:
        return f"Cadenza answered {call.purpose} with HTTP {status} and no envelope"
    text = _safe(envelope.error or "", hidden)
    detail = f": {text}" if text else ""
    return f"Cadenza refused {call.purpose} (HTTP {status}, errno {envelope.errno}){detail}"


def _safe(text: str, hidden: Iterable[str]) -> str:
    """Venue text fit for our messages: secrets replaced, one line, bounded."""
    for secret in hidden:
        text = text.replace(secret, "<redacted>")
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


def _secrets_of(credential: ApiCredential) -> tuple[str, ...]:
    return tuple(s for s in (credential.api_key, credential.api_secret,
                             credential.api_passphrase) if s)


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _items(data: Any) -> list[Any]:
    if isinstance(data, list):
        return data
    if isinstance(data, dict):
        return [data]
    return []


def _first_line(exc: Exception) -> str:
    return _safe(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, ())
