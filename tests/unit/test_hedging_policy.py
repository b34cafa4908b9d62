"""The hedging policy: routing across LPs, netting and residuals, progress allocation."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hedging import policy
from hedging.policy import JobState, LpRoute, PlanLeg

D = Decimal
LOT = D("0.00001")
A, B, C = (uuid.UUID(int=n) for n in (1, 2, 3))
J1, J2, J3, J4 = (uuid.UUID(int=100 + n) for n in range(4))


def lp(account: uuid.UUID = A, *, venue: str = "BINANCE", fee: str = "0.001",
       asks: list[tuple[str, str]] | None = None, available: str | None = None,
       min_notional: str = "5", min_quantity: str = "0.00001", lot: str = "0.00001",
       tick: str = "0.01", fee_in_base: bool = True, min_share_notional: str = "0"
       ) -> LpRoute:
    levels = None if asks is None else tuple((D(p), D(q)) for p, q in asks)
    return LpRoute(account, venue, D(fee), D(tick), D(lot), D(min_quantity), D(min_notional),
                   levels, None if available is None else D(available), fee_in_base,
                   D(min_share_notional))


def total(routing: policy.Routing, account: uuid.UUID) -> Decimal:
    return sum((o.quantity for o in routing.orders if o.trading_account_id == account), D(0))


# ---------------------------------------------------------------- prices


def test_limit_prices_stay_inside_the_tolerance_on_the_tick() -> None:
    assert policy.limit_price("BUY", D("65000"), D("20"), D("0.01")) == D("65130")
    assert policy.limit_price("BUY", D("65000.37"), D("20"), D("0.1")) == D("65130.3")
    assert policy.limit_price("SELL", D("65000.37"), D("20"), D("0.1")) == D("64870.4")
    assert policy.limit_price("SELL", D("100"), D("0"), None) == D("100")


def test_slippage_is_positive_when_worse_for_the_dealer() -> None:
    assert policy.slippage_bps("BUY", D("101"), D("100")) == D(100)
    assert policy.slippage_bps("SELL", D("101"), D("100")) == D(-100)
    assert policy.slippage_bps("SELL", D("99"), D("100")) == D(100)
    assert policy.slippage_bps("BUY", D("99"), D("0")) == 0


def test_the_plan_is_read_with_its_reference_prices() -> None:
    plan = policy.parse_plan({"lotSize": "0.00001", "worstRawPrice": "101", "legs": [
        {"tradingAccountId": str(A), "quantity": "0.3", "vwap": "100", "worstPrice": "100.5"},
        {"tradingAccountId": str(B), "quantity": "0.1", "vwap": "104", "worstPrice": "101"}]})
    assert plan.raw_vwap == D("101")
    assert plan.reference_worst == D("101")
    assert [leg.trading_account_id for leg in plan.legs] == [A, B]
    assert policy.parse_plan({}).reference_worst is None


# ---------------------------------------------------------------- routing


def test_the_first_attempt_follows_the_plan_grossed_up_for_base_fees() -> None:
    legs = [PlanLeg(0, A, D("0.3"), D("100")), PlanLeg(1, B, D("0.2"), D("100"))]
    routing = policy.route("BUY", D("0.5"), [lp(A), lp(B, fee="0")], D("65000"),
                           plan_legs=legs)
    # A pays its fee in BTC: 0.3 net needs 0.3003 ordered; B charges none
    assert [(o.trading_account_id, o.quantity) for o in routing.orders] == [
        (A, D("0.30030")), (B, D("0.20000"))]
    assert abs(routing.expected_net - D("0.5")) <= LOT / 2
    assert {o.limit_price for o in routing.orders} == {D("65000")}


def test_a_sell_is_not_grossed_up() -> None:
    routing = policy.route("SELL", D("0.5"), [lp(A)], D("64000"),
                           plan_legs=[PlanLeg(0, A, D("0.5"), D("64100"))])
    assert [(o.quantity, o.expected_net) for o in routing.orders] == [(D("0.5"), D("0.5"))]


def test_remainders_go_to_the_best_fee_adjusted_levels_within_the_bound() -> None:
    lps = [lp(A, fee="0.001", asks=[("100.00", "0.2"), ("100.05", "1")]),
           lp(B, fee="0.0002", asks=[("100.05", "0.1"), ("100.20", "1")], fee_in_base=False),
           lp(C, fee="0", asks=[("100.30", "5")], fee_in_base=False)]
    routing = policy.route("BUY", D("0.4"), lps, D("100.25"))
    # B at 100.05 (100.07 with fee) beats A at 100.00 (100.10); C is beyond the bound
    assert total(routing, B) == D("0.1")
    assert total(routing, A) > D("0.2")
    assert total(routing, C) == 0
    assert abs(routing.expected_net - D("0.4")) <= LOT / 2


def test_depth_already_taken_this_round_is_not_counted_twice() -> None:
    lps = [lp(A, asks=[("100", "0.3"), ("101", "5")]), lp(B, asks=[("100.5", "5")])]
    first = policy.route("BUY", D("0.3"), lps, D("102"))
    second = policy.route("BUY", D("0.3"), lps, D("102"), taken=first.taken)
    assert total(first, A) > 0
    assert total(first, B) == 0
    assert total(second, B) > 0  # A's best level is gone; B's 100.5 beats A's 101


def test_balances_limit_what_an_lp_gets() -> None:
    lps = [lp(A, asks=[("100", "10")], available="20.5"), lp(B, asks=[("101", "10")])]
    routing = policy.route("BUY", D("0.5"), lps, D("102"))
    # A's 20.5 USDT buys 0.20098 BTC at the 102 limit; the rest goes to B
    assert total(routing, A) == D("0.20098")
    assert abs(routing.expected_net - D("0.5")) <= LOT


def test_what_no_balance_covers_is_unrouted() -> None:
    routing = policy.route("SELL", D("1"), [lp(A, available="0.4"), lp(B, available="0")],
                           D("99"))
    assert total(routing, A) == D("0.4")
    assert routing.unrouted == D("0.6")
    empty = policy.route("SELL", D("1"), [lp(A, available="0")], D("99"))
    assert empty.orders == ()
    assert empty.reason == "no LP has balance for it"
    assert policy.route("SELL", D("1"), [], D("99")).reason is not None


def test_an_lp_that_refused_is_avoided_while_another_can_take_it() -> None:
    lps = [lp(A, asks=[("100", "10")]), lp(B, asks=[("100.01", "10")])]
    routing = policy.route("BUY", D("0.1"), lps, D("101"), avoid=frozenset({A}))
    assert total(routing, A) == 0
    assert total(routing, B) > 0
    alone = policy.route("BUY", D("0.1"), lps[:1], D("101"), avoid=frozenset({A}))
    assert total(alone, A) > 0


def test_a_share_below_its_venues_minimum_joins_the_largest() -> None:
    legs = [PlanLeg(0, A, D("0.5"), D("100")), PlanLeg(1, B, D("0.00004"), D("100"))]
    routing = policy.route("SELL", D("0.50004"), [lp(A), lp(B, min_notional="10")], D("65000"),
                           plan_legs=legs)
    assert [(o.trading_account_id, o.quantity) for o in routing.orders] == [(A, D("0.50004"))]


def test_a_share_under_one_ledger_unit_of_the_quote_asset_joins_the_largest() -> None:
    # USDT booked in whole units; the venues have no minimum notional. B's plan leg of one lot
    # (0.65 USDT) would fill for a quote leg the ledger books as nothing.
    unit = {"min_notional": "0", "min_share_notional": "1"}
    legs = [PlanLeg(0, A, D("0.01"), D("65000")), PlanLeg(1, B, LOT, D("65000"))]
    routing = policy.route("SELL", D("0.01001"), [lp(A, **unit), lp(B, **unit)], D("65000"),
                           plan_legs=legs)
    assert [(o.trading_account_id, o.quantity) for o in routing.orders] == [(A, D("0.01001"))]
    # A share of one unit or more keeps its own order.
    legs[1] = PlanLeg(1, B, D("0.00002"), D("65000"))
    routing = policy.route("SELL", D("0.01002"), [lp(A, **unit), lp(B, **unit)], D("65000"),
                           plan_legs=legs)
    assert [(o.trading_account_id, o.quantity) for o in routing.orders] == [
        (A, D("0.01")), (B, D("0.00002"))]
    # A whole hedge under one unit is still sent: the ledger books its fill (see hedge_fill).
    alone = policy.route("SELL", LOT, [lp(A, **unit), lp(B, **unit)], D("65000"),
                         plan_legs=[PlanLeg(0, B, LOT, D("65000"))])
    assert [(o.trading_account_id, o.quantity) for o in alone.orders] == [(B, LOT)]


def test_a_target_below_every_minimum_is_a_residual() -> None:
    routing = policy.route("SELL", D("0.00004"), [lp(A), lp(B, min_notional="10")],
                           D("65000"))
    assert routing.below_minimum
    assert routing.orders == ()
    # the finest venue takes what a coarser one cannot
    fine = policy.route("SELL", D("0.0001"), [lp(A, min_notional="10"),
                                              lp(B, min_notional="5")], D("65000"))
    assert [(o.trading_account_id, o.quantity) for o in fine.orders] == [(B, D("0.0001"))]


def test_a_share_too_small_to_send_that_no_balance_can_absorb_is_unrouted() -> None:
    # A's USDT pays for 0.00026 BTC; B's pays for 0.00005, an order below B's 5 USDT minimum,
    # and A has nothing left to take it over: those 5 lots are unrouted, not dropped.
    asks = [("65000", "1")]
    routing = policy.route("BUY", D("0.00031"), [
        lp(A, fee="0", fee_in_base=False, asks=asks, available="17"),
        lp(B, fee="0", fee_in_base=False, asks=asks, available="4")], D("65200"))
    assert [(o.trading_account_id, o.quantity) for o in routing.orders] == [(A, D("0.00026"))]
    assert routing.expected_net == D("0.00026")
    assert routing.unrouted == D("0.00005")


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 200_000), st.sampled_from(["BUY", "SELL"]),
       st.lists(st.tuples(st.sampled_from(["0", "0.001", "0.0008"]), st.booleans(),
                          st.integers(0, 5_000_000)), min_size=1, max_size=3))
def test_routing_never_exceeds_balances_and_lands_within_a_lot(
        lots: int, side: str, books: list[tuple[str, bool, int]]) -> None:
    target = lots * LOT
    lps = [lp(uuid.UUID(int=n + 1), fee=fee, fee_in_base=in_base,
              asks=[("65000", "0.05"), ("65010", "1"), ("65100", "100")],
              available=str(money if side == "BUY" else D(money) / 1000))
           for n, (fee, in_base, money) in enumerate(books)]
    routing = policy.route(side, target, lps, D("65200") if side == "BUY" else D("64800"))
    for order in routing.orders:
        route = next(r for r in lps if r.trading_account_id == order.trading_account_id)
        assert order.quantity % route.lot_size == 0
        assert route.sendable(order.quantity, order.limit_price)
        spent = order.quantity * order.limit_price if side == "BUY" else order.quantity
        assert route.available is not None
        assert spent <= route.available
    if routing.orders and routing.unrouted == 0:
        assert abs(routing.expected_net - target) <= LOT
    assert routing.expected_net <= target + LOT


# ---------------------------------------------------------------- groups


def job(job_id: uuid.UUID, side: policy.Side, quantity: str, hedged: str = "0", *,
        residual: bool = False, lead: uuid.UUID | None = None, attempts: int = 0,
        carry_in: str = "0") -> JobState:
    return JobState(job_id, side, D(quantity), D(hedged), D(carry_in), residual, lead, attempts)


def test_immediate_hedges_each_fill_on_its_own() -> None:
    netting = policy.form_groups("IMMEDIATE", [job(J1, "BUY", "0.5"), job(J2, "SELL", "0.3")],
                                 D(0))
    assert [(g.lead, g.side, g.target, g.riders) for g in netting.groups] == [
        (J1, "BUY", D("0.5"), ()), (J2, "SELL", D("0.3"), ())]
    assert netting.hedged == {}


def test_a_residual_is_offset_against_the_other_side_first() -> None:
    jobs = [job(J1, "BUY", "0.2", "0.19996", residual=True),  # needs 0.00004
            job(J2, "SELL", "0.00001", residual=True),
            job(J3, "SELL", "0.3"), job(J4, "BUY", "0.1")]
    netting = policy.form_groups("IMMEDIATE", jobs, D(0))
    groups = {g.lead: g for g in netting.groups}
    assert netting.hedged == {J1: D("0.00004"), J3: D("0.00004"), J2: D("0.00001"),
                              J4: D("0.00001")}
    assert groups[J3].target == D("0.29996")
    assert groups[J4].target == D("0.09999")
    assert groups[J3].riders == groups[J4].riders == ()


def test_a_residual_rides_the_oldest_lead_on_its_side() -> None:
    jobs = [job(J1, "BUY", "0.2", "0.19996", residual=True), job(J2, "SELL", "0.3"),
            job(J3, "BUY", "0.1"), job(J4, "BUY", "0.2")]
    netting = policy.form_groups("IMMEDIATE", jobs, D(0))
    # offset against the SELL lead first (it takes all of it): nothing left to ride
    assert netting.hedged == {J1: D("0.00004"), J2: D("0.00004")}
    only_buys = policy.form_groups("IMMEDIATE", [jobs[0], jobs[2], jobs[3]], D(0))
    groups = {g.lead: g for g in only_buys.groups}
    assert groups[J3].riders == (J1,)
    assert groups[J3].target == D("0.10004")
    assert groups[J4].riders == ()
    assert only_buys.hedged == {}


def test_a_residual_without_a_lead_waits() -> None:
    netting = policy.form_groups("IMMEDIATE", [job(J1, "BUY", "0.1", "0.09996", residual=True)],
                                 D("0.000003"))
    assert netting.groups == ()
    assert netting.waiting == (J1,)
    assert netting.lane_carry == D("0.000003")


def test_the_lane_carry_joins_the_first_lead() -> None:
    short = policy.form_groups("IMMEDIATE", [job(J1, "BUY", "0.1")], D("0.000004"))
    assert short.carry_in == {J1: D("0.000004")}
    assert short.lane_carry == 0
    assert short.groups[0].target == D("0.100004")
    ahead = policy.form_groups("IMMEDIATE", [job(J1, "BUY", "0.1")], D("-0.000004"))
    assert ahead.hedged == {J1: D("0.000004")}
    assert ahead.lane_carry == 0
    assert ahead.groups[0].target == D("0.099996")
    sell = policy.form_groups("IMMEDIATE", [job(J1, "SELL", "0.1")], D("0.000004"))
    assert sell.hedged == {J1: D("0.000004")}
    assert sell.lane_carry == 0


def test_netted_windows_offset_opposite_fills_and_hedge_the_net_once() -> None:
    jobs = [job(J1, "BUY", "0.5"), job(J2, "SELL", "0.3"), job(J3, "BUY", "0.1", attempts=2),
            job(J4, "SELL", "0.1")]
    netting = policy.form_groups("NETTED", jobs, D(0))
    [group] = netting.groups
    assert (group.side, group.target) == ("BUY", D("0.2"))
    assert netting.hedged == {J2: D("0.3"), J4: D("0.1"), J1: D("0.4")}
    assert group.lead == J3
    assert group.riders == (J1,)
    assert group.attempts == 2


def test_a_window_that_nets_to_nothing_sends_nothing() -> None:
    netting = policy.form_groups("NETTED", [job(J1, "BUY", "0.25"), job(J2, "SELL", "0.25")],
                                 D("0.000002"))
    assert netting.groups == ()
    assert netting.hedged == {J1: D("0.25"), J2: D("0.25")}
    assert netting.lane_carry == D("0.000002")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["BUY", "SELL"]), st.integers(1, 10**6),
                          st.booleans(), st.integers(0, 9)), min_size=1, max_size=8),
       st.integers(-9, 9), st.sampled_from(["IMMEDIATE", "NETTED"]))
def test_netting_keeps_the_dealers_position(
        rows: list[tuple[policy.Side, int, bool, int]], carry_units: int, mode: str) -> None:
    jobs = [job(uuid.UUID(int=n + 1), side, str(units * LOT), residual=residual,
                carry_in=str(carried * LOT / 10))
            for n, (side, units, residual, carried) in enumerate(rows)]
    carry = carry_units * LOT / 10

    def position(hedged: dict[uuid.UUID, Decimal], carry_in: dict[uuid.UUID, Decimal],
                 lane: Decimal) -> Decimal:
        """What the dealer still has to buy: every need plus the lane's carry."""
        return sum((policy.sign(j.side) * (j.need - hedged.get(j.job_id, D(0))
                                           + carry_in.get(j.job_id, D(0))) for j in jobs),
                   D(0)) + lane

    netting = policy.form_groups(mode, jobs, carry)
    assert position(dict(netting.hedged), dict(netting.carry_in), netting.lane_carry) == \
        position({}, {}, carry)
    for group in netting.groups:
        members = [group.lead, *group.riders]
        assert all(next(j for j in jobs if j.job_id == m).side == group.side for m in members)
        assert group.target >= 0  # zero: offsets did it all, settled without an order
    for j in jobs:  # offsets never hedge more than a job's quantity
        assert j.hedged + netting.hedged.get(j.job_id, D(0)) <= j.quantity
    grouped = {m for g in netting.groups for m in (g.lead, *g.riders)}
    assert len(grouped) == sum(1 + len(g.riders) for g in netting.groups)
    assert all(v > 0 for v in netting.hedged.values())
    if mode == "NETTED":
        assert len(netting.groups) <= 1


