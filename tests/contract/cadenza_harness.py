"""The cadenza connector behind the contract suite's harness interface (see paper_harness.py).

A `FakeCadenza` (tests/fakes/cadenza.py) runs on 127.0.0.1 and a real `CadenzaVenue` talks to
it over HTTP: the suite exercises the connector's requests, envelopes and parsing end to end.
The fake matches orders with the paper engine at the venue's default fee rates, and its
accounts start empty, as the paper harness's do.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from decimal import Decimal

from tests.fakes.cadenza import FakeCadenza, FakeServer
from venues.base import Level, VenueAccount
from venues.cadenza import CadenzaConfig, CadenzaVenue
from venues.fees import default_fees


class CadenzaHarness:
    """A CadenzaVenue against a fake Cadenza started on first use."""

    name = "cadenza"
    symbol = "BTC/USDT"

    def __init__(self, venue: str = "BINANCE") -> None:
        self.venue_name = venue
        self.maker_fee, self.taker_fee = default_fees(venue)
        self.fake = FakeCadenza(starting_balances={}, fees=(self.maker_fee, self.taker_fee))
        self._server: FakeServer | None = None
        self._connector: CadenzaVenue | None = None

    async def venue(self) -> CadenzaVenue:
        if self._connector is None:
            self._server = FakeServer(self.fake)
            running = await self._server.start()
            config = CadenzaConfig(running.url, running.ws_url, self.fake.token,
                                   timeout_ms=2000, rate_limit_per_s=1000)
            self._connector = CadenzaVenue(self.venue_name, config)
        return self._connector

    async def set_book(self, symbol: str, bids: Sequence[Level], asks: Sequence[Level]) -> None:
        self.fake.set_book(self.venue_name, symbol, bids, asks)

    async def set_balance(self, account: VenueAccount, asset: str, amount: Decimal) -> None:
        assert account.venue_ref is not None
        self.fake.set_balance(account.venue_ref, asset, amount)

    def account(self) -> VenueAccount:
        venue_ref = self.fake.add_account(self.venue_name)
        return VenueAccount(uuid.uuid4(), "spot", venue_ref)

    async def close(self) -> None:
        if self._connector is not None:
            await self._connector.close()
        if self._server is not None:
            await self._server.close()
