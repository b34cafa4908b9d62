"""Credential secrets go in and never come out: not in responses, logs, metrics, nor in clear in
the database (DESIGN §2), whether the request succeeds or fails."""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
import pytest
from aiohttp import ClientResponse

from dealer.secretbox import SecretBox
from tests.conftest import ADMIN, SECRETS_KEY, VIEWER
from tests.helpers import Client

CREATE = "/api/v3/credential/create"
VERIFY = "/api/v3/credential/verify"
REVOKE = "/api/v3/credential/revoke"
ROTATE = "/api/v3/credential/rotate"
CONNECT = "/api/v3/tradingAccount/connect"

API_KEY = "AK-distinctive-api-key-QQQ"
API_SECRET = "S3CRET-api-secret-ZZZ"
PASSPHRASE = "PASS-distinctive-phrase-YYY"
ROTATED_KEY = "AK-rotated-api-key-RRR"
ROTATED_SECRET = "S3CRET-rotated-secret-WWW"
ROTATED_PASSPHRASE = "PASS-rotated-phrase-VVV"
SECRETS = (API_KEY, API_SECRET, PASSPHRASE, ROTATED_KEY, ROTATED_SECRET, ROTATED_PASSPHRASE)
ORIGINAL = {"apiKey": API_KEY, "apiSecret": API_SECRET, "apiPassphrase": PASSPHRASE}
ROTATED = {"apiKey": ROTATED_KEY, "apiSecret": ROTATED_SECRET, "apiPassphrase": ROTATED_PASSPHRASE}


