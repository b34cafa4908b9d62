"""Hedging policy: the pure decisions of the hedger (no I/O, no clock, no randomness).

The hedger works one *lane* at a time: the hedge jobs of one dealer in one symbol. In a round it
forms *groups* (a lead job whose orders also hedge its riders), routes each group's net target
across the LPs, and, once the venues answered, allocates the progress back to the jobs.

- Quantities are base currency. A job's *need* is what its own orders still have to do, in the
  job's direction: quantity - hedged + carry-in. Signed quantities are BUY-positive.
- IMMEDIATE: every fill leads its own group (its own orders). NETTED: a window's fills are netted
  first — opposite fills offset each other (both count as hedged) — and what is left is one group.
- Residuals: a need the LP venues would refuse as too small (below a venue's minimum quantity or
  notional) is never dropped. Its job stays open (the exposure stays visible) and the next group
  of its lane takes it: as a rider when on the same side, offset against the lead otherwise.
- Dust: what is left below one lot (a BUY's fee charged in base, lot rounding) cannot be ordered
  anywhere. The job is HEDGED and its dust moves to the lane's *carry*, which the next lead
  hedges with its own quantity, so dust never accumulates: the dealer's base position stays
  within one lot of zero.
- Routing starts from the quote's hedge plan on its first attempt and re-routes remainders on
  fresh books by fee-adjusted price, within each LP's available balance; every limit price stays
  inside the dealer's slippage tolerance around the plan's worst price.
- Client order ids are deterministic (`h-<lead job>-<attempt>-<leg>`), so an order whose answer
  was lost is found again by asking the venue, never by sending it twice.
"""

from __future__ import annotations

import heapq
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal
from typing import Any, Literal

from venues.base import Execution, OrderState, OrderStatus

Side = Literal["BUY", "SELL"]
Mode = Literal["IMMEDIATE", "NETTED"]
Level = tuple[Decimal, Decimal]  # price, quantity
LevelKey = tuple[uuid.UUID, Decimal]  # LP account, level price

BPS = Decimal(10000)
ZERO = Decimal(0)

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
CANCELLED = "CANCELLED"


def sign(side: str) -> int:
    """+1 for BUY, -1 for SELL."""
    return 1 if side == "BUY" else -1


def side_of(signed_quantity: Decimal) -> Side:
    return "BUY" if signed_quantity > 0 else "SELL"


def client_order_id(job_id: uuid.UUID, attempt: int, leg: int) -> str:
    return f"h-{job_id}-{attempt}-{leg}"


# ---------------------------------------------------------------- the quote's hedge plan


@dataclass(frozen=True, slots=True)
class PlanLeg:
    index: int
    trading_account_id: uuid.UUID
    quantity: Decimal
    worst_price: Decimal
    vwap: Decimal | None = None


@dataclass(frozen=True, slots=True)
class HedgePlan:
    """What the quote's sweep implied: per-LP quantities, raw VWAPs and worst raw prices."""

    legs: tuple[PlanLeg, ...]
    lot_size: Decimal
    worst_raw_price: Decimal | None

    @property
    def raw_vwap(self) -> Decimal | None:
        """The plan's VWAP before fees (what executions are compared with for slippage)."""
        priced = [leg for leg in self.legs if leg.vwap is not None]
        quantity = sum((leg.quantity for leg in priced), ZERO)
        if not priced or quantity <= 0:
            return None
        return sum((leg.quantity * (leg.vwap or ZERO) for leg in priced), ZERO) / quantity

    @property
    def reference_worst(self) -> Decimal | None:
        """The worst raw price the plan accepted (its legs' worst when the plan has none)."""
        if self.worst_raw_price is not None:
            return self.worst_raw_price
        return None if not self.legs else max(leg.worst_price for leg in self.legs)


def _decimal(value: Any) -> Decimal | None:
    return None if value is None or value == "" else Decimal(str(value))


def parse_plan(plan: Mapping[str, Any]) -> HedgePlan:
    legs = tuple(
        PlanLeg(index, uuid.UUID(str(leg["tradingAccountId"])), Decimal(str(leg["quantity"])),
                Decimal(str(leg["worstPrice"])), _decimal(leg.get("vwap")))
        for index, leg in enumerate(plan.get("legs", [])))
    return HedgePlan(legs, _decimal(plan.get("lotSize")) or ZERO,
                     _decimal(plan.get("worstRawPrice")))


