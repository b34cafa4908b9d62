from __future__ import annotations

from typing import Annotated, Any, Literal

import pytest
from aiohttp.test_utils import TestClient
from openapi_spec_validator import validate
from pydantic import StringConstraints

from dealer.api.framework import Api, openapi_document
from dealer.app import build_api
from dealer.errors import Errors, check_registry_unique
from dealer.wire import QueryModel, WireModel
from tests.desk import ORDER_FIELDS


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


def _component(document: dict[str, Any], ref: str) -> dict[str, Any]:
    schema: dict[str, Any] = document["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    return schema


async def test_models_of_one_name_in_two_modules_are_two_components(client: TestClient) -> None:
    """The portfolio's and the ledger's balances, the order's and the PnL's fees: each is
    documented with its own fields (one component used to stand for both of a pair)."""
    document = await (await client.get("/api/v3/openapi.json")).json()
    schemas = document["components"]["schemas"]
    pairs = (("PortfolioOut", "LedgerAccountOut", "balances"), ("TradeOrderOut", "PnlOut", "fees"))
    for one, other, field in pairs:
        refs = [schemas[name]["properties"][field]["items"]["$ref"] for name in (one, other)]
        assert refs[0] != refs[1], refs
    fields = {name: set(_component(document, schemas[name]["properties"][field]["items"]["$ref"])
                        ["properties"])
              for name, field in (("PortfolioOut", "balances"), ("LedgerAccountOut", "balances"),
                                  ("TradeOrderOut", "fees"), ("PnlOut", "fees"))}
    assert {"securitySymbol", "free", "locked"} <= fields["PortfolioOut"]
    assert fields["LedgerAccountOut"] == {"asset", "balance", "amount"}
    assert fields["TradeOrderOut"] == {"security", "asset", "venue", "quantity"}
    assert fields["PnlOut"] == {"asset", "amount", "booked"}


def test_a_query_union_keeps_its_values_without_the_null() -> None:
    class UnionQuery(QueryModel):
        since: Annotated[str, StringConstraints(pattern="^[a-z]+$")] | Literal[""] | None = None

    async def handler(request: object, principal: object, params: object) -> None:
        return None

    api = Api()
    api.get("/u", summary="u", tag="t", roles=None, query=UnionQuery, response=None)(handler)
    document = openapi_document(api, title="t", version="0", description="d")
    [parameter] = document["paths"]["/u"]["get"]["parameters"]
    assert [o.get("const") for o in parameter["schema"]["anyOf"]] == [None, ""]
    assert parameter["schema"]["anyOf"][0]["pattern"] == "^[a-z]+$"


def test_two_different_schemas_of_one_name_are_refused() -> None:
    def out_model(field: str) -> type[WireModel]:
        return type("SameName", (WireModel,), {"__annotations__": {field: str}})

    async def handler(request: object, principal: object, params: object) -> None:
        return None

    api = Api()
    api.get("/a", summary="a", tag="t", roles=None, response=out_model("alpha"))(handler)
    api.get("/b", summary="b", tag="t", roles=None, response=out_model("beta"))(handler)
    with pytest.raises(ValueError, match="two different schemas named SameName"):
        openapi_document(api, title="t", version="0", description="d")


def _response_components(document: dict[str, Any]) -> set[str]:
    """The component schemas a 200 response reaches (through every $ref)."""
    found: set[str] = set()
    pending: list[Any] = [op["responses"]["200"] for ops in document["paths"].values()
                          for op in ops.values()]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
                name = ref.rsplit("/", 1)[-1]
                if name not in found:
                    found.add(name)
                    pending.append(document["components"]["schemas"][name])
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    return found


def _enum(schema: dict[str, Any]) -> list[Any] | None:
    """The values a property may take (a nullable one's too), or None when not an enum."""
    for option in [schema, *schema.get("anyOf", [])]:
        if "enum" in option:
            return list(option["enum"])
        if "const" in option:
            return [option["const"]]
    return None


ENUM_FIELDS = ("status", "orderSide", "orderType", "timeInForce", "hedgeSide", "state")


async def test_response_statuses_sides_and_order_types_carry_their_enums(
        client: TestClient) -> None:
    document = await (await client.get("/api/v3/openapi.json")).json()
    schemas = document["components"]["schemas"]
    responses = _response_components(document)
    checked = 0
    for name in sorted(responses):
        for field, schema in schemas[name].get("properties", {}).items():
            if field in ENUM_FIELDS:
                assert _enum(schema), (name, field, schema)
                checked += 1
    assert checked >= 25
    order = schemas["TradeOrderOut"]["properties"]
    assert _enum(order["orderSide"]) == ["BUY", "SELL"]
    assert {"FILLED", "REJECTED"} <= set(_enum(order["status"]) or ())
    assert "QUOTED" in (_enum(order["orderType"]) or ())
    # a QUOTED order answers only the two its accept takes
    assert _enum(order["timeInForce"]) == ["FOK", "IOC"]
    assert _enum(schemas["ExecutionOut"]["properties"]["orderSide"]) == ["BUY", "SELL"]
    quote = schemas["QuoteOut"]["properties"]
    assert _enum(quote["status"]) == ["OPEN", "FILLED", "EXPIRED"]
    assert _enum(quote["orderSide"]) == ["BUY", "SELL"]
    # the request side names the same values
    body = schemas["SubmitOrderBody"]["properties"]
    assert _enum(body["orderType"]) == _enum(order["orderType"])
    # (the request takes seeds/001's whole list, refusing the others for a QUOTED order)
    assert set(_enum(order["timeInForce"]) or ()) < set(_enum(body["timeInForce"]) or ())


# Dumped without their absent fields: a health check's missing figures, an error's details.
PARTIAL = {"Health", "HealthCheck", "ErrorDetails"}


async def test_response_fields_always_present_are_required(client: TestClient) -> None:
    """Responses are dumped whole (nulls and defaults included): every field is listed as
    required, as a client may rely on it being there."""
    document = await (await client.get("/api/v3/openapi.json")).json()
    schemas = document["components"]["schemas"]
    order = schemas["TradeOrderOut"]
    assert set(order["required"]) == set(order["properties"]) == ORDER_FIELDS
    for field in ("positionId", "stopPrice", "quantityRounding", "expireAt",
                  "canceledAtDateTime"):
        assert field in order["required"], field
    for name in sorted(_response_components(document) - PARTIAL):
        schema = schemas[name]
        if "properties" in schema:
            assert set(schema.get("required", [])) == set(schema["properties"]), name
    # a request body's fields with a default stay optional
    assert set(schemas["SubmitOrderBody"]["required"]) == {
        "tradingAccountId", "instrumentId", "orderSide", "orderType", "quantity"}
    assert schemas["Health"]["required"] == ["status", "timestamp", "isoDateTime", "version",
                                             "checks"]
    assert schemas["HealthCheck"]["required"] == ["status"]


def _nulls(schema: Any) -> list[Any]:
    """Every place a schema admits or defaults to null."""
    found = []
    if isinstance(schema, dict):
        if schema.get("type") == "null" or "null" in (schema.get("type") or []):
            found.append(schema)
        if "default" in schema and schema["default"] is None:
            found.append(schema)
        for value in schema.values():
            found += _nulls(value)
    elif isinstance(schema, list):
        for value in schema:
            found += _nulls(value)
    return found


async def test_optional_query_parameters_are_absent_or_a_value_never_null(
        client: TestClient) -> None:
    document = await (await client.get("/api/v3/openapi.json")).json()
    optional = 0
    for path, ops in document["paths"].items():
        for method, op in ops.items():
            for parameter in op.get("parameters", []):
                assert parameter["in"] == "query"
                assert not _nulls(parameter["schema"]), (method, path, parameter)
                optional += not parameter["required"]
    assert optional > 50
    parameters = {p["name"]: p for p in
                  document["paths"]["/api/v3/trading/order/list"]["get"]["parameters"]}
    assert parameters["tradeOrderId"]["schema"]["type"] == "string"
    assert parameters["tradeOrderId"]["schema"]["format"] == "uuid"
    assert parameters["startTime"]["schema"]["type"] == "integer"
    assert parameters["startTime"]["schema"]["minimum"] == 0
    assert parameters["ascending"]["schema"] == {"default": False, "title": "Ascending",
                                                 "type": "boolean"}
    # one pattern, which takes the empty value (any instrument) too
    assert parameters["instrumentId"]["schema"]["pattern"] == (
        "^(FERMATA:[A-Z0-9]{1,20}/[A-Z0-9]{1,20})?$")
    ids = {p["name"]: p for p in
           document["paths"]["/api/v3/credential/list"]["get"]["parameters"]}["credentialIds"]
    assert ids["schema"]["type"] == "array"
    assert ids["schema"]["items"]["format"] == "uuid"
    assert (ids["style"], ids["explode"]) == ("form", True)
    assert "repeated (`?credentialIds=a&credentialIds=b`)" in ids["description"]
    assert "comma is refused" in ids["description"]
    # the response schemas still say which fields may be null
    assert _nulls(document["components"]["schemas"]["TradeOrderOut"]["properties"]["stopPrice"])


async def test_quote_reads_say_the_status_is_worked_out_when_read(client: TestClient) -> None:
    document = await (await client.get("/api/v3/openapi.json")).json()
    for operation in ("get", "list"):
        description = document["paths"][f"/api/v3/fermata/quote/{operation}"]["get"][
            "description"]
        assert "worked out when it is read" in description, description
        assert "past its expireAt reads EXPIRED" in description
        assert "expiry job" in description
    assert "filter" in document["paths"]["/api/v3/fermata/quote/list"]["get"]["description"]
    status = document["components"]["schemas"]["QuoteOut"]["properties"]["status"]
    assert "EXPIRED" in status["description"]
