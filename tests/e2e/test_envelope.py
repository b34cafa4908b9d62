"""Bad requests of every shape answer the error envelope, never a 500 or a bare body."""

from __future__ import annotations

import asyncio
import gzip
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from dealer.app import create_app
from dealer.appkeys import METRICS, TOKENS
from dealer.auth import TokenVerifier
from dealer.metrics import Metrics
from dealer.middlewares import routed
from dealer.settings import DaemonSecrets, Settings
from tests.conftest import ADMIN, assert_error
from tests.helpers import nothing_written

LINK = "/api/v3/fermata/dealer/link"
QUOTE = "/api/v3/fermata/quote/request"  # its bodies are read on the endpoint's own path


async def test_oversized_body_is_413(settings: Settings, secrets: DaemonSecrets,
                                     aiohttp_client: Callable[[web.Application],
                                                              Awaitable[TestClient]]) -> None:
    small = settings.model_copy(update={"http_max_body_bytes": 1024})
    client = await aiohttp_client(create_app(small, secrets))
    resp = await client.post(LINK, data=b"{" + b" " * 4096 + b"}", headers=ADMIN)
    assert resp.status == 413
    assert_error(await resp.json(), -100003)


async def _chunks(parts: list[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part
        await asyncio.sleep(0.02)  # each part reaches the server on its own


@pytest.mark.parametrize("path", [LINK, QUOTE])
async def test_body_sent_in_parts_is_read_whole(client: TestClient, path: str) -> None:
    """A body that does not arrive with its headers (chunked, here) is read to its end: the
    refusal names the fields of the whole JSON object, none of which is in its first part."""
    parts = [b'{"dealerAccountId"', b': "not-a-uuid", ', b'"tradingAccountId": 7}']
    resp = await client.post(path, data=_chunks(parts), headers={
        **ADMIN, "Content-Type": "application/json"})
    assert resp.status == 400
    body = await resp.json()
    assert_error(body, -100001)
    fields = {f["field"] for f in body["details"]["fields"]}
    assert {"dealerAccountId", "tradingAccountId"} <= fields


@pytest.mark.parametrize("path", [LINK, QUOTE])
async def test_oversized_body_in_parts_is_413(settings: Settings, secrets: DaemonSecrets,
                                              aiohttp_client: Callable[[web.Application],
                                                                       Awaitable[TestClient]],
                                              path: str) -> None:
    small = settings.model_copy(update={"http_max_body_bytes": 1024})
    client = await aiohttp_client(create_app(small, secrets))
    whole = await client.post(path, data=b"{" + b" " * 4096 + b"}", headers=ADMIN)
    assert whole.status == 413
    assert_error(await whole.json(), -100003)
    parts = [b"{"] + [b" " * 512] * 8 + [b"}"]
    resp = await client.post(path, data=_chunks(parts), headers=ADMIN)
    assert resp.status == 413
    assert_error(await resp.json(), -100003)


@pytest.mark.parametrize(
    ("raw", "errno"),
    [
        (b"{not json", -100002),
        (b"\xff\xfe", -100002),
        (b"[1, 2]", -100001),
        (b'"text"', -100001),
        (b"null", -100001),
        (b"", -100001),
        (b'{"dealerAccountId": 1, "tradingAccountId": null}', -100001),
    ],
)
async def test_malformed_bodies_are_400(client: TestClient, raw: bytes, errno: int) -> None:
    resp = await client.post(LINK, data=raw, headers={**ADMIN,
                                                     "Content-Type": "application/json"})
    assert resp.status == 400
    body = await resp.json()
    assert_error(body, errno)


@pytest.mark.parametrize("path", [LINK, QUOTE])
async def test_a_body_its_content_encoding_does_not_decode_is_400(
        client: TestClient, conn: asyncpg.Connection, path: str,
        caplog: pytest.LogCaptureFixture) -> None:
    """A body that is not what its Content-Encoding says is the client's mistake, answered as
    a body that is not JSON (the connection then closes: the rest of the body cannot be told
    from a next request); one that is decodes to what it carries."""
    async with nothing_written(conn):
        for encoding in ("gzip", "deflate"):
            resp = await client.post(path, data=b'{"dealerAccountId": "x"}', headers={
                **ADMIN, "Content-Type": "application/json", "Content-Encoding": encoding})
            assert resp.status == 400, encoding
            assert resp.headers["Connection"] == "close"
            body = await resp.json()
            assert_error(body, -100002)
            assert body["error"] == "Request body could not be decoded"
        resp = await client.post(path, data=gzip.compress(b'{"dealerAccountId": "x"}'),
                                 headers={**ADMIN, "Content-Type": "application/json",
                                          "Content-Encoding": "gzip"})
        assert resp.status == 400
        body = await resp.json()
        assert_error(body, -100001)
        assert {"dealerAccountId", "tradingAccountId"} <= {
            f["field"] for f in body["details"]["fields"]}
    # a client's mistake: no error logged (nor the server's own, reading the body on)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


async def test_validation_errors_name_fields_without_echoing_values(client: TestClient) -> None:
    resp = await client.post(LINK, json={"dealerAccountId": "secret-looking-value",
                                         "extra": "x"}, headers=ADMIN)
    assert resp.status == 400
    body = await resp.json()
    assert_error(body, -100001)
    fields = {f["field"] for f in body["details"]["fields"]}
    assert fields == {"dealerAccountId", "tradingAccountId", "extra"}
    assert "secret-looking-value" not in await resp.text()


async def test_bad_query_parameters_are_400(client: TestClient) -> None:
    for query in ("limit=0", "limit=1001", "offset=-1", "limit=ten", "unknown=1"):
        resp = await client.get(f"/api/v3/tradingAccount/list?{query}", headers=ADMIN)
        assert resp.status == 400, query
        assert_error(await resp.json(), -100001)


async def test_fields_go_by_their_wire_names_only(client: TestClient) -> None:
    """The models' Python names (snake_case) are unknown fields on the wire."""
    for path, query, field in (("/api/v3/trading/order/list", "start_time=1", "start_time"),
                               ("/api/v3/fermata/quote/list", "trading_account_id="
                                "9a4bd2d4-6b41-4a3e-9d3f-0f4b1c2d3e4f", "trading_account_id")):
        resp = await client.get(f"{path}?{query}", headers=ADMIN)
        assert resp.status == 400, query
        body = await resp.json()
        assert_error(body, -100001)
        assert field in {f["field"] for f in body["details"]["fields"]}
    resp = await client.post("/api/v3/fermata/dealer/create",
                             json={"symbols": ["BTC/USDT"], "spread_bps": "5"}, headers=ADMIN)
    assert resp.status == 400
    body = await resp.json()
    assert_error(body, -100001)
    assert "spread_bps" in {f["field"] for f in body["details"]["fields"]}


async def test_health_is_503_when_the_database_is_gone(client: TestClient, dsn: str,
                                                       pg_server: object,
                                                       recwarn: pytest.WarningsRecorder) -> None:
    name = dsn.split("?")[0].rsplit("/", 1)[-1]
    admin = await asyncpg.connect(pg_server.get_uri(database="postgres"))  # type: ignore[attr-defined]
    try:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()
    resp = await client.get("/api/v3/health")
    assert resp.status == 503
    body = await resp.json()
    assert body["status"] == "unhealthy"
    assert body["checks"]["database"]["status"] == "unhealthy"
    # A request that needs the database answers a retryable 503 envelope.
    resp = await client.get("/api/v3/tradingAccount/list", headers=ADMIN)
    assert resp.status == 503
    assert_error(await resp.json(), -2)
    # The relay and the hedge worker LISTEN on connections of their own: losing them gives no
    # pool connection back with a listener on it (asyncpg warns then). An absence needs a
    # window: the listeners see the loss within milliseconds of the DROP.
    await asyncio.sleep(0.3)
    assert not [w for w in recwarn if issubclass(w.category, asyncpg.InterfaceWarning)]


LIST_ENDPOINTS = [
    "/api/v3/credential/list", "/api/v3/tradingAccount/list",
    "/api/v3/tradingAccount/operation/list", "/api/v3/fermata/dealer/list",
    "/api/v3/fermata/client/list",
]


@pytest.mark.parametrize("path", LIST_ENDPOINTS)
async def test_offsets_beyond_bigint_are_400_not_500(client: TestClient, path: str) -> None:
    resp = await client.get(f"{path}?offset={2**63}", headers=ADMIN)
    assert resp.status == 400
    assert_error(await resp.json(), -100001)
    resp = await client.get(f"{path}?offset={2**63 - 1}", headers=ADMIN)
    assert resp.status == 200
    assert (await resp.json())["data"] == []


@pytest.mark.parametrize(
    ("path", "body"),
    [("/api/v3/fermata/client/create", {"nickname": "a\u0000b"}),
     ("/api/v3/fermata/dealer/create", {"nickname": "a\u0000b", "symbols": ["BTC/USDT"]})],
)
async def test_nul_in_text_is_400(client: TestClient, conn: asyncpg.Connection, path: str,
                                  body: dict[str, object]) -> None:
    resp = await client.post(path, json=body, headers=ADMIN)
    assert resp.status == 400
    assert_error(await resp.json(), -100001)
    assert await conn.fetchval("SELECT count(*) FROM trading_account") == 0


@pytest.mark.parametrize("exc", [
    asyncpg.exceptions.TooManyConnectionsError("sorry, too many clients already"),
    asyncpg.exceptions.ReadOnlySQLTransactionError(
        "cannot execute INSERT in a read-only transaction"),
    asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"),
])
async def test_a_database_out_of_reach_is_a_retryable_503(
        aiohttp_client: Callable[[web.Application], Awaitable[TestClient]],
        exc: Exception) -> None:
    """Used-up connection slots and a primary demoted by a failover are outages too."""
    async def failing(request: web.Request) -> web.Response:
        raise exc

    app = web.Application()
    app[METRICS] = Metrics()
    app[TOKENS] = TokenVerifier("a secret of thirty-two bytes or more!")
    app.router.add_get("/fails", routed(app, failing, "/fails"))
    client = await aiohttp_client(app)
    resp = await client.get("/fails")
    assert resp.status == 503
    assert_error(await resp.json(), -2)
