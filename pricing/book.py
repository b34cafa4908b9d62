"""Consolidated order book: LP books merged by fee-adjusted price, each level with its sources.

Pure: no I/O, no clock. Buying from an LP costs price * (1 + taker fee); selling to it earns
price * (1 - taker fee), so levels compare by what the dealer really pays or receives.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

Level = tuple[Decimal, Decimal]


@dataclass(frozen=True, slots=True)
class LpBook:
    """One LP's book as consolidation needs it; levels best first."""

    source: str  # the LP's trading account id
    venue: str
    taker_fee: Decimal
    bids: Sequence[Level]
    asks: Sequence[Level]


@dataclass(frozen=True, slots=True)
class SourceLevel:
    source: str
    venue: str
    price: Decimal
    quantity: Decimal


@dataclass(frozen=True, slots=True)
class ConsolidatedLevel:
    adjusted_price: Decimal
    quantity: Decimal
    sources: tuple[SourceLevel, ...]


@dataclass(frozen=True, slots=True)
class ConsolidatedBook:
    bids: tuple[ConsolidatedLevel, ...]
    asks: tuple[ConsolidatedLevel, ...]


def _side(books: Sequence[LpBook], asks: bool, depth: int) -> tuple[ConsolidatedLevel, ...]:
    merged: dict[Decimal, list[SourceLevel]] = {}
    for book in books:
        factor = (1 + book.taker_fee) if asks else (1 - book.taker_fee)
        for price, quantity in book.asks if asks else book.bids:
            merged.setdefault(price * factor, []).append(
                SourceLevel(book.source, book.venue, price, quantity))
    ordered = sorted(merged, reverse=not asks)[:depth]
    return tuple(
        ConsolidatedLevel(
            adjusted_price=price,
            quantity=sum((s.quantity for s in merged[price]), Decimal(0)),
            sources=tuple(sorted(merged[price], key=lambda s: s.source)),
        )
        for price in ordered
    )


def consolidate(books: Sequence[LpBook], depth: int) -> ConsolidatedBook:
    """Merge LP books into `depth` levels a side, best first, equal adjusted prices together."""
    if depth < 1:
        raise ValueError("depth must be at least 1")
    return ConsolidatedBook(bids=_side(books, False, depth), asks=_side(books, True, depth))
