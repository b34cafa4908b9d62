"""One execution contract, every connector: the `harness` fixture runs each test per connector."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from decimal import Decimal
from typing import Protocol

import pytest

from tests.contract.cadenza_harness import CadenzaHarness
from tests.contract.paper_harness import PaperHarness
from venues.base import ExecutionVenue, Level, MarketDataVenue, VenueAccount


class Connector(ExecutionVenue, MarketDataVenue, Protocol):
    """A connector serving both sides of a venue."""


class Harness(Protocol):
    """What the contract tests may use (documented in paper_harness.py)."""

    name: str
    symbol: str
    maker_fee: Decimal
    taker_fee: Decimal

    async def venue(self) -> Connector: ...

    async def set_book(self, symbol: str, bids: Sequence[Level],
                       asks: Sequence[Level]) -> None: ...

    async def set_balance(self, account: VenueAccount, asset: str, amount: Decimal) -> None: ...

    def account(self) -> VenueAccount: ...

    async def close(self) -> None: ...


HARNESSES: dict[str, Callable[[], Harness]] = {
    "paper": PaperHarness,
    "cadenza": CadenzaHarness,
}


@pytest.fixture(params=sorted(HARNESSES))
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    built = HARNESSES[request.param]()
    try:
        yield built
    finally:
        await built.close()
