from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from dealer.app import create_app
from dealer.secretbox import SecretKeyMismatch
from dealer.settings import DaemonSecrets, Settings, SettingsError
from tests.conftest import JWT_SECRET
from venues.registry import ConnectorUnavailable

Factory = Callable[[web.Application], Awaitable[TestClient]]


async def test_a_different_secrets_key_is_refused_at_start(
    settings: Settings, secrets: DaemonSecrets, aiohttp_client: Factory
) -> None:
    await aiohttp_client(create_app(settings, secrets))  # pins the key in the database
    other = DaemonSecrets(JWT_SECRET, base64.urlsafe_b64encode(b"o" * 32).decode())
    with pytest.raises(SecretKeyMismatch, match="DEALER_SECRETS_KEY"):
        await aiohttp_client(create_app(settings, other))


def test_unavailable_backends_and_connectors_are_refused(settings: Settings,
                                                         secrets: DaemonSecrets,
                                                         tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="DEALER_FORMANCE_URL"):
        create_app(settings.model_copy(update={"ledger_backend": "formance"}), secrets)
    with pytest.raises(ConnectorUnavailable, match="cadenza"):
        create_app(settings.model_copy(update={"venue_connectors": {"OKX": "cadenza"}}), secrets)
    with pytest.raises(ConnectorUnavailable, match="unknown venue"):
        create_app(settings.model_copy(update={"venue_connectors": {"NOPE": "paper"}}), secrets)
    missing = tmp_path / "no-books"
    with pytest.raises(ConnectorUnavailable,
                       match=f"paper connector: paper books folder {missing} does not exist"):
        create_app(settings.model_copy(update={"paper_books_dir": missing}), secrets)
    books = tmp_path / "books"
    books.mkdir()
    (books / "binance_btc_usdt.jsonl").write_text("not a snapshot\n")
    with pytest.raises(ConnectorUnavailable, match=r"paper connector: .*binance_btc_usdt\.jsonl"):
        create_app(settings.model_copy(update={"paper_books_dir": books}), secrets)


async def test_a_scale_conflicting_with_the_ledger_is_refused_at_start(
    settings: Settings, secrets: DaemonSecrets, aiohttp_client: Factory, dsn: str
) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("INSERT INTO ledger_asset_scale (code, scale, pinned_at) "
                           "VALUES ('USDT', 6, now())")
    finally:
        await conn.close()
    clashing = settings.model_copy(update={"asset_scales": {"USDT": 8}})
    with pytest.raises(SettingsError, match="USDT: configured scale 8 but the ledger already "
                                            "uses USDT/6"):
        await aiohttp_client(create_app(clashing, secrets))
    await aiohttp_client(create_app(settings.model_copy(update={"asset_scales": {"SOL": 9}}),
                                    secrets))
