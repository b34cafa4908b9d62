-- A QUOTED order's timeInForce as it was submitted, FOK or IOC (empty or omitted is FOK),
-- answered on its TradeOrder and compared by a keyed retry. Either fills the quote at once,
-- whole, or not at all. Every order made before this column was answered FOK, whatever was
-- sent: it stays FOK. The default also writes FOK for an order a daemon of the previous version
-- makes while the replicas are upgraded one by one, which is what that daemon answers for it.
ALTER TABLE trade_order ADD COLUMN time_in_force text NOT NULL DEFAULT 'FOK'
    CHECK (time_in_force IN ('FOK', 'IOC'));
