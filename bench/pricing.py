"""Pricing: µs per quote on 5 LPs x 100 levels a side, against baselines measured in the same run.

Books are random with a fixed seed. For a few sizes it prints the median and p99 of:
- `price_quote` on a SweepBook already merged (several quotes on unchanged books);
- `consolidate_for_sweep` of the prepared LP books + `price_quote`: the cost of a quote when the
  books changed since the last one (each LP book is prepared once per update, timed apart);
- the same, two-way (both sides merge);
- the baseline: a plain Decimal sweep that walks `pricing.book.consolidate`'s levels best first
  (the same fee-adjusted order) to the size, with the per-LP allocation, then spread and tick; once
  on a book consolidated beforehand, once consolidating first.
A quote for a quote-currency amount is timed both ways too. Target: ≤ 50 µs a one-sided quote; the
last lines say, per case, whether the worst median and the worst p99 meet it.

    .venv/bin/python bench/pricing.py [--quotes N] [--seed S]
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
from collections.abc import Callable
from decimal import ROUND_CEILING, Decimal
from functools import partial
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path and the file would shadow the
# `pricing` package it measures.
sys.path.remove(str(Path(__file__).resolve().parent))

from pricing.book import ConsolidatedBook, LpBook, consolidate
from pricing.quote import InstrumentRules, Quote, QuoteRequest, QuotingConfig, price_quote
from pricing.sweep import PreparedLpBook, consolidate_for_sweep, prepare_lp_book

LPS, LEVELS = 5, 100
FEES = ["0.0004", "0.0005", "0.00075", "0.001", "0.002"]
LOT, TICK = Decimal("0.00001"), Decimal("0.01")
SIZES = ["0.01", "1", "10", "50"]
TARGET_US = 50.0


def random_books(seed: int) -> list[LpBook]:
    rng = random.Random(seed)
    books = []
    for lp in range(LPS):
        mid = Decimal(6_500_000 + rng.randint(-300, 300)) / 100
        bid, ask = mid - Decimal(rng.randint(1, 20)) / 100, mid + Decimal(rng.randint(1, 20)) / 100
        bids, asks = [], []
        for _ in range(LEVELS):
            bids.append((bid, Decimal(rng.randint(100, 50_000)) / 100_000))
            asks.append((ask, Decimal(rng.randint(100, 50_000)) / 100_000))
            bid -= Decimal(rng.randint(1, 300)) / 100
            ask += Decimal(rng.randint(1, 300)) / 100
        books.append(LpBook(f"lp{lp}", "PAPER", Decimal(FEES[lp]), bids, asks))
    return books


def timed(call: Callable[[], object], runs: int) -> tuple[float, float]:
    """Median and p99 of `runs` calls, µs."""
    for _ in range(min(runs, 200)):
        call()
    gc.collect()
    samples = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        call()
        samples.append((time.perf_counter_ns() - start) / 1000)
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.99))]


def decimal_walk(book: ConsolidatedBook, quantity: Decimal, spread_bps: Decimal
                 ) -> tuple[Decimal, dict[str, Decimal]]:
    """Baseline: sweep consolidated asks level by level in Decimal, then spread and tick."""
    left, notional = quantity, Decimal(0)
    allocation: dict[str, Decimal] = {}
    for level in book.asks:
        for source in level.sources:
            take = min(left, source.quantity)
            notional += level.adjusted_price * take
            allocation[source.source] = allocation.get(source.source, Decimal(0)) + take
            left -= take
            if not left:
                price = (notional / quantity * (1 + spread_bps / 10000)).quantize(
                    TICK, ROUND_CEILING)
                return price, allocation
    raise LookupError("not enough depth")


def price_on_changed_books(request: QuoteRequest, prepared: list[PreparedLpBook]) -> Quote:
    """A quote when some LP book changed since the last one: merge, then price."""
    return price_quote(request, consolidate_for_sweep(prepared, LOT))


def walk_after_consolidating(books: list[LpBook], quantity: Decimal, spread_bps: Decimal
                             ) -> tuple[Decimal, dict[str, Decimal]]:
    return decimal_walk(consolidate(books, LPS * LEVELS), quantity, spread_bps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quotes", type=int, default=5000, help="timed calls per row")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    runs = args.quotes

    books = random_books(args.seed)
    prepared = [prepare_lp_book(book, LOT) for book in books]
    merged = consolidate_for_sweep(prepared, LOT)
    reference = consolidate(books, depth=LPS * LEVELS)
    rules = InstrumentRules(tick_size=TICK, lot_size=LOT, min_quantity=LOT)
    config = QuotingConfig(spread_bps=Decimal(10), spread_tiers=(
        (Decimal(10_000), Decimal(5)), (Decimal(250_000), Decimal(8))),
        max_quote_notional=Decimal(10_000_000))

    print(f"pricing bench: {LPS} LPs x {LEVELS} levels a side, lot {LOT}, tick {TICK}, "
          f"seed {args.seed}, {runs} timed calls per quote row; "
          f"ask depth {merged.asks.available_quantity} base")
    print("\nbuilding books                                           median µs     p99 µs")
    for name, build in (
            ("prepare_lp_book, one LP book update (both sides)",
             lambda: prepare_lp_book(books[0], LOT)),
            ("consolidate_for_sweep of prepared books, asks merged",
             lambda: consolidate_for_sweep(prepared, LOT).asks),
            ("all of it from LpBooks, both sides merged",
             lambda: (lambda b: (b.bids, b.asks))(consolidate_for_sweep(books, LOT))),
            ("baseline: pricing.book.consolidate (both sides)",
             lambda: consolidate(books, LPS * LEVELS))):
        median, p99 = timed(build, max(50, runs // 10))
        print(f"  {name:<55}{median:>9.1f}{p99:>11.1f}")

    print("\nµs per BUY quote, median / p99; ratio = baseline / ours, medians (> 1: ours faster)")
    print(f"  {'size':>6} {'levels':>6}  {'merged book':>15}  {'baseline walk':>15}  {'ratio':>6}"
          f"  {'books changed':>15}  {'consolidate+walk':>17}  {'ratio':>6}  "
          f"{'two-way, changed':>16}")
    worst: dict[str, list[tuple[float, float]]] = {"merged book": [], "books changed": []}
    for size in SIZES:
        quantity = Decimal(size)
        request = QuoteRequest("BUY", rules, config, quantity=quantity)
        two_way = QuoteRequest(None, rules, config, quantity=quantity)
        quote = price_quote(request, merged).for_side("BUY")
        walked_price, walked_allocation = decimal_walk(reference, quantity, quote.spread_bps)
        # the baseline does the same work: same price, same allocation
        assert walked_price == quote.price
        assert walked_allocation == {leg.source: leg.quantity for leg in quote.hedge_plan}
        levels = int(merged.asks.cum_lots.searchsorted(int(quantity / LOT))) + 1
        warm = timed(partial(price_quote, request, merged), runs)
        changed = timed(partial(price_on_changed_books, request, prepared), runs)
        both = timed(partial(price_on_changed_books, two_way, prepared), runs)
        walk = timed(partial(decimal_walk, reference, quantity, quote.spread_bps), runs)
        full = timed(partial(walk_after_consolidating, books, quantity, quote.spread_bps),
                     max(50, runs // 20))
        worst["merged book"].append(warm)
        worst["books changed"].append(changed)
        print(f"  {size:>6} {levels:>6}  {warm[0]:>6.1f} / {warm[1]:<6.1f}  "
              f"{walk[0]:>6.1f} / {walk[1]:<6.1f}  {walk[0] / warm[0]:>5.2f}x  "
              f"{changed[0]:>6.1f} / {changed[1]:<6.1f}  {full[0]:>7.1f} / {full[1]:<7.1f}  "
              f"{full[0] / changed[0]:>5.0f}x  {both[0]:>7.1f} / {both[1]:<6.1f}")

    amount = QuoteRequest("BUY", rules, config, quote_quantity=Decimal(650_000))
    spend_merged = timed(partial(price_quote, amount, merged), runs)
    spend = timed(partial(price_on_changed_books, amount, prepared), runs)
    worst["merged book"].append(spend_merged)
    worst["books changed"].append(spend)
    print(f"  quote amount 650000 -> {price_quote(amount, merged).quantity} base: "
          f"merged book {spend_merged[0]:.1f} / {spend_merged[1]:.1f}, "
          f"books changed {spend[0]:.1f} / {spend[1]:.1f}\n")

    for case, rows in worst.items():
        for label, value in (("median", max(row[0] for row in rows)),
                             ("p99", max(row[1] for row in rows))):
            verdict = "met" if value <= TARGET_US else "NOT met"
            print(f"target ≤ {TARGET_US:.0f} µs per one-sided quote, {case}, {label}: {verdict} "
                  f"(worst row {value:.1f} µs)")


if __name__ == "__main__":
    main()
