"""The application factory: settings in, a ready aiohttp app out. `main()` only runs it."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from functools import partial

import asyncpg
from aiohttp import web

from dealer import db
from dealer.api import (
    credentials,
    fermata,
    hedging,
    ledger,
    market,
    meta,
    rfq,
    trading_accounts,
)
from dealer.api.framework import Api
from dealer.api.market import sync_venue
from dealer.appkeys import (
    API,
    ASSET_SCALES,
    CLOCK,
    DSN,
    HEDGE_WORKER,
    LEDGER,
    MARKET_DATA,
    METRICS,
    POOL,
    QUOTE_ROUTE,
    QUOTER,
    RELAY,
    SCHEDULER,
    SECRET_BOX,
    SECRETS,
    SETTINGS,
    TOKENS,
    VENUES,
    Clock,
    QuoteRoute,
)
from dealer.auth import TokenVerifier
from dealer.demo import demo_ctx
from dealer.marketdata import MarketDataService
from dealer.metrics import Metrics
from dealer.middlewares import install_api
from dealer.scheduler import JobRuns, add_job, build_scheduler, drain_links, exposure_check
from dealer.secretbox import SecretBox
from dealer.services import pnl, reconciliation
from dealer.services.quoting import Quoter, QuoteWriter
from dealer.services.rfq import QuoteExpiry, QuotePurge
from dealer.settings import DaemonSecrets, Settings, SettingsError
from dealer.uow import connection
from dealer.wire import TimeTexts
from hedging.late_fees import book_late_fees
from hedging.worker import HedgeWorker
from ledger.assets import DEFAULT_SCALES, ScaleTable, check_pinned
from ledger.backend import LedgerBackend
from ledger.formance import FormanceConfig, FormanceLedger
from ledger.local import LocalLedger
from ledger.outbox import OutboxRelay
from venues.cadenza.client import CadenzaVenue, rate_limiter
from venues.cadenza.config import CadenzaConfig
from venues.paper.client import PaperVenue
from venues.paper.config import PaperConfig
from venues.registry import ConnectorFactory, ConnectorUnavailable, VenueRegistry

log = logging.getLogger(__name__)
# How often the quote retention (when set) deletes what passed it: hours of retention make any
# finer cadence pointless, and each run is one indexed pass over the oldest quotes.
QUOTE_PURGE_EVERY_S = 60.0
# How often hedge fees left out of their fills (no scale for their asset then) are looked for
# and booked when this daemon has the scale; also once at start, so a restart with the scale
# configured books them at once.
LATE_FEES_EVERY_S = 60.0


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def build_api() -> Api:
    """Every endpoint of the daemon, registered once (used by the app and the OpenAPI test)."""
    api = Api()
    for area in (meta, credentials, trading_accounts, fermata, market, ledger, rfq, hedging):
        area.register(api)
    return api


def create_app(
    settings: Settings, secrets: DaemonSecrets, *, clock: Clock = utc_now
) -> web.Application:
    """Build the app. Resources start in dependency order and stop in reverse."""
    if settings.ledger_backend == "formance" and not settings.formance_url:
        raise SettingsError("DEALER_LEDGER_BACKEND=formance needs DEALER_FORMANCE_URL")
    # No aiohttp middleware: `install_api` wraps each route in the daemon's own.
    app = web.Application(client_max_size=settings.http_max_body_bytes)
    app[SETTINGS] = settings
    app[SECRETS] = secrets
    app[TOKENS] = TokenVerifier(secrets.jwt_secret)
    app[CLOCK] = clock
    app[METRICS] = Metrics()
    app[SECRET_BOX] = SecretBox(secrets.secrets_key)
    app[VENUES] = build_venues(settings, clock_ms(clock))
    api = build_api()
    app[API] = api
    install_api(app, api)
    app.cleanup_ctx.append(database_ctx)
    app.cleanup_ctx.append(ledger_ctx)
    app.cleanup_ctx.append(relay_ctx)
    app.cleanup_ctx.append(venues_ctx)
    app.cleanup_ctx.append(demo_ctx)
    app.cleanup_ctx.append(market_data_ctx)
    app.cleanup_ctx.append(quoting_ctx)
    app.cleanup_ctx.append(hedge_ctx)
    app.cleanup_ctx.append(scheduler_ctx)
    return app


async def database_ctx(app: web.Application) -> AsyncIterator[None]:
    """Embedded server (when no URL is set) → migrations → pool → secrets-key check."""
    settings = app[SETTINGS]
    with db.reaching_database():
        dsn, server = await db.resolve_database(settings.database_url, settings.data_dir)
        applied = await db.migrate(dsn)
    if applied:
        log.info("database migrated to version %d", applied[-1])
    with db.reaching_database():
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
    """The ledger backend, after the asset scales were checked against those already used."""
    settings = app[SETTINGS]
    scales = ScaleTable(DEFAULT_SCALES).merged(settings.asset_scales)
    async with app[POOL].acquire() as conn:
        pinned = {r["code"]: r["scale"] for r in await conn.fetch(
            "SELECT code, scale FROM ledger_asset_scale")}
    conflicts = check_pinned(scales.scales, pinned)
    if conflicts:
        raise SettingsError("asset scales conflict with the ledger: " + "; ".join(conflicts))
    app[ASSET_SCALES] = scales
    backend: LedgerBackend
    if settings.ledger_backend == "formance":
        assert settings.formance_url is not None
        backend = FormanceLedger(FormanceConfig(
            base_url=settings.formance_url, ledger_name=settings.formance_ledger,
            client_id=settings.formance_client_id, client_secret=settings.formance_client_secret,
        ))
    else:
        backend = LocalLedger(app[POOL])
    app[LEDGER] = backend
    try:
        yield
    finally:
        await backend.close()


async def relay_ctx(app: web.Application) -> AsyncIterator[None]:
    """The outbox relay: sends ledger entries in order; drains (bounded) on shutdown."""
    relay = OutboxRelay(app[POOL], app[LEDGER], app[METRICS], app[CLOCK],
                        linger_s=app[SETTINGS].ledger_relay_linger_ms / 1000,
                        listen_connect=partial(db.connect, app[DSN]))
    app[RELAY] = relay
    relay.start()
    try:
        yield
    finally:
        await relay.stop()


async def venues_ctx(app: web.Application) -> AsyncIterator[None]:
    metrics = app[METRICS]
    for venue, connector in app[VENUES].connectors().items():
        metrics.venue_connector.labels(venue, connector).set(1)
    try:
        yield
    finally:
        await app[VENUES].close()


async def market_data_ctx(app: web.Application) -> AsyncIterator[None]:
    """Live books of every linked LP, following links as they change."""
    venues = app[VENUES]
    service = MarketDataService(venues.market_data, venues.default_taker_fee, app[METRICS],
                                clock_ms(app[CLOCK]), app[SETTINGS].book_max_age_ms)
    app[MARKET_DATA] = service
    await service.refresh(app[POOL])
    # Start serving once the first books are in (bounded: a venue that is down only delays).
    if not await service.wait_ready(timeout_s=5.0):
        log.warning("some LP books are not available yet: %s", service.stale_books())
    try:
        yield
    finally:
        await service.close()


async def quoting_ctx(app: web.Application) -> AsyncIterator[None]:
    """The quote path: cached quoting facts and the group writer of quotes."""
    writer = QuoteWriter(app[POOL])
    writer.start()
    app[QUOTER] = quoter = Quoter(app[POOL], app[MARKET_DATA], writer,
                                  on_read=app[METRICS].quote_fact_reads.inc,
                                  scales=app[ASSET_SCALES], clock=app[CLOCK])
    app[QUOTE_ROUTE] = QuoteRoute(quoter, app[METRICS], app[CLOCK], app[ASSET_SCALES],
                                  TimeTexts())
    try:
        yield
    finally:
        await quoter.close()
        await writer.stop()


async def hedge_ctx(app: web.Application) -> AsyncIterator[None]:
    """The hedge worker (when enabled): resolves in-flight hedge orders, then hedges jobs.
    Stopping lets the orders in flight be answered and recorded (bounded)."""
    settings = app[SETTINGS]
    worker = HedgeWorker(app[POOL], app[VENUES], app[ASSET_SCALES], app[METRICS], app[CLOCK],
                         books=app[MARKET_DATA].fresh_book,
                         poll_interval_s=settings.hedge_poll_ms / 1000,
                         max_attempts=settings.hedge_max_attempts,
                         lease_s=settings.hedge_lease_ms / 1000,
                         backoff_s=settings.hedge_backoff_ms / 1000,
                         unknown_grace_s=settings.hedge_unknown_grace_ms / 1000,
                         concurrency=settings.hedge_concurrency,
                         netting_threshold=Decimal(str(settings.hedge_netting_threshold)),
                         balance_ttl_s=settings.hedge_balance_ttl_ms / 1000,
                         carry_check_s=settings.hedge_carry_check_ms / 1000,
                         listen_connect=partial(db.connect, app[DSN]))
    app[HEDGE_WORKER] = worker
    if settings.hedge_enabled:
        worker.start()
    try:
        yield
    finally:
        await worker.stop()


async def scheduler_ctx(app: web.Application) -> AsyncIterator[None]:
    settings, metrics = app[SETTINGS], app[METRICS]
    scheduler = build_scheduler()
    runs = JobRuns()

    async def refresh_subscriptions() -> None:
        await app[MARKET_DATA].refresh(app[POOL])
        for symbol in app[MARKET_DATA].quoted_symbols:  # a replica that only takes accepts too
            metrics.fills_known(symbol)

    async def sync_linked_venues() -> None:
        for venue in await linked_venues(app[POOL]):
            await sync_venue(app, venue, None)

    async def reconcile_lps() -> None:
        checks = await reconciliation.reconcile(app[POOL], app[VENUES], app[LEDGER],
                                                app[CLOCK]())
        metrics.reconciliation_drift.clear()
        for check in checks:
            for asset in check.assets:
                # 0 when OK: within the tolerance, as the ReconciliationDrift alert expects
                metrics.reconciliation_drift.labels(str(check.trading_account_id),
                                                    asset.asset).set(
                    0.0 if asset.status == "OK" else float(asset.unexplained))
            if check.status == "DRIFT":
                log.warning("reconciliation drift on %s: %s", check.address,
                            [(a.asset, str(a.unexplained)) for a in check.assets
                             if a.status != "OK"])

    quote_expiry = QuoteExpiry()

    async def expire_quotes() -> None:
        async with connection(app[POOL]) as conn:
            expired = await quote_expiry.run(conn, app[CLOCK]())
        if expired:
            metrics.quotes_expired.inc(expired)

    async def check_exposure() -> None:
        await exposure_check(app[POOL], app[MARKET_DATA], metrics,
                             hedging.kill_switch_policy(settings), app[CLOCK]())

    async def fold_pnl() -> None:
        async with connection(app[POOL]) as conn:
            await pnl.fold_pending(conn, app[ASSET_SCALES], app[CLOCK]())

    async def drain_lps() -> None:
        await drain_links(app[POOL], app[MARKET_DATA], metrics, app[CLOCK]())

    add_job(scheduler, metrics, "quote_expiry", expire_quotes, settings.quote_expiry_ms / 1000,
            runs=runs)
    if settings.quote_retention_hours:
        quote_purge = QuotePurge(dt.timedelta(hours=settings.quote_retention_hours))

        async def purge_old_quotes() -> None:
            async with connection(app[POOL]) as conn:
                purged = await quote_purge.run(conn, app[CLOCK](), metrics.quotes_purged.inc)
            if purged:
                log.info("purged %d expired quotes older than %d h", purged,
                         settings.quote_retention_hours,
                         extra={"event": "quotes_purged", "count": purged})

        add_job(scheduler, metrics, "quote_purge", purge_old_quotes, QUOTE_PURGE_EVERY_S,
                runs=runs)
    add_job(scheduler, metrics, "exposure_check", check_exposure,
            settings.exposure_check_ms / 1000, runs=runs)
    add_job(scheduler, metrics, "lp_drain", drain_lps, settings.exposure_check_ms / 1000,
            runs=runs)
    add_job(scheduler, metrics, "pnl_fold", fold_pnl, settings.pnl_fold_interval_s, runs=runs)
    add_job(scheduler, metrics, "reconciliation", reconcile_lps,
            settings.reconciliation_interval_s, runs=runs)
    add_job(scheduler, metrics, "book_subscriptions", refresh_subscriptions,
            settings.subscription_refresh_ms / 1000, runs=runs)

    async def book_fees_late() -> None:
        async with connection(app[POOL]) as conn:
            late = await book_late_fees(conn, app[ASSET_SCALES], app[CLOCK](),
                                        counted=metrics.hedge_fees_booked_late.inc)
        metrics.hedge_fees_waiting.set(late.waiting)
        if late.booked:
            log.info("booked %d hedge fees left out of their fills (no scale then)",
                     late.booked, extra={"event": "hedge_fees_booked_late", "count": late.booked})

    add_job(scheduler, metrics, "late_fees", book_fees_late, LATE_FEES_EVERY_S,
            first_run=utc_now(), runs=runs)
    add_job(scheduler, metrics, "instrument_sync", sync_linked_venues,
            settings.instrument_sync_interval_s, first_run=utc_now(), runs=runs)
    app[SCHEDULER] = scheduler
    scheduler.start()
    try:
        yield
    finally:
        # Before the pool and the venues close (cleanup runs in reverse): a run in progress
        # finishes rather than being cancelled mid-statement.
        await runs.stop(scheduler)


def build_venues(settings: Settings, now_ms: Callable[[], int]) -> VenueRegistry:
    """One connector per venue: paper unless DEALER_VENUE_CONNECTORS says cadenza."""
    paper = PaperConfig(
        books_dir=settings.paper_books_dir, seed=settings.paper_seed,
        book_interval_ms=settings.paper_book_interval_ms, latency_ms=settings.paper_latency_ms,
        reject_ratio=settings.paper_reject_ratio, timeout_ratio=settings.paper_timeout_ratio,
        starting_balances=dict(settings.paper_balances),
        journal_dir=settings.data_dir / "paper" if settings.paper_journal else None,
    )

    def paper_venue(venue: str) -> PaperVenue:
        try:
            return PaperVenue(venue, paper, now_ms)
        except (OSError, ValueError) as exc:  # books folder missing, a bad replay or journal file
            raise ConnectorUnavailable(f"paper connector: {exc}") from exc

    factories: dict[str, ConnectorFactory] = {"paper": paper_venue}
    if "cadenza" in settings.venue_connectors.values():
        if not (settings.cadenza_url and settings.cadenza_ws_url and settings.cadenza_token):
            raise ConnectorUnavailable(
                "the cadenza connector needs DEALER_CADENZA_URL, DEALER_CADENZA_WS_URL and "
                "DEALER_CADENZA_TOKEN"
            )
        try:
            cadenza = CadenzaConfig(
                base_url=settings.cadenza_url, ws_url=settings.cadenza_ws_url,
                token=settings.cadenza_token, timeout_ms=settings.cadenza_timeout_ms,
                rate_limit_per_s=settings.cadenza_rate_limit,
            )
        except ValueError as exc:
            raise ConnectorUnavailable(f"cadenza connector: {exc}") from None
        # One token bucket for every venue: the rate limit is Cadenza's, not a venue's.
        limiter = rate_limiter(cadenza)
        factories["cadenza"] = lambda venue: CadenzaVenue(venue, cadenza, limiter=limiter)
    return VenueRegistry(settings.venue_connectors, factories)


def clock_ms(clock: Clock) -> Callable[[], int]:
    """The app clock in unix milliseconds (what venues and market data speak)."""
    return lambda: int(clock().timestamp() * 1000)


async def linked_venues(pool: asyncpg.Pool) -> list[str]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            """SELECT DISTINCT ta.venue FROM dealer_link l
               JOIN trading_account ta USING (trading_account_id) ORDER BY 1"""
        )
    return [r["venue"] for r in rows]
