-- The quoting facts' epoch: one counter that every change of a fact a quote is priced on moves
-- (a dealer, its links, a trading account's kind or status, an instrument's rules). The quote
-- path caches those facts with the epoch they were read at, and the quote's INSERT compares that
-- one integer with the current epoch. Before, it rebuilt and compared the row versions of every
-- fact (the dealer, its links, the symbol's instruments) in each write: most of the INSERT's cost.
CREATE TABLE quoting_epoch (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    epoch     bigint NOT NULL,
    moved_by  xid8  -- the transaction that moved it last: a transaction moves it once
);
INSERT INTO quoting_epoch (epoch) VALUES (1);

CREATE FUNCTION move_quoting_epoch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE quoting_epoch SET epoch = epoch + 1, moved_by = pg_current_xact_id()
    WHERE moved_by IS DISTINCT FROM pg_current_xact_id();
    RETURN NULL;
END
$$;

-- Deferred to the commit: the epoch's row is locked last and only for the commit itself, so two
-- admin transactions never wait on each other's fact rows while holding it. A change and its
-- move of the epoch commit together; a snapshot sees both or neither.
CREATE CONSTRAINT TRIGGER dealer_moves_quoting_epoch
    AFTER INSERT OR UPDATE OR DELETE ON dealer DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION move_quoting_epoch();
CREATE CONSTRAINT TRIGGER dealer_link_moves_quoting_epoch
    AFTER INSERT OR UPDATE OR DELETE ON dealer_link DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION move_quoting_epoch();
-- A new account matters too: the quote path remembers an unknown client as unknown.
CREATE CONSTRAINT TRIGGER trading_account_added_moves_quoting_epoch
    AFTER INSERT OR DELETE ON trading_account DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION move_quoting_epoch();
CREATE CONSTRAINT TRIGGER trading_account_moves_quoting_epoch
    AFTER UPDATE ON trading_account DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (OLD.kind IS DISTINCT FROM NEW.kind OR OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION move_quoting_epoch();
CREATE CONSTRAINT TRIGGER instrument_added_moves_quoting_epoch
    AFTER INSERT OR DELETE ON instrument DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION move_quoting_epoch();
-- An instrument sync rewrites every row (synced_at): only a change of the rules moves the epoch.
CREATE CONSTRAINT TRIGGER instrument_moves_quoting_epoch
    AFTER UPDATE ON instrument DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (OLD.venue IS DISTINCT FROM NEW.venue
                       OR OLD.symbol IS DISTINCT FROM NEW.symbol
                       OR OLD.enabled IS DISTINCT FROM NEW.enabled
                       OR OLD.tick_size IS DISTINCT FROM NEW.tick_size
                       OR OLD.lot_size IS DISTINCT FROM NEW.lot_size
                       OR OLD.min_quantity IS DISTINCT FROM NEW.min_quantity
                       OR OLD.max_quantity IS DISTINCT FROM NEW.max_quantity
                       OR OLD.min_notional IS DISTINCT FROM NEW.min_notional)
    EXECUTE FUNCTION move_quoting_epoch();
