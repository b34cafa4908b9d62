"""Request bodies carry UUIDs as the seeds write them, in the hyphenated 8-4-4-4-12 form (hex
digits of either case), as query parameters do: every id field of every body is held to it."""

from __future__ import annotations

import uuid
from typing import Any, get_args, get_origin

import asyncpg

from tests.conftest import ADMIN, assert_ok
from tests.helpers import Client, assert_invalid, post, request_fields, snapshot

ID = "9a4bd2d4-6b41-4a3e-9d3f-0f4b1c2d3e4f"
LAX = [ID.replace("-", ""), f"urn:uuid:{ID}", f"{{{ID}}}", f" {ID}", f"{ID}\n", ID[:-1], ""]


def _is_uuid(annotation: Any) -> tuple[bool, bool]:
    """(holds a UUID, as a list) through Annotated, `| None` and list."""
    if annotation is uuid.UUID:
        return True, False
    if get_origin(annotation) is list:
        return _is_uuid(get_args(annotation)[0])[0], True
    found = [_is_uuid(a) for a in get_args(annotation)]
    return any(f[0] for f in found), any(f[1] for f in found)


def body_id_fields() -> list[tuple[str, str, bool]]:
    """(path, wire name, a list of ids) of every UUID field of every request body."""
    fields = []
    for field in request_fields("body"):
        held, listed = _is_uuid(field.annotation)
        if held:
            fields.append((field.path, field.wire_name, listed))
    return fields


def test_the_id_fields_are_found() -> None:
    found = {(path, field): listed for path, field, listed in body_id_fields()}
    assert found[("/api/v3/fermata/dealer/link", "dealerAccountId")] is False
    assert found[("/api/v3/trading/order/submit", "quoteId")] is False
    assert found[("/api/v3/tradingAccount/connect", "credentialIds")] is True
    assert len(found) >= 15


async def test_every_body_id_in_another_form_is_refused_naming_it(
        client: Client, conn: asyncpg.Connection) -> None:
    before = await snapshot(conn)
    for path, field, listed in body_id_fields():
        for raw in LAX:
            status, payload = await post(client, path, {field: [raw] if listed else raw})
            assert_invalid(status, payload, field)
            named = field + ".0" if listed else field
            (refusal,) = [f for f in payload["details"]["fields"] if f["field"] == named]
            assert refusal["type"] == "uuid_parsing", (path, field, raw, refusal)
            assert "must be a UUID" in refusal["message"]
            if raw.strip():  # not echoed
                assert raw.strip() not in payload["error"], (path, field, raw)
    assert await snapshot(conn) == before


async def test_a_body_id_in_capitals_is_the_same_id(client: Client) -> None:
    for path, field, listed in body_id_fields():
        status, payload = await post(client, path, {field: [ID.upper()] if listed else ID.upper()})
        if status == 400 and payload["errno"] == -100001:
            # refused for the fields not sent, never for this one
            named = {f["field"] for f in payload["details"]["fields"]}
            assert not {field, field + ".0"} & named, (path, payload)
    status, body = await post(client, "/api/v3/fermata/dealer/create", {"symbols": ["BTC/USDT"]})
    dealer = assert_ok(body)["dealerAccountId"]
    status, body = await post(client, "/api/v3/fermata/dealer/pause",
                              {"dealerAccountId": dealer.upper(), "reason": "by capitals"})
    assert assert_ok(body)["dealerAccountId"] == dealer
    assert assert_ok(body)["status"] == "PAUSED"
    status, body = await post(client, "/api/v3/fermata/dealer/resume",
                              {"dealerAccountId": dealer.replace("-", "")})
    assert_invalid(status, body, "dealerAccountId")


async def test_the_seed_example_bodies_pass(client: Client) -> None:
    """seeds/002's example ids are in the canonical form: refused only as unknown (404)."""
    status, body = await post(client, "/api/v3/fermata/dealer/link",
                              {"dealerAccountId": "550e8400-e29b-41d4-a716-446655440000",
                               "tradingAccountId": "660e8400-e29b-41d4-a716-446655440001"},
                              ADMIN)
    assert status == 404, body
    assert body["errno"] == -130001
