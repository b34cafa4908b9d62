"""`DEALER_DEMO=1`: seed an empty database with a demo desk, and the startup banner."""

from __future__ import annotations

import logging
import shlex
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import asyncpg
import orjson
from aiohttp import web

import dealer
from dealer.api.market import sync_dealer_instruments
from dealer.appkeys import CLOCK, LEDGER, POOL, SECRET_BOX, SETTINGS, VENUES
from dealer.auth import Role, mint_token
from dealer.services import credentials, dealers, trading_accounts
from dealer.services.reconciliation import capture_baseline
from dealer.settings import DaemonSecrets, Settings
from dealer.uow import UnitOfWork
from venues.base import ApiCredential

log = logging.getLogger(__name__)

DEMO_LOCK_KEY = 0x44454D4F  # "DEMO"
DEMO_LPS = (("BINANCE", "spot"), ("OKX", "trading"), ("BYBIT", "spot"))
DEMO_SYMBOLS = ["BTC/USDT", "ETH/USDT"]
DEMO_TOKEN_TTL = 7 * 24 * 3600
BANNER_END = "Stop with Ctrl-C (SIGTERM stops gracefully too)."


@dataclass(frozen=True, slots=True)
class DemoDesk:
    dealer_account_id: uuid.UUID
    client_account_id: uuid.UUID
    lps: tuple[tuple[str, str, uuid.UUID], ...]  # venue, external id, trading account id

    def to_json(self) -> str:
        return orjson.dumps({
            "dealerAccountId": str(self.dealer_account_id),
            "clientAccountId": str(self.client_account_id),
            "lps": [[v, e, str(i)] for v, e, i in self.lps],
        }).decode()

    @classmethod
    def from_json(cls, raw: str) -> DemoDesk:
        value = orjson.loads(raw)
        return cls(uuid.UUID(value["dealerAccountId"]), uuid.UUID(value["clientAccountId"]),
                   tuple((v, e, uuid.UUID(i)) for v, e, i in value["lps"]))


DEMO = web.AppKey("demo", DemoDesk)


async def demo_ctx(app: web.Application) -> AsyncIterator[None]:
    """Seed once when the database is empty; remember the desk for the banner."""
    if app[SETTINGS].demo:
        desk = await seed_demo(app)
        if desk is not None:
            app[DEMO] = desk
    yield


async def seed_demo(app: web.Application) -> DemoDesk | None:
    pool: asyncpg.Pool = app[POOL]
    async with pool.acquire() as lock_conn:
        # Two daemons started at once on one database: one seeds, the other finds the result.
        await lock_conn.execute("SELECT pg_advisory_lock($1)", DEMO_LOCK_KEY)
        try:
            stored = await lock_conn.fetchval("SELECT value FROM daemon_meta WHERE key = 'demo'")
            if stored is not None:
                return DemoDesk.from_json(stored)
            if await lock_conn.fetchval("SELECT count(*) FROM trading_account"):
                log.warning("DEALER_DEMO=1 but the database is not empty: no demo data seeded")
                return None
            desk = await _seed(app)
            await lock_conn.execute(
                "INSERT INTO daemon_meta (key, value) VALUES ('demo', $1)", desk.to_json()
            )
            log.info("seeded the demo desk: dealer %s", desk.dealer_account_id)
            return desk
        finally:
            await lock_conn.execute("SELECT pg_advisory_unlock($1)", DEMO_LOCK_KEY)


