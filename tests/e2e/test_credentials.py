"""Credential endpoints end to end: create, verify, revoke, rotate, list (seeds/000, seeds/001)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import orjson

from dealer.auth import Role, mint_token
from dealer.secretbox import SecretBox
from tests.conftest import ADMIN, SECRETS_KEY, TRADER, VIEWER, assert_error, assert_ok, auth
from tests.helpers import (
    Client,
    assert_body_rejections,
    assert_invalid,
    assert_moment,
    connect_account,
    fetch_one,
    get,
    post,
    post_raw,
    snapshot,
    until_lock_waiters,
)

CREATE = "/api/v3/credential/create"
VERIFY = "/api/v3/credential/verify"
REVOKE = "/api/v3/credential/revoke"
ROTATE = "/api/v3/credential/rotate"
LIST = "/api/v3/credential/list"
CONNECT = "/api/v3/tradingAccount/connect"
DISCONNECT = "/api/v3/tradingAccount/disconnect"
ACCOUNTS = "/api/v3/tradingAccount/list"
OPERATIONS = "/api/v3/tradingAccount/operation/list"

CREDENTIAL_KEYS = {
    "credentialId", "venue", "credentialType", "nickname", "status", "identities",
    "createdAt", "createdAtDateTime", "updatedAt", "updatedAtDateTime",
    "verifiedAt", "verifiedAtDateTime", "revokedAt", "revokedAtDateTime",
}
VERIFIED_ACCOUNT_KEYS = {
    "tradingAccountId", "externalTradingAccountId", "venue", "nickname", "accountType",
    "externalAccountType", "description", "credentials", "status", "takerFee",
    "createdAt", "createdAtDateTime", "updatedAt", "updatedAtDateTime",
}
BINANCE_IDS = ["spot", "margin", "isolated_margin", "futures", "coin_futures"]


# ---------------------------------------------------------------- helpers


async def create_credential(client: Client, venue: str = "BINANCE", *,
                            credential_type: str = "API_KEY", api_key: str | None = "key-1",
                            **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"venue": venue, "credentialType": credential_type, **extra}
    if api_key is not None:
        body["apiKey"] = api_key
    status, payload = await post(client, CREATE, body)
    assert status == 200, payload
    data: dict[str, Any] = assert_ok(payload)
    return data


async def verify(client: Client, *credential_ids: str) -> list[dict[str, Any]]:
    status, payload = await post(client, VERIFY, {"credentialIds": list(credential_ids)})
    assert status == 200, payload
    data: list[dict[str, Any]] = assert_ok(payload)
    return data


async def verified_credential(client: Client, venue: str = "BINANCE",
                              **extra: Any) -> dict[str, Any]:
    credential = await create_credential(client, venue, **extra)
    await verify(client, credential["credentialId"])
    return credential


async def listed(client: Client, params: Any = None,
                 headers: dict[str, str] = ADMIN) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    status, payload = await get(client, LIST, params, headers)
    assert status == 200, payload
    return assert_ok(payload), payload["pagination"]


async def operations_of(client: Client, account_id: str) -> list[dict[str, Any]]:
    status, payload = await get(client, OPERATIONS, {"tradingAccountId": account_id})
    assert status == 200, payload
    data: list[dict[str, Any]] = assert_ok(payload)
    return data


async def stored_secret(conn: asyncpg.Connection, credential_id: str) -> dict[str, Any]:
    sealed = await conn.fetchval(
        "SELECT secret_ciphertext FROM credential WHERE credential_id = $1",
        uuid.UUID(credential_id))
    return SecretBox(SECRETS_KEY).open(sealed)


# ---------------------------------------------------------------- create


async def test_create_answers_the_credential_without_its_secrets(
    client: Client, conn: asyncpg.Connection
) -> None:
    status, payload = await post(client, CREATE, {
        "venue": "OKX", "credentialType": "HMAC", "nickname": "  okx main  ",
        "apiKey": "okx-key", "apiSecret": "okx-secret", "apiPassphrase": "okx-pass",
    })
    assert status == 200
    data = assert_ok(payload)
    assert set(data) == CREDENTIAL_KEYS
    uuid.UUID(data["credentialId"])
    assert data["venue"] == "OKX"
    assert data["credentialType"] == "HMAC"
    assert data["nickname"] == "okx main"
    assert data["status"] == "CREATED"
    assert data["identities"] == []
    assert data["createdAt"] == data["updatedAt"]
    assert_moment(data["createdAt"], data["createdAtDateTime"])
    assert_moment(data["updatedAt"], data["updatedAtDateTime"])
    assert data["verifiedAt"] is None
    assert data["verifiedAtDateTime"] is None
    assert data["revokedAt"] is None
    assert data["revokedAtDateTime"] is None
    assert "okx-secret" not in str(payload)
    assert "okx-key" not in str(payload)

    row = await fetch_one(conn, "SELECT * FROM credential WHERE credential_id = $1",
                              uuid.UUID(data["credentialId"]))
    assert row["status"] == "CREATED"
    assert row["venue"] == "OKX"
    assert row["nickname"] == "okx main"
    assert await stored_secret(conn, data["credentialId"]) == {
        "apiKey": "okx-key", "apiSecret": "okx-secret", "apiPassphrase": "okx-pass"}


async def test_create_with_only_the_required_fields(
    client: Client, conn: asyncpg.Connection
) -> None:
    data = await create_credential(client, "DERIBIT", credential_type="ED25519", api_key=None)
    assert data["nickname"] is None
    assert data["venue"] == "DERIBIT"
    assert data["credentialType"] == "ED25519"
    assert await stored_secret(conn, data["credentialId"]) == {
        "apiKey": "", "apiSecret": None, "apiPassphrase": None}
    for venue in ("BYBIT", "PAPER", "MOCK", "BINANCE_UAT"):
        assert (await create_credential(client, venue))["venue"] == venue
    assert await conn.fetchval("SELECT count(*) FROM credential") == 5


async def test_create_refuses_invalid_bodies(client: Client, conn: asyncpg.Connection) -> None:
    valid = {"venue": "BINANCE", "credentialType": "API_KEY", "apiKey": "k"}
    await assert_body_rejections(client, conn, CREATE, [
        ({}, "venue"),
        ({"credentialType": "API_KEY"}, "venue"),
        ({"venue": "BINANCE"}, "credentialType"),
        ({**valid, "venue": "NOWHERE"}, "venue"),
        ({**valid, "venue": "binance"}, "venue"),
        ({**valid, "venue": "FERMATA"}, "venue"),
        ({**valid, "venue": 7}, "venue"),
        ({**valid, "credentialType": "PASSWORD"}, "credentialType"),
        ({**valid, "credentialType": None}, "credentialType"),
        ({**valid, "nickname": 12}, "nickname"),
        ({**valid, "nickname": "   "}, "nickname"),
        ({**valid, "nickname": "n" * 101}, "nickname"),
        ({**valid, "nickname": "nul\u0000byte"}, "nickname"),
        ({**valid, "apiKey": 123}, "apiKey"),
        ({**valid, "apiKey": ""}, "apiKey"),
        ({**valid, "apiKey": ["k"]}, "apiKey"),
        ({**valid, "apiSecret": True}, "apiSecret"),
        ({**valid, "apiSecret": "s" * 4097}, "apiSecret"),
        ({**valid, "apiPassphrase": {"p": 1}}, "apiPassphrase"),
        ({**valid, "secret": "s"}, "secret"),
        ({**valid, "credentialId": str(uuid.uuid4())}, "credentialId"),
    ])
    assert await conn.fetchval("SELECT count(*) FROM credential") == 0


# ---------------------------------------------------------------- verify


async def test_verify_lists_every_identity_of_the_venue(
    client: Client, conn: asyncpg.Connection
) -> None:
    credential = await create_credential(client, "BINANCE", nickname="main")
    accounts = await verify(client, credential["credentialId"])
    assert [a["externalTradingAccountId"] for a in accounts] == BINANCE_IDS
    for account in accounts:
        assert set(account) == VERIFIED_ACCOUNT_KEYS
        assert account["tradingAccountId"] is None
        assert account["status"] == "SETUP"
        assert account["venue"] == "BINANCE"
        assert account["nickname"] is None
        assert account["description"]
        assert_moment(account["createdAt"], account["createdAtDateTime"])
        [owner] = account["credentials"]
        assert owner["credentialId"] == credential["credentialId"]
        assert owner["status"] == "VERIFIED"
        assert owner["identities"] == BINANCE_IDS
        assert owner["verifiedAt"] is not None
        assert_moment(owner["verifiedAt"], owner["verifiedAtDateTime"])
    by_id = {a["externalTradingAccountId"]: a for a in accounts}
    assert (by_id["spot"]["accountType"], by_id["spot"]["externalAccountType"]) == ("SPOT", "SPOT")
    assert (by_id["futures"]["accountType"], by_id["futures"]["externalAccountType"]) == (
        "FUTURES", "USDT_FUTURES")
    assert by_id["isolated_margin"]["externalAccountType"] == "ISOLATED_MARGIN"

    row = await fetch_one(conn, "SELECT status, identities, verified_at FROM credential")
    assert row["status"] == "VERIFIED"
    assert row["verified_at"] is not None
    assert [i["externalTradingAccountId"] for i in orjson.loads(row["identities"])] == BINANCE_IDS
    [listed_credential], _ = await listed(client)
    assert listed_credential["status"] == "VERIFIED"
    assert listed_credential["identities"] == BINANCE_IDS


async def test_verify_several_credentials_of_several_venues_at_once(client: Client) -> None:
    okx = await create_credential(client, "OKX")
    bybit = await create_credential(client, "BYBIT")
    deribit = await create_credential(client, "DERIBIT")
    accounts = await verify(client, okx["credentialId"], bybit["credentialId"],
                            deribit["credentialId"], okx["credentialId"])
    assert [(a["venue"], a["externalTradingAccountId"]) for a in accounts] == [
        ("OKX", "trading"), ("OKX", "funding"),
        ("BYBIT", "unified"), ("BYBIT", "spot"), ("BYBIT", "contract"),
        ("DERIBIT", "spot"),
    ]
    assert {a["credentials"][0]["credentialId"] for a in accounts if a["venue"] == "BYBIT"} == {
        bybit["credentialId"]}
    rows, _ = await listed(client)
    assert {r["status"] for r in rows} == {"VERIFIED"}


async def test_verify_shows_the_accounts_already_connected(client: Client) -> None:
    credential = await verified_credential(client, "BINANCE")
    spot = await connect_account(client, [credential["credentialId"]], "spot", nickname="desk spot")
    accounts = await verify(client, credential["credentialId"])
    by_id = {a["externalTradingAccountId"]: a for a in accounts}
    assert by_id["spot"]["tradingAccountId"] == spot["tradingAccountId"]
    assert by_id["spot"]["status"] == "ACTIVE"
    assert by_id["spot"]["nickname"] == "desk spot"
    assert by_id["spot"]["createdAt"] == spot["createdAt"]
    others = [a for a in accounts if a["externalTradingAccountId"] != "spot"]
    assert all(a["tradingAccountId"] is None and a["status"] == "SETUP" for a in others)

    status, payload = await post(client, DISCONNECT, {"tradingAccountId": spot["tradingAccountId"]})
    assert status == 200, payload
    by_id = {a["externalTradingAccountId"]: a for a in await verify(client,
                                                                     credential["credentialId"])}
    assert by_id["spot"]["tradingAccountId"] is None
    assert by_id["spot"]["status"] == "SETUP"


async def test_verify_refuses_an_empty_api_key_and_marks_the_credential_failed(
    client: Client, conn: asyncpg.Connection
) -> None:
    no_key = await create_credential(client, "BINANCE", api_key=None, apiSecret="s")
    blank_key = await create_credential(client, "OKX", api_key="   ")
    for credential in (no_key, blank_key):
        status, payload = await post(client, VERIFY,
                                     {"credentialIds": [credential["credentialId"]]})
        assert status == 400
        assert_error(payload, -110004)
        assert credential["credentialId"] in payload["error"]
    rows = await conn.fetch("SELECT status, identities, verified_at FROM credential")
    assert [(r["status"], r["identities"], r["verified_at"]) for r in rows] == [
        ("FAILED", "[]", None), ("FAILED", "[]", None)]
    failed, pagination = await listed(client, {"credentialStatus": "FAILED"})
    assert {c["credentialId"] for c in failed} == {no_key["credentialId"],
                                                   blank_key["credentialId"]}
    assert pagination["total"] == 2
    status, payload = await post(client, CONNECT, {"credentialIds": [no_key["credentialId"]],
                                                   "externalTradingAccountId": "spot"})
    assert status == 400
    assert_error(payload, -110003)


async def test_verify_records_a_failure_even_next_to_a_good_credential(
    client: Client, conn: asyncpg.Connection
) -> None:
    good = await create_credential(client, "BINANCE")
    bad = await create_credential(client, "BINANCE", api_key=None)
    status, payload = await post(client, VERIFY, {"credentialIds": [good["credentialId"],
                                                                    bad["credentialId"]]})
    assert status == 400
    assert_error(payload, -110004)
    statuses = {r["credential_id"]: r["status"] for r in await conn.fetch(
        "SELECT credential_id::text, status FROM credential")}
    assert statuses == {good["credentialId"]: "VERIFIED", bad["credentialId"]: "FAILED"}


async def test_verify_refuses_revoked_and_unknown_credentials_without_writing(
    client: Client, conn: asyncpg.Connection
) -> None:
    fresh = await create_credential(client, "BINANCE")
    revoked = await create_credential(client, "BINANCE")
    status, payload = await post(client, REVOKE, {"credentialId": revoked["credentialId"]})
    assert status == 200, payload
    before = await snapshot(conn)

    status, payload = await post(client, VERIFY, {"credentialIds": [fresh["credentialId"],
                                                                    revoked["credentialId"]]})
    assert status == 400
    assert_error(payload, -110002)
    assert payload["details"]["metadata"] == {"credentialId": revoked["credentialId"]}

    unknown = str(uuid.uuid4())
    status, payload = await post(client, VERIFY, {"credentialIds": [fresh["credentialId"],
                                                                    unknown]})
    assert status == 404
    assert_error(payload, -110001)
    assert payload["details"]["metadata"] == {"credentialId": unknown}
    assert await snapshot(conn) == before


async def test_verify_refuses_invalid_bodies(client: Client, conn: asyncpg.Connection) -> None:
    credential = await create_credential(client)
    cid = credential["credentialId"]
    await assert_body_rejections(client, conn, VERIFY, [
        ({}, "credentialIds"),
        ({"credentialIds": []}, "credentialIds"),
        ({"credentialIds": cid}, "credentialIds"),
        ({"credentialIds": None}, "credentialIds"),
        ({"credentialIds": ["not-a-uuid"]}, "credentialIds.0"),
        ({"credentialIds": [cid, 42]}, "credentialIds.1"),
        ({"credentialIds": [str(uuid.uuid4()) for _ in range(21)]}, "credentialIds"),
        ({"credentialId": cid}, "credentialId"),
        ({"credentialIds": [cid], "force": True}, "force"),
    ])


async def test_verify_racing_a_revoke_never_revives_the_credential(
    client: Client, conn: asyncpg.Connection
) -> None:
    credential = await create_credential(client)
    cid = credential["credentialId"]
    # Hold the credential's row lock, queue a revoke behind it, then a verify: the revoke
    # commits first, and the verify must see it rather than overwrite it with VERIFIED.
    async with conn.transaction():
        await conn.execute("SELECT 1 FROM credential WHERE credential_id = $1 FOR UPDATE",
                           uuid.UUID(cid))
        revoking = asyncio.ensure_future(post(client, REVOKE, {"credentialId": cid}))
        await until_lock_waiters(conn, 1)
        verifying = asyncio.ensure_future(post(client, VERIFY, {"credentialIds": [cid]}))
        await until_lock_waiters(conn, 2)
    status, payload = await revoking
    assert status == 200, payload
    status, payload = await verifying
    assert status == 400, payload
    assert_error(payload, -110002)
    row = await fetch_one(conn, "SELECT status, revoked_at, verified_at FROM credential")
    assert row["status"] == "REVOKED"
    assert row["revoked_at"] is not None
    assert row["verified_at"] is None


# ---------------------------------------------------------------- revoke


async def test_revoke_is_idempotent_and_keeps_the_first_revocation_time(
    client: Client, conn: asyncpg.Connection
) -> None:
    credential = await verified_credential(client, "BINANCE", nickname="old")
    status, payload = await post(client, REVOKE, {"credentialId": credential["credentialId"]})
    assert status == 200
    revoked = assert_ok(payload)
    assert set(revoked) == CREDENTIAL_KEYS
    assert revoked["status"] == "REVOKED"
    assert revoked["nickname"] == "old"
    assert revoked["revokedAt"] is not None
    assert revoked["revokedAt"] == revoked["updatedAt"]
    assert_moment(revoked["revokedAt"], revoked["revokedAtDateTime"])
    assert revoked["verifiedAt"] is not None
    before = await snapshot(conn)

    status, payload = await post(client, REVOKE, {"credentialId": credential["credentialId"]})
    assert status == 200
    assert assert_ok(payload) == revoked
    assert await snapshot(conn) == before
    row = await fetch_one(conn, "SELECT status, revoked_at FROM credential")
    assert row["status"] == "REVOKED"
    assert row["revoked_at"] is not None


async def test_revoke_deactivates_accounts_left_without_a_usable_credential(
    client: Client, conn: asyncpg.Connection
) -> None:
    first = await verified_credential(client, "BINANCE")
    second = await verified_credential(client, "BINANCE")
    alone = await connect_account(client, [first["credentialId"]], "spot")
    shared = await connect_account(client, [first["credentialId"], second["credentialId"]],
                                   "margin")
    archived = await connect_account(client, [first["credentialId"]], "futures")
    status, payload = await post(client, DISCONNECT, {"tradingAccountId":
                                                      archived["tradingAccountId"]})
    assert status == 200, payload
    other = await connect_account(client, [second["credentialId"]], "coin_futures")

    status, payload = await post(client, REVOKE, {"credentialId": first["credentialId"]})
    assert status == 200, payload

    status, payload = await get(client, ACCOUNTS)
    statuses = {a["tradingAccountId"]: a["status"] for a in assert_ok(payload)}
    assert statuses == {alone["tradingAccountId"]: "INACTIVE",
                        shared["tradingAccountId"]: "ACTIVE",
                        archived["tradingAccountId"]: "DISCONNECTED",
                        other["tradingAccountId"]: "ACTIVE"}

    [revoke_alone, _] = await operations_of(client, alone["tradingAccountId"])
    assert revoke_alone["operationType"] == "CREDENTIAL_REVOKE"
    assert revoke_alone["status"] == "COMPLETED"
    assert revoke_alone["detail"] == {"credentialId": first["credentialId"],
                                      "statusChange": "ACTIVE->INACTIVE"}
    [revoke_shared, _] = await operations_of(client, shared["tradingAccountId"])
    assert revoke_shared["operationType"] == "CREDENTIAL_REVOKE"
    assert revoke_shared["detail"] == {"credentialId": first["credentialId"]}
    assert [o["operationType"] for o in await operations_of(
        client, archived["tradingAccountId"])] == ["DISCONNECT", "CONNECT"]
    assert [o["operationType"] for o in await operations_of(
        client, other["tradingAccountId"])] == ["CONNECT"]

    status, payload = await post(client, CONNECT, {"credentialIds": [first["credentialId"]],
                                                   "externalTradingAccountId": "isolated_margin"})
    assert status == 400
    assert_error(payload, -110002)


async def test_revoke_leaves_a_disabled_account_inactive(client: Client) -> None:
    credential = await verified_credential(client)
    account = await connect_account(client, [credential["credentialId"]])
    status, payload = await post(client, "/api/v3/tradingAccount/disable",
                                 {"tradingAccountId": account["tradingAccountId"]})
    assert status == 200, payload
    status, payload = await post(client, REVOKE, {"credentialId": credential["credentialId"]})
    assert status == 200, payload
    [revoke, disable, _] = await operations_of(client, account["tradingAccountId"])
    assert (revoke["operationType"], disable["operationType"]) == ("CREDENTIAL_REVOKE", "DISABLE")
    assert revoke["detail"] == {"credentialId": credential["credentialId"]}


async def test_revoke_refuses_unknown_credentials_and_invalid_bodies(
    client: Client, conn: asyncpg.Connection
) -> None:
    await create_credential(client)
    before = await snapshot(conn)
    status, payload = await post(client, REVOKE, {"credentialId": str(uuid.uuid4())})
    assert status == 404
    assert_error(payload, -110001)
    assert await snapshot(conn) == before
    await assert_body_rejections(client, conn, REVOKE, [
        ({}, "credentialId"),
        ({"credentialId": None}, "credentialId"),
        ({"credentialId": "123"}, "credentialId"),
        ({"credentialId": 123}, "credentialId"),
        ({"credentialId": [str(uuid.uuid4())]}, "credentialId"),
        ({"credentialIds": [str(uuid.uuid4())]}, "credentialIds"),
        ({"credentialId": str(uuid.uuid4()), "reason": "x"}, "reason"),
    ])


# ---------------------------------------------------------------- rotate


async def test_rotate_swaps_the_key_and_records_an_operation_per_connected_account(
    client: Client, conn: asyncpg.Connection
) -> None:
    credential = await verified_credential(client, "OKX", nickname="okx",
                                           apiSecret="old-secret", apiPassphrase="old-pass")
    trading = await connect_account(client, [credential["credentialId"]], "trading")
    funding = await connect_account(client, [credential["credentialId"]], "funding")
    status, payload = await post(client, DISCONNECT, {"tradingAccountId":
                                                      funding["tradingAccountId"]})
    assert status == 200, payload
    [before] = (await listed(client))[0]

    status, payload = await post(client, ROTATE, {
        "credentialId": credential["credentialId"], "apiKey": "new-key", "apiSecret": "new-secret"})
    assert status == 200, payload
    rotated = assert_ok(payload)
    assert set(rotated) == CREDENTIAL_KEYS
    assert rotated["credentialId"] == credential["credentialId"]
    assert (rotated["venue"], rotated["credentialType"], rotated["nickname"]) == (
        "OKX", "API_KEY", "okx")
    assert rotated["status"] == "VERIFIED"
    assert rotated["identities"] == ["trading", "funding"]
    assert rotated["createdAt"] == before["createdAt"]
    assert rotated["verifiedAt"] >= before["verifiedAt"]
    assert rotated["updatedAt"] == rotated["verifiedAt"]
    assert await stored_secret(conn, credential["credentialId"]) == {
        "apiKey": "new-key", "apiSecret": "new-secret", "apiPassphrase": None}

    [rotation, connected] = await operations_of(client, trading["tradingAccountId"])
    assert (rotation["operationType"], connected["operationType"]) == ("CREDENTIAL_ROTATE",
                                                                     "CONNECT")
    assert rotation["detail"] == {"credentialId": credential["credentialId"]}
    assert [o["operationType"] for o in await operations_of(
        client, funding["tradingAccountId"])] == ["DISCONNECT", "CONNECT"]
    status, payload = await get(client, ACCOUNTS, {"tradingAccountId": trading["tradingAccountId"]})
    [account] = assert_ok(payload)
    assert account["status"] == "ACTIVE"
    assert account["credentials"][0]["status"] == "VERIFIED"


async def test_rotate_repairs_a_failed_or_unverified_credential(client: Client) -> None:
    failed = await create_credential(client, "BYBIT", api_key=None)
    status, payload = await post(client, VERIFY, {"credentialIds": [failed["credentialId"]]})
    assert status == 400, payload
    created = await create_credential(client, "BYBIT")
    for credential in (failed, created):
        status, payload = await post(client, ROTATE, {"credentialId": credential["credentialId"],
                                                      "apiKey": "good-key"})
        assert status == 200, payload
        assert assert_ok(payload)["status"] == "VERIFIED"
        account = await connect_account(client, [credential["credentialId"]], "contract")
        assert account["accountType"] == "FUTURES"
    [rotated] = (await listed(client, {"credentialIds": failed["credentialId"]}))[0]
    assert rotated["identities"] == ["unified", "spot", "contract"]


async def test_rotate_refuses_without_writing(client: Client, conn: asyncpg.Connection) -> None:
    credential = await verified_credential(client, "BINANCE")
    await connect_account(client, [credential["credentialId"]])
    revoked = await create_credential(client, "BINANCE")
    status, payload = await post(client, REVOKE, {"credentialId": revoked["credentialId"]})
    assert status == 200, payload
    before = await snapshot(conn)

    status, payload = await post(client, ROTATE, {"credentialId": str(uuid.uuid4()),
                                                  "apiKey": "k"})
    assert status == 404
    assert_error(payload, -110001)
    status, payload = await post(client, ROTATE, {"credentialId": revoked["credentialId"],
                                                  "apiKey": "k"})
    assert status == 400
    assert_error(payload, -110002)
    status, payload = await post(client, ROTATE, {"credentialId": credential["credentialId"],
                                                  "apiKey": "   ", "apiSecret": "s"})
    assert status == 400
    assert_error(payload, -110004)
    assert await snapshot(conn) == before
    assert (await stored_secret(conn, credential["credentialId"]))["apiKey"] == "key-1"

    cid = credential["credentialId"]
    await assert_body_rejections(client, conn, ROTATE, [
        ({}, "credentialId"),
        ({"credentialId": cid}, "apiKey"),
        ({"apiKey": "k"}, "credentialId"),
        ({"credentialId": cid, "apiKey": ""}, "apiKey"),
        ({"credentialId": cid, "apiKey": None}, "apiKey"),
        ({"credentialId": cid, "apiKey": 5}, "apiKey"),
        ({"credentialId": cid, "apiKey": "k", "apiSecret": 5}, "apiSecret"),
        ({"credentialId": cid, "apiKey": "k", "apiPassphrase": "p" * 4097}, "apiPassphrase"),
        ({"credentialId": "nope", "apiKey": "k"}, "credentialId"),
        ({"credentialId": cid, "apiKey": "k", "nickname": "renamed"}, "nickname"),
        ({"credentialId": cid, "apiKey": "k", "venue": "OKX"}, "venue"),
    ])


# ---------------------------------------------------------------- list


async def test_list_filters_by_type_status_ids_and_venue(client: Client) -> None:
    verified = await verified_credential(client, "BINANCE", credential_type="API_KEY")
    created = await create_credential(client, "OKX", credential_type="HMAC")
    failed = await create_credential(client, "BINANCE", credential_type="HMAC", api_key=None)
    status, payload = await post(client, VERIFY, {"credentialIds": [failed["credentialId"]]})
    assert status == 400, payload
    revoked = await create_credential(client, "BYBIT", credential_type="ED25519")
    status, payload = await post(client, REVOKE, {"credentialId": revoked["credentialId"]})
    assert status == 200, payload
    every = [verified, created, failed, revoked]

    async def ids(params: Any) -> list[str]:
        rows, pagination = await listed(client, params)
        assert pagination["total"] == len(rows)
        assert pagination["hasNext"] is False
        return [r["credentialId"] for r in rows]

    assert await ids(None) == [c["credentialId"] for c in every]
    assert await ids({"credentialType": "HMAC"}) == [created["credentialId"],
                                                     failed["credentialId"]]
    assert await ids({"credentialType": "RSA"}) == []
    assert await ids({"credentialStatus": "VERIFIED"}) == [verified["credentialId"]]
    assert await ids({"credentialStatus": "CREATED"}) == [created["credentialId"]]
    assert await ids({"credentialStatus": "FAILED"}) == [failed["credentialId"]]
    assert await ids({"credentialStatus": "REVOKED"}) == [revoked["credentialId"]]
    assert await ids({"venue": "BINANCE"}) == [verified["credentialId"], failed["credentialId"]]
    assert await ids({"venue": "DERIBIT"}) == []
    assert await ids([("credentialIds", revoked["credentialId"]),
                      ("credentialIds", created["credentialId"])]) == [
        created["credentialId"], revoked["credentialId"]]
    assert await ids([("credentialIds", verified["credentialId"]),
                      ("credentialIds", failed["credentialId"])]) == [
        verified["credentialId"], failed["credentialId"]]
    assert await ids({"credentialIds": str(uuid.uuid4())}) == []
    assert await ids({"venue": "BINANCE", "credentialType": "HMAC",
                      "credentialStatus": "FAILED"}) == [failed["credentialId"]]
    assert await ids({"venue": "BINANCE", "credentialStatus": "REVOKED"}) == []

    viewer_rows, _ = await listed(client, {"credentialStatus": "REVOKED"}, headers=VIEWER)
    [row] = viewer_rows
    assert set(row) == CREDENTIAL_KEYS
    assert row["revokedAt"] is not None
    assert row["identities"] == []


async def test_list_pages_with_limit_and_offset(client: Client) -> None:
    made = [(await create_credential(client, "BINANCE", nickname=f"c{i}"))["credentialId"]
            for i in range(5)]
    rows, pagination = await listed(client)
    assert [r["credentialId"] for r in rows] == made
    assert pagination == {"offset": 0, "limit": 50, "total": 5, "hasNext": False}

    seen: list[str] = []
    for offset, size, has_next in ((0, 2, True), (2, 2, True), (4, 1, False)):
        rows, pagination = await listed(client, {"limit": 2, "offset": offset})
        assert len(rows) == size
        assert pagination == {"offset": offset, "limit": 2, "total": 5, "hasNext": has_next}
        seen += [r["credentialId"] for r in rows]
    assert seen == made

    for offset in (5, 1000, 2**63 - 1):
        rows, pagination = await listed(client, {"limit": 1000, "offset": offset})
        assert rows == []
        assert pagination == {"offset": offset, "limit": 1000, "total": 5, "hasNext": False}
    rows, pagination = await listed(client, {"limit": 3, "venue": "BINANCE", "offset": 3})
    assert [r["credentialId"] for r in rows] == made[3:]
    assert pagination == {"offset": 3, "limit": 3, "total": 5, "hasNext": False}


async def test_list_refuses_invalid_queries(client: Client) -> None:
    for params, field in (
        ({"limit": 0}, "limit"), ({"limit": 1001}, "limit"), ({"limit": -5}, "limit"),
        ({"limit": "ten"}, "limit"), ({"offset": -1}, "offset"), ({"offset": "x"}, "offset"),
        ({"offset": 2**63}, "offset"),
        ({"credentialType": "PASSWORD"}, "credentialType"),
        ({"credentialStatus": "ACTIVE"}, "credentialStatus"),
        ({"credentialIds": "not-a-uuid"}, "credentialIds.0"),
        ({"venue": "FERMATA"}, "venue"), ({"venue": "binance"}, "venue"),
        ({"credentialId": str(uuid.uuid4())}, "credentialId"),
        ({"apiKey": "k"}, "apiKey"),
    ):
        status, payload = await get(client, LIST, params)
        assert_invalid(status, payload, field)


# ---------------------------------------------------------------- auth


async def test_credential_endpoints_require_a_valid_token_and_the_right_role(
    client: Client, conn: asyncpg.Connection
) -> None:
    credential = await create_credential(client)
    cid = credential["credentialId"]
    writes = [
        (CREATE, {"venue": "BINANCE", "credentialType": "API_KEY", "apiKey": "k"}),
        (VERIFY, {"credentialIds": [cid]}),
        (REVOKE, {"credentialId": cid}),
        (ROTATE, {"credentialId": cid, "apiKey": "other"}),
    ]
    expired = {"Authorization": "Bearer " + mint_token(
        "test-secret-" + "x" * 40, Role.ADMIN, ttl_seconds=60, now=1_000_000)}
    foreign = {"Authorization": "Bearer " + mint_token("another-secret-" + "y" * 40, Role.ADMIN)}
    garbage = [{"Authorization": "Bearer garbage"}, {"Authorization": "Basic YWRtaW46YWRtaW4="},
               {"Authorization": "Bearer "}, foreign]
    before = await snapshot(conn)
    for path, body in writes:
        status, payload = await post(client, path, body, headers={})
        assert status == 401
        assert_error(payload, -101001)
        for headers in garbage:
            status, payload = await post(client, path, body, headers=headers)
            assert status == 401, (path, headers)
            assert_error(payload, -101002)
        status, payload = await post(client, path, body, headers=expired)
        assert status == 401
        assert_error(payload, -101003)
        for headers, role in ((VIEWER, "viewer"), (TRADER, "trader"),
                              (auth(Role.TRADER, [uuid.uuid4()]), "trader")):
            status, payload = await post(client, path, body, headers=headers)
            assert status == 403, (path, role)
            assert_error(payload, -101004)
            assert payload["details"]["required"] == ["admin"]
            assert payload["details"]["provided"] == [role]
        status, payload = await post_raw(client, path, b"{", headers=VIEWER)
        assert status == 403
        assert_error(payload, -101004)
    assert await snapshot(conn) == before

    status, payload = await get(client, LIST, headers={})
    assert status == 401
    assert_error(payload, -101001)
    status, payload = await get(client, LIST, headers={"Authorization": "Bearer garbage"})
    assert status == 401
    assert_error(payload, -101002)
    status, payload = await get(client, LIST, headers=TRADER)
    assert status == 403
    assert_error(payload, -101004)
    assert payload["details"]["required"] == ["admin", "viewer"]
    rows, _ = await listed(client, headers=VIEWER)
    assert [r["credentialId"] for r in rows] == [cid]
