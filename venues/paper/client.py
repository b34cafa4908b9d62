"""The paper connector's client: the same protocol as a live connector, served in-process.

`PaperVenue` is a `MarketDataVenue` and an `ExecutionVenue` over a `VenueBooks` (where books come
from) and a `MatchingEngine` (accounts, orders, fills). It owns the only I/O-like behaviour of the
simulation: it reads the clock it is given, sleeps (added latency and the book stream's pace) and
draws injected faults from its own seeded generator.

Resting GTC orders fill when their symbol's book is read: by `order_book`, `book_stream`,
`submit_order`, and by `order_status`, `cancel_order` and `balances` before they answer, so the
caller sees the market at the time of its call (books between calls are not replayed).

With a journal directory, every order event and the wallet it left is appended to
`<dir>/<venue>.jsonl` before the call answers, and a venue built on the same directory starts
from it: a daemon killed at any point finds the orders it sent, by client order id, after a
restart (and tests can read which client order ids reached the venue, and how often).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from decimal import Decimal
from pathlib import Path

from venues.base import (
    ApiCredential,
    Balance,
    BookSnapshot,
    CredentialRejected,
    Instrument,
    Level,
    OrderRequest,
    OrderState,
    VenueAccount,
    VenueIdentity,
    VenueTimeout,
    VenueUnavailable,
)
from venues.paper.books import BookSource, VenueBooks
from venues.paper.config import PaperConfig, identities_for
from venues.paper.engine import MatchingEngine
from venues.paper.faults import Fault, FaultInjector
from venues.paper.schemas import JournalEntry, journal_file_name, journal_line, load_journal

Clock = Callable[[], int]  # unix milliseconds
Sleep = Callable[[float], Awaitable[None]]  # seconds

INJECTED_REJECT = "injected reject"
# A stream reader this many updates behind gets only the latest book (a gap: it resyncs).
MAX_CATCH_UP = 100


def system_clock() -> int:
    """Unix milliseconds of the wall clock."""
    return time.time_ns() // 1_000_000


def account_key(account: VenueAccount) -> str:
    """The engine's key of an account: our trading account id."""
    return str(account.trading_account_id)