async def _seed(app: web.Application) -> DemoDesk:
    pool, now = app[POOL], app[CLOCK]()
    lps = []
    for venue, external_id in DEMO_LPS:
        secret = ApiCredential(f"demo-{venue.lower()}-key", f"demo-{venue.lower()}-secret")
        async with UnitOfWork(pool) as uow:
            credential = await credentials.create_credential(
                uow, app[SECRET_BOX],
                credentials.NewCredential(venue, "API_KEY", f"Demo {venue} key", secret), now,
            )
        async with UnitOfWork(pool) as uow:
            await credentials.verify_credentials(uow, app[SECRET_BOX], app[VENUES],
                                                 [credential.credential_id], now)
        async with UnitOfWork(pool) as uow:
            account = await trading_accounts.connect_account(
                uow, app[SECRET_BOX], app[VENUES],
                trading_accounts.ConnectCommand([credential.credential_id], external_id,
                                                f"Demo {venue} {external_id}"), now,
            )
        lps.append((venue, external_id, account.trading_account_id))
    async with UnitOfWork(pool) as uow:
        desk_dealer = await dealers.create_dealer(
            uow, now, config=dealers.parse_config({"symbols": DEMO_SYMBOLS}),
            nickname="Demo dealer",
        )
    for _, _, account_id in lps:
        async with UnitOfWork(pool) as uow:
            await dealers.link_lp(uow, now, desk_dealer.dealer_account_id,
                                  account_id)
        await capture_baseline(pool, app[VENUES], app[LEDGER], account_id, now)
    await sync_dealer_instruments(app, desk_dealer.dealer_account_id)
    async with UnitOfWork(pool) as uow:
        client = await dealers.create_client(uow, now, nickname="Demo client")
    return DemoDesk(desk_dealer.dealer_account_id, client.trading_account_id, tuple(lps))


