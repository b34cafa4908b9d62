-- Hedge control: an LP link can be draining (no new hedge orders are routed to it while its
-- in-flight orders finish, then it is unlinked), and a paused dealer says who paused it:
-- an admin ('manual') or the kill switch ('exposure', 'hedge_failures').

ALTER TABLE dealer_link
    ADD COLUMN draining boolean NOT NULL DEFAULT false;

ALTER TABLE dealer
    ADD COLUMN paused_by text
        CHECK (paused_by IN ('manual', 'exposure', 'hedge_failures')),
    ADD CONSTRAINT dealer_paused_by_ck CHECK (paused_by IS NULL OR status = 'PAUSED');

UPDATE dealer SET paused_by = 'manual' WHERE status = 'PAUSED';
