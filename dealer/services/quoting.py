"""The quote path: price a firm quote from cached quoting facts and store it in one group write.

A quote needs the dealer (status, configuration, links), the client account (kind, status) and
the instrument rules of the LP venues. They change rarely (an admin acts) and are read for every
quote, so they are cached in memory with the *epoch* they were read at: a counter in the database
that every change of such a fact moves, on this replica or any other, through the API or straight
in SQL (triggers, migration 0016). The quote's INSERT checks in the same statement that the epoch
has not moved, so a quote is never stored on facts that changed: a stale quote is not written,
its facts are reloaded and it is priced again. A refusal is only answered on freshly read facts.

Quotes are inserted by one writer task in groups (one INSERT … SELECT FROM a JSON array, one
commit for every quote waiting), so under load a database round trip serves many quotes.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import datetime as dt
import logging
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, NamedTuple

import asyncpg

from dealer.errors import ApiError, Errors
from dealer.ids import uuid_from_int
from dealer.marketdata import MarketDataService, PricingBooks
from dealer.services.dealers import DEALER_COLUMNS, DEALER_FROM, DealerRecord
from dealer.services.records import CLIENT
from dealer.services.rfq import (
    QuoteCommand,
    QuoteRecord,
    exposure_of,
    quoting_config,
    refusal,
    rules_from_rows,
    stored_plan,
)
from dealer.uow import connection
from ledger.assets import ScaleTable, UnknownAsset, from_minor
from pricing.errors import NotionalBelowMinimum, QuoteRefused
from pricing.quote import (
    InstrumentRules,
    Quote,
    QuotingConfig,
    lot_for_scale,
    price_quote,
    quote_request,
)
from pricing.sweep import SweepBook
from venues.base import split_symbol

log = logging.getLogger(__name__)

_LOAD_EPOCH = "SELECT epoch FROM quoting_epoch"
_LOAD_DEALER = f"""
SELECT {DEALER_COLUMNS},
       ARRAY(SELECT l.trading_account_id FROM dealer_link l
             WHERE l.dealer_account_id = d.dealer_account_id AND l.draining) AS draining
{DEALER_FROM}
WHERE d.dealer_account_id = $1"""  # noqa: S608
_LOAD_CLIENT = "SELECT ta.kind, ta.status FROM trading_account ta WHERE ta.trading_account_id = $1"
_LOAD_RULES = """
SELECT coalesce((SELECT json_agg(json_build_object(
           'venue', i.venue, 'tick_size', i.tick_size::text, 'lot_size', i.lot_size::text,
           'min_quantity', i.min_quantity::text, 'max_quantity', i.max_quantity::text,
           'min_notional', i.min_notional::text))
        FROM instrument i WHERE i.symbol = $1 AND i.enabled), '[]'::json)"""

# A quote is stored only if the facts it was priced on are still the current ones: if the epoch
# they were read at is still the current epoch (migration 0016). The group travels as one JSON
# array of rows (one array per quote, in the order of `_quote_row`): the driver encodes one
# text parameter instead of 12 arrays, whose per-element shape checks and character-by-character
# escaping of the jsonb[] hedge plans cost more than pricing the quote. PostgreSQL parses the
# text once; every value keeps its exact text form (decimals as strings, UTC times with
# microseconds) and the hedge plan stays the same jsonb.
_INSERT_QUOTES = """
WITH u AS (
    SELECT (r->>0)::uuid AS quote_id, (r->>1)::uuid AS dealer, (r->>2)::uuid AS client,
           r->>3 AS symbol, r->>4 AS side, (r->>5)::numeric AS quantity,
           (r->>6)::numeric AS bid, (r->>7)::numeric AS ask, r->8 AS plan,
           (r->>9)::timestamptz AS created_at, (r->>10)::timestamptz AS expire_at,
           (r->>11)::bigint AS epoch
    FROM jsonb_array_elements($1::jsonb) AS r
), written AS (
    INSERT INTO quote (quote_id, dealer_account_id, trading_account_id, symbol, order_side,
                       quantity, bid_price, ask_price, hedge_plan, status, created_at, expire_at)
    SELECT u.quote_id, u.dealer, u.client, u.symbol, u.side, u.quantity, u.bid, u.ask, u.plan,
           'OPEN', u.created_at, u.expire_at
    FROM u WHERE u.epoch = (SELECT epoch FROM quoting_epoch)
    RETURNING quote_id
)
SELECT u.quote_id FROM u WHERE u.quote_id NOT IN (SELECT quote_id FROM written)"""

MAX_ATTEMPTS = 3
_LEDGER_RULES_KEPT = 1024  # instrument rules remembered with their ledger lot
_ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class _Dealer:
    record: DealerRecord
    draining: frozenset[uuid.UUID]  # LPs being drained before an unlink: no new hedges there
    # The LPs a quote may price on: linked (the market data subscriptions can still hold an LP
    # unlinked since they were refreshed) and not draining.
    pricing_lps: frozenset[uuid.UUID]
    epoch: int
    quoting: QuotingConfig
    # What every quote reads of the configuration, worked out once when the facts are read
    # (the pydantic configuration holds strings: converting them per quote was wasted work).
    exposure_limits: dict[str, Decimal]
    ttl: dt.timedelta
    bases: dict[str, str]  # the base asset of each quoted symbol

    @classmethod
    def of(cls, record: DealerRecord, draining: frozenset[uuid.UUID], epoch: int) -> _Dealer:
        config = record.config
        return cls(record, draining, frozenset(record.linked_accounts) - draining, epoch,
                   quoting_config(config),
                   exposure_limits={asset: Decimal(limit) for asset, limit
                                    in config.max_unhedged_exposure.items()},
                   ttl=dt.timedelta(milliseconds=config.quote_ttl_ms),
                   bases={symbol: symbol.partition("/")[0] for symbol in config.symbols})


@dataclass(frozen=True, slots=True)
class _Client:
    kind: str
    status: str
    epoch: int


_UNKNOWN = _Client("", "", -1)  # not in the cache (None there is a known non-existent client)


@dataclass(frozen=True, slots=True)
class _Rules:
    rows: tuple[dict[str, Any], ...]
    epoch: int
    by_venues: dict[frozenset[str], InstrumentRules | None] = field(
        default_factory=dict, compare=False)
    synced: frozenset[str] = frozenset()  # the venues with the instrument

    @classmethod
    def of(cls, rows: tuple[dict[str, Any], ...], epoch: int) -> _Rules:
        return cls(rows, epoch, synced=frozenset(row["venue"] for row in rows))

    def for_venues(self, venues: frozenset[str]) -> InstrumentRules | None:
        """The strictest rules of these venues' instruments (worked out once per venue set)."""
        if venues not in self.by_venues:
            self.by_venues[venues] = rules_from_rows([r for r in self.rows
                                                      if r["venue"] in venues])
        return self.by_venues[venues]


