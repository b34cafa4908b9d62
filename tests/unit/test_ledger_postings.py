"""Client and hedge fill postings (DESIGN §7) and the checks run on a batch before writing."""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from collections import Counter
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.accounts import WORLD, client_account, dealer_account, exchange_account
from ledger.assets import Asset, NotRepresentable, ScaleTable
from ledger.backend import LedgerTransaction, Posting
from ledger.postings import (
    InvalidBatch,
    InvalidFill,
    client_fill,
    hedge_fill,
    hedge_fill_venue_moves,
    net_by_account,
    other_fee,
    rounding_kept,
    validate_batch,
)

D = Decimal
BTC = Asset("BTC", 8)
ETH = Asset("ETH", 8)
USDT = Asset("USDT", 6)
USDC = Asset("USDC", 6)
USD = Asset("USD", 2)
BNB = Asset("BNB", 8)
SCALES = ScaleTable.default().merged({"BNB": 8})

CLIENT = uuid.UUID("11111111-1111-4111-8111-111111111111")
DEALER = uuid.UUID("22222222-2222-4222-8222-222222222222")
LP = uuid.UUID("33333333-3333-4333-8333-333333333333")
C, DL, EX = client_account(CLIENT), dealer_account(DEALER), exchange_account(LP)
AT = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)


class VenueSide(enum.StrEnum):
    """Stands in for venues.base.Side, which the ledger must not import."""

    BUY = "BUY"
    SELL = "SELL"


def client_buy(**changes: Any) -> LedgerTransaction:
    arguments: dict[str, Any] = dict(
        client_id=CLIENT, dealer_id=DEALER, side="BUY", base=BTC, quote=USDT,
        quantity=D("2"), price=D("65000.5"), reference="q-1", metadata={"quoteId": "q-1"})
    arguments.update(changes)
    return client_fill(**arguments)


def hedge_buy(**changes: Any) -> tuple[LedgerTransaction, ...]:
    arguments: dict[str, Any] = dict(
        exchange_id=LP, dealer_id=DEALER, side="BUY", base=BTC, quote=USDT,
        quantity=D("0.5"), price=D("64990.25"), fee=(USDT, D("32.495125")),
        reference="h-1", metadata={"orderId": "o-1", "jobId": "j-1"})
    arguments.update(changes)
    return hedge_fill(**arguments)


def posting(**changes: Any) -> Posting:
    fields: dict[str, Any] = dict(source=C, destination=DL, amount=100, asset="USDT/6")
    fields.update(changes)
    return Posting(**fields)


def transaction(*postings: Posting, reference: str = "r-1",
                metadata: Any = None) -> LedgerTransaction:
    return LedgerTransaction(reference, postings or (posting(),),
                             {"kind": "client_fill"} if metadata is None else metadata)


def problems_of(transactions: list[LedgerTransaction], **options: Any) -> tuple[str, ...]:
    with pytest.raises(InvalidBatch) as raised:
        validate_batch(transactions, **options)
    return raised.value.problems


# ------------------------------------------------------------------------ client fills


def test_client_buy_matches_design() -> None:
    fill = client_buy(timestamp=AT)
    # 2 BTC at 65000.5 = 130001 USDT: client pays the quote, the dealer delivers the base.
    assert fill.postings == (Posting(C, DL, 130_001_000_000, "USDT/6"),
                             Posting(DL, C, 200_000_000, "BTC/8"))
    assert fill.reference == "q-1"
    assert fill.timestamp == AT
    assert fill.metadata == {"kind": "client_fill", "clientSide": "BUY", "price": "65000.5",
                             "quoteId": "q-1"}


def test_client_sell_mirrors_the_buy() -> None:
    fill = client_buy(side="SELL")
    assert fill.postings == (Posting(DL, C, 130_001_000_000, "USDT/6"),
                             Posting(C, DL, 200_000_000, "BTC/8"))
    assert fill.metadata["clientSide"] == "SELL"


