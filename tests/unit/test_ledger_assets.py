"""Assets in CODE/scale notation, scale tables, and exact Decimal <-> minor-unit conversion."""

from __future__ import annotations

from decimal import Decimal, localcontext
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.assets import (
    DEFAULT_SCALES,
    MAX_SCALE,
    Asset,
    InvalidAmount,
    InvalidAsset,
    NotRepresentable,
    Rounding,
    ScaleTable,
    UnknownAsset,
    booked_amount,
    check_pinned,
    from_minor,
    minor_paid_by_dealer,
    minor_received_by_dealer,
    to_minor,
)

D = Decimal
BTC = Asset("BTC", 8)
USDT = Asset("USDT", 6)
USD = Asset("USD", 2)

assets = st.builds(Asset, code=st.from_regex(r"[A-Z][A-Z0-9]{0,15}", fullmatch=True),
                   scale=st.integers(0, MAX_SCALE))


@st.composite
def asset_and_representable_amount(draw: st.DrawFn) -> tuple[Asset, Decimal]:
    asset = draw(assets)
    places = draw(st.integers(0, asset.scale))
    amount = draw(st.decimals(min_value=-10**20, max_value=10**20, places=places))
    return asset, amount


any_amount = st.decimals(min_value=D("-1e30"), max_value=D("1e30"), allow_nan=False,
                         allow_infinity=False)


def exact_minor(amount: Decimal, asset: Asset) -> Fraction:
    return Fraction(amount) * Fraction(10) ** asset.scale


# ------------------------------------------------------------------------------- Asset


def test_asset_prints_in_formance_notation() -> None:
    assert str(BTC) == "BTC/8"
    assert str(Asset("JPY", 0)) == "JPY/0"


@given(assets)
def test_asset_notation_round_trips(asset: Asset) -> None:
    assert Asset.parse(str(asset)) == asset


def test_asset_parse_reads_code_and_scale() -> None:
    assert Asset.parse("USDT/6") == Asset("USDT", 6)
    assert Asset.parse("ETH2/18") == Asset("ETH2", 18)


@pytest.mark.parametrize("notation", [
    "BTC", "BTC/", "/8", "btc/8", "BTC/08", "BTC/+8", "BTC/-1", "BTC/19", "BTC/8/2", "BTC /8",
    "BTC/8\n", "1INCH/8", "USDC_ETH/6", "ABCDEFGHIJKLMNOPQ/2", "BTC/\u0668", ""])
def test_asset_parse_refuses_bad_notation(notation: str) -> None:
    with pytest.raises(InvalidAsset):
        Asset.parse(notation)


def test_asset_parse_refuses_a_non_string() -> None:
    bad: Any = 8
    with pytest.raises(InvalidAsset, match="CODE/scale"):
        Asset.parse(bad)


@pytest.mark.parametrize("code", ["", "btc", "B-TC", "9LIVES", "ABCDEFGHIJKLMNOPQ"])
def test_asset_refuses_bad_codes_with_the_rule(code: str) -> None:
    with pytest.raises(InvalidAsset, match="upper-case letters"):
        Asset(code, 8)


@pytest.mark.parametrize("scale", [-1, 19, True, 8.0, "8"])
def test_asset_refuses_bad_scales_with_the_range(scale: Any) -> None:
    with pytest.raises(InvalidAsset, match="from 0 to 18"):
        Asset("BTC", scale)


# -------------------------------------------------------------------------- ScaleTable


def test_default_scales_are_the_chart_of_design() -> None:
    assert dict(DEFAULT_SCALES) == {"BTC": 8, "ETH": 8, "USDT": 6, "USDC": 6, "USD": 2}
    table = ScaleTable.default()
    assert table.asset("USDT") == USDT
    assert "ETH" in table
    assert "DOGE" not in table


def test_default_scales_cannot_be_changed_in_place() -> None:
    scales: Any = DEFAULT_SCALES
    with pytest.raises(TypeError):
        scales["BTC"] = 2


def test_unknown_asset_names_the_code_and_how_to_configure_it() -> None:
    with pytest.raises(UnknownAsset) as raised:
        ScaleTable.default().asset("DOGE")
    message = str(raised.value)
    assert "'DOGE'" in message
    assert "configure" in message
    assert "DOGE/8" in message


