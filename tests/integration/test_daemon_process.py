"""The daemon as a process: embedded defaults with the demo, two at once, the CLI."""

from __future__ import annotations

import asyncio
import errno
import socket
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson

from dealer import db
from dealer.auth import Role, verify_token
from dealer.settings import Settings, load_daemon_secrets
from tests.helpers import empty_database
from tests.integration.daemon import Daemon, daemon_env, run_cli, start_daemon


def test_embedded_demo_daemon_curls_work_as_printed(tmp_path: Path) -> None:
    """What `make run` does: embedded PostgreSQL, demo seeded, the printed curls work."""
    daemon = start_daemon(daemon_env(tmp_path, DEALER_DEMO="1"), timeout=120)
    try:
        banner = daemon.banner
        assert "embedded PostgreSQL" in banner
        assert "paper connector" in banner
        exports = [line for line in banner.splitlines() if line.startswith("export ")]
        assert [e.split("=")[0] for e in exports] == ["export ADMIN_TOKEN", "export CLIENT_TOKEN"]
        curls = [line.strip() for line in banner.splitlines()
                 if line.strip().startswith(("curl ", "QUOTE_ID="))]
        assert len(curls) == 12
        def run(curl: str) -> Any:
            script = "\n".join([*exports, curl])
            done = subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                                  timeout=30, check=True)
            return orjson.loads(done.stdout)

        outputs = [run(curl) for curl in curls]
        # The ledger books through the outbox, a moment after the fill: ask until it shows.
        deadline = time.monotonic() + 5
        while not outputs[-1]["data"] and time.monotonic() < deadline:
            outputs[-1] = run(curls[-1])
        (health, dealer, links, book, accounts, unlink, link, relink, clients, ops, fill,
         journal) = outputs
        assert health["status"] == "healthy", (health, daemon.log_tail())
        assert dealer["success"]
        assert dealer["data"]["status"] == "ACTIVE"
        assert len(links["data"]) == 3
        assert {link["venue"] for link in links["data"]} == {"BINANCE", "OKX", "BYBIT"}
        assert len(book["data"]["asks"]) == 5
        assert {lp["venue"] for lp in book["data"]["lps"] if lp["fresh"]} == {
            "BINANCE", "OKX", "BYBIT"}
        assert accounts["data"][0]["status"] == "ACTIVE"
        assert unlink == {"data": "ok", "success": True, "errno": 0, "error": None}
        assert link == {"data": "ok", "success": True, "errno": 0, "error": None}
        assert relink["errno"] == -130007
        assert relink["error"] == "Trading account is already linked to this dealer"
        assert len(clients["data"]) == 1
        assert {op["operationType"] for op in ops["data"]} >= {"CONNECT", "LINK", "UNLINK"}
        assert fill["data"][0]["status"] == "FILLED", fill
        assert fill["data"][0]["executedQuantity"] == "0.5"
        assert journal["data"][0]["metadata"]["kind"] == "client_fill", journal
    finally:
        assert daemon.stop() == 0, daemon.log_tail()

    # A restart keeps the data and prints the same desk (the demo is seeded once).
    again = start_daemon(daemon_env(tmp_path, DEALER_DEMO="1"), timeout=120)
    try:
        first_dealer = next(line for line in banner.splitlines() if "dealer  " in line)
        assert first_dealer in again.banner
    finally:
        assert again.stop() == 0, again.log_tail()


def test_two_daemons_on_one_database_both_come_up(pg_server: Any, tmp_path: Path) -> None:
    dsn = asyncio.run(empty_database(pg_server))
    env = daemon_env(tmp_path, DEALER_DATABASE_URL=dsn, DEALER_DEMO="1")
    load_daemon_secrets(Settings(data_dir=tmp_path))  # both read the same secrets
    daemons: list[Daemon] = []
    try:
        # Start both before waiting for either: migrations and demo seeding race for real.
        with ThreadPoolExecutor(2) as pool:
            daemons = list(pool.map(lambda _: start_daemon(env, timeout=90), range(2)))

        async def check() -> None:
            async with aiohttp.ClientSession() as session:
                for daemon in daemons:
                    async with session.get(f"{daemon.url}/api/v3/health") as resp:
                        assert resp.status == 200
            conn = await asyncpg.connect(dsn)
            try:
                versions = await conn.fetch("SELECT version FROM schema_migration")
                assert [r["version"] for r in versions] == [
                    m.version for m in db.bundled_migrations()]
                assert await conn.fetchval("SELECT count(*) FROM dealer") == 1
                assert await conn.fetchval("SELECT count(*) FROM dealer_link") == 3
            finally:
                await conn.close()

        asyncio.run(check())
    finally:
        for daemon in daemons:
            daemon.stop()


async def test_concurrent_migrations_apply_each_version_once(pg_server: Any) -> None:
    dsn = await empty_database(pg_server)
    applied = await asyncio.gather(*(db.migrate(dsn) for _ in range(5)))
    versions = [m.version for m in db.bundled_migrations()]
    assert sorted(v for run in applied for v in run) == versions
    assert await db.migrate(dsn) == []


