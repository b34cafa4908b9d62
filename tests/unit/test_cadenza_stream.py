"""The book stream's buffering and Centrifugo frame splitting, without a network."""

from __future__ import annotations

from decimal import Decimal

import pytest

from venues.base import BookSnapshot, VenueUnavailable
from venues.cadenza.stream import _frames, _Subscriber, book_channel


def book(sequence: int) -> BookSnapshot:
    return BookSnapshot("BINANCE", "BTC/USDT", ((Decimal("1"), Decimal("1")),),
                        ((Decimal("2"), Decimal("1")),), 1000 + sequence, sequence)


def test_channel_names_follow_the_seed() -> None:
    assert book_channel("OKX", "ETH/USDT") == "market:orderBook:OKX:ETH/USDT"


async def test_a_slow_reader_loses_the_oldest_books_and_sees_the_gap() -> None:
    subscriber = _Subscriber("c", "BTC/USDT", buffer=2)
    for sequence in range(1, 6):
        subscriber.push(book(sequence))
    assert [(await subscriber.next()).sequence for _ in range(2)] == [4, 5]


async def test_books_received_before_a_failure_are_yielded_first() -> None:
    subscriber = _Subscriber("c", "BTC/USDT", buffer=10)
    subscriber.push(book(1))
    subscriber.fail(VenueUnavailable("lost"))
    subscriber.fail(VenueUnavailable("lost again"))  # reported once
    subscriber.push(book(2))  # nothing arrives after the failure
    assert (await subscriber.next()).sequence == 1
    with pytest.raises(VenueUnavailable, match=r"^lost$"):
        await subscriber.next()


def test_batched_frames_are_split_and_garbage_ignored() -> None:
    text = '{}\n{"push":{"channel":"c","pub":{"data":{},"offset":3}}}\nnot json\n[1]\n\n'
    assert _frames(text) == [{}, {"push": {"channel": "c", "pub": {"data": {}, "offset": 3}}}]
