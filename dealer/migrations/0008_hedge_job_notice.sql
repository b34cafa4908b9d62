-- Hedging, third increment: a new job's notice carries the job itself.
--
-- A worker that holds no other work of the job's lane can then size it and record its orders
-- in ONE statement (that statement takes the job only while its lane is idle: not leased, no
-- other unclaimed live job), without claiming it first. The notice carries the lane's carry as
-- this insert read it, which the worker sizes the job's orders with. The notice of a job put back
-- to PENDING (a retry), or of a job too large for a notice (8000 bytes), names only its dealer,
-- as before: the workers then claim its lane.
CREATE OR REPLACE FUNCTION hedge_job_ready() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    notice text;
BEGIN
    INSERT INTO hedge_lane (dealer_account_id, symbol)
        VALUES (NEW.dealer_account_id, NEW.symbol) ON CONFLICT DO NOTHING;
    notice := NEW.dealer_account_id::text;
    IF TG_OP = 'INSERT' AND NEW.attempts = 0 AND NEW.lead_job_id IS NULL THEN
        SELECT json_build_object(
                   'dealerAccountId', NEW.dealer_account_id, 'symbol', NEW.symbol,
                   'jobId', NEW.job_id, 'tradeOrderId', NEW.trade_order_id,
                   'side', NEW.side, 'quantity', NEW.quantity::text, 'plan', NEW.plan,
                   'createdAt', NEW.created_at, 'config', d.config, 'carry', l.carry::text)::text
            INTO notice FROM dealer d JOIN hedge_lane l USING (dealer_account_id)
            WHERE d.dealer_account_id = NEW.dealer_account_id AND l.symbol = NEW.symbol;
        IF notice IS NULL OR octet_length(notice) > 7900 THEN
            notice := NEW.dealer_account_id::text;
        END IF;
    END IF;
    PERFORM pg_notify('hedge_job', notice);
    RETURN NULL;
END $$;
