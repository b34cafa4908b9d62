-- The PnL of a dealer is rebuilt from its facts (client fills, executed hedge orders). Facts
-- that can no longer change (every FILLED client order; a hedge order once it left SENT and
-- UNKNOWN) are folded once into the dealer's running totals, in the transaction that marks them
-- folded, so a PnL reads the totals and only the facts not folded yet.
CREATE TABLE pnl_checkpoint (
    dealer_account_id uuid PRIMARY KEY REFERENCES dealer,
    totals            jsonb NOT NULL,   -- dealer.services.pnl.PnlTotals.to_json
    client_fills      bigint NOT NULL,  -- folded so far
    hedge_orders      bigint NOT NULL,  -- folded so far, executed or not
    updated_at        timestamptz NOT NULL
);

ALTER TABLE trade_order ADD COLUMN pnl_folded boolean NOT NULL DEFAULT false;
ALTER TABLE hedge_order ADD COLUMN pnl_folded boolean NOT NULL DEFAULT false;
-- Only what is not folded yet: these stay small whatever the history.
CREATE INDEX trade_order_pnl_pending_idx ON trade_order (quote_id)
    WHERE status = 'FILLED' AND NOT pnl_folded;
CREATE INDEX hedge_order_pnl_pending_idx ON hedge_order (job_id) WHERE NOT pnl_folded;
