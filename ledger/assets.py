"""Assets in Formance notation (`CODE/scale`) and exact Decimal ↔ minor-unit conversion.

Pure: no I/O, no clock. Money arrives as `Decimal` and leaves as an integer of minor units; the
only rounding is the one the caller names (`Rounding`), and the two dealer-facing helpers name it
for them: what the dealer pays rounds down, what it receives rounds up (DESIGN §7).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Context, Decimal, InvalidOperation
from types import MappingProxyType
from typing import Final

MAX_SCALE: Final = 18
# Formance Ledger v2 takes amounts up to uint256 (~1.16e77); stay below it with a round bound.
MAX_MINOR_DIGITS: Final = 76

# Formance asset syntax `[A-Z][A-Z0-9]{0,16}`, kept to 16 characters as the chart allows.
_CODE_PATTERN = re.compile(r"[A-Z][A-Z0-9]{0,15}")
# `[0-9]`, not `\d`: int() would accept other scripts' digits, and a leading zero would make two
# spellings of one asset.
_NOTATION_PATTERN = re.compile(r"(?P<code>[^/]*)/(?P<scale>0|[1-9][0-9]*)")

DEFAULT_SCALES: Final[Mapping[str, int]] = MappingProxyType(
    {"BTC": 8, "ETH": 8, "USDT": 6, "USDC": 6, "USD": 2})


class InvalidAsset(ValueError):
    """An asset code, scale or notation the ledger would refuse."""


class UnknownAsset(LookupError):
    """An asset code with no configured scale."""


class InvalidAmount(ValueError):
    """An amount that is not a finite Decimal (or int of minor units) within the ledger's range."""


class NotRepresentable(InvalidAmount):
    """An amount with more decimals than its asset's scale, converted with `Rounding.EXACT`."""


@dataclass(frozen=True, slots=True)
class Asset:
    """An asset and the number of decimals of its minor unit; `str()` gives `BTC/8`."""

    code: str
    scale: int

    def __post_init__(self) -> None:
        if not isinstance(self.code, str) or not _CODE_PATTERN.fullmatch(self.code):
            raise InvalidAsset(
                f"invalid asset code {self.code!r}: use 1 to 16 upper-case letters A-Z or digits,"
                " starting with a letter (Formance asset syntax)")
        if (isinstance(self.scale, bool) or not isinstance(self.scale, int)
                or not 0 <= self.scale <= MAX_SCALE):
            raise InvalidAsset(
                f"invalid scale {self.scale!r} for asset {self.code}: the scale is the number of"
                f" decimals of the minor unit, an integer from 0 to {MAX_SCALE}")

    def __str__(self) -> str:
        return f"{self.code}/{self.scale}"

    @classmethod
    def parse(cls, notation: str) -> Asset:
        """Parse Formance notation `CODE/scale` (e.g. `BTC/8`); the scale is required."""
        match = _NOTATION_PATTERN.fullmatch(notation) if isinstance(notation, str) else None
        if match is None:
            raise InvalidAsset(
                f"invalid asset {notation!r}: expected Formance notation CODE/scale such as"
                " 'BTC/8' (scale without leading zeros)")
        return cls(match["code"], int(match["scale"]))


class ScaleTable:
    """Which scale the ledger uses for each asset code."""

    __slots__ = ("_assets",)

    def __init__(self, scales: Mapping[str, int]) -> None:
        self._assets: dict[str, Asset] = {code: Asset(code, scale)
                                          for code, scale in scales.items()}

    @classmethod
    def default(cls) -> ScaleTable:
        """The table of `DEFAULT_SCALES`."""
        return cls(DEFAULT_SCALES)

    def asset(self, code: str) -> Asset:
        """The asset for `code`, or UnknownAsset if no scale is configured for it."""
        found = self._assets.get(code)
        if found is None:
            known = ", ".join(sorted(self._assets)) or "none"
            raise UnknownAsset(
                f"unknown asset {code!r}: the ledger has no scale for it (configured: {known});"
                f" configure one with the asset_scales setting, e.g."
                f""" DEALER_ASSET_SCALES='{{"{code}": 8}}' to book it as {code}/8""")
        return found

    def merged(self, overrides: Mapping[str, int]) -> ScaleTable:
        """A new table with `overrides` added or replacing existing codes."""
        return ScaleTable({**self.scales, **overrides})

    @property
    def scales(self) -> dict[str, int]:
        """Code → scale (a copy)."""
        return {code: asset.scale for code, asset in self._assets.items()}

    def __contains__(self, code: object) -> bool:
        return code in self._assets

    def __repr__(self) -> str:
        return f"ScaleTable({self.scales!r})"


def check_pinned(configured: Mapping[str, int], pinned: Mapping[str, int]) -> list[str]:
    """Conflicts between configured scales and the scales the ledger already uses.

    The scale of an asset never changes once used (DESIGN §7): the daemon refuses to start when
    this list is not empty. Codes the ledger has not used yet, or that are no longer configured,
    are not conflicts.
    """
    return [f"{code}: configured scale {configured[code]} but the ledger already uses"
            f" {code}/{pinned[code]}"
            for code in sorted(configured.keys() & pinned.keys())
            if configured[code] != pinned[code]]


class Rounding(enum.Enum):
    """How `to_minor` treats digits beyond the asset's scale."""

    EXACT = "exact"  # refuse with NotRepresentable
    UP = "up"  # toward +infinity
    DOWN = "down"  # toward -infinity


