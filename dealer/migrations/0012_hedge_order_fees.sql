-- Every fee asset a venue charged a hedge order, {"BNB": "0.0012", "USDT": "0.4"}: a venue may
-- charge one order in two assets (a fee-token discount that runs out mid-order). The ledger
-- always booked each of them; fee_asset / fee_amount keep one of them, as before. NULL for
-- orders recorded before this column: their one fee is fee_asset / fee_amount.
ALTER TABLE hedge_order ADD COLUMN fees jsonb;
