"""Where paper books come from: a seeded random walk, a replayed recording, or a pinned book.

Every source is pure given time: `book_at(now_ms)` answers the same snapshot for the same time,
and the sequence grows by exactly one per change of the book.
"""

from __future__ import annotations

import hashlib
import math
import random
from bisect import bisect_right
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from statistics import NormalDist
from typing import Protocol

from venues.base import BookSnapshot, Instrument, Level, UnknownInstrument
from venues.paper.config import (
    CATALOGUE,
    PaperConfig,
    catalogue_instrument,
    make_instrument,
    replay_rules,
)
from venues.paper.schemas import REPLAY_SUFFIX, ReplaySnapshot, load_replay_file, replay_symbol

# Reference USD price of each base asset; any other asset is worth 1.
USD_REFERENCE: dict[str, float] = {"BTC": 65_000.0, "ETH": 3_200.0, "SOL": 150.0}
# Assets pinned to the dollar: their price does not walk.
STABLE_ASSETS = frozenset({"USD", "USDT", "USDC", "FDUSD", "DAI"})

DEPTH_LEVELS = 50
ANNUAL_VOLATILITY = 0.6
VENUE_DEVIATION = 0.00015  # a venue's own drift off the common mid, as a fraction of the mid
LEVEL_GAP = 0.00001  # mean distance between levels, as a fraction of the mid
LEVEL_NOTIONAL_USD = 15_000.0  # size of the best level, in USD
_MS_PER_YEAR = 365 * 24 * 3600 * 1000
_MS_PER_DAY = 24 * 3600 * 1000
_STANDARD_NORMAL = NormalDist()


class BookSource(Protocol):
    """The book of one symbol of one venue, as a function of time."""

    @property
    def symbol(self) -> str: ...

    def book_at(self, now_ms: int) -> BookSnapshot:
        """The book at `now_ms`; the same time always answers the same book."""
        ...

    def book_for_sequence(self, sequence: int) -> BookSnapshot | None:
        """The book that had `sequence`, or None if the source cannot answer it any more."""
        ...


def usd_reference(asset: str) -> float:
    return USD_REFERENCE.get(asset, 1.0)


def _digest(*parts: object) -> int:
    text = "|".join(str(part) for part in parts).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


def _normal(*parts: object) -> float:
    """A standard normal draw fixed by `parts`."""
    uniform = ((_digest(*parts) >> 11) + 0.5) / float(1 << 53)
    return _STANDARD_NORMAL.inv_cdf(uniform)


def bridge_walk(key: int, step: int, levels: int, step_sigma: float) -> float:
    """A Gaussian random walk at `step`, tied back to 0 every 2**levels steps.

    Built top-down (Lévy's construction of a Brownian bridge) so any step is answered in
    `levels` draws without replaying the walk from its origin; draws are fixed by `key`, so the
    same step always has the same value.
    """
    span = 1 << levels
    block, index = divmod(step, span)
    low, high, low_value, high_value = 0, span, 0.0, 0.0
    while index not in (low, high):
        middle = (low + high) // 2
        middle_value = ((low_value + high_value) / 2
                        + step_sigma * math.sqrt((high - low) / 4) * _normal(key, block, middle))
        if index < middle:
            high, high_value = middle, middle_value
        else:
            low, low_value = middle, middle_value
    return low_value if index == low else high_value


