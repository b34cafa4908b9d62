"""Hedge jobs as the desk sees and steers them: the list with their orders, retry, cancel.

Retry and cancel lock the job row (`FOR UPDATE`), which a hedge worker's claim (`FOR UPDATE SKIP
LOCKED`, then `claimed_by` / `claimed_until` committed) cannot pass: either the worker claimed
the job first and the desk's call sees the claim (and is refused), or the desk's call commits
first and the worker never selects the job in its new state (a CANCELLED job is not claimable;
a retried job is claimable again from scratch). A job with hedge orders whose outcome is not
known (SENT, UNKNOWN) is never cancelled: those orders may still fill.

Both actions are audited: the dealer's operation history records them for good (HEDGE_RETRY,
HEDGE_CANCEL: actor, reason, the job's status and error before), in the action's transaction;
the job's `last_error` says who did what, when and why (a retried job keeps it until the worker
records a newer error), and a structured log line records it too.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, localcontext
from typing import Any

import asyncpg

from dealer.errors import ApiError, Errors
from dealer.services.records import record_operation
from dealer.uow import UnitOfWork
from dealer.wire import iso

log = logging.getLogger(__name__)

PENDING = "PENDING"
FAILED = "FAILED"
CANCELLED = "CANCELLED"
CANCELLABLE = (PENDING, FAILED)
AUDIT_LENGTH = 1000


@dataclass(frozen=True, slots=True)
class HedgeOrderRecord:
    client_order_id: str
    attempt: int
    leg: int
    trading_account_id: uuid.UUID
    venue: str
    symbol: str
    side: str
    quantity: Decimal
    limit_price: Decimal
    status: str
    filled_quantity: Decimal
    avg_price: Decimal | None
    fee_asset: str | None  # one of `fees` (the base asset's when there is one)
    fee_amount: Decimal | None
    fees: dict[str, Decimal]  # every fee asset the venue charged the order
    reject_reason: str | None
    created_at: dt.datetime
    updated_at: dt.datetime

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> HedgeOrderRecord:
        values = {name: row[name] for name in cls.__slots__}
        values["fees"] = order_fees(row["fees"], row["fee_asset"], row["fee_amount"])
        return cls(**values)


def order_fees(stored: Mapping[str, str] | None, fee_asset: str | None,
               fee_amount: Decimal | None) -> dict[str, Decimal]:
    """A hedge order's fees by asset: its `fees` column, or for an order recorded before that
    column its one fee."""
    if stored is not None:
        return {code: Decimal(amount) for code, amount in stored.items()}
    return {fee_asset: fee_amount} if fee_asset and fee_amount else {}


@dataclass(frozen=True, slots=True)
class HedgeJobRecord:
    job_id: uuid.UUID
    dealer_account_id: uuid.UUID
    trade_order_id: uuid.UUID | None  # None: a carry job
    symbol: str
    side: str
    quantity: Decimal
    hedged_quantity: Decimal
    status: str
    attempts: int
    claimed_by: str | None
    claimed_until: dt.datetime | None
    last_error: str | None
    plan: dict[str, Any]
    first_order_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime
    orders: tuple[HedgeOrderRecord, ...] = ()

    @classmethod
    def from_row(cls, row: asyncpg.Record,
                 orders: tuple[HedgeOrderRecord, ...] = ()) -> HedgeJobRecord:
        values = {name: row[name] for name in cls.__slots__ if name != "orders"}
        if not isinstance(values["plan"], dict):
            values["plan"] = {}
        return cls(**values, orders=orders)

    @property
    def plan_vwap(self) -> Decimal | None:
        vwap = self.plan.get("vwap")
        return None if vwap is None else Decimal(str(vwap))

    def claimed_at(self, now: dt.datetime) -> bool:
        """A worker holds the job: its claim is recorded and its lease still runs."""
        return (self.claimed_by is not None and self.claimed_until is not None
                and self.claimed_until > now)


def plan_price(plan: Mapping[str, Any], leg: int, lp_account_id: uuid.UUID) -> Decimal | None:
    """The plan's price for a hedge order: its leg's VWAP when the order went to that leg's LP,
    else the quantity-weighted VWAP of every leg (a re-routed order), raw (before fees)."""
    legs = plan.get("legs") or []
    try:
        if 0 <= leg < len(legs) and str(legs[leg]["tradingAccountId"]) == str(lp_account_id):
            return Decimal(str(legs[leg]["vwap"]))
        quantity = sum((Decimal(str(x["quantity"])) for x in legs), Decimal(0))
        if not quantity:
            return None
        with localcontext() as context:
            context.prec = 60
            cost = sum((Decimal(str(x["quantity"])) * Decimal(str(x["vwap"])) for x in legs),
                       Decimal(0))
        return cost / quantity  # 28 significant digits: a reference price, not an amount
    except (KeyError, TypeError, ArithmeticError):
        return None


_JOB_COLUMNS = ", ".join(n for n in HedgeJobRecord.__slots__ if n != "orders")
_ORDER_COLUMNS = ", ".join(HedgeOrderRecord.__slots__)


@dataclass(frozen=True, slots=True)
class JobFilter:
    dealer_account_id: uuid.UUID | None = None
    status: str | None = None
    trade_order_id: uuid.UUID | None = None
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    ascending: bool = False
    limit: int = 50
    offset: int = 0


async def _orders_of(conn: asyncpg.Connection, job_ids: list[uuid.UUID]
                     ) -> dict[uuid.UUID, tuple[HedgeOrderRecord, ...]]:
    """The hedge orders of these jobs, in one query, by attempt then leg."""
    if not job_ids:
        return {}
    rows = await conn.fetch(
        f"""SELECT job_id, {_ORDER_COLUMNS} FROM hedge_order
            WHERE job_id = ANY($1::uuid[]) ORDER BY attempt, leg""",  # noqa: S608
        job_ids)
    found: dict[uuid.UUID, list[HedgeOrderRecord]] = {}
    for row in rows:
        found.setdefault(row["job_id"], []).append(HedgeOrderRecord.from_row(row))
    return {job_id: tuple(orders) for job_id, orders in found.items()}


async def list_jobs(conn: asyncpg.Connection, where: JobFilter
                    ) -> tuple[list[HedgeJobRecord], int]:
    """One page of hedge jobs (newest first unless `ascending`) with their orders, and how
    many match the filters; the time range is on the job's creation (the client fill)."""
    condition = """($1::uuid IS NULL OR dealer_account_id = $1)
                   AND ($2::text IS NULL OR status = $2)
                   AND ($3::uuid IS NULL OR trade_order_id = $3)
                   AND ($4::timestamptz IS NULL OR created_at >= $4)
                   AND ($5::timestamptz IS NULL OR created_at < $5)"""
    args = (where.dealer_account_id, where.status, where.trade_order_id, where.start, where.end)
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        total = await conn.fetchval(
            f"SELECT count(*) FROM hedge_job WHERE {condition}", *args)  # noqa: S608
        rows = await conn.fetch(
            f"""SELECT {_JOB_COLUMNS} FROM hedge_job WHERE {condition}
                ORDER BY created_at {'ASC' if where.ascending else 'DESC'}, job_id
                LIMIT $6 OFFSET $7""",  # noqa: S608
            *args, where.limit, where.offset)
        orders = await _orders_of(conn, [r["job_id"] for r in rows])
    return [HedgeJobRecord.from_row(r, orders.get(r["job_id"], ())) for r in rows], int(total)


