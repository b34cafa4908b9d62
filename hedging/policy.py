"""Hedging policy: pure decisions of the IMMEDIATE hedger (no I/O, no clock).

- client order ids are deterministic: `h-<job_id>-<attempt>-<leg>`, so a crash after a send is
  recovered by asking the venue about that id, never by sending again;
- a leg's limit is its plan worst price widened by the dealer's slippage tolerance (BUY up,
  SELL down), kept on the venue's tick inside that tolerance;
- progress is measured in NET base: a BUY whose fee is charged in base received less than it
  filled, so the shortfall stays to hedge (the dealer's base position ends within one lot of 0).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

from venues.base import Execution, OrderState, OrderStatus

BPS = Decimal(10000)

# hedge_order statuses
SENT = "SENT"
FILLED = "FILLED"
PARTIALLY_FILLED = "PARTIALLY_FILLED"
EXPIRED = "EXPIRED"
REJECTED = "REJECTED"
UNKNOWN = "UNKNOWN"
OPEN_ORDER_STATUSES = (SENT, UNKNOWN)

# hedge_job statuses
PENDING = "PENDING"
IN_PROGRESS = "IN_PROGRESS"
HEDGED = "HEDGED"
FAILED = "FAILED"


@dataclass(frozen=True, slots=True)
class PlanLeg:
    index: int
    trading_account_id: uuid.UUID
    quantity: Decimal
    worst_price: Decimal


def client_order_id(job_id: uuid.UUID, attempt: int, leg: int) -> str:
    return f"h-{job_id}-{attempt}-{leg}"


def plan_legs(plan: Mapping[str, Any]) -> list[PlanLeg]:
    return [PlanLeg(index, uuid.UUID(str(leg["tradingAccountId"])), Decimal(leg["quantity"]),
                    Decimal(leg["worstPrice"]))
            for index, leg in enumerate(plan.get("legs", []))]


def limit_price(side: str, worst_price: Decimal, slippage_bps: Decimal,
                tick: Decimal | None) -> Decimal:
    """The IOC limit: worst price widened by the tolerance, on the tick, never beyond it."""
    if side == "BUY":
        raw = worst_price * (1 + slippage_bps / BPS)
        rounding = ROUND_FLOOR
    else:
        raw = worst_price * (1 - slippage_bps / BPS)
        rounding = ROUND_CEILING
    if tick is None or tick <= 0:
        return raw
    return ((raw / tick).to_integral_value(rounding=rounding) * tick).normalize()


def round_to_lot(quantity: Decimal, lot: Decimal) -> Decimal:
    if lot <= 0:
        return quantity
    if quantity <= 0:
        return Decimal(0)
    return (quantity / lot).to_integral_value(rounding=ROUND_FLOOR) * lot


def base_fee(executions: Iterable[Execution], base: str) -> Decimal:
    return sum((e.fee.amount for e in executions if e.fee.asset == base), Decimal(0))


def net_progress(side: str, filled: Decimal, fee_in_base: Decimal) -> Decimal:
    """How much of the dealer's hedge a fill achieved, net of a fee charged in base."""
    return filled - fee_in_base if side == "BUY" else filled + fee_in_base


def leg_remainders(legs: Sequence[PlanLeg], progress_by_leg: Mapping[int, Decimal],
                   lot: Decimal) -> dict[int, Decimal]:
    """What each leg still has to do, in whole lots (legs with nothing left are left out)."""
    remainders: dict[int, Decimal] = {}
    for leg in legs:
        left = round_to_lot(leg.quantity - progress_by_leg.get(leg.index, Decimal(0)), lot)
        if left > 0:
            remainders[leg.index] = left
    return remainders


def allocate(legs: Sequence[PlanLeg], filled_by_leg: Mapping[int, Decimal], total_left: Decimal,
             lot: Decimal, sendable: Callable[[int, Decimal], bool]) -> dict[int, Decimal]:
    """The next attempt's order quantity per leg.

    Each leg re-sends what it did not fill; what the job still lacks beyond that (base fees)
    goes to the leg with the most to do (the deepest in the plan when none has), as one order.
    A leg's quantity the venue would refuse as too small (`sendable` False) joins that leg too;
    when even the joined quantity is too small, nothing is sent (a residual below the venue's
    minimum: answered as an empty allocation).
    """
    total_left = round_to_lot(total_left, lot)
    if total_left <= 0 or not legs:
        return {}
    orders = {leg.index: left for leg in legs
              if (left := round_to_lot(leg.quantity - filled_by_leg.get(leg.index, Decimal(0)),
                                       lot)) > 0}
    orders = {index: quantity for index, quantity in orders.items()}
    by_index = {leg.index: leg for leg in legs}
    main = (max(orders, key=lambda i: (orders[i], -i)) if orders
            else max(by_index, key=lambda i: (by_index[i].quantity, -i)))
    extra = total_left - sum(orders.values())
    if extra > 0:
        orders[main] = orders.get(main, Decimal(0)) + extra
    for index in [i for i in orders if i != main and not sendable(i, orders[i])]:
        orders[main] = orders.get(main, Decimal(0)) + orders.pop(index)
    if main in orders and not sendable(main, orders[main]):
        orders.pop(main)
    return orders


def order_status_of(state: OrderState) -> str:
    """The hedge_order status of a closed venue order."""
    if state.filled_quantity >= state.quantity and state.filled_quantity > 0:
        return FILLED
    if state.filled_quantity > 0:
        return PARTIALLY_FILLED
    if state.status is OrderStatus.REJECTED:
        return REJECTED
    return EXPIRED


def fees_by_asset(executions: Iterable[Execution]) -> dict[str, Decimal]:
    fees: dict[str, Decimal] = {}
    for e in executions:
        if e.fee.amount:
            fees[e.fee.asset] = fees.get(e.fee.asset, Decimal(0)) + e.fee.amount
    return fees


def quote_amount(executions: Iterable[Execution]) -> Decimal:
    return sum((e.price * e.quantity for e in executions), Decimal(0))
