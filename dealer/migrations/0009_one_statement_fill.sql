-- An accepted quote is filled in ONE statement, ledger entry included.
--
-- 1. Adding a ledger transaction to the outbox is one function call, so a caller's statement can
--    include it: pin the scales of the assets it uses (the first use of an asset pins it), refuse
--    it (SQLSTATE FL001, nothing written) when an asset is pinned at another scale, write the
--    entry and wake the relays. Each statement of the function reads with its own snapshot, so a
--    pin committed by a concurrent transaction, which this one waited for, is seen.
CREATE FUNCTION ledger_enqueue_transaction(entry jsonb, codes text[], scales integer[],
                                           at timestamptz) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    refusal text;
    id bigint;
BEGIN
    INSERT INTO ledger_asset_scale (code, scale, pinned_at)
        SELECT w.code, w.scale, at FROM unnest(codes, scales) AS w(code, scale)
        ON CONFLICT (code) DO NOTHING;
    SELECT string_agg(format('%s is pinned at scale %s in this ledger; refusing %s/%s',
                             w.code, p.scale, w.code, w.scale), '; ' ORDER BY w.code)
        INTO refusal
        FROM unnest(codes, scales) AS w(code, scale)
        LEFT JOIN ledger_asset_scale p ON p.code = w.code
        WHERE p.scale IS DISTINCT FROM w.scale;
    IF refusal IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'FL001', MESSAGE = refusal;
    END IF;
    INSERT INTO ledger_outbox (kind, payload, created_at, next_attempt_at)
        VALUES ('transaction', entry, at, at) RETURNING outbox_id INTO id;
    PERFORM pg_notify('ledger_outbox', '');
    RETURN id;
END $$;

-- 2. A new job's notice carries only the dealer settings a hedge worker reads (the notice is
--    built in the accepting statement and parsed by every worker).
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
                   'createdAt', NEW.created_at,
                   'config', json_build_object(
                       'hedgeMode', d.config->'hedgeMode',
                       'hedgeNettingWindowMs', d.config->'hedgeNettingWindowMs',
                       'slippageToleranceBps', d.config->'slippageToleranceBps',
                       'maxUnhedgedNotional', d.config->'maxUnhedgedNotional',
                       'maxUnhedgedExposure', d.config->'maxUnhedgedExposure'),
                   'carry', l.carry::text)::text
            INTO notice FROM dealer d JOIN hedge_lane l USING (dealer_account_id)
            WHERE d.dealer_account_id = NEW.dealer_account_id AND l.symbol = NEW.symbol;
        IF notice IS NULL OR octet_length(notice) > 7900 THEN
            notice := NEW.dealer_account_id::text;
        END IF;
    END IF;
    PERFORM pg_notify('hedge_job', notice);
    RETURN NULL;
END $$;
