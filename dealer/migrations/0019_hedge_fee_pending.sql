-- A hedge fee the ledger could not book when its fill was recorded (no scale for its asset on
-- the daemon that recorded it). It waits here until a daemon with a scale for the asset books
-- it as the fee entry the fill would have had (`hedging.late_fees`): once, `booked_at` and the
-- entry written in one transaction. `metadata` is the fill entry's (jobId, clientOrderId,
-- venueOrderId, orderId), for the fee entry's.
CREATE TABLE hedge_fee_pending (
    client_order_id text NOT NULL REFERENCES hedge_order,
    asset           text NOT NULL,
    amount          numeric NOT NULL CHECK (amount <> 0),
    metadata        jsonb NOT NULL,
    recorded_at     timestamptz NOT NULL,
    booked_at       timestamptz,
    outbox_id       bigint,  -- the fee entry (NULL when booked: under one minor unit)
    last_error      text,    -- why the last try could not book it
    held            text,    -- why it waits for a person (not booked while set)
    PRIMARY KEY (client_order_id, asset)
);
CREATE INDEX hedge_fee_pending_waiting_idx ON hedge_fee_pending (recorded_at)
    WHERE booked_at IS NULL;

-- The fees left out before this table: a fee asset of a filled hedge order in which none of
-- the order's ledger entries has a posting, except a fee under one minor unit of an asset the
-- ledger used before the order was recorded (booked as nothing then, its rounding kept). The
-- base and quote assets always have a scale (a symbol is not quoted without one), so a fee in
-- them was always booked. They are held for a person: one may have been corrected by hand
-- already (outside the outbox, which this cannot see), and a fee under one minor unit of an
-- asset first used after the order may have been booked as nothing.
WITH booked AS (
    SELECT DISTINCT b.payload -> 'metadata' ->> 'clientOrderId' AS client_order_id,
           split_part(p ->> 3, '/', 1) AS asset
    FROM ledger_outbox b CROSS JOIN LATERAL jsonb_array_elements(b.payload -> 'postings') p
    WHERE b.kind = 'transaction' AND b.payload -> 'metadata' ? 'clientOrderId'),
fill_metadata AS (
    SELECT DISTINCT ON (b.payload -> 'metadata' ->> 'clientOrderId')
           b.payload -> 'metadata' ->> 'clientOrderId' AS client_order_id,
           jsonb_strip_nulls(jsonb_build_object(
               'jobId', b.payload -> 'metadata' ->> 'jobId',
               'clientOrderId', b.payload -> 'metadata' ->> 'clientOrderId',
               'venueOrderId', b.payload -> 'metadata' ->> 'venueOrderId',
               'orderId', b.payload -> 'metadata' ->> 'orderId')) AS metadata
    FROM ledger_outbox b
    WHERE b.kind = 'transaction' AND b.payload -> 'metadata' ? 'clientOrderId'
    ORDER BY b.payload -> 'metadata' ->> 'clientOrderId', b.outbox_id),
charged AS (
    SELECT o.client_order_id, o.job_id, o.updated_at, f.key AS asset, f.value::numeric AS amount
    FROM hedge_order o
    CROSS JOIN LATERAL jsonb_each_text(CASE
        WHEN o.fees IS NOT NULL THEN o.fees
        WHEN o.fee_asset IS NOT NULL AND o.fee_amount IS NOT NULL
            THEN jsonb_build_object(o.fee_asset, o.fee_amount::text)
        ELSE '{}'::jsonb END) f
    WHERE o.filled_quantity > 0)
INSERT INTO hedge_fee_pending (client_order_id, asset, amount, metadata, recorded_at, held)
SELECT c.client_order_id, c.asset, c.amount,
       coalesce(m.metadata, jsonb_build_object('jobId', c.job_id::text,
                                               'clientOrderId', c.client_order_id)),
       c.updated_at,
       'found by migration 0019: left out before the fees were kept; book it by clearing '
       || 'held, or delete the row if it was corrected by hand'
FROM charged c
LEFT JOIN booked k ON k.client_order_id = c.client_order_id AND k.asset = c.asset
LEFT JOIN fill_metadata m ON m.client_order_id = c.client_order_id
WHERE k.client_order_id IS NULL AND c.amount <> 0
  AND NOT EXISTS (SELECT 1 FROM ledger_asset_scale s
                  WHERE s.code = c.asset AND s.pinned_at <= c.updated_at
                    AND abs(c.amount) < power(10::numeric, -s.scale));