# ---------------------------------------------------------------- prices and lots


def price_bound(side: str, reference: Decimal, tolerance_bps: Decimal) -> Decimal:
    """The worst price the dealer accepts: the plan's worst price widened by the tolerance."""
    factor = 1 + tolerance_bps / BPS if side == "BUY" else 1 - tolerance_bps / BPS
    return reference * factor


def on_tick(side: str, price: Decimal, tick: Decimal | None) -> Decimal:
    """`price` on the venue's tick, never beyond it (BUY rounds down, SELL up)."""
    if tick is None or tick <= 0:
        return price
    rounding = ROUND_FLOOR if side == "BUY" else ROUND_CEILING
    return ((price / tick).to_integral_value(rounding=rounding) * tick).normalize()


def limit_price(side: str, worst_price: Decimal, slippage_bps: Decimal,
                tick: Decimal | None) -> Decimal:
    """The IOC limit: the worst price widened by the tolerance, on the tick, never beyond it."""
    return on_tick(side, price_bound(side, worst_price, slippage_bps), tick)


def round_to_lot(quantity: Decimal, lot: Decimal, rounding: str = ROUND_FLOOR) -> Decimal:
    if lot <= 0:
        return quantity
    if quantity <= 0 and rounding == ROUND_FLOOR:
        return ZERO
    return (quantity / lot).to_integral_value(rounding=rounding) * lot


def slippage_bps(side: str, price: Decimal, reference: Decimal) -> Decimal:
    """An execution against the plan, bps; positive is worse for the dealer."""
    if reference <= 0:
        return ZERO
    moved = (price - reference) / reference * BPS
    return moved if side == "BUY" else -moved


# ---------------------------------------------------------------- executions


def base_fee(executions: Iterable[Execution], base: str) -> Decimal:
    return sum((f.amount for e in executions for f in e.fees if f.asset == base), ZERO)


def net_progress(side: str, filled: Decimal, fee_in_base: Decimal) -> Decimal:
    """How much of the dealer's hedge a fill achieved, net of a fee charged in base."""
    return filled - fee_in_base if side == "BUY" else filled + fee_in_base


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
        for fee in e.fees:
            if fee.amount:
                fees[fee.asset] = fees.get(fee.asset, ZERO) + fee.amount
    return fees


def quote_amount(executions: Iterable[Execution]) -> Decimal:
    return sum((e.price * e.quantity for e in executions), ZERO)


# ---------------------------------------------------------------- routing


@dataclass(frozen=True, slots=True)
class LpRoute:
    """An LP the lane may route to: linked to the dealer, not draining, ACTIVE.

    `levels` is the side of its fresh book an order takes (asks for a BUY), best first, or None
    without a fresh book; `available` is its free balance of what the order spends (quote for a
    BUY, base for a SELL), None when unknown. `min_share_notional` is one minor unit of the
    quote asset in the ledger: a share of a split worth less joins the largest share, as one
    the venue would refuse does (its fill would book a quote leg of nothing, or all rounding),
    while a whole hedge that small is still sent.
    """

    trading_account_id: uuid.UUID
    venue: str
    taker_fee: Decimal
    tick_size: Decimal
    lot_size: Decimal
    min_quantity: Decimal
    min_notional: Decimal
    levels: tuple[Level, ...] | None = None
    available: Decimal | None = None
    fee_in_base: bool = True  # a BUY pays its fee in the base it receives (Binance, paper)
    min_share_notional: Decimal = ZERO

    def net_factor(self, side: str) -> Decimal:
        """Base progress per unit ordered."""
        return 1 - self.taker_fee if side == "BUY" and self.fee_in_base else Decimal(1)

    def adjusted(self, side: str, price: Decimal) -> Decimal:
        return price * (1 + self.taker_fee) if side == "BUY" else price * (1 - self.taker_fee)

    def sendable(self, quantity: Decimal, limit: Decimal) -> bool:
        return (quantity > 0 and quantity >= self.min_quantity
                and quantity * limit >= self.min_notional)

    def worth_a_share(self, quantity: Decimal, limit: Decimal) -> bool:
        """Whether a share of a split goes to this LP on its own (else to the largest share)."""
        return self.sendable(quantity, limit) and quantity * limit >= self.min_share_notional


