"""The `local` backend: the journal, balances and accounts live in the daemon's PostgreSQL."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import asyncpg

from ledger.accounts import InvalidAddress, validate_address
from ledger.backend import (
    AccountMetadata,
    CommitOutcome,
    CommittedTransaction,
    LedgerRefused,
    LedgerTransaction,
    LedgerUnavailable,
    Posting,
)

_OUTAGE = (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError)
# What PostgreSQL answers about the entry itself (a value the journal's columns cannot hold, a
# constraint it breaks): the same entry fails the same way every time, so it is refused, not
# retried. Formance takes amounts up to uint256, the journal numeric(38, 0) (migration 0003).
_ENTRY_FAULT = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)
MAX_AMOUNT = 10 ** 38 - 1


class LocalLedger:
    """Double-entry journal in `ledger_transaction` / `ledger_posting` with running balances."""

    name = "local"

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def commit(self, transactions: Sequence[LedgerTransaction]) -> list[CommitOutcome]:
        outcomes = []
        tx: LedgerTransaction | None = None
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                for tx in transactions:
                    outcomes.append(await self._book(conn, tx))
        except _OUTAGE as exc:
            raise LedgerUnavailable(f"local journal: {type(exc).__name__}") from None
        except _ENTRY_FAULT as exc:
            # The whole call was rolled back; the relay resends a bulk entry by entry, so only
            # the entry at fault ends refused.
            where = "" if tx is None else f"{tx.reference}: "
            raise LedgerRefused(f"{where}local journal refused it: {type(exc).__name__}:"
                                f" {exc}") from None
        return outcomes

    async def _book(self, conn: Any, tx: LedgerTransaction) -> CommitOutcome:
        if not tx.postings:
            raise LedgerRefused(f"{tx.reference}: a transaction needs postings")
        for posting in tx.postings:
            try:
                validate_address(posting.source)
                validate_address(posting.destination)
            except InvalidAddress as exc:
                raise LedgerRefused(f"{tx.reference}: {exc}") from None
            if posting.amount <= 0:
                raise LedgerRefused(f"{tx.reference}: amounts must be positive")
            if posting.amount > MAX_AMOUNT:
                raise LedgerRefused(
                    f"{tx.reference}: {posting.amount} {posting.asset} does not fit the local"
                    " journal's numeric(38, 0)")
        transaction_id = await conn.fetchval(
            """INSERT INTO ledger_transaction (reference, metadata, timestamp)
               VALUES ($1, $2, $3) ON CONFLICT (reference) DO NOTHING
               RETURNING transaction_id""",
            tx.reference, dict(tx.metadata), tx.timestamp or dt.datetime.now(dt.UTC),
        )
        if transaction_id is None:
            # A resend is a duplicate only if the journal holds these very postings under the
            # reference (as the formance backend checks); anything else is another entry.
            held = await conn.fetch(
                """SELECT p.source, p.destination, p.amount, p.asset
                   FROM ledger_transaction t JOIN ledger_posting p USING (transaction_id)
                   WHERE t.reference = $1 ORDER BY p.ordinal""", tx.reference)
            if tuple(Posting(r["source"], r["destination"], int(r["amount"]), r["asset"])
                     for r in held) != tx.postings:
                raise LedgerRefused(
                    f"the local journal holds reference {tx.reference} with other postings")
            return CommitOutcome.DUPLICATE
        await conn.executemany(
            """INSERT INTO ledger_posting (transaction_id, ordinal, source, destination, amount,
                   asset) VALUES ($1, $2, $3, $4, $5, $6)""",
            [(transaction_id, n, p.source, p.destination, p.amount, p.asset)
             for n, p in enumerate(tx.postings)],
        )
        # Sorted so two transactions touching the same accounts lock them in one order.
        moves: dict[tuple[str, str], tuple[int, int]] = {}
        for p in tx.postings:
            out_in = moves.get((p.source, p.asset), (0, 0))
            moves[(p.source, p.asset)] = (out_in[0] + p.amount, out_in[1])
            out_in = moves.get((p.destination, p.asset), (0, 0))
            moves[(p.destination, p.asset)] = (out_in[0], out_in[1] + p.amount)
        await conn.executemany(
            """INSERT INTO ledger_balance (address, asset, output, input) VALUES ($1, $2, $3, $4)
               ON CONFLICT (address, asset) DO UPDATE
               SET output = ledger_balance.output + EXCLUDED.output,
                   input = ledger_balance.input + EXCLUDED.input""",
            [(address, asset, out, inp) for (address, asset), (out, inp) in sorted(moves.items())],
        )
        # The accounts a posting names exist from then on (one statement for all of them; an
        # existing account is left as it is, as merging no metadata into it would).
        await conn.execute(
            """INSERT INTO ledger_account (address, metadata, created_at, updated_at)
               SELECT address, '{}'::jsonb, $2, $2 FROM unnest($1::text[]) AS a(address)
               ON CONFLICT (address) DO NOTHING""",
            sorted({address for address, _ in moves}), tx.timestamp or dt.datetime.now(dt.UTC))
        return CommitOutcome.COMMITTED

    @staticmethod
    async def _ensure(conn: Any, address: str, metadata: dict[str, str],
                      now: dt.datetime) -> None:
        await conn.execute(
            """INSERT INTO ledger_account (address, metadata, created_at, updated_at)
               VALUES ($1, $2, $3, $3)
               ON CONFLICT (address) DO UPDATE
               SET metadata = ledger_account.metadata || EXCLUDED.metadata,
                   updated_at = CASE WHEN EXCLUDED.metadata = '{}'::jsonb
                                     THEN ledger_account.updated_at
                                     ELSE EXCLUDED.updated_at END""",
            validate_address(address), metadata, now,
        )

    async def set_account_metadata(self, entries: Sequence[AccountMetadata]) -> None:
        now = dt.datetime.now(dt.UTC)
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                for entry in entries:
                    await self._ensure(conn, entry.address, dict(entry.metadata), now)
        except _OUTAGE as exc:
            raise LedgerUnavailable(f"local journal: {type(exc).__name__}") from None

    async def balances(self, address: str) -> dict[str, int]:
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT asset, input - output AS balance FROM ledger_balance WHERE address = $1",
                validate_address(address))
        return {r["asset"]: int(r["balance"]) for r in rows}

    async def balances_by_prefix(self, prefix: str) -> dict[str, dict[str, int]]:
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                """SELECT address, asset, input - output AS balance FROM ledger_balance
                   WHERE starts_with(address, $1) ORDER BY address, asset""", prefix)
        found: dict[str, dict[str, int]] = {}
        for r in rows:
            found.setdefault(r["address"], {})[r["asset"]] = int(r["balance"])
        return found

    async def account(self, address: str) -> tuple[dict[str, str], dict[str, int]] | None:
        async with self._pool.acquire() as conn:
            metadata = await conn.fetchval(
                "SELECT metadata FROM ledger_account WHERE address = $1",
                validate_address(address))
        if metadata is None:
            return None
        return dict(metadata), await self.balances(address)

    async def transactions(self, *, address: str | None, reference: str | None, limit: int,
                           offset: int) -> tuple[list[CommittedTransaction], int]:
        where = """($1::text IS NULL OR t.reference = $1)
                   AND ($2::text IS NULL OR EXISTS (
                       SELECT 1 FROM ledger_posting p WHERE p.transaction_id = t.transaction_id
                       AND (p.source = $2 OR p.destination = $2)))"""
        async with self._pool.acquire() as conn:
            total = await conn.fetchval(
                f"SELECT count(*) FROM ledger_transaction t WHERE {where}",  # noqa: S608
                reference, address)
            rows = await conn.fetch(
                f"""SELECT t.transaction_id, t.reference, t.metadata, t.timestamp,
                           (SELECT json_agg(json_build_array(p.source, p.destination,
                                   p.amount::text, p.asset) ORDER BY p.ordinal)
                            FROM ledger_posting p WHERE p.transaction_id = t.transaction_id)
                           AS postings
                    FROM ledger_transaction t WHERE {where}
                    ORDER BY t.transaction_id DESC LIMIT $3 OFFSET $4""",  # noqa: S608
                reference, address, limit, offset)
        return [
            CommittedTransaction(
                reference=r["reference"], transaction_id=r["transaction_id"],
                postings=tuple(Posting(s, d, int(a), asset) for s, d, a, asset in r["postings"]),
                metadata=dict(r["metadata"]), timestamp=r["timestamp"])
            for r in rows
        ], int(total)

    async def check(self) -> None:
        try:
            async with self._pool.acquire() as conn:
                await conn.fetchval("SELECT count(*) FROM ledger_transaction")
        except _OUTAGE as exc:
            raise LedgerUnavailable(f"local journal: {type(exc).__name__}") from None

    async def close(self) -> None:
        return None
