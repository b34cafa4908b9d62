"""Market endpoints: instruments (seeds/004), order books (seeds/001), venues, portfolios, and
the dealer's consolidated book."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Literal

from aiohttp import web
from pydantic import Field, model_validator

from dealer.api.framework import Api
from dealer.api.schemas import InstrumentStatus
from dealer.api.schemas import Symbol as DealerSymbol
from dealer.appkeys import CLOCK, MARKET_DATA, METRICS, POOL, VENUES
from dealer.auth import Principal, Role
from dealer.errors import ApiError, Errors
from dealer.services import instruments as service
from dealer.services.dealers import get_dealer
from dealer.services.records import TradingAccountRecord
from dealer.services.trading_accounts import AccountFilter, list_accounts
from dealer.uow import UnitOfWork, connection
from dealer.wire import (
    ListQuery,
    Page,
    QueryModel,
    Uuid,
    WireModel,
    decimal_text,
    iso,
    millis,
)
from pricing.book import ConsolidatedLevel, LpBook, consolidate
from venues.base import (
    EXCHANGE_VENUES,
    BookSnapshot,
    UnknownInstrument,
    VenueAccount,
    VenueError,
    instrument_id,
    split_symbol,
)

log = logging.getLogger(__name__)
ExchangeVenue = Literal[EXCHANGE_VENUES]  # type: ignore[valid-type]
Symbol = str
TAG = "market"
ADMIN = [Role.ADMIN]
EVERYONE = [Role.ADMIN, Role.VIEWER, Role.TRADER]


# ---------------------------------------------------------------- models


class SyncRequest(WireModel):
    venue: ExchangeVenue = Field(description="Venue to sync instruments from")
    symbols: list[Symbol] | None = Field(default=None, min_length=1, max_length=1000,
                                         description="Symbols to sync; all when omitted")

    @model_validator(mode="after")
    def _symbols_well_formed(self) -> SyncRequest:
        for symbol in self.symbols or []:
            split_symbol(symbol)
        return self


class SyncResponse(WireModel):
    venue: str
    synced: int
    added: int
    updated: int


class InstrumentIdRequest(WireModel):
    instrument_id: str = Field(min_length=3, max_length=100)


class InstrumentListQuery(ListQuery):
    venue: ExchangeVenue | None = None
    symbols: list[Symbol] | None = None
    security_type: Literal["", "CRYPTO"] | None = None
    instrument_status: InstrumentStatus | None = None


class InstrumentOut(WireModel):
    instrument_id: str
    venue: str
    symbol: str
    external_symbol: str
    description: str
    instrument_type: str
    status: InstrumentStatus
    base_asset: str
    quote_asset: str
    base_security_type: str
    quote_security_type: str
    base_precision: int
    quote_precision: int
    lot_size: str
    pip_size: str
    min_quantity: str
    max_quantity: str | None
    min_notional: str
    order_types: list[str]
    time_in_force_options: list[str]
    synced_at: int
    synced_at_date_time: str


class BookQuery(QueryModel):
    instrument_id: str | None = Field(default=None, max_length=100)
    venue: ExchangeVenue | None = None
    symbol: Symbol | None = Field(default=None, max_length=41)
    depth: int = Field(default=10, ge=1, le=1000)


class BookListQuery(QueryModel):
    instrument_ids: list[str] | None = Field(default=None, max_length=100)
    venue: ExchangeVenue | None = None
    symbols: list[Symbol] | None = Field(default=None, max_length=100)
    depth: int = Field(default=10, ge=1, le=1000)


class OrderBookOut(WireModel):
    instrument_id: str
    venue: str
    symbol: str
    asks: list[tuple[str, str]]
    bids: list[tuple[str, str]]
    timestamp: int
    sequence: int
    age_ms: int | None = Field(description="How long ago the daemon received this book")
    fresh: bool


class DealerBookQuery(QueryModel):
    dealer_account_id: Uuid
    symbol: DealerSymbol = Field(description="BASE/QUOTE, one of the dealer's symbols")
    depth: int = Field(default=10, ge=1, le=1000)


class SourceOut(WireModel):
    trading_account_id: str
    venue: str
    price: str
    quantity: str


class ConsolidatedLevelOut(WireModel):
    price: str = Field(description="Fee-adjusted price: what the dealer pays (asks) or gets (bids)")
    quantity: str
    sources: list[SourceOut]


class LpStatusOut(WireModel):
    trading_account_id: uuid.UUID
    venue: str
    taker_fee: str
    fresh: bool
    reason: str | None = Field(description="Why the LP is not a source of the levels: its "
                               "account is not ACTIVE, its book is stale, or its venue's book "
                               "counts once, for another of the dealer's accounts on that "
                               "venue (the one with the lower taker fee); null when it is one")
    age_ms: int | None


class DealerBookOut(WireModel):
    dealer_account_id: uuid.UUID
    instrument_id: str
    symbol: str
    bids: list[ConsolidatedLevelOut]
    asks: list[ConsolidatedLevelOut]
    lps: list[LpStatusOut]
    timestamp: int


class VenueOut(WireModel):
    venue: str
    status: Literal["ONLINE"]
    connector: str


class PortfolioQuery(ListQuery):
    trading_account_id: Uuid | None = None
    venue: ExchangeVenue | None = None
    currency: str | None = Field(default=None, max_length=20)


class BalanceOut(WireModel):
    security_symbol: str
    security_type: str
    trading_account_id: uuid.UUID
    status: Literal["ACTIVE"] = Field(description="Only ACTIVE accounts are listed")
    free: str
    locked: str
    borrowed: str
    total: str
    net: str
    updated_at: int
    updated_at_date_time: str


class PortfolioOut(WireModel):
    trading_account_id: uuid.UUID
    venue: str
    positions: list[dict[str, str]]
    balances: list[BalanceOut]
    error: str | None = Field(description="Why balances are missing (venue unreachable)")
    updated_at: int
    updated_at_date_time: str


# ---------------------------------------------------------------- registration


def register(api: Api) -> None:
    api.post("/api/v3/market/instrument/sync", summary="Synchronise instruments from a venue "
             "(seeds/004)", tag=TAG, roles=ADMIN, body=SyncRequest, response=SyncResponse,
             errors=[Errors.UNKNOWN_SYMBOLS, Errors.VENUE_UNAVAILABLE])(sync)
    api.get("/api/v3/market/instrument/list", summary="Instruments known to the daemon",
            tag=TAG, roles=EVERYONE, query=InstrumentListQuery,
            response=Page[InstrumentOut])(list_instruments)
    api.post("/api/v3/market/instrument/enable", summary="Allow quoting and hedging an "
             "instrument", tag=TAG, roles=ADMIN, body=InstrumentIdRequest,
             response=InstrumentOut, errors=[Errors.INSTRUMENT_NOT_FOUND])(enable)
    api.post("/api/v3/market/instrument/disable", summary="Stop using an instrument (status "
             "DISABLED)", tag=TAG, roles=ADMIN, body=InstrumentIdRequest,
             response=InstrumentOut, errors=[Errors.INSTRUMENT_NOT_FOUND])(disable)
    api.get("/api/v3/market/orderBook/get", summary="Order book of one instrument: "
            "instrumentId, or venue and symbol", tag=TAG, roles=EVERYONE, query=BookQuery,
            response=OrderBookOut,
            errors=[Errors.INVALID_INSTRUMENT_ID, Errors.UNKNOWN_SYMBOLS,
                    Errors.VENUE_UNAVAILABLE])(order_book)
    api.get("/api/v3/market/orderBook/list", summary="Order books of several instruments",
            tag=TAG, roles=EVERYONE, query=BookListQuery, response=list[OrderBookOut],
            errors=[Errors.INVALID_INSTRUMENT_ID, Errors.UNKNOWN_SYMBOLS,
                    Errors.VENUE_UNAVAILABLE])(order_books)
    api.get("/api/v3/market/venue/list", summary="Venues and the connector serving each",
            tag=TAG, roles=EVERYONE, response=list[VenueOut])(venues)
    api.get("/api/v3/portfolio/list", summary="Balances of exchange trading accounts, from "
            "their connectors", tag=TAG, roles=[Role.ADMIN, Role.VIEWER],
            query=PortfolioQuery, response=Page[PortfolioOut])(portfolios)
    api.get("/api/v3/fermata/dealer/orderBook", summary="Consolidated book of the dealer's "
            "fresh LPs, as quotes price on it (no draining LP, no venue without the "
            "instrument): fee-adjusted levels with their source accounts", tag="dealers",
            roles=[Role.ADMIN, Role.VIEWER, Role.TRADER], query=DealerBookQuery,
            response=DealerBookOut,
            errors=[Errors.DEALER_NOT_FOUND, Errors.SYMBOL_NOT_QUOTED])(dealer_book)


# ---------------------------------------------------------------- instruments


def instrument_out(record: service.InstrumentRecord) -> InstrumentOut:
    item = record.instrument
    return InstrumentOut(
        instrument_id=item.instrument_id, venue=item.venue, symbol=item.symbol,
        external_symbol=item.external_symbol, description=f"{item.base}/{item.quote} spot",
        instrument_type="SPOT", status=record.status, base_asset=item.base,
        quote_asset=item.quote, base_security_type="CRYPTO", quote_security_type="CRYPTO",
        base_precision=service.decimals_of(item.lot_size),
        quote_precision=service.decimals_of(item.tick_size),
        lot_size=decimal_text(item.lot_size), pip_size=decimal_text(item.tick_size),
        min_quantity=decimal_text(item.min_quantity),
        max_quantity=None if item.max_quantity is None else decimal_text(item.max_quantity),
        min_notional=decimal_text(item.min_notional), order_types=["MARKET", "LIMIT"],
        time_in_force_options=["GTC", "IOC", "FOK"],
        synced_at=millis(record.synced_at) or 0, synced_at_date_time=iso(record.synced_at) or "",
    )


async def sync(request: web.Request, principal: Principal | None,
               params: SyncRequest) -> SyncResponse:
    result = await sync_venue(request.app, params.venue, params.symbols)
    return SyncResponse(venue=result.venue, synced=result.synced, added=result.added,
                        updated=result.updated)


async def sync_venue(app: web.Application, venue: str,
                     symbols: list[str] | None) -> service.SyncResult:
    """Fetch from the venue, then store in one transaction (also the scheduled job)."""
    market = app[VENUES].market_data(venue)
    async with app[METRICS].connector_call(venue, market.connector, "instruments"):
        found = await service.fetch_venue_instruments(market, symbols)
    async with UnitOfWork(app[POOL]) as uow:
        return await service.store_instruments(uow, venue, found, app[CLOCK]())


async def sync_dealer_instruments(app: web.Application, dealer_account_id: uuid.UUID) -> None:
    """Best effort: make sure the instruments a dealer quotes are known on its LPs' venues, so
    it can quote right after a link (the scheduled sync keeps them fresh later)."""
    async with connection(app[POOL]) as conn:
        rows = await conn.fetch(
            """SELECT DISTINCT t.venue, d.config -> 'symbols' AS symbols FROM dealer_link l
               JOIN trading_account t USING (trading_account_id)
               JOIN dealer d USING (dealer_account_id) WHERE l.dealer_account_id = $1""",
            dealer_account_id)
    for row in rows:
        market = app[VENUES].market_data(row["venue"])
        try:
            async with app[METRICS].connector_call(row["venue"], market.connector,
                                                   "instruments"):
                found = await market.instruments(list(row["symbols"] or []))
            async with UnitOfWork(app[POOL]) as uow:
                await service.store_instruments(uow, row["venue"], found, app[CLOCK]())
        except (VenueError, ApiError) as exc:
            log.warning("instrument sync for %s failed: %s", row["venue"], exc)


async def list_instruments(request: web.Request, principal: Principal | None,
                           params: InstrumentListQuery) -> Page[InstrumentOut]:
    query = service.InstrumentFilter(params.venue, params.symbols, params.instrument_status,
                                     params.limit, params.offset)
    async with connection(request.app[POOL]) as conn:
        records, total = await service.list_instruments(conn, query)
    return Page([instrument_out(r) for r in records], total, params.limit, params.offset)


async def enable(request: web.Request, principal: Principal | None,
                 params: InstrumentIdRequest) -> InstrumentOut:
    async with UnitOfWork(request.app[POOL]) as uow:
        record = await service.set_enabled(uow, params.instrument_id, True, request.app[CLOCK]())
    return instrument_out(record)


async def disable(request: web.Request, principal: Principal | None,
                  params: InstrumentIdRequest) -> InstrumentOut:
    async with UnitOfWork(request.app[POOL]) as uow:
        record = await service.set_enabled(uow, params.instrument_id, False, request.app[CLOCK]())
    return instrument_out(record)


# ---------------------------------------------------------------- order books


def _parse_instrument(value: str) -> tuple[str, str]:
    venue, sep, symbol = value.partition(":")
    try:
        split_symbol(symbol)
    except ValueError:
        # what was sent is never echoed (README, errors): the message names the shape
        raise ApiError(Errors.INVALID_INSTRUMENT_ID,
                       "Invalid instrumentId: VENUE:BASE/QUOTE expected") from None
    if not sep or venue not in EXCHANGE_VENUES:
        raise ApiError(Errors.INVALID_INSTRUMENT_ID,
                       f"Unknown venue in instrumentId: one of {', '.join(EXCHANGE_VENUES)}")
    return venue, symbol


def _target(instrument: str | None, venue: str | None, symbol: str | None) -> tuple[str, str]:
    if instrument is not None:
        if venue is not None or symbol is not None:
            raise ApiError(Errors.INVALID_INSTRUMENT_ID,
                           "Give either instrumentId or venue and symbol, not both")
        return _parse_instrument(instrument)
    if venue is None or symbol is None:
        raise ApiError(Errors.INVALID_INSTRUMENT_ID)
    return _parse_instrument(f"{venue}:{symbol}")


def book_out(book: BookSnapshot, depth: int, age_ms: int | None, fresh: bool) -> OrderBookOut:
    return OrderBookOut(
        instrument_id=instrument_id(book.venue, book.symbol), venue=book.venue,
        symbol=book.symbol, asks=[(decimal_text(p), decimal_text(q)) for p, q in book.asks[:depth]],
        bids=[(decimal_text(p), decimal_text(q)) for p, q in book.bids[:depth]],
        timestamp=book.ts_event,
        sequence=book.sequence, age_ms=age_ms, fresh=fresh,
    )


async def _book(app: web.Application, venue: str, symbol: str, depth: int) -> OrderBookOut:
    """The live book when the daemon follows it, else a snapshot from the connector."""
    market_data = app[MARKET_DATA]
    state = market_data.state(venue, symbol)
    now_ms = millis(app[CLOCK]()) or 0
    if state is not None and state.book is not None:
        return book_out(state.book, depth, state.age_ms(now_ms),
                        state.is_fresh(now_ms, market_data.max_age_ms))
    market = app[VENUES].market_data(venue)
    try:
        async with app[METRICS].connector_call(venue, market.connector, "order_book"):
            book = await market.order_book(symbol, depth)
    except VenueError as exc:
        if isinstance(exc, UnknownInstrument):
            raise ApiError(Errors.UNKNOWN_SYMBOLS, f"{venue} does not list {symbol}") from None
        raise ApiError(Errors.VENUE_UNAVAILABLE, f"{venue}: {exc}") from None
    return book_out(book, depth, 0, True)


async def order_book(request: web.Request, principal: Principal | None,
                     params: BookQuery) -> OrderBookOut:
    venue, symbol = _target(params.instrument_id, params.venue, params.symbol)
    return await _book(request.app, venue, symbol, params.depth)


async def order_books(request: web.Request, principal: Principal | None,
                      params: BookListQuery) -> list[OrderBookOut]:
    targets = [_parse_instrument(i) for i in params.instrument_ids or []]
    if params.symbols:
        if params.venue is None:
            raise ApiError(Errors.INVALID_INSTRUMENT_ID, "symbols need a venue")
        targets += [_parse_instrument(f"{params.venue}:{s}") for s in params.symbols]
    elif params.venue is not None:
        targets += [(params.venue, s) for v, s in request.app[MARKET_DATA].subscribed()
                    if v == params.venue]
    if not targets and not params.instrument_ids:
        targets = request.app[MARKET_DATA].subscribed()
    unique = list(dict.fromkeys(targets))
    return list(await asyncio.gather(*(_book(request.app, v, s, params.depth) for v, s in unique)))


async def venues(request: web.Request, principal: Principal | None, params: None
                 ) -> list[VenueOut]:
    return [VenueOut(venue=v, status="ONLINE", connector=c)
            for v, c in request.app[VENUES].connectors().items()]


# ---------------------------------------------------------------- consolidated book


def _level_out(level: ConsolidatedLevel) -> ConsolidatedLevelOut:
    return ConsolidatedLevelOut(
        price=decimal_text(level.adjusted_price.normalize()),
        quantity=decimal_text(level.quantity),
        sources=[SourceOut(trading_account_id=s.source, venue=s.venue, price=decimal_text(s.price),
                           quantity=decimal_text(s.quantity)) for s in level.sources],
    )


# What `dealer_book` reads besides the dealer: the LPs being drained, and the venues where
# the instrument is synced and enabled (quotes read the same through their cached facts).
_DRAINING_LPS = """SELECT coalesce(array_agg(trading_account_id), '{}') FROM dealer_link
                   WHERE dealer_account_id = $1 AND draining"""
_SYNCED_VENUES = """SELECT coalesce(array_agg(DISTINCT venue), '{}') FROM instrument
                    WHERE symbol = $1 AND enabled"""


async def dealer_book(request: web.Request, principal: Principal | None,
                      params: DealerBookQuery) -> DealerBookOut:
    app = request.app
    async with connection(app[POOL]) as conn:
        dealer = await get_dealer(conn, params.dealer_account_id)
        draining = set(await conn.fetchval(_DRAINING_LPS, params.dealer_account_id))
        synced = set(await conn.fetchval(_SYNCED_VENUES, params.symbol))
    if params.symbol not in dealer.config.symbols:
        raise ApiError(Errors.SYMBOL_NOT_QUOTED, f"The dealer does not quote {params.symbol}")
    market_data = app[MARKET_DATA]
    now_ms = millis(app[CLOCK]()) or 0
    # The books quotes are priced from (as `Quoter._check_books` picks them): two accounts on
    # one venue take from its one book, which counts once, for the account that pays less to
    # take it; then only LPs not draining, on venues where the instrument is synced and enabled.
    fresh_books = market_data.fresh_books(params.dealer_account_id, params.symbol, now_ms)
    counted_for = {lp.venue: lp.trading_account_id for lp, _ in fresh_books}
    counted = [(lp, book) for lp, book in fresh_books
               if lp.trading_account_id not in draining and lp.venue in synced]
    counted_ids = {lp.trading_account_id for lp, _ in counted}
    lps = []
    for lp, state in market_data.lp_books(params.dealer_account_id, params.symbol):
        fresh = lp.active and state is not None and state.is_fresh(now_ms, market_data.max_age_ms)
        reason = None
        if not lp.active:
            reason = "LP account is not ACTIVE"
        elif lp.trading_account_id in draining:
            reason = "draining: unlinked once its hedge work is done"
        elif lp.venue not in synced:
            reason = f"{params.symbol} is not synced or is disabled on {lp.venue}"
        elif state is None or not fresh:
            reason = "no book yet" if state is None else (state.stale_reason or "book too old")
        elif lp.trading_account_id not in counted_ids:
            reason = f"the {lp.venue} book counts once, for account {counted_for.get(lp.venue)}"
        lps.append(LpStatusOut(
            trading_account_id=lp.trading_account_id, venue=lp.venue,
            taker_fee=decimal_text(lp.taker_fee.normalize()), fresh=fresh, reason=reason,
            age_ms=None if state is None else state.age_ms(now_ms)))
    books = [LpBook(str(lp.trading_account_id), lp.venue, lp.taker_fee, book.bids, book.asks)
             for lp, book in counted]
    merged = consolidate(books, params.depth)
    return DealerBookOut(
        dealer_account_id=params.dealer_account_id,
        instrument_id=instrument_id("FERMATA", params.symbol), symbol=params.symbol,
        bids=[_level_out(level) for level in merged.bids],
        asks=[_level_out(level) for level in merged.asks], lps=lps, timestamp=now_ms,
    )


# ---------------------------------------------------------------- portfolios


async def portfolios(request: web.Request, principal: Principal | None,
                     params: PortfolioQuery) -> Page[PortfolioOut]:
    app = request.app
    query = AccountFilter(trading_account_id=params.trading_account_id, venue=params.venue,
                          status="ACTIVE", only=None, kind="EXCHANGE", limit=params.limit,
                          offset=params.offset)
    async with connection(app[POOL]) as conn:
        accounts, total = await list_accounts(conn, query)
    now = app[CLOCK]()

    async def one(account: TradingAccountRecord) -> PortfolioOut:
        balances: list[BalanceOut] = []
        error = None
        try:
            venue_account = VenueAccount(account.trading_account_id,
                                         account.external_trading_account_id, account.venue_ref)
            execution = app[VENUES].execution(account.venue)
            async with app[METRICS].connector_call(account.venue, execution.connector,
                                                   "balances"):
                found = await execution.balances(venue_account)
        except VenueError as exc:
            found, error = [], f"{account.venue}: {exc}"
        for b in found:
            if params.currency and b.asset != params.currency:
                continue
            balances.append(BalanceOut(
                security_symbol=b.asset, security_type="CRYPTO",
                trading_account_id=account.trading_account_id, status="ACTIVE",
                free=decimal_text(b.free), locked=decimal_text(b.locked), borrowed="0",
                total=decimal_text(b.total), net=decimal_text(b.total), updated_at=millis(now) or 0,
                updated_at_date_time=iso(now) or ""))
        return PortfolioOut(trading_account_id=account.trading_account_id, venue=account.venue,
                            positions=[], balances=balances, error=error,
                            updated_at=millis(now) or 0, updated_at_date_time=iso(now) or "")

    items = await asyncio.gather(*(one(a) for a in accounts))
    return Page(list(items), total, params.limit, params.offset)

