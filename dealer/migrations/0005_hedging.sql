-- Hedging (IMMEDIATE mode): the worker's claim on a job, its attempts and progress, and every
-- hedge order it sent (recorded BEFORE sending, so a crash after the send is recoverable by
-- asking the venue about the deterministic client order id).

ALTER TABLE hedge_job
    ADD COLUMN attempts         integer NOT NULL DEFAULT 0,
    ADD COLUMN claimed_by       text,
    ADD COLUMN claimed_until    timestamptz,
    ADD COLUMN last_error       text,
    ADD COLUMN hedged_quantity  numeric NOT NULL DEFAULT 0,
    ADD COLUMN first_order_at   timestamptz,
    ADD CONSTRAINT hedge_job_status_ck
        CHECK (status IN ('PENDING', 'IN_PROGRESS', 'HEDGED', 'FAILED', 'CANCELLED'));

CREATE TABLE hedge_order (
    client_order_id    text PRIMARY KEY,  -- h-<job_id>-<attempt>-<leg>
    job_id             uuid NOT NULL REFERENCES hedge_job,
    attempt            integer NOT NULL,
    leg                integer NOT NULL,
    trading_account_id uuid NOT NULL REFERENCES trading_account,  -- the LP
    venue              text NOT NULL,
    symbol             text NOT NULL,
    side               text NOT NULL CHECK (side IN ('BUY', 'SELL')),
    quantity           numeric NOT NULL CHECK (quantity > 0),
    limit_price        numeric NOT NULL,
    status             text NOT NULL CHECK (status IN ('SENT', 'FILLED', 'PARTIALLY_FILLED',
                                                       'EXPIRED', 'REJECTED', 'UNKNOWN')),
    filled_quantity    numeric NOT NULL DEFAULT 0,
    avg_price          numeric,
    fee_asset          text,
    fee_amount         numeric,
    reject_reason      text,
    created_at         timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL,
    UNIQUE (job_id, attempt, leg)
);
CREATE INDEX hedge_order_open_idx ON hedge_order (job_id) WHERE status IN ('SENT', 'UNKNOWN');
CREATE INDEX hedge_order_account_idx ON hedge_order (trading_account_id, created_at);
