"""The cadenza book stream against a fake Cadenza's Centrifugo websocket: offsets as sequence,
one shared connection, disconnects reported once and recovered, gaps and crossed books shown."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from decimal import Decimal
from typing import Any

import pytest

from tests.fakes import eventually
from tests.fakes.cadenza import FakeCadenza, RunningFake, running, unused_port
from venues.base import BookSnapshot, UnknownInstrument, VenueUnavailable
from venues.cadenza import CadenzaConfig, CadenzaVenue

D = Decimal
BTC = "market:orderBook:BINANCE:BTC/USDT"
ETH = "market:orderBook:BINANCE:ETH/USDT"
BIDS = [(D("64990"), D("1")), (D("64980"), D("2"))]
ASKS = [(D("65010"), D("0.5"))]


@pytest.fixture
async def server() -> AsyncIterator[RunningFake]:
    async with running(FakeCadenza()) as started:
        yield started


def config(server: RunningFake, **overrides: Any) -> CadenzaConfig:
    values: dict[str, Any] = {"base_url": server.url, "ws_url": server.ws_url,
                              "token": server.fake.token, "timeout_ms": 2000,
                              "backoff_base_ms": 10, "reconnect_max_ms": 100, **overrides}
    return CadenzaConfig(**values)


@pytest.fixture
async def venue(server: RunningFake) -> AsyncIterator[CadenzaVenue]:
    async with CadenzaVenue("BINANCE", config(server)) as connector:
        yield connector


async def next_book(stream: AsyncIterator[BookSnapshot]) -> BookSnapshot:
    return await asyncio.wait_for(anext(stream), 5)


async def subscribed(server: RunningFake, channel: str, count: int = 1) -> None:
    await eventually(lambda: server.fake.subscribers(channel) == count,
                     message=f"{count} subscription(s) to {channel}")


async def btc_stream(server: RunningFake, venue: CadenzaVenue
                     ) -> tuple[AsyncGenerator[BookSnapshot, None], asyncio.Future[BookSnapshot]]:
    """A BTC/USDT book stream of `venue`, and its next book awaited in the background, once
    the fake holds the stream's subscription."""
    stream = venue.book_stream("BTC/USDT")
    next_one = asyncio.ensure_future(next_book(stream))
    await subscribed(server, BTC)
    return stream, next_one


async def test_books_arrive_with_the_publication_offset_as_sequence(
    server: RunningFake, venue: CadenzaVenue,
) -> None:
    stream, first = await btc_stream(server, venue)
    assert venue.feed_connected

    server.fake.set_book("BINANCE", "BTC/USDT", BIDS, ASKS, timestamp=1_767_225_600_123)
    server.fake.set_book("BINANCE", "BTC/USDT", BIDS[:1], ASKS)

    book = await first
    assert (book.venue, book.symbol, book.sequence, book.ts_event) == (
        "BINANCE", "BTC/USDT", 1, 1_767_225_600_123)
    assert book.bids == tuple(BIDS)
    assert book.asks == tuple(ASKS)
    second = await next_book(stream)
    assert second.sequence == 2
    assert second.bids == tuple(BIDS[:1])
    await stream.aclose()


async def test_streams_of_one_venue_share_one_connection_and_one_subscription(
    server: RunningFake, venue: CadenzaVenue,
) -> None:
    btc_a, btc_b, eth = (venue.book_stream("BTC/USDT"), venue.book_stream("BTC/USDT"),
                         venue.book_stream("ETH/USDT"))
    pending = [asyncio.ensure_future(next_book(s)) for s in (btc_a, btc_b, eth)]
    await subscribed(server, BTC)
    await subscribed(server, ETH)

    server.fake.set_book("BINANCE", "BTC/USDT", BIDS, ASKS)
    server.fake.set_book("BINANCE", "ETH/USDT", [(D("3200"), D("5"))], [(D("3201"), D("4"))])

    got_a, got_b, got_eth = await asyncio.gather(*pending)
    assert got_a == got_b
    assert got_a.symbol == "BTC/USDT"
    assert (got_eth.symbol, got_eth.sequence) == ("ETH/USDT", 1)
    assert server.fake.ws_connections == 1

    await eth.aclose()
    await subscribed(server, ETH, 0)  # the last reader of a channel unsubscribes it
    assert server.fake.subscribers(BTC) == 1
    await btc_a.aclose()
    await btc_b.aclose()


async def test_a_lost_connection_raises_once_and_a_new_stream_resumes(
    server: RunningFake, venue: CadenzaVenue,
) -> None:
    stream, first = await btc_stream(server, venue)
    server.fake.set_book("BINANCE", "BTC/USDT", BIDS, ASKS)
    assert (await first).sequence == 1

    await server.fake.kill_websockets()

    with pytest.raises(VenueUnavailable, match="book feed lost"):
        await next_book(stream)
    with pytest.raises(StopAsyncIteration):  # reported once: that stream is finished
        await next_book(stream)
    assert not venue.feed_connected

    resumed, after = await btc_stream(server, venue)
    assert venue.feed_connected
    server.fake.set_book("BINANCE", "BTC/USDT", BIDS[:1], ASKS)
    book = await after
    assert book.sequence == 2
    assert book.bids == tuple(BIDS[:1])
    assert server.fake.ws_connections == 2
    await resumed.aclose()