@dataclass(frozen=True, slots=True)
class OrderIntent:
    trading_account_id: uuid.UUID
    venue: str
    quantity: Decimal
    limit_price: Decimal
    expected_net: Decimal


@dataclass(frozen=True, slots=True)
class Routing:
    """Where a target goes. `below_minimum`: nothing was sendable although there is a target
    (a residual); `unrouted`: what no LP could take (balances)."""

    orders: tuple[OrderIntent, ...]
    expected_net: Decimal
    below_minimum: bool = False
    unrouted: Decimal = ZERO
    reason: str | None = None
    taken: Mapping[LevelKey, Decimal] = field(default_factory=dict)


def _capacity(lp: LpRoute, side: str, limit: Decimal) -> Decimal | None:
    """The largest quantity the LP's balance pays for (None: unknown, unbounded)."""
    if lp.available is None:
        return None
    if side == "BUY":
        return round_to_lot(lp.available / limit, lp.lot_size) if limit > 0 else ZERO
    return round_to_lot(lp.available, lp.lot_size)


def route(side: str, target: Decimal, lps: Sequence[LpRoute], bound: Decimal, *,
          plan_legs: Sequence[PlanLeg] = (), avoid: frozenset[uuid.UUID] = frozenset(),
          taken: Mapping[LevelKey, Decimal] | None = None) -> Routing:
    """Split a net base `target` (the group's side) into IOC limit orders.

    1. The plan's legs first (first attempt), on LPs still eligible, within their balance.
    2. The rest on fresh books, best fee-adjusted level first across LPs, levels within each
       LP's limit only, net of what earlier groups of the round took (`taken`).
    3. What the books cannot show goes to the best LP with balance left (IOC: it takes what is
       there when it arrives); what no balance covers is `unrouted`.
    Quantities are grossed up for fees charged in base, rounded to each venue's lot so that the
    expected net total is within half a lot of the target; an LP's share the venue would refuse
    as too small, or worth less than one minor unit of the quote asset in the ledger, joins the
    largest share. LPs in `avoid` (they just refused this group) are used only when no other LP
    can take anything.
    """
    others = [lp for lp in lps if lp.trading_account_id not in avoid]
    if avoid and others:
        without = route(side, target, others, bound, plan_legs=plan_legs, taken=taken)
        if without.orders and without.unrouted <= 0:
            return without
    taken_now: dict[LevelKey, Decimal] = dict(taken or {})
    if target <= 0 or not lps:
        reason = None if target <= 0 else "no LP linked, active and not draining"
        return Routing((), ZERO, unrouted=max(target, ZERO), reason=reason, taken=taken_now)
    usable = list(lps)
    by_id = {lp.trading_account_id: lp for lp in usable}
    limits = {lp.trading_account_id: on_tick(side, bound, lp.tick_size) for lp in usable}
    room: dict[uuid.UUID, Decimal | None] = {
        lp.trading_account_id: _capacity(lp, side, limits[lp.trading_account_id])
        for lp in usable}
    gross: dict[uuid.UUID, Decimal] = {}
    left = target

    def take(account: uuid.UUID, wanted_gross: Decimal) -> Decimal:
        """Add up to `wanted_gross` on the LP within its room; answers the net it adds."""
        nonlocal left
        capacity = room[account]
        quantity = wanted_gross if capacity is None else min(wanted_gross, capacity)
        if quantity <= 0:
            return ZERO
        if capacity is not None:
            room[account] = capacity - quantity
        gross[account] = gross.get(account, ZERO) + quantity
        net = quantity * by_id[account].net_factor(side)
        left -= net
        return net

    for leg in plan_legs:
        if left <= 0:
            break
        lp = by_id.get(leg.trading_account_id)
        if lp is not None:
            take(lp.trading_account_id, min(leg.quantity, left) / lp.net_factor(side))

    if left > 0:

        def within_limit(order: int, lp: LpRoute
                         ) -> Iterator[tuple[Decimal, int, LpRoute, Decimal, Decimal]]:
            """The LP's levels up to its limit, best first (fee-adjusted, BUY ascending)."""
            limit = limits[lp.trading_account_id]
            for price, size in lp.levels or ():
                if price > limit if side == "BUY" else price < limit:
                    return
                adjusted = lp.adjusted(side, price)
                yield (adjusted if side == "BUY" else -adjusted, order, lp, price, size)

        # Each LP's levels are already best first, so merging them lazily gives the order of
        # sorting all of them, and a remainder of a few lots reads only the first levels.
        candidates = heapq.merge(*(within_limit(order, lp) for order, lp in enumerate(usable)),
                                 key=lambda c: (c[0], c[1]))
        for _, _, lp, price, size in candidates:
            if left <= 0:
                break
            key = (lp.trading_account_id, price)
            free = size - taken_now.get(key, ZERO)
            if free <= 0:
                continue
            factor = lp.net_factor(side)
            before = gross.get(lp.trading_account_id, ZERO)
            take(lp.trading_account_id, min(free, left / factor))
            taken_now[key] = taken_now.get(key, ZERO) + gross.get(lp.trading_account_id,
                                                                  ZERO) - before

    if left > 0:
        # Beyond the depth the books show: the best LP with room takes it as IOC at its limit.
        for lp in _by_best_level(side, usable, gross):
            if left <= 0:
                break
            take(lp.trading_account_id, left / lp.net_factor(side))

    unrouted = max(left, ZERO)
    return _finish(side, target - unrouted, usable, gross, limits, room, unrouted, taken_now)


