"""Paper book sources: the seeded walk, replayed recordings, pinned books, the catalogue."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from venues.base import BookSnapshot, Instrument, UnknownInstrument
from venues.paper.books import (
    ReplayBook,
    SimulatedBook,
    StaticBook,
    VenueBooks,
    bridge_walk,
)
from venues.paper.config import PaperConfig, catalogue_instrument
from venues.paper.schemas import ReplayFileError, replay_file_name, replay_symbol

D = Decimal
T0 = 1_767_225_600_000
DAY_MS = 86_400_000


def instrument(venue: str = "BINANCE", symbol: str = "BTC/USDT") -> Instrument:
    found = catalogue_instrument(venue, symbol)
    assert found is not None
    return found


def simulated(venue: str = "BINANCE", symbol: str = "BTC/USDT", seed: int = 7) -> SimulatedBook:
    return SimulatedBook(instrument(venue, symbol), seed=seed, interval_ms=100)


def snapshot_line(ts: int, bids: list[list[str]], asks: list[list[str]],
                  symbol: str = "BTC/USDT") -> str:
    return json.dumps({"venue": "BINANCE", "symbol": symbol, "ts": ts, "bids": bids,
                       "asks": asks})


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def mid(book: BookSnapshot) -> Decimal:
    assert book.best_bid is not None
    assert book.best_ask is not None
    return (book.best_bid + book.best_ask) / 2


RECORDING = [
    snapshot_line(1000, [["61837.63000000", "3.78826000"], ["61837.62", "0.617"]],
                  [["61837.64", "1.6052"], ["61838", "0.1"]]),
    snapshot_line(1500, [["61840.10", "0.5"]], [["61840.20", "0.25"], ["61841.00", "2"]]),
    snapshot_line(3000, [["61830", "1"], ["61829.99", "2"]], [["61830.01", "0.00001"]]),
]


# ---------------------------------------------------------------- simulated walk


def test_the_same_time_always_gives_the_same_book() -> None:
    first = simulated().book_at(T0 + 12_345)
    again = simulated().book_at(T0 + 12_345)
    assert first == again
    assert simulated().book_at(T0 + 12_399) == first  # same 100 ms step
    later = simulated().book_at(T0 + 12_400)
    assert later.sequence == first.sequence + 1
    assert first.sequence == (T0 + 12_345) // 100
    assert first.ts_event == (T0 + 12_300)
    assert later != first


def test_a_sequence_can_be_asked_for_directly() -> None:
    source = simulated()
    book = source.book_at(T0)
    assert source.book_for_sequence(book.sequence) == book
    assert source.book_for_sequence(book.sequence + 1) == source.book_at(T0 + 100)


def test_venues_and_seeds_differ_but_agree_on_the_price() -> None:
    binance = simulated("BINANCE").book_at(T0)
    bybit = simulated("BYBIT").book_at(T0)
    okx = simulated("OKX").book_at(T0)
    other_seed = simulated("BINANCE", seed=8).book_at(T0)
    assert len({binance.bids, bybit.bids, okx.bids, other_seed.bids}) == 4
    mids = [mid(book) for book in (binance, bybit, okx)]
    assert max(mids) / min(mids) < D("1.002")  # a few basis points apart at most


def test_books_are_well_formed_uncrossed_and_on_the_grid() -> None:
    for venue in ("BINANCE", "OKX", "BYBIT", "DERIBIT"):
        for symbol in ("BTC/USDT", "ETH/USDT", "SOL/USDT", "BTC/USDC", "ETH/BTC"):
            rules = instrument(venue, symbol)
            source = SimulatedBook(rules, seed=7, interval_ms=100)
            for step in range(0, 5 * DAY_MS, DAY_MS // 7):
                book = source.book_at(T0 + step)
                assert book.venue == venue
                assert book.symbol == symbol
                assert book.is_well_formed(), (venue, symbol, step)
                assert not book.is_crossed(), (venue, symbol, step)
                assert len(book.bids) == len(book.asks) == 50
                for price, size in (*book.bids, *book.asks):
                    assert price % rules.tick_size == 0
                    assert size % rules.lot_size == 0
                    assert size >= rules.min_quantity


def test_prices_stay_near_the_reference_and_sizes_grow_away_from_the_mid() -> None:
    references = {"BTC/USDT": D(65_000), "ETH/USDT": D(3_200), "SOL/USDT": D(150),
                  "ETH/BTC": D(3_200) / D(65_000)}
    for symbol, reference in references.items():
        source = simulated(symbol=symbol)
        for step in range(0, 3 * DAY_MS, DAY_MS // 5):
            book = source.book_at(T0 + step)
            assert book.best_bid is not None
            assert abs(book.best_bid / reference - 1) < D("0.15"), (symbol, step)
            near = sum(size for _, size in book.asks[:10])
            far = sum(size for _, size in book.asks[-10:])
            assert far > near


def test_consecutive_books_move_a_little() -> None:
    source = simulated()
    previous = source.book_at(T0)
    for step in range(1, 200):
        book = source.book_at(T0 + step * 100)
        assert book.sequence == previous.sequence + 1
        assert book.best_bid is not None
        assert previous.best_bid is not None
        assert abs(book.best_bid / previous.best_bid - 1) < D("0.001")
        previous = book


def test_bridge_walk_is_fixed_by_its_key_and_tied_back_to_zero() -> None:
    assert bridge_walk(1, 0, 10, 0.01) == 0.0
    assert bridge_walk(1, 1024, 10, 0.01) == 0.0
    assert bridge_walk(1, 5 * 1024, 10, 0.01) == 0.0
    assert bridge_walk(1, 777, 10, 0.01) == bridge_walk(1, 777, 10, 0.01)
    assert bridge_walk(1, 777, 10, 0.01) != bridge_walk(2, 777, 10, 0.01)
    assert bridge_walk(1, 777, 10, 0.01) != bridge_walk(1, 778, 10, 0.01)


# ---------------------------------------------------------------- replay


def test_replay_serves_exactly_the_recorded_levels_at_the_replayed_time(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "binance_btc_usdt.jsonl", RECORDING)
    origin = T0
    replay = ReplayBook.from_file("BINANCE", "BTC/USDT", path, origin)
    assert replay.period_ms == 2001  # 3000 - 1000 + 1

    first = replay.book_at(origin)
    assert first.sequence == 0
    assert first.ts_event == origin
    assert first.bids == ((D("61837.63000000"), D("3.78826000")), (D("61837.62"), D("0.617")))
    assert [str(price) for price, _ in first.bids] == ["61837.63000000", "61837.62"]
    assert first.asks == ((D("61837.64"), D("1.6052")), (D(61838), D("0.1")))
    assert replay.book_at(origin + 499) == first  # replayed 1499: still the first snapshot

    second = replay.book_at(origin + 500)  # replayed 1500
    assert second.sequence == 1
    assert second.ts_event == origin + 500
    assert second.bids == ((D("61840.10"), D("0.5")),)
    assert replay.book_at(origin + 1999).sequence == 1  # replayed 2999

    third = replay.book_at(origin + 2000)  # replayed 3000
    assert third.sequence == 2
    assert third.asks == ((D("61830.01"), D("0.00001")),)


def test_replay_loops_with_a_growing_sequence(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "binance_btc_usdt.jsonl", RECORDING)
    origin = T0
    replay = ReplayBook.from_file("BINANCE", "BTC/USDT", path, origin)
    looped = replay.book_at(origin + 2001)  # replayed time back at 1000
    assert looped.sequence == 3
    assert looped.bids == replay.book_at(origin).bids
    assert looped.ts_event == origin + 2001
    assert replay.book_at(origin + 2001 + 500).sequence == 4
    assert replay.book_at(origin + 10 * 2001 + 2000).sequence == 32  # 10 loops of 3, then 2
    assert replay.book_for_sequence(4) == replay.book_at(origin + 2501)
    assert replay.book_for_sequence(-1) is None


def test_replay_before_its_origin_serves_the_first_snapshot(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "binance_btc_usdt.jsonl", RECORDING)
    replay = ReplayBook.from_file("BINANCE", "BTC/USDT", path, T0)
    assert replay.book_at(T0 - 5_000).sequence == 0


def test_replay_of_one_snapshot_always_serves_it(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "binance_btc_usdt.jsonl", RECORDING[:1])
    replay = ReplayBook.from_file("BINANCE", "BTC/USDT", path, T0)
    assert replay.period_ms == 1
    assert replay.book_at(T0 + 3).sequence == 3
    assert replay.book_at(T0 + 3).bids == replay.book_at(T0).bids


def test_snapshots_recorded_at_the_same_time_keep_the_last(tmp_path: Path) -> None:
    lines = [RECORDING[0], snapshot_line(1000, [["1", "1"]], [["2", "1"]]), RECORDING[1]]
    path = write_lines(tmp_path / "binance_btc_usdt.jsonl", lines)
    replay = ReplayBook.from_file("BINANCE", "BTC/USDT", path, T0)
    assert len(replay.snapshots) == 2
    assert replay.book_at(T0).bids == ((D(1), D(1)),)


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "must be a JSON object"),
        (json.dumps({"symbol": "BTC/USDT", "ts": 2000, "bids": []}), "missing asks"),
        (snapshot_line(2000, [["1", "1"]], [["2", "1"]], symbol="ETH/USDT"),
         "does not match the file's BTC/USDT"),
        (snapshot_line(500, [["1", "1"]], [["2", "1"]]), "is before the previous line's 1000"),
        (snapshot_line(2000, [["abc", "1"]], [["2", "1"]]), "bids[0] price is not a decimal"),
        (snapshot_line(2000, [["1", "-1"]], [["2", "1"]]), "bids[0] quantity must be positive"),
        (snapshot_line(2000, [["1", "1", "1"]], [["2", "1"]]), "bids[0] must be [price, quantity]"),
        (snapshot_line(2000, [["1", "1"], ["2", "1"]], [["3", "1"]]), "strictly descend"),
        (snapshot_line(2000, [["3", "1"]], [["2", "1"]]), "crossed book"),
        (json.dumps({"symbol": "BTC/USDT", "ts": "soon", "bids": [], "asks": []}),
         "ts must be unix milliseconds"),
        (json.dumps({"symbol": "BTC/USDT", "ts": 2000, "bids": [[None, "1"]], "asks": []}),
         "must be a decimal string"),
    ],
)
def test_a_malformed_replay_file_names_the_file_and_line(
    tmp_path: Path, bad_line: str, message: str,
) -> None:
    path = write_lines(tmp_path / "binance_btc_usdt.jsonl", [RECORDING[0], bad_line])
    with pytest.raises(ReplayFileError) as raised:
        ReplayBook.from_file("BINANCE", "BTC/USDT", path, T0)
    assert str(path) in str(raised.value)
    assert "line 2" in str(raised.value)
    assert message in str(raised.value)


def test_json_numbers_are_read_exactly_too(tmp_path: Path) -> None:
    line = '{"symbol": "BTC/USDT", "ts": 1, "bids": [[0.1, 3]], "asks": [[0.30000000000000004, 1]]}'
    path = write_lines(tmp_path / "binance_btc_usdt.jsonl", [line])
    book = ReplayBook.from_file("BINANCE", "BTC/USDT", path, T0).book_at(T0)
    assert book.bids == ((D("0.1"), D(3)),)
    assert book.asks == ((D("0.30000000000000004"), D(1)),)


def test_an_empty_replay_file_is_an_error(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "binance_btc_usdt.jsonl", [""])
    with pytest.raises(ReplayFileError, match="holds no snapshot"):
        ReplayBook.from_file("BINANCE", "BTC/USDT", path, T0)


def test_replay_file_names() -> None:
    assert replay_file_name("BINANCE", "BTC/USDT") == "binance_btc_usdt.jsonl"
    assert replay_symbol("BINANCE", "binance_btc_usdt.jsonl") == "BTC/USDT"
    assert replay_symbol("BINANCE_UAT", "binance_uat_eth_btc.jsonl") == "ETH/BTC"
    assert replay_symbol("BINANCE", "binance_uat_eth_btc.jsonl") is None
    assert replay_symbol("BINANCE", "okx_btc_usdt.jsonl") is None
    assert replay_symbol("BINANCE", "binance_btcusdt.jsonl") is None
    assert replay_symbol("BINANCE", "binance_btc_usdt.csv") is None


# ---------------------------------------------------------------- a venue's books


def test_a_venue_lists_the_catalogue_in_its_own_style() -> None:
    binance = VenueBooks("BINANCE", PaperConfig(), T0).instruments
    assert list(binance) == sorted(["BTC/USDT", "ETH/USDT", "SOL/USDT", "BTC/USDC", "ETH/BTC"])
    btc = binance["BTC/USDT"]
    assert (btc.external_symbol, btc.base, btc.quote) == ("BTCUSDT", "BTC", "USDT")
    assert (btc.tick_size, btc.lot_size, btc.min_notional) == (D("0.01"), D("0.00001"), D(5))
    assert btc.instrument_id == "BINANCE:BTC/USDT"
    okx = VenueBooks("OKX", PaperConfig(), T0).instruments["BTC/USDT"]
    assert (okx.external_symbol, okx.tick_size, okx.lot_size, okx.min_notional) == (
        "BTC-USDT", D("0.1"), D("0.00000001"), D(10))
    bybit = VenueBooks("BYBIT", PaperConfig(), T0).instruments["BTC/USDT"]
    assert (bybit.external_symbol, bybit.lot_size) == ("BTCUSDT", D("0.000001"))
    uat = VenueBooks("BINANCE_UAT", PaperConfig(), T0).instruments["BTC/USDT"]
    assert (uat.venue, uat.tick_size, uat.lot_size) == ("BINANCE_UAT", D("0.01"), D("0.00001"))


def test_a_venue_replays_its_files_and_lists_their_symbols(tmp_path: Path) -> None:
    write_lines(tmp_path / "binance_btc_usdt.jsonl", RECORDING)
    write_lines(tmp_path / "binance_doge_usdt.jsonl", [
        snapshot_line(5, [["0.12345", "100"], ["0.1234", "2.5"]], [["0.1235", "10"]],
                      symbol="DOGE/USDT")])
    write_lines(tmp_path / "okx_btc_usdt.jsonl", ["this is not for BINANCE"])
    write_lines(tmp_path / "binance_uat_btc_usdt.jsonl", ["nor this"])
    books = VenueBooks("BINANCE", PaperConfig(books_dir=tmp_path), T0)
    assert "DOGE/USDT" in books.instruments
    doge = books.instruments["DOGE/USDT"]
    assert (doge.tick_size, doge.lot_size, doge.min_notional) == (D("0.00001"), D("0.1"), D(5))
    assert books.book_at("DOGE/USDT", T0 + 999).bids[0] == (D("0.12345"), D(100))
    assert books.book_at("BTC/USDT", T0 + 500).bids == ((D("61840.10"), D("0.5")),)
    # the catalogue keeps its rules for a replayed catalogue symbol
    assert books.instruments["BTC/USDT"].tick_size == D("0.01")
    assert isinstance(books.source("ETH/USDT"), SimulatedBook)


def test_a_venue_refuses_a_broken_file_of_its_own(tmp_path: Path) -> None:
    write_lines(tmp_path / "binance_btc_usdt.jsonl", [RECORDING[0], "oops"])
    with pytest.raises(ReplayFileError, match="line 2"):
        VenueBooks("BINANCE", PaperConfig(books_dir=tmp_path), T0)
    with pytest.raises(FileNotFoundError):
        VenueBooks("BINANCE", PaperConfig(books_dir=tmp_path / "missing"), T0)


def test_unknown_symbols_are_refused() -> None:
    books = VenueBooks("BINANCE", PaperConfig(), T0)
    with pytest.raises(UnknownInstrument, match="BINANCE does not list DOGE/USDT"):
        books.book_at("DOGE/USDT", T0)


def test_pinning_a_book_moves_its_sequence_on() -> None:
    books = VenueBooks("BINANCE", PaperConfig(), T0)
    simulated_now = books.book_at("BTC/USDT", T0)
    pinned = books.pin("BTC/USDT", [(D(100), D(1))], [(D(101), D(2))], T0)
    assert pinned.sequence == simulated_now.sequence + 1
    assert (pinned.bids, pinned.asks) == (((D(100), D(1)),), ((D(101), D(2)),))
    later = books.book_at("BTC/USDT", T0 + 60_000)
    assert (later.sequence, later.bids, later.ts_event) == (pinned.sequence, pinned.bids,
                                                            T0 + 60_000)
    again = books.pin("BTC/USDT", [(D(99), D(1))], [], T0 + 60_000)
    assert again.sequence == pinned.sequence + 1
    assert again.asks == ()


def test_a_static_book_refuses_a_malformed_pin() -> None:
    with pytest.raises(ValueError, match="bids descending"):
        StaticBook("BINANCE", "BTC/USDT", [(D(1), D(1)), (D(2), D(1))], [])
    static = StaticBook("BINANCE", "BTC/USDT", [(D(1), D(1))], [(D(2), D(1))], sequence=5)
    assert static.book_at(T0) == BookSnapshot("BINANCE", "BTC/USDT", ((D(1), D(1)),),
                                              ((D(2), D(1)),), T0, 5)
    assert static.book_for_sequence(4) is None
