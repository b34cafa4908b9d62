"""Market-data service: live books of every (venue, symbol) that a linked LP's dealer quotes.

Each book comes from its connector's stream. An update is accepted only if it is well formed,
uncrossed and carries the next sequence number; a crossed update is dropped and a sequence gap
marks the book stale until a fresh snapshot resyncs it. Pricing only ever sees fresh books.
Subscriptions follow links, unlinks and dealer symbol changes (`refresh`), without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

import asyncpg

from dealer.metrics import Metrics
from dealer.uow import connection
from pricing.book import LpBook
from pricing.sweep import PreparedLpBook, SweepBook, consolidate_for_sweep, prepare_lp_book
from venues.base import BookSnapshot, MarketDataVenue, VenueError

log = logging.getLogger(__name__)

BookKey = tuple[str, str]  # venue, symbol
RESYNC_DEPTH = 1000
RETRY_MIN_S = 0.1
RETRY_MAX_S = 5.0


class Outcome(enum.Enum):
    ACCEPTED = "accepted"
    CROSSED = "crossed"
    MALFORMED = "malformed"
    GAP = "gap"
    STALE_SEQUENCE = "old_sequence"


@dataclass(frozen=True, slots=True)
class LiquidityProvider:
    """A linked LP account as market data needs it."""

    trading_account_id: uuid.UUID
    dealer_account_id: uuid.UUID
    venue: str
    taker_fee: Decimal
    active: bool


@dataclass(slots=True)
class BookState:
    venue: str
    symbol: str
    book: BookSnapshot | None = None
    received_at_ms: int | None = None
    last_sequence: int | None = None
    stale_reason: str | None = "no book yet"
    updates: int = 0

    def age_ms(self, now_ms: int) -> int | None:
        return None if self.received_at_ms is None else max(0, now_ms - self.received_at_ms)

    def is_fresh(self, now_ms: int, max_age_ms: int) -> bool:
        age = self.age_ms(now_ms)
        return (self.book is not None and self.stale_reason is None and age is not None
                and age <= max_age_ms)


@dataclass
class Subscriptions:
    """What should be streamed, read from the links and the dealers' symbols."""

    lps: dict[BookKey, list[LiquidityProvider]] = field(default_factory=dict)
    dealer_symbols: dict[uuid.UUID, list[str]] = field(default_factory=dict)


async def wanted_subscriptions(conn: asyncpg.Connection,
                               default_fee: Callable[[str], Decimal]) -> Subscriptions:
    rows = await conn.fetch(
        """SELECT l.dealer_account_id, l.trading_account_id, ta.venue, ta.status, ta.taker_fee,
                  d.config -> 'symbols' AS symbols
           FROM dealer_link l
           JOIN trading_account ta ON ta.trading_account_id = l.trading_account_id
           JOIN dealer d ON d.dealer_account_id = l.dealer_account_id
           ORDER BY l.linked_at, l.trading_account_id"""
    )
    subs = Subscriptions()
    for row in rows:
        fee = row["taker_fee"] if row["taker_fee"] is not None else default_fee(row["venue"])
        lp = LiquidityProvider(row["trading_account_id"], row["dealer_account_id"], row["venue"],
                               fee, row["status"] == "ACTIVE")
        symbols = list(row["symbols"] or [])
        subs.dealer_symbols[row["dealer_account_id"]] = symbols
        for symbol in symbols:
            subs.lps.setdefault((row["venue"], symbol), []).append(lp)
    return subs


@dataclass(frozen=True, slots=True)
class _SweepEntry:
    """A merged book and what it was merged from: the LP books as given, and prepared."""

    inputs: tuple[tuple[LiquidityProvider, BookSnapshot], ...]
    prepared: tuple[PreparedLpBook, ...]
    sweep_book: SweepBook


@dataclass(slots=True)
class PricingBooks:
    """The fresh books of a dealer's active LPs for one symbol, as `fresh_books` answers them,
    shared by every quote until a book changes or one of them gets too old."""

    books: list[tuple[LiquidityProvider, BookSnapshot]]
    venues: frozenset[str]
    lp_ids: frozenset[uuid.UUID]  # the trading accounts of `books`
    generation: int  # of the book states these were read from
    from_ms: int  # valid from this time to `until_ms` (freshness only ends as time goes on)
    until_ms: int
    sweep_books: dict[Decimal, SweepBook] = field(default_factory=dict)

    def sweep_book(self, market_data: MarketDataService, lot_size: Decimal) -> SweepBook:
        """The consolidated book of these books (`MarketDataService.sweep_book`), kept here."""
        sweep_book = self.sweep_books.get(lot_size)
        if sweep_book is None:
            sweep_book = self.sweep_books[lot_size] = market_data.sweep_book(self.books,
                                                                             lot_size)
        return sweep_book


