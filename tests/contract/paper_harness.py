"""The paper connector behind the harness interface of the connector contract suite.

Interface every connector harness implements (the Cadenza one too); the contract tests use
nothing else:

    name: str
        The connector's name ("paper").
    symbol: str
        A symbol the venue lists and the tests trade ("BTC/USDT").
    maker_fee: Decimal, taker_fee: Decimal
        The fee rates the venue charges. Tests read each fill's fee asset and amount from
        `Execution.fee` rather than assuming which asset a connector charges.
    async venue() -> MarketDataVenue & ExecutionVenue
        The connector under test; the same object on every call.
    async set_book(symbol, bids, asks) -> None
        From now on the venue's book of `symbol` is exactly these levels, best first, each a
        (price, quantity) pair of Decimals. Orders submitted afterwards trade against them; a
        resting order these levels trade through fills (as maker, at its limit price) by the time
        the next `order_status`, `cancel_order` or `balances` answers. Liquidity one order took
        is not there for the next order until `set_book` is called again.
    async set_balance(account, asset, amount) -> None
        The free amount of `asset` in `account` becomes `amount` (a Decimal).
    account() -> VenueAccount
        A new account on the venue, distinct from every earlier one, holding nothing until
        `set_balance`.
    async close() -> None
        Release what the harness started.

The paper harness runs on a `ManualClock` (time moves only when a test says so) and a
`ManualSleep` (latency and the book stream's pace advance that clock instead of waiting).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from decimal import Decimal

from venues.base import Level, VenueAccount
from venues.paper.client import PaperVenue
from venues.paper.config import PaperConfig

START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
_ACCOUNT_NAMESPACE = uuid.UUID("6f1c2e8a-3b0d-4c55-9a57-0c1f6d2b9e41")


class ManualClock:
    """A clock in unix milliseconds that moves only when told to."""

    def __init__(self, now_ms: int = START_MS) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms

    def advance(self, ms: int) -> None:
        if ms < 0:
            raise ValueError("a clock does not go back")
        self.now_ms += ms


class ManualSleep:
    """Stands in for asyncio.sleep: records each wait and advances the clock by it."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.clock.advance(round(seconds * 1000))
        await asyncio.sleep(0)  # still yield to the loop, as a real sleep would


class PaperHarness:
    """A paper venue on a manual clock, accounts starting empty (see the module docstring)."""

    name = "paper"
    symbol = "BTC/USDT"

    def __init__(self, venue: str = "BINANCE", config: PaperConfig | None = None) -> None:
        self.clock = ManualClock()
        self.sleep = ManualSleep(self.clock)
        self.config = config if config is not None else PaperConfig(starting_balances={})
        self._venue = PaperVenue(venue, self.config, self.clock, sleep=self.sleep)
        self.maker_fee, self.taker_fee = self.config.fees_for(venue)
        self._accounts = 0

    async def venue(self) -> PaperVenue:
        return self._venue

    async def set_book(self, symbol: str, bids: Sequence[Level], asks: Sequence[Level]) -> None:
        self._venue.pin_book(symbol, bids, asks)

    async def set_balance(self, account: VenueAccount, asset: str, amount: Decimal) -> None:
        self._venue.set_balance(account, asset, amount)

    def account(self) -> VenueAccount:
        self._accounts += 1
        account_id = uuid.uuid5(_ACCOUNT_NAMESPACE, f"{self._venue.venue}-{self._accounts}")
        return VenueAccount(account_id, "spot")

    async def close(self) -> None:
        await self._venue.close()
