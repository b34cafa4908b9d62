"""The hedge worker: turns client fills' hedge jobs into IOC limit orders on the linked LPs.

Jobs are hedged by *lane* (one dealer, one symbol). A round of a lane:

1. one statement claims a ready lane and its jobs (`FOR UPDATE SKIP LOCKED`, then a lease);
2. the jobs' in-flight orders (SENT/UNKNOWN) are resolved by client order id, before anything
   new is sent for them;
3. the round's groups are formed (`policy.form_groups`: IMMEDIATE, one per fill; NETTED, one
   per window) and each group's target is routed across the LPs (`policy.route`);
4. one statement records every order (status SENT, deterministic client order id
   `h-<lead>-<attempt>-<leg>`), checks the LPs (linked, ACTIVE: FOR SHARE), moves the lane's
   carry and gives the lane back, and commits BEFORE anything is sent;
5. the orders are sent (concurrently) while the lane's next round may already be sized; ONE
   transaction then records every answer, enqueues its hedge_fill postings (DESIGN §7) and
   books the progress to the jobs (`policy.allocate`); the jobs are given back.

An order whose outcome is unknown (VenueTimeout, VenueUnavailable, a crash between 4 and 5)
stays SENT/UNKNOWN and its group waits: the next round of its lane asks the venue first. What is
left re-routes at the next attempt on fresh books, with backoff, up to `max_attempts`; then the
group's jobs are FAILED and keep counting as exposure. Several workers (replicas) share the
lanes; a lane, and so each job, is worked by one of them at a time. A worker sizes up to
`concurrency` lanes at once and wakes on `NOTIFY hedge_job` when a job is written. An idle
lane's carry and residuals that an LP would take get a carry job (`hedge_idle_carries`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import datetime as dt
import functools
import json
import logging
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Protocol, cast

import asyncpg
import orjson

from hedging import policy
from hedging.balances import BalanceCache
from hedging.late_fees import record_left_out
from ledger.accounts import exchange_account
from ledger.assets import InvalidAmount, ScaleTable, UnknownAsset, from_minor
from ledger.backend import LedgerTransaction
from ledger.outbox import RepeatedFailures, enqueue_transaction, listening
from ledger.postings import (
    InvalidFill,
    hedge_fill,
    hedge_fill_venue_moves,
    other_fee,
    rounding_kept,
)
from ledger.rounding import PendingRounding
from venues.base import (
    BookSnapshot,
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
from venues.fees import default_fees

log = logging.getLogger(__name__)

Clock = Callable[[], dt.datetime]
Books = Callable[[str, str], BookSnapshot | None]  # venue, symbol → the fresh book, if any
CHANNEL = "hedge_job"
MAX_LEADS_PER_ROUND = 50
CARRY_RECHECK_S = 30.0
LP_CACHE_S = 1.0
_OPEN = "('SENT', 'UNKNOWN')"
_LIVE = "('PENDING', 'IN_PROGRESS')"


class ExecutionVenues(Protocol):
    def execution(self, venue: str) -> ExecutionVenue: ...


class HedgeMetrics(Protocol):
    def hedge_order(self, venue: str, status: str) -> None: ...

    def hedge_first_order_latency(self, seconds: float) -> None: ...

    def hedge_fast_round(self, outcome: str) -> None: ...

    def hedge_carry_jobs_made(self, count: int) -> None: ...

    def hedge_open_jobs(self, count: int) -> None: ...

    def hedge_job_finished(self, status: str, fill_to_final_s: float | None) -> None: ...

    def hedge_slippage_bps(self, venue: str, bps: float) -> None: ...

    def hedge_fee_unbooked(self) -> None: ...


@dataclass(frozen=True, slots=True)
class _Lane:
    dealer_account_id: uuid.UUID
    symbol: str
    mode: str
    window_ms: int
    slippage_bps: Decimal
    max_notional: Decimal | None
    max_exposure: Decimal | None

    @property
    def key(self) -> str:
        return f"{self.dealer_account_id}/{self.symbol}"


@dataclass(frozen=True, slots=True)
class _Claim:
    lane: _Lane
    carry: Decimal  # the lane's, when claimed
    jobs: list[_Job]


@dataclass(frozen=True, slots=True)
class _Job:
    job_id: uuid.UUID
    trade_order_id: uuid.UUID | None  # None: a carry job (see _hedge_idle_carries)
    side: policy.Side
    quantity: Decimal
    hedged: Decimal
    carry_in: Decimal
    residual: bool
    lead: uuid.UUID | None
    attempts: int
    last_attempt: int  # the highest attempt number of its orders
    plan: policy.HedgePlan
    created_at: dt.datetime
    has_open_orders: bool
    first_order_at: dt.datetime | None

    def state(self) -> policy.JobState:
        return policy.JobState(self.job_id, self.side, self.quantity, self.hedged,
                               self.carry_in, self.residual, self.lead, self.attempts)


@dataclass(frozen=True, slots=True)
class _Lp:
    trading_account_id: uuid.UUID
    venue: str
    account: VenueAccount
    taker_fee: Decimal
    tick_size: Decimal
    lot_size: Decimal
    min_quantity: Decimal
    min_notional: Decimal


@dataclass(slots=True)
class _Sent:
    """One order of a round: what was recorded, then what the venue answered."""

    coid: str
    lead: uuid.UUID
    lp: _Lp
    symbol: str
    side: str
    quantity: Decimal
    limit: Decimal
    state: OrderState | None = None
    refusal: str | None = None
    unknown: str | None = None


class _RoundUndone(Exception):
    """A round's record refused a group after writing what it netted against it: undone."""


class _LeaseLost(Exception):
    """The round's lease on its lane or jobs ran out and another worker took them over."""


class _Unbookable(Exception):
    """A venue's answer the ledger cannot book (a fill at price 0, an amount finer than the
    asset's scale, an unknown asset): its order was left in flight, nothing of it written."""


@dataclass(slots=True)
class _Plan:
    """A group of the round, as sent."""

    group: policy.Group
    attempt: int  # numbers its orders (and their client order ids): never used twice
    tries: int  # counted against max_attempts: a retried job starts again from 1
    reference: Decimal | None  # the plan VWAP executions are compared with (slippage)
    orders: list[_Sent] = field(default_factory=list)
    # carry the lead takes over (its side, either way): the lane's carry left by the groups
    # routed before it in the round, and its own orders' expected lot rounding. Booked when the
    # orders are recorded, so the next group (or round) makes up for it even while these
    # orders are still in flight.
    carry_in: Decimal = Decimal(0)


_JOB_COLUMNS = """j.job_id, j.trade_order_id, j.side, j.quantity, j.hedged_quantity, j.carry_in,
    j.residual, j.lead_job_id, j.attempts, j.plan, j.created_at, j.first_order_at,
    EXISTS (SELECT 1 FROM hedge_order o WHERE o.job_id = j.job_id
            AND o.status IN ('SENT', 'UNKNOWN')) AS has_open_orders,
    (SELECT coalesce(max(o.attempt), 0) FROM hedge_order o WHERE o.job_id = j.job_id)
        AS last_attempt"""


def _job(row: asyncpg.Record) -> _Job:
    plan = row["plan"]
    if isinstance(plan, str):  # a connection without the jsonb codec
        plan = json.loads(plan)
    return _Job(row["job_id"], row["trade_order_id"], row["side"], Decimal(row["quantity"]),
                Decimal(row["hedged_quantity"]), Decimal(row["carry_in"]), row["residual"],
                row["lead_job_id"], int(row["attempts"]), int(row["last_attempt"]),
                policy.parse_plan(plan if isinstance(plan, dict) else {}), row["created_at"],
                row["has_open_orders"], row["first_order_at"])


def _lane(dealer_account_id: uuid.UUID, symbol: str, config: object) -> _Lane:
    """The lane and its dealer's hedging configuration."""
    if isinstance(config, str):
        config = json.loads(config)
    settings = config if isinstance(config, dict) else {}
    limits = settings.get("maxUnhedgedExposure") or {}
    base, _ = split_symbol(symbol)
    notional = settings.get("maxUnhedgedNotional")
    return _Lane(dealer_account_id, symbol, str(settings.get("hedgeMode") or "IMMEDIATE"),
                 int(settings.get("hedgeNettingWindowMs") or 1000),
                 Decimal(str(settings.get("slippageToleranceBps") or "0")),
                 Decimal(str(notional)) if notional else None,
                 Decimal(str(limits[base])) if base in limits else None)


@dataclass(frozen=True, slots=True)
class _Notice:
    """A new job, as its NOTIFY carries it (migration 0008)."""

    lane: _Lane
    job: _Job
    carry: Decimal  # the lane's, as the job's insert read it


def _notice(payload: str) -> _Notice | None:
    """The job a notice carries; None for a notice that names only a dealer (or is unreadable:
    the workers then claim the dealer's lanes, as for any notice)."""
    if not payload.startswith("{"):
        return None
    try:
        notice = orjson.loads(payload)
        lane = _lane(uuid.UUID(notice["dealerAccountId"]), str(notice["symbol"]),
                     notice.get("config"))
        plan = notice.get("plan")
        fill = notice.get("tradeOrderId")
        job = _Job(uuid.UUID(notice["jobId"]), None if fill is None else uuid.UUID(fill),
                   notice["side"], Decimal(notice["quantity"]), Decimal(0), Decimal(0), False,
                   None, 0, 0, policy.parse_plan(plan if isinstance(plan, dict) else {}),
                   dt.datetime.fromisoformat(notice["createdAt"]), False, None)
        carry = Decimal(notice["carry"])
    except (KeyError, TypeError, ValueError, ArithmeticError, orjson.JSONDecodeError):
        log.warning("unreadable hedge job notice: %.200s", payload)
        return None
    return _Notice(lane, job, carry)


@dataclass(frozen=True, slots=True)
class InlineHedge:
    """A new job's first hedge, sized by the accepting process before the fill is written, to
    be recorded by the fill's own statement (see `HedgeWorker.plan_inline`): the job as it is
    then (`IN_PROGRESS`, attempt 1, claimed by this worker), its orders (`SENT`) and the move
    of its lane's carry, while the lane is not leased and its carry is still `carry_read`."""

    lane: _Lane
    job_id: uuid.UUID
    created_at: dt.datetime
    carry_read: Decimal
    hedged: Decimal
    carry_in: Decimal
    lane_delta: Decimal
    worker_id: str
    claimed_until: dt.datetime
    plans: tuple[_Plan, ...]
    dust: Decimal

    @property
    def orders(self) -> list[_Sent]:
        return [order for plan in self.plans for order in plan.orders]


class _NotFast(Exception):
    """The one-statement path cannot take this job (it is left to the lane's claim)."""


def _free_orphans(jobs: list[_Job]) -> list[_Job]:
    """Oldest first; a rider whose lead is not among them (it ended) rides no more."""
    ids = {j.job_id for j in jobs}
    jobs = [j if j.lead is None or j.lead in ids else dataclasses.replace(j, lead=None)
            for j in jobs]
    jobs.sort(key=lambda j: (j.created_at, j.job_id))
    return jobs


def _weighted(jobs: Iterable[_Job], value: Callable[[_Job], Decimal | None]) -> Decimal | None:
    pairs = [(job.quantity, v) for job in jobs if (v := value(job)) is not None]
    total = sum((q for q, _ in pairs), Decimal(0))
    if not pairs or total <= 0:
        return None
    return sum((q * v for q, v in pairs), Decimal(0)) / total