def test_a_netting_window_closes_on_time_or_at_the_threshold() -> None:
    due = dict(oldest_ms=0, window_ms=1000, price=D(65000), max_notional=D(100000),
               max_exposure=None, threshold=D("0.5"))
    assert not policy.netting_due(now_ms=999, net=D("0.1"), **due)  # type: ignore[arg-type]
    assert policy.netting_due(now_ms=1000, net=D("0.1"), **due)  # type: ignore[arg-type]
    assert policy.netting_due(now_ms=10, net=D("-0.8"), **due)  # type: ignore[arg-type]
    assert policy.netting_due(now_ms=10, net=D("2"), oldest_ms=0, window_ms=1000, price=D(1),
                              max_notional=None, max_exposure=D(4), threshold=D("0.5"))
    assert not policy.netting_due(now_ms=10, net=D("100"), oldest_ms=0, window_ms=1000,
                                  price=D(1), max_notional=D(1), max_exposure=D(1),
                                  threshold=D(0))


# ---------------------------------------------------------------- allocation


def test_progress_goes_to_riders_then_the_leads_carry_then_the_lead() -> None:
    lead = job(J1, "BUY", "0.5", carry_in="0.000004")
    riders = [job(J2, "BUY", "0.1"), job(J3, "BUY", "0.05")]
    partial = policy.allocate(lead, riders, D("0.12"), LOT, settle=False)
    assert partial.hedged == {J2: D("0.1"), J3: D("0.02")}
    assert partial.done == ()
    full = policy.allocate(lead, riders, D("0.650004"), LOT, settle=True)
    assert full.hedged == {J2: D("0.1"), J3: D("0.05"), J1: D("0.5")}
    assert full.carry_in == {J1: D("-0.000004")}
    assert set(full.done) == {J1, J2, J3}
    assert full.lane_carry == 0