class SimulatedBook:
    """A seeded random walk around a reference mid with a realistic depth profile.

    Each asset's USD price walks (about 60 % a year, back to its reference about once a day;
    stablecoins stay at 1) the same way on every venue of the seed, so BTC/USDT, BTC/USDC and
    ETH/BTC stay consistent; each venue and symbol adds a small walk of its own, so venues agree
    to a few basis points but never exactly.

    The book has `depth` tick-aligned levels a side, the venue's spread of one to four ticks
    (sometimes one more), gaps of about 0.1 bp between levels and sizes that grow away from the
    mid with noise. `sequence` counts `interval_ms` steps since `origin_ms`.
    """

    def __init__(
        self, instrument: Instrument, *, seed: int, interval_ms: int, origin_ms: int = 0,
        depth: int = DEPTH_LEVELS,
    ) -> None:
        if interval_ms <= 0:
            raise ValueError("interval_ms must be positive")
        self.instrument = instrument
        self.interval_ms = interval_ms
        self.origin_ms = origin_ms
        self.depth = depth
        venue, symbol = instrument.venue, instrument.symbol
        self._asset_keys = [(_digest("asset", seed, asset), sign)
                            for asset, sign in ((instrument.base, 1), (instrument.quote, -1))
                            if asset not in STABLE_ASSETS]
        self._venue_key = _digest("venue", seed, venue, symbol)
        self._reference_mid = usd_reference(instrument.base) / usd_reference(instrument.quote)
        self._common_levels = max(1, math.ceil(math.log2(max(2, _MS_PER_DAY // interval_ms))))
        self._common_sigma = ANNUAL_VOLATILITY * math.sqrt(interval_ms / _MS_PER_YEAR)
        self._venue_levels = 10
        self._venue_sigma = 2 * VENUE_DEVIATION / math.sqrt(1 << self._venue_levels)
        self._spread_ticks = 1 + _digest("spread", venue, symbol) % 4
        self._last: BookSnapshot | None = None

    @property
    def symbol(self) -> str:
        return self.instrument.symbol

    def sequence_at(self, now_ms: int) -> int:
        return (now_ms - self.origin_ms) // self.interval_ms

    def mid_at_sequence(self, sequence: int) -> float:
        """The walk's mid price (a float, before tick alignment)."""
        log_move = bridge_walk(self._venue_key, sequence, self._venue_levels, self._venue_sigma)
        for key, sign in self._asset_keys:
            log_move += sign * bridge_walk(key, sequence, self._common_levels, self._common_sigma)
        return self._reference_mid * math.exp(log_move)

    def book_at(self, now_ms: int) -> BookSnapshot:
        return self.book_for_sequence(self.sequence_at(now_ms))

    def book_for_sequence(self, sequence: int) -> BookSnapshot:
        # A pure function of the sequence, asked for by the stream and by every order of one
        # interval: the latest is kept.
        last = self._last
        if last is not None and last.sequence == sequence:
            return last
        self._last = self._build(sequence)
        return self._last

    def _build(self, sequence: int) -> BookSnapshot:
        instrument = self.instrument
        tick, lot = instrument.tick_size, instrument.lot_size
        rng = random.Random(_digest(self._venue_key, "book", sequence))
        mid = self.mid_at_sequence(sequence)
        mid_ticks = mid / float(tick)
        spread = self._spread_ticks + (1 if rng.random() < 0.25 else 0)
        best_bid = max(1, math.floor(mid_ticks - spread / 2))
        best_ask = best_bid + spread
        mean_gap = max(1.0, mid_ticks * LEVEL_GAP)
        min_lots = max(1, math.ceil(instrument.min_quantity / lot))
        top_size = LEVEL_NOTIONAL_USD / usd_reference(instrument.base)

        def side(best: int, direction: int) -> tuple[Level, ...]:
            levels: list[Level] = []
            price_ticks = best
            for index in range(self.depth):
                if price_ticks <= 0:
                    break
                size = top_size * (1 + 0.12 * index) * rng.lognormvariate(0.0, 0.5)
                lots = max(min_lots, int(Decimal(size) / lot))
                levels.append((Decimal(price_ticks) * tick, Decimal(lots) * lot))
                price_ticks += direction * max(1, round(mean_gap * rng.uniform(0.3, 1.7)))
            return tuple(levels)

        bids = side(best_bid, -1)
        asks = side(best_ask, 1)
        return BookSnapshot(instrument.venue, instrument.symbol, bids, asks,
                            self.origin_ms + sequence * self.interval_ms, sequence)


class ReplayBook:
    """Recorded snapshots played back in a loop from `origin_ms` (when the source was made).

    At `now_ms` the replayed time is `first_ts + (now_ms - origin_ms) mod (last_ts - first_ts +
    1)` and the book is the last snapshot recorded at or before it, with exactly its levels. The
    sequence grows by one per snapshot and keeps growing across loops; `ts_event` is the time the
    snapshot plays at (origin + loops * period + its offset in the recording).
    """

    def __init__(
        self, venue: str, symbol: str, snapshots: Sequence[ReplaySnapshot], origin_ms: int,
    ) -> None:
        if not snapshots:
            raise ValueError("a replay needs at least one snapshot")
        self.venue = venue
        self._symbol = symbol
        self.snapshots = tuple(snapshots)
        self.origin_ms = origin_ms
        self._times = [snapshot.ts for snapshot in self.snapshots]
        self.first_ts = self._times[0]
        self.period_ms = self._times[-1] - self.first_ts + 1

    @classmethod
    def from_file(cls, venue: str, symbol: str, path: Path, origin_ms: int) -> ReplayBook:
        return cls(venue, symbol, load_replay_file(path, symbol), origin_ms)

    @property
    def symbol(self) -> str:
        return self._symbol

    def replayed_ts(self, now_ms: int) -> int:
        return self.first_ts + max(0, now_ms - self.origin_ms) % self.period_ms

    def sequence_at(self, now_ms: int) -> int:
        loop = max(0, now_ms - self.origin_ms) // self.period_ms
        index = bisect_right(self._times, self.replayed_ts(now_ms)) - 1
        return loop * len(self.snapshots) + index

    def book_at(self, now_ms: int) -> BookSnapshot:
        book = self.book_for_sequence(self.sequence_at(now_ms))
        assert book is not None  # sequence_at never answers a negative sequence
        return book

    def book_for_sequence(self, sequence: int) -> BookSnapshot | None:
        if sequence < 0:
            return None
        loop, index = divmod(sequence, len(self.snapshots))
        snapshot = self.snapshots[index]
        ts_event = self.origin_ms + loop * self.period_ms + (snapshot.ts - self.first_ts)
        return BookSnapshot(self.venue, self._symbol, snapshot.bids, snapshot.asks, ts_event,
                            sequence)


class StaticBook:
    """A pinned book (tests, demos): the same levels until `set` pins new ones.

    Each `set` is one update (sequence + 1); reads answer the pinned levels stamped with the
    time of the read.
    """

    def __init__(
        self, venue: str, symbol: str, bids: Sequence[Level], asks: Sequence[Level],
        sequence: int = 1,
    ) -> None:
        self.venue = venue
        self._symbol = symbol
        self.sequence = sequence - 1
        self.bids: tuple[Level, ...] = ()
        self.asks: tuple[Level, ...] = ()
        self.set(bids, asks)

    @property
    def symbol(self) -> str:
        return self._symbol

    def set(self, bids: Sequence[Level], asks: Sequence[Level]) -> None:
        book = BookSnapshot(self.venue, self._symbol, tuple(bids), tuple(asks), 0, 0)
        if not book.is_well_formed():
            raise ValueError("a pinned book needs positive levels, bids descending, asks "
                             "ascending")
        self.bids, self.asks = book.bids, book.asks
        self.sequence += 1

    def book_at(self, now_ms: int) -> BookSnapshot:
        return BookSnapshot(self.venue, self._symbol, self.bids, self.asks, now_ms,
                            self.sequence)

    def book_for_sequence(self, sequence: int) -> BookSnapshot | None:
        return None  # a pinned book keeps no history; a reader behind it resyncs


def _finest_step(values: Sequence[Decimal]) -> Decimal:
    """The largest power of ten every value is a multiple of (at most 1)."""
    exponent = min(0, *(int(value.normalize().as_tuple().exponent) for value in values))
    return Decimal(1).scaleb(exponent)


class VenueBooks:
    """The instruments of one paper venue and the book source of each.

    Catalogue symbols are simulated unless `books_dir` holds a replay file for them; symbols with
    a replay file outside the catalogue are listed too, with the tick and lot of their file.
    """

    def __init__(self, venue: str, config: PaperConfig, origin_ms: int) -> None:
        self.venue = venue
        self._config = config
        self._origin_ms = origin_ms
        self._sources: dict[str, BookSource] = {}
        instruments: dict[str, Instrument] = {}
        for symbol in CATALOGUE:
            instrument = catalogue_instrument(venue, symbol)
            if instrument is not None:
                instruments[symbol] = instrument
        for symbol, path in self._replay_files().items():
            replay = ReplayBook.from_file(venue, symbol, path, origin_ms)
            self._sources[symbol] = replay
            if symbol not in instruments:
                instruments[symbol] = self._replay_instrument(symbol, replay)
        self.instruments: dict[str, Instrument] = dict(sorted(instruments.items()))

    def _replay_files(self) -> dict[str, Path]:
        books_dir = self._config.books_dir
        if books_dir is None:
            return {}
        if not books_dir.is_dir():
            raise FileNotFoundError(f"paper books folder {books_dir} does not exist")
        files: dict[str, Path] = {}
        for path in sorted(books_dir.glob(f"*{REPLAY_SUFFIX}")):
            symbol = replay_symbol(self.venue, path.name)
            if symbol is not None:
                files[symbol] = path
        return files

    def _replay_instrument(self, symbol: str, replay: ReplayBook) -> Instrument:
        prices = [price for s in replay.snapshots for price, _ in (*s.bids, *s.asks)]
        sizes = [size for s in replay.snapshots for _, size in (*s.bids, *s.asks)]
        rules = replay_rules(self.venue, symbol, _finest_step(prices), _finest_step(sizes))
        return make_instrument(self.venue, symbol, rules)

    def instrument(self, symbol: str) -> Instrument:
        instrument = self.instruments.get(symbol)
        if instrument is None:
            raise UnknownInstrument(f"{self.venue} does not list {symbol}")
        return instrument

    def source(self, symbol: str) -> BookSource:
        source = self._sources.get(symbol)
        if source is None:
            source = SimulatedBook(self.instrument(symbol), seed=self._config.seed,
                                   interval_ms=self._config.book_interval_ms)
            self._sources[symbol] = source
        return source

    def book_at(self, symbol: str, now_ms: int) -> BookSnapshot:
        return self.source(symbol).book_at(now_ms)

    def pin(
        self, symbol: str, bids: Sequence[Level], asks: Sequence[Level], now_ms: int,
    ) -> BookSnapshot:
        """Replace the book of `symbol` by fixed levels from now on (its sequence moves on)."""
        current = self.source(symbol)
        if isinstance(current, StaticBook):
            current.set(bids, asks)
        else:
            current = StaticBook(self.venue, symbol, bids, asks,
                                 sequence=current.book_at(now_ms).sequence + 1)
            self._sources[symbol] = current
        return current.book_at(now_ms)
