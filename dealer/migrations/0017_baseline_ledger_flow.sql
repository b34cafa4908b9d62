-- A baseline taken after the LP already traded (the venue was down when it was linked) must not
-- count those trades as drift: it keeps the exchange wallet's net flow at the moment the venue
-- balances were read, and reconciliation compares what flowed since.
ALTER TABLE lp_balance_baseline ADD COLUMN ledger_flow numeric NOT NULL DEFAULT 0;
