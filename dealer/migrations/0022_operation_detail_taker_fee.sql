-- An UPDATE operation's detail names the fields changed as the API spells them. Versions before
-- this one wrote the taker fee under its column's name, taker_fee: those details now name it
-- takerFee, as every detail written since does, so a history reads one way whatever its age.
-- Only the key changes; the value and everything else the row recorded stay as written.
UPDATE trading_account_operation
SET detail = (detail - 'taker_fee') || jsonb_build_object('takerFee', detail -> 'taker_fee')
WHERE operation_type = 'UPDATE' AND detail ? 'taker_fee';
