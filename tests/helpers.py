"""Helpers shared by the end-to-end tests: HTTP calls, database checks, rows written directly."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestClient
from pydantic import BaseModel

from dealer import db
from dealer.app import build_api
from tests.conftest import ADMIN, assert_error, assert_ok

Client = TestClient[web.Request, web.Application]

# Every table an admin endpoint writes: a refused request must leave all of them unchanged.
WRITTEN_TABLES = ("credential", "trading_account", "trading_account_credential",
                  "trading_account_operation", "dealer", "dealer_link", "ledger_account",
                  "ledger_outbox", "lp_balance_baseline", "instrument")


@dataclass(frozen=True, slots=True)
class RequestField:
    """One field of an endpoint's request body or query, as the API's model declares it."""

    path: str
    wire_name: str  # the alias it is sent under, else its name
    name: str
    annotation: Any
    model: type[BaseModel]


def request_fields(part: Literal["body", "query"]) -> list[RequestField]:
    """Every field of every endpoint's request body (or query), from the API's own models."""
    fields: list[RequestField] = []
    for endpoint in build_api().endpoints:
        model: type[BaseModel] | None = endpoint.body if part == "body" else endpoint.query
        if model is None:
            continue
        fields.extend(RequestField(endpoint.path, info.alias or name, name, info.annotation, model)
                      for name, info in model.model_fields.items())
    return fields


async def empty_database(pg_server: Any) -> str:
    """A new database with nothing in it (no migrations) on the suite's server; answers its DSN."""
    name = f"p_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(pg_server.get_uri(database="postgres"))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    dsn: str = pg_server.get_uri(database=name)
    return dsn


@asynccontextmanager
async def migrated_before(pg_server: Any, version: int) -> AsyncIterator[asyncpg.Connection]:
    """A connection to a new database migrated up to (not including) `version`, as a database
    of an earlier release; `apply_all` brings it up to date."""
    conn = await db.connect(await empty_database(pg_server))
    try:
        await db.apply_migrations(conn, [m for m in db.bundled_migrations()
                                         if m.version < version])
        yield conn
    finally:
        await conn.close()


async def apply_all(conn: asyncpg.Connection) -> None:
    """Every bundled migration not yet applied."""
    await db.apply_migrations(conn, db.bundled_migrations())


async def insert_trading_account(conn: asyncpg.Connection, venue: str, kind: str,
                                 external_id: str, created_at: dt.datetime) -> uuid.UUID:
    """An ACTIVE trading account row, written as any release wrote it."""
    account = uuid.uuid4()
    await conn.execute(
        """INSERT INTO trading_account (trading_account_id, venue, kind,
               external_trading_account_id, account_type, external_account_type, status,
               created_at, updated_at)
           VALUES ($1, $2, $3, $4, $5, $6, 'ACTIVE', $7, $7)""",
        account, venue, kind, external_id, kind if kind == "CLIENT" else "SPOT",
        kind if kind == "CLIENT" else external_id, created_at)
    return account


async def post(client: Client, path: str, body: Any,
               headers: dict[str, str] = ADMIN) -> tuple[int, dict[str, Any]]:
    resp = await client.post(path, json=body, headers=headers)
    return resp.status, await resp.json()


async def post_raw(client: Client, path: str, raw: bytes,
                   headers: dict[str, str] = ADMIN) -> tuple[int, dict[str, Any]]:
    resp = await client.post(path, data=raw,
                             headers={**headers, "Content-Type": "application/json"})
    return resp.status, await resp.json()


async def get(client: Client, path: str, params: Any = None,
              headers: dict[str, str] = ADMIN) -> tuple[int, dict[str, Any]]:
    resp = await client.get(path, params=params, headers=headers)
    return resp.status, await resp.json()


async def fetch_one(conn: asyncpg.Connection, query: str, *args: Any) -> asyncpg.Record:
    row = await conn.fetchrow(query, *args)
    assert row is not None, query
    return row