class _AfterCommit:
    """What a transaction reports once it commits (metrics, the caller's record of the jobs it
    ended): a transaction rolled back must not have counted its orders or jobs."""

    __slots__ = ("_calls",)

    def __init__(self) -> None:
        self._calls: list[Callable[[], object]] = []

    def add(self, call: Callable[[], object]) -> None:
        self._calls.append(call)

    def mark(self) -> int:
        """Where a savepoint began: `undo(mark)` forgets what it added when it rolls back."""
        return len(self._calls)

    def undo(self, mark: int) -> None:
        del self._calls[mark:]

    def run(self) -> None:
        calls, self._calls = self._calls, []
        for call in calls:
            call()


class HedgeWorker:
    def __init__(self, pool: asyncpg.Pool, venues: ExecutionVenues, scales: ScaleTable,
                 metrics: HedgeMetrics, clock: Clock, *, books: Books | None = None,
                 poll_interval_s: float = 0.1, max_attempts: int = 3, lease_s: float = 10.0,
                 backoff_s: float = 0.2, max_backoff_s: float = 5.0,
                 unknown_grace_s: float = 5.0, concurrency: int = 4,
                 netting_threshold: Decimal = Decimal("0.5"), balance_ttl_s: float = 5.0,
                 worker_id: str | None = None, fast_path: bool = True,
                 carry_check_s: float = 1.0, notice_grace_s: float = 0.1,
                 listen_connect: Callable[[], Awaitable[asyncpg.Connection]] | None = None
                 ) -> None:
        """`listen_connect` opens the connection the worker LISTENs on, its own for as long as
        it lives; without it the worker holds one of the pool's."""
        self._pool = pool
        self._listen_connect = listen_connect
        self._venues = venues
        self._scales = scales
        self._metrics = metrics
        self._clock = clock
        self._books = books
        self._poll_interval_s = poll_interval_s
        self._max_attempts = max_attempts
        self._lease = dt.timedelta(seconds=lease_s)
        self._call_timeout_s = max(lease_s / 2, 0.1)
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._never_received_after = dt.timedelta(seconds=self._call_timeout_s
                                                  + unknown_grace_s)
        self._concurrency = max(concurrency, 1)
        self._netting_threshold = netting_threshold
        self._balances = BalanceCache(balance_ttl_s)
        self._fee_in_base: dict[uuid.UUID, bool] = {}  # learnt from each LP's BUY fills
        self.worker_id = worker_id or f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._rounds: dict[str, asyncio.Task[None]] = {}  # lanes being sized, by lane
        self._deliveries: set[asyncio.Task[None]] = set()  # orders in flight, answers to record
        self._reported_at: dt.datetime | None = None
        self._not_due: dict[str, dt.datetime] = {}  # NETTED lanes whose window is still open
        self._lp_cache: dict[str, tuple[float, list[_Lp]]] = {}
        # the one-statement path for new jobs of idle IMMEDIATE lanes (see _fast_round)
        self._fast_path = fast_path
        self._fast_queue: dict[str, collections.deque[_Notice]] = {}  # after a lane's fast round
        # the lane's carry as the last fast round's statement left it: newer than the carry a
        # queued notice read when its job was inserted (that one may predate earlier rounds)
        self._fast_carry: dict[str, Decimal] = {}
        self._missed = False  # a notice came while its dealer's lane was being sized
        self._notices = 0  # notices received (a round judges its window against those it saw)
        self._recovered = False
        self._carry_check_s = carry_check_s
        # New jobs are their notices' for this long: a poll (no wake-up) does not claim them
        # (it would take a job from the one-statement path sizing it, and make it wait for a
        # claimed round), and they do not keep a younger job from that path.
        self._notice_grace = dt.timedelta(seconds=notice_grace_s)
        self._carry_checked = 0.0  # time.monotonic() of the last look for idle lanes' carry
        self._carry_moved = False  # an answer moved a lane's carry since that look
        # lanes whose net no LP took, with that net and when: not routed again for
        # CARRY_RECHECK_S while the net stays the same (prices move slowly against minimums)
        self._carry_unorderable: dict[str, tuple[Decimal, float]] = {}

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self._task is None:
            self._stopping.clear()
            self._recovered = False  # a restarted worker resolves its lanes' orders first again
            self._task = asyncio.create_task(self._run(), name=f"hedge-worker-{self.worker_id}")

    async def stop(self, grace_s: float = 5.0) -> None:
        """Let running rounds finish (up to `grace_s`), then stop; claims are released."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping.set()
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=grace_s)
        except TimeoutError:
            task.cancel()
            for pending in [*self._rounds.values(), *self._deliveries]:
                pending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._balances.close()
        with contextlib.suppress(Exception):
            async with self._pool.acquire() as conn:
                await conn.execute(
                    """UPDATE hedge_job SET claimed_by = NULL, claimed_until = NULL
                       WHERE claimed_by = $1""", self.worker_id)
                await conn.execute(
                    """UPDATE hedge_lane SET claimed_by = NULL, claimed_until = NULL
                       WHERE claimed_by = $1""", self.worker_id)

    def wake(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        listener = asyncio.create_task(self._listen(), name="hedge-listener")
        # Every linked LP's balances, read while nothing waits for them: the first fill after a
        # start (sized inline by its accept, or by its notice) finds them known.
        warming = asyncio.create_task(self._warm_balances(), name="hedge-balances-warm-up")
        try:
            try:
                await self.recover()
            except Exception:
                log.exception("hedge recovery failed; each lane resolves its orders first")
            self._recovered = True
            woken = True
            failures = RepeatedFailures()
            while not self._stopping.is_set():
                self._wake.clear()
                self._missed = False
                try:
                    await self._report_open_jobs()
                    # a poll leaves the jobs written just now to their notices (the fast path)
                    await self._start_rounds(None if woken else self._notice_grace)
                    if self._carry_due():
                        await self.hedge_idle_carries()
                except Exception as exc:
                    if failures.failed(exc):
                        log.exception("hedge worker pass failed (%d in a row)", failures.count)
                else:
                    if failed := failures.recovered():
                        log.info("hedge worker passes succeed again after %d failed", failed)
                woken = await self._idle()
            while self._rounds or self._deliveries:
                await asyncio.gather(*self._rounds.values(), *self._deliveries,
                                     return_exceptions=True)
        finally:
            listener.cancel()
            warming.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
            with contextlib.suppress(asyncio.CancelledError):
                await warming

    async def _warm_balances(self) -> None:
        try:
            async with self._pool.acquire() as conn:
                rows = await conn.fetch(
                    """SELECT DISTINCT ta.trading_account_id, ta.venue,
                              ta.external_trading_account_id, ta.venue_ref
                       FROM dealer_link l
                       JOIN trading_account ta ON ta.trading_account_id = l.trading_account_id
                       WHERE NOT l.draining AND ta.status = 'ACTIVE'""")
        except Exception:
            log.warning("LP balances not read ahead: the first hedges read them", exc_info=True)
            return
        async def read(row: asyncpg.Record) -> None:
            await self._balances.free(self._venues.execution(row["venue"]), VenueAccount(
                row["trading_account_id"], row["external_trading_account_id"],
                row["venue_ref"]))

        await asyncio.gather(*(read(r) for r in rows), return_exceptions=True)

    async def _idle(self) -> bool:
        """Wait for a wake-up or a netting window's end (True), or the next poll (False)."""
        timeout = self._poll_interval_s
        now = self._clock()
        # a window that closed is claimable again (by this worker or another): forget it
        self._not_due = {key: due for key, due in self._not_due.items() if due > now}
        window_ends = False
        if self._not_due:
            soonest = (min(self._not_due.values()) - now).total_seconds()
            window_ends = soonest < timeout
            timeout = min(timeout, soonest)
        try:
            await asyncio.wait_for(self._wake.wait(), timeout)
        except TimeoutError:
            return window_ends
        return True

    async def _listen(self) -> None:
        """Wake on NOTIFY hedge_job (a job written or put back to PENDING); polls otherwise."""

        def notified(_conn: object, _pid: object, _channel: object, payload: object) -> None:
            self._not_due.clear()  # a new fill may close a netting window early
            self._notices += 1
            notice = _notice(str(payload))
            if notice is not None and self._take_fast(notice):
                return
            dealer = str(notice.lane.dealer_account_id) if notice is not None else str(payload)
            # a lane of this dealer being sized now claims the new job when it is done
            if not any(key.startswith(f"{dealer}/") for key in self._rounds):
                self._wake.set()
            else:
                self._missed = True

        failures = RepeatedFailures()
        while True:
            try:
                async with listening(self._pool, self._listen_connect) as conn:
                    if failures.recovered():
                        log.info("hedge job listener back")
                    lost = asyncio.Event()

                    def closed(*_: object, event: asyncio.Event = lost) -> None:
                        event.set()

                    conn.add_termination_listener(closed)
                    await conn.add_listener(CHANNEL, notified)
                    try:
                        await lost.wait()
                    finally:
                        with contextlib.suppress(Exception):
                            await conn.remove_listener(CHANNEL, notified)
                raise ConnectionError("the listening connection was closed")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if failures.failed(exc):
                    log.warning("hedge job listener lost; polling until it is back (%s)",
                                type(exc).__name__)
                await asyncio.sleep(1.0)

    async def _start_rounds(self, grace: dt.timedelta | None = None) -> None:
        while len(self._rounds) < self._concurrency and not self._stopping.is_set():
            seen = self._notices
            claim = await self._claim(only_open_orders=False, grace=grace)
            if claim is None:
                return
            key = claim.lane.key
            self._rounds[key] = asyncio.create_task(self._round_task(claim, seen),
                                                    name=f"hedge {key}")

    def _take_fast(self, notice: _Notice) -> bool:
        """Start (or queue behind the lane's fast round) the one-statement path for a new job;
        False when it is the lane's claim's to take."""
        key = notice.lane.key
        if (not self._fast_path or not self._recovered or self._task is None
                or self._stopping.is_set() or notice.lane.mode != "IMMEDIATE"):
            return False
        if key in self._fast_queue:  # the lane's round is running: this one is next
            self._fast_queue[key].append(notice)
            return True
        if key in self._rounds:  # a claimed round: the job waits for it, then goes fast
            self._fast_queue[key] = collections.deque([notice])
            return True
        if len(self._rounds) >= self._concurrency:
            return False
        self._fast_queue[key] = collections.deque()
        self._rounds[key] = asyncio.create_task(self._fast_task(notice), name=f"hedge {key}")
        return True

    async def _fast_task(self, notice: _Notice) -> None:
        key = notice.lane.key
        taken = False
        try:
            taken = await self._fast_round(notice)
        except Exception:
            log.exception("hedge fast round of %s failed", key)
        finally:
            self._rounds.pop(key, None)
        self._metrics.hedge_fast_round("taken" if taken else "declined")
        queued = self._fast_queue.get(key)
        if taken and self._next_fast(key):
            return
        self._fast_queue.pop(key, None)  # declined: the queued ones are the claim's too
        self._fast_carry.pop(key, None)
        if not taken or queued or self._missed:
            self._wake.set()  # the lane's claim takes what the fast path could not

    # ------------------------------------------------------------ a fill's own statement

    async def plan_inline(self, conn: asyncpg.Connection, dealer_account_id: uuid.UUID,
                          symbol: str, config: object, job_id: uuid.UUID,
                          trade_order_id: uuid.UUID, side: str, quantity: Decimal,
                          plan: Mapping[str, object], created_at: dt.datetime, carry: Decimal
                          ) -> InlineHedge | None:
        """Size a new job's first hedge for the fill's own statement to record; None when the
        job is the notice's (this worker not running, not an IMMEDIATE lane, a round of the
        lane being sized here, or anything the one-statement path would decline). The caller
        reports the statement's outcome with `inline_written`, whatever it was. `conn` is the
        accept's connection (outside a transaction): what has to be read is read on it."""
        if (not self._fast_path or not self._recovered or self._task is None
                or self._stopping.is_set()):
            return None
        lane = _lane(dealer_account_id, symbol, config)
        if lane.mode != "IMMEDIATE" or lane.key in self._rounds:
            return None
        job = _Job(job_id, trade_order_id, cast(policy.Side, side), quantity, Decimal(0),
                   Decimal(0), False, None, 0, 0, policy.parse_plan(plan), created_at, False,
                   None)
        netting, plans, outcomes, dust = await self._plan_round(lane, [job], carry, conn)
        first = plans[0] if len(plans) == 1 else None
        others = (set(netting.hedged) | set(netting.carry_in)) - {job_id}
        if first is None or not first.orders or outcomes or others:
            self._unspend(plans)
            return None
        lane_delta = (-policy.sign(side) * first.carry_in) + (netting.lane_carry - carry)
        return InlineHedge(
            lane, job_id, created_at, carry, netting.hedged.get(job_id, Decimal(0)),
            netting.carry_in.get(job_id, Decimal(0)) + first.carry_in, lane_delta,
            self.worker_id, created_at + self._lease, (first,), dust)

    def inline_written(self, inline: InlineHedge, written: bool) -> None:
        """The fill's statement committed its hedge (`written`): send the orders and record
        their answers, as after a fast round. Otherwise (the lane was leased, its carry had
        moved, the statement failed) nothing was recorded: the job's notice takes it."""
        if not written:
            self._unspend(inline.plans)
            return
        now = self._clock()
        self._metrics.hedge_first_order_latency(
            max((now - inline.created_at).total_seconds(), 0.0))
        for order in inline.orders:
            self._metrics.hedge_order(order.lp.venue, policy.SENT)
        self._metrics.hedge_fast_round("inline")
        delivery = asyncio.create_task(
            self._deliver(inline.lane, inline.plans, inline.dust, {inline.job_id}, fast=True),
            name=f"hedge orders {inline.lane.key}")
        self._deliveries.add(delivery)
        delivery.add_done_callback(self._deliveries.discard)

    def _next_fast(self, key: str) -> bool:
        """Start the fast round of the lane's next queued notice, sized with the carry the
        lane's last statement left when known; False (the queue ends) when there is none."""
        queued = self._fast_queue.get(key)
        if not queued or self._stopping.is_set():
            self._fast_queue.pop(key, None)
            self._fast_carry.pop(key, None)
            return False
        following = queued.popleft()
        if key in self._fast_carry:
            following = dataclasses.replace(following, carry=self._fast_carry[key])
        self._rounds[key] = asyncio.create_task(self._fast_task(following), name=f"hedge {key}")
        return True

    async def _fast_round(self, notice: _Notice) -> bool:
        """A new job of an idle IMMEDIATE lane, sized from its notice (with the lane's carry as
        the job's insert read it) and recorded (its orders SENT, the job taken) in one statement
        that holds only while the lane is idle: not leased, no other unclaimed live job. That
        is what a round of the lane would do after claiming it, one round trip sooner. False:
        nothing was written.

        The carry may have moved since the notice read it (a delivery of the lane's previous
        round): the statement moves the carry by what this round takes from it, never sets it,
        so the lane's books stay exact and the next round makes up the difference."""
        lane, job = notice.lane, notice.job
        try:
            plans, dust = await self._size(lane, [job], notice.carry, [job.job_id], fast=True)
        except _NotFast:
            return False
        kept = {m for plan in plans if plan.orders for m in (plan.group.lead, *plan.group.riders)}
        if not kept:
            return False
        delivery = asyncio.create_task(self._deliver(lane, plans, dust, kept, fast=True),
                                       name=f"hedge orders {lane.key}")
        self._deliveries.add(delivery)
        delivery.add_done_callback(self._deliveries.discard)
        return True

    async def _round_task(self, claim: _Claim, seen: int) -> None:
        key = claim.lane.key
        self._fast_carry.pop(key, None)  # what this round's statement leaves, if it records
        try:
            delivery = await self._round(claim, seen)
        except Exception:
            log.exception("hedge round of %s failed", key)
            delivery = None
        finally:
            self._rounds.pop(key, None)
            self._next_fast(key)  # new jobs that came meanwhile
            self._wake.set()
        if delivery is not None:
            self._deliveries.add(delivery)
            delivery.add_done_callback(self._deliveries.discard)

    # ------------------------------------------------------------ public passes

    async def recover(self) -> int:
        """Resolve the in-flight (SENT/UNKNOWN) orders of every lane this worker can claim,
        sending nothing new; answers how many lanes were looked at."""
        seen: set[str] = set()
        while not self._stopping.is_set():
            claim = await self._claim(only_open_orders=True, exclude=seen)
            if claim is None:
                break
            seen.add(claim.lane.key)
            try:
                await self._resolve(claim.lane, [j for j in claim.jobs if j.has_open_orders])
            finally:
                await self._release(claim.lane, [j.job_id for j in claim.jobs])
        return len(seen)

    async def run_once(self) -> bool:
        """Claim one ready lane and work one round of it; False when no lane was ready."""
        await self._report_open_jobs()
        seen = self._notices
        claim = await self._claim(only_open_orders=False)
        if claim is None:
            return False
        delivery = await self._round(claim, seen)
        if delivery is not None:
            await delivery
        return True

    # ------------------------------------------------------------ an idle lane's carry

    def _carry_due(self) -> bool:
        """Look for idle lanes' carry every `carry_check_s`, and soon after an answer moved a
        carry (the last round of a burst leaves the lane idle with what it moved)."""
        since = time.monotonic() - self._carry_checked
        return since >= self._carry_check_s or (self._carry_moved and since >= 0.1)

    async def hedge_idle_carries(self) -> int:
        """Give each idle lane whose carry (and residuals) an LP would take now a carry job;
        answers how many.

        A lane's carry, and its residual jobs (needs below every LP's minimum, waiting for a
        host), are normally taken by its next round. A lane with no live job but residuals has
        no next round until its next fill, so they would wait that long, even when together
        they are enough for an LP. When their net routes to at least one order on the fresh
        books, one statement writes a job of its own on the net's side (no client fill; its
        plan's price is today's best) and moves the carry into it when the carry is on that
        side (its quantity; otherwise the job has none and the round offsets the carry), while
        the lane is still idle, not leased and its carry unchanged. That job is then hedged
        like any other, the residuals on its side riding it. A net no LP takes (below every
        venue's minimum) stays where it is; the dealer's exposure counts it either way."""
        self._carry_checked, self._carry_moved = time.monotonic(), False
        now = self._clock()
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                f"""SELECT l.dealer_account_id, l.symbol, l.carry, d.config, r.net AS residuals
                    FROM hedge_lane l JOIN dealer d USING (dealer_account_id)
                    CROSS JOIN LATERAL (
                        SELECT coalesce(sum(CASE WHEN j.side = 'BUY' THEN 1 ELSE -1 END
                                            * (j.quantity - j.hedged_quantity + j.carry_in)),
                                        0) AS net, count(*) AS jobs
                        FROM hedge_job j
                        WHERE j.dealer_account_id = l.dealer_account_id
                          AND j.symbol = l.symbol AND j.status IN {_LIVE}) r
                    WHERE (l.claimed_until IS NULL OR l.claimed_until < $1)
                      AND (l.carry <> 0 OR r.jobs > 0)
                      AND NOT EXISTS (
                        SELECT 1 FROM hedge_job j
                        WHERE j.dealer_account_id = l.dealer_account_id
                          AND j.symbol = l.symbol AND j.status IN {_LIVE} AND NOT j.residual)
                    ORDER BY l.updated_at""", now)  # noqa: S608
        made = 0
        for row in rows:
            lane = _lane(row["dealer_account_id"], row["symbol"], row["config"])
            carry = Decimal(row["carry"])
            net = carry + Decimal(row["residuals"])  # what the lane has to buy (+) or sell (-)
            judged = self._carry_unorderable.get(lane.key)
            if (net == 0 or lane.key in self._rounds or (judged is not None and judged[0] == net
                    and time.monotonic() - judged[1] < CARRY_RECHECK_S)):
                continue
            plan = await self._carry_plan(lane, net)
            if plan is None:
                self._carry_unorderable[lane.key] = (net, time.monotonic())
                continue
            self._carry_unorderable.pop(lane.key, None)
            moved = carry if (carry > 0) == (net > 0) else Decimal(0)
            async with self._pool.acquire() as conn:
                made += await conn.fetchval(
                    f"""WITH lane AS (
                            SELECT 1 FROM hedge_lane l
                            WHERE l.dealer_account_id = $1 AND l.symbol = $2 AND l.carry = $3
                              AND (l.claimed_until IS NULL OR l.claimed_until < $4)
                              AND NOT EXISTS (
                                SELECT 1 FROM hedge_job j
                                WHERE j.dealer_account_id = $1 AND j.symbol = $2
                                  AND j.status IN {_LIVE} AND NOT j.residual)
                            FOR NO KEY UPDATE),
                        moved AS (
                            UPDATE hedge_lane SET carry = carry - $9, updated_at = $4
                            WHERE dealer_account_id = $1 AND symbol = $2
                              AND EXISTS (SELECT 1 FROM lane)
                            RETURNING 1),
                        job AS (
                            INSERT INTO hedge_job (job_id, dealer_account_id, trade_order_id,
                                symbol, side, quantity, plan, status, created_at, updated_at)
                            SELECT $5, $1, NULL, $2, $6, $7, $8::jsonb, 'PENDING', $4, $4
                            FROM moved
                            RETURNING 1)
                        SELECT count(*) FROM job""",  # noqa: S608
                    lane.dealer_account_id, lane.symbol, carry, now, uuid.uuid4(),
                    "BUY" if net > 0 else "SELL", abs(moved), plan, moved)
        if made:
            self._metrics.hedge_carry_jobs_made(made)
            log.info("hedging the carry of %d idle lane(s)", made)
        return made

    async def _carry_plan(self, lane: _Lane, net: Decimal) -> dict[str, object] | None:
        """The plan of a carry job for the lane's `net` (the best price the LPs show now, their
        largest lot), or None when no order for it would be sent now."""
        side = "BUY" if net > 0 else "SELL"
        lps = await self._lps_for(lane)
        routes = await self._routes(lane, side, lps)
        best = [route.levels[0][0] for route in routes if route.levels]
        if not best:
            return None
        reference = min(best) if side == "BUY" else max(best)
        routing = policy.route(side, abs(net), routes,
                               policy.price_bound(side, reference, lane.slippage_bps))
        if routing.below_minimum or not routing.orders:
            return None
        return {"legs": [], "lotSize": str(max(lp.lot_size for lp in lps)),
                "worstRawPrice": str(reference)}

    # ------------------------------------------------------------ claims

    async def _claim(self, *, only_open_orders: bool, exclude: set[str] | None = None,
                     grace: dt.timedelta | None = None) -> _Claim | None:
        """One statement: a ready lane (`FOR UPDATE SKIP LOCKED`, then leased) and its jobs for
        this round (the same way): leads not in backoff (oldest first, at most
        MAX_LEADS_PER_ROUND), their riders, and the residuals waiting for a host. With
        `only_open_orders`: a lane with orders in flight, and those orders' jobs. With `grace`:
        only a lane with a ready job older than that (a poll: newer jobs' notices are being
        worked, and a declined one wakes the worker)."""
        now = self._clock()
        busy = set(self._rounds) | set(exclude or ())
        busy |= {key for key, due in self._not_due.items() if due > now}
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                f"""WITH lane AS (
                        SELECT l.dealer_account_id, l.symbol, l.carry, d.config
                        FROM hedge_lane l JOIN dealer d USING (dealer_account_id)
                        WHERE (l.claimed_until IS NULL OR l.claimed_until < $1)
                          AND NOT ((l.dealer_account_id::text || '/' || l.symbol)
                                   = ANY($2::text[]))
                          AND EXISTS (
                            SELECT 1 FROM hedge_job j
                            WHERE j.dealer_account_id = l.dealer_account_id
                              AND j.symbol = l.symbol AND j.status IN {_LIVE}
                              AND (j.claimed_until IS NULL OR j.claimed_until < $1)
                              AND j.created_at <= $6
                              AND CASE WHEN $3::boolean THEN EXISTS (
                                    SELECT 1 FROM hedge_order o WHERE o.job_id = j.job_id
                                    AND o.status IN {_OPEN})
                                  ELSE NOT j.residual
                                    AND (j.lead_job_id IS NULL OR NOT EXISTS (
                                        SELECT 1 FROM hedge_job lead
                                        WHERE lead.job_id = j.lead_job_id
                                          AND lead.status IN {_LIVE}))
                                    AND (j.next_attempt_at IS NULL OR j.next_attempt_at <= $1)
                                  END)
                        ORDER BY l.updated_at
                        LIMIT 1 FOR UPDATE OF l SKIP LOCKED),
                    leased AS (
                        UPDATE hedge_lane h SET claimed_by = $4, claimed_until = $5,
                            updated_at = $1
                        FROM lane WHERE h.dealer_account_id = lane.dealer_account_id
                          AND h.symbol = lane.symbol
                        RETURNING h.symbol),
                    live AS (
                        SELECT j.job_id, j.lead_job_id, j.residual, j.next_attempt_at,
                               j.created_at
                        FROM hedge_job j JOIN lane ON j.dealer_account_id = lane.dealer_account_id
                          AND j.symbol = lane.symbol
                        WHERE j.status IN {_LIVE}
                          AND (j.claimed_until IS NULL OR j.claimed_until < $1)
                        FOR UPDATE OF j SKIP LOCKED),
                    leads AS (  -- riders of a lead that ended (e.g. cancelled) are free
                        SELECT job_id FROM live
                        WHERE (lead_job_id IS NULL OR NOT EXISTS (
                                 SELECT 1 FROM hedge_job lead WHERE lead.job_id = live.lead_job_id
                                 AND lead.status IN {_LIVE}))
                          AND (residual OR next_attempt_at IS NULL OR next_attempt_at <= $1
                               OR ($3 AND EXISTS (SELECT 1 FROM hedge_order o
                                                  WHERE o.job_id = live.job_id
                                                  AND o.status IN {_OPEN})))
                        ORDER BY residual, created_at LIMIT {MAX_LEADS_PER_ROUND}),
                    claimed AS (
                        UPDATE hedge_job j SET claimed_by = $4, claimed_until = $5
                        FROM live
                        WHERE j.job_id = live.job_id
                          AND (live.job_id IN (SELECT job_id FROM leads)
                               OR live.lead_job_id IN (SELECT job_id FROM leads))
                        RETURNING {_JOB_COLUMNS})
                    SELECT lane.dealer_account_id AS lane_dealer, lane.symbol AS lane_symbol,
                           lane.carry AS lane_carry, lane.config AS lane_config, claimed.*
                    FROM lane LEFT JOIN claimed ON true""",  # noqa: S608
                now, sorted(busy), only_open_orders, self.worker_id, now + self._lease,
                now if grace is None else now - grace)
        if not rows:
            return None
        first = rows[0]
        lane = _lane(first["lane_dealer"], first["lane_symbol"], first["lane_config"])
        jobs = _free_orphans([_job(r) for r in rows if r["job_id"] is not None])
        return _Claim(lane, Decimal(first["lane_carry"]), jobs)

    async def _reload(self, job_ids: Sequence[uuid.UUID]) -> tuple[list[_Job], Decimal | None]:
        """The claimed jobs still live, and their lane's carry, as they are now."""
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                f"""SELECT {_JOB_COLUMNS}, (SELECT l.carry FROM hedge_lane l
                        WHERE l.dealer_account_id = j.dealer_account_id
                          AND l.symbol = j.symbol) AS lane_carry
                    FROM hedge_job j
                    WHERE j.job_id = ANY($1::uuid[]) AND j.status IN {_LIVE}
                      AND j.claimed_by = $2""",  # noqa: S608
                list(job_ids), self.worker_id)
        jobs = _free_orphans([_job(r) for r in rows])
        return jobs, (Decimal(rows[0]["lane_carry"]) if rows else None)

    async def _release(self, lane: _Lane, job_ids: Iterable[uuid.UUID]) -> None:
        """Give back the lane and the jobs (one statement)."""
        async with self._pool.acquire() as conn:
            await conn.execute(
                """WITH jobs AS (
                       UPDATE hedge_job SET claimed_by = NULL, claimed_until = NULL
                       WHERE job_id = ANY($4::uuid[]) AND claimed_by = $3 RETURNING 1)
                   UPDATE hedge_lane SET claimed_by = NULL, claimed_until = NULL
                   WHERE dealer_account_id = $1 AND symbol = $2 AND claimed_by = $3""",
                lane.dealer_account_id, lane.symbol, self.worker_id, list(job_ids))

    async def _release_jobs(self, job_ids: Iterable[uuid.UUID]) -> None:
        ids = list(job_ids)
        if not ids:
            return
        async with self._pool.acquire() as conn:
            await conn.execute(
                """UPDATE hedge_job SET claimed_by = NULL, claimed_until = NULL
                   WHERE job_id = ANY($1::uuid[]) AND claimed_by = $2""", ids, self.worker_id)

    async def _report_open_jobs(self) -> None:
        now = self._clock()
        if self._reported_at is not None and (now - self._reported_at).total_seconds() < max(
                self._poll_interval_s, 0.2):
            return
        self._reported_at = now
        async with self._pool.acquire() as conn:
            count = await conn.fetchval(
                f"SELECT count(*) FROM hedge_job WHERE status IN {_LIVE}")  # noqa: S608
        self._metrics.hedge_open_jobs(int(count))

    # ------------------------------------------------------------ one round

    async def _round(self, claim: _Claim, seen: int) -> asyncio.Task[None] | None:
        """Size and record one round of the lane under its lease; answers the task that sends
        the orders and records the answers (the lane is free again by then). `seen`: the
        notices received when its claim began."""
        lane, jobs, carry = claim.lane, claim.jobs, claim.carry
        claimed = [j.job_id for j in jobs]
        released = False
        try:
            if any(j.has_open_orders for j in jobs):
                await self._resolve(lane, [j for j in jobs if j.has_open_orders])
                jobs, now_carry = await self._reload(claimed)
                carry = carry if now_carry is None else now_carry
            blocked = {j.job_id for j in jobs if j.has_open_orders}
            blocked |= {j.job_id for j in jobs if j.lead in blocked}
            jobs = [j for j in jobs if j.job_id not in blocked]
            if not jobs or (lane.mode == "NETTED" and not self._netting_due(lane, jobs, seen)):
                return None
            plans, dust = await self._size(lane, jobs, carry, claimed)
            released = True  # recording the orders gave back the lane and the other jobs
            kept = {m for plan in plans if plan.orders
                    for m in (plan.group.lead, *plan.group.riders)}
            if not kept:
                return None
            return asyncio.create_task(self._deliver(lane, plans, dust, kept),
                                       name=f"hedge orders {lane.key}")
        finally:
            if not released:
                await self._release(lane, claimed)

    def _netting_due(self, lane: _Lane, jobs: Sequence[_Job], seen: int) -> bool:
        """Whether the NETTED lane's window is due; when not, the lane is not claimed again
        until it is, unless a notice came since the claim began (its fill, not among `jobs`,
        may close the window early: the lane is looked at again at once)."""
        now = self._clock()
        fresh = [j for j in jobs if not j.residual and j.lead is None]
        if not fresh:
            return False
        oldest = min(j.created_at for j in fresh)
        net = sum((policy.sign(j.side) * (j.quantity - j.hedged) for j in jobs), Decimal(0))
        price = _weighted(jobs, lambda j: j.plan.raw_vwap) or Decimal(0)
        due = policy.netting_due(
            now_ms=int(now.timestamp() * 1000), oldest_ms=int(oldest.timestamp() * 1000),
            window_ms=lane.window_ms, net=net, price=price, max_notional=lane.max_notional,
            max_exposure=lane.max_exposure, threshold=self._netting_threshold)
        if due:
            self._not_due.pop(lane.key, None)
        elif self._notices == seen:
            self._not_due[lane.key] = oldest + dt.timedelta(milliseconds=lane.window_ms)
        else:
            self._wake.set()
        return due

    async def _size(self, lane: _Lane, jobs: list[_Job], carry: Decimal,
                    claimed: Sequence[uuid.UUID], *, fast: bool = False
                    ) -> tuple[list[_Plan], Decimal]:
        """Net and route the round, then record its orders as SENT (committed before any is
        sent); that statement also gives back the lane and the jobs without orders."""
        netting, plans, outcomes, dust = await self._plan_round(lane, jobs, carry)
        try:
            await self._record_intents(lane, jobs, netting, plans, outcomes, dust,
                                       netting.lane_carry - carry, claimed, fast=fast)
        except BaseException:
            self._unspend(plans)  # nothing was sent
            raise
        return plans, dust

    def _unspend(self, plans: Iterable[_Plan]) -> None:
        for plan in plans:
            for order in plan.orders:
                self._balances.answered(order.lp.trading_account_id, order.coid)

    async def _plan_round(self, lane: _Lane, jobs: list[_Job], carry: Decimal,
                          conn: asyncpg.Connection | None = None
                          ) -> tuple[policy.Netting, list[_Plan], dict[uuid.UUID, str], Decimal]:
        """Net and route a round: its netting, its groups' plans (with their orders), why the
        groups without orders have none, and the lane's dust (one lot).

        The lane's carry is handed from group to group: each routed group takes what is left
        of it and leaves its own expected rounding, so the lane ends the round with at most
        the last group's rounding (under half a lot)."""
        by_id = {j.job_id: j for j in jobs}
        lps = await self._lps_for(lane, conn)
        netting = policy.form_groups(lane.mode, [j.state() for j in jobs], carry)
        dust = max((j.plan.lot_size for j in jobs), default=Decimal(0))
        lp_by_id = {lp.trading_account_id: lp for lp in lps}
        taken: Mapping[policy.LevelKey, Decimal] = {}
        plans: list[_Plan] = []
        outcomes: dict[uuid.UUID, str] = {}  # lead → why nothing was sent
        running = netting.lane_carry  # what the lane still has to buy (+) or sell (-)
        for group in netting.groups:
            members = [by_id[group.lead], *(by_id[r] for r in group.riders)]
            first = by_id[group.lead]
            # orders are numbered past every earlier one (a retried job's attempts restart at
            # 0, its client order ids must not); the budget counts attempts since the retry
            attempt = max(group.attempts, first.last_attempt) + 1
            plan = _Plan(group, attempt, group.attempts + 1,
                         _weighted(members, lambda j: j.plan.raw_vwap))
            plans.append(plan)
            if group.target < dust:
                continue  # offsets did it: settled without orders
            bound_reference = _weighted(members, lambda j: j.plan.reference_worst)
            if bound_reference is None:
                outcomes[group.lead] = "no plan price to bound the hedge"
                continue
            direction = policy.sign(group.side)
            # the carry joins this group's target (never taking more than the target has)
            take = max(direction * running, -(group.target - dust))
            routing = policy.route(
                group.side, group.target + take, await self._routes(lane, group.side, lps),
                policy.price_bound(group.side, bound_reference, lane.slippage_bps),
                plan_legs=first.plan.legs if attempt == 1 and lane.mode == "IMMEDIATE" else (),
                avoid=await self._refused_lps(group.lead) if attempt > 1 else frozenset(),
                taken=taken)
            taken = routing.taken
            if routing.unrouted > 0:  # short of balance: the next attempt asks the venues again
                for lp in lps:
                    self._balances.refresh_soon(lp.trading_account_id)
            if routing.below_minimum:
                outcomes[group.lead] = "residual"
                continue
            if not routing.orders:
                outcomes[group.lead] = routing.reason or "no LP can take it"
                continue
            rounding = routing.expected_net - (group.target + take - routing.unrouted)
            plan.carry_in = take + rounding
            running -= direction * plan.carry_in
            for leg, intent in enumerate(routing.orders):
                order = _Sent(policy.client_order_id(group.lead, attempt, leg), group.lead,
                              lp_by_id[intent.trading_account_id], lane.symbol, group.side,
                              intent.quantity, intent.limit_price)
                plan.orders.append(order)
                # the next groups of the round route on what is left
                self._balances.spend(order.lp.trading_account_id, order.coid,
                                     *_spent(lane.symbol, order.side, order.quantity,
                                             order.limit))
        return netting, plans, outcomes, dust

    async def _deliver(self, lane: _Lane, plans: Sequence[_Plan], dust: Decimal,
                       job_ids: set[uuid.UUID], *, fast: bool = False) -> None:
        """Send the round's orders, then record every answer in one transaction. Then the
        worker looks for work again; after a fast round, only when its job is not done."""
        done: set[uuid.UUID] = set()
        after = _AfterCommit()
        try:
            sent = [order for plan in plans for order in plan.orders]
            await asyncio.gather(*(self._send(order) for order in sent))
            async with self._pool.acquire() as conn, conn.transaction():
                carry_delta = Decimal(0)
                rounding = PendingRounding()
                for plan in plans:
                    if plan.orders:
                        carry_delta += await self._record_answers(
                            cast(asyncpg.Connection, conn), lane, plan.group.lead,
                            plan.orders, plan.reference, dust, rounding, after, done)
                if carry_delta:
                    await self._add_carry(cast(asyncpg.Connection, conn), lane, carry_delta,
                                          self._clock())
                await rounding.write(cast(asyncpg.Connection, conn))  # last: see its doc
        except Exception:
            log.exception("hedge orders of %s: answers not recorded (resolved by client "
                          "order id next round)", lane.key)
        else:
            after.run()
            self._carry_moved = self._carry_moved or bool(carry_delta)
        finally:
            with contextlib.suppress(Exception):
                await self._release_jobs(job_ids)
            if not fast or not job_ids <= done:
                self._wake.set()

    async def _refused_lps(self, lead: uuid.UUID) -> frozenset[uuid.UUID]:
        """LPs that refused the group's latest attempt: the next one tries the others first."""
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                """SELECT trading_account_id FROM hedge_order
                   WHERE job_id = $1 AND status = 'REJECTED' AND attempt = (
                       SELECT max(attempt) FROM hedge_order WHERE job_id = $1)""", lead)
        return frozenset(r["trading_account_id"] for r in rows)

    # ------------------------------------------------------------ LPs and routes

    async def _lps_for(self, lane: _Lane, conn: asyncpg.Connection | None = None
                       ) -> list[_Lp]:
        """The lane's LPs, read at most every LP_CACHE_S (the statement that records the
        orders checks them again, so a stale list never sends to a draining or disabled LP); on
        `conn` when given (a caller holding a connection must not wait for another)."""
        cached = self._lp_cache.get(lane.key)
        if cached is not None and time.monotonic() - cached[0] < LP_CACHE_S:
            return cached[1]
        if conn is not None:
            lps = await self._lps(conn, lane)
        else:
            async with self._pool.acquire() as held:
                lps = await self._lps(cast(asyncpg.Connection, held), lane)
        self._lp_cache[lane.key] = (time.monotonic(), lps)
        return lps

    async def _lps(self, conn: asyncpg.Connection, lane: _Lane) -> list[_Lp]:
        """The dealer's LPs a hedge may go to: linked, not draining, ACTIVE, instrument listed."""
        rows = await conn.fetch(
            """SELECT l.trading_account_id, ta.venue, ta.external_trading_account_id,
                      ta.venue_ref, ta.taker_fee, i.tick_size, i.lot_size, i.min_quantity,
                      i.min_notional
               FROM dealer_link l
               JOIN trading_account ta ON ta.trading_account_id = l.trading_account_id
               JOIN instrument i ON i.venue = ta.venue AND i.symbol = $2 AND i.enabled
               WHERE l.dealer_account_id = $1 AND NOT l.draining AND ta.status = 'ACTIVE'
               ORDER BY l.linked_at, l.trading_account_id""",
            lane.dealer_account_id, lane.symbol)
        return [_Lp(r["trading_account_id"], r["venue"],
                    VenueAccount(r["trading_account_id"], r["external_trading_account_id"],
                                 r["venue_ref"]),
                    Decimal(r["taker_fee"]) if r["taker_fee"] is not None
                    else default_fees(r["venue"])[1],
                    Decimal(r["tick_size"]), Decimal(r["lot_size"]),
                    Decimal(r["min_quantity"]), Decimal(r["min_notional"]))
                for r in rows]

    async def _routes(self, lane: _Lane, side: str, lps: Sequence[_Lp]) -> list[policy.LpRoute]:
        base, quote = split_symbol(lane.symbol)
        spends = quote if side == "BUY" else base
        # one minor unit of the quote asset: a share of a split worth less books its quote leg
        # as little but rounding (see LpRoute)
        quote_unit = (from_minor(1, self._scales.asset(quote)) if quote in self._scales
                      else Decimal(0))
        routes = []
        for lp in lps:
            book = self._books(lp.venue, lane.symbol) if self._books is not None else None
            levels = None if book is None else (book.asks if side == "BUY" else book.bids)
            free = await self._balances.free(self._venues.execution(lp.venue), lp.account)
            routes.append(policy.LpRoute(
                lp.trading_account_id, lp.venue, lp.taker_fee, lp.tick_size, lp.lot_size,
                lp.min_quantity, lp.min_notional, levels,
                None if free is None else max(free.get(spends, Decimal(0)), Decimal(0)),
                self._fee_in_base.get(lp.trading_account_id, True), quote_unit))
        return routes

    # ------------------------------------------------------------ before sending

    async def _record_intents(self, lane: _Lane, jobs: Sequence[_Job], netting: policy.Netting,
                              plans: Sequence[_Plan], outcomes: Mapping[uuid.UUID, str],
                              dust: Decimal, netting_carry: Decimal,
                              claimed: Sequence[uuid.UUID], *, fast: bool = False) -> None:
        """Record the round before anything is sent: the groups with orders, their orders as
        SENT and the lane's carry in one statement (that also gives back the lane and the
        jobs without orders); the rest (offsets of other jobs, groups settled, residual or
        not routed) first, in the same transaction, when there is any."""
        now = self._clock()
        by_id = {j.job_id: j for j in jobs}
        sending = [plan for plan in plans if plan.orders]
        members = {m for plan in sending for m in (plan.group.lead, *plan.group.riders)}
        first_lead = netting.groups[0].lead if netting.groups else None
        # the lane carry the netting gave the first lead travels with that lead's update
        carry_with_lead = first_lead if first_lead in {p.group.lead for p in sending} else None
        others = [j for j in set(netting.hedged) | set(netting.carry_in) if j not in members]
        slow = bool(others) or len(sending) < len(plans) or (
            netting_carry != 0 and carry_with_lead is None)
        if fast and (slow or not sending):
            raise _NotFast  # nothing to send at once: the lane's claim decides
        finished: list[tuple[_Job, str]] = []
        try:
            async with self._pool.acquire() as conn:
                c = cast(asyncpg.Connection, conn)
                async with contextlib.AsyncExitStack() as stack:
                    if slow:
                        await stack.enter_async_context(c.transaction())
                        if not await self._still_held(c, lane, list(by_id)):
                            raise _LeaseLost
                        finished += await self._record_rest(
                            c, lane, by_id, netting, plans, outcomes, dust, others,
                            netting_carry if carry_with_lead is None else Decimal(0), now)
                    result = await self._record_sending(
                        c, lane, netting, sending, netting_carry, carry_with_lead,
                        [j for j in claimed if j not in members], now, fast=fast,
                        newest=max(j.created_at for j in jobs) if fast else None)
                    applied = {uuid.UUID(r["id"]) for r in result if r["kind"] == "lead"}
                    if slow and any(plan.group.lead not in applied for plan in sending):
                        # The offsets written above net jobs against groups whose orders
                        # were just refused (an LP started draining, or a lead was
                        # cancelled): kept alone, they would book half of each offset.
                        raise _RoundUndone
        except _RoundUndone:  # rolled back: nothing of the round stays, nothing is sent
            self._lp_cache.pop(lane.key, None)
            self._unspend(plans)
            for plan in plans:
                plan.orders.clear()
            await self._release(lane, claimed)
            self._wake.set()  # planned again at once, on LPs read afresh
            return
        except _LeaseLost:  # the lane is another worker's now: its round decides, not this one
            log.warning("hedge round of %s dropped: its lease ran out and was taken over",
                        lane.key)
            self._unspend(plans)
            for plan in plans:
                plan.orders.clear()
            await self._release(lane, claimed)  # what is still this worker's, if anything
            return
        sent = {r["id"] for r in result if r["kind"] == "order"}
        for row in result:  # for the lane's next fast round (see _fast_task)
            if row["kind"] == "carry":
                self._fast_carry[lane.key] = Decimal(row["id"])
        dropped = [plan for plan in sending if plan.group.lead not in applied]
        for plan in dropped:  # an LP started draining, or the lead was cancelled meanwhile
            self._lp_cache.pop(lane.key, None)
            for order in plan.orders:
                self._balances.answered(order.lp.trading_account_id, order.coid)
            plan.orders.clear()
        if dropped:
            await self._release_jobs(m for plan in dropped
                                     for m in (plan.group.lead, *plan.group.riders))
        assert all(order.coid in sent for plan in sending for order in plan.orders)
        for row in result:
            first = by_id.get(uuid.UUID(row["id"])) if row["kind"] == "first" else None
            if first is not None and first.trade_order_id is not None:  # from a client fill
                self._metrics.hedge_first_order_latency(max(
                    (now - first.created_at).total_seconds(), 0.0))
        for plan in sending:
            for order in plan.orders:
                self._metrics.hedge_order(order.lp.venue, policy.SENT)
        self._finished(finished, now)

    async def _still_held(self, conn: asyncpg.Connection, lane: _Lane,
                          job_ids: Sequence[uuid.UUID]) -> bool:
        """Whether this worker still holds the lane and the round's jobs; they stay locked
        (the jobs, then the lane, as a delivery locks them) until the caller's transaction
        ends, so no claim takes them meanwhile. A lease that ran out while the round was sized
        may have been claimed by another worker since, which sizes the lane now from what it
        read: this round's offsets, settlements, failures and carry would double or contradict
        what that one records."""
        held = await conn.fetchval(
            """SELECT count(*) FROM (
                   SELECT 1 FROM hedge_job WHERE job_id = ANY($1::uuid[]) AND claimed_by = $2
                   ORDER BY job_id FOR UPDATE) j""", list(job_ids), self.worker_id)
        if held != len(set(job_ids)):
            return False
        return bool(await conn.fetchval(
            """SELECT true FROM hedge_lane
               WHERE dealer_account_id = $1 AND symbol = $2 AND claimed_by = $3
               FOR NO KEY UPDATE""", lane.dealer_account_id, lane.symbol, self.worker_id))

    async def _record_sending(self, conn: asyncpg.Connection, lane: _Lane,
                              netting: policy.Netting, sending: Sequence[_Plan],
                              netting_carry: Decimal, carry_with_lead: uuid.UUID | None,
                              release: Sequence[uuid.UUID], now: dt.datetime, *,
                              fast: bool = False, newest: dt.datetime | None = None
                              ) -> list[asyncpg.Record]:
        """One statement: the LPs are checked (linked, not draining, ACTIVE: a drain or a
        disable waits for this to commit, then sees these orders in flight), the leads and
        riders updated, the orders inserted as SENT, the lane's carry moved, the lane and the
        other jobs given back.

        `fast` (a new job not claimed first, see _fast_round): the lane's row is locked and the
        job taken only while the lane is idle — not leased, no other unclaimed live job as old
        as `newest` (younger ones wait for their own turn) but new jobs of the notice grace
        (their own notices take them: two fills' notices may come in either order) and jobs
        in backoff (their next attempt is the claim's when due) — and the job is still PENDING,
        unclaimed and not held by another transaction (never waited for while this one holds
        the lane's row: a delivery holds its jobs, then the lane); otherwise nothing is
        written."""
        leads = [plan.group.lead for plan in sending]
        lane_deltas = []
        for plan in sending:
            delta = -policy.sign(plan.group.side) * plan.carry_in
            lane_deltas.append(delta + (netting_carry if plan.group.lead == carry_with_lead
                                        else Decimal(0)))
        riders = [(r, plan.group.lead) for plan in sending for r in plan.group.riders]
        orders = [(o, plan) for plan in sending for o in plan.orders]
        return await conn.fetch(
            f"""WITH gate AS (
                    SELECT 1 FROM hedge_lane l
                    WHERE $24 AND l.dealer_account_id = $1 AND l.symbol = $2
                      AND (l.claimed_until IS NULL OR l.claimed_until < $3)
                      AND NOT EXISTS (
                        SELECT 1 FROM hedge_job o
                        WHERE o.dealer_account_id = $1 AND o.symbol = $2
                          AND o.status IN {_LIVE} AND o.created_at <= $25
                          AND NOT (o.job_id = ANY($6::uuid[]))
                          AND (o.claimed_until IS NULL OR o.claimed_until < $3)
                          AND NOT (o.status = 'PENDING' AND o.attempts = 0
                                   AND NOT o.residual AND o.lead_job_id IS NULL
                                   AND o.created_at > $26)
                          AND NOT coalesce(o.next_attempt_at > $3, false))
                    FOR NO KEY UPDATE),
                takeable AS (  -- never waits for a job another transaction holds
                    SELECT job_id FROM hedge_job
                    WHERE $24 AND EXISTS (SELECT 1 FROM gate) AND job_id = ANY($6::uuid[])
                      AND status = 'PENDING' AND attempts = 0
                      AND (claimed_until IS NULL OR claimed_until < $3)
                    FOR NO KEY UPDATE SKIP LOCKED),
                accounts AS (  -- still ACTIVE (a disable waits for this, then sees the
                               -- orders in flight); locked before the links, as an unlink does
                    SELECT trading_account_id FROM trading_account
                    WHERE trading_account_id = ANY($11::uuid[]) AND status = 'ACTIVE'
                    FOR SHARE),
                links AS (
                    SELECT trading_account_id FROM dealer_link
                    WHERE dealer_account_id = $1 AND NOT draining
                      AND trading_account_id IN (SELECT trading_account_id FROM accounts)
                    FOR SHARE),
                bad AS (
                    SELECT o.lead FROM unnest($10::uuid[], $11::uuid[]) AS o(lead, account)
                    WHERE o.account NOT IN (SELECT trading_account_id FROM links)),
                leads AS (
                    UPDATE hedge_job j SET attempts = g.attempt, status = 'IN_PROGRESS',
                        residual = false, lead_job_id = NULL, last_error = NULL,
                        next_attempt_at = NULL, hedged_quantity = j.hedged_quantity + g.hedged,
                        carry_in = j.carry_in + g.carry_in,
                        first_order_at = coalesce(j.first_order_at, $3),
                        claimed_by = $4, claimed_until = $5, updated_at = $3
                    FROM unnest($6::uuid[], $7::int[], $8::numeric[], $9::numeric[],
                                $19::numeric[])
                         AS g(job_id, attempt, hedged, carry_in, lane)
                    WHERE j.job_id = g.job_id AND j.status IN {_LIVE}
                      AND CASE WHEN $24 THEN j.job_id IN (SELECT job_id FROM takeable)
                               ELSE j.claimed_by = $4 END
                      AND g.job_id NOT IN (SELECT lead FROM bad)
                    RETURNING j.job_id, g.lane, j.first_order_at = $3 AS first),
                riders AS (
                    UPDATE hedge_job j SET lead_job_id = r.lead, residual = false,
                        status = 'IN_PROGRESS', hedged_quantity = j.hedged_quantity + r.hedged,
                        first_order_at = coalesce(j.first_order_at, $3), claimed_until = $5,
                        updated_at = $3
                    FROM unnest($12::uuid[], $13::uuid[], $14::numeric[])
                         AS r(job_id, lead, hedged)
                    WHERE j.job_id = r.job_id AND r.lead IN (SELECT job_id FROM leads)
                    RETURNING j.job_id, j.first_order_at = $3 AS first),
                orders AS (
                    INSERT INTO hedge_order (client_order_id, job_id, attempt, leg,
                        trading_account_id, venue, symbol, side, quantity, limit_price, status,
                        sent_by, created_at, updated_at)
                    SELECT o.coid, o.lead, o.attempt, o.leg, o.account, o.venue, $2, o.side,
                           o.quantity, o.limit_price, 'SENT', $4, $3, $3
                    FROM unnest($15::text[], $10::uuid[], $16::int[], $17::int[], $11::uuid[],
                                $18::text[], $20::text[], $21::numeric[], $22::numeric[])
                         AS o(coid, lead, attempt, leg, account, venue, side, quantity,
                              limit_price)
                    WHERE o.lead IN (SELECT job_id FROM leads)
                    RETURNING client_order_id),
                freed AS (
                    UPDATE hedge_job SET claimed_by = NULL, claimed_until = NULL
                    WHERE job_id = ANY($23::uuid[]) AND claimed_by = $4 RETURNING 1),
                lane AS (
                    UPDATE hedge_lane SET
                        carry = carry + coalesce((SELECT sum(lane) FROM leads), 0),
                        claimed_by = CASE WHEN claimed_by = $4 THEN NULL ELSE claimed_by END,
                        claimed_until = CASE WHEN claimed_by = $4 THEN NULL
                                             ELSE claimed_until END,
                        updated_at = $3
                    WHERE dealer_account_id = $1 AND symbol = $2
                      AND (NOT $24 OR EXISTS (SELECT 1 FROM leads)) RETURNING carry)
                SELECT 'order' AS kind, client_order_id AS id FROM orders
                UNION ALL SELECT 'carry', carry::text FROM lane
                UNION ALL SELECT 'lead', job_id::text FROM leads
                UNION ALL SELECT 'first', job_id::text FROM leads WHERE first
                UNION ALL SELECT 'first', job_id::text FROM riders WHERE first""",  # noqa: S608
            lane.dealer_account_id, lane.symbol, now, self.worker_id, now + self._lease,
            leads, [plan.tries for plan in sending],
            [netting.hedged.get(lead, Decimal(0)) for lead in leads],
            [netting.carry_in.get(plan.group.lead, Decimal(0)) + plan.carry_in
             for plan in sending],
            [plan.group.lead for _, plan in orders],
            [o.lp.trading_account_id for o, _ in orders],
            [r for r, _ in riders], [lead for _, lead in riders],
            [netting.hedged.get(r, Decimal(0)) for r, _ in riders],
            [o.coid for o, _ in orders], [plan.attempt for _, plan in orders],
            [plan.orders.index(o) for o, plan in orders], [o.lp.venue for o, _ in orders],
            lane_deltas, [o.side for o, _ in orders], [o.quantity for o, _ in orders],
            [o.limit for o, _ in orders], list(release), fast, newest or now,
            now - self._notice_grace)

    async def _record_rest(self, c: asyncpg.Connection, lane: _Lane,
                           by_id: Mapping[uuid.UUID, _Job], netting: policy.Netting,
                           plans: Sequence[_Plan],
                           outcomes: Mapping[uuid.UUID, str], dust: Decimal,
                           others: Sequence[uuid.UUID], carry_delta: Decimal,
                           now: dt.datetime) -> list[tuple[_Job, str]]:
        """What a round decides besides sending: offsets of jobs that send nothing, groups
        settled by offsets, residual groups, groups no LP could take (inside the caller's
        transaction, before the sending statement)."""
        finished: list[tuple[_Job, str]] = []
        for job_id in others:
            await c.execute(
                """UPDATE hedge_job SET hedged_quantity = hedged_quantity + $2,
                       carry_in = carry_in + $3, updated_at = $4 WHERE job_id = $1""",
                job_id, netting.hedged.get(job_id, Decimal(0)),
                netting.carry_in.get(job_id, Decimal(0)), now)
        for plan in plans:
            group = plan.group
            if plan.orders:
                continue
            members = [group.lead, *group.riders]
            states = await self._states(c, members)
            lead = states.get(group.lead)
            if lead is None:  # cancelled meanwhile
                continue
            riders = [states[r] for r in group.riders if r in states]
            if group.target < dust:
                allocation = policy.allocate(lead, riders, Decimal(0), dust, settle=True)
                carry_delta += await self._apply(c, allocation, now)
                finished += [(by_id[j], policy.HEDGED) for j in allocation.done]
                await self._end_group(c, [m for m in members if m not in allocation.done], now)
                continue
            outcome = outcomes.get(group.lead, "no LP can take it")
            if outcome == "residual":
                carry_delta += policy.sign(lead.side) * lead.carry_in
                await c.execute(
                    f"""UPDATE hedge_job SET residual = true, status = 'PENDING',
                           lead_job_id = NULL, carry_in = carry_in - CASE
                             WHEN job_id = $2 THEN $3::numeric ELSE 0 END,
                           last_error = $4, updated_at = $5
                       WHERE job_id = ANY($1::uuid[]) AND status IN {_LIVE}""",  # noqa: S608
                    members, group.lead, lead.carry_in,
                    f"residual below every LP venue's minimum order: waits for the next "
                    f"hedge of {lane.symbol}", now)
                continue
            if group.riders:  # they wait with their lead
                await c.execute(
                    """UPDATE hedge_job SET lead_job_id = $2, residual = false,
                           status = 'IN_PROGRESS', updated_at = $3
                       WHERE job_id = ANY($1::uuid[])""", list(group.riders), group.lead, now)
            failed = await self._attempted(c, group, plan.tries, outcome, now)
            finished += [(by_id[j], policy.FAILED) for j in failed if j in by_id]
            if failed:  # the lead's carry goes back to the lane
                carry_delta += policy.sign(lead.side) * lead.carry_in
        grouped = {m for plan in plans for m in (plan.group.lead, *plan.group.riders)}
        offset_only = [j for j in netting.hedged if j not in grouped]
        if offset_only:  # netted away entirely (or down to dust) without an order
            settled = policy.settle_dust((await self._states(c, offset_only)).values(), dust)
            carry_delta += await self._apply(c, settled, now)
            finished += [(by_id[j], policy.HEDGED) for j in settled.done]
        if carry_delta:
            await self._add_carry(c, lane, carry_delta, now)
        return finished

    async def _attempted(self, conn: asyncpg.Connection, group: policy.Group, attempt: int,
                         error: str, now: dt.datetime) -> list[uuid.UUID]:
        """An attempt that sent nothing: backoff, or FAILED at the last one (answers those)."""
        if attempt >= self._max_attempts:
            return await self._fail(conn, group.lead, attempt, error, now)
        await conn.execute(
            """UPDATE hedge_job SET attempts = $2, status = 'IN_PROGRESS', last_error = $3,
                   next_attempt_at = $4, updated_at = $5 WHERE job_id = $1""",
            group.lead, attempt, error[:500], now + self._backoff(attempt), now)
        return []

    def _backoff(self, attempt: int) -> dt.timedelta:
        return dt.timedelta(seconds=min(self._backoff_s * 2 ** max(attempt - 1, 0),
                                        self._max_backoff_s))

    # ------------------------------------------------------------ sending

    async def _send(self, order: _Sent) -> None:
        request = OrderRequest(client_order_id=order.coid, symbol=order.symbol,
                               side=Side(order.side), order_type=OrderType.LIMIT,
                               quantity=order.quantity, limit_price=order.limit,
                               time_in_force=TimeInForce.IOC)
        venue = self._venues.execution(order.lp.venue)
        try:
            state = await asyncio.wait_for(
                venue.submit_order(order.lp.account, request), self._call_timeout_s)
            if state.status.is_closed:
                order.state = state
            else:  # the venue has not finished with it: a later round asks again
                order.unknown = f"submit answered {state.status.value}: still open"
        except (VenueTimeout, VenueUnavailable, TimeoutError) as exc:
            order.unknown = f"submit: {exc or type(exc).__name__}"
        except VenueError as exc:
            order.refusal = str(exc)
        except Exception as exc:  # a connector bug: the outcome is unknown, never resent
            log.exception("hedge order %s: submit failed", order.coid)
            order.unknown = f"submit: {type(exc).__name__}: {exc}"

    # ------------------------------------------------------------ in-flight orders

    async def _resolve(self, lane: _Lane, jobs: Sequence[_Job]) -> None:
        """Ask the venues about the jobs' SENT/UNKNOWN orders and record what they say."""
        if not jobs:
            return
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                f"""SELECT o.client_order_id, o.job_id, o.side, o.quantity, o.limit_price,
                           o.created_at, o.trading_account_id, o.venue,
                           t.external_trading_account_id, t.venue_ref, t.taker_fee
                    FROM hedge_order o JOIN trading_account t USING (trading_account_id)
                    WHERE o.job_id = ANY($1::uuid[]) AND o.status IN {_OPEN}
                    ORDER BY o.attempt, o.leg""",  # noqa: S608
                [j.job_id for j in jobs])
        by_lead: dict[uuid.UUID, list[_Sent]] = {}
        for r in rows:
            lp = _Lp(r["trading_account_id"], r["venue"],
                     VenueAccount(r["trading_account_id"], r["external_trading_account_id"],
                                  r["venue_ref"]),
                     Decimal(r["taker_fee"] or 0), Decimal(0), Decimal(0), Decimal(0),
                     Decimal(0))
            order = _Sent(r["client_order_id"], r["job_id"], lp, lane.symbol, r["side"],
                          Decimal(r["quantity"]), Decimal(r["limit_price"]))
            await self._ask(order, r["created_at"])
            by_lead.setdefault(order.lead, []).append(order)
        dust = max((j.plan.lot_size for j in jobs), default=Decimal(0))
        after = _AfterCommit()
        async with self._pool.acquire() as conn, conn.transaction():
            carry_delta = Decimal(0)
            rounding = PendingRounding()
            for lead, orders in by_lead.items():
                members = await self._members(cast(asyncpg.Connection, conn), lead)
                carry_delta += await self._record_answers(
                    cast(asyncpg.Connection, conn), lane, lead, orders,
                    _weighted(members, lambda j: j.plan.raw_vwap), dust, rounding, after)
            if carry_delta:
                await self._add_carry(cast(asyncpg.Connection, conn), lane, carry_delta,
                                      self._clock())
            await rounding.write(cast(asyncpg.Connection, conn))  # last: see its doc
        after.run()

    async def _ask(self, order: _Sent, created_at: dt.datetime) -> None:
        venue = self._venues.execution(order.lp.venue)
        try:
            state = await asyncio.wait_for(
                venue.order_status(order.lp.account, order.coid), self._call_timeout_s)
            if not state.status.is_closed:
                state = await asyncio.wait_for(
                    venue.cancel_order(order.lp.account, order.coid), self._call_timeout_s)
            if state.status.is_closed:
                order.state = state
            else:  # a cancel on its way: only a closed state is final
                order.unknown = f"still open at the venue ({state.status.value})"
        except UnknownOrder:
            # A submit can reach the venue until its call gave up (call timeout after the
            # order was recorded), then the grace: only after both is it "never received".
            if self._clock() - created_at < self._never_received_after:
                order.unknown = "the venue does not know it (yet)"
            else:  # never reached the venue: nothing was traded
                order.refusal = "the venue never received it"
        except (VenueError, TimeoutError) as exc:
            order.unknown = f"status: {exc or type(exc).__name__}"

    # ------------------------------------------------------------ after sending

    async def _record_answers(self, conn: asyncpg.Connection, lane: _Lane, lead_id: uuid.UUID,
                              orders: Sequence[_Sent], reference: Decimal | None,
                              dust: Decimal, rounding: PendingRounding, after: _AfterCommit,
                              done: set[uuid.UUID] | None = None) -> Decimal:
        """The answers of one group's orders, their postings, and the progress they made
        (inside the caller's transaction); answers the change of the lane's carry, which the
        caller writes last (the lane's row stays unlocked while the rest is written). What
        they count (orders, jobs ended, slippage) goes to `after`, for once it commits."""
        now = self._clock()
        base_code, _ = split_symbol(lane.symbol)
        progress = Decimal(0)
        statuses: list[tuple[str, str]] = []
        unbookable: str | None = None  # why the group is parked (see _Unbookable)
        for order in orders:
            if order.state is not None:
                try:
                    recorded = await self._record_state(conn, lane, lead_id, order, now,
                                                        rounding, after)
                except _Unbookable as exc:
                    unbookable = str(exc)
                    statuses.append((order.lp.venue, policy.UNKNOWN))
                    log.error("hedge order %s: %s", order.coid, unbookable)
                    continue
                if recorded is not None:
                    progress += recorded
                    statuses.append((order.lp.venue, policy.order_status_of(order.state)))
                    after.add(functools.partial(self._observe, order, reference, base_code))
            elif order.refusal is not None:
                if await self._mark(conn, order.coid, policy.REJECTED, order.refusal, now):
                    statuses.append((order.lp.venue, policy.REJECTED))
                self._balances.answered(order.lp.trading_account_id, order.coid)
            elif await self._mark(conn, order.coid, policy.UNKNOWN, order.unknown or "", now):
                statuses.append((order.lp.venue, policy.UNKNOWN))
                log.warning("hedge order %s outcome unknown: %s", order.coid, order.unknown)
        rows = await conn.fetch(
            f"""SELECT job_id, side, quantity, hedged_quantity, carry_in, residual, lead_job_id,
                       attempts, created_at, trade_order_id,
                       (SELECT count(*) FROM hedge_order o WHERE o.job_id = $1
                        AND o.status IN {_OPEN}) AS still_open
                FROM hedge_job WHERE (job_id = $1 OR lead_job_id = $1) AND status IN {_LIVE}
                ORDER BY created_at, job_id FOR UPDATE""", lead_id)  # noqa: S608
        states = {r["job_id"]: policy.JobState(
            r["job_id"], r["side"], Decimal(r["quantity"]), Decimal(r["hedged_quantity"]),
            Decimal(r["carry_in"]), r["residual"], r["lead_job_id"], int(r["attempts"]))
            for r in rows}
        # the fill each job hedges was at its creation (a carry job has no fill)
        created = {r["job_id"]: r["created_at"] for r in rows if r["trade_order_id"] is not None}
        lead = states.pop(lead_id, None)
        finished: list[tuple[uuid.UUID, str]] = []
        carry_delta = Decimal(0)
        if lead is not None:
            still_open = bool(rows[0]["still_open"])
            riders = list(states.values())
            allocation = policy.allocate(lead, riders, progress, dust, settle=not still_open)
            carry_delta = await self._apply(conn, allocation, now)
            finished += [(j, policy.HEDGED) for j in allocation.done]
            if unbookable is not None and lead_id not in allocation.done:
                # Parked: the venue would give the same answer round after round, each
                # failing this transaction and every answer in it. FAILED keeps it visible
                # (alerts, exposure) and out of the rounds; a retry asks the venue again.
                failed = await self._fail(conn, lead_id, lead.attempts, unbookable, now)
                carry_delta += policy.sign(lead.side) * (
                    lead.carry_in + allocation.carry_in.get(lead_id, Decimal(0)))
                finished += [(j, policy.FAILED) for j in failed]
            elif still_open:
                await conn.execute(
                    """UPDATE hedge_job SET next_attempt_at = $2, updated_at = $3
                       WHERE job_id = $1""", lead_id, now + self._backoff(1), now)
            elif lead_id not in allocation.done:
                if lead.attempts >= self._max_attempts:
                    failed = await self._fail(
                        conn, lead_id, lead.attempts,
                        f"{lead.need - progress} {lane.symbol} left unhedged after "
                        f"{lead.attempts} attempt(s)", now)
                    carry_delta += policy.sign(lead.side) * (
                        lead.carry_in + allocation.carry_in.get(lead_id, Decimal(0)))
                    finished += [(j, policy.FAILED) for j in failed]
                else:
                    await conn.execute(
                        f"""UPDATE hedge_job SET next_attempt_at = $2, updated_at = $3
                            WHERE job_id = $1 AND status IN {_LIVE}""",  # noqa: S608
                        lead_id, now + self._backoff(lead.attempts), now)
            else:
                # the lead is done; riders it could not satisfy wait for the lane's next round
                await self._end_group(conn, [m for m in states if m not in allocation.done],
                                      now)
        after.add(functools.partial(self._answers_recorded, statuses, finished, created, now,
                                    done))
        return carry_delta

    def _answers_recorded(self, statuses: Sequence[tuple[str, str]],
                          finished: Sequence[tuple[uuid.UUID, str]],
                          created: Mapping[uuid.UUID, dt.datetime], now: dt.datetime,
                          done: set[uuid.UUID] | None) -> None:
        """Once the answers committed: count their orders and the jobs they ended."""
        for venue, status in statuses:
            self._metrics.hedge_order(venue, status)
        if done is not None:  # the caller's record of the jobs this ended
            done.update(job_id for job_id, _ in finished)
        for job_id, status in finished:
            fill_at = created.get(job_id)
            self._metrics.hedge_job_finished(
                status, None if fill_at is None else max((now - fill_at).total_seconds(), 0.0))
            if status == policy.FAILED:
                log.warning("hedge job %s FAILED", job_id)

    async def _record_state(self, conn: asyncpg.Connection, lane: _Lane, lead_id: uuid.UUID,
                            order: _Sent, now: dt.datetime, rounding: PendingRounding,
                            after: _AfterCommit) -> Decimal | None:
        """One answer and its postings; the net progress it made (None: recorded already).
        _Unbookable when the ledger cannot book it: the order is then left in flight
        (UNKNOWN, the reason in its reject_reason), nothing else of it written."""
        state = order.state
        assert state is not None
        base_code, quote_code = split_symbol(lane.symbol)
        fees = policy.fees_by_asset(state.executions)
        fee_in_base = policy.base_fee(state.executions, base_code)
        fee_asset = next(iter(fees), None)
        if state.filled_quantity > 0:
            try:  # checked before anything of it is written (built again below, with its fill)
                self._rounding(self._postings(lane, _fill_metadata(lead_id, None, None,
                                                                   order.coid, state),
                                              order.coid, order.lp.trading_account_id, state,
                                              base_code, quote_code, fees, now),
                               order.lp.trading_account_id, state, base_code, quote_code, fees)
            except (InvalidFill, InvalidAmount, UnknownAsset) as exc:
                parked = await self._park(conn, order, exc, now)
                if parked is None:
                    return None  # recorded already
                raise parked from exc
        lp = order.lp.trading_account_id
        mark = after.mark()
        try:
            # A savepoint: when the outbox refuses an entry (an asset pinned at another scale
            # than this replica's table says), only this answer is undone, not the others
            # recorded in the caller's transaction.
            async with conn.transaction():
                recorded = await conn.fetchrow(
                    f"""UPDATE hedge_order o SET status = $2, filled_quantity = $3,
                            avg_price = $4, fee_asset = $5, fee_amount = $6, reject_reason = $7,
                            updated_at = $8, fees = $9
                        FROM hedge_job j
                        WHERE o.client_order_id = $1 AND o.status IN {_OPEN}
                          AND j.job_id = o.job_id
                        RETURNING j.trade_order_id, (SELECT t.quote_id FROM trade_order t
                            WHERE t.trade_order_id = j.trade_order_id) AS quote_id""",  # noqa: S608
                    order.coid, policy.order_status_of(state), state.filled_quantity,
                    state.average_price, base_code if fee_in_base else fee_asset,
                    fee_in_base if fee_in_base else (fees[fee_asset] if fee_asset else None),
                    state.reject_reason, now,
                    {code: str(amount) for code, amount in fees.items()} if fees else None)
                if recorded is None:
                    return None  # recorded already
                kept: dict[str, Decimal] = {}
                if state.filled_quantity > 0:
                    metadata = _fill_metadata(lead_id, recorded["trade_order_id"],
                                              recorded["quote_id"], order.coid, state)
                    txs = self._postings(lane, metadata, order.coid, lp, state, base_code,
                                         quote_code, fees, now)
                    for tx in txs:
                        await enqueue_transaction(conn, tx, now)
                    kept = self._rounding(txs, lp, state, base_code, quote_code, fees)
                    left_out = [(code, amount) for code, amount in fees.items()
                                if code not in self._scales]
                    if left_out:
                        # The fill is booked without these fees: they wait to be booked once a
                        # daemon has their scale (hedging.late_fees), and the counter raises an
                        # alert to configure it.
                        await record_left_out(conn, order.coid, left_out, metadata, now)
                        for code, amount in left_out:
                            after.add(functools.partial(self._fee_unbooked, order.coid, amount,
                                                        code))
        except ValueError as exc:  # enqueue_transaction's refusal
            after.undo(mark)  # the savepoint took back what it reported
            parked = await self._park(conn, order, exc, now)
            if parked is None:
                return None
            raise parked from exc
        rounding.add(exchange_account(lp), kept)  # written with the caller's transaction
        self._balances.answered(lp, order.coid)
        if state.filled_quantity <= 0:
            return Decimal(0)
        if order.side == "BUY" and fees:
            self._fee_in_base[order.lp.trading_account_id] = fee_in_base > 0
        return policy.net_progress(order.side, state.filled_quantity, fee_in_base)

    async def _park(self, conn: asyncpg.Connection, order: _Sent, exc: Exception,
                    now: dt.datetime) -> _Unbookable | None:
        """An answer the ledger cannot book: the order stays in flight (UNKNOWN) with the
        reason; answers the _Unbookable to raise (None: another worker recorded it already)."""
        reason = (f"the answer to hedge order {order.coid} cannot be booked ({exc}): its fill "
                  "is not in the ledger; retry the job once the cause is fixed")
        if not await self._mark(conn, order.coid, policy.UNKNOWN, reason, now, reopen=True):
            return None
        self._balances.answered(order.lp.trading_account_id, order.coid)
        return _Unbookable(reason)

    def _observe(self, order: _Sent, reference: Decimal | None, base_code: str) -> None:
        state = order.state
        if state is None or reference is None:
            return
        for execution in state.executions:
            self._metrics.hedge_slippage_bps(
                order.lp.venue, float(policy.slippage_bps(order.side, execution.price,
                                                          reference)))

    async def _mark(self, conn: asyncpg.Connection, coid: str, status: str, reason: str,
                    now: dt.datetime, *, reopen: bool = False) -> bool:
        """SENT → UNKNOWN, or SENT/UNKNOWN → REJECTED; False when nothing changed. `reopen`:
        an UNKNOWN order too gets the new reason."""
        allowed = "('SENT')" if status == policy.UNKNOWN and not reopen else _OPEN
        changed = await conn.fetchval(
            f"""UPDATE hedge_order SET status = $2, reject_reason = $3, updated_at = $4
                WHERE client_order_id = $1 AND status IN {allowed} RETURNING 1""",  # noqa: S608
            coid, status, reason[:500], now)
        return bool(changed)

    # ------------------------------------------------------------ job bookkeeping

    async def _members(self, conn: asyncpg.Connection, lead: uuid.UUID) -> list[_Job]:
        rows = await conn.fetch(
            f"""SELECT {_JOB_COLUMNS} FROM hedge_job j
                WHERE j.job_id = $1 OR j.lead_job_id = $1""", lead)  # noqa: S608
        return [_job(r) for r in rows]

    async def _states(self, conn: asyncpg.Connection, job_ids: Sequence[uuid.UUID]
                      ) -> dict[uuid.UUID, policy.JobState]:
        """Live jobs as they are now (locked for this transaction), oldest first."""
        rows = await conn.fetch(
            f"""SELECT job_id, side, quantity, hedged_quantity, carry_in, residual,
                       lead_job_id, attempts
                FROM hedge_job WHERE job_id = ANY($1::uuid[]) AND status IN {_LIVE}
                ORDER BY created_at, job_id FOR UPDATE""", list(job_ids))  # noqa: S608
        return {r["job_id"]: policy.JobState(
            r["job_id"], r["side"], Decimal(r["quantity"]), Decimal(r["hedged_quantity"]),
            Decimal(r["carry_in"]), r["residual"], r["lead_job_id"], int(r["attempts"]))
            for r in rows}

    async def _apply(self, conn: asyncpg.Connection, allocation: policy.Allocation,
                     now: dt.datetime) -> Decimal:
        """Write an allocation; answers the change of the lane's carry."""
        for job_id in set(allocation.hedged) | set(allocation.carry_in):
            await conn.execute(
                """UPDATE hedge_job SET hedged_quantity = hedged_quantity + $2,
                       carry_in = carry_in + $3, updated_at = $4 WHERE job_id = $1""",
                job_id, allocation.hedged.get(job_id, Decimal(0)),
                allocation.carry_in.get(job_id, Decimal(0)), now)
        if allocation.done:
            await conn.execute(
                f"""UPDATE hedge_job SET status = 'HEDGED', lead_job_id = NULL, residual = false,
                       next_attempt_at = NULL, finished_at = $2, updated_at = $2
                   WHERE job_id = ANY($1::uuid[]) AND status IN {_LIVE}""",  # noqa: S608
                list(allocation.done), now)
        return allocation.lane_carry

    async def _end_group(self, conn: asyncpg.Connection, job_ids: Sequence[uuid.UUID],
                         now: dt.datetime) -> None:
        """Riders left without a lead: free again for the lane's next round."""
        if job_ids:
            await conn.execute(
                """UPDATE hedge_job SET lead_job_id = NULL, updated_at = $2
                   WHERE job_id = ANY($1::uuid[])""", list(job_ids), now)

    async def _fail(self, conn: asyncpg.Connection, lead: uuid.UUID, attempt: int, error: str,
                    now: dt.datetime) -> list[uuid.UUID]:
        """The group is FAILED: every live member keeps what it still lacks as exposure."""
        rows = await conn.fetch(
            f"""UPDATE hedge_job SET status = 'FAILED', attempts = greatest(attempts, $2),
                    last_error = $3, lead_job_id = NULL, carry_in = 0, next_attempt_at = NULL,
                    finished_at = $4, updated_at = $4
                WHERE (job_id = $1 OR lead_job_id = $1) AND status IN {_LIVE}
                RETURNING job_id""", lead, attempt, error[:500], now)  # noqa: S608
        return [r["job_id"] for r in rows]

    async def _add_carry(self, conn: asyncpg.Connection, lane: _Lane, delta: Decimal,
                         now: dt.datetime) -> None:
        await conn.execute(
            """UPDATE hedge_lane SET carry = carry + $3, updated_at = $4
               WHERE dealer_account_id = $1 AND symbol = $2""",
            lane.dealer_account_id, lane.symbol, delta, now)

    def _finished(self, finished: Sequence[tuple[_Job, str]], now: dt.datetime) -> None:
        for job, status in finished:
            self._metrics.hedge_job_finished(
                status, None if job.trade_order_id is None
                else max((now - job.created_at).total_seconds(), 0.0))
            if status == policy.FAILED:
                log.warning("hedge job %s FAILED", job.job_id)

    # ------------------------------------------------------------ postings

    def _rounding(self, txs: list[LedgerTransaction], lp: uuid.UUID, state: OrderState,
                  base_code: str, quote_code: str, fees: dict[str, Decimal]
                  ) -> dict[str, Decimal]:
        """What booking the answer as `txs` rounded off on the LP's wallet. A fee in an asset
        without a scale is left out: it is not booked at all, which reconciliation must show."""
        booked_fees = {code: amount for code, amount in fees.items() if code in self._scales}
        moves = hedge_fill_venue_moves(
            state.side.value, self._scales.asset(base_code), self._scales.asset(quote_code),
            state.filled_quantity, state.average_price or Decimal(0), booked_fees,
            quote_amount=policy.quote_amount(state.executions))
        return rounding_kept(txs, lp, moves)

    def _fee_unbooked(self, coid: str, amount: Decimal, code: str) -> None:
        log.error("hedge order %s: fee of %s %s not booked (no scale for %s)",
                  coid, amount, code, code)
        self._metrics.hedge_fee_unbooked()

    def _postings(self, lane: _Lane, metadata: dict[str, str], coid: str, lp: uuid.UUID,
                  state: OrderState, base_code: str, quote_code: str,
                  fees: dict[str, Decimal], now: dt.datetime) -> list[LedgerTransaction]:
        """The answer's postings; a fee in an asset without a scale is left out (see
        `_record_state`)."""
        base, quote = self._scales.asset(base_code), self._scales.asset(quote_code)
        assets = {code: self._scales.asset(code) for code in fees if code in self._scales}
        fee_codes = list(assets)
        first_fee = (assets[fee_codes[0]], fees[fee_codes[0]]) if fee_codes else None
        reference = f"hedge-{coid}"
        average = state.average_price or Decimal(0)
        txs = list(hedge_fill(lp, lane.dealer_account_id, state.side.value, base, quote,
                              state.filled_quantity, average, first_fee, reference=reference,
                              metadata=metadata, quote_amount=policy.quote_amount(
                                  state.executions), timestamp=now))
        for code in fee_codes[1:]:  # a second fee asset: its own fee transaction
            extra = other_fee(lp, lane.dealer_account_id, (assets[code], fees[code]),
                              fill_reference=reference, metadata=metadata, timestamp=now)
            if extra is not None:
                txs.append(extra)
        return txs


def _fill_metadata(lead_id: uuid.UUID, trade_order_id: uuid.UUID | None,
                   quote_id: uuid.UUID | None, coid: str, state: OrderState) -> dict[str, str]:
    """The metadata of a hedge fill's ledger entries (and of a fee booked late)."""
    metadata = {"jobId": str(lead_id), "clientOrderId": coid,
                "venueOrderId": state.venue_order_id}
    if trade_order_id is not None:  # the client fill hedged (a carry job has none)
        metadata["orderId"] = str(trade_order_id)
    if quote_id is not None:
        metadata["quoteId"] = str(quote_id)
    return metadata


def _spent(symbol: str, side: str, quantity: Decimal, limit: Decimal) -> tuple[str, Decimal]:
    base, quote = split_symbol(symbol)
    return (quote, quantity * limit) if side == "BUY" else (base, quantity)
