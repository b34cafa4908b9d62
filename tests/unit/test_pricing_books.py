"""Quotes share the pricing books of a dealer and symbol (the fresh LP books and their merged
sweep book) until a book state changes or a book gets too old: they must always be exactly the
books `fresh_books` answers at that moment."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal as D

import pytest

from dealer.marketdata import LiquidityProvider, MarketDataService, Subscriptions
from dealer.metrics import Metrics
from venues.base import BookSnapshot, Instrument

DEALER = uuid.uuid4()
SYMBOL = "BTC/USDT"
VENUES = ("BINANCE", "OKX")
MAX_AGE_MS = 2000


class QuietVenue:
    """A connector whose snapshot and stream never answer: the test feeds the books itself."""

    connector = "quiet"

    def __init__(self, venue: str) -> None:
        self.venue = venue

    async def instruments(self, symbols: object = None) -> list[Instrument]:
        return []

    async def order_book(self, symbol: str, depth: int) -> BookSnapshot:
        await asyncio.Event().wait()
        raise AssertionError("never answers")

    async def book_stream(self, symbol: str) -> AsyncIterator[BookSnapshot]:
        await asyncio.Event().wait()
        yield _book("BINANCE", 0)


def _book(venue: str, seq: int, ask: str = "101") -> BookSnapshot:
    return BookSnapshot(venue, SYMBOL, ((D(100), D(1)),), ((D(ask), D(1)),), seq, seq)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000

    def __call__(self) -> int:
        return self.now


@pytest.fixture
async def service() -> AsyncIterator[MarketDataService]:
    service = MarketDataService(QuietVenue, lambda v: D("0.001"), Metrics(), Clock(),
                                max_age_ms=MAX_AGE_MS)
    lps = {venue: LiquidityProvider(uuid.uuid4(), DEALER, venue, D("0.001"), True)
           for venue in VENUES}
    service._apply(Subscriptions({(venue, SYMBOL): [lp] for venue, lp in lps.items()},
                                 {DEALER: [SYMBOL]}))
    yield service
    await service.close()


def _moments(start: int) -> Iterator[int]:
    yield from (start, start, start + 1, start + MAX_AGE_MS - 1, start + MAX_AGE_MS)


async def test_pricing_books_are_the_fresh_books_and_shared_until_something_changes(
        service: MarketDataService) -> None:
    now = 1_000_000
    assert service.pricing_books(DEALER, SYMBOL, now).books == []  # no book yet
    service.ingest(_book("BINANCE", 1), now)
    first = service.pricing_books(DEALER, SYMBOL, now)
    assert first.books == service.fresh_books(DEALER, SYMBOL, now)
    assert first.venues == {"BINANCE"}
    sweep_book = first.sweep_book(service, D("0.001"))
    assert first.sweep_book(service, D("0.001")) is sweep_book
    for moment in _moments(now):  # fresh until exactly MAX_AGE_MS later: the same books
        assert service.pricing_books(DEALER, SYMBOL, moment) is first

    service.ingest(_book("OKX", 1), now + 500)  # another LP's book arrives
    both = service.pricing_books(DEALER, SYMBOL, now + 500)
    assert both is not first
    assert both.books == service.fresh_books(DEALER, SYMBOL, now + 500)
    assert both.venues == set(VENUES)

    # The BINANCE book gets too old first; then OKX's; a stale book is never priced.
    for moment in (now + MAX_AGE_MS + 1, now + MAX_AGE_MS + 500, now + MAX_AGE_MS + 501):
        books = service.pricing_books(DEALER, SYMBOL, moment)
        assert books.books == service.fresh_books(DEALER, SYMBOL, moment)
    assert service.pricing_books(DEALER, SYMBOL, now + MAX_AGE_MS + 501).books == []
    # A clock that goes back is answered as of that time, not from a later reading.
    assert service.pricing_books(DEALER, SYMBOL, now).books == service.fresh_books(
        DEALER, SYMBOL, now)


async def test_a_new_book_or_a_dropped_update_is_priced_at_once(
        service: MarketDataService) -> None:
    now = 1_000_000
    service.ingest(_book("BINANCE", 1), now)
    service.ingest(_book("OKX", 1), now)
    before = service.pricing_books(DEALER, SYMBOL, now)
    service.ingest(_book("BINANCE", 2, ask="102"), now + 1)
    moved = service.pricing_books(DEALER, SYMBOL, now + 1)
    assert [book.asks[0][0] for _, book in moved.books] == [D(102), D(101)]
    assert moved.sweep_book(service, D("0.001")) is not before.sweep_book(service, D("0.001"))
    service.ingest(_book("OKX", 3), now + 2)  # a gap: OKX is stale until resynced
    gapped = service.pricing_books(DEALER, SYMBOL, now + 2)
    assert [lp.venue for lp, _ in gapped.books] == ["BINANCE"]
    assert gapped.books == service.fresh_books(DEALER, SYMBOL, now + 2)
