-- An outbox entry's ledger reference (also its idempotency key) is stored with the entry, and
-- a new entry's carries random bits after its id: `fermata-<outbox id>-<16 hex digits>`. Until
-- now it was `fermata-<outbox id>`, worked out from the id when sent. After the database was
-- restored from a backup, its sequence handed out again ids whose references the Formance
-- ledger already held (booked from entries the restore lost), and each new entry with such an
-- id was refused as a conflict. Entries already written keep the reference they were, or may
-- have been, sent with: a resend must still be answered as a duplicate.
ALTER TABLE ledger_outbox ADD COLUMN reference text;
UPDATE ledger_outbox SET reference = 'fermata-' || outbox_id;
ALTER TABLE ledger_outbox ALTER COLUMN reference SET NOT NULL;

CREATE FUNCTION ledger_outbox_reference() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.reference IS NULL THEN
        -- 60 random bits (a version 4 UUID's first 16 hex digits, its version digit among them)
        NEW.reference := 'fermata-' || NEW.outbox_id || '-'
                         || left(replace(gen_random_uuid()::text, '-', ''), 16);
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER ledger_outbox_reference BEFORE INSERT ON ledger_outbox
    FOR EACH ROW EXECUTE FUNCTION ledger_outbox_reference();
