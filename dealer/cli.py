"""`dealerd`: run the daemon, apply migrations, or mint a token."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import socket
import sys
import uuid
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

import dealer
from dealer import db, logs
from dealer.app import create_app
from dealer.appkeys import DSN, SECRETS, SETTINGS, VENUES
from dealer.auth import MAX_TTL_SECONDS, Role, mint_token
from dealer.demo import DEMO, banner
from dealer.secretbox import SecretKeyMismatch
from dealer.settings import Settings, SettingsError, load_daemon_secrets, load_settings
from venues.registry import ConnectorUnavailable

log = logging.getLogger("dealerd")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dealerd", description="Fermata Dealer daemon")
    parser.add_argument("--config", type=Path, help="TOML settings file (DEALER_CONFIG_FILE)")
    parser.add_argument("--version", action="version", version=f"dealerd {dealer.__version__}")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("run", help="start the daemon (the default)")
    commands.add_parser("migrate", help="apply database migrations and exit")
    token = commands.add_parser("token", help="print a bearer token signed with the daemon's "
                                "secret (alone on stdout)")
    token.add_argument("--role", required=True, choices=[r.value for r in Role])
    token.add_argument("--account", action="append", default=[], metavar="ID",
                       help="trading account a trader may act for (repeatable)")
    token.add_argument("--ttl", type=int, default=3600, metavar="S",
                       help=f"lifetime in seconds (1..{MAX_TTL_SECONDS}, default 3600)")
    token.add_argument("--subject", help="the token's subject (default: generated)")
    args = parser.parse_args(argv)

    try:
        settings = load_settings(config_file=args.config)
    except SettingsError as exc:
        print(f"dealerd: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.log_format)

    if args.command == "token":
        return _token(settings, args.role, args.account, args.ttl, args.subject)
    if args.command == "migrate":
        return asyncio.run(_migrate(settings))
    return _run(settings)


def _token(settings: Settings, role: str, accounts: list[str], ttl: int,
           subject: str | None) -> int:
    try:
        account_ids = [uuid.UUID(a) for a in accounts]
    except ValueError:
        print("dealerd token: --account takes trading account UUIDs", file=sys.stderr)
        return 2
    if role == Role.TRADER.value and not account_ids:
        # a trader acts only for the accounts its token lists: without one it could do nothing
        print("dealerd token: a trader token needs --account (repeatable)", file=sys.stderr)
        return 2
    if not 0 < ttl <= MAX_TTL_SECONDS:
        print(f"dealerd token: --ttl must be between 1 and {MAX_TTL_SECONDS}", file=sys.stderr)
        return 2
    try:
        secrets = load_daemon_secrets(settings, create=False)
    except SettingsError as exc:
        print(f"dealerd token: {exc}", file=sys.stderr)
        return 2
    print(mint_token(secrets.jwt_secret, Role(role), accounts=account_ids, ttl_seconds=ttl,
                     subject=subject))
    return 0


async def _migrate(settings: Settings) -> int:
    try:
        with db.reaching_database():
            dsn, server = await db.resolve_database(settings.database_url, settings.data_dir)
            applied = await db.migrate(dsn)
    except (db.DatabaseUnavailable, db.MigrationError) as exc:
        print(f"dealerd migrate: {exc}", file=sys.stderr)
        return 1
    del server  # stops the embedded server if this process started it
    print(f"applied migrations: {applied}" if applied else "database is up to date")
    return 0


def _run(settings: Settings) -> int:
    try:
        secrets = load_daemon_secrets(settings)
        app = create_app(settings, secrets)
    except (SettingsError, ConnectorUnavailable) as exc:
        print(f"dealerd: {exc}", file=sys.stderr)
        return 2
    # What start-up finds wrong is one line, as for the settings read before it: a secrets key
    # or asset scales the database disagrees with, a migration history from another version,
    # a database out of reach, the listen address taken.
    try:
        _event_loop_runner(settings)(_serve(app))
    except (SecretKeyMismatch, SettingsError) as exc:
        print(f"dealerd: {exc}", file=sys.stderr)
        return 2
    except (db.DatabaseUnavailable, db.MigrationError, OSError) as exc:
        print(f"dealerd: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


def _event_loop_runner(settings: Settings) -> Callable[[Coroutine[Any, Any, None]], None]:
    """`asyncio.run`, on uvloop's event loop unless the settings ask for the standard one."""
    if settings.event_loop == "uvloop" and sys.platform != "win32":
        import uvloop

        return uvloop.run
    return asyncio.run


YOUNG_GENERATION_THRESHOLD = 50_000


def freeze_startup_heap() -> None:
    """Tune the garbage collector for a server's event loop. What start-up built (modules,
    schemas, caches: most of the heap, alive for the life of the daemon) is exempted from full
    collections, which otherwise walk all of it and stall the loop for tens of milliseconds;
    and the young generation is collected every 50 000 allocations instead of 700, so a
    request's objects are gone before a collection can promote them to the older ones."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, middle, old)


async def _serve(app: web.Application) -> None:
    settings = app[SETTINGS]
    # Signal handlers first: a stop asked for during start-up (or right after the banner) is
    # honoured once the daemon is up, with the same graceful shutdown.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    if sys.platform != "win32":  # asyncio has no signal handlers there; Ctrl-C still stops
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    # The listen address is taken first: a daemon that cannot serve says so before it migrates,
    # seeds the demo or starts its workers (which would act, then stop, on a taken port).
    sockets = listening_sockets(settings.http_host, settings.http_port)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    try:
        await runner.setup()
        for sock in sockets:
            await web.SockSite(runner, sock).start()
        freeze_startup_heap()
        port = runner.addresses[0][1] if runner.addresses else settings.http_port
        base_url = settings.public_url or f"http://{settings.http_host}:{port}"
        print(banner(base_url, app[SETTINGS], app[VENUES].connectors(), app[SECRETS],
                     app.get(DEMO), embedded=not settings.database_url,
                     database=app[DSN]), flush=True)
        await stop.wait()
        log.info("shutting down")
    finally:
        await runner.cleanup()
        for sock in sockets:  # those no site took (start-up failed), and no harm to the others
            sock.close()


def listening_sockets(host: str, port: int) -> list[socket.socket]:
    """Bound, listening sockets for every address `host` names (as aiohttp's TCPSite would
    open; port 0: one free port, the same for each). An address taken is an OSError naming it."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        seen: set[tuple[int, Any]] = set()
        for family, kind, proto, _, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            if sys.platform != "win32":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(sockets) > 1:
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            try:
                sock.bind(address)
            except OSError as exc:
                raise OSError(exc.errno, f"cannot listen on {host} port {port}: "
                              f"{exc.strerror}") from None
            sock.listen(128)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


if __name__ == "__main__":
    raise SystemExit(main())
