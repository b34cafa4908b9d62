from __future__ import annotations

from decimal import Decimal as D

import pytest

from pricing.book import LpBook, consolidate


def _book(source: str, fee: str, bids: list[tuple[str, str]], asks: list[tuple[str, str]]
          ) -> LpBook:
    return LpBook(source, source.upper(), D(fee), [(D(p), D(q)) for p, q in bids],
                  [(D(p), D(q)) for p, q in asks])


def test_levels_are_fee_adjusted_and_ordered_best_first() -> None:
    cheap_fee = _book("a", "0.001", [("100", "1"), ("99", "2")], [("101", "1"), ("102", "3")])
    dear_fee = _book("b", "0.002", [("100.05", "1")], [("100.95", "2")])
    merged = consolidate([cheap_fee, dear_fee], depth=10)
    # asks: 101*1.001 = 101.101 < 100.95*1.002 = 101.15190 < 102*1.001 = 102.102
    assert [lvl.adjusted_price for lvl in merged.asks] == [D("101.101"), D("101.15190"),
                                                           D("102.102")]
    assert [lvl.sources[0].source for lvl in merged.asks] == ["a", "b", "a"]
    # bids: 100.05*0.998 = 99.8499 ; 100*0.999 = 99.9 ; 99*0.999 = 98.901
    assert [lvl.adjusted_price for lvl in merged.bids] == [D("99.900"), D("99.84990"),
                                                           D("98.901")]
    assert merged.bids[0].sources[0].price == D("100")


def test_equal_adjusted_prices_merge_with_every_source() -> None:
    one = _book("a", "0", [], [("100", "1")])
    two = _book("b", "0", [], [("100", "2.5")])
    level = consolidate([one, two], depth=1).asks[0]
    assert level.quantity == D("3.5")
    assert [s.source for s in level.sources] == ["a", "b"]


def test_depth_cuts_each_side_and_empty_books_give_empty_sides() -> None:
    book = _book("a", "0.001", [(str(100 - i), "1") for i in range(5)],
                 [(str(101 + i), "1") for i in range(5)])
    merged = consolidate([book], depth=2)
    assert len(merged.bids) == len(merged.asks) == 2
    assert consolidate([], depth=5).asks == ()
    with pytest.raises(ValueError, match="depth"):
        consolidate([book], depth=0)