def test_client_quote_leg_rounds_in_the_dealer_favour() -> None:
    # 0.12345678 BTC at 65000.5 = 8024.752428390 USDT, one digit beyond USDT/6.
    buy = client_buy(quantity=D("0.12345678"))
    sell = client_buy(quantity=D("0.12345678"), side="SELL")
    assert buy.postings[0] == Posting(C, DL, 8_024_752_429, "USDT/6")  # dealer receives: up
    assert sell.postings[0] == Posting(DL, C, 8_024_752_428, "USDT/6")  # dealer pays: down


def test_client_fill_books_the_agreed_quote_amount_when_given() -> None:
    fill = client_buy(quote_amount=D("130000.99"))
    assert fill.postings[0] == Posting(C, DL, 130_000_990_000, "USDT/6")


def test_client_fill_takes_a_str_enum_side_and_stores_plain_strings() -> None:
    fill = client_buy(side=VenueSide.SELL)
    assert type(fill.metadata["clientSide"]) is str
    assert type(fill.metadata["kind"]) is str
    assert fill.metadata["clientSide"] == "SELL"


def test_client_fill_refuses_a_quantity_the_scale_cannot_hold() -> None:
    with pytest.raises(NotRepresentable, match="more than 8 decimals"):
        client_buy(quantity=D("0.123456789"))


def test_client_fill_is_exact_beyond_the_decimal_context() -> None:
    # 17 + 17 significant digits: the default 28-digit context would round the product.
    fill = client_buy(quantity=D("123456789.12345678"), price=D("1234567.8901234567"),
                      quote=Asset("USDT", 18))
    assert fill.postings[0].amount == 152_415_787_669_562_554_168_572_066_651_426
    assert fill.postings[1].amount == 12345678912345678


@pytest.mark.parametrize(("changes", "message"), [
    ({"quantity": D("0")}, "quantity must be positive"),
    ({"quantity": D("-1")}, "quantity must be positive"),
    ({"price": D("0")}, "price must be positive"),
    ({"quote_amount": D("-5")}, "quote amount must be positive"),
    ({"side": "buy"}, "side must be 'BUY' or 'SELL'"),
    ({"reference": ""}, "reference must be a non-empty string"),
    ({"quote": BTC}, "same asset BTC"),
    ({"metadata": {"kind": "other"}}, "'kind' is set by the builder"),
    ({"metadata": {"quoteId": 7}}, "must be strings"),
    ({"timestamp": dt.datetime(2026, 1, 1)}, "timezone-aware"),
    ({"quantity": D("0.00000001"), "price": D("0.1"), "quote": USD, "side": "SELL"},
     "rounds to zero"),
])
def test_client_fill_refuses_bad_input_clearly(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidFill, match=message):
        client_buy(**changes)


@pytest.mark.parametrize("field", ["quantity", "price"])
def test_client_fill_refuses_floats(field: str) -> None:
    with pytest.raises(TypeError, match="floats are never exact"):
        client_buy(**{field: 1.5})


# ------------------------------------------------------------------------- hedge fills


def test_hedge_buy_matches_design() -> None:
    fill, fee = hedge_buy(timestamp=AT)
    # 0.5 BTC at 64990.25 = 32495.125 USDT; fee 32.495125 USDT in its own transaction.
    assert fill.postings == (Posting(EX, DL, 50_000_000, "BTC/8"),
                             Posting(DL, EX, 32_495_125_000, "USDT/6"))
    assert fill.metadata == {"kind": "hedge_fill", "dealerSide": "BUY", "price": "64990.25",
                             "orderId": "o-1", "jobId": "j-1"}
    assert fee.reference == "h-1:fee"
    assert fee.postings == (Posting(DL, EX, 32_495_125, "USDT/6"),)
    assert fee.metadata == {"kind": "fee", "fillReference": "h-1", "orderId": "o-1",
                            "jobId": "j-1"}
    assert fill.timestamp == fee.timestamp == AT


def test_hedge_sell_mirrors_the_buy() -> None:
    fill, fee = hedge_buy(side="SELL")
    assert fill.postings == (Posting(DL, EX, 50_000_000, "BTC/8"),
                             Posting(EX, DL, 32_495_125_000, "USDT/6"))
    assert fee.postings == (Posting(DL, EX, 32_495_125, "USDT/6"),)


