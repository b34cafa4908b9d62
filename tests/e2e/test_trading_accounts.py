"""Trading account endpoints end to end: connect (seeds/000), disconnect, update, enable,
disable, list and the operation history (seeds/001)."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from aiohttp import web

from dealer.app import create_app
from dealer.auth import Role
from dealer.settings import DaemonSecrets, Settings
from tests.conftest import ADMIN, TRADER, VIEWER, assert_error, assert_ok, auth, utc
from tests.helpers import (
    Client,
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
CONNECT = "/api/v3/tradingAccount/connect"
DISCONNECT = "/api/v3/tradingAccount/disconnect"
UPDATE = "/api/v3/tradingAccount/update"
ENABLE = "/api/v3/tradingAccount/enable"
DISABLE = "/api/v3/tradingAccount/disable"
LIST = "/api/v3/tradingAccount/list"
OPERATIONS = "/api/v3/tradingAccount/operation/list"

ACCOUNT_KEYS = {
    "tradingAccountId", "externalTradingAccountId", "venue", "nickname", "accountType",
    "externalAccountType", "credentials", "status", "takerFee",
    "createdAt", "createdAtDateTime", "updatedAt", "updatedAtDateTime",
}
OPERATION_KEYS = {"operationId", "tradingAccountId", "operationType", "status", "detail",
                  "createdAt", "createdAtDateTime"}


# ---------------------------------------------------------------- helpers


async def ok(client: Client, path: str, body: Any) -> Any:
    status, payload = await post(client, path, body)
    assert status == 200, payload
    return assert_ok(payload)


async def credential(client: Client, venue: str = "BINANCE", *, verified: bool = True,
                     api_key: str | None = "key") -> str:
    """A credential id, verified with the (paper) venue unless told otherwise."""
    body: dict[str, Any] = {"venue": venue, "credentialType": "API_KEY"}
    if api_key is not None:
        body["apiKey"] = api_key
    credential_id: str = (await ok(client, CREATE, body))["credentialId"]
    if verified:
        await ok(client, VERIFY, {"credentialIds": [credential_id]})
    return credential_id


async def connected_account(client: Client, venue: str = "BINANCE",
                            external_id: str = "spot") -> tuple[str, dict[str, Any]]:
    """create → verify → connect: the credential id and the connected account."""
    credential_id = await credential(client, venue)
    return credential_id, await connect_account(client, [credential_id], external_id)


async def listed(client: Client, path: str, params: Any = None,
                 headers: dict[str, str] = ADMIN) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    status, payload = await get(client, path, params, headers)
    assert status == 200, payload
    return assert_ok(payload), payload["pagination"]


async def account_ids(client: Client, params: Any = None,
                      headers: dict[str, str] = ADMIN) -> list[str]:
    rows, pagination = await listed(client, LIST, params, headers)
    assert pagination["total"] == len(rows)
    return [r["tradingAccountId"] for r in rows]


async def operation_types(client: Client, account_id: str) -> list[str]:
    rows, _ = await listed(client, OPERATIONS, {"tradingAccountId": account_id})
    return [r["operationType"] for r in rows]


async def insert_dealer(conn: asyncpg.Connection, linked_to: str | None = None) -> str:
    """A FERMATA dealer account (as the dealer endpoints would create it), optionally with an
    exchange account linked to it as LP."""
    dealer_id = uuid.uuid4()
    now = dt.datetime.now(dt.UTC)
    await conn.execute(
        """INSERT INTO trading_account (trading_account_id, venue, kind,
               external_trading_account_id, account_type, external_account_type, nickname,
               status, created_at, updated_at)
           VALUES ($1, 'FERMATA', 'DEALER', $2, 'DEALER', 'DEALER', 'desk', 'ACTIVE', $3, $3)""",
        dealer_id, str(dealer_id), now,
    )
    await conn.execute(
        """INSERT INTO dealer (dealer_account_id, status, config, created_at, updated_at)
           VALUES ($1, 'ACTIVE', '{}'::jsonb, $2, $2)""",
        dealer_id, now,
    )
    if linked_to is not None:
        await conn.execute(
            "INSERT INTO dealer_link (dealer_account_id, trading_account_id, linked_at) "
            "VALUES ($1, $2, $3)",
            dealer_id, uuid.UUID(linked_to), now,
        )
    return str(dealer_id)


class SteppingClock:
    """Every reading is one second after the previous one, so each request's operations get
    distinct, ordered times that the time filters can cut between."""

    def __init__(self, start: dt.datetime) -> None:
        self.now = start

    def __call__(self) -> dt.datetime:
        self.now += dt.timedelta(seconds=1)
        return self.now


@pytest.fixture
async def stepped_client(
    settings: Settings, secrets: DaemonSecrets,
    aiohttp_client: Callable[[web.Application], Awaitable[Client]],
) -> Client:
    return await aiohttp_client(create_app(settings, secrets, clock=SteppingClock(utc(2026))))


# ---------------------------------------------------------------- connect


async def test_connect_answers_the_seed_account_shape(
    client: Client, conn: asyncpg.Connection
) -> None:
    credential_id = await credential(client, "BINANCE")
    account = await connect_account(client, [credential_id], "spot", nickname="  My Binance Spot ")
    assert set(account) == ACCOUNT_KEYS
    uuid.UUID(account["tradingAccountId"])
    assert account["externalTradingAccountId"] == "spot"
    assert account["venue"] == "BINANCE"
    assert account["nickname"] == "My Binance Spot"
    assert (account["accountType"], account["externalAccountType"]) == ("SPOT", "SPOT")
    assert account["status"] == "ACTIVE"
    assert account["createdAt"] == account["updatedAt"]
    assert_moment(account["createdAt"], account["createdAtDateTime"])
    [owner] = account["credentials"]
    assert owner["credentialId"] == credential_id
    assert (owner["venue"], owner["status"]) == ("BINANCE", "VERIFIED")

    row = await fetch_one(conn, "SELECT * FROM trading_account")
    assert str(row["trading_account_id"]) == account["tradingAccountId"]
    assert (row["kind"], row["status"], row["external_trading_account_id"]) == (
        "EXCHANGE", "ACTIVE", "spot")
    link = await fetch_one(conn, "SELECT * FROM trading_account_credential")
    assert (str(link["credential_id"]), link["live"]) == (credential_id, True)
    [connected] = (await listed(client, OPERATIONS))[0]
    assert set(connected) == OPERATION_KEYS
    assert connected["operationType"] == "CONNECT"
    assert connected["status"] == "COMPLETED"
    assert connected["tradingAccountId"] == account["tradingAccountId"]
    assert connected["detail"] == {"credentialIds": [credential_id]}
    assert connected["createdAt"] == account["createdAt"]

    [listed_account], _ = await listed(client, LIST)
    assert listed_account == account


async def test_connect_several_accounts_and_credentials(client: Client) -> None:
    first = await credential(client, "BINANCE")
    second = await credential(client, "BINANCE")
    futures = await connect_account(client, [first], "futures")
    assert (futures["accountType"], futures["externalAccountType"]) == ("FUTURES", "USDT_FUTURES")
    assert futures["nickname"] is None
    shared = await connect_account(client, [first, second, first], " coin_futures ")
    assert shared["externalTradingAccountId"] == "coin_futures"
    assert [c["credentialId"] for c in shared["credentials"]] == [first, second]
    okx = await connect_account(client, [await credential(client, "OKX")], "funding")
    assert (okx["venue"], okx["accountType"]) == ("OKX", "FUNDING")
    bybit = await connect_account(client, [await credential(client, "BYBIT")], "unified")
    assert (bybit["venue"], bybit["accountType"]) == ("BYBIT", "UNIFIED")
    assert await account_ids(client) == [a["tradingAccountId"] for a in (futures, shared, okx,
                                                                         bybit)]


async def test_connect_refusals_write_nothing(client: Client, conn: asyncpg.Connection) -> None:
    verified, account = await connected_account(client, "BINANCE", "spot")
    okx = await credential(client, "OKX")
    created = await credential(client, "BINANCE", verified=False)
    failed = await credential(client, "BINANCE", verified=False, api_key=None)
    status, payload = await post(client, VERIFY, {"credentialIds": [failed]})
    assert status == 400, payload
    revoked = await credential(client, "BINANCE")
    await ok(client, REVOKE, {"credentialId": revoked})
    unknown = str(uuid.uuid4())
    before = await snapshot(conn)

    cases = [
        ([unknown], "spot", 404, -110001),
        ([verified, unknown], "margin", 404, -110001),
        ([verified], "spot", 409, -120002),
        ([verified], "trading", 422, -120003),
        ([verified], "SPOT", 422, -120003),
        ([verified], "nope", 422, -120003),
        ([created], "spot", 400, -110003),
        ([failed], "spot", 400, -110003),
        ([verified, created], "margin", 400, -110003),
        ([revoked], "margin", 400, -110002),
        ([verified, revoked], "margin", 400, -110002),
        ([verified, okx], "spot", 400, -110005),
    ]
    for credential_ids, external_id, expected_status, errno in cases:
        status, payload = await post(client, CONNECT, {"credentialIds": credential_ids,
                                                       "externalTradingAccountId": external_id})
        assert status == expected_status, (credential_ids, external_id, payload)
        assert_error(payload, errno)
    status, payload = await post(client, CONNECT, {"credentialIds": [verified],
                                                   "externalTradingAccountId": "trading"})
    # The accounts the credential reaches are named; the submitted text is not echoed.
    assert payload["error"] == ("Invalid external trading account ID; the credential gives "
                                "access to: coin_futures, futures, isolated_margin, margin, spot")
    assert await snapshot(conn) == before
    assert await account_ids(client) == [account["tradingAccountId"]]


async def test_connect_again_after_disconnect_gives_a_new_account(
    client: Client, conn: asyncpg.Connection
) -> None:
    credential_id, first = await connected_account(client, "BINANCE", "spot")
    disconnected = await ok(client, DISCONNECT, {"tradingAccountId": first["tradingAccountId"]})
    assert disconnected["status"] == "DISCONNECTED"
    assert disconnected["tradingAccountId"] == first["tradingAccountId"]
    assert disconnected["updatedAt"] >= first["updatedAt"]
    assert [c["credentialId"] for c in disconnected["credentials"]] == [credential_id]

    second = await connect_account(client, [credential_id], "spot", nickname="again")
    assert second["tradingAccountId"] != first["tradingAccountId"]
    assert second["status"] == "ACTIVE"
    links = await conn.fetch("SELECT trading_account_id::text, live FROM "
                             "trading_account_credential ORDER BY live")
    assert [(r[0], r[1]) for r in links] == [(first["tradingAccountId"], False),
                                             (second["tradingAccountId"], True)]
    status, payload = await post(client, CONNECT, {"credentialIds": [credential_id],
                                                   "externalTradingAccountId": "spot"})
    assert status == 409
    assert_error(payload, -120002)
    statuses = {r["tradingAccountId"]: r["status"] for r in (await listed(client, LIST))[0]}
    assert statuses == {first["tradingAccountId"]: "DISCONNECTED",
                        second["tradingAccountId"]: "ACTIVE"}
    assert await operation_types(client, first["tradingAccountId"]) == ["DISCONNECT", "CONNECT"]
    assert await operation_types(client, second["tradingAccountId"]) == ["CONNECT"]


async def test_connect_refuses_invalid_bodies(client: Client, conn: asyncpg.Connection) -> None:
    credential_id = await credential(client)
    before = await snapshot(conn)
    for body, field in (
        ({}, "credentialIds"),
        ({"credentialIds": [credential_id]}, "externalTradingAccountId"),
        ({"externalTradingAccountId": "spot"}, "credentialIds"),
        ({"credentialIds": [], "externalTradingAccountId": "spot"}, "credentialIds"),
        ({"credentialIds": credential_id, "externalTradingAccountId": "spot"}, "credentialIds"),
        ({"credentialIds": ["nope"], "externalTradingAccountId": "spot"}, "credentialIds.0"),
        ({"credentialIds": [str(uuid.uuid4()) for _ in range(11)],
          "externalTradingAccountId": "spot"}, "credentialIds"),
        ({"credentialIds": [credential_id], "externalTradingAccountId": ""},
         "externalTradingAccountId"),
        ({"credentialIds": [credential_id], "externalTradingAccountId": "   "},
         "externalTradingAccountId"),
        ({"credentialIds": [credential_id], "externalTradingAccountId": 1},
         "externalTradingAccountId"),
        ({"credentialIds": [credential_id], "externalTradingAccountId": "x" * 101},
         "externalTradingAccountId"),
        ({"credentialIds": [credential_id], "externalTradingAccountId": "spot", "nickname": ""},
         "nickname"),
        ({"credentialIds": [credential_id], "externalTradingAccountId": "spot",
          "nickname": ["a"]}, "nickname"),
        ({"credentialIds": [credential_id], "externalTradingAccountId": "spot",
          "nickname": "a\u0000b"}, "nickname"),
        ({"credentialIds": [credential_id], "externalTradingAccountId": "spot",
          "venue": "BINANCE"}, "venue"),
        ({"credentialId": credential_id, "externalTradingAccountId": "spot"}, "credentialId"),
    ):
        status, payload = await post(client, CONNECT, body)
        assert_invalid(status, payload, field)
    for raw in (b"[]", b"null", b'"spot"'):
        assert_invalid(*await post_raw(client, CONNECT, raw))
    for raw in (b"{", b'{"credentialIds": [}', b"\xff\xfe"):
        status, payload = await post_raw(client, CONNECT, raw)
        assert status == 400
        assert_error(payload, -100002)
    assert await snapshot(conn) == before


async def test_concurrent_connects_of_one_account_succeed_once(
    client: Client, conn: asyncpg.Connection
) -> None:
    credential_id = await credential(client)
    body = {"credentialIds": [credential_id], "externalTradingAccountId": "margin"}
    answers = await asyncio.gather(*(post(client, CONNECT, body) for _ in range(4)))
    assert sorted(status for status, _ in answers) == [200, 409, 409, 409]
    for status, payload in answers:
        if status == 409:
            assert_error(payload, -120002)
    assert await conn.fetchval("SELECT count(*) FROM trading_account") == 1
    assert await conn.fetchval("SELECT count(*) FROM trading_account_operation") == 1


async def test_connects_naming_the_same_credentials_in_any_order_do_not_deadlock(
    client: Client, conn: asyncpg.Connection
) -> None:
    first = await credential(client)
    second = await credential(client)
    # With `second` held, one connect names (second, first) and waits on it; the other names
    # (first, second). Released, both must complete, whatever order they lock in.
    async with conn.transaction():
        await conn.execute("SELECT 1 FROM credential WHERE credential_id = $1 FOR UPDATE",
                           uuid.UUID(second))
        reversed_order = asyncio.ensure_future(post(client, CONNECT, {
            "credentialIds": [second, first], "externalTradingAccountId": "spot"}))
        await until_lock_waiters(conn, 1)
        in_order = asyncio.ensure_future(post(client, CONNECT, {
            "credentialIds": [first, second], "externalTradingAccountId": "margin"}))
        await until_lock_waiters(conn, 2)
    for future in (reversed_order, in_order):
        status, payload = await future
        assert status == 200, payload
    rows, _ = await listed(client, LIST)
    assert sorted(r["externalTradingAccountId"] for r in rows) == ["margin", "spot"]


# ---------------------------------------------------------------- update, enable, disable


async def test_update_renames_and_records_only_real_changes(client: Client) -> None:
    _, account = await connected_account(client)
    account_id = account["tradingAccountId"]
    renamed = await ok(client, UPDATE, {"tradingAccountId": account_id, "nickname": " Desk A "})
    assert set(renamed) == ACCOUNT_KEYS
    assert renamed["nickname"] == "Desk A"
    assert renamed["updatedAt"] >= account["updatedAt"]
    assert renamed["createdAt"] == account["createdAt"]
    assert {k: v for k, v in renamed.items() if k not in {"nickname", "updatedAt",
                                                          "updatedAtDateTime"}} == {
        k: v for k, v in account.items() if k not in {"nickname", "updatedAt",
                                                      "updatedAtDateTime"}}
    assert await ok(client, UPDATE, {"tradingAccountId": account_id, "nickname": "Desk A"}) \
        == renamed
    assert await ok(client, UPDATE, {"tradingAccountId": account_id}) == renamed
    [update, _] = (await listed(client, OPERATIONS, {"tradingAccountId": account_id}))[0]
    assert update["operationType"] == "UPDATE"
    assert update["detail"] == {"nickname": "Desk A"}
    assert update["createdAt"] == renamed["updatedAt"]
    # An explicit null clears the nickname (as dealer/update's does), once.
    cleared = await ok(client, UPDATE, {"tradingAccountId": account_id, "nickname": None})
    assert cleared["nickname"] is None
    assert await ok(client, UPDATE, {"tradingAccountId": account_id, "nickname": None}) == cleared
    operations = (await listed(client, OPERATIONS, {"tradingAccountId": account_id}))[0]
    assert [(o["operationType"], o["detail"]) for o in operations[:2]] == [
        ("UPDATE", {"nickname": None}), ("UPDATE", {"nickname": "Desk A"})]
    renamed = await ok(client, UPDATE, {"tradingAccountId": account_id, "nickname": "Desk A"})
    [listed_account], _ = await listed(client, LIST, {"tradingAccountId": account_id})
    assert listed_account["nickname"] == "Desk A"


async def test_update_takes_a_taker_fee_below_ten_percent_and_refuses_others(
    client: Client, conn: asyncpg.Connection
) -> None:
    _, account = await connected_account(client)
    account_id = account["tradingAccountId"]
    assert account["takerFee"] is None
    for fee in ("0.00075", "0.09999999", "0"):
        updated = await ok(client, UPDATE, {"tradingAccountId": account_id, "takerFee": fee})
        assert updated["takerFee"] == fee
    before = await snapshot(conn)
    # The database keeps a rate below 0.1 (10 %): anything else is the request's fault, named.
    for fee in ("0.1", "0.9", "0.10000000", "1", "-0.001", "0.123456789", ".5", 0.001):
        status, payload = await post(client, UPDATE, {"tradingAccountId": account_id,
                                                      "takerFee": fee})
        assert_invalid(status, payload, "takerFee")
    assert await snapshot(conn) == before
    cleared = await ok(client, UPDATE, {"tradingAccountId": account_id, "takerFee": None})
    assert cleared["takerFee"] is None
    # The history names the field as the API does.
    updates, _ = await listed(client, OPERATIONS, {"tradingAccountId": account_id,
                                                   "operationType": "UPDATE"})
    assert [u["detail"] for u in updates] == [{"takerFee": None}, {"takerFee": "0"},
                                              {"takerFee": "0.09999999"},
                                              {"takerFee": "0.00075"}]


async def test_a_taker_fee_for_a_fermata_account_is_refused_as_documented(
    client: Client, conn: asyncpg.Connection
) -> None:
    dealer_id = await insert_dealer(conn)
    before = await snapshot(conn)
    status, payload = await post(client, UPDATE, {"tradingAccountId": dealer_id,
                                                  "takerFee": "0.001"})
    assert status == 400, payload
    assert_error(payload, -120006)
    assert await snapshot(conn) == before
    _, document = await get(client, "/api/v3/openapi.json", headers=None)
    operation = document["paths"][UPDATE]["post"]
    assert -120006 in {e["errno"] for e in operation["responses"]["400"]["x-errnos"]}
    assert "taker fee" in operation["summary"]


async def test_disable_and_enable_switch_status_idempotently(client: Client) -> None:
    _, account = await connected_account(client)
    account_id = account["tradingAccountId"]
    disabled = await ok(client, DISABLE, {"tradingAccountId": account_id})
    assert set(disabled) == ACCOUNT_KEYS
    assert disabled["status"] == "INACTIVE"
    assert await ok(client, DISABLE, {"tradingAccountId": account_id}) == disabled
    enabled = await ok(client, ENABLE, {"tradingAccountId": account_id})
    assert enabled["status"] == "ACTIVE"
    assert await ok(client, ENABLE, {"tradingAccountId": account_id}) == enabled
    assert await operation_types(client, account_id) == ["ENABLE", "DISABLE", "CONNECT"]
    assert await account_ids(client, {"accountStatus": "ACTIVE"}) == [account_id]


async def test_enable_needs_a_credential_that_is_not_revoked(
    client: Client, conn: asyncpg.Connection
) -> None:
    first = await credential(client)
    second = await credential(client)
    alone = await connect_account(client, [first], "spot")
    shared = await connect_account(client, [first, second], "margin")
    await ok(client, DISABLE, {"tradingAccountId": shared["tradingAccountId"]})
    await ok(client, REVOKE, {"credentialId": first})
    before = await snapshot(conn)
    status, payload = await post(client, ENABLE, {"tradingAccountId": alone["tradingAccountId"]})
    assert status == 400
    assert_error(payload, -110002)
    # The way out it names is one that exists: a revoked credential cannot be rotated.
    assert payload["error"] == ("Every credential of this account is revoked; connect the "
                                "exchange account anew with a verified credential")
    status, payload = await post(client, ROTATE, {"credentialId": first, "apiKey": "new"})
    assert status == 400
    assert_error(payload, -110002)
    assert await snapshot(conn) == before
    enabled = await ok(client, ENABLE, {"tradingAccountId": shared["tradingAccountId"]})
    assert enabled["status"] == "ACTIVE"
    assert [c["status"] for c in enabled["credentials"]] == ["REVOKED", "VERIFIED"]


async def test_account_actions_refuse_unknown_disconnected_linked_and_fermata_accounts(
    client: Client, conn: asyncpg.Connection
) -> None:
    _, gone = await connected_account(client, "BINANCE", "spot")
    await ok(client, DISCONNECT, {"tradingAccountId": gone["tradingAccountId"]})
    _, linked = await connected_account(client, "OKX", "trading")
    dealer_id = await insert_dealer(conn, linked_to=linked["tradingAccountId"])
    unknown = str(uuid.uuid4())
    before = await snapshot(conn)

    for path in (DISCONNECT, UPDATE, ENABLE, DISABLE):
        status, payload = await post(client, path, {"tradingAccountId": unknown})
        assert status == 404, path
        assert_error(payload, -120001)
        assert payload["details"]["metadata"] == {"tradingAccountId": unknown}
        body = {"tradingAccountId": gone["tradingAccountId"]}
        if path == UPDATE:
            body["nickname"] = "revived"
        status, payload = await post(client, path, body)
        assert status == 400, path
        assert_error(payload, -120004)

    status, payload = await post(client, DISCONNECT, {"tradingAccountId":
                                                      linked["tradingAccountId"]})
    assert status == 400
    assert_error(payload, -120005)
    assert payload["details"]["metadata"] == {"dealerAccountId": dealer_id}
    status, payload = await post(client, DISCONNECT, {"tradingAccountId": dealer_id})
    assert status == 400
    assert_error(payload, -120006)
    # A dealer is paused, not disabled: its account's status would stop nothing.
    status, payload = await post(client, DISABLE, {"tradingAccountId": dealer_id})
    assert status == 400
    assert_error(payload, -120006)
    assert "fermata/dealer/pause" in payload["error"]
    assert await snapshot(conn) == before

    # A linked account may still be renamed; a dealer account an earlier version let be
    # disabled is enabled again.
    renamed = await ok(client, UPDATE, {"tradingAccountId": linked["tradingAccountId"],
                                        "nickname": "lp"})
    assert renamed["status"] == "ACTIVE"
    await conn.execute("UPDATE trading_account SET status = 'INACTIVE' "
                       "WHERE trading_account_id = $1", uuid.UUID(dealer_id))
    dealer = await ok(client, ENABLE, {"tradingAccountId": dealer_id})
    assert (dealer["venue"], dealer["status"], dealer["credentials"]) == ("FERMATA", "ACTIVE", [])


async def test_account_actions_refuse_invalid_bodies(
    client: Client, conn: asyncpg.Connection
) -> None:
    _, account = await connected_account(client)
    account_id = account["tradingAccountId"]
    before = await snapshot(conn)
    for path in (DISCONNECT, UPDATE, ENABLE, DISABLE):
        for body, field in (
            ({}, "tradingAccountId"),
            ({"tradingAccountId": None}, "tradingAccountId"),
            ({"tradingAccountId": "abc"}, "tradingAccountId"),
            ({"tradingAccountId": 42}, "tradingAccountId"),
            ({"tradingAccountId": [account_id]}, "tradingAccountId"),
            ({"tradingAccountIds": [account_id]}, "tradingAccountIds"),
            ({"tradingAccountId": account_id, "status": "ACTIVE"}, "status"),
        ):
            status, payload = await post(client, path, body)
            assert_invalid(status, payload, field)
        for raw in (b"[]", b"1"):
            assert_invalid(*await post_raw(client, path, raw))
        status, payload = await post_raw(client, path, b'{"tradingAccountId": ')
        assert status == 400
        assert_error(payload, -100002)
    for nickname in ("", "  ", "n" * 101, 5, "a\u0000b"):
        status, payload = await post(client, UPDATE, {"tradingAccountId": account_id,
                                                      "nickname": nickname})
        assert_invalid(status, payload, "nickname")
    for path in (DISCONNECT, ENABLE, DISABLE):
        status, payload = await post(client, path, {"tradingAccountId": account_id,
                                                    "nickname": "x"})
        assert_invalid(status, payload, "nickname")
    assert await snapshot(conn) == before


# ---------------------------------------------------------------- list


async def test_list_filters_and_pages(client: Client, conn: asyncpg.Connection) -> None:
    binance = await credential(client, "BINANCE")
    spot, margin, isolated, futures, coin = [
        (await connect_account(client, [binance], external_id))["tradingAccountId"]
        for external_id in ("spot", "margin", "isolated_margin", "futures", "coin_futures")]
    okx = (await connect_account(client, [await credential(client, "OKX")], "trading"))[
        "tradingAccountId"]
    await ok(client, DISABLE, {"tradingAccountId": margin})
    await ok(client, DISCONNECT, {"tradingAccountId": futures})
    dealer = await insert_dealer(conn)
    every = [spot, margin, isolated, futures, coin, okx, dealer]

    assert await account_ids(client) == every
    assert await account_ids(client, {"venue": "BINANCE"}) == [spot, margin, isolated, futures,
                                                               coin]
    assert await account_ids(client, {"venue": "OKX"}) == [okx]
    assert await account_ids(client, {"venue": "FERMATA"}) == [dealer]
    assert await account_ids(client, {"venue": "BYBIT"}) == []
    assert await account_ids(client, {"accountStatus": "ACTIVE"}) == [spot, isolated, coin, okx,
                                                                     dealer]
    assert await account_ids(client, {"accountStatus": "INACTIVE"}) == [margin]
    assert await account_ids(client, {"accountStatus": "DISCONNECTED"}) == [futures]
    assert await account_ids(client, {"accountStatus": "SUSPENDED"}) == []
    assert await account_ids(client, {"tradingAccountId": okx}) == [okx]
    assert await account_ids(client, {"tradingAccountId": str(uuid.uuid4())}) == []
    assert await account_ids(client, {"tradingAccountId": okx, "venue": "BINANCE"}) == []
    assert await account_ids(client, {"venue": "BINANCE", "accountStatus": "ACTIVE"}) == [
        spot, isolated, coin]
    assert await account_ids(client, headers=VIEWER) == every

    seen: list[str] = []
    for offset, size, has_next in ((0, 3, True), (3, 3, True), (6, 1, False)):
        rows, pagination = await listed(client, LIST, {"limit": 3, "offset": offset})
        assert len(rows) == size
        assert pagination == {"offset": offset, "limit": 3, "total": 7, "hasNext": has_next}
        seen += [r["tradingAccountId"] for r in rows]
    assert seen == every
    rows, pagination = await listed(client, LIST, {"limit": 2, "offset": 1,
                                                   "venue": "BINANCE"})
    assert [r["tradingAccountId"] for r in rows] == [margin, isolated]
    assert pagination == {"offset": 1, "limit": 2, "total": 5, "hasNext": True}
    for offset in (7, 2**63 - 1):
        rows, pagination = await listed(client, LIST, {"offset": offset, "limit": 1000})
        assert rows == []
        assert pagination == {"offset": offset, "limit": 1000, "total": 7, "hasNext": False}

    mine = auth(Role.TRADER, [uuid.UUID(spot), uuid.UUID(okx)])
    assert await account_ids(client, headers=mine) == [spot, okx]
    assert await account_ids(client, {"venue": "OKX"}, headers=mine) == [okx]
    assert await account_ids(client, {"tradingAccountId": margin}, headers=mine) == []
    assert await account_ids(client, headers=TRADER) == []
    rows, pagination = await listed(client, LIST, {"limit": 1}, headers=mine)
    assert [r["tradingAccountId"] for r in rows] == [spot]
    assert pagination == {"offset": 0, "limit": 1, "total": 2, "hasNext": True}


async def test_list_refuses_invalid_queries(client: Client) -> None:
    for path in (LIST, OPERATIONS):
        for params, field in (
            ({"limit": 0}, "limit"), ({"limit": 1001}, "limit"), ({"limit": "all"}, "limit"),
            ({"offset": -1}, "offset"), ({"offset": 2**63}, "offset"),
            ({"offset": "1.5"}, "offset"),
            ({"tradingAccountId": "not-a-uuid"}, "tradingAccountId"),
            ({"tradingAccountId": "42"}, "tradingAccountId"),
            ({"nickname": "x"}, "nickname"),
        ):
            status, payload = await get(client, path, params)
            assert_invalid(status, payload, field)
    for params, field in (
        ({"venue": "NOWHERE"}, "venue"), ({"venue": "okx"}, "venue"),
        ({"accountStatus": "CONNECTED"}, "accountStatus"),
        ({"operationType": "CONNECT"}, "operationType"),
    ):
        assert_invalid(*await get(client, LIST, params), field)
    for params, field in (
        ({"operationType": "DELETE"}, "operationType"), ({"startTime": -1}, "startTime"),
        ({"startTime": "yesterday"}, "startTime"), ({"endTime": "1e3"}, "endTime"),
        ({"venue": "BINANCE"}, "venue"),
    ):
        assert_invalid(*await get(client, OPERATIONS, params), field)
    # Past any time a list can hold (as the order and hedge lists): named like any other.
    for params, field in (({"startTime": 10**20}, "startTime"),
                          ({"endTime": 253402300800000}, "endTime")):
        assert_invalid(*await get(client, OPERATIONS, params), field)


# ---------------------------------------------------------------- operation history


async def test_operation_history_records_the_whole_lifecycle(stepped_client: Client) -> None:
    client = stepped_client
    credential_id, account = await connected_account(client, "BINANCE", "spot")
    account_id = account["tradingAccountId"]
    _, other = await connected_account(client, "OKX", "trading")
    await ok(client, UPDATE, {"tradingAccountId": account_id, "nickname": "renamed"})
    await ok(client, DISABLE, {"tradingAccountId": account_id})
    await ok(client, ENABLE, {"tradingAccountId": account_id})
    await ok(client, ROTATE, {"credentialId": credential_id, "apiKey": "rotated"})
    await ok(client, REVOKE, {"credentialId": credential_id})
    await ok(client, DISCONNECT, {"tradingAccountId": account_id})

    rows, pagination = await listed(client, OPERATIONS, {"tradingAccountId": account_id})
    assert [r["operationType"] for r in rows] == [
        "DISCONNECT", "CREDENTIAL_REVOKE", "CREDENTIAL_ROTATE", "ENABLE", "DISABLE", "UPDATE",
        "CONNECT"]
    assert pagination == {"offset": 0, "limit": 50, "total": 7, "hasNext": False}
    for row in rows:
        assert set(row) == OPERATION_KEYS
        assert row["tradingAccountId"] == account_id
        assert row["status"] == "COMPLETED"
        assert_moment(row["createdAt"], row["createdAtDateTime"])
    assert len({r["operationId"] for r in rows}) == 7
    times = [r["createdAt"] for r in rows]
    assert times == sorted(times, reverse=True)
    assert len(set(times)) == 7
    by_type = {r["operationType"]: r for r in rows}
    assert by_type["CONNECT"]["detail"] == {"credentialIds": [credential_id]}
    assert by_type["CONNECT"]["createdAt"] == account["createdAt"]
    assert by_type["UPDATE"]["detail"] == {"nickname": "renamed"}
    assert by_type["CREDENTIAL_ROTATE"]["detail"] == {"credentialId": credential_id}
    assert by_type["CREDENTIAL_REVOKE"]["detail"] == {"credentialId": credential_id,
                                                      "statusChange": "ACTIVE->INACTIVE"}
    assert by_type["DISCONNECT"]["detail"] == {}
    assert by_type["ENABLE"]["detail"] == by_type["DISABLE"]["detail"] == {}

    everything, pagination = await listed(client, OPERATIONS)
    assert pagination["total"] == 8
    assert [(r["tradingAccountId"], r["operationType"]) for r in everything] == [
        *((account_id, r["operationType"]) for r in rows[:-1]),
        (other["tradingAccountId"], "CONNECT"), (account_id, "CONNECT")]

    async def types(params: dict[str, Any], headers: dict[str, str] = ADMIN) -> list[str]:
        found, page = await listed(client, OPERATIONS, params, headers)
        assert page["total"] == len(found)
        return [r["operationType"] for r in found]

    assert await types({"operationType": "ENABLE"}) == ["ENABLE"]
    assert await types({"operationType": "CONNECT"}) == ["CONNECT", "CONNECT"]
    assert await types({"operationType": "CONNECT", "tradingAccountId": account_id}) == [
        "CONNECT"]
    assert await types({"operationType": "LINK"}) == []
    start, end = by_type["DISABLE"]["createdAt"], by_type["CREDENTIAL_ROTATE"]["createdAt"]
    assert await types({"startTime": start, "endTime": end}) == ["ENABLE", "DISABLE"]
    assert await types({"startTime": start, "tradingAccountId": account_id}) == [
        "DISCONNECT", "CREDENTIAL_REVOKE", "CREDENTIAL_ROTATE", "ENABLE", "DISABLE"]
    assert await types({"endTime": by_type["UPDATE"]["createdAt"] + 1,
                        "tradingAccountId": account_id}) == ["UPDATE", "CONNECT"]
    assert await types({"startTime": end, "endTime": start}) == []
    assert await types({"startTime": by_type["DISCONNECT"]["createdAt"] + 1}) == []
    assert await types({"endTime": 0}) == []

    seen: list[str] = []
    for offset, size, has_next in ((0, 3, True), (3, 3, True), (6, 1, False)):
        page_rows, page = await listed(client, OPERATIONS, {
            "tradingAccountId": account_id, "limit": 3, "offset": offset})
        assert len(page_rows) == size
        assert page == {"offset": offset, "limit": 3, "total": 7, "hasNext": has_next}
        seen += [r["operationId"] for r in page_rows]
    assert seen == [r["operationId"] for r in rows]

    mine = auth(Role.TRADER, [uuid.UUID(other["tradingAccountId"])])
    assert await types({}, mine) == ["CONNECT"]
    assert await types({"tradingAccountId": account_id}, mine) == []
    assert await types({}, TRADER) == []
    assert await types({"tradingAccountId": account_id}, VIEWER) == [r["operationType"]
                                                                     for r in rows]


async def test_revoke_and_rotate_record_operations_on_every_connected_account(
    client: Client,
) -> None:
    credential_id = await credential(client, "BYBIT")
    accounts = [(await connect_account(client, [credential_id], external_id))["tradingAccountId"]
                for external_id in ("unified", "spot", "contract")]
    await ok(client, DISCONNECT, {"tradingAccountId": accounts[2]})
    await ok(client, ROTATE, {"credentialId": credential_id, "apiKey": "next"})
    await ok(client, REVOKE, {"credentialId": credential_id})
    for account_id in accounts[:2]:
        assert await operation_types(client, account_id) == [
            "CREDENTIAL_REVOKE", "CREDENTIAL_ROTATE", "CONNECT"]
    assert await operation_types(client, accounts[2]) == ["DISCONNECT", "CONNECT"]
    assert await account_ids(client, {"accountStatus": "INACTIVE"}) == accounts[:2]


# ---------------------------------------------------------------- auth


async def test_trading_account_endpoints_require_a_valid_token_and_the_right_role(
    client: Client, conn: asyncpg.Connection
) -> None:
    credential_id, account = await connected_account(client)
    account_id = account["tradingAccountId"]
    writes = [
        (CONNECT, {"credentialIds": [credential_id], "externalTradingAccountId": "margin"}),
        (DISCONNECT, {"tradingAccountId": account_id}),
        (UPDATE, {"tradingAccountId": account_id, "nickname": "x"}),
        (ENABLE, {"tradingAccountId": account_id}),
        (DISABLE, {"tradingAccountId": account_id}),
    ]
    own_trader = auth(Role.TRADER, [uuid.UUID(account_id)])
    before = await snapshot(conn)
    for path, body in writes:
        status, payload = await post(client, path, body, headers={})
        assert status == 401, path
        assert_error(payload, -101001)
        for headers in ({"Authorization": "Bearer not.a.jwt"}, {"Authorization": "Token abc"}):
            status, payload = await post(client, path, body, headers=headers)
            assert status == 401, path
            assert_error(payload, -101002)
        for headers, role in ((VIEWER, "viewer"), (TRADER, "trader"), (own_trader, "trader")):
            status, payload = await post(client, path, body, headers=headers)
            assert status == 403, (path, role)
            assert_error(payload, -101004)
            assert payload["details"]["required"] == ["admin"]
            assert payload["details"]["provided"] == [role]
    assert await snapshot(conn) == before

    for path in (LIST, OPERATIONS):
        status, payload = await get(client, path, headers={})
        assert status == 401
        assert_error(payload, -101001)
        status, payload = await get(client, path, headers={"Authorization": "Bearer x.y.z"})
        assert status == 401
        assert_error(payload, -101002)
        for headers in (VIEWER, own_trader):
            rows, _ = await listed(client, path, headers=headers)
            assert [r["tradingAccountId"] for r in rows] == [account_id]
