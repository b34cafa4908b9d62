"""Which connector serves which venue, built once from settings in the app factory."""

from __future__ import annotations

from collections.abc import Mapping

from venues.base import EXCHANGE_VENUES, ExecutionVenue
from venues.paper.client import PaperVenue


class ConnectorUnavailable(Exception):
    """A configured connector cannot be built in this version of the daemon."""


class VenueRegistry:
    def __init__(self, connectors: Mapping[str, str]) -> None:
        self._kinds = {venue: connectors.get(venue, "paper") for venue in EXCHANGE_VENUES}
        unknown = sorted(set(connectors) - set(EXCHANGE_VENUES))
        if unknown:
            raise ConnectorUnavailable(
                "DEALER_VENUE_CONNECTORS names unknown venue(s): " + ", ".join(unknown)
            )
        not_built = sorted(v for v, kind in self._kinds.items() if kind != "paper")
        if not_built:
            raise ConnectorUnavailable(
                "the cadenza connector is not available in this version; configured for: "
                + ", ".join(not_built)
            )
        self._venues: dict[str, ExecutionVenue] = {v: PaperVenue(v) for v in self._kinds}

    def execution(self, venue: str) -> ExecutionVenue:
        return self._venues[venue]

    def connectors(self) -> dict[str, str]:
        """Venue → connector name, for health and the startup banner."""
        return dict(self._kinds)

    @property
    def all_paper(self) -> bool:
        return all(kind == "paper" for kind in self._kinds.values())
