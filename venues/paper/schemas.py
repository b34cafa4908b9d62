"""Wire schemas of the paper connector: the replay snapshot files and the order journal.

One JSON object a line, best level first, prices and quantities as strings:

    {"venue": "BINANCE", "symbol": "BTC/USDT", "ts": <unix ms>, "bids": [["price", "qty"], ...],
     "asks": [...]}

A file is named `<venue>_<base>_<quote>.jsonl` in lower case (`binance_btc_usdt.jsonl`). JSON
numbers are accepted too and read exactly (never through a float).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from venues.base import (
    BookSnapshot,
    Execution,
    Fee,
    Level,
    OrderState,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
    split_symbol,
)

REPLAY_SUFFIX = ".jsonl"


class ReplayFileError(ValueError):
    """A replay file cannot be used; the message names the file and the line."""


@dataclass(frozen=True, slots=True)
class ReplaySnapshot:
    """One recorded book: its recorded time and exactly its levels."""

    ts: int
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]


def replay_file_name(venue: str, symbol: str) -> str:
    base, quote = split_symbol(symbol)
    return f"{venue.lower()}_{base.lower()}_{quote.lower()}{REPLAY_SUFFIX}"


def replay_symbol(venue: str, file_name: str) -> str | None:
    """`BTC/USDT` for `binance_btc_usdt.jsonl` and venue BINANCE; None for another venue's file."""
    prefix = f"{venue.lower()}_"
    if not file_name.startswith(prefix) or not file_name.endswith(REPLAY_SUFFIX):
        return None
    pair = file_name[len(prefix):-len(REPLAY_SUFFIX)]
    base, sep, quote = pair.partition("_")
    # `binance_uat_btc_usdt.jsonl` belongs to BINANCE_UAT, not to BINANCE.
    if not sep or not base or not quote or "_" in quote or not pair.isascii():
        return None
    return f"{base.upper()}/{quote.upper()}"


def _fail(path: Path, line_no: int, why: str) -> ReplayFileError:
    return ReplayFileError(f"replay file {path}, line {line_no}: {why}")


