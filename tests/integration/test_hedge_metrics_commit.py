"""The hedge worker counts what an answers transaction recorded only once it commits: a
transaction rolled back at its commit, whose answers the next round records again, leaves the
orders and jobs counted once."""

from __future__ import annotations

import asyncpg

from dealer.settings import DaemonSecrets, Settings
from tests.desk import (
    AppClient,
    check_books,
    desk_with_fills,
    hedge_worker,
    hedges_final,
    registry_value,
)

# Fails the commit of the first transaction that marks a hedge job HEDGED, after everything in
# it was written and counted (a deferred constraint trigger runs at COMMIT). A sequence, not a
# table, remembers that it fired: nextval is not undone by the rollback.
_FAIL_FIRST_HEDGED_COMMIT = """
CREATE SEQUENCE test_hedged_commits;
CREATE FUNCTION test_fail_first_hedged_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF nextval('test_hedged_commits') = 1 THEN
        RAISE EXCEPTION 'injected: the commit of the first HEDGED job fails';
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER test_fail_first_hedged_commit AFTER UPDATE ON hedge_job
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN (NEW.status = 'HEDGED' AND OLD.status <> 'HEDGED')
    EXECUTE FUNCTION test_fail_first_hedged_commit();
"""


async def test_an_answers_transaction_rolled_back_at_commit_counts_nothing(
    settings: Settings, secrets: DaemonSecrets, aiohttp_client: AppClient,
    conn: asyncpg.Connection,
) -> None:
    app, client, desk = await desk_with_fills(settings, secrets, aiohttp_client)
    await conn.execute(_FAIL_FIRST_HEDGED_COMMIT)  # nothing hedges before the worker starts
    worker = hedge_worker(app)
    worker.start()
    try:
        [job] = await hedges_final(conn, 1, within_s=10.0)
    finally:
        await worker.stop()
    assert job["status"] == "HEDGED"
    # the injected failure happened: the first answers were recorded by a later round
    assert await conn.fetchval("SELECT last_value FROM test_hedged_commits") >= 2
    orders = await conn.fetch("SELECT status, venue FROM hedge_order")
    filled = [o for o in orders if o["status"] == "FILLED"]
    assert filled
    assert registry_value(app, "dealer_hedge_jobs_finished_total", status="HEDGED") == 1
    assert registry_value(app, "dealer_hedge_fill_to_hedged_seconds_count") == 1
    for venue in {o["venue"] for o in filled}:
        assert registry_value(app, "dealer_hedge_orders_total", venue=venue, status="FILLED") == \
            sum(1 for o in filled if o["venue"] == venue)
    await check_books(client, conn, desk)