def redact_dsn(dsn: str) -> str:
    """A database URL fit for a banner: no password."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()


def _curl(base_url: str, path: str, token_var: str | None = None,
          body: dict[str, str] | None = None) -> str:
    """A curl line that pastes as is into a POSIX shell where the token variables are set."""
    words = ["curl -s"]
    if token_var:
        words.append(f'-H "Authorization: Bearer ${token_var}"')
    if body is not None:
        words += ["-H 'Content-Type: application/json'",
                  "-d " + shlex.quote(orjson.dumps(body).decode())]
    words.append(shlex.quote(f"{base_url}{path}"))
    return " ".join(words)


def demo_steps(base_url: str, desk: DemoDesk) -> list[tuple[str, str]]:
    """(what it shows, the curl) for each step of the demo, in order."""
    dealer_id = desk.dealer_account_id
    first_lp = desk.lps[0][2]
    return [
        ("health: database, ledger and venues", _curl(base_url, "/api/v3/health")),
        ("the demo dealer", _curl(base_url, f"/api/v3/fermata/dealer/get?dealerAccountId="
                                  f"{dealer_id}", "ADMIN_TOKEN")),
        ("its three linked LPs", _curl(base_url, f"/api/v3/fermata/dealer/listLinks?"
                                       f"dealerAccountId={dealer_id}", "ADMIN_TOKEN")),
        ("the consolidated BTC/USDT book of the three LPs (fee-adjusted, with sources)",
         _curl(base_url, f"/api/v3/fermata/dealer/orderBook?dealerAccountId={dealer_id}"
               "&symbol=BTC/USDT&depth=5", "ADMIN_TOKEN")),
        ("the exchange trading accounts", _curl(base_url, "/api/v3/tradingAccount/list?"
                                                "venue=BINANCE", "ADMIN_TOKEN")),
        ("unlink the BINANCE LP", _curl(base_url, "/api/v3/fermata/dealer/unlink", "ADMIN_TOKEN", {
            "dealerAccountId": str(dealer_id), "tradingAccountId": str(first_lp)})),
        ("link it again", _curl(base_url, "/api/v3/fermata/dealer/link", "ADMIN_TOKEN", {
            "dealerAccountId": str(dealer_id), "tradingAccountId": str(first_lp)})),
        ("linking twice is refused (errno -130007)", _curl(
            base_url, "/api/v3/fermata/dealer/link", "ADMIN_TOKEN",
            {"dealerAccountId": str(dealer_id), "tradingAccountId": str(first_lp)})),
        ("the client sees its own account", _curl(base_url, "/api/v3/fermata/client/list",
                                                  "CLIENT_TOKEN")),
        ("operation history of the BINANCE LP", _curl(
            base_url, f"/api/v3/tradingAccount/operation/list?tradingAccountId={first_lp}",
            "ADMIN_TOKEN")),
        ("the client asks a firm price for 0.5 BTC (printed on stderr) and accepts it at once "
         "(quotes live 5 s)", _quote_and_accept(base_url, desk)),
        ("the ledger: the client's fill, booked double-entry (the hedges follow on the LPs)",
         _curl(base_url, "/api/v3/ledger/transaction/list?limit=1&address=client:"
               f"{desk.client_account_id}", "ADMIN_TOKEN")),
    ]


def _quote_and_accept(base_url: str, desk: DemoDesk) -> str:
    """One shell line: request a quote as the client, then accept it with its quoteId."""
    client = str(desk.client_account_id)
    request = _curl(base_url, "/api/v3/fermata/quote/request", "CLIENT_TOKEN", {
        "dealerAccountId": str(desk.dealer_account_id), "tradingAccountId": client,
        "symbol": "BTC/USDT", "orderSide": "BUY", "quantity": "0.5"})
    pick = "python3 -c 'import json,sys; print(json.load(sys.stdin)[\"data\"][\"quoteId\"])'"
    accept = orjson.dumps({"tradingAccountId": client, "instrumentId": "FERMATA:BTC/USDT",
                           "orderSide": "BUY", "orderType": "QUOTED", "quantity": "0.5",
                           "quoteId": "QUOTE"}).decode()
    before, _, after = accept.partition("QUOTE\"")
    body = "'" + before + "'\"$QUOTE_ID\"'\"" + after + "'"
    return (f"QUOTE_ID=$({request} | tee /dev/stderr | {pick}) && "
            f'curl -s -H "Authorization: Bearer $CLIENT_TOKEN" '
            f"-H 'Content-Type: application/json' -d {body} "
            f"{shlex.quote(base_url + '/api/v3/trading/order/submit')}")


def banner(
    base_url: str,
    settings: Settings,
    connectors: dict[str, str],
    secrets: DaemonSecrets,
    desk: DemoDesk | None,
    *,
    embedded: bool,
    database: str,
) -> str:
    """What the daemon prints on stdout once it listens."""
    paper = sorted(v for v, kind in connectors.items() if kind == "paper")
    venue_line = ("every venue is served by the paper connector (simulated exchange)"
                  if len(paper) == len(connectors) else
                  ", ".join(f"{v}={k}" for v, k in sorted(connectors.items()) if k != "paper")
                  + "; the others: paper")
    lines = [
        f"Fermata Dealer {dealer.__version__} listening on {base_url}",
        f"  database: {'embedded PostgreSQL in ' + str(settings.data_dir / 'postgres') if embedded else redact_dsn(database)}",  # noqa: E501
        f"  ledger:   {settings.ledger_backend}",
        f"  venues:   {venue_line}",
        f"  API docs: {base_url}/api/v3/docs   OpenAPI: {base_url}/api/v3/openapi.json",
        "  tokens:   dealerd token --role admin|trader|viewer [--account ID] [--ttl S]",
    ]
    if desk is None:
        if settings.demo:
            lines.append("  demo:     not seeded (the database already holds accounts)")
        return "\n".join([*lines, BANNER_END])
    admin = mint_token(secrets.jwt_secret, Role.ADMIN, ttl_seconds=DEMO_TOKEN_TTL,
                       subject="demo-admin")
    client = mint_token(secrets.jwt_secret, Role.TRADER, accounts=[desk.client_account_id],
                        ttl_seconds=DEMO_TOKEN_TTL, subject="demo-client")
    lines += [
        "",
        "Demo desk (DEALER_DEMO=1):",
        f"  dealer  {desk.dealer_account_id}  quoting {', '.join(DEMO_SYMBOLS)}",
        *(f"  LP      {account_id}  {venue} {external}" for venue, external, account_id
          in desk.lps),
        f"  client  {desk.client_account_id}",
        "",
        "Paste these two lines into your shell first (tokens valid 7 days):",
        f"export ADMIN_TOKEN={admin}",
        f"export CLIENT_TOKEN={client}",
        "",
        "Then try each step:",
    ]
    for number, (what, curl) in enumerate(demo_steps(base_url, desk), 1):
        lines += [f"  # {number}. {what}", f"  {curl}"]
    return "\n".join([*lines, BANNER_END])