async def until_lock_waiters(conn: asyncpg.Connection, count: int) -> None:
    """Return once `count` sessions of this database wait on a lock (polls, never sleeps)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        await conn.execute("SELECT pg_stat_clear_snapshot()")  # fresh view inside a transaction
        waiting = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'")
        if waiting >= count:
            return
    raise AssertionError(f"never saw {count} session(s) waiting on a lock")


async def snapshot(conn: asyncpg.Connection) -> dict[str, list[str]]:
    """Every row of the written tables, to prove a refused request wrote nothing (taken once
    the relay has settled, so its background work is not mistaken for the request's)."""
    await outbox_drained(conn)
    return {
        table: [r[0] for r in await conn.fetch(
            f"SELECT to_jsonb(t)::text FROM {table} t ORDER BY 1")]
        for table in WRITTEN_TABLES
    }


@asynccontextmanager
async def nothing_written(conn: asyncpg.Connection) -> AsyncIterator[None]:
    """The block's requests leave every written table as it was (a `snapshot` before and
    after)."""
    before = await snapshot(conn)
    yield
    assert await snapshot(conn) == before


def assert_moment(millis: int, iso: str) -> None:
    """A time as the seeds carry it: unix ms and the same instant as ISO 8601 in UTC."""
    assert iso.endswith("Z")
    parsed = dt.datetime.fromisoformat(iso.replace("Z", "+00:00"))
    assert int(parsed.timestamp() * 1000) == millis


def assert_invalid(status: int, payload: dict[str, Any], field: str | None = None) -> None:
    """400 -100001, naming `field` among the refused fields when given."""
    assert status == 400, payload
    assert_error(payload, -100001)
    if field is not None:
        fields = [f["field"] for f in payload["details"]["fields"]]
        assert any(f == field or f.startswith(field + ".") for f in fields), fields


async def assert_body_rejections(client: Client, conn: asyncpg.Connection, path: str,
                                 cases: list[tuple[Any, str | None]]) -> None:
    """Each body is refused with 400 -100001 naming the field, and nothing is written."""
    async with nothing_written(conn):
        for body, field in cases:
            status, payload = await post(client, path, body)
            assert_invalid(status, payload, field)
        for raw in (b"[]", b'"text"', b"42", b"null"):
            status, payload = await post_raw(client, path, raw)
            assert_invalid(status, payload)
            assert "JSON object" in payload["error"]
        for raw in (b"{", b'{"venue": "BINANCE",}', b"not json", b"{'a': 1}"):
            status, payload = await post_raw(client, path, raw)
            assert status == 400, payload
            assert_error(payload, -100002)


async def insert_exchange_account(
    conn: asyncpg.Connection,
    venue: str = "BINANCE",
    status: str = "ACTIVE",
    external_id: str = "spot",
) -> uuid.UUID:
    """An exchange trading account as `tradingAccount/connect` would leave it (no credential)."""
    account_id = uuid.uuid4()
    now = dt.datetime.now(dt.UTC)
    await conn.execute(
        """INSERT INTO trading_account (trading_account_id, venue, kind,
               external_trading_account_id, account_type, external_account_type, nickname,
               status, created_at, updated_at)
           VALUES ($1, $2, 'EXCHANGE', $3, 'SPOT', 'SPOT', $4, $5, $6, $6)""",
        account_id, venue, external_id, f"{venue.lower()} {external_id}", status, now,
    )
    return account_id


async def eventually(check: Any, *, within_s: float = 1.0, every_s: float = 0.02) -> Any:
    """Poll `check()` (async, answers a truthy value when done) until it holds or time is up."""
    import asyncio

    deadline = time.monotonic() + within_s
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within_s}s (last: {result!r})")
        await asyncio.sleep(every_s)


async def connect_account(client: Client, credential_ids: list[str], external_id: str = "spot",
                          nickname: str | None = None) -> dict[str, Any]:
    """`tradingAccount/connect` with these credentials; answers the connected account."""
    body: dict[str, Any] = {"credentialIds": credential_ids,
                            "externalTradingAccountId": external_id}
    if nickname is not None:
        body["nickname"] = nickname
    status, payload = await post(client, "/api/v3/tradingAccount/connect", body)
    assert status == 200, payload
    account: dict[str, Any] = assert_ok(payload)
    return account


async def connect_exchange_account(client: Client, venue: str, external_id: str) -> str:
    """create → verify → connect through the API; answers the trading account id."""
    status, body = await post(client, "/api/v3/credential/create", {
        "venue": venue, "credentialType": "API_KEY", "apiKey": f"{venue}-key",
        "apiSecret": "s"})
    assert status == 200, body
    credential_id = body["data"]["credentialId"]
    status, body = await post(client, "/api/v3/credential/verify",
                              {"credentialIds": [credential_id]})
    assert status == 200, body
    account_id: str = (await connect_account(client, [credential_id], external_id))[
        "tradingAccountId"]
    return account_id


async def outbox_drained(conn: asyncpg.Connection, *, within_s: float = 3.0) -> None:
    """Wait until the relay has sent every ledger entry (it runs in the background)."""

    async def empty() -> bool:
        pending = await conn.fetchval("SELECT count(*) FROM ledger_outbox WHERE sent_at IS NULL")
        return pending == 0

    await eventually(empty, within_s=within_s)
