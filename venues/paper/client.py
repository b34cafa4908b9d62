"""The paper connector's client: the same protocol as a live connector, served in-process."""

from __future__ import annotations

from venues.base import ApiCredential, CredentialRejected, VenueIdentity
from venues.paper.config import identities_for


class PaperVenue:
    """A simulated venue. Any non-empty API key verifies and sees the venue's identities."""

    connector = "paper"

    def __init__(self, venue: str) -> None:
        self.venue = venue

    async def verify_credential(self, credential: ApiCredential) -> list[VenueIdentity]:
        if not credential.api_key.strip():
            raise CredentialRejected("API key is empty")
        return list(identities_for(self.venue))