def test_merged_adds_and_overrides_without_changing_the_original() -> None:
    table = ScaleTable.default()
    merged = table.merged({"DOGE": 8, "USD": 4})
    assert merged.asset("DOGE") == Asset("DOGE", 8)
    assert merged.asset("USD") == Asset("USD", 4)
    assert merged.asset("BTC") == BTC
    assert table.scales == dict(DEFAULT_SCALES)


def test_scale_table_refuses_invalid_entries() -> None:
    with pytest.raises(InvalidAsset):
        ScaleTable({"usdt": 6})
    with pytest.raises(InvalidAsset):
        ScaleTable.default().merged({"USDT": 40})


def test_check_pinned_reports_each_changed_scale() -> None:
    conflicts = check_pinned({"USDT": 8, "BTC": 8, "USD": 3, "DOGE": 8},
                             {"USDT": 6, "BTC": 8, "USD": 2, "ETH": 8})
    assert conflicts == ["USD: configured scale 3 but the ledger already uses USD/2",
                         "USDT: configured scale 8 but the ledger already uses USDT/6"]


def test_check_pinned_accepts_matching_and_new_assets() -> None:
    assert check_pinned(DEFAULT_SCALES, {"BTC": 8}) == []
    assert check_pinned(DEFAULT_SCALES, {}) == []


# ------------------------------------------------------------------------- conversions


def test_to_minor_hand_checked() -> None:
    assert to_minor(D("2"), BTC, Rounding.EXACT) == 200_000_000
    assert to_minor(D("130001.000000"), USDT, Rounding.EXACT) == 130_001_000_000
    assert to_minor(D("0.00000001"), BTC, Rounding.EXACT) == 1
    assert to_minor(D("-1.5"), USD, Rounding.EXACT) == -150
    assert to_minor(D("1.2E+3"), USD, Rounding.EXACT) == 120_000
    assert to_minor(D("-0"), USD, Rounding.EXACT) == 0
    assert to_minor(D("0E-40"), USD, Rounding.EXACT) == 0


def test_to_minor_rounds_in_the_direction_asked() -> None:
    assert to_minor(D("1.005"), USD, Rounding.UP) == 101
    assert to_minor(D("1.005"), USD, Rounding.DOWN) == 100
    assert to_minor(D("-1.005"), USD, Rounding.UP) == -100
    assert to_minor(D("-1.005"), USD, Rounding.DOWN) == -101
    assert to_minor(D("1E-999999"), USD, Rounding.UP) == 1
    assert to_minor(D("-1E-999999"), USD, Rounding.UP) == 0


@given(asset_and_representable_amount())
def test_exact_conversion_round_trips(case: tuple[Asset, Decimal]) -> None:
    asset, amount = case
    units = to_minor(amount, asset, Rounding.EXACT)
    assert from_minor(units, asset) == amount
    assert Fraction(units) == exact_minor(amount, asset)


@given(assets, any_amount)
def test_up_and_down_are_within_one_minor_unit_in_their_direction(asset: Asset,
                                                                  amount: Decimal) -> None:
    exact = exact_minor(amount, asset)
    up = to_minor(amount, asset, Rounding.UP)
    down = to_minor(amount, asset, Rounding.DOWN)
    assert 0 <= up - exact < 1
    assert 0 <= exact - down < 1
    assert up - down == (0 if exact.denominator == 1 else 1)


@given(assets, any_amount)
def test_exact_conversion_refuses_exactly_when_digits_would_be_lost(asset: Asset,
                                                                    amount: Decimal) -> None:
    if exact_minor(amount, asset).denominator == 1:
        assert to_minor(amount, asset, Rounding.EXACT) == exact_minor(amount, asset)
    else:
        with pytest.raises(NotRepresentable, match=f"more than {asset.scale} decimals"):
            to_minor(amount, asset, Rounding.EXACT)


def test_exact_conversion_is_not_limited_by_the_decimal_context() -> None:
    amount = D("123456789012345678901234567890.12345678")  # 38 digits, beyond 28
    assert to_minor(amount, BTC, Rounding.EXACT) == 12345678901234567890123456789012345678
    with localcontext() as context:
        context.prec = 5
        assert from_minor(12345678901234567890123456789012345678, BTC) == amount