def _by_best_level(side: str, lps: Sequence[LpRoute], gross: Mapping[uuid.UUID, Decimal]
                   ) -> list[LpRoute]:
    """LPs with the largest share first, then by their best fee-adjusted level."""

    def key(lp: LpRoute) -> tuple[Decimal, Decimal]:
        best = lp.levels[0][0] if lp.levels else None
        adjusted = ZERO if best is None else lp.adjusted(side, best)
        return (-gross.get(lp.trading_account_id, ZERO),
                adjusted if side == "BUY" else -adjusted)

    return sorted(lps, key=key)


def _finish(side: str, wanted_net: Decimal, lps: Sequence[LpRoute],
            gross: dict[uuid.UUID, Decimal], limits: Mapping[uuid.UUID, Decimal],
            room: Mapping[uuid.UUID, Decimal | None], unrouted: Decimal,
            taken: dict[LevelKey, Decimal]) -> Routing:
    """Lot rounding, minimum sizes, and the intents in a stable order."""
    by_id = {lp.trading_account_id: lp for lp in lps}
    if not gross:
        return Routing((), ZERO, unrouted=unrouted,
                       reason="no LP has balance for it" if unrouted > 0 else None, taken=taken)
    order = list(gross)  # plan legs first, then books, then the rest: as they were taken
    main = max(order, key=lambda a: (gross[a] * by_id[a].net_factor(side), -order.index(a)))
    quantities = {a: round_to_lot(q, by_id[a].lot_size) for a, q in gross.items()}

    def spare(account: uuid.UUID) -> Decimal | None:
        capacity = room[account]
        return None if capacity is None else capacity + gross[account] - quantities[account]

    def net_of(account: uuid.UUID, quantity: Decimal) -> Decimal:
        return quantity * by_id[account].net_factor(side)

    def move_to(account: uuid.UUID, net: Decimal) -> None:
        """Add `net` (may be negative) to the account's order, rounded to nearest lot."""
        lp = by_id[account]
        extra = round_to_lot(net / lp.net_factor(side), lp.lot_size, ROUND_HALF_EVEN)
        most = spare(account)
        if most is not None:
            extra = min(extra, round_to_lot(most, lp.lot_size))
        quantities[account] = max(quantities[account] + extra, ZERO)

    missing = wanted_net - sum((net_of(a, q) for a, q in quantities.items()), ZERO)
    move_to(main, missing)
    for account in order:
        if account != main and quantities[account] > 0 and not by_id[account].worth_a_share(
                quantities[account], limits[account]):
            net = net_of(account, quantities[account])
            quantities[account] = ZERO
            move_to(main, net)
    if not by_id[main].sendable(quantities[main], limits[main]):
        whole = sum((net_of(a, q) for a, q in quantities.items()), ZERO)
        best = _one_lp_for(side, whole, lps, limits, room)
        if best is None:
            return Routing((), ZERO, below_minimum=True, unrouted=unrouted,
                           reason=f"{whole} is below every LP's minimum order", taken=taken)
        quantities = {a: ZERO for a in quantities}
        account, quantity = best
        quantities[account] = quantity
        order.append(account)
    intents = []
    for account in dict.fromkeys(order):
        quantity = quantities.get(account, ZERO)
        if quantity > 0:
            intents.append(OrderIntent(account, by_id[account].venue, quantity, limits[account],
                                       net_of(account, quantity)))
    expected = sum((i.expected_net for i in intents), ZERO)
    # A share too small for its venue that the main LP had no balance left to take is not
    # sent: it is unrouted like any quantity no balance covers, never silently dropped.
    short = wanted_net - expected
    if short > by_id[main].lot_size / 2:
        unrouted += short
    return Routing(tuple(intents), expected, unrouted=unrouted, taken=taken)


