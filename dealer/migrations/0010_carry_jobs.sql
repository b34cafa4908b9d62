-- A carry job: when a lane is idle (no live job of its own to take it) and its carry is large
-- enough for an LP to take, the hedge worker moves the carry into a job of its own, hedged like
-- a client fill's. It hedges no client order, so its trade_order_id is NULL.
ALTER TABLE hedge_job ALTER COLUMN trade_order_id DROP NOT NULL;
