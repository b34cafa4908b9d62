-- Hedging, second increment: lanes, netting groups, residuals, backoff, and a wake-up on new jobs.
--
-- A lane is one dealer's hedging in one symbol. One worker at a time holds a lane (a lease, like
-- a job's), so the sizes of its orders account for what the previous round left: the lane's
-- carry is the dust (below one lot) the dealer still has to buy (positive) or sell (negative).

CREATE TABLE hedge_lane (
    dealer_account_id uuid NOT NULL REFERENCES dealer,
    symbol            text NOT NULL,
    carry             numeric NOT NULL DEFAULT 0,
    claimed_by        text,
    claimed_until     timestamptz,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (dealer_account_id, symbol)
);

ALTER TABLE hedge_job
    -- a rider: its need is hedged by the orders of its lead (NETTED windows, absorbed residuals)
    ADD COLUMN lead_job_id     uuid REFERENCES hedge_job,
    -- lane carry this job's orders also hedge (its side), besides its own quantity
    ADD COLUMN carry_in        numeric NOT NULL DEFAULT 0,
    -- what is left is below every LP venue's minimum order: it waits for the lane's next hedge
    ADD COLUMN residual        boolean NOT NULL DEFAULT false,
    -- backoff before the next attempt of what is left
    ADD COLUMN next_attempt_at timestamptz,
    ADD COLUMN finished_at     timestamptz;

CREATE INDEX hedge_job_lane_open_idx ON hedge_job (dealer_account_id, symbol, created_at)
    WHERE status IN ('PENDING', 'IN_PROGRESS');
CREATE INDEX hedge_job_lead_idx ON hedge_job (lead_job_id) WHERE lead_job_id IS NOT NULL;

ALTER TABLE hedge_order
    ADD COLUMN sent_by text;  -- the worker (replica) that sent it

-- Every job has its lane, and a job waiting to be hedged wakes the workers (LISTEN hedge_job)
-- instead of waiting for their next poll.
CREATE FUNCTION hedge_job_ready() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO hedge_lane (dealer_account_id, symbol)
        VALUES (NEW.dealer_account_id, NEW.symbol) ON CONFLICT DO NOTHING;
    PERFORM pg_notify('hedge_job', NEW.dealer_account_id::text);
    RETURN NULL;
END $$;

CREATE TRIGGER hedge_job_ready AFTER INSERT OR UPDATE OF status ON hedge_job
    FOR EACH ROW WHEN (NEW.status = 'PENDING') EXECUTE FUNCTION hedge_job_ready();

INSERT INTO hedge_lane (dealer_account_id, symbol)
    SELECT DISTINCT dealer_account_id, symbol FROM hedge_job ON CONFLICT DO NOTHING;
