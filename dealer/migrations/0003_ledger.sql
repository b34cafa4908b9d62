-- Ledger write path: the transactional outbox, the local journal (postings and balances),
-- the scale each asset was first used with, and the LP balance baselines reconciliation needs.

CREATE TABLE ledger_outbox (
    outbox_id       bigserial PRIMARY KEY,
    kind            text NOT NULL CHECK (kind IN ('transaction', 'account_metadata')),
    payload         jsonb NOT NULL,
    created_at      timestamptz NOT NULL,
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    last_error      text,
    -- NULL while pending; then when the backend acknowledged it and with what outcome
    sent_at         timestamptz,
    outcome         text CHECK (outcome IN ('committed', 'duplicate', 'refused'))
);
CREATE INDEX ledger_outbox_pending_idx ON ledger_outbox (outbox_id) WHERE sent_at IS NULL;

CREATE TABLE ledger_transaction (
    transaction_id bigserial PRIMARY KEY,
    reference      text NOT NULL UNIQUE,
    metadata       jsonb NOT NULL DEFAULT '{}'::jsonb,
    timestamp      timestamptz NOT NULL
);

CREATE TABLE ledger_posting (
    transaction_id bigint NOT NULL REFERENCES ledger_transaction ON DELETE RESTRICT,
    ordinal        integer NOT NULL,
    source         text NOT NULL,
    destination    text NOT NULL,
    amount         numeric(38, 0) NOT NULL CHECK (amount > 0),
    asset          text NOT NULL,
    PRIMARY KEY (transaction_id, ordinal)
);
CREATE INDEX ledger_posting_source_idx ON ledger_posting (source);
CREATE INDEX ledger_posting_destination_idx ON ledger_posting (destination);

CREATE TABLE ledger_balance (
    address text NOT NULL,
    asset   text NOT NULL,
    input   numeric(38, 0) NOT NULL DEFAULT 0,
    output  numeric(38, 0) NOT NULL DEFAULT 0,
    PRIMARY KEY (address, asset)
);

-- An asset's scale never changes once used: the first use pins it.
CREATE TABLE ledger_asset_scale (
    code      text PRIMARY KEY,
    scale     integer NOT NULL CHECK (scale BETWEEN 0 AND 18),
    pinned_at timestamptz NOT NULL
);

-- Venue balances of an LP account when it was linked: reconciliation compares changes since.
CREATE TABLE lp_balance_baseline (
    trading_account_id uuid NOT NULL REFERENCES trading_account,
    asset              text NOT NULL,
    amount             numeric NOT NULL,
    taken_at           timestamptz NOT NULL,
    PRIMARY KEY (trading_account_id, asset)
);
