"""The application factory: settings in, a ready aiohttp app out. `main()` only runs it."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from dealer import db
from dealer.api import credentials, fermata, meta, trading_accounts
from dealer.api.framework import Api
from dealer.appkeys import (
    API,
    CLOCK,
    DSN,
    LEDGER,
    METRICS,
    POOL,
    SECRET_BOX,
    SECRETS,
    SETTINGS,
    VENUES,
    Clock,
)
from dealer.demo import demo_ctx
from dealer.metrics import Metrics
from dealer.middlewares import MIDDLEWARES
from dealer.secretbox import SecretBox
from dealer.settings import DaemonSecrets, Settings, SettingsError
from ledger.local import LocalLedger
from venues.registry import VenueRegistry

log = logging.getLogger(__name__)


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def build_api() -> Api:
    """Every endpoint of the daemon, registered once (used by the app and the OpenAPI test)."""
    api = Api()
    for area in (meta, credentials, trading_accounts, fermata):
        area.register(api)
    return api


def create_app(
    settings: Settings, secrets: DaemonSecrets, *, clock: Clock = utc_now
) -> web.Application:
    """Build the app. Resources start in dependency order and stop in reverse."""
    if settings.ledger_backend != "local":
        raise SettingsError(
            "DEALER_LEDGER_BACKEND=formance is not available in this version; use local"
        )
    app = web.Application(middlewares=MIDDLEWARES, client_max_size=settings.http_max_body_bytes)
    app[SETTINGS] = settings
    app[SECRETS] = secrets
    app[CLOCK] = clock
    app[METRICS] = Metrics()
    app[SECRET_BOX] = SecretBox(secrets.secrets_key)
    app[VENUES] = VenueRegistry(settings.venue_connectors)
    api = build_api()
    app[API] = api
    api.install(app)
    app.cleanup_ctx.append(database_ctx)
    app.cleanup_ctx.append(ledger_ctx)
    app.cleanup_ctx.append(venues_ctx)
    app.cleanup_ctx.append(demo_ctx)
    return app


async def database_ctx(app: web.Application) -> AsyncIterator[None]:
    """Embedded server (when no URL is set) → migrations → pool → secrets-key check."""
    settings = app[SETTINGS]
    dsn, server = await db.resolve_database(settings.database_url, settings.data_dir)
    applied = await db.migrate(dsn)
    if applied:
        log.info("database migrated to version %d", applied[-1])
    pool = await db.create_pool(dsn, settings.db_pool_min, settings.db_pool_max)
    try:
        await _check_secrets_key(pool, app[SECRET_BOX])
        app[DSN] = dsn
        app[POOL] = pool
        yield
    finally:
        await pool.close()
    # The embedded server stops when the last daemon using it exits (its own atexit hook).
    del server


async def _check_secrets_key(pool: object, box: SecretBox) -> None:
    import asyncpg

    assert isinstance(pool, asyncpg.Pool)
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO daemon_meta (key, value) VALUES ('secrets_key_check', $1) "
            "ON CONFLICT (key) DO NOTHING",
            box.key_check(),
        )
        stored = await conn.fetchval(
            "SELECT value FROM daemon_meta WHERE key = 'secrets_key_check'"
        )
    box.verify_key_check(stored)


async def ledger_ctx(app: web.Application) -> AsyncIterator[None]:
    app[LEDGER] = LocalLedger()
    yield


async def venues_ctx(app: web.Application) -> AsyncIterator[None]:
    metrics = app[METRICS]
    for venue, connector in app[VENUES].connectors().items():
        metrics.venue_connector.labels(venue, connector).set(1)
    yield