@dataclass(slots=True)
class QuotingCache:
    """Quoting facts by id, each with the epoch it was read at (never trusted blindly: the
    quote's INSERT checks that the epoch has not moved since). Bounded: cleared when it grows
    past `limit`."""

    limit: int = 10_000
    # By the ids' ints: hashed in C, where a UUID's hash is a Python call (every quote looks
    # up both).
    dealers: dict[int, _Dealer] = field(default_factory=dict)
    clients: dict[int, _Client | None] = field(default_factory=dict)
    rules: dict[str, _Rules] = field(default_factory=dict)

    def forget(self, cmd: QuoteCommand) -> None:
        self.dealers.pop(cmd.dealer_account_id.int, None)
        self.clients.pop(cmd.trading_account_id.int, None)
        self.rules.pop(cmd.symbol, None)

    def keep(self, cmd: QuoteCommand, dealer: _Dealer, client: _Client | None,
             rules: _Rules) -> None:
        if len(self.clients) >= self.limit:
            self.dealers.clear()
            self.clients.clear()
            self.rules.clear()
        self.dealers[cmd.dealer_account_id.int] = dealer
        self.clients[cmd.trading_account_id.int] = client
        self.rules[cmd.symbol] = rules


# Tuples, not frozen dataclasses: one of each is made per quote, and a frozen dataclass pays
# a call of object.__setattr__ per field.
class _Facts(NamedTuple):
    dealer: _Dealer
    client: _Client | None
    rules: _Rules
    fresh: bool  # read from the database for this request


class _Priced(NamedTuple):
    """What a quote is priced from, once the refusals that need no pricing are passed."""

    rules: InstrumentRules
    sweep_book: SweepBook
    base: str
    limit: Decimal | None  # the dealer's exposure limit of the base asset
    quote_unit: Decimal | None  # one minor unit of the quote asset in the ledger (None: no scales)


