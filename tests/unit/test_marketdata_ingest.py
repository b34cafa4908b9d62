"""The market-data service's gate: only well-formed, uncrossed, in-sequence books get through."""

from __future__ import annotations

from decimal import Decimal as D

from dealer.marketdata import MarketDataService, Outcome
from dealer.metrics import Metrics
from venues.base import BookSnapshot, MarketDataVenue
from venues.fees import default_fees


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000

    def __call__(self) -> int:
        return self.now


def _no_venue(venue: str) -> MarketDataVenue:
    raise LookupError(venue)


def _service(clock: Clock, metrics: Metrics | None = None) -> MarketDataService:
    return MarketDataService(_no_venue, lambda v: default_fees(v)[1], metrics or Metrics(),
                             clock, max_age_ms=2000)


def _book(seq: int, bid: str = "100", ask: str = "101") -> BookSnapshot:
    return BookSnapshot("BINANCE", "BTC/USDT", ((D(bid), D(1)), (D(bid) - 1, D(2))),
                        ((D(ask), D(1)), (D(ask) + 1, D(2))), seq, seq)


def _sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_in_sequence_books_are_accepted_and_fresh_until_too_old() -> None:
    clock = Clock()
    service = _service(clock)
    assert service.ingest(_book(1), clock.now) is Outcome.ACCEPTED
    assert service.ingest(_book(2), clock.now) is Outcome.ACCEPTED
    assert service.fresh_book("BINANCE", "BTC/USDT") == _book(2)
    clock.now += 2001
    assert service.fresh_book("BINANCE", "BTC/USDT") is None


def test_a_crossed_update_never_replaces_the_book_and_marks_it_stale() -> None:
    clock, metrics = Clock(), Metrics()
    service = _service(clock, metrics)
    service.ingest(_book(1), clock.now)
    assert service.ingest(_book(2, bid="102", ask="101"), clock.now) is Outcome.CROSSED
    state = service.state("BINANCE", "BTC/USDT")
    assert state is not None
    assert state.book == _book(1)
    assert service.fresh_book("BINANCE", "BTC/USDT") is None
    assert _sample(metrics, "dealer_book_updates_rejected_total", venue="BINANCE",
                   symbol="BTC/USDT", reason="crossed") == 1
    # The next good update follows the crossed one's sequence: no false gap.
    assert service.ingest(_book(3), clock.now) is Outcome.ACCEPTED
    assert service.fresh_book("BINANCE", "BTC/USDT") == _book(3)


def test_a_gap_makes_the_book_stale_until_a_resync() -> None:
    clock = Clock()
    service = _service(clock)
    service.ingest(_book(1), clock.now)
    assert service.ingest(_book(5), clock.now) is Outcome.GAP
    assert service.fresh_book("BINANCE", "BTC/USDT") is None
    # Further stream updates do not revive it on their own.
    assert service.ingest(_book(6), clock.now) is Outcome.GAP
    assert service.fresh_book("BINANCE", "BTC/USDT") is None
    assert service.resync(_book(40), clock.now) is Outcome.ACCEPTED
    assert service.fresh_book("BINANCE", "BTC/USDT") == _book(40)
    assert service.ingest(_book(7), clock.now) is Outcome.ACCEPTED


def test_old_and_malformed_updates_are_dropped() -> None:
    clock = Clock()
    service = _service(clock)
    service.ingest(_book(3), clock.now)
    assert service.ingest(_book(3), clock.now) is Outcome.STALE_SEQUENCE
    assert service.ingest(_book(2), clock.now) is Outcome.STALE_SEQUENCE
    unordered = BookSnapshot("BINANCE", "BTC/USDT", ((D(99), D(1)), (D(100), D(1))),
                             ((D(101), D(1)),), 4, 4)
    assert service.ingest(unordered, clock.now) is Outcome.MALFORMED
    assert service.fresh_book("BINANCE", "BTC/USDT") is None
    assert service.resync(_book(9, bid="102", ask="101"), clock.now) is Outcome.CROSSED


def test_feed_counts_what_got_through() -> None:
    clock = Clock()
    service = _service(clock)
    books = [_book(1), _book(2), _book(3, bid="105", ask="101"), _book(4), _book(9)]
    assert service.feed(books) == 3
