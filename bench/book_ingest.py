"""Book ingest: updates/s through the market-data service's validation on one core.

Prints the service's rate and, measured in the same run on the same updates, two baselines: a
bare loop that only stores each update in a dict (the floor of any ingest path), and decoding
each update from its JSON wire form into a BookSnapshot (what every update costs to receive).
Updates are real order books from `--books` (a snapshot file in the marketdata format, e.g.
binance_spot_btcusdt.jsonl) or, by default, synthetic 50-level books.

    .venv/bin/python bench/book_ingest.py [--books FILE] [--updates N]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from decimal import Decimal
from pathlib import Path

import orjson

# Run as a script, this file's folder comes first on sys.path, and bench/pricing.py would shadow
# the `pricing` package the market-data service imports.
_HERE = str(Path(__file__).resolve().parent)
if _HERE in sys.path:
    sys.path.remove(_HERE)
sys.path.append(str(Path(_HERE).parent))  # the project root, for the daemon's packages

from dealer.marketdata import MarketDataService  # noqa: E402
from dealer.metrics import Metrics  # noqa: E402
from venues.base import BookSnapshot, MarketDataVenue  # noqa: E402
from venues.fees import default_fees  # noqa: E402


def synthetic(count: int, levels: int = 50) -> list[BookSnapshot]:
    rng = random.Random(1)
    mid = Decimal("65000.00")
    out = []
    for seq in range(1, count + 1):
        mid += Decimal(rng.randint(-5, 5)) / 100
        bids = tuple((mid - Decimal(i + 1) / 10, Decimal(rng.randint(1, 500)) / 1000)
                     for i in range(levels))
        asks = tuple((mid + Decimal(i + 1) / 10, Decimal(rng.randint(1, 500)) / 1000)
                     for i in range(levels))
        out.append(BookSnapshot("BINANCE", "BTC/USDT", bids, asks, seq, seq))
    return out


def from_file(path: Path, count: int) -> list[BookSnapshot]:
    rows = [orjson.loads(line) for line in path.read_text().splitlines() if line.strip()]
    out = []
    for seq in range(1, count + 1):
        row = rows[(seq - 1) % len(rows)]
        out.append(BookSnapshot(
            row["venue"], row["symbol"],
            tuple((Decimal(p), Decimal(q)) for p, q in row["bids"]),
            tuple((Decimal(p), Decimal(q)) for p, q in row["asks"]), row["ts"], seq))
    return out


def _no_venue(venue: str) -> MarketDataVenue:
    raise LookupError("the benchmark feeds books directly")


def default_fees_taker(venue: str) -> Decimal:
    return default_fees(venue)[1]


def new_service() -> MarketDataService:
    return MarketDataService(_no_venue, default_fees_taker, Metrics(), lambda: 0,
                             max_age_ms=3000)


def rate(fn: object, books: list[BookSnapshot]) -> float:
    assert callable(fn)
    started = time.perf_counter()
    for book in books:
        fn(book)
    return len(books) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--books", type=Path)
    parser.add_argument("--updates", type=int, default=20000)
    args = parser.parse_args()
    books = from_file(args.books, args.updates) if args.books else synthetic(args.updates)

    service = new_service()
    latest: dict[tuple[str, str], BookSnapshot] = {}

    def bare(book: BookSnapshot) -> None:
        latest[(book.venue, book.symbol)] = book

    def ingest(book: BookSnapshot) -> None:
        service.ingest(book, 0)

    # Warm up both paths, then measure each best of three.
    rate(bare, books[:1000])
    rate(ingest, books[:1000])
    service = new_service()
    baseline = max(rate(bare, books) for _ in range(3))
    wire = [orjson.dumps({"venue": b.venue, "symbol": b.symbol, "ts": b.ts_event,
                          "bids": [[str(p), str(q)] for p, q in b.bids],
                          "asks": [[str(p), str(q)] for p, q in b.asks]}) for b in books]

    def decode(raw: bytes) -> None:
        row = orjson.loads(raw)
        BookSnapshot(row["venue"], row["symbol"],
                     tuple((Decimal(p), Decimal(q)) for p, q in row["bids"]),
                     tuple((Decimal(p), Decimal(q)) for p, q in row["asks"]), row["ts"], 0)

    decoded = max(rate(decode, wire) for _ in range(3))  # type: ignore[arg-type]
    measured = []
    for _ in range(3):
        service = new_service()
        measured.append(rate(ingest, books))
    service_rate = max(measured)
    depth = len(books[0].bids)
    print(f"book ingest: {len(books)} updates, {depth} levels a side"
          f"{' from ' + args.books.name if args.books else ' (synthetic)'}")
    print(f"  market-data service: {service_rate:,.0f} updates/s")
    print(f"  bare dict store:     {baseline:,.0f} updates/s"
          f"   ratio service/bare:   {service_rate / baseline:.4f}")
    print(f"  wire decode:         {decoded:,.0f} updates/s"
          f"   ratio service/decode: {service_rate / decoded:.2f}")


if __name__ == "__main__":
    main()
