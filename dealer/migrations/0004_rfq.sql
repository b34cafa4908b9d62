-- RFQ: firm quotes, the orders that accept them (seeds/001 TradeOrder), their executions, and
-- the hedge job each fill leaves for the hedger.

CREATE TABLE quote (
    quote_id           uuid PRIMARY KEY,
    dealer_account_id  uuid NOT NULL REFERENCES dealer,
    trading_account_id uuid NOT NULL REFERENCES trading_account,  -- the client
    symbol             text NOT NULL,
    order_side         text CHECK (order_side IN ('BUY', 'SELL')),  -- NULL: two-way
    quantity           numeric NOT NULL CHECK (quantity > 0),
    bid_price          numeric,   -- what the dealer pays when the client SELLs
    ask_price          numeric,   -- what the client pays when it BUYs
    hedge_plan         jsonb NOT NULL,
    status             text NOT NULL CHECK (status IN ('OPEN', 'FILLED', 'EXPIRED')),
    created_at         timestamptz NOT NULL,
    expire_at          timestamptz NOT NULL,
    filled_order_id    uuid,
    CHECK (bid_price IS NOT NULL OR ask_price IS NOT NULL)
);
CREATE INDEX quote_client_idx ON quote (trading_account_id, created_at);
CREATE INDEX quote_open_idx ON quote (expire_at) WHERE status = 'OPEN';

CREATE TABLE trade_order (
    trade_order_id     uuid PRIMARY KEY,
    trading_account_id uuid NOT NULL REFERENCES trading_account,
    instrument_id      text NOT NULL,
    quote_id           uuid REFERENCES quote,
    order_side         text NOT NULL CHECK (order_side IN ('BUY', 'SELL')),
    order_type         text NOT NULL,
    status             text NOT NULL,
    reject_reason      text,
    quantity           numeric NOT NULL,
    price              numeric,
    executed_quantity  numeric NOT NULL DEFAULT 0,
    executed_cost      numeric NOT NULL DEFAULT 0,
    idempotency_key    text,
    client_order_id    text,
    created_at         timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL
);
-- A quote fills once, whatever the number of replicas accepting it at the same time.
CREATE UNIQUE INDEX trade_order_quote_filled_uq ON trade_order (quote_id) WHERE status = 'FILLED';
CREATE UNIQUE INDEX trade_order_idempotency_uq ON trade_order (trading_account_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE UNIQUE INDEX trade_order_client_order_uq ON trade_order (trading_account_id, client_order_id)
    WHERE client_order_id IS NOT NULL;
CREATE INDEX trade_order_account_idx ON trade_order (trading_account_id, created_at);

CREATE TABLE trade_execution (
    execution_id   uuid PRIMARY KEY,
    trade_order_id uuid NOT NULL REFERENCES trade_order,
    quantity       numeric NOT NULL,
    price          numeric NOT NULL,
    cost           numeric NOT NULL,
    executed_at    timestamptz NOT NULL
);

CREATE TABLE hedge_job (
    job_id            uuid PRIMARY KEY,
    dealer_account_id uuid NOT NULL REFERENCES dealer,
    trade_order_id    uuid NOT NULL UNIQUE REFERENCES trade_order,
    symbol            text NOT NULL,
    side              text NOT NULL CHECK (side IN ('BUY', 'SELL')),  -- the dealer's hedge side
    quantity          numeric NOT NULL,
    plan              jsonb NOT NULL,
    status            text NOT NULL,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL
);
CREATE INDEX hedge_job_status_idx ON hedge_job (status, created_at);