def _one_lp_for(side: str, net: Decimal, lps: Sequence[LpRoute],
                limits: Mapping[uuid.UUID, Decimal], room: Mapping[uuid.UUID, Decimal | None]
                ) -> tuple[uuid.UUID, Decimal] | None:
    """A single LP that accepts the whole `net` as one order (finest lot first)."""
    for lp in sorted(lps, key=lambda lp: (lp.min_quantity, lp.lot_size)):
        quantity = round_to_lot(net / lp.net_factor(side), lp.lot_size, ROUND_HALF_EVEN)
        capacity = _capacity(lp, side, limits[lp.trading_account_id])
        if capacity is not None and quantity > capacity:
            continue
        if lp.sendable(quantity, limits[lp.trading_account_id]):
            return lp.trading_account_id, quantity
    return None


# ---------------------------------------------------------------- groups


@dataclass(frozen=True, slots=True)
class JobState:
    """A hedge job as the policy sees it (jobs are given oldest first)."""

    job_id: uuid.UUID
    side: Side
    quantity: Decimal
    hedged: Decimal
    carry_in: Decimal = ZERO
    residual: bool = False
    lead: uuid.UUID | None = None
    attempts: int = 0

    @property
    def need(self) -> Decimal:
        return self.quantity - self.hedged + self.carry_in


@dataclass(frozen=True, slots=True)
class Group:
    """A lead job whose orders hedge its own need and its riders' (same side)."""

    lead: uuid.UUID
    side: Side
    riders: tuple[uuid.UUID, ...]
    target: Decimal
    attempts: int


@dataclass(frozen=True, slots=True)
class Netting:
    """What a round decides before routing.

    `hedged` and `carry_in` are increments per job (offsets count as hedged: opposite needs
    cancel inside the dealer's book); `lane_carry` is the lane's carry afterwards; `waiting` are
    residual jobs no group could take this round.
    """

    groups: tuple[Group, ...]
    hedged: Mapping[uuid.UUID, Decimal]
    carry_in: Mapping[uuid.UUID, Decimal]
    lane_carry: Decimal
    waiting: tuple[uuid.UUID, ...]


class _Book:
    """Needs as they change while a round is being netted."""

    def __init__(self, jobs: Sequence[JobState]) -> None:
        self.jobs = {job.job_id: job for job in jobs}
        self.hedged: dict[uuid.UUID, Decimal] = {}
        self.carry_in: dict[uuid.UUID, Decimal] = {}

    def need(self, job_id: uuid.UUID) -> Decimal:
        return (self.jobs[job_id].need + self.carry_in.get(job_id, ZERO)
                - self.hedged.get(job_id, ZERO))

    def offset(self, job_id: uuid.UUID, amount: Decimal) -> None:
        """Credit `amount` of the job's need: its carry-in first, then its own quantity (so
        hedged never exceeds quantity)."""
        carried = max(self.jobs[job_id].carry_in + self.carry_in.get(job_id, ZERO), ZERO)
        from_carry = min(amount, carried)
        if from_carry:
            self.carry_in[job_id] = self.carry_in.get(job_id, ZERO) - from_carry
        if amount - from_carry:
            self.hedged[job_id] = self.hedged.get(job_id, ZERO) + amount - from_carry

    def add_carry(self, job_id: uuid.UUID, amount: Decimal) -> None:
        if amount:
            self.carry_in[job_id] = self.carry_in.get(job_id, ZERO) + amount

    def cross(self, first: uuid.UUID, second: uuid.UUID) -> None:
        """Offset two opposite needs against each other as far as they go."""
        amount = min(self.need(first), self.need(second))
        if amount > 0:
            self.offset(first, amount)
            self.offset(second, amount)

    def take_carry(self, lead: uuid.UUID, lane_carry: Decimal) -> Decimal:
        """The lane's carry joins the lead: extra need when it is on the lead's side, an offset
        when it is ahead of it. Answers what is left of the carry."""
        toward = sign(self.jobs[lead].side) * lane_carry
        if toward > 0:
            self.add_carry(lead, toward)
            return ZERO
        ahead = min(-toward, max(self.need(lead), ZERO))
        self.offset(lead, ahead)
        return lane_carry + sign(self.jobs[lead].side) * ahead


