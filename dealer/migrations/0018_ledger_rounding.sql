-- What the bookings on each wallet rounded off, per asset: a hedge fill's quote leg and fees
-- are booked in whole minor units while the venue moves the exact amounts. The hedge worker
-- adds to the total in the transaction that enqueues the fill's entries; reconciliation
-- expects exactly the total's change since the baseline, instead of a tolerance that grew by
-- two minor units with every booking.
CREATE TABLE ledger_rounding (
    address text NOT NULL,
    asset text NOT NULL,
    amount numeric NOT NULL,
    PRIMARY KEY (address, asset)
);

-- The wallet's total when the baseline was taken. NULL: a baseline taken before the totals
-- were kept, whose LP is still checked within two minor units per booking.
ALTER TABLE lp_balance_baseline ADD COLUMN rounding numeric;