def test_migrate_command_and_token_command(pg_server: Any, tmp_path: Path) -> None:
    dsn = asyncio.run(empty_database(pg_server))
    env = daemon_env(tmp_path, DEALER_DATABASE_URL=dsn)
    first = run_cli(env, "migrate")
    assert first.returncode == 0, first.stderr
    assert "applied migrations" in first.stdout
    assert "up to date" in run_cli(env, "migrate").stdout

    # No daemon has run in this data directory yet: there is no secret to sign with.
    missing = run_cli(env, "token", "--role", "admin")
    assert missing.returncode == 2
    assert missing.stdout == ""
    secrets = load_daemon_secrets(Settings(data_dir=tmp_path))
    account = uuid.uuid4()
    done = run_cli(env, "token", "--role", "trader", "--account", str(account), "--ttl", "120")
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    assert done.stdout == token + "\n"
    principal = verify_token(secrets.jwt_secret, token)
    assert principal.role is Role.TRADER
    assert principal.accounts == frozenset({account})
    assert run_cli(env, "token", "--role", "root").returncode == 2
    assert run_cli(env, "token", "--role", "admin", "--ttl", "0").returncode == 2
    assert run_cli(env, "token", "--role", "trader", "--account", "x").returncode == 2
    no_account = run_cli(env, "token", "--role", "trader")
    assert no_account.returncode == 2
    assert no_account.stderr == "dealerd token: a trader token needs --account (repeatable)\n"


def test_bad_settings_stop_the_daemon_with_a_clear_message(tmp_path: Path) -> None:
    env = daemon_env(tmp_path, DEALER_HTTP_PORT="eighty", DEALER_LEDGER_BACKEND="sqlite")
    done = run_cli(env, "run")
    assert done.returncode == 2
    assert "DEALER_HTTP_PORT" in done.stderr
    assert "DEALER_LEDGER_BACKEND" in done.stderr


def _one_line(done: subprocess.CompletedProcess[str]) -> str:
    """The daemon's refusal: one line on stderr (its log lines aside), no traceback."""
    lines = [line for line in done.stderr.splitlines() if not line.startswith("{")]
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    return lines[0]


def test_what_start_up_finds_wrong_stops_the_daemon_with_one_line(pg_server: Any,
                                                                   tmp_path: Path) -> None:
    """A database out of reach or refusing the URL, a migration history of a newer version,
    asset scales the ledger disagrees with: one line each from `run` (and `migrate`)."""
    dsn = asyncio.run(empty_database(pg_server))
    missing = pg_server.get_uri(database="no_such_database")
    for command in ("run", "migrate"):
        done = run_cli(daemon_env(tmp_path, DEALER_DATABASE_URL=missing), command)
        assert done.returncode == 1
        assert 'database: database "no_such_database" does not exist' in _one_line(done)

    assert run_cli(daemon_env(tmp_path, DEALER_DATABASE_URL=dsn), "migrate").returncode == 0

    async def pin_and_add_a_future_migration() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("INSERT INTO ledger_asset_scale (code, scale, pinned_at) "
                               "VALUES ('USDT', 6, now())")
            await conn.execute("INSERT INTO schema_migration (version, name, checksum) "
                               "VALUES (999, 'from_a_newer_version', 'x')")
        finally:
            await conn.close()

    clashing = daemon_env(tmp_path, DEALER_DATABASE_URL=dsn,
                          DEALER_ASSET_SCALES='{"USDT": 8}')
    asyncio.run(pin_and_add_a_future_migration())
    for command in ("run", "migrate"):
        done = run_cli(clashing, command)
        assert done.returncode == 1
        assert "migrations [999] this daemon does not know" in _one_line(done)

    async def forget_the_future_migration() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("DELETE FROM schema_migration WHERE version = 999")
        finally:
            await conn.close()

    asyncio.run(forget_the_future_migration())
    done = run_cli(clashing, "run")
    assert done.returncode == 2
    assert _one_line(done) == ("dealerd: asset scales conflict with the ledger: USDT: "
                               "configured scale 8 but the ledger already uses USDT/6")


def test_a_taken_listen_address_stops_the_daemon_before_it_touches_the_database(
        pg_server: Any, tmp_path: Path) -> None:
    """The port is taken first: a daemon that cannot serve migrates nothing, seeds no demo and
    starts no worker before it says so."""
    dsn = asyncio.run(empty_database(pg_server))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_cli(daemon_env(tmp_path, DEALER_DATABASE_URL=dsn, DEALER_DEMO="1",
                                  DEALER_HTTP_PORT=str(port)), "run")
    assert done.returncode == 1
    assert _one_line(done) == (f"dealerd: cannot start: [Errno {errno.EADDRINUSE}] cannot "
                               f"listen on 127.0.0.1 port {port}: Address already in use")

    async def tables() -> int:
        conn = await asyncpg.connect(dsn)
        try:
            count: int = await conn.fetchval(
                "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
            return count
        finally:
            await conn.close()

    assert asyncio.run(tables()) == 0