def form_groups(mode: str, jobs: Sequence[JobState], lane_carry: Decimal) -> Netting:
    """The groups of one round of a lane.

    IMMEDIATE: each job that is neither residual nor riding leads its own group (with the
    riders it already had). A residual job is offset against the oldest lead on the other side,
    then rides the oldest lead on its side; with neither it waits. NETTED: every job of the
    round is netted: the side with less need is offset entirely against the other, whose jobs
    are offset oldest first; what is left is one group led by the job with the most attempts
    (then the oldest), so a re-netted window keeps counting its attempts. The lane's carry joins
    the first lead either way.
    """
    book = _Book(jobs)
    order = {job.job_id: n for n, job in enumerate(jobs)}
    if mode == "NETTED":
        return _netted(book, jobs, lane_carry)
    in_round = set(order)
    leads = [job for job in jobs if not job.residual and job.lead is None]
    riders: dict[uuid.UUID, list[uuid.UUID]] = {lead.job_id: [] for lead in leads}
    waiting: list[uuid.UUID] = []
    for job in jobs:
        if job.lead is not None and job.lead in riders:
            riders[job.lead].append(job.job_id)
        elif job.lead is not None and job.lead not in in_round:
            waiting.append(job.job_id)  # its lead is not in this round: it stays with it
    for job in jobs:
        if not job.residual or job.lead is not None:
            continue
        for lead in leads:
            if lead.side != job.side and book.need(lead.job_id) > 0:
                book.cross(job.job_id, lead.job_id)
            if book.need(job.job_id) <= 0:
                break
        if book.need(job.job_id) <= 0:
            continue
        host = next((lead for lead in leads if lead.side == job.side), None)
        if host is None:
            waiting.append(job.job_id)
        else:
            riders[host.job_id].append(job.job_id)
    carry = book.take_carry(leads[0].job_id, lane_carry) if leads else lane_carry
    groups = []
    for lead in leads:
        members = [lead.job_id, *riders[lead.job_id]]
        groups.append(Group(lead.job_id, lead.side,
                            tuple(sorted(riders[lead.job_id], key=order.__getitem__)),
                            sum((max(book.need(m), ZERO) for m in members), ZERO),
                            lead.attempts))
    return Netting(tuple(groups), book.hedged, book.carry_in, carry, tuple(waiting))


def _netted(book: _Book, jobs: Sequence[JobState], lane_carry: Decimal) -> Netting:
    buys = [job for job in jobs if job.side == "BUY"]
    sells = [job for job in jobs if job.side == "SELL"]
    bought = sum((max(book.need(j.job_id), ZERO) for j in buys), ZERO)
    sold = sum((max(book.need(j.job_id), ZERO) for j in sells), ZERO)
    keep, other = (buys, sells) if bought >= sold else (sells, buys)
    for loser in other:
        for winner in keep:
            if book.need(loser.job_id) <= 0:
                break
            book.cross(loser.job_id, winner.job_id)
    left = [job for job in keep if book.need(job.job_id) > 0]
    if not left:  # the window nets to nothing: the carry waits for the next one
        return Netting((), book.hedged, book.carry_in, lane_carry, ())
    lead = max(left, key=lambda job: (job.attempts, -jobs.index(job)))
    carry = book.take_carry(lead.job_id, lane_carry)
    riders = tuple(job.job_id for job in left if job.job_id != lead.job_id)
    target = sum((max(book.need(job.job_id), ZERO) for job in left), ZERO)
    attempts = max(job.attempts for job in left)
    return Netting((Group(lead.job_id, lead.side, riders, target, attempts),), book.hedged,
                   book.carry_in, carry, ())


