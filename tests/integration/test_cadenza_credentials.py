"""Credentials and accounts of a venue served by the cadenza connector while Cadenza fails: the
desk is told the venue is unavailable (502 -140003, to retry), not an internal error, and nothing
is written."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest
from aiohttp import web

from dealer.app import create_app
from dealer.settings import DaemonSecrets, Settings
from tests.conftest import assert_error, assert_ok
from tests.fakes.cadenza import FakeCadenza, RunningFake, running
from tests.helpers import Client, nothing_written, post

CREATE = "/api/v3/credential/create"
VERIFY = "/api/v3/credential/verify"
ROTATE = "/api/v3/credential/rotate"
CONNECT = "/api/v3/tradingAccount/connect"


@pytest.fixture
async def cadenza() -> AsyncIterator[RunningFake]:
    async with running(FakeCadenza()) as server:
        yield server


@pytest.fixture
async def cadenza_client(
    settings: Settings, secrets: DaemonSecrets, cadenza: RunningFake,
    aiohttp_client: Callable[[web.Application], Awaitable[Client]],
) -> Client:
    configured = settings.model_copy(update={
        "venue_connectors": {"BINANCE": "cadenza"}, "cadenza_url": cadenza.url,
        "cadenza_ws_url": cadenza.ws_url, "cadenza_token": cadenza.fake.token,
    })
    return await aiohttp_client(create_app(configured, secrets))


async def _credential(client: Client) -> str:
    status, body = await post(client, CREATE, {"venue": "BINANCE", "credentialType": "API_KEY",
                                               "apiKey": "key", "apiSecret": "secret"})
    assert status == 200, body
    credential_id: str = assert_ok(body)["credentialId"]
    return credential_id


async def _unavailable(client: Client, path: str, body: dict[str, object]) -> None:
    status, payload = await post(client, path, body)
    assert status == 502, payload
    assert_error(payload, -140003)
    assert "BINANCE" in payload["error"]


async def test_verify_rotate_and_connect_while_cadenza_fails_are_502_and_write_nothing(
    cadenza_client: Client, cadenza: RunningFake, conn: asyncpg.Connection,
) -> None:
    created = await _credential(cadenza_client)
    async with nothing_written(conn):
        cadenza.fake.fail_next(status=503)
        await _unavailable(cadenza_client, VERIFY, {"credentialIds": [created]})
        cadenza.fake.fail_next(status=503)
        await _unavailable(cadenza_client, ROTATE, {"credentialId": created, "apiKey": "new"})
    # Once Cadenza answers again, the same calls go through.
    status, body = await post(cadenza_client, VERIFY, {"credentialIds": [created]})
    assert status == 200, body
    async with nothing_written(conn):
        cadenza.fake.fail_next(status=503)
        await _unavailable(cadenza_client, CONNECT, {"credentialIds": [created],
                                                     "externalTradingAccountId": "spot"})
    status, body = await post(cadenza_client, ROTATE, {"credentialId": created, "apiKey": "new"})
    assert status == 200, body
    assert assert_ok(body)["status"] == "VERIFIED"
