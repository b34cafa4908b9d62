"""Which connector serves which venue, built once in the app factory from settings."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Protocol

from venues.base import EXCHANGE_VENUES, ExecutionVenue, MarketDataVenue
from venues.fees import default_fees


class ConnectorUnavailable(Exception):
    """A configured connector cannot be built (unknown venue, missing settings)."""


class Connector(MarketDataVenue, ExecutionVenue, Protocol):
    """A connector serving both sides of one venue."""

    async def close(self) -> None: ...


ConnectorFactory = Callable[[str], Connector]


class VenueRegistry:
    def __init__(self, connectors: Mapping[str, str],
                 factories: Mapping[str, ConnectorFactory]) -> None:
        unknown = sorted(set(connectors) - set(EXCHANGE_VENUES))
        if unknown:
            raise ConnectorUnavailable(
                "DEALER_VENUE_CONNECTORS names unknown venue(s): " + ", ".join(unknown)
            )
        self._kinds = {venue: connectors.get(venue, "paper") for venue in EXCHANGE_VENUES}
        missing = sorted({kind for kind in self._kinds.values() if kind not in factories})
        if missing:
            raise ConnectorUnavailable(f"no connector named {', '.join(missing)}")
        self._connectors: dict[str, Connector] = {
            venue: factories[kind](venue) for venue, kind in self._kinds.items()
        }

    def market_data(self, venue: str) -> MarketDataVenue:
        return self._connectors[venue]

    def execution(self, venue: str) -> ExecutionVenue:
        return self._connectors[venue]

    def connectors(self) -> dict[str, str]:
        """Venue → connector name, for health and the startup banner."""
        return dict(self._kinds)

    @property
    def all_paper(self) -> bool:
        return all(kind == "paper" for kind in self._kinds.values())

    @staticmethod
    def default_taker_fee(venue: str) -> Decimal:
        return default_fees(venue)[1]

    async def close(self) -> None:
        for connector in self._connectors.values():
            with contextlib.suppress(Exception):
                await connector.close()
