-- The quote retention's purge reads EXPIRED quotes by creation time. A BRIN index (0014) stops
-- helping once freed space is reused: reused old pages get new quotes and their block ranges
-- widen to the present. This index holds only EXPIRED quotes (the quote's INSERT never touches
-- it; the expiry's update, which rewrites the row anyway, adds the entry) and loses them as
-- they are purged.
DROP INDEX quote_created_brin;
CREATE INDEX quote_expired_created_idx ON quote (created_at) WHERE status = 'EXPIRED';