class _Checked(NamedTuple):
    """What a request passed `_check` with (the objects themselves) and what it was priced from."""

    dealer: _Dealer
    client: _Client | None
    rules: _Rules
    symbol: str
    books: PricingBooks
    priced: _Priced


class QuoteDraft(NamedTuple):
    """A priced quote waiting to be written, with the epoch of the facts it was priced on (the
    oldest, when they were read at different epochs: then the write refuses it)."""

    record: QuoteRecord
    epoch: int


class QuoteWriter:
    """Writes quotes in groups: every quote waiting when a write starts goes in that write."""

    def __init__(self, pool: asyncpg.Pool, *, max_batch: int = 500) -> None:
        self._pool = pool
        self._max_batch = max_batch
        # A list and a wake-up future rather than an asyncio.Queue: a quote is handed over and
        # taken with no per-item bookkeeping (this runs for every quote).
        self._waiting: list[tuple[QuoteDraft, asyncio.Future[bool]]] = []
        self._wakeup: asyncio.Future[None] | None = None  # while the writer has nothing to do
        self._writing = False
        self._drained: asyncio.Future[None] | None = None  # `stop` waits on it
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        # Kept from `start`: on Python 3.11, asyncio.get_running_loop() makes a getpid() system
        # call, and `submit` runs for every quote.
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._run(), name="quote-writer")

    async def stop(self) -> None:
        """Write what is queued, then stop."""
        if self._task is None:
            return
        self._closing = True
        if (self._waiting or self._writing) and not self._task.done():
            self._drained = asyncio.get_running_loop().create_future()
            await self._drained
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    def submit(self, draft: QuoteDraft) -> asyncio.Future[bool]:
        """Queue a quote; the future answers True once it is committed, False when its facts
        changed (nothing written)."""
        if self._task is None or self._closing or self._task.done() or self._loop is None:
            raise ApiError(Errors.SERVICE_UNAVAILABLE, "The daemon is stopping")
        done: asyncio.Future[bool] = self._loop.create_future()
        self._waiting.append((draft, done))
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)
        return done

    async def write(self, draft: QuoteDraft) -> bool:
        """True once the quote is committed; False when its facts changed (nothing written)."""
        return await self.submit(draft)

    async def _run(self) -> None:
        # The writer keeps one pooled connection (no acquire/reset per group); after an error it
        # gives the connection back, and the pool replaces it if it broke.
        conn: asyncpg.pool.PoolConnectionProxy | None = None
        loop = asyncio.get_running_loop()
        try:
            while True:
                if not self._waiting:
                    if self._drained is not None and not self._drained.done():
                        self._drained.set_result(None)
                    self._wakeup = loop.create_future()
                    await self._wakeup
                    self._wakeup = None
                batch = self._waiting[:self._max_batch]
                del self._waiting[:self._max_batch]
                self._writing = True
                try:
                    if conn is None:
                        conn = await self._pool.acquire()
                        # A quote is an offer until accepted: its commit need not wait for the
                        # WAL to reach the disk. A database crash can lose at most the last few
                        # hundred ms of quotes not yet accepted (their accepts then answer "not
                        # found", as during the outage); an accept commits synchronously, which
                        # flushes its quote's earlier commit with it. Reset when given back.
                        await conn.execute("SET synchronous_commit TO off")
                    # The statement answers the quotes it did NOT write (usually none).
                    rows = await conn.fetch(_INSERT_QUOTES, [_quote_row(draft)
                                                             for draft, _ in batch])
                except Exception as exc:  # every waiting request answers the outage
                    if conn is not None:
                        await self._give_back(conn, broken=True)
                        conn = None
                    for _, done in batch:
                        if not done.done():
                            done.set_exception(exc)
                else:
                    refused = {row[0] for row in rows} if rows else ()
                    for draft, done in batch:
                        if not done.done():
                            done.set_result(draft.record.quote_id not in refused)
                finally:
                    self._writing = False
        finally:
            if conn is not None:
                await self._give_back(conn)

    async def _give_back(self, conn: asyncpg.pool.PoolConnectionProxy, *,
                         broken: bool = False) -> None:
        # After a failed write the connection is closed (its protocol state is unknown) and the
        # pool opens a new one. The writer must live on either way, or every later quote would
        # wait for it forever.
        try:
            if broken:
                conn.terminate()
            await self._pool.release(conn)
        except Exception:
            log.warning("quote writer: could not give its connection back", exc_info=True)