def test_hedge_fee_in_base_is_still_paid_to_the_exchange() -> None:
    _, fee = hedge_buy(fee=(BTC, D("0.0005")))
    assert fee.postings == (Posting(DL, EX, 50_000, "BTC/8"),)


def test_hedge_fee_rounds_down_and_a_zero_fee_books_nothing() -> None:
    _, fee = hedge_buy(fee=(USDT, D("1.0000009")))
    assert fee.postings[0].amount == 1_000_000
    assert len(hedge_buy(fee=None)) == 1
    assert len(hedge_buy(fee=(USDT, D("0")))) == 1
    assert len(hedge_buy(fee=(USDT, D("0.0000009")))) == 1


def test_hedge_quote_leg_rounds_in_the_dealer_favour() -> None:
    (buy,) = hedge_buy(quantity=D("0.12345678"), price=D("65000.5"), fee=None)
    (sell,) = hedge_buy(quantity=D("0.12345678"), price=D("65000.5"), fee=None, side="SELL")
    assert buy.postings[1] == Posting(DL, EX, 8_024_752_428, "USDT/6")  # dealer pays: down
    assert sell.postings[1] == Posting(EX, DL, 8_024_752_429, "USDT/6")  # dealer receives: up


def test_hedge_fill_books_the_venue_quote_amount_when_given() -> None:
    (fill,) = hedge_buy(fee=None, quote_amount=D("32495.13"))
    assert fill.postings[1] == Posting(DL, EX, 32_495_130_000, "USDT/6")


def test_hedge_fill_refuses_negative_fees() -> None:
    with pytest.raises(InvalidFill, match="rebates"):
        hedge_buy(fee=(USDT, D("-1")))


def test_hedge_fill_refuses_a_builder_metadata_key() -> None:
    with pytest.raises(InvalidFill, match="'fillReference' is set by the builder"):
        hedge_buy(metadata={"fillReference": "x"})


# ------------------------------------------------------------------- batches sum to zero


quotes = st.sampled_from([USDT, USDC, USD])
sides = st.sampled_from(["BUY", "SELL"])
quantities = st.decimals(min_value=D("0.01"), max_value=D("1000"), places=8)
prices = st.decimals(min_value=D("1"), max_value=D("1000000"), places=4)
fees = st.none() | st.tuples(st.sampled_from([BTC, USDT, BNB]),
                             st.decimals(min_value=0, max_value=D("100"), places=10))


@st.composite
def fill_batches(draw: st.DrawFn) -> list[LedgerTransaction]:
    batch: list[LedgerTransaction] = []
    for index in range(draw(st.integers(1, 6))):
        base = draw(st.sampled_from([BTC, ETH]))
        common: dict[str, Any] = dict(
            dealer_id=DEALER, side=draw(sides), base=base, quote=draw(quotes),
            quantity=draw(quantities), price=draw(prices), reference=f"r-{index}",
            metadata={"jobId": f"j-{index}"})
        if draw(st.booleans()):
            batch.append(client_fill(client_id=CLIENT, **common))
        else:
            batch.extend(hedge_fill(exchange_id=LP, fee=draw(fees), **common))
    return batch


@given(fill_batches())
def test_every_built_batch_sums_to_zero_per_asset(batch: list[LedgerTransaction]) -> None:
    totals: Counter[str] = Counter()
    for balances in net_by_account(batch).values():
        for asset, units in balances.items():
            totals[asset] += units
    assert totals
    assert all(units == 0 for units in totals.values())


@given(fill_batches())
def test_every_built_batch_is_valid(batch: list[LedgerTransaction]) -> None:
    validate_batch(batch, known_assets=SCALES)
    assert all(transaction.metadata["kind"] in {"client_fill", "hedge_fill", "fee"}
               for transaction in batch)


