"""Paper connector configuration: the identities each simulated venue exposes."""

from __future__ import annotations

from venues.base import VenueIdentity

# External trading account ids per venue, as in seeds/000's tables; others get a spot account.
PAPER_IDENTITIES: dict[str, tuple[VenueIdentity, ...]] = {
    "BINANCE": (
        VenueIdentity("spot", "SPOT", "SPOT", "Spot trading account"),
        VenueIdentity("margin", "MARGIN", "MARGIN", "Cross margin account"),
        VenueIdentity("isolated_margin", "MARGIN", "ISOLATED_MARGIN", "Isolated margin accounts"),
        VenueIdentity("futures", "FUTURES", "USDT_FUTURES", "USDT-M Futures"),
        VenueIdentity("coin_futures", "FUTURES", "COIN_FUTURES", "COIN-M Futures"),
    ),
    "OKX": (
        VenueIdentity("trading", "UNIFIED", "TRADING", "Unified trading account"),
        VenueIdentity("funding", "FUNDING", "FUNDING", "Funding account"),
    ),
    "BYBIT": (
        VenueIdentity("unified", "UNIFIED", "UNIFIED", "Unified Trading Account"),
        VenueIdentity("spot", "SPOT", "SPOT", "Spot account"),
        VenueIdentity("contract", "FUTURES", "CONTRACT", "Derivatives account"),
    ),
}
DEFAULT_IDENTITIES: tuple[VenueIdentity, ...] = (
    VenueIdentity("spot", "SPOT", "SPOT", "Spot trading account"),
)


def identities_for(venue: str) -> tuple[VenueIdentity, ...]:
    return PAPER_IDENTITIES.get(venue.upper(), DEFAULT_IDENTITIES)
