"""The hedge worker's LP balance cache: one first fetch per LP, shared by every caller."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
from typing import Any

from hedging.balances import BalanceCache
from tests.helpers import eventually
from venues.base import Balance, VenueAccount


class SlowExchange:
    """An exchange whose balances answer when the test lets them (a hand-written fake)."""

    def __init__(self) -> None:
        self.calls = 0
        self.answer = asyncio.Event()

    async def balances(self, account: VenueAccount) -> list[Balance]:
        self.calls += 1
        await self.answer.wait()
        return [Balance("USDT", Decimal("1000"), Decimal(0))]


async def test_callers_waiting_for_an_lps_first_balances_share_one_fetch() -> None:
    cache = BalanceCache(5.0, first_fetch_timeout_s=2.0)
    exchange = SlowExchange()
    account = VenueAccount(uuid.uuid4(), "spot")
    venue: Any = exchange
    waiting = [asyncio.create_task(cache.free(venue, account)) for _ in range(3)]
    await asyncio.sleep(0)  # every caller is waiting now
    exchange.answer.set()
    assert await asyncio.gather(*waiting) == [{"USDT": Decimal("1000")}] * 3
    assert exchange.calls == 1
    await cache.close()


async def test_a_caller_that_stops_waiting_leaves_the_fetch_to_fill_the_cache() -> None:
    cache = BalanceCache(5.0, first_fetch_timeout_s=0.01)
    exchange = SlowExchange()
    account = VenueAccount(uuid.uuid4(), "spot")
    venue: Any = exchange
    assert await cache.free(venue, account) is None  # the venue did not answer in time
    exchange.answer.set()

    async def filled() -> bool:
        return await cache.free(venue, account) == {"USDT": Decimal("1000")}

    await eventually(filled, within_s=1.0, every_s=0.005)
    assert exchange.calls == 1
    await cache.close()