def _quote_row(draft: QuoteDraft) -> list[Any]:
    """One quote as a row of `_INSERT_QUOTES` (orjson writes the UUIDs and the UTC times)."""
    q = draft.record
    # The times as the driver stores a datetime: an aware one at its instant, a naive one as
    # local time (converted here only when not in UTC already, as usual: no call per time).
    created_at, expire_at = q.created_at, q.expire_at
    if created_at.tzinfo is not dt.UTC:
        created_at = created_at.astimezone(dt.UTC)
    if expire_at.tzinfo is not dt.UTC:
        expire_at = expire_at.astimezone(dt.UTC)
    return [q.quote_id, q.dealer_account_id, q.trading_account_id, q.symbol, q.order_side,
            str(q.quantity), None if q.bid_price is None else str(q.bid_price),
            None if q.ask_price is None else str(q.ask_price), q.hedge_plan,
            created_at, expire_at, draft.epoch]


class Quoter:
    """Request a firm quote: the use case behind `POST /api/v3/fermata/quote/request`."""

    def __init__(self, pool: asyncpg.Pool, market_data: MarketDataService,
                 writer: QuoteWriter, cache: QuotingCache | None = None, *,
                 on_read: Callable[[], None] | None = None,
                 scales: ScaleTable | None = None,
                 clock: Callable[[], dt.datetime] | None = None) -> None:
        """`scales`: the ledger's; a symbol with an asset it has no scale for is not quoted
        (its accept could not be booked). `clock`: the time of a second try (without it, the
        request's arrival time serves every try)."""
        self._pool = pool
        self._clock = clock
        self._scales = scales
        self._bookable: set[str] = set()  # symbols whose assets the ledger has scales for
        # The rules a quote counts in, by the instrument rules they come from (by identity, the
        # rules kept with it): the lot is one the ledger can book (`lot_for_scale`; the
        # instrument's own, as usual). Worked out once per rules, not per quote.
        self._ledger_rules: dict[int, tuple[InstrumentRules, InstrumentRules]] = {}
        self._quote_units: dict[str, Decimal] = {}  # by symbol: its quote asset's minor unit
        self._on_read = on_read  # hears each read of facts that goes to the database
        self._market_data = market_data
        self._writer = writer
        self._cache = cache if cache is not None else QuotingCache()
        self._ids = _QuoteIds()
        # Reads of facts in progress, by (dealer, client, symbol), each with its number: reads
        # are numbered as they begin, so one numbered above what a request saw on arrival began
        # after it came (exact, where two clock readings can be equal).
        self._reads: dict[tuple[uuid.UUID, uuid.UUID, str], tuple[int, asyncio.Task[_Facts]]] = {}
        self._last_checked: _Checked | None = None  # what `_check` last passed, and on what
        self.reads_started = 0

    async def close(self) -> None:
        """Cancel the reads still in progress (each holds a pooled connection)."""
        reads = [task for _, task in self._reads.values()]
        for task in reads:
            task.cancel()
        await asyncio.gather(*reads, return_exceptions=True)

    async def request_quote(self, cmd: QuoteCommand, now: dt.datetime) -> QuoteRecord:
        """Price and store a firm quote (refusals are explicit ApiErrors, nothing written)."""
        facts = self._cached(cmd)
        since = self.reads_started  # a read of facts this request may share began after this
        stale: int | None = None  # the epoch of facts a write refused
        for attempt in range(MAX_ATTEMPTS):
            if facts is None:
                facts = await self._load(cmd, since, stale)
            if attempt and self._clock is not None:
                # A second try is priced at its own time: the books' freshness is judged, and
                # the quote's validity runs, from now, not from the request's arrival.
                now = self._clock()
            try:
                priced = self._check(facts, cmd, now)
                exposure = _ZERO
                # The skew needs the limit too (it is the exposure's share of the limit).
                if priced.limit is not None:
                    # Exposure moves with every fill and hedge: read it now, never from a cache.
                    async with connection(self._pool) as conn:
                        exposure = await exposure_of(conn, cmd.dealer_account_id, priced.base)
                draft = self._draft(facts, cmd, now, priced, exposure)
            except ApiError:
                if facts.fresh:
                    raise
                facts = None  # a refusal must stand on facts read now
                continue
            if await self._writer.submit(draft):
                return draft.record
            self._cache.forget(cmd)  # changed since read: read again, price again
            facts = None
            stale = draft.epoch
        raise ApiError(Errors.SERVICE_UNAVAILABLE,
                       "The dealer's configuration kept changing while quoting; retry")

    def _cached(self, cmd: QuoteCommand) -> _Facts | None:
        cache = self._cache
        dealer = cache.dealers.get(cmd.dealer_account_id.int)
        rules = cache.rules.get(cmd.symbol)
        client = cache.clients.get(cmd.trading_account_id.int, _UNKNOWN)
        if dealer is None or rules is None or client is _UNKNOWN:
            return None
        # tuple.__new__ itself: the NamedTuple's own __new__ would be one more Python call
        return tuple.__new__(_Facts, (dealer, client, rules, False))

    async def _load(self, cmd: QuoteCommand, since: int, stale: int | None) -> _Facts:
        """The facts read afresh. Requests that need the same facts at once share one read (an
        epoch move sends the quotes in flight back for their facts together). A read serves a
        request if it began after the request came (numbered above `since`: a refusal stands on
        facts read since), and, after a write refused facts of epoch `stale`, if it saw a later
        epoch."""
        key = (cmd.dealer_account_id, cmd.trading_account_id, cmd.symbol)
        current = self._reads.get(key)
        if current is None or current[0] <= since:
            current = self._start_read(key, cmd)
        # Shielded: a request that stops waiting leaves the read to the others.
        facts = await asyncio.shield(current[1])
        if stale is not None and facts.dealer.epoch <= stale:
            # That read began before the change that refused this quote: one that began since.
            newer = self._reads.get(key)
            current = newer if newer is not None and newer is not current \
                else self._start_read(key, cmd)
            facts = await asyncio.shield(current[1])
        return facts

    def _start_read(self, key: tuple[uuid.UUID, uuid.UUID, str],
                    cmd: QuoteCommand) -> tuple[int, asyncio.Task[_Facts]]:
        self.reads_started += 1
        if self._on_read is not None:
            self._on_read()
        # In a context of its own: the read serves every request sharing it, so its log lines
        # carry none of the first one's ids.
        task = asyncio.get_running_loop().create_task(self._read(cmd),
                                                      context=contextvars.Context())
        started = self._reads[key] = (self.reads_started, task)

        def done(finished: asyncio.Task[_Facts]) -> None:
            if self._reads.get(key) is started:
                del self._reads[key]
            if not finished.cancelled():
                finished.exception()  # seen, even when every request stopped waiting

        task.add_done_callback(done)
        return started

    async def _read(self, cmd: QuoteCommand) -> _Facts:
        # One snapshot: the facts and the epoch they belong to.
        async with self._pool.acquire() as conn, conn.transaction(isolation="repeatable_read",
                                                                   readonly=True):
            epoch: int = await conn.fetchval(_LOAD_EPOCH)
            dealer_row = await conn.fetchrow(_LOAD_DEALER, cmd.dealer_account_id)
            client_row = await conn.fetchrow(_LOAD_CLIENT, cmd.trading_account_id)
            rule_rows = await conn.fetchval(_LOAD_RULES, cmd.symbol)
        if dealer_row is None:
            raise ApiError(Errors.DEALER_NOT_FOUND)
        record = DealerRecord.from_row(dealer_row)
        dealer = _Dealer.of(record, frozenset(dealer_row["draining"]), epoch)
        client = None if client_row is None else _Client(
            client_row["kind"], client_row["status"], epoch)
        rules = _Rules.of(tuple(rule_rows), epoch)
        self._cache.keep(cmd, dealer, client, rules)
        return _Facts(dealer, client, rules, fresh=True)

    def _check(self, facts: _Facts, cmd: QuoteCommand, now: dt.datetime) -> _Priced:
        """What the quote is priced from, or the refusal that comes before any pricing."""
        cached = facts.dealer
        now_ms = int(now.timestamp() * 1000)
        last = self._last_checked
        # The checks read nothing but these facts, the symbol and the books, all immutable:
        # when they are the very objects the last request passed with, so does this one.
        if (last is not None and last.dealer is cached and last.client is facts.client
                and last.rules is facts.rules and last.symbol == cmd.symbol):
            books = self._market_data.pricing_books(cmd.dealer_account_id, cmd.symbol, now_ms)
            if books is last.books:
                return last.priced
            return self._check_books(facts, cmd, books)
        dealer = cached.record
        if dealer.status != "ACTIVE":
            raise ApiError(Errors.DEALER_PAUSED, f"The dealer is paused: "
                           f"{dealer.pause_reason or ''}".rstrip(": "))
        client = facts.client
        if client is None or client.kind != CLIENT:
            raise ApiError(Errors.CLIENT_NOT_FOUND, f"No client account {cmd.trading_account_id}")
        if client.status != "ACTIVE":
            raise ApiError(Errors.ACCOUNT_NOT_ACTIVE,
                           f"Client account is not ACTIVE (status {client.status})")
        base = cached.bases.get(cmd.symbol)
        if base is None:
            raise ApiError(Errors.SYMBOL_NOT_QUOTED, f"The dealer does not quote {cmd.symbol}")
        if self._scales is not None and cmd.symbol not in self._bookable:
            try:
                for code in split_symbol(cmd.symbol):
                    self._scales.asset(code)
            except UnknownAsset as exc:
                raise ApiError(Errors.SYMBOL_NOT_QUOTED, str(exc)) from None
            self._quote_units[cmd.symbol] = from_minor(
                1, self._scales.asset(split_symbol(cmd.symbol)[1]))
            self._bookable.add(cmd.symbol)
        if not dealer.linked_accounts:
            raise ApiError(Errors.NO_LINKED_LP)
        return self._check_books(facts, cmd, self._market_data.pricing_books(
            cmd.dealer_account_id, cmd.symbol, now_ms))

    def _check_books(self, facts: _Facts, cmd: QuoteCommand, books: PricingBooks) -> _Priced:
        """`_check` once the facts are passed: the refusals that depend on the books."""
        cached, market_data = facts.dealer, self._market_data
        base = cached.bases[cmd.symbol]
        fresh, venues = books.books, books.venues
        # A quote prices only liquidity its hedge can use: LPs linked and not draining, on
        # venues where the instrument is synced (its rules are the quote's). Two subset tests
        # when, as usual, every fresh book qualifies.
        if not books.lp_ids <= cached.pricing_lps:
            fresh = [(lp, book) for lp, book in fresh
                     if lp.trading_account_id in cached.pricing_lps]
            venues = frozenset(lp.venue for lp, _ in fresh)
        if not fresh:
            raise ApiError(Errors.BOOKS_STALE)
        synced = facts.rules.synced
        if not venues <= synced:
            fresh = [(lp, book) for lp, book in fresh if lp.venue in synced]
            venues = venues & synced
            if not fresh and any(
                    lp.trading_account_id in cached.pricing_lps and lp.venue in synced
                    for lp, _ in market_data.lp_books(cmd.dealer_account_id, cmd.symbol)):
                # An LP's venue has the instrument, only no fresh book of it (stale, or the
                # account disabled): as without any fresh book, not "not quoted".
                raise ApiError(Errors.BOOKS_STALE)
        rules = facts.rules.for_venues(venues) if fresh else None
        if rules is None:
            raise ApiError(Errors.SYMBOL_NOT_QUOTED,
                           f"No synced instrument {cmd.symbol} on the LP venues; sync instruments")
        if self._scales is not None:
            # A quantity finer than the ledger books the base asset in could not be filled:
            # quantities are then counted in a coarser lot (DEALER_ASSET_SCALES set BTC to 4
            # decimals where a venue's lot is 0.00001: lots of 0.0001).
            known = self._ledger_rules.get(id(rules))
            if known is None or known[0] is not rules:
                known = (rules, self._ledger_rules_of(rules, base))
            rules = known[1]
        # Books shared by every quote until one of them changes: their merge is kept with them.
        sweep_book = (books.sweep_book(market_data, rules.lot_size) if fresh is books.books
                      else market_data.sweep_book(fresh, rules.lot_size))
        priced = _Priced(rules, sweep_book, base, cached.exposure_limits.get(base),
                         self._quote_units.get(cmd.symbol))
        self._last_checked = _Checked(cached, facts.client, facts.rules, cmd.symbol, books,
                                      priced)
        return priced

    def _ledger_rules_of(self, rules: InstrumentRules, base: str) -> InstrumentRules:
        assert self._scales is not None
        lot = lot_for_scale(rules.lot_size, self._scales.asset(base).scale)
        ledger_rules = rules if lot == rules.lot_size else dataclasses.replace(rules,
                                                                               lot_size=lot)
        if len(self._ledger_rules) >= _LEDGER_RULES_KEPT:  # rules change at instrument syncs
            self._ledger_rules.clear()
        self._ledger_rules[id(rules)] = (rules, ledger_rules)
        return ledger_rules

    def _draft(self, facts: _Facts, cmd: QuoteCommand, now: dt.datetime, priced: _Priced,
               exposure: Decimal) -> QuoteDraft:
        cached = facts.dealer
        rules, limit = priced.rules, priced.limit
        try:
            # quote_request, its arguments in order: a class call and keyword arguments cost
            # more
            quote = price_quote(
                quote_request(cmd.side, rules, cached.quoting,  # type: ignore[arg-type]
                              cmd.quantity, cmd.quote_quantity, exposure, limit),
                priced.sweep_book)
        except QuoteRefused as exc:
            raise refusal(exc) from None
        bid = quote.bid
        if (bid is not None and priced.quote_unit is not None
                and bid.quote_quantity < priced.quote_unit):
            # What the dealer pays a client SELL is booked rounded down to whole minor units:
            # under one unit it books nothing, and the fill could not be written (its accept
            # would fail). The ask, rounded up, always books at least one unit; the base
            # quantity counts in lots the ledger books exactly (`lot_for_scale`).
            raise refusal(NotionalBelowMinimum(bid.quote_quantity, priced.quote_unit,
                                               "ledger"))
        if limit is not None:
            _check_exposure(quote, exposure, limit, priced.base)
        ask, client = quote.ask, facts.client
        assert client is not None  # `_check` refuses a quote without a client
        # tuple.__new__ itself, the fields in their order: the NamedTuples' own __new__ would
        # be a Python call each
        record = tuple.__new__(QuoteRecord, (
            self._ids.next(), cmd.dealer_account_id, cmd.trading_account_id, cmd.symbol,
            cmd.side, quote.quantity,  # order_side, quantity
            None if bid is None else bid.price, None if ask is None else ask.price,
            stored_plan(quote, rules.lot_size), "OPEN",  # hedge_plan, status
            now, now + cached.ttl, None))  # created_at, expire_at, filled_order_id
        return tuple.__new__(QuoteDraft, (record, min(cached.epoch, client.epoch,
                                                      facts.rules.epoch)))