@given(sides, quantities, prices)
def test_a_hedged_client_fill_leaves_the_dealer_flat_in_base(side: str, quantity: Decimal,
                                                             price: Decimal) -> None:
    client = client_fill(CLIENT, DEALER, side, BTC, USDT, quantity, price, reference="q",
                         metadata={})
    # The dealer hedges on the LP on the client's side: it buys back what the client bought.
    hedge = hedge_fill(LP, DEALER, side, BTC, USDT, quantity, price, None, reference="h",
                       metadata={})
    dealer = net_by_account([client, *hedge])[DL]
    assert dealer["BTC/8"] == 0
    assert dealer["USDT/6"] >= 0  # at the same price rounding can only favour the dealer


def test_net_by_account_hand_checked() -> None:
    fill, fee = hedge_buy()
    assert net_by_account([client_buy(), fill, fee]) == {
        C: {"USDT/6": -130_001_000_000, "BTC/8": 200_000_000},
        DL: {"USDT/6": 130_001_000_000 - 32_495_125_000 - 32_495_125,
             "BTC/8": -200_000_000 + 50_000_000},
        EX: {"BTC/8": -50_000_000, "USDT/6": 32_495_125_000 + 32_495_125},
    }


def test_net_by_account_keeps_accounts_that_came_back_to_zero() -> None:
    there = transaction(posting(source=C, destination=DL), reference="a")
    back = transaction(posting(source=DL, destination=C), reference="b")
    assert net_by_account([there, back]) == {C: {"USDT/6": 0}, DL: {"USDT/6": 0}}


# ----------------------------------------------------------------------- validate_batch


def test_validate_batch_accepts_an_empty_batch() -> None:
    validate_batch([])


@pytest.mark.parametrize(("amount", "shown"), [(0, "got 0"), (-5, "got -5"), (True, "got True"),
                                               (D("1"), "got Decimal('1')"), (1.0, "got 1.0")])
def test_validate_batch_refuses_amounts_that_are_not_positive_ints(amount: Any,
                                                                   shown: str) -> None:
    (problem,) = problems_of([transaction(posting(amount=amount))])
    assert "amount must be a positive int of minor units" in problem
    assert shown in problem


def test_validate_batch_refuses_bad_addresses() -> None:
    (problem,) = problems_of([transaction(posting(destination="dealer:not valid"))])
    assert "destination" in problem
    assert "invalid ledger account address 'dealer:not valid'" in problem


def test_validate_batch_refuses_a_posting_to_itself() -> None:
    (problem,) = problems_of([transaction(posting(destination=C))])
    assert "same account" in problem


def test_validate_batch_refuses_the_world_account_unless_allowed() -> None:
    minting = transaction(posting(source=WORLD))
    (problem,) = problems_of([minting])
    assert "source is 'world'" in problem
    assert "never create" in problem
    validate_batch([minting], allow_world=True)


@pytest.mark.parametrize("asset", ["USDT", "usdt/6", "USDT/06", "USDT/99"])
def test_validate_batch_refuses_bad_asset_notation(asset: str) -> None:
    (problem,) = problems_of([transaction(posting(asset=asset))])
    assert "asset" in problem


def test_validate_batch_refuses_unknown_or_rescaled_assets_when_given_a_table() -> None:
    batch = [transaction(posting(asset="DOGE/8"), posting(asset="USDT/8"))]
    validate_batch(batch)  # without a table only the notation is checked
    unknown, rescaled = problems_of(batch, known_assets=ScaleTable.default())
    assert "unknown asset 'DOGE'" in unknown
    assert "USDT/8 does not match the configured USDT/6" in rescaled


def test_validate_batch_refuses_two_scales_of_one_asset() -> None:
    (problem,) = problems_of([transaction(posting(asset="USDT/6")),
                              transaction(posting(asset="USDT/2"), reference="r-2")])
    assert "USDT/2 conflicts with USDT/6" in problem


def test_validate_batch_refuses_duplicate_and_empty_references() -> None:
    duplicate, empty = problems_of([transaction(), transaction(), transaction(reference=" ")])
    assert "transaction 1 ('r-1'): duplicate reference, already used by transaction 0" in duplicate
    assert "transaction 2" in empty
    assert "non-empty" in empty