def _decimal(value: Any, path: Path, line_no: int, what: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise _fail(path, line_no, f"{what} must be a decimal string, got {value!r}")
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise _fail(path, line_no, f"{what} is not a decimal: {value!r}") from None
    if not number.is_finite() or number <= 0:
        raise _fail(path, line_no, f"{what} must be positive, got {value!r}")
    return number


def _levels(value: Any, path: Path, line_no: int, side: str) -> tuple[Level, ...]:
    if not isinstance(value, list):
        raise _fail(path, line_no, f"{side} must be a list of [price, quantity]")
    levels: list[Level] = []
    for index, level in enumerate(value):
        if not isinstance(level, list) or len(level) != 2:
            raise _fail(path, line_no, f"{side}[{index}] must be [price, quantity]")
        levels.append((_decimal(level[0], path, line_no, f"{side}[{index}] price"),
                       _decimal(level[1], path, line_no, f"{side}[{index}] quantity")))
    return tuple(levels)


def parse_replay_line(text: str, *, path: Path, line_no: int, symbol: str) -> ReplaySnapshot:
    """One line of a replay file of `symbol`; ReplayFileError naming file and line otherwise."""
    try:
        raw = json.loads(text, parse_float=Decimal)
    except json.JSONDecodeError as exc:
        raise _fail(path, line_no, f"not JSON ({exc.msg})") from None
    if not isinstance(raw, dict):
        raise _fail(path, line_no, "a line must be a JSON object")
    missing = [key for key in ("symbol", "ts", "bids", "asks") if key not in raw]
    if missing:
        raise _fail(path, line_no, "missing " + ", ".join(missing))
    if raw["symbol"] != symbol:
        raise _fail(path, line_no, f"symbol {raw['symbol']!r} does not match the file's {symbol}")
    ts = raw["ts"]
    if isinstance(ts, bool) or not isinstance(ts, int) or ts < 0:
        raise _fail(path, line_no, f"ts must be unix milliseconds, got {ts!r}")
    bids = _levels(raw["bids"], path, line_no, "bids")
    asks = _levels(raw["asks"], path, line_no, "asks")
    book = BookSnapshot("", symbol, bids, asks, ts, 0)
    if not book.is_well_formed():
        raise _fail(path, line_no, "bids must strictly descend and asks strictly ascend")
    if book.is_crossed():
        raise _fail(path, line_no, f"crossed book (bid {book.best_bid} >= ask {book.best_ask})")
    return ReplaySnapshot(ts, bids, asks)


def load_replay_file(path: Path, symbol: str) -> tuple[ReplaySnapshot, ...]:
    """Every snapshot of a replay file in time order.

    Times must not decrease; of several snapshots with the same time the last one stands (the
    others could never be served). Blank lines are ignored; an empty file is an error.
    """
    snapshots: list[ReplaySnapshot] = []
    with path.open("rb") as lines:
        for line_no, raw_line in enumerate(lines, start=1):
            try:
                text = raw_line.decode("utf-8")
            except UnicodeDecodeError:
                raise _fail(path, line_no, "not UTF-8 text") from None
            if not text.strip():
                continue
            snapshot = parse_replay_line(text, path=path, line_no=line_no, symbol=symbol)
            if snapshots and snapshot.ts < snapshots[-1].ts:
                raise _fail(path, line_no, f"ts {snapshot.ts} is before the previous line's "
                                           f"{snapshots[-1].ts}")
            if snapshots and snapshot.ts == snapshots[-1].ts:
                snapshots[-1] = snapshot
            else:
                snapshots.append(snapshot)
    if not snapshots:
        raise ReplayFileError(f"replay file {path} holds no snapshot")
    return tuple(snapshots)


# ---------------------------------------------------------------- the order journal
#
# With a journal directory, a paper venue appends one JSON object a line to `<venue>.jsonl`:
#
#     {"event": "submit" | "duplicate" | "lost" | "cancel" | "fill" | "balance",
#      "account": <account key>, "ts": <unix ms>, "order": {...} | null,
#      "free": {asset: "amount"}, "locked": {asset: "amount"}}
#
# `order` is the order's state after the event and `free`/`locked` the account's wallet after
# it, so the last line of an order (or of an account) is all a restart needs. `duplicate` is a
# submit of a client order id the account already used (answered with the existing order) and
# `lost` a submit that never reached the venue; both change nothing.

JOURNAL_SUFFIX = ".jsonl"


@dataclass(frozen=True, slots=True)
class JournalEntry:
    event: str
    account: str
    ts: int
    order: OrderState | None
    free: dict[str, Decimal]
    locked: dict[str, Decimal]


def journal_file_name(venue: str) -> str:
    return f"{venue.lower()}{JOURNAL_SUFFIX}"


def _amounts(values: Any) -> dict[str, Decimal]:
    return {str(k): Decimal(str(v)) for k, v in dict(values or {}).items()}


def _state_json(state: OrderState) -> dict[str, Any]:
    return {
        "clientOrderId": state.client_order_id, "venueOrderId": state.venue_order_id,
        "symbol": state.symbol, "side": state.side.value, "orderType": state.order_type.value,
        "timeInForce": state.time_in_force.value, "quantity": str(state.quantity),
        "limitPrice": None if state.limit_price is None else str(state.limit_price),
        "status": state.status.value, "filledQuantity": str(state.filled_quantity),
        "executions": [{"executionId": e.execution_id, "price": str(e.price),
                        "quantity": str(e.quantity), "feeAsset": e.fee.asset,
                        "feeAmount": str(e.fee.amount), "liquidity": e.liquidity,
                        "ts": e.ts_event} for e in state.executions],
        "tsCreated": state.ts_created, "tsUpdated": state.ts_updated,
        "rejectReason": state.reject_reason,
    }


def _state_from(raw: dict[str, Any]) -> OrderState:
    return OrderState(
        client_order_id=raw["clientOrderId"], venue_order_id=raw["venueOrderId"],
        symbol=raw["symbol"], side=Side(raw["side"]), order_type=OrderType(raw["orderType"]),
        time_in_force=TimeInForce(raw["timeInForce"]), quantity=Decimal(raw["quantity"]),
        limit_price=None if raw["limitPrice"] is None else Decimal(raw["limitPrice"]),
        status=OrderStatus(raw["status"]), filled_quantity=Decimal(raw["filledQuantity"]),
        executions=tuple(Execution(e["executionId"], Decimal(e["price"]),
                                   Decimal(e["quantity"]),
                                   Fee(e["feeAsset"], Decimal(e["feeAmount"])), e["liquidity"],
                                   int(e["ts"])) for e in raw["executions"]),
        ts_created=int(raw["tsCreated"]), ts_updated=int(raw["tsUpdated"]),
        reject_reason=raw["rejectReason"],
    )


def journal_line(entry: JournalEntry) -> bytes:
    return (json.dumps({
        "event": entry.event, "account": entry.account, "ts": entry.ts,
        "order": None if entry.order is None else _state_json(entry.order),
        "free": {k: str(v) for k, v in entry.free.items()},
        "locked": {k: str(v) for k, v in entry.locked.items()},
    }, separators=(",", ":")) + "\n").encode()


def load_journal(path: Path) -> list[JournalEntry]:
    """Every entry of a journal; a torn last line (the process died writing it) is dropped."""
    entries: list[JournalEntry] = []
    raw_lines = path.read_bytes().split(b"\n")
    for line_no, raw_line in enumerate(raw_lines, start=1):
        if not raw_line.strip():
            continue
        try:
            raw = json.loads(raw_line)
            entries.append(JournalEntry(
                str(raw["event"]), str(raw["account"]), int(raw["ts"]),
                None if raw["order"] is None else _state_from(raw["order"]),
                _amounts(raw["free"]), _amounts(raw["locked"])))
        except (ValueError, KeyError, TypeError) as exc:
            if line_no >= len(raw_lines) - 1:  # the last line, cut short
                break
            raise ReplayFileError(f"journal {path}, line {line_no}: {exc}") from None
    return entries
