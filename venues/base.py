"""The protocols every connector implements, and the domain types they speak."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

# The seed's venue enum, plus BYBIT. FERMATA names accounts that live inside this service.
EXCHANGE_VENUES: tuple[str, ...] = (
    "BINANCE", "B2C2", "WINTERMUTE", "BLOCKFILLS", "STONEX", "CUMBERLAND", "IBKR", "DERIBIT",
    "BITFINEX", "OKX", "BYBIT", "BINANCE_UAT", "B2C2_UAT", "WINTERMUTE_UAT", "BLOCKFILLS_UAT",
    "STONEX_UAT", "CUMBERLAND_UAT", "IBKR_UAT", "DERIBIT_UAT", "BITFINEX_UAT", "OKX_UAT",
    "BINANCE_SANDBOX", "B2C2_SANDBOX", "IBKR_PAPER", "MOCK", "PAPER",
)
FERMATA_VENUE = "FERMATA"


@dataclass(frozen=True, slots=True)
class ApiCredential:
    """An exchange API credential in clear, only ever held in memory."""

    api_key: str
    api_secret: str | None = field(default=None, repr=False)
    api_passphrase: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        return "ApiCredential(<redacted>)"


@dataclass(frozen=True, slots=True)
class VenueIdentity:
    """A trading account the credential may act for (seeds/000 external trading account ids)."""

    external_trading_account_id: str
    account_type: str
    external_account_type: str
    description: str


class CredentialRejected(Exception):
    """The venue refused the credential; the message is safe to show (never the secret)."""


class VenueUnavailable(Exception):
    """The venue could not be reached or answered an error."""


class ExecutionVenue(Protocol):
    """Private side of a connector: what a credential may trade on one venue."""

    venue: str
    connector: str

    async def verify_credential(self, credential: ApiCredential) -> list[VenueIdentity]:
        """The trading accounts the credential gives access to; CredentialRejected if none."""
        ...
