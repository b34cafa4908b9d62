"""Every typed AppKey of the application, in one place."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import asyncpg
from aiohttp import web

from dealer.settings import DaemonSecrets, Settings

if TYPE_CHECKING:
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    from dealer.api.framework import Api
    from dealer.auth import Principal, TokenVerifier
    from dealer.errors import ApiError
    from dealer.marketdata import MarketDataService
    from dealer.metrics import Metrics
    from dealer.secretbox import SecretBox
    from dealer.services.quoting import Quoter
    from dealer.wire import TimeTexts
    from hedging.worker import HedgeWorker
    from ledger.assets import ScaleTable
    from ledger.backend import LedgerBackend
    from ledger.outbox import OutboxRelay
    from venues.registry import VenueRegistry

Clock = Callable[[], dt.datetime]

SETTINGS = web.AppKey("settings", Settings)
SECRETS = web.AppKey("secrets", DaemonSecrets)
CLOCK: web.AppKey[Clock] = web.AppKey("clock")
API: web.AppKey[Api] = web.AppKey("api")
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
DSN = web.AppKey("dsn", str)
POOL = web.AppKey("pool", asyncpg.Pool)
SECRET_BOX: web.AppKey[SecretBox] = web.AppKey("secret_box")
LEDGER: web.AppKey[LedgerBackend] = web.AppKey("ledger")
RELAY: web.AppKey[OutboxRelay] = web.AppKey("relay")
ASSET_SCALES: web.AppKey[ScaleTable] = web.AppKey("asset_scales")
VENUES: web.AppKey[VenueRegistry] = web.AppKey("venues")
MARKET_DATA: web.AppKey[MarketDataService] = web.AppKey("market_data")
QUOTER: web.AppKey[Quoter] = web.AppKey("quoter")
TOKENS: web.AppKey[TokenVerifier] = web.AppKey("tokens")
SCHEDULER: web.AppKey[AsyncIOScheduler] = web.AppKey("scheduler")
HEDGE_WORKER: web.AppKey[HedgeWorker] = web.AppKey("hedge_worker")


class QuoteRoute(NamedTuple):
    """What the quote endpoint reads of the app, in one lookup (each is a Python call)."""

    quoter: Quoter
    metrics: Metrics
    clock: Clock
    scales: ScaleTable
    times: TimeTexts


QUOTE_ROUTE: web.AppKey[QuoteRoute] = web.AppKey("quote_route")

# Per-request storage.
REQUEST_ID = web.RequestKey("request_id", str)
PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("principal")
AUTH_ERROR: web.RequestKey[ApiError] = web.RequestKey("auth_error")
