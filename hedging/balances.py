"""LP balances as the hedger routes with them: cached, refreshed in the background.

Asking a live venue for balances takes a round trip, too slow for every hedge. The cache answers
the last known free balances at once; when they are older than the TTL (or an order's answer
changed them) it answers them anyway and refreshes them in the background. Only an LP never seen
is waited for (bounded).

What the hedger's own orders may spend is subtracted from the venue's figures until a refresh
that started after the order's answer was recorded: before that, the venue's figure may not
include the order yet, so one round never routes twice on the same money.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

from venues.base import ExecutionVenue, VenueAccount

log = logging.getLogger(__name__)

Monotonic = Callable[[], float]


@dataclass(slots=True)
class _Spend:
    asset: str
    amount: Decimal
    answered_at: float | None = None  # when its answer was recorded


@dataclass(slots=True)
class _Entry:
    free: dict[str, Decimal] = field(default_factory=dict)
    fetch_started: float | None = None  # of the figures in `free`; None: never fetched
    stale: bool = False
    spends: dict[str, _Spend] = field(default_factory=dict)  # by client order id


class BalanceCache:
    def __init__(self, ttl_s: float, *, first_fetch_timeout_s: float = 2.0,
                 monotonic: Monotonic = time.monotonic) -> None:
        self._ttl_s = ttl_s
        self._first_timeout_s = first_fetch_timeout_s
        self._monotonic = monotonic
        self._entries: dict[uuid.UUID, _Entry] = {}
        self._refreshing: dict[uuid.UUID, asyncio.Task[None]] = {}

    async def free(self, venue: ExecutionVenue, account: VenueAccount) -> dict[str, Decimal] | None:
        """Free balance per asset, less what the hedger's orders may have spent since; None
        when the venue never answered."""
        key = account.trading_account_id
        entry = self._entries.setdefault(key, _Entry())
        if entry.fetch_started is None:
            # One first fetch per LP, shared by every caller (the worker's warm-up and a fill
            # arriving meanwhile); a caller that stops waiting leaves it to fill the cache.
            self._refresh_later(venue, account)
            first = self._refreshing.get(key)
            if first is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(first), self._first_timeout_s)
            if entry.fetch_started is None:
                return None
        elif entry.stale or self._monotonic() - entry.fetch_started > self._ttl_s:
            self._refresh_later(venue, account)
        free = dict(entry.free)
        for spend in entry.spends.values():
            free[spend.asset] = free.get(spend.asset, Decimal(0)) - spend.amount
        return free

    def spend(self, trading_account_id: uuid.UUID, client_order_id: str, asset: str,
              amount: Decimal) -> None:
        """An order sent: it may consume `amount` of `asset` until the venue's figures tell."""
        entry = self._entries.setdefault(trading_account_id, _Entry())
        entry.spends[client_order_id] = _Spend(asset, amount)

    def answered(self, trading_account_id: uuid.UUID, client_order_id: str) -> None:
        """The order's answer is in: the next refresh replaces what it spent."""
        entry = self._entries.get(trading_account_id)
        if entry is None:
            return
        entry.stale = True
        spend = entry.spends.get(client_order_id)
        if spend is not None and spend.answered_at is None:
            spend.answered_at = self._monotonic()

    def refresh_soon(self, trading_account_id: uuid.UUID) -> None:
        """Its figures may be out of date (nothing could be routed): refresh at next use."""
        entry = self._entries.get(trading_account_id)
        if entry is not None:
            entry.stale = True

    async def close(self) -> None:
        tasks = list(self._refreshing.values())
        self._refreshing.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _refresh_later(self, venue: ExecutionVenue, account: VenueAccount) -> None:
        key = account.trading_account_id
        if key in self._refreshing:
            return
        task = asyncio.create_task(self._fetch(venue, account), name=f"balances {key}")
        self._refreshing[key] = task
        task.add_done_callback(lambda _: self._refreshing.pop(key, None))

    async def _fetch(self, venue: ExecutionVenue, account: VenueAccount) -> None:
        started = self._monotonic()
        try:
            balances = await venue.balances(account)
        except Exception as exc:
            log.warning("balances of LP %s unavailable: %s", account.trading_account_id, exc)
            return
        entry = self._entries.setdefault(account.trading_account_id, _Entry())
        entry.free = {b.asset: b.free for b in balances}
        entry.fetch_started = started
        entry.stale = False
        entry.spends = {coid: spend for coid, spend in entry.spends.items()
                        if spend.answered_at is None or spend.answered_at >= started}