class Transcript:
    """Every response the flow received: status, headers and body text."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.seen: list[str] = []

    async def _record(self, resp: ClientResponse) -> tuple[int, dict[str, Any] | str]:
        text = await resp.text()
        self.seen.append(f"{resp.status} {dict(resp.headers)!r} {text}")
        if resp.content_type == "application/json":
            return resp.status, await resp.json()
        return resp.status, text

    async def post(self, path: str, body: Any, headers: dict[str, str] = ADMIN) -> Any:
        return await self._record(await self.client.post(path, json=body, headers=headers))

    async def post_raw(self, path: str, raw: bytes) -> Any:
        return await self._record(await self.client.post(
            path, data=raw, headers={**ADMIN, "Content-Type": "application/json"}))

    async def get(self, path: str, params: Any = None, headers: dict[str, str] = ADMIN) -> Any:
        return await self._record(await self.client.get(path, params=params, headers=headers))

    async def ok(self, path: str, body: Any) -> Any:
        status, payload = await self.post(path, body)
        assert status == 200, payload
        return payload["data"]

    async def refused(self, path: str, body: Any, status: int, errno: int,
                      headers: dict[str, str] = ADMIN) -> None:
        answered, payload = await self.post(path, body, headers)
        assert (answered, payload["errno"]) == (status, errno), payload


def assert_no_secret(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} leaked into {where}"
        assert secret[4:-4] not in text, f"part of {secret!r} leaked into {where}"


def assert_logs_clean(caplog: pytest.LogCaptureFixture) -> None:
    assert_no_secret(caplog.text, "the log output")
    for record in caplog.records:
        assert_no_secret(record.getMessage(), f"log record {record.name}")
        assert_no_secret(repr(record.__dict__), f"log record {record.name} attributes")


async def test_secrets_never_leak_through_the_whole_credential_flow(
    client: Client, conn: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    flow = Transcript(client)

    created = await flow.ok(CREATE, {"venue": "OKX", "credentialType": "API_KEY",
                                     "nickname": "okx desk", **ORIGINAL})
    credential_id = created["credentialId"]
    await flow.ok(VERIFY, {"credentialIds": [credential_id]})
    account = await flow.ok(CONNECT, {"credentialIds": [credential_id],
                                      "externalTradingAccountId": "trading"})
    await flow.get("/api/v3/credential/list")
    await flow.get("/api/v3/credential/list", {"credentialIds": credential_id}, VIEWER)
    await flow.get("/api/v3/tradingAccount/list")
    await flow.ok(ROTATE, {"credentialId": credential_id, **ROTATED})
    await flow.ok(VERIFY, {"credentialIds": [credential_id]})
    await flow.get("/api/v3/credential/list")
    await flow.get("/api/v3/tradingAccount/operation/list",
                   {"tradingAccountId": account["tradingAccountId"]})

    # Refused requests carrying the secrets: validation, auth, and business errors.
    other_id = (await flow.ok(CREATE, {"venue": "BINANCE", "credentialType": "HMAC",
                                       "apiKey": "plain-key"}))["credentialId"]
    await flow.refused(CREATE, {"venue": "NOWHERE", "credentialType": "API_KEY", **ORIGINAL},
                       400, -100001)
    await flow.refused(CREATE, {"venue": API_SECRET, "credentialType": API_KEY,
                                "apiSecret": API_SECRET}, 400, -100001)
    await flow.refused(CREATE, {"venue": "OKX", "credentialType": 5, **ORIGINAL}, 400, -100001)
    await flow.refused(CREATE, {"venue": "OKX", "credentialType": "API_KEY", "nickname": 7,
                                **ORIGINAL}, 400, -100001)
    await flow.refused(CREATE, {"venue": "OKX", "credentialType": "API_KEY",
                                "nickname": "nul\u0000", **ORIGINAL}, 400, -100001)
    await flow.refused(CREATE, {"venue": "OKX", "credentialType": "API_KEY", **ORIGINAL,
                                "apiToken": API_SECRET}, 400, -100001)
    await flow.refused(CREATE, {"venue": "OKX", "credentialType": "API_KEY", "apiKey": API_KEY,
                                "apiSecret": API_SECRET + "x" * 5000}, 400, -100001)
    await flow.refused(CREATE, {"venue": "OKX", "credentialType": "API_KEY",
                                "apiKey": [API_KEY], "apiSecret": {"s": API_SECRET}},
                       400, -100001)
    await flow.refused(CREATE, {"venue": "OKX", "credentialType": "API_KEY",
                                "apiPassphrase": API_SECRET * 4000}, 413, -100003)
    await flow.refused(CREATE, {"venue": "OKX", "credentialType": "API_KEY", **ORIGINAL},
                       403, -101004, headers=VIEWER)
    await flow.refused(CREATE, {"venue": "OKX", "credentialType": "API_KEY", **ORIGINAL},
                       401, -101002, headers={"Authorization": f"Bearer {API_SECRET}"})
    await flow.refused(ROTATE, {"credentialId": "not-a-uuid", **ROTATED}, 400, -100001)
    await flow.refused(ROTATE, {"credentialId": credential_id, **ROTATED,
                                "apiSecrett": ROTATED_SECRET}, 400, -100001)
    await flow.refused(ROTATE, {"credentialId": other_id, "apiKey": "   ",
                                "apiSecret": ROTATED_SECRET}, 400, -110004)
    await flow.refused(ROTATE, {"credentialId": "5e0e4a4e-0000-4000-8000-000000000000",
                                **ROTATED}, 404, -110001)
    for raw in (f'{{"apiSecret": "{API_SECRET}"'.encode(),
                f'{{"apiKey": {API_KEY}}}'.encode(),
                f'["{API_SECRET}", "{PASSPHRASE}"]'.encode()):
        status, payload = await flow.post_raw(CREATE, raw)
        assert status == 400, payload

    revoked = await flow.ok(REVOKE, {"credentialId": credential_id})
    assert revoked["status"] == "REVOKED"
    await flow.refused(ROTATE, {"credentialId": credential_id, **ORIGINAL}, 400, -110002)
    await flow.get("/api/v3/credential/list", {"credentialStatus": "REVOKED"})
    await flow.get("/api/v3/tradingAccount/list")
    status, metrics = await flow.get("/metrics")
    assert status == 200
    assert "dealer_http_requests_total" in metrics

    for seen in flow.seen:
        assert_no_secret(seen, "a response")
    assert_no_secret(metrics, "/metrics")
    assert any(r.name == "aiohttp.access" for r in caplog.records)  # the capture saw the flow
    assert_logs_clean(caplog)

    sealed = await conn.fetchval(
        "SELECT secret_ciphertext FROM credential WHERE credential_id = $1::uuid", credential_id)
    for secret in SECRETS:
        assert secret.encode() not in sealed
    # The sealed value holds the rotated secrets, so the checks above looked at the right bytes.
    assert SecretBox(SECRETS_KEY).open(sealed) == ROTATED
    for table in ("credential", "trading_account", "trading_account_credential",
                  "trading_account_operation"):
        rows = await conn.fetch(f"SELECT to_jsonb(t)::text FROM {table} t")
        dump = "\n".join(r[0] for r in rows)
        assert_no_secret(dump, f"table {table}")
        for secret in SECRETS:
            assert secret.encode().hex() not in dump, f"{secret!r} in clear in {table}"
    assert await conn.fetchval("SELECT count(*) FROM credential") == 2
