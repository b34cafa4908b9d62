"""The transactional outbox and its relay.

Services add ledger entries inside their own database transaction (`enqueue_*`), so an entry
exists exactly when the business event does. The relay sends pending entries to the backend in
outbox order, with the entry's stored reference (`fermata-<outbox id>-<random>`, set when it is
written) as the transaction reference and idempotency key, and marks each one sent only after
the backend acknowledged it. A crash between the two resends the
entry, which the backend answers as a duplicate: nothing is lost and nothing is booked twice.
Only one relay works at a time (a PostgreSQL advisory lock), so the order holds across replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg

from ledger.assets import Asset
from ledger.backend import (
    AccountMetadata,
    CommitOutcome,
    LedgerBackend,
    LedgerRefused,
    LedgerTransaction,
    LedgerUnavailable,
    Posting,
)

log = logging.getLogger(__name__)

CHANNEL = "ledger_outbox"  # also in ledger_enqueue_transaction (migration 0009)
SCALE_REFUSED = "FL001"  # ledger_enqueue_transaction: an asset pinned at another scale
RELAY_LOCK_KEY = 0x4C454447  # "LEDG"
BACKOFF_MIN_S = 0.2
BACKOFF_MAX_S = 30.0


def _transaction_payload(tx: LedgerTransaction) -> dict[str, Any]:
    return {
        "postings": [[p.source, p.destination, str(p.amount), p.asset] for p in tx.postings],
        "metadata": dict(tx.metadata),
        "timestamp": None if tx.timestamp is None else tx.timestamp.isoformat(),
    }


def _transaction_from(reference: str, payload: dict[str, Any]) -> LedgerTransaction:
    timestamp = payload.get("timestamp")
    return LedgerTransaction(
        reference=reference,
        postings=tuple(Posting(s, d, int(a), asset) for s, d, a, asset in payload["postings"]),
        metadata=dict(payload.get("metadata") or {}),
        timestamp=None if timestamp is None else dt.datetime.fromisoformat(timestamp),
    )


@dataclass(frozen=True, slots=True)
class OutboxArguments:
    """A ledger transaction as `ledger_enqueue_transaction(entry, codes, scales, at)` (migration
    0009) takes it, for a caller's statement that adds it to the outbox itself."""

    entry: dict[str, Any]
    codes: list[str]
    scales: list[int]


def outbox_arguments(tx: LedgerTransaction) -> OutboxArguments:
    assets = [Asset.parse(notation) for notation in sorted({p.asset for p in tx.postings})]
    return OutboxArguments(_transaction_payload(tx), [a.code for a in assets],
                           [a.scale for a in assets])


def scale_refusal(exc: asyncpg.PostgresError) -> ValueError | None:
    """The ValueError for a posting in another scale than its asset's pin (SQLSTATE FL001)."""
    if getattr(exc, "sqlstate", None) == SCALE_REFUSED:
        return ValueError(str(getattr(exc, "message", exc)))
    return None


async def enqueue_transaction(conn: asyncpg.Connection, tx: LedgerTransaction,
                              now: dt.datetime) -> int:
    """Add a transaction to the outbox in the caller's database transaction.

    `tx.reference` is ignored: the entry's reference is made when it is written (see
    `outbox_references`). Answers the outbox id.
    The first use of an asset pins its scale; a posting in another scale of a pinned asset is
    refused (ValueError) and nothing is written.
    """
    args = outbox_arguments(tx)
    try:
        outbox_id: int = await conn.fetchval(
            "SELECT ledger_enqueue_transaction($1, $2, $3, $4)",
            args.entry, args.codes, args.scales, now)
    except asyncpg.PostgresError as exc:
        refusal = scale_refusal(exc)
        if refusal is not None:
            raise refusal from None
        raise
    return outbox_id


async def enqueue_account_metadata(conn: asyncpg.Connection, entry: AccountMetadata,
                                   now: dt.datetime) -> int:
    """Add account metadata (which creates the account) to the outbox."""
    outbox_id: int = await conn.fetchval(
        """WITH entry AS (
               INSERT INTO ledger_outbox (kind, payload, created_at, next_attempt_at)
               VALUES ('account_metadata', $1, $2, $2) RETURNING outbox_id)
           SELECT outbox_id FROM entry, pg_notify($3, '')""",
        {"address": entry.address, "metadata": dict(entry.metadata)}, now, CHANNEL,
    )
    return outbox_id


