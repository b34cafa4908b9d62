from __future__ import annotations

from aiohttp.test_utils import TestClient

from tests.conftest import ADMIN, assert_error, assert_ok


async def test_root_names_the_api(client: TestClient) -> None:
    resp = await client.get("/")
    assert resp.status == 200
    data = assert_ok(await resp.json())
    assert data["name"] == "Fermata Dealer API"
    assert data["openapi"] == "/api/v3/openapi.json"
    assert resp.headers["X-Request-Id"]


async def test_health_is_green_with_every_check(client: TestClient) -> None:
    resp = await client.get("/api/v3/health")
    assert resp.status == 200
    body = await resp.json()
    assert body["status"] == "healthy"
    assert set(body["checks"]) == {"database", "ledger", "venues", "dealers"}
    assert all(check["status"] == "healthy" for check in body["checks"].values())
    assert body["checks"]["venues"]["connectors"]["BINANCE"] == "paper"
    assert body["checks"]["ledger"]["backend"] == "local"
    assert body["checks"]["dealers"]["killSwitches"] == []


async def test_unknown_route_and_method_answer_the_envelope(client: TestClient) -> None:
    resp = await client.get("/api/v3/nope")
    assert resp.status == 404
    assert_error(await resp.json(), -100004)
    resp = await client.delete("/api/v3/health")
    assert resp.status == 405
    assert_error(await resp.json(), -100005)


async def test_unmatched_requests_are_counted_under_one_label(client: TestClient) -> None:
    """Whatever the path, an unmatched request is one series (never the raw path), and the
    root (a GET route) and a known path with another method are answered like any other
    unmatched one."""
    for method, path, status in (("GET", "/api/v3/nope/1", 404), ("POST", "/", 405),
                                 ("PUT", "/metrics", 405), ("GET", "/api/v3/nope/2", 404)):
        resp = await client.request(method, path)
        assert resp.status == status
        assert (await resp.json())["errno"] == (-100004 if status == 404 else -100005)
    text = await (await client.get("/metrics")).text()
    assert 'dealer_http_requests_total{method="GET",route="unmatched",status="404"} 2.0' in text
    assert 'dealer_http_requests_total{method="PUT",route="unmatched",status="405"} 1.0' in text
    assert "nope" not in text


async def test_request_id_is_echoed_when_well_formed(client: TestClient) -> None:
    resp = await client.get("/api/v3/nope", headers={"X-Request-Id": "abc-123"})
    assert resp.headers["X-Request-Id"] == "abc-123"
    assert (await resp.json())["details"]["request_id"] == "abc-123"
    resp = await client.get("/", headers={"X-Request-Id": "bad id with spaces"})
    assert resp.headers["X-Request-Id"] != "bad id with spaces"


async def test_metrics_exposes_http_requests_by_route_template(client: TestClient) -> None:
    await client.get("/api/v3/health")
    resp = await client.get("/metrics")
    assert resp.status == 200
    text = await resp.text()
    assert 'dealer_http_requests_total{method="GET",route="/api/v3/health",status="200"}' in text
    assert "dealer_build_info" in text


async def test_docs_page_lists_endpoints(client: TestClient) -> None:
    resp = await client.get("/api/v3/docs", headers=ADMIN)
    assert resp.status == 200
    assert "/api/v3/health" in await resp.text()