def test_dust_and_overfills_move_to_the_lane_carry() -> None:
    # a BUY whose fee was paid in base: 0.0999 received of 0.1; 0.0001 is ten lots: not done
    short = policy.allocate(job(J1, "BUY", "0.1"), [], D("0.0999"), LOT, settle=True)
    assert short.done == ()
    assert short.hedged == {J1: D("0.0999")}
    dust = policy.allocate(job(J1, "BUY", "0.1"), [], D("0.099996"), LOT, settle=True)
    assert dust.done == (J1,)
    assert dust.hedged == {J1: D("0.1")}
    assert dust.lane_carry == D("0.000004")  # the lane still has to buy it
    over = policy.allocate(job(J1, "SELL", "0.1"), [], D("0.100007"), LOT, settle=True)
    assert over.done == (J1,)
    assert over.lane_carry == D("0.000007")
    unsettled = policy.allocate(job(J1, "BUY", "0.1"), [], D("0.099996"), LOT, settle=False)
    assert unsettled.done == ()
    assert unsettled.lane_carry == 0


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["BUY", "SELL"]), st.integers(1, 10**6), st.integers(0, 50),
       st.lists(st.integers(1, 10**5), max_size=4), st.integers(0, 2 * 10**6),
       st.booleans())
def test_allocation_books_all_progress_and_keeps_the_position(
        side: policy.Side, lead_units: int, carry_units: int, rider_units: list[int],
        progress_units: int, settle: bool) -> None:
    lead = job(J1, side, str(lead_units * LOT), carry_in=str(carry_units * LOT / 10))
    riders = [job(uuid.UUID(int=200 + n), side, str(u * LOT)) for n, u in enumerate(rider_units)]
    progress = progress_units * D("0.000000001")
    allocation = policy.allocate(lead, riders, progress, LOT, settle=settle)
    jobs = [lead, *riders]
    before = sum((policy.sign(j.side) * j.need for j in jobs), D(0))
    after = sum((policy.sign(j.side) * (j.need - allocation.hedged.get(j.job_id, D(0))
                                        + allocation.carry_in.get(j.job_id, D(0)))
                 for j in jobs), D(0)) + allocation.lane_carry
    assert after == before - policy.sign(side) * progress
    for j in jobs:
        assert j.hedged + allocation.hedged.get(j.job_id, D(0)) <= j.quantity
    for job_id in allocation.done:
        j = next(x for x in jobs if x.job_id == job_id)
        assert j.hedged + allocation.hedged.get(job_id, D(0)) == j.quantity
    if settle:
        for j in jobs:
            if j.job_id not in allocation.done:
                left = (j.need - allocation.hedged.get(j.job_id, D(0))
                        + allocation.carry_in.get(j.job_id, D(0)))
                assert left >= LOT


@pytest.mark.parametrize(("side", "filled", "fee", "net"), [
    ("BUY", "0.1", "0.0001", "0.0999"), ("SELL", "0.1", "0", "0.1"),
    ("SELL", "0.1", "0.0001", "0.1001")])
def test_progress_is_net_of_fees_charged_in_base(side: str, filled: str, fee: str,
                                                 net: str) -> None:
    assert policy.net_progress(side, D(filled), D(fee)) == D(net)
