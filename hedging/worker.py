"""The hedge worker (IMMEDIATE mode): turns each client fill's hedge job into IOC limit orders.

One job at a time is claimed with `FOR UPDATE SKIP LOCKED` and a lease (`claimed_by`,
`claimed_until`), so several workers (replicas) share the jobs and each job has one worker.
For each plan leg with something left to do, the worker

1. records the hedge order (status SENT, deterministic client order id) and COMMITS;
2. sends it to the LP through the `ExecutionVenue` protocol;
3. in ONE transaction records the answer, enqueues the hedge_fill postings (DESIGN §7) and adds
   the net progress to the job.

An order whose outcome is unknown (VenueTimeout / VenueUnavailable, or a crash between 1 and 3)
stays SENT/UNKNOWN; before anything new is sent for its job, the worker asks the venue about its
client order id. On start every such order is resolved first. A remainder re-routes on the same
legs at the next attempt (with backoff) up to `max_attempts`; then the job is FAILED.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol, cast

import asyncpg

from hedging import policy
from ledger.accounts import dealer_account, exchange_account
from ledger.assets import Asset, ScaleTable, UnknownAsset, minor_paid_by_dealer
from ledger.backend import LedgerTransaction, Posting
from ledger.outbox import enqueue_transaction
from ledger.postings import FEE_REFERENCE_SUFFIX, EntryKind, hedge_fill
from venues.base import (
    ExecutionVenue,
    OrderRequest,
    OrderState,
    OrderType,
    Side,
    TimeInForce,
    UnknownOrder,
    VenueAccount,
    VenueError,
    VenueTimeout,
    VenueUnavailable,
    split_symbol,
)

log = logging.getLogger(__name__)

Clock = Callable[[], dt.datetime]


class ExecutionVenues(Protocol):
    def execution(self, venue: str) -> ExecutionVenue: ...


class HedgeMetrics(Protocol):
    def hedge_order(self, venue: str, status: str) -> None: ...

    def hedge_first_order_latency(self, seconds: float) -> None: ...

    def hedge_open_jobs(self, count: int) -> None: ...


@dataclass(frozen=True, slots=True)
class _Job:
    job_id: uuid.UUID
    dealer_account_id: uuid.UUID
    trade_order_id: uuid.UUID
    symbol: str
    side: str
    quantity: Decimal
    plan: dict[str, Any]
    attempts: int
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class _Route:
    venue: str
    account: VenueAccount
    price: Decimal
    min_quantity: Decimal
    min_notional: Decimal


_JOB_COLUMNS = ("job_id, dealer_account_id, trade_order_id, symbol, side, quantity, plan, "
                "attempts, created_at")
_OPEN = "('SENT', 'UNKNOWN')"


class HedgeWorker:
    def __init__(self, pool: asyncpg.Pool, venues: ExecutionVenues, scales: ScaleTable,
                 metrics: HedgeMetrics, clock: Clock, *, poll_interval_s: float = 0.1,
                 max_attempts: int = 3, lease_s: float = 30.0, backoff_s: float = 0.2,
                 unknown_grace_s: float = 5.0, worker_id: str | None = None) -> None:
        self._pool = pool
        self._venues = venues
        self._scales = scales
        self._metrics = metrics
        self._clock = clock
        self._poll_interval_s = poll_interval_s
        self._max_attempts = max_attempts
        self._lease = dt.timedelta(seconds=lease_s)
        self._backoff_s = backoff_s
        self._unknown_grace = dt.timedelta(seconds=unknown_grace_s)
        self.worker_id = worker_id or f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self._task is None:
            self._stopping.clear()
            self._task = asyncio.create_task(self._run(), name=f"hedge-worker-{self.worker_id}")

    async def stop(self, grace_s: float = 5.0) -> None:
        """Finish the current step (up to `grace_s`), then stop; claims are released."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=grace_s)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(Exception):
            async with self._pool.acquire() as conn:
                await conn.execute(
                    """UPDATE hedge_job SET claimed_by = NULL, claimed_until = NULL
                       WHERE claimed_by = $1""", self.worker_id)

    async def _run(self) -> None:
        try:
            await self.recover()
        except Exception:
            log.exception("hedge recovery failed; retried job by job")
        while not self._stopping.is_set():
            try:
                worked = await self.run_once()
            except Exception:
                log.exception("hedge worker pass failed")
                worked = False
            if not worked:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), self._poll_interval_s)

    # ------------------------------------------------------------ passes

    async def recover(self) -> int:
        """Resolve every in-flight (SENT/UNKNOWN) order of unclaimed jobs; answers how many
        jobs were looked at. Nothing new is sent."""
        seen: set[uuid.UUID] = set()
        while not self._stopping.is_set():
            job = await self._claim(only_open_orders=True, exclude=seen)
            if job is None:
                break
            seen.add(job.job_id)
            try:
                await self._resolve_open(job)
            finally:
                await self._release(job.job_id, backoff_s=0)
        return len(seen)

    async def run_once(self) -> bool:
        """Claim and work one job; False when there was none."""
        await self._report_open_jobs()
        job = await self._claim(only_open_orders=False)
        if job is None:
            return False
        backoff = 0.0
        try:
            backoff = await self._work(job)
        except Exception as exc:
            log.exception("hedge job %s failed this pass", job.job_id)
            backoff = self._backoff_s * max(job.attempts, 1)
            with contextlib.suppress(Exception):
                async with self._pool.acquire() as conn:
                    await conn.execute("UPDATE hedge_job SET last_error = $2 WHERE job_id = $1",
                                       job.job_id, f"{type(exc).__name__}: {exc}"[:500])
        finally:
            await self._release(job.job_id, backoff_s=backoff)
        return True

    # ------------------------------------------------------------ claims

    async def _claim(self, *, only_open_orders: bool,
                     exclude: set[uuid.UUID] | None = None) -> _Job | None:
        now = self._clock()
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"""SELECT {_JOB_COLUMNS} FROM hedge_job j
                    WHERE status IN ('PENDING', 'IN_PROGRESS')
                      AND (claimed_until IS NULL OR claimed_until < $1)
                      AND NOT (job_id = ANY($2::uuid[]))
                      AND (NOT $3::boolean OR EXISTS (SELECT 1 FROM hedge_order o
                           WHERE o.job_id = j.job_id AND o.status IN {_OPEN}))
                    ORDER BY EXISTS (SELECT 1 FROM hedge_order o WHERE o.job_id = j.job_id
                                     AND o.status IN {_OPEN}) DESC, created_at
                    LIMIT 1 FOR UPDATE SKIP LOCKED""",  # noqa: S608
                now, list(exclude or ()), only_open_orders)
            if row is None:
                return None
            await conn.execute(
                """UPDATE hedge_job SET status = 'IN_PROGRESS', claimed_by = $2,
                       claimed_until = $3, updated_at = $4 WHERE job_id = $1""",
                row["job_id"], self.worker_id, now + self._lease, now)
        plan = row["plan"]
        if isinstance(plan, str):  # a pool without the jsonb codec
            plan = json.loads(plan)
        return _Job(row["job_id"], row["dealer_account_id"], row["trade_order_id"],
                    row["symbol"], row["side"], Decimal(row["quantity"]),
                    plan if isinstance(plan, dict) else {}, int(row["attempts"]),
                    row["created_at"])

    async def _release(self, job_id: uuid.UUID, *, backoff_s: float) -> None:
        until = self._clock() + dt.timedelta(seconds=backoff_s) if backoff_s > 0 else None
        async with self._pool.acquire() as conn:
            await conn.execute(
                """UPDATE hedge_job SET claimed_by = NULL, claimed_until = $3
                   WHERE job_id = $1 AND claimed_by = $2""", job_id, self.worker_id, until)

    async def _report_open_jobs(self) -> None:
        async with self._pool.acquire() as conn:
            count = await conn.fetchval(
                "SELECT count(*) FROM hedge_job WHERE status IN ('PENDING', 'IN_PROGRESS')")
        self._metrics.hedge_open_jobs(int(count))

    # ------------------------------------------------------------ one job

    async def _work(self, job: _Job) -> float:
        """One pass over a claimed job; answers the backoff before its next pass."""
        if not await self._resolve_open(job):
            return self._backoff_s  # an outcome is still unknown: nothing new is sent
        legs = policy.plan_legs(job.plan)
        lot = Decimal(str(job.plan.get("lotSize") or "0"))
        async with self._pool.acquire() as conn:
            filled, progress = await self._fills_by_leg(cast(asyncpg.Connection, conn),
                                                        job.job_id)
            slippage = Decimal(str(await conn.fetchval(
                "SELECT coalesce(config->>'slippageToleranceBps', '0') FROM dealer "
                "WHERE dealer_account_id = $1", job.dealer_account_id) or "0"))
            routes = {leg.index: await self._route(cast(asyncpg.Connection, conn), job, leg,
                                                   slippage) for leg in legs}
        total_left = policy.round_to_lot(job.quantity - sum(progress.values(), Decimal(0)), lot)
        if total_left <= 0:
            await self._finish(job, policy.HEDGED, None)
            return 0.0

        def sendable(index: int, quantity: Decimal) -> bool:
            route = routes[index]
            return quantity >= route.min_quantity and quantity * route.price >= route.min_notional

        orders = policy.allocate(legs, filled, total_left, lot, sendable)
        if not orders:
            await self._finish(job, policy.HEDGED,
                               f"residual {total_left} below the LP venues' minimum order size")
            return 0.0
        if job.attempts >= self._max_attempts:
            await self._finish(job, policy.FAILED,
                               f"{total_left} {job.symbol} left unhedged after "
                               f"{job.attempts} attempt(s)")
            return 0.0
        attempt = job.attempts + 1
        for leg in legs:
            quantity = orders.get(leg.index)
            if quantity is None:
                continue
            if self._stopping.is_set():
                break
            if not await self._send_leg(job, attempt, leg, quantity, routes[leg.index]):
                return self._backoff_s  # unknown outcome: resolve on the next pass
        return self._backoff_s * attempt

    async def _route(self, conn: asyncpg.Connection, job: _Job, leg: policy.PlanLeg,
                     slippage_bps: Decimal) -> _Route:
        account = await conn.fetchrow(
            """SELECT venue, external_trading_account_id, venue_ref FROM trading_account
               WHERE trading_account_id = $1""", leg.trading_account_id)
        if account is None:
            raise LookupError(f"no LP trading account {leg.trading_account_id}")
        rules = await conn.fetchrow(
            """SELECT tick_size, min_quantity, min_notional FROM instrument
               WHERE venue = $1 AND symbol = $2""", account["venue"], job.symbol)
        tick = None if rules is None else Decimal(rules["tick_size"])
        return _Route(
            venue=account["venue"],
            account=VenueAccount(leg.trading_account_id, account["external_trading_account_id"],
                                 account["venue_ref"]),
            price=policy.limit_price(job.side, leg.worst_price, slippage_bps, tick),
            min_quantity=Decimal(0) if rules is None else Decimal(rules["min_quantity"]),
            min_notional=Decimal(0) if rules is None else Decimal(rules["min_notional"]))

    async def _fills_by_leg(self, conn: asyncpg.Connection, job_id: uuid.UUID
                            ) -> tuple[dict[int, Decimal], dict[int, Decimal]]:
        """Per leg: the quantity filled, and the net progress (less base fees on a BUY)."""
        rows = await conn.fetch(
            """SELECT leg, filled_quantity, fee_asset, fee_amount, side, symbol
               FROM hedge_order WHERE job_id = $1""", job_id)
        filled: dict[int, Decimal] = {}
        progress: dict[int, Decimal] = {}
        for r in rows:
            base, _ = split_symbol(r["symbol"])
            fee = Decimal(r["fee_amount"] or 0) if r["fee_asset"] == base else Decimal(0)
            quantity = Decimal(r["filled_quantity"])
            filled[r["leg"]] = filled.get(r["leg"], Decimal(0)) + quantity
            progress[r["leg"]] = progress.get(r["leg"], Decimal(0)) + policy.net_progress(
                r["side"], quantity, fee)
        return filled, progress

    async def _finish(self, job: _Job, status: str, error: str | None) -> None:
        async with self._pool.acquire() as conn:
            await conn.execute(
                """UPDATE hedge_job SET status = $2, last_error = coalesce($3, last_error),
                       updated_at = $4 WHERE job_id = $1""",
                job.job_id, status, error, self._clock())
        if status == policy.FAILED:
            log.warning("hedge job %s FAILED: %s", job.job_id, error)

    async def _send_leg(self, job: _Job, attempt: int, leg: policy.PlanLeg, quantity: Decimal,
                        route: _Route) -> bool:
        """Record, send, record the answer; False when the outcome is unknown."""
        coid = policy.client_order_id(job.job_id, attempt, leg.index)
        now = self._clock()
        venue, price = route.venue, route.price
        async with self._pool.acquire() as conn, conn.transaction():
            inserted = await conn.fetchval(
                """INSERT INTO hedge_order (client_order_id, job_id, attempt, leg,
                       trading_account_id, venue, symbol, side, quantity, limit_price,
                       status, created_at, updated_at)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'SENT', $11, $11)
                   ON CONFLICT DO NOTHING RETURNING client_order_id""",
                coid, job.job_id, attempt, leg.index, leg.trading_account_id, venue,
                job.symbol, job.side, quantity, price, now)
            if inserted is None:  # already recorded: its outcome is resolved, never resent
                return True
            first = await conn.fetchval(
                """UPDATE hedge_job SET attempts = greatest(attempts, $2),
                       first_order_at = coalesce(first_order_at, $3),
                       claimed_until = $4, updated_at = $3
                   WHERE job_id = $1 RETURNING first_order_at = $3""",
                job.job_id, attempt, now, now + self._lease)
        if first:
            self._metrics.hedge_first_order_latency(
                max((now - job.created_at).total_seconds(), 0.0))
        self._metrics.hedge_order(venue, policy.SENT)
        venue_account = route.account
        request = OrderRequest(client_order_id=coid, symbol=job.symbol, side=Side(job.side),
                               order_type=OrderType.LIMIT, quantity=quantity, limit_price=price,
                               time_in_force=TimeInForce.IOC)
        try:
            state = await self._venues.execution(venue).submit_order(venue_account, request)
        except (VenueTimeout, VenueUnavailable) as exc:
            await self._mark_unknown(coid, venue, f"submit: {exc}")
            return False
        except VenueError as exc:
            await self._record_refusal(coid, venue, str(exc))
            return True
        await self._record(job, coid, venue, state)
        return True

    # ------------------------------------------------------------ in-flight orders

    async def _resolve_open(self, job: _Job) -> bool:
        """Ask the venue about every SENT/UNKNOWN order of the job; True when none is left."""
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                f"""SELECT o.client_order_id, o.venue, o.trading_account_id, o.created_at,
                           t.external_trading_account_id, t.venue_ref
                    FROM hedge_order o JOIN trading_account t USING (trading_account_id)
                    WHERE o.job_id = $1 AND o.status IN {_OPEN}
                    ORDER BY o.attempt, o.leg""",  # noqa: S608
                job.job_id)
        resolved = True
        for r in rows:
            coid, venue = r["client_order_id"], r["venue"]
            account = VenueAccount(r["trading_account_id"], r["external_trading_account_id"],
                                   r["venue_ref"])
            execution = self._venues.execution(venue)
            try:
                state = await execution.order_status(account, coid)
                if not state.status.is_closed:
                    state = await execution.cancel_order(account, coid)
            except UnknownOrder:
                if self._clock() - r["created_at"] < self._unknown_grace:
                    await self._mark_unknown(coid, venue, "the venue does not know it (yet)")
                    resolved = False
                else:  # never reached the venue: nothing was traded
                    await self._record_refusal(coid, venue, "the venue never received it")
                continue
            except VenueError as exc:
                await self._mark_unknown(coid, venue, f"status: {exc}")
                resolved = False
                continue
            await self._record(job, coid, venue, state)
        return resolved

    async def _mark_unknown(self, coid: str, venue: str, error: str) -> None:
        async with self._pool.acquire() as conn:
            changed = await conn.fetchval(
                """UPDATE hedge_order SET status = 'UNKNOWN', reject_reason = $2, updated_at = $3
                   WHERE client_order_id = $1 AND status = 'SENT' RETURNING 1""",
                coid, error[:500], self._clock())
        if changed:
            self._metrics.hedge_order(venue, policy.UNKNOWN)
        log.warning("hedge order %s outcome unknown: %s", coid, error)

    async def _record_refusal(self, coid: str, venue: str, reason: str) -> None:
        async with self._pool.acquire() as conn:
            changed = await conn.fetchval(
                f"""UPDATE hedge_order SET status = 'REJECTED', reject_reason = $2,
                        updated_at = $3
                    WHERE client_order_id = $1 AND status IN {_OPEN} RETURNING 1""",  # noqa: S608
                coid, reason[:500], self._clock())
        if changed:
            self._metrics.hedge_order(venue, policy.REJECTED)

    async def _record(self, job: _Job, coid: str, venue: str, state: OrderState) -> None:
        """The venue's answer, its postings and the job's progress, in one transaction."""
        status = policy.order_status_of(state)
        now = self._clock()
        fees = policy.fees_by_asset(state.executions)
        base_code, quote_code = split_symbol(job.symbol)
        fee_in_base = policy.base_fee(state.executions, base_code)
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"""SELECT trading_account_id FROM hedge_order
                    WHERE client_order_id = $1 AND status IN {_OPEN} FOR UPDATE""",  # noqa: S608
                coid)
            if row is None:
                return  # recorded already
            fee_asset = next(iter(fees), None)
            await conn.execute(
                """UPDATE hedge_order SET status = $2, filled_quantity = $3, avg_price = $4,
                       fee_asset = $5, fee_amount = $6, reject_reason = $7, updated_at = $8
                   WHERE client_order_id = $1""",
                coid, status, state.filled_quantity, state.average_price,
                base_code if fee_in_base else fee_asset,
                fee_in_base if fee_in_base else (fees[fee_asset] if fee_asset else None),
                state.reject_reason, now)
            if state.filled_quantity > 0:
                for tx in self._postings(job, coid, row["trading_account_id"], state,
                                         base_code, quote_code, fees, now):
                    await enqueue_transaction(cast(asyncpg.Connection, conn), tx, now)
                await conn.execute(
                    """UPDATE hedge_job SET hedged_quantity = hedged_quantity + $2,
                           updated_at = $3 WHERE job_id = $1""",
                    job.job_id, policy.net_progress(job.side, state.filled_quantity,
                                                    fee_in_base), now)
        self._metrics.hedge_order(venue, status)

    def _postings(self, job: _Job, coid: str, lp: uuid.UUID, state: OrderState,
                  base_code: str, quote_code: str, fees: dict[str, Decimal],
                  now: dt.datetime) -> list[LedgerTransaction]:
        base, quote = self._scales.asset(base_code), self._scales.asset(quote_code)
        assets: dict[str, Asset] = {}
        for code in fees:
            try:
                assets[code] = self._scales.asset(code)
            except UnknownAsset:
                log.error("hedge order %s: fee in unknown asset %s not booked", coid, code)
        fee_codes = [code for code in fees if code in assets]
        first_fee = (assets[fee_codes[0]], fees[fee_codes[0]]) if fee_codes else None
        reference = f"hedge-{coid}"
        metadata = {"jobId": str(job.job_id), "orderId": str(job.trade_order_id),
                    "clientOrderId": coid, "venueOrderId": state.venue_order_id}
        average = state.average_price or Decimal(0)
        txs = list(hedge_fill(lp, job.dealer_account_id, job.side, base, quote,
                              state.filled_quantity, average, first_fee, reference=reference,
                              metadata=metadata, quote_amount=policy.quote_amount(
                                  state.executions), timestamp=now))
        dealer, exchange = dealer_account(job.dealer_account_id), exchange_account(lp)
        for code in fee_codes[1:]:  # a second fee asset: its own fee transaction
            units = minor_paid_by_dealer(fees[code], assets[code])
            if units:
                txs.append(LedgerTransaction(
                    reference=f"{reference}{FEE_REFERENCE_SUFFIX}:{code}",
                    postings=(Posting(dealer, exchange, units, str(assets[code])),),
                    timestamp=now,
                    metadata={**metadata, "kind": str(EntryKind.FEE),
                              "fillReference": reference}))
        return txs
