"""The checks before pricing are passed once per set of facts and books: a request on the very
objects the last one passed with is priced from what that one was, and any other is checked."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest

from dealer.errors import ApiError, Errors
from dealer.marketdata import LiquidityProvider, PricingBooks
from dealer.services.quoting import Quoter, _Client, _Dealer, _Facts, _Rules
from dealer.services.rfq import QuoteCommand
from pricing.quote import QuotingConfig

DEALER, CLIENT, LP = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
CMD = QuoteCommand(DEALER, CLIENT, "BTC/USDT", "BUY", Decimal("0.1"), None)
NOW = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)
RULE_ROWS = ({"venue": "PAPER", "tick_size": "0.01", "lot_size": "0.001", "min_quantity": "0",
              "max_quantity": None, "min_notional": "0"},)


class FakeMarketData:
    """Answers the books the test sets, and a new sweep book for each merge asked for."""

    def __init__(self) -> None:
        self.books = self.new_books()
        self.merges = 0

    @staticmethod
    def new_books() -> PricingBooks:
        lp = LiquidityProvider(LP, DEALER, "PAPER", Decimal("0.001"), active=True)
        book: Any = object()  # never read: the merge is the fake's
        return PricingBooks([(lp, book)], frozenset({"PAPER"}), frozenset({LP}), 0, 0, 2**62)

    def pricing_books(self, dealer: uuid.UUID, symbol: str, now_ms: int) -> PricingBooks:
        return self.books

    def lp_books(self, dealer: uuid.UUID, symbol: str) -> list[tuple[LiquidityProvider, Any]]:
        return self.books.books

    def sweep_book(self, books: object, lot_size: Decimal) -> object:
        self.merges += 1
        return object()


def _dealer(status: str = "ACTIVE") -> _Dealer:
    record: Any = SimpleNamespace(status=status, pause_reason="test", linked_accounts=[LP])
    return _Dealer(record, frozenset(), frozenset({LP}), 1, QuotingConfig(Decimal(10)),
                   exposure_limits={}, ttl=dt.timedelta(seconds=5), bases={"BTC/USDT": "BTC"})


def _quoter() -> tuple[Quoter, FakeMarketData]:
    market_data = FakeMarketData()
    quoter = Quoter(pool=None, market_data=market_data, writer=None)  # type: ignore[arg-type]
    return quoter, market_data


def test_the_same_facts_and_books_are_not_checked_again() -> None:
    quoter, market_data = _quoter()
    facts = _Facts(_dealer(), _Client("CLIENT", "ACTIVE", 1), _Rules.of(RULE_ROWS, 1), False)
    first = quoter._check(facts, CMD, NOW)
    assert quoter._check(facts, CMD, NOW) is first
    assert market_data.merges == 1
    # new books (a book changed): checked and merged again, on the same facts
    market_data.books = market_data.new_books()
    second = quoter._check(facts, CMD, NOW)
    assert second.sweep_book is not first.sweep_book
    assert second.rules == first.rules
    assert market_data.merges == 2


def test_new_facts_are_checked_on_the_same_books() -> None:
    quoter, _ = _quoter()
    client, rules = _Client("CLIENT", "ACTIVE", 1), _Rules.of(RULE_ROWS, 1)
    quoter._check(_Facts(_dealer(), client, rules, False), CMD, NOW)
    with pytest.raises(ApiError) as paused:
        quoter._check(_Facts(_dealer("PAUSED"), client, rules, False), CMD, NOW)
    assert paused.value.error is Errors.DEALER_PAUSED
    dealer = _dealer()
    quoter._check(_Facts(dealer, client, rules, False), CMD, NOW)
    with pytest.raises(ApiError) as frozen:
        quoter._check(_Facts(dealer, _Client("CLIENT", "FROZEN", 2), rules, False), CMD, NOW)
    assert frozen.value.error is Errors.ACCOUNT_NOT_ACTIVE
    with pytest.raises(ApiError) as other_symbol:
        quoter._check(_Facts(dealer, client, rules, False), CMD._replace(symbol="ETH/USDT"), NOW)
    assert other_symbol.value.error is Errors.SYMBOL_NOT_QUOTED
    with pytest.raises(ApiError) as not_synced:
        quoter._check(_Facts(dealer, client, _Rules.of((), 2), False), CMD, NOW)
    assert not_synced.value.error is Errors.SYMBOL_NOT_QUOTED