def netting_due(*, now_ms: int, oldest_ms: int, window_ms: int, net: Decimal, price: Decimal,
                max_notional: Decimal | None, max_exposure: Decimal | None,
                threshold: Decimal) -> bool:
    """A NETTED lane hedges when its oldest waiting fill is `window_ms` old, or earlier once
    the net need reaches `threshold` of the dealer's unhedged limits (notional at `price`, or
    the base asset's exposure limit)."""
    if now_ms - oldest_ms >= window_ms:
        return True
    if threshold <= 0:
        return False
    if max_notional is not None and abs(net) * price >= max_notional * threshold:
        return True
    return max_exposure is not None and abs(net) >= max_exposure * threshold


# ---------------------------------------------------------------- allocation


@dataclass(frozen=True, slots=True)
class Allocation:
    """Progress booked to the jobs of a group: `hedged` and `carry_in` increments, the change
    of the lane's carry (BUY-positive), and the jobs that are now done."""

    hedged: Mapping[uuid.UUID, Decimal]
    carry_in: Mapping[uuid.UUID, Decimal]
    lane_carry: Decimal
    done: tuple[uuid.UUID, ...]


def allocate(lead: JobState, riders: Sequence[JobState], progress: Decimal, dust: Decimal,
             *, settle: bool) -> Allocation:
    """Book a group's net progress (its side, ≥ 0): riders first, oldest first, then the lead's
    carry-in, then the lead; what exceeds every need goes back to the lane's carry.

    With `settle` (no answer of the group is still unknown), every job whose need is now below
    `dust` (one lot: nothing orderable) is done: its dust moves to the lane's carry and it counts
    as fully hedged.
    """
    hedged: dict[uuid.UUID, Decimal] = {}
    carry_in: dict[uuid.UUID, Decimal] = {}
    left = max(progress, ZERO)
    for job in riders:
        credit = min(left, max(job.need, ZERO))
        if credit > 0:
            hedged[job.job_id] = credit
            left -= credit
    credit = min(left, max(lead.carry_in, ZERO))
    if credit > 0:
        carry_in[lead.job_id] = -credit
        left -= credit
    credit = min(left, max(lead.quantity - lead.hedged, ZERO))
    if credit > 0:
        hedged[lead.job_id] = hedged.get(lead.job_id, ZERO) + credit
        left -= credit
    lane = -sign(lead.side) * left  # did more than needed: the lane needs that much less
    if not settle:
        return Allocation(hedged, carry_in, lane, ())
    after = [JobState(job.job_id, job.side, job.quantity,
                      job.hedged + hedged.get(job.job_id, ZERO),
                      job.carry_in + carry_in.get(job.job_id, ZERO))
             for job in (*riders, lead)]
    settled = settle_dust(after, dust)
    for job_id, amount in settled.hedged.items():
        hedged[job_id] = hedged.get(job_id, ZERO) + amount
    for job_id, amount in settled.carry_in.items():
        carry_in[job_id] = carry_in.get(job_id, ZERO) + amount
    return Allocation(hedged, carry_in, lane + settled.lane_carry, settled.done)


def settle_dust(jobs: Iterable[JobState], dust: Decimal) -> Allocation:
    """Jobs whose need is below `dust` (one lot: nothing orderable) are done: each counts as
    fully hedged and its dust (either side) moves to the lane's carry."""
    hedged: dict[uuid.UUID, Decimal] = {}
    carry_in: dict[uuid.UUID, Decimal] = {}
    lane = ZERO
    done: list[uuid.UUID] = []
    for job in jobs:
        if abs(job.need) < dust:
            lane += sign(job.side) * job.need
            if job.quantity != job.hedged:
                hedged[job.job_id] = job.quantity - job.hedged
            if job.carry_in:
                carry_in[job.job_id] = -job.carry_in
            done.append(job.job_id)
    return Allocation(hedged, carry_in, lane, tuple(done))