async def outbox_references(
        conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy | asyncpg.Pool,
        outbox_ids: Sequence[int]) -> list[str]:
    """The ledger references of outbox entries, in the order of `outbox_ids` (KeyError for an
    id with no entry). A reference is `fermata-<outbox id>-<16 random hex digits>`, made when
    the entry is written (`fermata-<outbox id>` for entries written before migration 0020): a
    database restored from a backup hands out ids again, and the random part keeps their
    references apart from those the ledger already holds."""
    rows = await conn.fetch("SELECT outbox_id, reference FROM ledger_outbox "
                            "WHERE outbox_id = ANY($1::bigint[])", list(outbox_ids))
    by_id = {row["outbox_id"]: row["reference"] for row in rows}
    return [by_id[outbox_id] for outbox_id in outbox_ids]


class RelayMetrics(Protocol):
    """What the relay reports (the daemon's metrics implement it)."""

    def relay_sent(self, outcome: str, count: int) -> None: ...
    def relay_error(self, kind: str) -> None: ...
    def relay_retry(self) -> None: ...
    def backend_latency(self, operation: str, seconds: float) -> None: ...
    def outbox_state(self, pending: int, oldest_age_s: float) -> None: ...


@dataclass
class _Entry:
    outbox_id: int
    reference: str
    kind: str
    payload: dict[str, Any]
    attempts: int


class RepeatedFailures:
    """Which failures of a loop or a scheduled job to log. A database outage fails every pass
    of every loop the same way, several times a second: logging each (with its traceback)
    buried the log. The first failure of a series is logged, and one that differs from the
    one before (another exception or message), and a reminder once a minute; the others are
    only counted, and `recovered` answers how many there were once a pass succeeds."""

    REMIND_AFTER_S = 60.0

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.count = 0
        self._last: tuple[type[BaseException], str] | None = None
        self._logged_at = 0.0

    def failed(self, exc: BaseException) -> bool:
        """Count a failure; True when it is to be logged."""
        self.count += 1
        now = self._clock()
        key = (type(exc), str(exc))
        if key != self._last or now - self._logged_at >= self.REMIND_AFTER_S:
            self._last, self._logged_at = key, now
            return True
        return False

    def recovered(self) -> int:
        """After a success: the failures of the series it ended (0: there was none)."""
        count, self.count, self._last = self.count, 0, None
        return count


# What `listening` answers: a connection of its own, or one of the pool's.
HeldConnection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy


@contextlib.asynccontextmanager
async def listening(pool: asyncpg.Pool,
                    connect: Callable[[], Awaitable[asyncpg.Connection]] | None
                    ) -> AsyncIterator[HeldConnection]:
    """A connection to hold and LISTEN on: one of its own from `connect`, closed on exit, else
    one of the pool's. (A pool connection that dies while it listens cannot drop its listener,
    and asyncpg warns when it goes back to the pool.)"""
    if connect is None:
        async with pool.acquire() as pooled:
            yield pooled
        return
    conn = await connect()
    try:
        yield conn
    finally:
        if conn.is_closed():
            conn.terminate()
        else:
            with contextlib.suppress(Exception):
                await conn.close(timeout=2.0)
            if not conn.is_closed():
                conn.terminate()


