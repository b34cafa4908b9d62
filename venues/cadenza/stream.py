"""Order books over Cadenza's Centrifugo websocket (seeds/001, channel `market:orderBook:{id}`).

The contract of `CadenzaVenue.book_stream(symbol)`:

* **One connection per venue.** A `BookFeed` opens one websocket when the first stream starts
  and shares it among every stream of that venue; each channel is subscribed once however many
  streams read it, and unsubscribed when its last stream ends. No stream, no reconnecting.
* **One snapshot per publication.** Each publication's `data` is a full order book; it becomes a
  `BookSnapshot` with `sequence` = the publication `offset` and `ts_event` = `data.timestamp`.
  Levels are passed as sent: crossed or malformed books are the market-data service's to reject.
  Should a channel carry no offsets (Centrifugo omits them without history), the stream numbers
  its snapshots itself.
* **Gaps are never hidden.** After a reconnect the next snapshot carries Cadenza's offset, so
  publications missed while disconnected show as a sequence jump. A publication that cannot be
  read is skipped (logged) and a consumer more than `buffer` snapshots behind loses the oldest:
  both also show as a jump.
* **A lost feed raises, once.** When the connection drops (closed, a server `disconnect` push,
  or silence longer than the server's ping interval + `ping_margin_ms`), or an attempt to
  connect fails while a stream waits, every open stream yields what it already received, then
  raises `VenueUnavailable`; that iterator is finished. The caller (the market-data service)
  marks the book stale and calls `book_stream` again. The feed reconnects by itself with
  exponential backoff (`backoff_base_ms` doubled per failed attempt, capped at
  `reconnect_max_ms`, jittered), resubscribes, and the new stream yields as soon as books flow.
  `BookFeed.connected` (`CadenzaVenue.feed_connected`) tells whether the link is up right now.
* **Refused subscriptions end their streams:** `UnknownInstrument` for an unknown channel
  (Centrifugo code 102), `VenueUnavailable` for anything else.
* Server pings (`{}`) are answered with `{}`. The token travels only in the `connect` command.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable
from decimal import Decimal
from typing import Any

import aiohttp
from pydantic import ValidationError

from venues.base import (
    BookSnapshot,
    UnknownInstrument,
    VenueError,
    VenueUnavailable,
    instrument_id,
    split_symbol,
)
from venues.cadenza.config import CadenzaConfig
from venues.cadenza.schemas import WireOrderBook, WsPublication, decode_json, parse_book

log = logging.getLogger(__name__)

CENTRIFUGO_UNKNOWN_CHANNEL = 102
CONNECT_ID = 1


def book_channel(venue: str, symbol: str) -> str:
    return f"market:orderBook:{instrument_id(venue, symbol)}"


class _FeedDropped(Exception):
    """The connection ended; the message says why (safe to show)."""


class _Subscriber:
    """One stream's buffer: snapshots in arrival order, then at most one error."""

    def __init__(self, channel: str, symbol: str, buffer: int) -> None:
        self.channel = channel
        self.symbol = symbol
        self._items: deque[BookSnapshot] = deque()
        self._buffer = buffer
        self._error: VenueError | None = None
        self._ready = asyncio.Event()
        self.local_sequence = 0

    def push(self, book: BookSnapshot) -> None:
        if self._error is not None:
            return
        if len(self._items) >= self._buffer:
            self._items.popleft()  # the consumer sees the jump in sequence
        self._items.append(book)
        self._ready.set()

    def fail(self, error: VenueError) -> None:
        if self._error is None:
            self._error = error
            self._ready.set()

    async def next(self) -> BookSnapshot:
        while True:
            if self._items:
                return self._items.popleft()
            if self._error is not None:
                raise self._error
            self._ready.clear()
            await self._ready.wait()


