"""Instruments: synchronised from the venues (seeds/004), listed, enabled and disabled."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

import asyncpg

from dealer.errors import ApiError, Errors
from dealer.uow import UnitOfWork
from venues.base import Instrument, MarketDataVenue, VenueError

_COLUMNS = (
    "instrument_id, venue, symbol, external_symbol, base_asset, quote_asset, tick_size, "
    "lot_size, min_quantity, max_quantity, min_notional, venue_status, enabled, synced_at, "
    "created_at, updated_at"
)


@dataclass(frozen=True, slots=True)
class InstrumentRecord:
    instrument: Instrument
    enabled: bool
    synced_at: dt.datetime

    @property
    def status(self) -> str:
        """seeds/001 instrument status: DISABLED when the desk turned it off."""
        return self.instrument.status if self.enabled else "DISABLED"

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> InstrumentRecord:
        return cls(
            Instrument(
                venue=row["venue"], symbol=row["symbol"], external_symbol=row["external_symbol"],
                base=row["base_asset"], quote=row["quote_asset"], tick_size=row["tick_size"],
                lot_size=row["lot_size"], min_quantity=row["min_quantity"],
                max_quantity=row["max_quantity"], min_notional=row["min_notional"],
                status=row["venue_status"],
            ),
            enabled=row["enabled"], synced_at=row["synced_at"],
        )


@dataclass(frozen=True, slots=True)
class SyncResult:
    venue: str
    synced: int
    added: int
    updated: int


async def fetch_venue_instruments(
    market: MarketDataVenue, symbols: Sequence[str] | None
) -> list[Instrument]:
    """Ask the venue (outside any transaction); refuse symbols it does not list."""
    try:
        found = await market.instruments(symbols)
    except VenueError as exc:
        raise ApiError(Errors.VENUE_UNAVAILABLE, f"{market.venue}: {exc}") from None
    if symbols:
        missing = sorted(set(symbols) - {i.symbol for i in found})
        if missing:
            raise ApiError(Errors.UNKNOWN_SYMBOLS,
                           f"{market.venue} does not list: {', '.join(missing)}")
    return found


async def store_instruments(
    uow: UnitOfWork, venue: str, instruments: Sequence[Instrument], now: dt.datetime
) -> SyncResult:
    """Upsert what the venue answered; the desk's enabled flag is kept."""
    added = 0
    for item in instruments:
        inserted = await uow.conn.fetchval(
            """INSERT INTO instrument (instrument_id, venue, symbol, external_symbol, base_asset,
                   quote_asset, tick_size, lot_size, min_quantity, max_quantity, min_notional,
                   venue_status, synced_at, created_at, updated_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13, $13)
               ON CONFLICT (instrument_id) DO UPDATE SET
                   external_symbol = EXCLUDED.external_symbol, tick_size = EXCLUDED.tick_size,
                   lot_size = EXCLUDED.lot_size, min_quantity = EXCLUDED.min_quantity,
                   max_quantity = EXCLUDED.max_quantity, min_notional = EXCLUDED.min_notional,
                   venue_status = EXCLUDED.venue_status, synced_at = EXCLUDED.synced_at,
                   updated_at = EXCLUDED.updated_at
               RETURNING xmax = 0""",
            item.instrument_id, venue, item.symbol, item.external_symbol, item.base, item.quote,
            item.tick_size, item.lot_size, item.min_quantity, item.max_quantity,
            item.min_notional, item.status, now,
        )
        added += bool(inserted)
    await uow.commit()
    return SyncResult(venue=venue, synced=len(instruments), added=added,
                      updated=len(instruments) - added)


async def get_instrument(conn: asyncpg.Connection, instrument_id: str) -> InstrumentRecord:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM instrument WHERE instrument_id = $1",  # noqa: S608
        instrument_id,
    )
    if row is None:
        raise ApiError(Errors.INSTRUMENT_NOT_FOUND, f"Instrument not found: {instrument_id}")
    return InstrumentRecord.from_row(row)


async def set_enabled(
    uow: UnitOfWork, instrument_id: str, enabled: bool, now: dt.datetime
) -> InstrumentRecord:
    row = await uow.conn.fetchrow(
        f"""UPDATE instrument SET enabled = $2,
                updated_at = CASE WHEN enabled = $2 THEN updated_at ELSE $3 END
            WHERE instrument_id = $1 RETURNING {_COLUMNS}""",  # noqa: S608
        instrument_id, enabled, now,
    )
    if row is None:
        raise ApiError(Errors.INSTRUMENT_NOT_FOUND, f"Instrument not found: {instrument_id}")
    await uow.commit()
    return InstrumentRecord.from_row(row)


@dataclass(frozen=True, slots=True)
class InstrumentFilter:
    venue: str | None
    symbols: list[str] | None
    status: str | None
    limit: int
    offset: int


async def list_instruments(
    conn: asyncpg.Connection, f: InstrumentFilter
) -> tuple[list[InstrumentRecord], int]:
    where = """($1::text IS NULL OR venue = $1)
               AND ($2::text[] IS NULL OR symbol = ANY($2::text[]))
               AND ($3::text IS NULL
                    OR ($3 = 'DISABLED' AND NOT enabled)
                    OR ($3 <> 'DISABLED' AND enabled AND venue_status = $3))"""
    args = (f.venue, f.symbols, f.status)
    total = await conn.fetchval(f"SELECT count(*) FROM instrument WHERE {where}", *args)  # noqa: S608
    rows = await conn.fetch(
        f"""SELECT {_COLUMNS} FROM instrument WHERE {where}
            ORDER BY venue, symbol LIMIT $4 OFFSET $5""",  # noqa: S608
        *args, f.limit, f.offset,
    )
    return [InstrumentRecord.from_row(r) for r in rows], total


async def instruments_by_id(
    conn: asyncpg.Connection, instrument_ids: Sequence[str]
) -> dict[str, InstrumentRecord]:
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM instrument WHERE instrument_id = ANY($1::text[])",  # noqa: S608
        list(instrument_ids),
    )
    return {r["instrument_id"]: InstrumentRecord.from_row(r) for r in rows}


def decimals_of(step: Decimal) -> int:
    """Digits after the point of a tick or lot size (0.001 → 3)."""
    exponent = step.normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0