class OutboxRelay:
    def __init__(self, pool: asyncpg.Pool, backend: LedgerBackend, metrics: RelayMetrics,
                 clock: Callable[[], dt.datetime], *, batch_size: int = 100,
                 poll_interval_s: float = 1.0, linger_s: float = 0.0,
                 rng: random.Random | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 listen_connect: Callable[[], Awaitable[asyncpg.Connection]] | None = None
                 ) -> None:
        """`linger_s`: how long the relay waits, once woken by a new entry, for more to join
        its batch (the ledger is called less often, and not in the very moment of the fill
        whose commit woke it, when that fill's hedge is being sized and sent)."""
        self._pool = pool
        self._listen_connect = listen_connect  # the leader's own connection (`listening`)
        self._backend = backend
        self._metrics = metrics
        self._clock = clock
        self._batch_size = batch_size
        self._poll_interval_s = poll_interval_s
        self._linger_s = linger_s
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failures = 0

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ledger outbox relay")

    async def stop(self, flush_timeout_s: float = 5.0) -> None:
        """Send what is pending (bounded), then stop."""
        if self._task is None:
            return
        try:
            await asyncio.wait_for(self._drained(), flush_timeout_s)
        except Exception:  # the ledger or the database is gone: what is left waits in the outbox
            log.warning("ledger relay stopped with entries still pending")
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _drained(self) -> None:
        while await self.pending_count() and self._failures == 0:
            self._wake.set()
            await asyncio.sleep(0.05)

    def wake(self) -> None:
        self._wake.set()

    # ------------------------------------------------------------ loop

    async def _run(self) -> None:
        failures = RepeatedFailures()
        while True:
            try:
                async with listening(self._pool, self._listen_connect) as conn:
                    await conn.add_listener(CHANNEL, self._on_notify)
                    if failures.recovered():
                        log.info("ledger relay running again")
                    try:
                        await self._lead(conn)
                    finally:
                        with contextlib.suppress(Exception):
                            await conn.remove_listener(CHANNEL, self._on_notify)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._metrics.relay_error("relay")
                if failures.failed(exc):
                    log.exception("ledger relay failed; restarting (%d failure(s) in a row)",
                                  failures.count)
                await self._sleep(1.0)

    def _on_notify(self, *_: object) -> None:
        self._wake.set()

    async def _lead(self, conn: HeldConnection) -> None:
        """Wait to be the one relay (advisory lock held by this connection), then relay."""
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", RELAY_LOCK_KEY):
            # The outbox gauges are the leading relay's; a replica that led before would keep
            # showing the outbox as it last saw it (a backlog's age, frozen) to the alerts and
            # panels taking the max over replicas.
            self._metrics.outbox_state(0, 0.0)
            self._wake.clear()
            await self._idle(self._poll_interval_s)
            while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", RELAY_LOCK_KEY):
                self._wake.clear()
                await self._idle(self._poll_interval_s)
        try:
            while True:
                if conn.is_closed():
                    # The lock went with its session: another relay may lead now, and two
                    # would let entries overtake the outbox's head.
                    raise ConnectionError("the relay's lock connection was closed")
                # Cleared before the pass reads the outbox, not after: a notice arriving while
                # it sends wakes the next wait at once instead of being lost until the poll.
                self._wake.clear()
                delay = await self.relay_once()
                if await self._idle(delay) and self._linger_s > 0:
                    await self._sleep(self._linger_s)
        finally:
            with contextlib.suppress(Exception):
                await conn.execute("SELECT pg_advisory_unlock($1)", RELAY_LOCK_KEY)

    async def _idle(self, seconds: float) -> bool:
        """Wait up to `seconds` for a notice (or `wake()`) since the caller cleared the flag;
        answers whether one came."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        return self._wake.is_set()

    # ------------------------------------------------------------ one pass

    async def relay_once(self) -> float:
        """Send one batch of due entries in order; answers how long to wait before the next."""
        now = self._clock()
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                """SELECT outbox_id, reference, kind, payload, attempts, next_attempt_at
                   FROM ledger_outbox WHERE sent_at IS NULL
                   ORDER BY outbox_id LIMIT $1""",
                self._batch_size,
            )
        await self._report_state()
        if not rows:
            return self._poll_interval_s
        if rows[0]["next_attempt_at"] > now:
            # The head is backing off: nothing behind it may overtake it.
            wait: dt.timedelta = rows[0]["next_attempt_at"] - now
            return max(0.0, wait.total_seconds())
        entries = [_Entry(r["outbox_id"], r["reference"], r["kind"], r["payload"], r["attempts"])
                   for r in rows]
        for group in _runs_of_same_kind(entries):
            try:
                outcomes = await self._send(group)
            except LedgerUnavailable as exc:
                return await self._retry_later(group[0], str(exc))
            except LedgerRefused as exc:
                if len(group) > 1:
                    # Part of a bulk may be booked: resend one by one, booked ones come back
                    # as duplicates and only the bad entry is refused.
                    return await self._send_singly(group)
                await self._refused(group[0], str(exc))
                return 0.0
            except Exception as exc:
                # Not known to be the entry's fault (a bug, an answer nobody classified): it
                # may hit every entry, so nothing is refused on it. Retried with backoff like
                # an outage, shown on the entry and counted as `relay`; a head that stays
                # stuck raises the outbox age alert.
                log.exception("ledger backend failed unexpectedly on outbox %s",
                              group[0].outbox_id)
                return await self._retry_later(group[0], f"{type(exc).__name__}: {exc}",
                                               kind="relay")
            await self._sent(group, outcomes)
        self._failures = 0
        return 0.0

    async def _send_singly(self, group: Sequence[_Entry]) -> float:
        for entry in group:
            try:
                outcomes = await self._send([entry])
            except LedgerUnavailable as exc:
                return await self._retry_later(entry, str(exc))
            except LedgerRefused as exc:
                await self._refused(entry, str(exc))
                continue
            except Exception as exc:  # as in relay_once
                log.exception("ledger backend failed unexpectedly on outbox %s",
                              entry.outbox_id)
                return await self._retry_later(entry, f"{type(exc).__name__}: {exc}",
                                               kind="relay")
            await self._sent([entry], outcomes)
        return 0.0

    async def _sent(self, group: Sequence[_Entry], outcomes: Sequence[str]) -> None:
        await self._mark(group, outcomes, None)
        self._metrics.relay_sent("committed", outcomes.count("committed"))
        self._metrics.relay_sent("duplicate", outcomes.count("duplicate"))

    async def _refused(self, entry: _Entry, error: str) -> None:
        """Never retried: kept visible (outcome 'refused') and alerted; the rest moves on."""
        await self._mark([entry], ["refused"], error)
        self._metrics.relay_error("refused")
        log.error("ledger refused outbox entry %s: %s", entry.outbox_id, error)

    async def _send(self, group: Sequence[_Entry]) -> list[str]:
        started = time.perf_counter()
        try:
            if group[0].kind == "transaction":
                txs = [_transaction_from(e.reference, e.payload) for e in group]
                committed = await self._backend.commit(txs)
                return ["duplicate" if c is CommitOutcome.DUPLICATE else "committed"
                        for c in committed]
            await self._backend.set_account_metadata(
                [AccountMetadata(e.payload["address"], e.payload["metadata"]) for e in group])
            return ["committed"] * len(group)
        finally:
            self._metrics.backend_latency(group[0].kind, time.perf_counter() - started)

    async def _retry_later(self, head: _Entry, error: str, kind: str = "unavailable") -> float:
        self._failures += 1
        self._metrics.relay_error(kind)
        self._metrics.relay_retry()
        backoff = min(BACKOFF_MAX_S, BACKOFF_MIN_S * 2.0 ** min(head.attempts, 30))
        delay = backoff * self._rng.uniform(0.5, 1.0)
        async with self._pool.acquire() as conn:
            await conn.execute(
                """UPDATE ledger_outbox SET attempts = attempts + 1, last_error = $2,
                       next_attempt_at = $3 WHERE outbox_id = $1""",
                head.outbox_id, error[:500], self._clock() + dt.timedelta(seconds=delay),
            )
        log.warning("ledger %s (%s); retrying outbox %s in %.1fs", kind, error,
                    head.outbox_id, delay)
        return delay

    async def _mark(self, group: Sequence[_Entry], outcomes: Sequence[str],
                    error: str | None) -> None:
        now = self._clock()
        async with self._pool.acquire() as conn:
            await conn.executemany(
                """UPDATE ledger_outbox SET sent_at = $2, outcome = $3, last_error = $4,
                       attempts = attempts + 1
                   WHERE outbox_id = $1 AND sent_at IS NULL""",
                [(e.outbox_id, now, outcome, error) for e, outcome in zip(group, outcomes,
                                                                          strict=False)],
            )

    async def pending_count(self) -> int:
        async with self._pool.acquire() as conn:
            count: int = await conn.fetchval(
                "SELECT count(*) FROM ledger_outbox WHERE sent_at IS NULL")
        return count

    async def _report_state(self) -> None:
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                """SELECT count(*) AS pending, min(created_at) AS oldest
                   FROM ledger_outbox WHERE sent_at IS NULL""")
        assert row is not None
        oldest = row["oldest"]
        age = 0.0 if oldest is None else max(0.0, (self._clock() - oldest).total_seconds())
        self._metrics.outbox_state(row["pending"], age)


def _runs_of_same_kind(entries: Sequence[_Entry]) -> list[list[_Entry]]:
    """Consecutive entries of one kind form one backend call (a bulk), order kept."""
    runs: list[list[_Entry]] = []
    for entry in entries:
        if runs and runs[-1][0].kind == entry.kind:
            runs[-1].append(entry)
        else:
            runs.append([entry])
    return runs