async def test_books_missed_while_disconnected_show_as_a_gap(
    server: RunningFake, venue: CadenzaVenue,
) -> None:
    stream, first = await btc_stream(server, venue)
    server.fake.set_book("BINANCE", "BTC/USDT", BIDS, ASKS)
    assert (await first).sequence == 1
    await server.fake.kill_websockets()
    with pytest.raises(VenueUnavailable):
        await next_book(stream)

    server.fake.set_book("BINANCE", "BTC/USDT", BIDS, ASKS)  # offset 2, nobody listening
    resumed, after = await btc_stream(server, venue)
    server.fake.set_book("BINANCE", "BTC/USDT", BIDS, ASKS)

    assert (await after).sequence == 3  # 2 never arrived: the consumer sees the jump
    await resumed.aclose()


async def test_a_skipped_offset_is_a_visible_sequence_gap(
    server: RunningFake, venue: CadenzaVenue,
) -> None:
    stream, first = await btc_stream(server, venue)

    server.fake.set_book("BINANCE", "BTC/USDT", BIDS, ASKS)
    server.fake.skip_offsets("BINANCE", "BTC/USDT", 2)
    server.fake.set_book("BINANCE", "BTC/USDT", BIDS, ASKS)

    assert (await first).sequence == 1
    assert (await next_book(stream)).sequence == 4
    await stream.aclose()


async def test_crossed_and_unsorted_books_are_passed_through(
    server: RunningFake, venue: CadenzaVenue,
) -> None:
    stream, first = await btc_stream(server, venue)

    server.fake.set_book("BINANCE", "BTC/USDT", [(D("65100"), D("1")), (D("65200"), D("1"))],
                         [(D("65000"), D("1"))])

    book = await first
    assert book.is_crossed()
    assert not book.is_well_formed()
    assert book.bids == ((D("65100"), D("1")), (D("65200"), D("1")))
    await stream.aclose()


async def test_server_pings_are_answered() -> None:
    async with running(FakeCadenza(ping_interval_s=0.02)) as server, CadenzaVenue(
            "BINANCE", config(server)) as connector:
        stream, waiting = await btc_stream(server, connector)
        await eventually(lambda: server.fake.pongs >= 3, message="three pongs")
        server.fake.set_book("BINANCE", "BTC/USDT", BIDS, ASKS)
        assert (await waiting).sequence == 1
        await stream.aclose()


async def test_a_silent_connection_counts_as_lost() -> None:
    fake = FakeCadenza(ping_interval_s=0.05, send_pings=False)
    async with running(fake) as server, CadenzaVenue(
            "BINANCE", config(server, ping_margin_ms=100)) as connector:
        stream = connector.book_stream("BTC/USDT")
        with pytest.raises(VenueUnavailable, match="no ping from the server"):
            await next_book(stream)
        assert not connector.feed_connected


async def test_an_unknown_instrument_stream_is_unknown_instrument(
    server: RunningFake, venue: CadenzaVenue,
) -> None:
    with pytest.raises(UnknownInstrument, match="DOGE/XYZ"):
        await next_book(venue.book_stream("DOGE/XYZ"))
    connections = server.fake.ws_connections
    with pytest.raises(UnknownInstrument):
        await next_book(venue.book_stream("BTCUSDT"))
    assert server.fake.ws_connections == connections  # refused before any I/O


async def test_a_refused_token_fails_the_stream_without_showing_it(
    server: RunningFake,
) -> None:
    async with CadenzaVenue("BINANCE", config(server, token="not-the-token")) as connector:
        with pytest.raises(VenueUnavailable, match="connect refused") as caught:
            await next_book(connector.book_stream("BTC/USDT"))
        assert not connector.feed_connected
    assert "not-the-token" not in str(caught.value)


async def test_an_unreachable_websocket_fails_the_stream(server: RunningFake) -> None:
    unreachable = config(server, ws_url=f"ws://127.0.0.1:{unused_port()}/connection/websocket")
    async with CadenzaVenue("BINANCE", unreachable) as connector:
        with pytest.raises(VenueUnavailable, match="could not connect"):
            await next_book(connector.book_stream("BTC/USDT"))
        # Each new stream waits out the (capped) backoff, then tries again and reports.
        with pytest.raises(VenueUnavailable, match="could not connect"):
            await next_book(connector.book_stream("BTC/USDT"))


async def test_closing_the_connector_ends_its_streams(
    server: RunningFake,
) -> None:
    connector = CadenzaVenue("BINANCE", config(server))
    _, waiting = await btc_stream(server, connector)

    await connector.close()

    with pytest.raises(VenueUnavailable, match="closed"):
        await waiting
    await eventually(lambda: server.fake.subscribers(BTC) == 0, message="socket closed")