class _QuoteIds:
    """Random (version 4) quote ids from os.urandom read 4 KiB at a time: as unguessable as
    uuid4's, without a system call per quote."""

    __slots__ = ("_at", "_block")

    def __init__(self) -> None:
        self._block = b""
        self._at = 0

    def next(self) -> uuid.UUID:
        at = self._at
        if at >= len(self._block):
            self._block, at = os.urandom(4096), 0
        self._at = at + 16
        bits = int.from_bytes(self._block[at:at + 16], "big")
        return uuid_from_int(bits & _NOT_VERSION_OR_VARIANT | _VERSION_4_RFC_4122)


# What uuid.UUID(..., version=4) sets: version 4 in bits 76-79, the RFC 4122 variant in 62-63.
_NOT_VERSION_OR_VARIANT = ~((0xF000 << 64) | (0xC000 << 48)) & ((1 << 128) - 1)
_VERSION_4_RFC_4122 = (4 << 76) | (0x8000 << 48)


def _check_exposure(quote: Quote, exposure: Decimal, limit: Decimal, base: str) -> None:
    # A client BUY leaves the dealer short until hedged, a SELL long. A side that leaves the
    # position nearer flat is never refused, past the limit too (after hedges that failed, or
    # fills of quotes each within it): it is the trade the skew asks for.
    worst = _ZERO
    for side, after in ((quote.ask, exposure - quote.quantity),
                        (quote.bid, exposure + quote.quantity)):
        if side is not None and abs(after) > abs(exposure):
            worst = max(worst, abs(after))
    if worst > limit:
        raise ApiError(Errors.EXPOSURE_LIMIT, f"Unhedged {base} would reach {worst} "
                       f"(limit {limit})")
