"""Default spot fee rates per venue (maker, taker), used until an account's own rate is set."""

from __future__ import annotations

from decimal import Decimal

DEFAULT_FEES: dict[str, tuple[Decimal, Decimal]] = {
    "BINANCE": (Decimal("0.001"), Decimal("0.001")),
    "OKX": (Decimal("0.0008"), Decimal("0.001")),
    "BYBIT": (Decimal("0.001"), Decimal("0.001")),
}
FALLBACK_FEES = (Decimal("0.001"), Decimal("0.001"))


def default_fees(venue: str) -> tuple[Decimal, Decimal]:
    """(maker, taker) fee rates of a venue's standard spot tier."""
    return DEFAULT_FEES.get(venue.upper(), FALLBACK_FEES)