class _Connection:
    """An established, authenticated websocket: command ids and the channels subscribed on it."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.channels: set[str] = set()
        self.pending_subscribes: dict[int, str] = {}
        self._next_id = CONNECT_ID + 1
        self._lock = asyncio.Lock()

    async def send(self, frame: dict[str, Any]) -> None:
        async with self._lock:
            await self.ws.send_str(json.dumps(frame))

    def _id(self) -> int:
        command_id = self._next_id
        self._next_id += 1
        return command_id

    async def subscribe(self, channel: str) -> None:
        if channel in self.channels:
            return
        self.channels.add(channel)
        command_id = self._id()
        self.pending_subscribes[command_id] = channel
        await self._send_quietly({"id": command_id, "subscribe": {"channel": channel}})

    async def unsubscribe(self, channel: str) -> None:
        if channel not in self.channels:
            return
        self.channels.discard(channel)
        await self._send_quietly({"id": self._id(), "unsubscribe": {"channel": channel}})

    async def _send_quietly(self, frame: dict[str, Any]) -> None:
        # A failed send means the connection is going away; the reader reports that.
        try:
            await self.send(frame)
        except (aiohttp.ClientError, ConnectionError, RuntimeError) as exc:
            log.debug("cadenza websocket send failed: %s", type(exc).__name__)


class BookFeed:
    """The shared Centrifugo connection of one venue and the book streams reading it."""

    def __init__(
        self,
        venue: str,
        config: CadenzaConfig,
        session: Callable[[], aiohttp.ClientSession],
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        buffer: int = 1000,
    ) -> None:
        self.venue = venue
        self._config = config
        self._session = session
        self._rng = rng or random.Random()
        self._clock = clock
        self._sleep = sleep
        self._buffer = buffer
        self._subscribers: dict[str, set[_Subscriber]] = {}
        self._conn: _Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._failures = 0
        self._retry_at = 0.0
        self._closed = False

    @property
    def connected(self) -> bool:
        """True while the websocket is up and authenticated."""
        return self._conn is not None

    async def stream(self, symbol: str) -> AsyncGenerator[BookSnapshot, None]:
        """Snapshots of `symbol`'s book; raises VenueUnavailable once when the feed is lost."""
        try:
            split_symbol(symbol)
        except ValueError:
            raise UnknownInstrument(f"{symbol!r} is not a BASE/QUOTE symbol") from None
        subscriber = _Subscriber(book_channel(self.venue, symbol), symbol, self._buffer)
        try:
            await self._add(subscriber)
            while True:
                yield await subscriber.next()
        finally:
            await self._remove(subscriber)

    async def close(self) -> None:
        """End every stream (VenueUnavailable) and the connection."""
        self._closed = True
        self._fail_all(VenueUnavailable("the Cadenza connector is closed"))
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    # ------------------------------------------------------------ subscribers

    async def _add(self, subscriber: _Subscriber) -> None:
        if self._closed:
            raise VenueUnavailable("the Cadenza connector is closed")
        channel_subscribers = self._subscribers.setdefault(subscriber.channel, set())
        channel_subscribers.add(subscriber)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=f"cadenza-books-{self.venue}")
        if len(channel_subscribers) == 1 and self._conn is not None:
            await self._conn.subscribe(subscriber.channel)

    async def _remove(self, subscriber: _Subscriber) -> None:
        channel_subscribers = self._subscribers.get(subscriber.channel)
        if channel_subscribers is None or subscriber not in channel_subscribers:
            return
        channel_subscribers.discard(subscriber)
        if not channel_subscribers:
            del self._subscribers[subscriber.channel]
            if self._conn is not None:
                await self._conn.unsubscribe(subscriber.channel)

    def _fail_all(self, error: VenueError) -> None:
        subscribers, self._subscribers = self._subscribers, {}
        for channel_subscribers in subscribers.values():
            for subscriber in channel_subscribers:
                subscriber.fail(error)

    def _fail_channel(self, channel: str, error: VenueError) -> None:
        for subscriber in self._subscribers.pop(channel, set()):
            subscriber.fail(error)

    # ------------------------------------------------------------ connection

    async def _run(self) -> None:
        while self._subscribers and not self._closed:
            delay = self._retry_at - self._clock()
            if delay > 0:
                await self._sleep(delay)
                continue  # streams may have ended meanwhile
            await self._connect_and_serve()

    def _lost(self, reason: str) -> None:
        """Fail every stream once and schedule the next attempt (capped, jittered backoff)."""
        self._conn = None
        if self._closed:
            return
        self._failures += 1
        backoff_ms = min(self._config.reconnect_max_ms,
                         self._config.backoff_base_ms * 2.0 ** (self._failures - 1))
        self._retry_at = self._clock() + backoff_ms / 1000 * self._rng.uniform(0.5, 1.0)
        if self._subscribers:
            log.warning("cadenza %s book feed lost (%s); reconnecting", self.venue, reason)
        self._fail_all(VenueUnavailable(f"Cadenza {self.venue} book feed lost: {reason}"))

    async def _connect_and_serve(self) -> None:
        """Connect, authenticate, subscribe and read until the connection ends."""
        timeout_s = self._config.timeout_ms / 1000
        try:
            ws = await self._session().ws_connect(
                self._config.ws_url, autoping=True, heartbeat=None,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=timeout_s))
        except VenueUnavailable as exc:
            self._lost(str(exc))
            return
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self._lost(f"could not connect ({type(exc).__name__})")
            return
        reason = "connection closed"
        try:
            try:
                ping_s = await asyncio.wait_for(self._handshake(ws), timeout_s)
            except TimeoutError:
                reason = "no answer to connect"
                return
            conn = _Connection(ws)
            self._conn = conn
            self._failures = 0
            log.info("cadenza %s book feed connected", self.venue)
            for channel in list(self._subscribers):
                await conn.subscribe(channel)
            margin_s = self._config.ping_margin_ms / 1000
            receive_timeout = ping_s + margin_s if ping_s > 0 else None
            try:
                await self._serve(conn, receive_timeout)
            except TimeoutError:
                reason = f"no ping from the server for {receive_timeout:.1f} s"
        except _FeedDropped as exc:
            reason = str(exc)
        except (aiohttp.ClientError, ConnectionError) as exc:
            reason = f"connection error ({type(exc).__name__})"
        finally:
            # Streams learn of the loss before the (possibly slow) close handshake.
            self._lost(reason)
            await ws.close()

    async def _handshake(self, ws: aiohttp.ClientWebSocketResponse) -> float:
        """Send `connect` with the token; answer the server's ping interval in seconds."""
        await ws.send_str(json.dumps({"id": CONNECT_ID, "connect": {
            "token": self._config.token, "name": self._config.client_name}}))
        while True:
            msg = await ws.receive()
            if msg.type is not aiohttp.WSMsgType.TEXT:
                raise _FeedDropped("closed before answering connect")
            for frame in _frames(msg.data):
                if not frame:
                    await ws.send_str("{}")
                elif frame.get("id") == CONNECT_ID:
                    error = frame.get("error")
                    if isinstance(error, dict):
                        raise _FeedDropped(f"connect refused (code {error.get('code')})")
                    reply = frame.get("connect")
                    ping = reply.get("ping", 0) if isinstance(reply, dict) else 0
                    return float(ping) if isinstance(ping, int | float | Decimal) else 0.0

    async def _serve(self, conn: _Connection, receive_timeout: float | None) -> None:
        while True:
            msg = await conn.ws.receive(timeout=receive_timeout)
            if msg.type is aiohttp.WSMsgType.TEXT:
                for frame in _frames(msg.data):
                    await self._on_frame(conn, frame)
            elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING,
                              aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                return

    async def _on_frame(self, conn: _Connection, frame: dict[str, Any]) -> None:
        if not frame:
            await conn.send({})  # pong
            return
        command_id = frame.get("id")
        if isinstance(command_id, int):
            channel = conn.pending_subscribes.pop(command_id, None)
            error = frame.get("error")
            if channel is not None and isinstance(error, dict):
                conn.channels.discard(channel)
                self._fail_channel(channel, _subscribe_error(channel, error))
            return
        push = frame.get("push")
        if not isinstance(push, dict):
            return
        channel = push.get("channel")
        if "disconnect" in push:
            disconnect = push["disconnect"]
            code = disconnect.get("code") if isinstance(disconnect, dict) else None
            raise _FeedDropped(f"server disconnect (code {code})")
        if not isinstance(channel, str):
            return
        if "pub" in push:
            self._on_publication(channel, push["pub"])
        elif "unsubscribe" in push:
            conn.channels.discard(channel)
            self._fail_channel(channel, VenueUnavailable(
                f"Cadenza ended the subscription to {channel}"))

    def _on_publication(self, channel: str, raw: Any) -> None:
        subscribers = self._subscribers.get(channel)
        if not subscribers:
            return
        try:
            publication = WsPublication.model_validate(raw)
            wire = WireOrderBook.model_validate(publication.data)
        except ValidationError:
            offset = raw.get("offset") if isinstance(raw, dict) else None
            log.warning("cadenza %s: unreadable publication on %s (offset %s) skipped",
                        self.venue, channel, offset)
            return
        symbol = next(iter(subscribers)).symbol
        if publication.offset is not None:
            book = parse_book(wire, self.venue, symbol, publication.offset)
            for subscriber in subscribers:
                subscriber.push(book)
            return
        for subscriber in subscribers:
            subscriber.local_sequence += 1
            subscriber.push(parse_book(wire, self.venue, symbol, subscriber.local_sequence))


def _subscribe_error(channel: str, error: dict[str, Any]) -> VenueError:
    code = error.get("code")
    if code == CENTRIFUGO_UNKNOWN_CHANNEL:
        return UnknownInstrument(f"Cadenza has no order book channel {channel}")
    return VenueUnavailable(f"Cadenza refused the subscription to {channel} (code {code})")


def _frames(text: str) -> list[dict[str, Any]]:
    """Centrifugo's JSON protocol may batch several commands per message, one per line."""
    frames: list[dict[str, Any]] = []
    for line in text.split("\n"):
        if not line.strip():
            continue
        try:
            frame = decode_json(line.encode())
        except ValueError:
            log.warning("cadenza websocket: a frame that is not JSON was ignored")
            continue
        if isinstance(frame, dict):
            frames.append(frame)
    return frames