async def get_job(conn: asyncpg.Connection, job_id: uuid.UUID) -> HedgeJobRecord:
    """One hedge job with its orders, or HEDGE_JOB_NOT_FOUND."""
    row = await conn.fetchrow(
        f"SELECT {_JOB_COLUMNS} FROM hedge_job WHERE job_id = $1", job_id)  # noqa: S608
    if row is None:
        raise ApiError(Errors.HEDGE_JOB_NOT_FOUND)
    orders = await _orders_of(conn, [job_id])
    return HedgeJobRecord.from_row(row, orders.get(job_id, ()))


async def _locked_job(conn: asyncpg.Connection, job_id: uuid.UUID) -> HedgeJobRecord:
    row = await conn.fetchrow(
        f"SELECT {_JOB_COLUMNS} FROM hedge_job WHERE job_id = $1 FOR UPDATE",  # noqa: S608
        job_id)
    if row is None:
        raise ApiError(Errors.HEDGE_JOB_NOT_FOUND)
    return HedgeJobRecord.from_row(row)


def _audit(action: str, actor: str, reason: str, now: dt.datetime,
           previous_error: str | None = None) -> str:
    text = f"{action} by {actor} at {iso(now)}: {reason}"
    if previous_error:
        text += f" (previous error: {previous_error})"
    return text[:AUDIT_LENGTH]