def test_validate_batch_refuses_duplicates_across_built_fills() -> None:
    (problem,) = problems_of([*hedge_buy(reference="x"), client_buy(reference="x")])
    assert "duplicate reference" in problem


def test_validate_batch_requires_kind_and_string_metadata() -> None:
    no_kind, not_string = problems_of(
        [transaction(metadata={"orderId": "o"}),
         transaction(metadata={"kind": "fee", "amount": 5}, reference="r-2")])
    assert "no 'kind'" in no_kind
    assert "'amount': keys and values must be strings" in not_string


def test_validate_batch_refuses_empty_transactions_and_naive_timestamps() -> None:
    empty = LedgerTransaction("r-1", (), {"kind": "fee"})
    naive = LedgerTransaction("r-2", (posting(),), {"kind": "fee"}, dt.datetime(2026, 1, 1))
    no_postings, not_aware = problems_of([empty, naive])
    assert "no postings" in no_postings
    assert "timezone-aware" in not_aware


def test_validate_batch_lists_every_problem_at_once() -> None:
    # Zero amount, world, bad asset; then a repeated reference and a posting to itself.
    batch = [transaction(posting(amount=0, source=WORLD, asset="BTC")),
             transaction(posting(destination=C))]
    with pytest.raises(InvalidBatch) as raised:
        validate_batch(batch)
    assert len(raised.value.problems) == 5
    message = str(raised.value)
    assert message.startswith("ledger batch refused, 5 problem(s):")
    assert all(f"- {problem}" in message for problem in raised.value.problems)


def test_a_fee_in_another_asset_is_its_own_entry_rounded_down() -> None:
    bnb = Asset("BNB", 8)
    entry = other_fee(LP, DEALER, (bnb, D("0.000123456789")), fill_reference="hedge-h-1",
                      metadata={"jobId": "j"})
    assert entry is not None
    assert entry.reference == "hedge-h-1:fee:BNB"
    assert [(p.source, p.destination, p.amount, p.asset) for p in entry.postings] == [
        (f"dealer:{DEALER}", f"exchange:{LP}", 12345, "BNB/8")]
    assert entry.metadata == {"jobId": "j", "kind": "fee", "fillReference": "hedge-h-1"}
    # Less than a minor unit is not booked; a rebate is refused.
    assert other_fee(LP, DEALER, (bnb, D("0.000000001")), fill_reference="hedge-h-1",
                     metadata={}) is None
    with pytest.raises(InvalidFill):
        other_fee(LP, DEALER, (bnb, D("-1")), fill_reference="hedge-h-1", metadata={})


# ------------------------------------------------------------------------ rounding kept


def test_a_hedge_buy_keeps_what_the_venue_moved_less_what_was_booked() -> None:
    quantity, price, fee = D("0.12345678"), D("65000.5"), D("0.00012345678")
    moves = hedge_fill_venue_moves("BUY", BTC, USDT, quantity, price, {"BTC": fee})
    # the venue: + the base less its fee, - the exact notional
    assert moves == {"BTC": D("0.12333332322"), "USDT": D("-8024.75242839")}
    booked = hedge_buy(quantity=quantity, price=price, fee=(BTC, fee))
    # booked: 8024.752428 USDT (down) and a fee of 0.00012345 BTC (down)
    assert rounding_kept(booked, LP, moves) == {"BTC": D("-0.00000000678"),
                                                "USDT": D("-0.00000039")}


def test_a_hedge_sell_keeps_both_roundings_of_its_quote_asset() -> None:
    quantity, price, fee = D("0.12345678"), D("65000.5"), D("8.02475242839")
    moves = hedge_fill_venue_moves(VenueSide.SELL, BTC, USDT, quantity, price, {"USDT": fee})
    assert moves == {"BTC": D("-0.12345678"), "USDT": D("8016.72767596161")}
    booked = hedge_buy(side="SELL", quantity=quantity, price=price, fee=(USDT, fee))
    # the quote leg rounds up to 8024.752429 and the fee down to 8.024752; the base is exact
    assert rounding_kept(booked, LP, moves) == {"USDT": D("-0.00000061") + D("-0.00000042839")}


