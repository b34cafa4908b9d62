-- Optional retention of quotes nobody accepted (DEALER_QUOTE_RETENTION_HOURS): the purge finds
-- old quotes by creation time (a BRIN index: tiny, and cheap to keep on an append-mostly table)
-- and keeps every quote an order refers to (an index on trade_order.quote_id, every status).
CREATE INDEX quote_created_brin ON quote USING brin (created_at);
CREATE INDEX trade_order_quote_idx ON trade_order (quote_id);