_NEVER_MS = 2**63 - 1


class MarketDataService:
    def __init__(self, market_data: Callable[[str], MarketDataVenue],
                 default_fee: Callable[[str], Decimal], metrics: Metrics,
                 clock_ms: Callable[[], int], max_age_ms: int) -> None:
        self._market_data = market_data
        self._default_fee = default_fee
        self._metrics = metrics
        self._clock_ms = clock_ms
        self.max_age_ms = max_age_ms
        self._states: dict[BookKey, BookState] = {}
        self._tasks: dict[BookKey, asyncio.Task[None]] = {}
        self._subs = Subscriptions()
        self._refresh_lock = asyncio.Lock()
        self._prepared: dict[tuple[uuid.UUID, Decimal, Decimal],
                             tuple[BookSnapshot, PreparedLpBook]] = {}
        self._sweep_books: dict[tuple[frozenset[uuid.UUID], Decimal], _SweepEntry] = {}
        # The LPs of each (dealer, symbol) with their book keys, in subscription order: built
        # once per set of subscriptions instead of scanning all of them for every quote.
        self._lps_by_dealer: tuple[Subscriptions, dict[tuple[uuid.UUID, str],
                                                       list[tuple[LiquidityProvider, BookKey]]]]
        self._lps_by_dealer = (self._subs, {})
        # Counts every change of a book state: pricing books read at one count stay right
        # until it moves (or time makes one of them too old).
        self._generation = 0
        # By the dealer id's int (hashed in C: a UUID's hash is a Python call) and symbol.
        self._pricing: dict[tuple[int, str], PricingBooks] = {}

    # ------------------------------------------------------------ ingest (the hot path)

    def ingest(self, book: BookSnapshot, received_at_ms: int) -> Outcome:
        """Validate one update and keep it if good. Never raises."""
        key = (book.venue, book.symbol)
        state = self._states.get(key)
        if state is None:
            state = self._states[key] = BookState(book.venue, book.symbol)
        self._generation += 1
        outcome = self._check(state, book)
        labels = (book.venue, book.symbol)
        if outcome is Outcome.ACCEPTED:
            state.book = book
            state.received_at_ms = received_at_ms
            state.last_sequence = book.sequence
            state.stale_reason = None
            state.updates += 1
            self._metrics.book_updates.labels(*labels).inc()
            return outcome
        self._metrics.book_rejected.labels(*labels, outcome.value).inc()
        if outcome is Outcome.GAP:
            state.stale_reason = "sequence gap: waiting for a resync"
            state.last_sequence = None
        elif outcome is Outcome.CROSSED:
            state.stale_reason = "crossed book dropped"
            state.last_sequence = book.sequence
        elif outcome is Outcome.MALFORMED:
            state.stale_reason = "malformed book dropped"
            state.last_sequence = book.sequence
        return outcome

    @staticmethod
    def _check(state: BookState, book: BookSnapshot) -> Outcome:
        last = state.last_sequence
        if last is not None:
            if book.sequence <= last:
                return Outcome.STALE_SEQUENCE
            if book.sequence != last + 1:
                return Outcome.GAP
        elif state.stale_reason and state.stale_reason.startswith("sequence gap"):
            # After a gap only a resync snapshot (accepted through `resync`) restarts the book.
            return Outcome.GAP
        if book.is_crossed():
            return Outcome.CROSSED
        if not book.is_well_formed():
            return Outcome.MALFORMED
        return Outcome.ACCEPTED

    def resync(self, book: BookSnapshot, received_at_ms: int) -> Outcome:
        """Take a REST snapshot as the new baseline; the stream's next update follows it."""
        key = (book.venue, book.symbol)
        state = self._states.setdefault(key, BookState(book.venue, book.symbol))
        self._generation += 1
        if book.is_crossed() or not book.is_well_formed():
            self._metrics.book_rejected.labels(book.venue, book.symbol, "resync_rejected").inc()
            return Outcome.CROSSED if book.is_crossed() else Outcome.MALFORMED
        state.book = book
        state.received_at_ms = received_at_ms
        state.last_sequence = None
        state.stale_reason = None
        state.updates += 1
        self._metrics.book_resyncs.labels(book.venue, book.symbol).inc()
        return Outcome.ACCEPTED

    # ------------------------------------------------------------ reads

    def state(self, venue: str, symbol: str) -> BookState | None:
        return self._states.get((venue, symbol))

    def fresh_book(self, venue: str, symbol: str) -> BookSnapshot | None:
        state = self._states.get((venue, symbol))
        if state is None or not state.is_fresh(self._clock_ms(), self.max_age_ms):
            return None
        return state.book

    def _dealer_lps(self, dealer_account_id: uuid.UUID, symbol: str
                    ) -> list[tuple[LiquidityProvider, BookKey]]:
        subs, index = self._lps_by_dealer
        if subs is not self._subs:  # subscriptions were replaced (`_apply`): index them again
            index = {}
            for key, lps in self._subs.lps.items():
                for lp in lps:
                    index.setdefault((lp.dealer_account_id, key[1]), []).append((lp, key))
            self._lps_by_dealer = (self._subs, index)
        return index.get((dealer_account_id, symbol), [])

    def lp_books(self, dealer_account_id: uuid.UUID, symbol: str
                 ) -> list[tuple[LiquidityProvider, BookState | None]]:
        """Every LP of the dealer for `symbol`, with its book state (fresh or not)."""
        states = self._states
        return [(lp, states.get(key)) for lp, key in self._dealer_lps(dealer_account_id, symbol)]

    def fresh_books(self, dealer_account_id: uuid.UUID, symbol: str, now_ms: int
                    ) -> list[tuple[LiquidityProvider, BookSnapshot]]:
        """The books pricing may use now: of the dealer's active LPs, fresh at `now_ms`."""
        return self._fresh(dealer_account_id, symbol, now_ms)[0]

    def _fresh(self, dealer_account_id: uuid.UUID, symbol: str, now_ms: int
               ) -> tuple[list[tuple[LiquidityProvider, BookSnapshot]], int]:
        """`fresh_books`, and until when they all stay fresh (a stale book only becomes fresh
        again through a new state)."""
        states, max_age_ms = self._states, self.max_age_ms
        fresh: list[tuple[LiquidityProvider, BookSnapshot]] = []
        at_key: dict[BookKey, int] = {}  # where each book is in `fresh`
        until_ms = _NEVER_MS
        for lp, key in self._dealer_lps(dealer_account_id, symbol):
            if not lp.active:
                continue
            state = states.get(key)
            if state is not None and state.book is not None and state.is_fresh(now_ms,
                                                                                max_age_ms):
                at = at_key.get(key)
                if at is not None:
                    # Two accounts on one venue (spot and margin) take from one book: its
                    # liquidity counts once, for the account that pays less to take it.
                    held = fresh[at][0]
                    if (lp.taker_fee, lp.trading_account_id) < (held.taker_fee,
                                                                 held.trading_account_id):
                        fresh[at] = (lp, state.book)
                    continue
                at_key[key] = len(fresh)
                fresh.append((lp, state.book))
                assert state.received_at_ms is not None  # a fresh book has an age
                until_ms = min(until_ms, state.received_at_ms + max_age_ms)
        return fresh, until_ms

    def pricing_books(self, dealer_account_id: uuid.UUID, symbol: str, now_ms: int
                      ) -> PricingBooks:
        """`fresh_books` at `now_ms`, with what quotes derive from them; the same object for
        every quote until a book state changes or one of the books gets too old."""
        key = (dealer_account_id.int, symbol)
        cached = self._pricing.get(key)
        if (cached is not None and cached.generation == self._generation
                and cached.from_ms <= now_ms <= cached.until_ms):
            return cached
        fresh, until_ms = self._fresh(dealer_account_id, symbol, now_ms)
        books = PricingBooks(fresh, frozenset(lp.venue for lp, _ in fresh),
                             frozenset(lp.trading_account_id for lp, _ in fresh),
                             self._generation, now_ms, until_ms)
        self._pricing[key] = books
        return books

    def prepared_book(self, lp: LiquidityProvider, book: BookSnapshot, lot_size: Decimal
                      ) -> PreparedLpBook:
        """The LP's book ready for sweeping, prepared once per book update (quotes reuse it)."""
        key = (lp.trading_account_id, lot_size, lp.taker_fee)
        cached = self._prepared.get(key)
        if cached is not None and cached[0] is book:
            return cached[1]
        prepared = prepare_lp_book(LpBook(str(lp.trading_account_id), lp.venue, lp.taker_fee,
                                          book.bids, book.asks), lot_size)
        self._prepared[key] = (book, prepared)
        return prepared

    def sweep_book(self, books: Sequence[tuple[LiquidityProvider, BookSnapshot]],
                   lot_size: Decimal) -> SweepBook:
        """The consolidated book of these LP books, merged once per set of book updates: every
        quote priced between two updates of the LPs' books shares one merge."""
        key = (frozenset(lp.trading_account_id for lp, _ in books), lot_size)
        cached = self._sweep_books.get(key)
        # Between two book updates the quote path passes the very same LP and book objects:
        # then nothing needs preparing or comparing further.
        if cached is not None and len(cached.inputs) == len(books) and all(
                a[0] is b[0] and a[1] is b[1]
                for a, b in zip(cached.inputs, books, strict=True)):
            return cached.sweep_book
        prepared = tuple(self.prepared_book(lp, book, lot_size) for lp, book in books)
        if cached is not None and len(cached.prepared) == len(prepared) and all(
                a is b for a, b in zip(cached.prepared, prepared, strict=True)):
            sweep_book = cached.sweep_book
        else:
            sweep_book = consolidate_for_sweep(prepared, lot_size)
        self._sweep_books[key] = _SweepEntry(tuple(books), prepared, sweep_book)
        return sweep_book

    def dealer_symbols(self, dealer_account_id: uuid.UUID) -> list[str] | None:
        return self._subs.dealer_symbols.get(dealer_account_id)

    def subscribed(self) -> list[BookKey]:
        return sorted(self._tasks)

    def stale_books(self) -> list[dict[str, object]]:
        """Subscribed books that pricing cannot use now, with why."""
        now = self._clock_ms()
        out: list[dict[str, object]] = []
        for key in sorted(self._tasks):
            state = self._states.get(key)
            if state is not None and state.is_fresh(now, self.max_age_ms):
                continue
            reason = "no book yet" if state is None else (state.stale_reason or "too old")
            out.append({"venue": key[0], "symbol": key[1], "reason": reason,
                        "ageMs": None if state is None else state.age_ms(now)})
        return out

    def export_gauges(self) -> None:
        """Book age and staleness per LP and instrument, for the metrics scrape."""
        now = self._clock_ms()
        self._metrics.book_age.clear()
        self._metrics.book_stale.clear()
        for key, lps in self._subs.lps.items():
            state = self._states.get(key)
            age = None if state is None else state.age_ms(now)
            stale = state is None or not state.is_fresh(now, self.max_age_ms)
            self._metrics.book_stale.labels(*key).set(1 if stale else 0)
            for lp in lps:
                if age is not None:
                    self._metrics.book_age.labels(str(lp.trading_account_id), *key).set(
                        age / 1000)

    # ------------------------------------------------------------ subscriptions

    @property
    def quoted_symbols(self) -> frozenset[str]:
        """The symbols of the dealers with links, as last read by `refresh`."""
        return frozenset(symbol for symbols in self._subs.dealer_symbols.values()
                         for symbol in symbols)

    async def refresh(self, pool: asyncpg.Pool) -> None:
        """Start streams that links need and stop those nothing needs any more."""
        async with self._refresh_lock:
            async with connection(pool) as conn:
                subs = await wanted_subscriptions(conn, self._default_fee)
            self._apply(subs)

    def _apply(self, subs: Subscriptions) -> None:
        self._subs = subs
        self._generation += 1
        self._pricing.clear()
        wanted = {key for key, lps in subs.lps.items() if any(lp.active for lp in lps)}
        for key in set(self._tasks) - wanted:
            self._tasks.pop(key).cancel()
            self._states.pop(key, None)
            log.info("unsubscribed %s %s", *key)
        for key in sorted(wanted - set(self._tasks)):
            self._tasks[key] = asyncio.create_task(self._follow(*key), name=f"book {key}")
            log.info("subscribed %s %s", *key)

    async def _follow(self, venue: str, symbol: str) -> None:
        """Stream one book for as long as it is wanted; resync after gaps, retry after drops."""
        market = self._market_data(venue)
        delay = RETRY_MIN_S
        while True:
            try:
                await self._resync(venue, symbol)
                async for book in market.book_stream(symbol):
                    if self.ingest(book, self._clock_ms()) is Outcome.GAP:
                        await self._resync(venue, symbol)
                    delay = RETRY_MIN_S
                raise VenueError("book stream ended")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                state = self._states.setdefault((venue, symbol), BookState(venue, symbol))
                self._generation += 1
                state.stale_reason = f"feed lost: {type(exc).__name__}"
                state.last_sequence = None
                self._metrics.connector_errors.labels(venue, market.connector, "book_stream").inc()
                log.warning("book stream %s %s lost (%s); retrying in %.1fs", venue, symbol,
                            exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)

    async def _resync(self, venue: str, symbol: str) -> None:
        market = self._market_data(venue)
        async with self._metrics.connector_call(venue, market.connector, "order_book"):
            book = await market.order_book(symbol, RESYNC_DEPTH)
        self.resync(book, self._clock_ms())

    async def wait_ready(self, timeout_s: float) -> bool:
        """Wait (bounded) until every subscribed book has a first accepted snapshot."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while asyncio.get_running_loop().time() < deadline:
            if all(self._states.get(key) is not None and self._states[key].book is not None
                   for key in self._tasks):
                return True
            await asyncio.sleep(0.01)
        return False

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def feed(self, books: Iterable[BookSnapshot]) -> int:
        """Ingest many updates (benchmarks, replays); answers how many were accepted."""
        now = self._clock_ms()
        return sum(self.ingest(book, now) is Outcome.ACCEPTED for book in books)
