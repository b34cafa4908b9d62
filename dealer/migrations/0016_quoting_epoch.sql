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
-- move of the epoch commit together; a snapshot sees both or neither. Only what a quote reads
-- moves it (a dealer's status, pause reason and configuration; its links; an account's kind
-- and status; an instrument's rules), so renames and routine rewrites leave the caches alone.
-- A new dealer or account needs no move: the quote path caches none of an unknown id's facts
-- but "unknown", and a refusal on cached facts is always worked out again on fresh ones.
CREATE CONSTRAINT TRIGGER dealer_moves_quoting_epoch
    AFTER UPDATE ON dealer DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN ((OLD.status, OLD.pause_reason, OLD.config)
                       IS DISTINCT FROM (NEW.status, NEW.pause_reason, NEW.config))
    EXECUTE FUNCTION move_quoting_epoch();
CREATE CONSTRAINT TRIGGER dealer_removed_moves_quoting_epoch
    AFTER DELETE ON dealer DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION move_quoting_epoch();
CREATE CONSTRAINT TRIGGER dealer_link_moves_quoting_epoch
    AFTER INSERT OR UPDATE OR DELETE ON dealer_link DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION move_quoting_epoch();
CREATE CONSTRAINT TRIGGER trading_account_moves_quoting_epoch
    AFTER UPDATE ON trading_account DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN ((OLD.kind, OLD.status) IS DISTINCT FROM (NEW.kind, NEW.status))
    EXECUTE FUNCTION move_quoting_epoch();
CREATE CONSTRAINT TRIGGER trading_account_removed_moves_quoting_epoch
    AFTER DELETE ON trading_account DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION move_quoting_epoch();
-- A new instrument can make a symbol's rules stricter without any refusal: it moves the epoch.
CREATE CONSTRAINT TRIGGER instrument_added_moves_quoting_epoch
    AFTER INSERT OR DELETE ON instrument DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION move_quoting_epoch();
-- An instrument sync rewrites every row: only a change of the rules moves the epoch. Decimals
-- are compared as the quote path reads them, as text (0.01 and 0.010 differ there).
CREATE CONSTRAINT TRIGGER instrument_moves_quoting_epoch
    AFTER UPDATE ON instrument DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN ((OLD.venue, OLD.symbol, OLD.enabled, OLD.tick_size::text,
                        OLD.lot_size::text, OLD.min_quantity::text, OLD.max_quantity::text,
                        OLD.min_notional::text)
                       IS DISTINCT FROM (NEW.venue, NEW.symbol, NEW.enabled, NEW.tick_size::text,
                                         NEW.lot_size::text, NEW.min_quantity::text,
                                         NEW.max_quantity::text, NEW.min_notional::text))
    EXECUTE FUNCTION move_quoting_epoch();

-- TRUNCATE fires no row trigger: it moves the epoch at once (nothing to defer it behind).
CREATE TRIGGER dealer_truncated_moves_quoting_epoch AFTER TRUNCATE ON dealer
    FOR EACH STATEMENT EXECUTE FUNCTION move_quoting_epoch();
CREATE TRIGGER dealer_link_truncated_moves_quoting_epoch AFTER TRUNCATE ON dealer_link
    FOR EACH STATEMENT EXECUTE FUNCTION move_quoting_epoch();
CREATE TRIGGER trading_account_truncated_moves_quoting_epoch AFTER TRUNCATE ON trading_account
    FOR EACH STATEMENT EXECUTE FUNCTION move_quoting_epoch();
CREATE TRIGGER instrument_truncated_moves_quoting_epoch AFTER TRUNCATE ON instrument
    FOR EACH STATEMENT EXECUTE FUNCTION move_quoting_epoch();

-- The epoch's row is never removed: without it no quote could be stored.
CREATE FUNCTION keep_quoting_epoch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'quoting_epoch keeps its row: quotes are checked against it';
END
$$;
CREATE TRIGGER quoting_epoch_kept BEFORE DELETE OR TRUNCATE ON quoting_epoch
    FOR EACH STATEMENT EXECUTE FUNCTION keep_quoting_epoch();
