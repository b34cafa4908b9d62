from __future__ import annotations

from aiohttp.test_utils import TestClient
from openapi_spec_validator import validate

from dealer.app import build_api
from dealer.errors import Errors, check_registry_unique


async def test_openapi_document_is_valid_and_lists_every_route(client: TestClient) -> None:
    resp = await client.get("/api/v3/openapi.json")
    assert resp.status == 200
    document = await resp.json()
    validate(document)
    documented = {(method.upper(), path) for path, ops in document["paths"].items()
                  for method in ops}
    registered = {(ep.method, ep.path) for ep in build_api().endpoints}
    assert documented == registered


async def test_every_operation_lists_its_error_codes(client: TestClient) -> None:
    document = await (await client.get("/api/v3/openapi.json")).json()
    for path, ops in document["paths"].items():
        for method, op in ops.items():
            assert "200" in op["responses"], (method, path)
            errnos = {e["errno"] for status, r in op["responses"].items() if status != "200"
                      for e in r["x-errnos"]}
            assert Errors.INTERNAL.errno in errnos, (method, path)
            if op["security"]:
                assert Errors.UNAUTHENTICATED.errno in errnos, (method, path)
            if "requestBody" in op:
                assert Errors.INVALID_REQUEST.errno in errnos, (method, path)
    link = document["paths"]["/api/v3/fermata/dealer/link"]["post"]
    link_errnos = {e["errno"] for r in link["responses"].values() for e in r.get("x-errnos", [])}
    assert {-130007, -130001, -120001, -101004, -101001} <= link_errnos
    assert set(link["responses"]) >= {"200", "400", "401", "403", "404"}


async def test_request_schemas_come_from_the_models(client: TestClient) -> None:
    document = await (await client.get("/api/v3/openapi.json")).json()
    body = document["paths"]["/api/v3/tradingAccount/connect"]["post"]["requestBody"]
    ref = body["content"]["application/json"]["schema"]["$ref"]
    schema = document["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    assert set(schema["required"]) == {"credentialIds", "externalTradingAccountId"}
    assert schema["additionalProperties"] is False


def test_errnos_are_unique() -> None:
    check_registry_unique()
