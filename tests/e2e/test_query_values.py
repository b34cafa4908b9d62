"""Query values have one spelling each: integers in plain digits, booleans `true`/`false`, UUIDs
in their hyphenated 8-4-4-4-12 form. Every query parameter of every endpoint is held to it."""

from __future__ import annotations

import json
import uuid
from typing import Any, get_args, get_origin

import asyncpg
import pytest

from dealer.api.framework import LIST_FORM
from dealer.api.framework import list_parameters as list_names
from dealer.app import build_api
from dealer.wire import QueryModel, Uuid
from tests.conftest import ADMIN, assert_ok
from tests.helpers import Client, assert_invalid, get, post, request_fields, snapshot

ID = "9a4bd2d4-6b41-4a3e-9d3f-0f4b1c2d3e4f"
# What pydantic's lax parsing took, by the type of the field.
LAX_SPELLINGS: dict[type, list[str]] = {
    int: ["1_0", "+5", " 5", "5 ", "05", "00", "-1", "1.0", "1e3", "0x10", "\u0665", "\uff15",
          ""],
    bool: ["yes", "no", "on", "off", "1", "0", "True", "FALSE", "t", "y", " true", ""],
    uuid.UUID: [ID.replace("-", ""), f"urn:uuid:{ID}", f"{{{ID}}}", f" {ID}", f"{ID} ",
                ID[:-1], ID.replace("-", "_"), ""],
}
# And what each takes: the canonical form, hex digits of either case for a UUID.
GOOD_SPELLINGS: dict[type, list[str]] = {
    int: ["7"], bool: ["true", "false"], uuid.UUID: [ID, ID.upper()],
}


def query_fields() -> list[tuple[str, str, type]]:
    """(path, wire name, type) of every int, bool and UUID query parameter of the API."""
    fields = []
    for field in request_fields("query"):
        assert issubclass(field.model, QueryModel)
        if field.name in field.model._text_types:
            fields.append((field.path, field.wire_name, field.model._text_types[field.name]))
    return fields


def lax_spellings(path: str, field: str, text_type: type) -> list[str]:
    # A list parameter drops empty entries (an empty one is no filter): "" is no value there.
    annotation = next(f.annotation for f in request_fields("query")
                      if (f.path, f.wire_name) == (path, field))
    listed = any(get_origin(a) is list for a in (annotation, *get_args(annotation)))
    return [raw for raw in LAX_SPELLINGS[text_type] if raw or not listed]


def test_the_strict_fields_are_found_from_the_types() -> None:
    found = {(path, field): text_type for path, field, text_type in query_fields()}
    assert found[("/api/v3/trading/order/list", "limit")] is int
    assert found[("/api/v3/trading/order/list", "startTime")] is int
    assert found[("/api/v3/trading/order/list", "ascending")] is bool
    assert found[("/api/v3/trading/order/list", "tradeOrderId")] is uuid.UUID
    assert found[("/api/v3/credential/list", "credentialIds")] is uuid.UUID  # a list
    assert found[("/api/v3/fermata/hedge/list", "ascending")] is bool
    assert found[("/api/v3/market/orderBook/get", "depth")] is int
    assert ("/api/v3/trading/order/list", "instrumentId") not in found  # text
    assert ("/api/v3/ledger/account", "address") not in found


def test_a_query_field_cannot_mix_a_strict_type_with_text() -> None:
    with pytest.raises(TypeError, match="since"):
        class MixedQuery(QueryModel):  # the grammar of int would refuse the str values
            since: int | str | None = None


def test_a_query_uuid_must_be_declared_with_its_one_spelling() -> None:
    for annotation in (uuid.UUID, uuid.UUID | None, list[uuid.UUID] | None):
        with pytest.raises(TypeError, match="dealer_account_id: declare a UUID as"):
            type("LaxQuery", (QueryModel,), {"__annotations__": {
                "dealer_account_id": annotation}, "dealer_account_id": None})

    class StrictQuery(QueryModel):
        dealer_account_id: Uuid | None = None
        credential_ids: list[Uuid] | None = None

    assert StrictQuery._text_types == {"dealer_account_id": uuid.UUID,
                                       "credential_ids": uuid.UUID}


async def test_every_lax_spelling_is_refused_naming_the_field(
        client: Client, conn: asyncpg.Connection) -> None:
    before = await snapshot(conn)
    checked = 0
    for path, field, text_type in query_fields():
        for raw in lax_spellings(path, field, text_type):
            resp = await client.get(path, params={field: raw}, headers=ADMIN)
            payload = await resp.json()
            assert_invalid(resp.status, payload, field)
            # a list's element is named by its index: credentialIds.0
            refusal = next(f for f in payload["details"]["fields"]
                           if f["field"] == field or f["field"].startswith(field + "."))
            assert refusal["type"] == {int: "int_parsing", bool: "bool_parsing",
                                       uuid.UUID: "uuid_parsing"}[text_type], refusal
            if len(raw.strip()) > 2 and raw.strip() not in ("true", "false"):  # not echoed
                shown = json.dumps([payload["error"], payload["details"]["fields"]])
                assert raw.strip() not in shown, (path, field, raw)
            checked += 1
    assert checked > 300
    assert await snapshot(conn) == before


