"""Every endpoint: no token → 401, a role it does not allow → 403; roles as documented."""

from __future__ import annotations

import time

import jwt
import pytest
from aiohttp.test_utils import TestClient

from dealer.api.framework import Endpoint
from dealer.app import build_api
from dealer.auth import ISSUER, Role
from tests.conftest import JWT_SECRET, assert_error, auth

A, V, T = "admin", "viewer", "trader"
EXPECTED_ROLES: dict[tuple[str, str], set[str] | None] = {
    ("GET", "/"): None,
    ("GET", "/api/v3/health"): None,
    ("GET", "/metrics"): None,
    ("GET", "/api/v3/openapi.json"): None,
    ("GET", "/api/v3/docs"): None,
    ("POST", "/api/v3/credential/create"): {A},
    ("POST", "/api/v3/credential/verify"): {A},
    ("POST", "/api/v3/credential/revoke"): {A},
    ("POST", "/api/v3/credential/rotate"): {A},
    ("GET", "/api/v3/credential/list"): {A, V},
    ("POST", "/api/v3/tradingAccount/connect"): {A},
    ("POST", "/api/v3/tradingAccount/disconnect"): {A},
    ("POST", "/api/v3/tradingAccount/update"): {A},
    ("POST", "/api/v3/tradingAccount/enable"): {A},
    ("POST", "/api/v3/tradingAccount/disable"): {A},
    ("GET", "/api/v3/tradingAccount/list"): {A, V, T},
    ("GET", "/api/v3/tradingAccount/operation/list"): {A, V, T},
    ("POST", "/api/v3/fermata/dealer/create"): {A},
    ("POST", "/api/v3/fermata/dealer/update"): {A},
    ("POST", "/api/v3/fermata/dealer/pause"): {A},
    ("POST", "/api/v3/fermata/dealer/resume"): {A},
    ("GET", "/api/v3/fermata/dealer/get"): {A, V, T},
    ("GET", "/api/v3/fermata/dealer/list"): {A, V, T},
    ("POST", "/api/v3/fermata/dealer/link"): {A},
    ("POST", "/api/v3/fermata/dealer/unlink"): {A},
    ("GET", "/api/v3/fermata/dealer/listLinks"): {A, V},
    ("POST", "/api/v3/fermata/client/create"): {A},
    ("GET", "/api/v3/fermata/client/list"): {A, V, T},
    ("GET", "/api/v3/fermata/dealer/orderBook"): {A, V, T},
    ("POST", "/api/v3/market/instrument/sync"): {A},
    ("GET", "/api/v3/market/instrument/list"): {A, V, T},
    ("POST", "/api/v3/market/instrument/enable"): {A},
    ("POST", "/api/v3/market/instrument/disable"): {A},
    ("GET", "/api/v3/market/orderBook/get"): {A, V, T},
    ("GET", "/api/v3/market/orderBook/list"): {A, V, T},
    ("GET", "/api/v3/market/venue/list"): {A, V, T},
    ("GET", "/api/v3/portfolio/list"): {A, V},
    ("GET", "/api/v3/fermata/dealer/netFlow"): {A, V},
    ("GET", "/api/v3/ledger/account"): {A, V},
    ("GET", "/api/v3/ledger/reconciliation"): {A, V},
    ("GET", "/api/v3/ledger/transaction/list"): {A, V},
    ("POST", "/api/v3/fermata/quote/request"): {A, T},
    ("GET", "/api/v3/fermata/quote/get"): {A, V, T},
    ("GET", "/api/v3/fermata/quote/list"): {A, V, T},
    ("POST", "/api/v3/trading/order/submit"): {A, T},
    ("GET", "/api/v3/trading/order/list"): {A, V, T},
    ("GET", "/api/v3/fermata/hedge/list"): {A, V},
    ("POST", "/api/v3/fermata/hedge/retry"): {A},
    ("POST", "/api/v3/fermata/hedge/cancel"): {A},
    ("GET", "/api/v3/fermata/dealer/exposure"): {A, V},
    ("GET", "/api/v3/fermata/dealer/pnl"): {A, V},
}
ENDPOINTS = build_api().endpoints
PROTECTED = [ep for ep in ENDPOINTS if ep.roles is not None]


def _id(ep: Endpoint) -> str:
    return f"{ep.method} {ep.path}"


def test_every_endpoint_has_the_documented_roles() -> None:
    actual = {(ep.method, ep.path): (None if ep.roles is None else {r.value for r in ep.roles})
              for ep in ENDPOINTS}
    assert actual == EXPECTED_ROLES


async def _call(client: TestClient, ep: Endpoint, headers: dict[str, str]) -> tuple[int, dict]:
    if ep.method == "GET":
        resp = await client.get(ep.path, headers=headers)
    else:
        resp = await client.post(ep.path, json={}, headers=headers)
    return resp.status, await resp.json()


@pytest.mark.parametrize("ep", PROTECTED, ids=_id)
async def test_no_token_is_401(client: TestClient, ep: Endpoint) -> None:
    status, body = await _call(client, ep, {})
    assert status == 401
    assert_error(body, -101001)


@pytest.mark.parametrize("ep", PROTECTED, ids=_id)
async def test_bad_tokens_are_401(client: TestClient, ep: Endpoint) -> None:
    now = int(time.time())
    expired = jwt.encode({"iss": ISSUER, "sub": "x", "role": "admin", "iat": now - 100,
                          "exp": now - 50}, JWT_SECRET, algorithm="HS256")
    for header, errno in ((f"Bearer {expired}", -101003), ("Bearer nonsense", -101002),
                          ("Basic dXNlcjpwYXNz", -101002)):
        status, body = await _call(client, ep, {"Authorization": header})
        assert status == 401, header
        assert_error(body, errno)


@pytest.mark.parametrize(
    ("ep", "role"),
    [(ep, role) for ep in PROTECTED for role in Role if ep.roles and role not in ep.roles],
    ids=lambda v: _id(v) if isinstance(v, Endpoint) else v.value,
)
async def test_role_not_allowed_is_403(client: TestClient, ep: Endpoint, role: Role) -> None:
    status, body = await _call(client, ep, auth(role))
    assert status == 403
    assert_error(body, -101004)
    assert body["details"]["provided"] == [role.value]
    assert set(body["details"]["required"]) == {r.value for r in ep.roles or ()}