def finite_decimal(value: object, what: str = "amount") -> Decimal:
    """Return `value` if it is a finite Decimal: TypeError for floats and other types,
    InvalidAmount for NaN and infinities."""
    if not isinstance(value, Decimal):
        hint = " (floats are never exact for money: build the Decimal from a string)" \
            if isinstance(value, float) else ""
        raise TypeError(f"{what} must be a Decimal, got {type(value).__name__} {value!r}{hint}")
    if not value.is_finite():
        raise InvalidAmount(f"{what} must be a finite Decimal, got {value}")
    return value


def to_minor(amount: Decimal, asset: Asset, rounding: Rounding) -> int:
    """`amount` in integer minor units of `asset`, rounded as `rounding` says (never silently)."""
    finite_decimal(amount)
    if not isinstance(rounding, Rounding):
        raise TypeError(f"rounding must be a Rounding, got {rounding!r}")
    if amount.is_zero():
        return 0
    if amount.adjusted() + asset.scale >= MAX_MINOR_DIGITS:
        raise InvalidAmount(
            f"{amount} {asset.code} is too large for the ledger (more than {MAX_MINOR_DIGITS}"
            f" digits of {asset} minor units)")
    # Integer arithmetic on the Decimal's own digits: Decimal operators round to the context
    # precision (28 digits by default), which an exact conversion cannot allow.
    sign, digits, exponent = amount.as_tuple()
    assert isinstance(exponent, int)  # finite, checked above
    coefficient = int("".join(map(str, digits)))
    shift = exponent + asset.scale
    magnitude: int
    if shift >= 0:
        magnitude, has_remainder = coefficient * 10 ** shift, False
    elif -shift > len(digits):
        # Below one minor unit; skipping divmod also avoids building 10**huge for 1E-999999.
        magnitude, has_remainder = 0, True
    else:
        magnitude, remainder = divmod(coefficient, 10 ** -shift)
        has_remainder = remainder != 0
    if has_remainder:
        if rounding is Rounding.EXACT:
            raise NotRepresentable(
                f"{amount} {asset.code} has more than {asset.scale} decimals: not representable"
                f" in {asset} minor units without rounding")
        # Truncation went toward zero; step one unit away from zero when that is the direction.
        away_from_zero = Rounding.DOWN if sign else Rounding.UP
        if rounding is away_from_zero:
            magnitude += 1
    return -magnitude if sign else magnitude


def from_minor(units: int, asset: Asset) -> Decimal:
    """The exact Decimal of `units` minor units, with exactly `asset.scale` decimals."""
    if isinstance(units, bool) or not isinstance(units, int):
        raise TypeError(f"minor units must be an int, got {type(units).__name__} {units!r}")
    sign, digits, _ = Decimal(units).as_tuple()
    # Built from the digit tuple: `Decimal.scaleb` would round beyond 28 digits.
    return Decimal((sign, digits, -asset.scale))


def _non_negative(amount: Decimal, asset: Asset) -> Decimal:
    if finite_decimal(amount) < 0:
        raise InvalidAmount(
            f"{amount} {asset.code}: an amount paid or received is a magnitude, not negative;"
            " reverse the direction of the posting instead")
    return amount


def minor_paid_by_dealer(amount: Decimal, asset: Asset) -> int:
    """Minor units of an amount the dealer pays, rounded DOWN: never more than agreed.

    Rounding only matters when the agreed amount has more decimals than the ledger keeps
    (quantity times price, a venue fee); exact amounts are never changed. The rule is one-sided so
    that rounding can never cost the dealer: what leaves its books rounds down, what enters them
    rounds up (`minor_received_by_dealer`), and the remainder, under one minor unit per leg, stays
    with the dealer, who set the price and carries the hedge risk.
    """
    return to_minor(_non_negative(amount, asset), asset, Rounding.DOWN)


def minor_received_by_dealer(amount: Decimal, asset: Asset) -> int:
    """Minor units of an amount the dealer receives, rounded UP (see `minor_paid_by_dealer`)."""
    return to_minor(_non_negative(amount, asset), asset, Rounding.UP)


def booked_amount(amount: Decimal, asset: Asset, *, received_by_dealer: bool) -> Decimal:
    """`amount` as the ledger books it: in whole minor units of `asset`, rounded UP when the
    dealer receives it and DOWN when the dealer pays it (what a client is shown it pays or
    gets, so that its order and the ledger agree). Equals `from_minor` of
    `minor_received_by_dealer` / `minor_paid_by_dealer`, in one quantize: quotes show it."""
    # the usual amount passes these tests without a call; _non_negative says what is wrong
    if not (isinstance(amount, Decimal) and amount.is_finite() and amount >= 0):
        _non_negative(amount, asset)
    if amount.adjusted() + asset.scale >= MAX_MINOR_DIGITS:
        to_minor(amount, asset, Rounding.UP)  # raises the same InvalidAmount
    return amount.quantize(_QUANTA[asset.scale],
                           context=_BOOK_UP if received_by_dealer else _BOOK_DOWN)


_QUANTA: Final = tuple(Decimal((0, (1,), -scale)) for scale in range(MAX_SCALE + 1))
_BOOK_UP: Final = Context(prec=MAX_MINOR_DIGITS, rounding=ROUND_CEILING, traps=[InvalidOperation])
_BOOK_DOWN: Final = Context(prec=MAX_MINOR_DIGITS, rounding=ROUND_FLOOR,
                            traps=[InvalidOperation])