def test_from_minor_has_exactly_the_scale() -> None:
    assert str(from_minor(150, USD)) == "1.50"
    assert str(from_minor(-1, BTC)) == "-1E-8"
    assert from_minor(0, BTC).as_tuple().exponent == -8
    assert str(from_minor(7, Asset("JPY", 0))) == "7"


@pytest.mark.parametrize("units", [1.0, True, D("1"), "1"])
def test_from_minor_refuses_non_integers(units: Any) -> None:
    with pytest.raises(TypeError, match="must be an int"):
        from_minor(units, BTC)


@pytest.mark.parametrize("amount", [0.1, 1, "0.1", None])
def test_to_minor_refuses_anything_but_decimal(amount: Any) -> None:
    with pytest.raises(TypeError, match="must be a Decimal"):
        to_minor(amount, BTC, Rounding.EXACT)


def test_to_minor_explains_why_floats_are_refused() -> None:
    float_amount: Any = 0.1
    with pytest.raises(TypeError, match="floats are never exact"):
        to_minor(float_amount, BTC, Rounding.UP)


@pytest.mark.parametrize("amount", [D("NaN"), D("sNaN"), D("Infinity"), D("-Infinity")])
def test_to_minor_refuses_nan_and_infinity(amount: Decimal) -> None:
    with pytest.raises(InvalidAmount, match="finite"):
        to_minor(amount, BTC, Rounding.DOWN)


def test_to_minor_refuses_amounts_beyond_the_ledger_range() -> None:
    with pytest.raises(InvalidAmount, match="too large"):
        to_minor(D("1E+999999"), BTC, Rounding.EXACT)


def test_to_minor_requires_a_rounding() -> None:
    rounding: Any = "UP"
    with pytest.raises(TypeError, match="Rounding"):
        to_minor(D("1"), BTC, rounding)


# ---------------------------------------------------------------- the dealer's favour


def test_dealer_pays_rounded_down_and_receives_rounded_up() -> None:
    notional = D("0.12345678") * D("65000.5")  # 8024.752428390 USDT, beyond USDT/6
    assert minor_paid_by_dealer(notional, USDT) == 8_024_752_428
    assert minor_received_by_dealer(notional, USDT) == 8_024_752_429
    assert minor_paid_by_dealer(D("5"), USDT) == minor_received_by_dealer(D("5"), USDT)


@given(assets, st.decimals(min_value=0, max_value=D("1e30"), allow_nan=False))
def test_dealer_never_loses_to_rounding(asset: Asset, amount: Decimal) -> None:
    exact = exact_minor(amount, asset)
    assert minor_paid_by_dealer(amount, asset) <= exact <= minor_received_by_dealer(amount, asset)


def test_dealer_amounts_are_magnitudes() -> None:
    with pytest.raises(InvalidAmount, match="not negative"):
        minor_paid_by_dealer(D("-1"), USDT)
    with pytest.raises(InvalidAmount, match="not negative"):
        minor_received_by_dealer(D("-1"), USDT)


@given(assets, st.decimals(min_value=0, max_value=D("1e60"), allow_nan=False,
                           allow_infinity=False), st.booleans())
def test_the_booked_amount_is_what_the_minor_units_book(asset: Asset, amount: Decimal,
                                                        received: bool) -> None:
    try:
        units = (minor_received_by_dealer(amount, asset) if received
                 else minor_paid_by_dealer(amount, asset))
    except InvalidAmount:
        with pytest.raises(InvalidAmount):
            booked_amount(amount, asset, received_by_dealer=received)
        return
    booked = booked_amount(amount, asset, received_by_dealer=received)
    assert booked == from_minor(units, asset)
    assert booked.as_tuple().exponent == -asset.scale


def test_a_booked_amount_rounds_for_the_dealer() -> None:
    notional = D("0.000641814")  # ETH/BTC: price * quantity with 9 decimals, BTC books 8
    assert booked_amount(notional, BTC, received_by_dealer=True) == D("0.00064182")
    assert booked_amount(notional, BTC, received_by_dealer=False) == D("0.00064181")
    assert booked_amount(D("5"), USDT, received_by_dealer=True) == D("5")
    with pytest.raises(InvalidAmount, match="not negative"):
        booked_amount(D("-1"), USDT, received_by_dealer=True)