async def _record(conn: asyncpg.Connection, operation: str, job: HedgeJobRecord, actor: str,
                  reason: str, now: dt.datetime) -> None:
    """The action in the dealer's operation history, in the action's transaction."""
    await record_operation(conn, job.dealer_account_id, operation, now, {
        "jobId": str(job.job_id), "actor": actor, "reason": reason,
        "previousStatus": job.status, "previousError": job.last_error})


def _log_action(action: str, job: HedgeJobRecord, actor: str, reason: str) -> None:
    log.info("hedge job %s %s by %s (was %s): %s", job.job_id, action, actor, job.status, reason,
             extra={"event": f"hedge_job_{action}", "job_id": str(job.job_id),
                    "dealer_account_id": str(job.dealer_account_id), "actor": actor,
                    "reason": reason, "previous_status": job.status})


async def retry_job(uow: UnitOfWork, now: dt.datetime, job_id: uuid.UUID, *, actor: str,
                    reason: str) -> HedgeJobRecord:
    """A FAILED job back to PENDING with a fresh attempt budget (`attempts` 0) and no claim,
    so the next free hedge worker picks it up; what it hedged already stays hedged.

    `attempts` is the budget spent since the job was created or retried; the client order ids
    of a retried job's new attempts must continue after the highest attempt its hedge_order
    rows record (h-<job>-<attempt>-<leg> is unique), which is the worker's side of this.
    """
    conn = uow.conn
    job = await _locked_job(conn, job_id)
    if job.status != FAILED:
        raise ApiError(Errors.HEDGE_JOB_NOT_FAILED,
                       f"Only a FAILED hedge job can be retried; this one is {job.status}")
    await conn.execute(
        """UPDATE hedge_job SET status = 'PENDING', attempts = 0, claimed_by = NULL,
               claimed_until = NULL, last_error = $2, updated_at = $3
           WHERE job_id = $1""",
        job_id, _audit("RETRY", actor, reason, now, job.last_error), now)
    await _record(conn, "HEDGE_RETRY", job, actor, reason, now)
    updated = await get_job(conn, job_id)
    await uow.commit()
    _log_action("retry", job, actor, reason)
    return updated


async def cancel_job(uow: UnitOfWork, now: dt.datetime, job_id: uuid.UUID, *, actor: str,
                     reason: str) -> HedgeJobRecord:
    """A PENDING or FAILED job, held by no worker and with no order in flight, becomes
    CANCELLED: the desk hedged its remainder by hand, so it no longer counts as exposure."""
    conn = uow.conn
    job = await _locked_job(conn, job_id)
    if job.status not in CANCELLABLE:
        raise ApiError(Errors.HEDGE_JOB_NOT_CANCELLABLE,
                       f"Only a PENDING or FAILED hedge job can be cancelled; this one is "
                       f"{job.status}")
    if job.claimed_at(now):
        raise ApiError(Errors.HEDGE_JOB_CLAIMED,
                       f"Hedge worker {job.claimed_by} holds this job until "
                       f"{iso(job.claimed_until)}; retry when it is released")
    in_flight = await conn.fetchval(
        """SELECT count(*) FROM hedge_order
           WHERE job_id = $1 AND status IN ('SENT', 'UNKNOWN')""", job_id)
    if in_flight:
        raise ApiError(Errors.HEDGE_ORDERS_IN_FLIGHT,
                       f"The hedge job has {in_flight} order(s) whose outcome is not known yet",
                       {"metadata": {"ordersInFlight": int(in_flight)}})
    # The lane's carry the job had taken (dust, not part of what the desk hedged by hand) goes
    # back to its lane.
    await conn.execute(
        """WITH job AS (
               UPDATE hedge_job j SET status = 'CANCELLED', claimed_by = NULL,
                   claimed_until = NULL, carry_in = 0, last_error = $2, updated_at = $3
               FROM hedge_job before WHERE j.job_id = $1 AND before.job_id = j.job_id
               RETURNING j.dealer_account_id, j.symbol, j.side, before.carry_in)
           UPDATE hedge_lane l SET carry = l.carry + CASE WHEN job.side = 'BUY'
                   THEN job.carry_in ELSE -job.carry_in END, updated_at = $3
           FROM job WHERE l.dealer_account_id = job.dealer_account_id
             AND l.symbol = job.symbol AND job.carry_in <> 0""",
        job_id, _audit("CANCEL", actor, reason, now, job.last_error), now)
    await _record(conn, "HEDGE_CANCEL", job, actor, reason, now)
    updated = await get_job(conn, job_id)
    await uow.commit()
    _log_action("cancel", job, actor, reason)
    return updated