async def test_the_canonical_spellings_pass_validation(client: Client) -> None:
    for path, field, text_type in query_fields():
        for raw in GOOD_SPELLINGS[text_type]:
            resp = await client.get(path, params={field: raw}, headers=ADMIN)
            payload = await resp.json()
            if resp.status == 400 and payload["errno"] == -100001:
                # refused for another field (a required one not sent), never for this one
                assert field not in {f["field"] for f in payload["details"]["fields"]}, (
                    path, field, raw, payload)


async def test_a_list_of_ids_holds_every_id_to_the_form(client: Client) -> None:
    path = "/api/v3/credential/list"
    status, body = await get(client, path, [("credentialIds", ID), ("credentialIds", ID.upper())])
    assert status == 200, body
    for other in (ID.replace("-", ""), f"urn:uuid:{ID}"):
        status, body = await get(client, path, [("credentialIds", ID), ("credentialIds", other)])
        assert_invalid(status, body, "credentialIds")


def list_parameters() -> list[tuple[str, str, str]]:
    """(path, wire name, a value) of every list-valued query parameter of the API."""
    values = {"credentialIds": ID, "symbols": "BTC/USDT", "instrumentIds": "BINANCE:BTC/USDT"}
    found = [(endpoint.path, name, values[name]) for endpoint in build_api().endpoints
             if endpoint.query is not None for name in sorted(list_names(endpoint.query))]
    assert {name for _, name, _ in found} == set(values)
    return found


async def test_a_list_parameter_takes_repeated_keys_and_refuses_commas(
        client: Client, conn: asyncpg.Connection) -> None:
    """seeds/001 and the reference document list parameters as repeated keys
    (`?credentialIds=a&credentialIds=b`): a comma-separated value, another spelling of the
    same request, is refused naming the parameter, without echoing it."""
    before = await snapshot(conn)
    for path, name, value in list_parameters():
        for query in ([(name, f"{value},{value}")], [(name, value), (name, f"{value},")],
                      [(name, ",")]):
            status, body = await get(client, path, query)
            assert_invalid(status, body, name)
            assert body["details"]["fields"] == [
                {"field": name, "message": LIST_FORM, "type": "comma_separated"}], body
            assert value not in json.dumps(body), (path, query)
        status, body = await get(client, path, [(name, value), (name, value)])
        if status == 400 and body["errno"] == -100001:  # refused for another parameter only
            assert name not in {f["field"] for f in body["details"]["fields"]}, (path, body)
    assert await snapshot(conn) == before


async def test_values_in_their_form_read_as_before(client: Client) -> None:
    created = []
    for n in range(3):
        status, body = await post(client, "/api/v3/fermata/dealer/create",
                                  {"symbols": ["BTC/USDT"], "nickname": f"d{n}"})
        assert status == 200, body
        created.append(assert_ok(body)["dealerAccountId"])
    # an id in capitals is the same id
    status, body = await get(client, "/api/v3/fermata/dealer/get",
                             {"dealerAccountId": created[1].upper()})
    assert assert_ok(body)["dealerAccountId"] == created[1]
    status, body = await get(client, "/api/v3/fermata/dealer/list", {"limit": "2",
                                                                     "offset": "0"})
    assert len(assert_ok(body)) == 2
    assert body["pagination"] == {"offset": 0, "limit": 2, "total": 3, "hasNext": True}
    # `1_0` is no longer ten: refused, where it used to answer a page of ten
    status, body = await get(client, "/api/v3/fermata/dealer/list", {"limit": "1_0"})
    assert_invalid(status, body, "limit")
    for ascending in ("true", "false"):
        status, body = await get(client, "/api/v3/trading/order/list",
                                 {"ascending": ascending})
        assert status == 200, body


async def test_a_raw_plus_is_a_space_and_refused(client: Client) -> None:
    """In a raw query string `+` decodes as a space: `limit=+5` reads ` 5`, refused too."""
    for query in ("limit=+5", "limit=%2B5", "limit=%205", "limit=1_0", "ascending=yes",
                  f"tradeOrderId=urn:uuid:{ID}", f"tradeOrderId={ID.replace('-', '')}"):
        resp = await client.get(f"/api/v3/trading/order/list?{query}", headers=ADMIN)
        payload: dict[str, Any] = await resp.json()
        assert_invalid(resp.status, payload, query.partition("=")[0])


async def test_the_reference_states_the_rule(client: Client) -> None:
    document = await (await client.get("/api/v3/openapi.json")).json()
    description = document["info"]["description"]
    assert "digits 0-9" in description
    assert "`true` or `false`" in description
    assert "8-4-4-4-12" in description
    page = await (await client.get("/api/v3/docs")).text()
    assert "8-4-4-4-12" in page