class PaperVenue:
    """A simulated venue. Any non-empty API key verifies and sees the venue's identities.

    `clock` answers unix milliseconds (the app's clock, or a test's); `sleep` waits seconds
    (asyncio.sleep unless a test drives time itself).
    """

    connector = "paper"

    def __init__(
        self, venue: str, config: PaperConfig | None = None, clock: Clock = system_clock, *,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.venue = venue
        self.config = config if config is not None else PaperConfig()
        self._clock = clock
        self._sleep = sleep
        self.books = VenueBooks(venue, self.config, clock())
        maker_fee, taker_fee = self.config.fees_for(venue)
        self.engine = MatchingEngine(venue, maker_fee, taker_fee, self.config.starting_balances,
                                     self.books.instruments)
        self._faults = FaultInjector(self.config.seed, self.config.reject_ratio,
                                     self.config.timeout_ratio, self.config.lost_ratio)
        self._status_outages = 0
        self.journal_path: Path | None = None
        self._journal_fd: int | None = None
        if self.config.journal_dir is not None:
            self.journal_path = self.config.journal_dir / journal_file_name(venue)
            if self.journal_path.exists():
                for entry in load_journal(self.journal_path):
                    if entry.event not in ("duplicate", "lost"):
                        self.engine.restore(entry.account, entry.order, entry.free,
                                            entry.locked)

    # ------------------------------------------------------------ market data

    async def instruments(self, symbols: Sequence[str] | None = None) -> list[Instrument]:
        """Every listed instrument by symbol, or those of `symbols` the venue lists, in order.

        Symbols the venue does not list are left out rather than refused.
        """
        listed = self.books.instruments
        if symbols is None:
            return list(listed.values())
        return [listed[symbol] for symbol in dict.fromkeys(symbols) if symbol in listed]

    async def order_book(self, symbol: str, depth: int) -> BookSnapshot:
        """The current book, at most `depth` levels a side; UnknownInstrument if not listed."""
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        return self._current_book(symbol, self._clock()).top(depth)

    async def book_stream(self, symbol: str) -> AsyncIterator[BookSnapshot]:
        """Every update of the book, sequence by sequence, polling every book interval.

        A reader up to MAX_CATCH_UP updates behind gets each missed update in turn; further
        behind, or behind a pinned book (which keeps no history), it gets the latest with a
        sequence gap. The stream never ends by itself.
        """
        self.books.instrument(symbol)
        last_sequence: int | None = None
        while True:
            now = self._clock()
            source = self.books.source(symbol)
            book = source.book_at(now)
            if book.sequence != last_sequence:
                if last_sequence is not None:
                    for missed in _missed_books(source, last_sequence, book.sequence):
                        yield missed
                self._meet(symbol, book, now)
                yield book
                last_sequence = book.sequence
            await self._sleep(self.config.book_interval_ms / 1000)

    # ------------------------------------------------------------ execution

    async def verify_credential(self, credential: ApiCredential) -> list[VenueIdentity]:
        if not credential.api_key.strip():
            raise CredentialRejected("API key is empty")
        return list(identities_for(self.venue))

    async def connect_account(
        self, credential: ApiCredential, external_trading_account_id: str
    ) -> str | None:
        """Paper accounts need no connecting and have no venue reference."""
        if not credential.api_key.strip():
            raise CredentialRejected("API key is empty")
        return None

    async def submit_order(self, account: VenueAccount, order: OrderRequest) -> OrderState:
        """Apply the order after the configured latency; injected faults may intervene.

        An injected reject answers REJECTED "injected reject"; an injected timeout applies the
        order and then raises VenueTimeout, so only `order_status` tells what happened.
        """
        await self._latency()
        now = self._clock()
        key = account_key(account)
        fault = self._faults.next_fault()
        if fault is Fault.LOST:
            self._journal("lost", key, None, now)
            raise VenueTimeout(f"{self.venue} did not answer order {order.client_order_id!r} "
                               "in time")
        duplicate = self.engine.knows(key, order.client_order_id)
        if fault is Fault.REJECT:
            state = self.engine.reject(key, order, INJECTED_REJECT, now)
        elif order.symbol not in self.books.instruments:
            state = self.engine.reject(key, order, f"unknown instrument {order.symbol}", now)
        else:
            state = self.engine.submit(key, order, self._current_book(order.symbol, now), now)
        self._journal("duplicate" if duplicate else "submit", key, state, now)
        if fault is Fault.TIMEOUT:
            raise VenueTimeout(f"{self.venue} did not answer order {order.client_order_id!r} "
                               "in time")
        return state

    async def cancel_order(self, account: VenueAccount, client_order_id: str) -> OrderState:
        """Cancel a resting order (after it met the current book); a closed one is unchanged."""
        await self._latency()
        now = self._clock()
        key = account_key(account)
        state = self.engine.status(key, client_order_id)
        if not state.status.is_closed:
            self._current_book(state.symbol, now)
        state = self.engine.cancel(key, client_order_id, now)
        self._journal("cancel", key, state, now)
        return state

    async def order_status(self, account: VenueAccount, client_order_id: str) -> OrderState:
        await self._latency()
        if self._status_outages > 0:
            self._status_outages -= 1
            raise VenueUnavailable(f"{self.venue} order status is unavailable")
        now = self._clock()
        key = account_key(account)
        state = self.engine.status(key, client_order_id)
        if state.status.is_closed:
            return state
        self._current_book(state.symbol, now)
        return self.engine.status(key, client_order_id)

    async def balances(self, account: VenueAccount) -> list[Balance]:
        now = self._clock()
        for symbol in self.engine.resting_symbols():
            self._current_book(symbol, now)
        return self.engine.balances(account_key(account))

    async def close(self) -> None:
        """Close the journal (the simulation holds no connection)."""
        if self._journal_fd is not None:
            os.close(self._journal_fd)
            self._journal_fd = None

    # ------------------------------------------------------------ test and demo hooks

    def pin_book(self, symbol: str, bids: Sequence[Level], asks: Sequence[Level]) -> BookSnapshot:
        """Serve fixed levels for `symbol` from now on (each pin is the next sequence)."""
        now = self._clock()
        book = self.books.pin(symbol, bids, asks, now)
        self._meet(symbol, book, now)
        return book

    def set_balance(self, account: VenueAccount, asset: str, amount: Decimal) -> None:
        """Set the free amount of `asset` in the account."""
        key = account_key(account)
        self.engine.set_balance(key, asset, amount)
        self._journal("balance", key, None, self._clock())

    def set_faults(self, *, reject_ratio: float | None = None,
                   timeout_ratio: float | None = None, lost_ratio: float | None = None) -> None:
        """Change the share of submits rejected, timed out after being applied, or lost."""
        for name, ratio in (("reject_ratio", reject_ratio), ("timeout_ratio", timeout_ratio),
                            ("lost_ratio", lost_ratio)):
            if ratio is not None:
                if not 0.0 <= ratio <= 1.0:
                    raise ValueError(f"{name} must be within [0, 1], got {ratio}")
                setattr(self._faults, name, ratio)

    def fail_status_calls(self, count: int) -> None:
        """The next `count` order status calls answer VenueUnavailable (an outage)."""
        self._status_outages = count

    # ------------------------------------------------------------ internals

    async def _latency(self) -> None:
        if self.config.latency_ms:
            await self._sleep(self.config.latency_ms / 1000)

    def _current_book(self, symbol: str, now: int) -> BookSnapshot:
        """The book of `symbol` at `now`, after resting orders met it."""
        book = self.books.book_at(symbol, now)
        self._meet(symbol, book, now)
        return book

    def _meet(self, symbol: str, book: BookSnapshot, now: int) -> None:
        """Resting orders meet `book` (journalled when they fill)."""
        changed = self.engine.on_book(symbol, book, now)
        if self.journal_path is not None:
            for state in changed:
                self._journal("fill", self._owner(state), state, now)

    def _owner(self, state: OrderState) -> str:
        for key in self.engine.accounts_of(state.client_order_id):
            if self.engine.status(key, state.client_order_id) == state:
                return key
        return ""

    def _journal(self, event: str, key: str, state: OrderState | None, now: int) -> None:
        """Append the event before the call answers (one write: a crash leaves whole lines,
        at worst a torn last one, which loading drops)."""
        if self.journal_path is None:
            return
        if self._journal_fd is None:
            self.journal_path.parent.mkdir(parents=True, exist_ok=True)
            self._journal_fd = os.open(self.journal_path,
                                       os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        free, locked = self.engine.wallet(key)
        os.write(self._journal_fd, journal_line(JournalEntry(event, key, now, state, free,
                                                             locked)))


def _missed_books(source: BookSource, last: int, current: int) -> list[BookSnapshot]:
    """The updates strictly between `last` and `current`, or none if they cannot all be had."""
    if not 0 < current - last - 1 <= MAX_CATCH_UP:
        return []
    missed: list[BookSnapshot] = []
    for sequence in range(last + 1, current):
        book = source.book_for_sequence(sequence)
        if book is None:
            return []
        missed.append(book)
    return missed
