-- Market data: instruments per venue, the connector's own id of an exchange account, and the
-- taker fee the consolidated book adjusts prices by.

ALTER TABLE trading_account ADD COLUMN venue_ref text;
-- NULL: the connector's default fee for the venue.
ALTER TABLE trading_account ADD COLUMN taker_fee numeric(12, 8)
    CHECK (taker_fee IS NULL OR (taker_fee >= 0 AND taker_fee < 0.1));

CREATE TABLE instrument (
    instrument_id   text PRIMARY KEY,              -- {VENUE}:{BASE}/{QUOTE}
    venue           text NOT NULL,
    symbol          text NOT NULL,
    external_symbol text NOT NULL,
    base_asset      text NOT NULL,
    quote_asset     text NOT NULL,
    tick_size       numeric NOT NULL CHECK (tick_size > 0),
    lot_size        numeric NOT NULL CHECK (lot_size > 0),
    min_quantity    numeric NOT NULL CHECK (min_quantity >= 0),
    max_quantity    numeric CHECK (max_quantity IS NULL OR max_quantity > 0),
    min_notional    numeric NOT NULL CHECK (min_notional >= 0),
    -- what the venue says (ACTIVE, DELISTED…)
    venue_status    text NOT NULL,
    -- whether the desk allows it: an admin may disable an instrument the venue lists
    enabled         boolean NOT NULL DEFAULT true,
    synced_at       timestamptz NOT NULL,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    UNIQUE (venue, symbol)
);
CREATE INDEX instrument_venue_idx ON instrument (venue, symbol);
