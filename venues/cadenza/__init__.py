"""The cadenza connector: the Cadenza v3 REST API and its Centrifugo websocket (seeds/001)."""

from venues.cadenza.client import CadenzaVenue
from venues.cadenza.config import CadenzaConfig

__all__ = ["CadenzaConfig", "CadenzaVenue"]