def test_an_exact_fill_keeps_nothing_and_the_venue_quote_amount_is_used() -> None:
    moves = hedge_fill_venue_moves("BUY", BTC, USDT, D("0.5"), D("64990.25"),
                                   {"USDT": D("32.495125")})
    assert rounding_kept(hedge_buy(), LP, moves) == {}
    moves = hedge_fill_venue_moves("BUY", BTC, USDT, D("0.5"), D("64990.25"), {},
                                   quote_amount=D("32495.1300001"))
    booked = hedge_buy(fee=None, quote_amount=D("32495.1300001"))
    assert rounding_kept(booked, LP, moves) == {"USDT": D("-0.0000001")}


def test_a_hedge_buy_under_one_quote_unit_books_its_base_and_keeps_the_quote_as_rounding(
) -> None:
    usdt0 = Asset("USDT", 0)  # a desk that books USDT in whole units
    quantity, price = D("0.00001"), D("65000.5")  # 0.650005 USDT paid to the venue
    (fill,) = hedge_buy(quote=usdt0, quantity=quantity, price=price, fee=None)
    assert fill.postings == (Posting(EX, DL, 1_000, "BTC/8"),)  # the quote leg books nothing
    validate_batch([fill], known_assets=SCALES.merged({"USDT": 0}))
    moves = hedge_fill_venue_moves("BUY", BTC, usdt0, quantity, price, {})
    assert rounding_kept([fill], LP, moves) == {"USDT": D("-0.650005")}
    # Sold, the dealer receives it rounded up: one unit, never nothing.
    (sold,) = hedge_buy(quote=usdt0, quantity=quantity, price=price, fee=None, side="SELL")
    assert sold.postings[1] == Posting(EX, DL, 1, "USDT/0")
    # A client SELL that small would pay the client nothing for its base: still refused.
    with pytest.raises(InvalidFill, match="rounds to zero"):
        client_buy(quote=usdt0, quantity=quantity, price=price, side="SELL")


def test_rounding_is_read_on_the_lp_wallet_only() -> None:
    other = uuid.UUID("44444444-4444-4444-8444-444444444444")
    moves = {"USDT": D("-1.0000005")}
    assert rounding_kept(hedge_buy(), other, moves) == moves


def test_venue_moves_refuse_what_the_fill_builder_refuses() -> None:
    with pytest.raises(InvalidFill):
        hedge_fill_venue_moves("HOLD", BTC, USDT, D("1"), D("1"), {})
    with pytest.raises(InvalidFill):
        hedge_fill_venue_moves("BUY", BTC, USDT, D("1"), D("0"), {})
    with pytest.raises(InvalidFill):
        hedge_fill_venue_moves("BUY", BTC, USDT, D("1"), D("1"), {}, quote_amount=D("0"))


@given(side=st.sampled_from(["BUY", "SELL"]),
       lots=st.integers(min_value=1, max_value=10**8),
       price=st.decimals(min_value=D("0.0001"), max_value=D("1000000"), places=4),
       fee_rate=st.sampled_from([D("0"), D("0.001"), D("0.00075"), D("0.0002345")]))
def test_rounding_kept_is_under_one_minor_unit_per_rounded_leg_and_never_positive(
        side: str, lots: int, price: Decimal, fee_rate: Decimal) -> None:
    quantity = D(lots).scaleb(-8)
    notional = quantity * price
    fee_asset, fee = (BTC, quantity * fee_rate) if side == "BUY" else (USDT, notional * fee_rate)
    try:
        booked = hedge_buy(side=side, quantity=quantity, price=price, fee=(fee_asset, fee))
    except InvalidFill:  # a quote leg under one minor unit is not booked at all
        return
    moves = hedge_fill_venue_moves(side, BTC, USDT, quantity, price, {fee_asset.code: fee})
    kept = rounding_kept(booked, LP, moves)
    # the dealer pays down and receives up: the venue's side keeps the remainders
    assert D("-0.00000001") < kept.get("BTC", D(0)) <= 0
    assert D("-0.000002") < kept.get("USDT", D(0)) <= 0
