from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from dealer.auth import Role
from dealer.errors import ApiError, ErrorCode, Errors
from dealer.services import dealers
from tests.conftest import ADMIN, TRADER, VIEWER, assert_error, assert_ok, auth
from tests.desk import metric_value
from tests.helpers import (
    assert_moment,
    get,
    insert_exchange_account,
    nothing_written,
    outbox_drained,
    post,
)

DEALER = "/api/v3/fermata/dealer"
CLIENT = "/api/v3/fermata/client"
INVALID_TOKEN = {"Authorization": "Bearer not-a-jwt"}
ALREADY_LINKED_TEXT = "Trading account is already linked to this dealer"
INVALID = Errors.INVALID_REQUEST

# ---------------------------------------------------------------- helpers


async def new_dealer(client: TestClient, **fields: Any) -> dict[str, Any]:
    status, body = await post(client, f"{DEALER}/create", {"symbols": ["BTC/USDT"], **fields})
    assert status == 200, body
    data: dict[str, Any] = assert_ok(body)
    return data


async def new_client(client: TestClient, nickname: str | None = None) -> dict[str, Any]:
    status, body = await post(client, f"{CLIENT}/create",
                              {} if nickname is None else {"nickname": nickname})
    assert status == 200, body
    data: dict[str, Any] = assert_ok(body)
    return data


async def link(client: TestClient, dealer_id: Any, account_id: Any,
               headers: dict[str, str] | None = ADMIN) -> tuple[int, dict[str, Any]]:
    return await post(client, f"{DEALER}/link",
                      {"dealerAccountId": str(dealer_id), "tradingAccountId": str(account_id)},
                      headers)


async def unlink(client: TestClient, dealer_id: Any, account_id: Any,
                 headers: dict[str, str] | None = ADMIN) -> tuple[int, dict[str, Any]]:
    return await post(client, f"{DEALER}/unlink",
                      {"dealerAccountId": str(dealer_id), "tradingAccountId": str(account_id)},
                      headers)


def assert_time_pair(data: dict[str, Any], name: str) -> None:
    assert isinstance(data[name], int)
    assert_moment(data[name], data[f"{name}DateTime"])


def assert_refused(answer: tuple[int, dict[str, Any]], status: int, error: ErrorCode,
                   context: object = None) -> dict[str, Any]:
    """A refusal: the HTTP `status` and the envelope of `error` (`context` names the case in
    a failure); answers the body."""
    code, body = answer
    assert code == status, (context, body)
    assert_error(body, error.errno)
    return body


# ---------------------------------------------------------------- dealer/create


async def test_create_dealer_answers_the_dealer_with_default_config(
    client: TestClient, conn: asyncpg.Connection
) -> None:
    data = await new_dealer(client, nickname="desk one")
    dealer_id = uuid.UUID(data["dealerAccountId"])
    assert data["tradingAccountId"] == data["dealerAccountId"]
    assert data["venue"] == "FERMATA"
    assert data["nickname"] == "desk one"
    assert data["status"] == "ACTIVE"
    assert data["pauseReason"] is None
    assert data["linkedAccounts"] == []
    assert data["config"] == {
        "symbols": ["BTC/USDT"], "spreadBps": "10", "spreadTiers": [],
        "minQuoteNotional": "10", "maxQuoteNotional": "1000000", "quoteTtlMs": 5000,
        "inventorySkewBps": "0", "maxUnhedgedExposure": {}, "maxUnhedgedNotional": "250000",
        "hedgeMode": "IMMEDIATE", "hedgeNettingWindowMs": 1000, "slippageToleranceBps": "20",
        "lastLookBps": None,
    }
    assert_time_pair(data, "createdAt")
    assert_time_pair(data, "updatedAt")

    account = await conn.fetchrow(
        "SELECT * FROM trading_account WHERE trading_account_id = $1", dealer_id)
    assert account is not None
    assert (account["venue"], account["kind"], account["external_trading_account_id"],
            account["account_type"], account["external_account_type"], account["status"]) == (
        "FERMATA", "DEALER", "dealer", "DEALER", "DEALER", "ACTIVE")
    row = await conn.fetchrow("SELECT * FROM dealer WHERE dealer_account_id = $1", dealer_id)
    assert row is not None
    assert row["status"] == "ACTIVE"
    assert json.loads(row["config"]) == data["config"]


async def test_create_dealer_keeps_a_full_config_and_decimal_strings(client: TestClient) -> None:
    config = {
        "symbols": ["BTC/USDT", "ETH/USDT"], "spreadBps": "12.50",
        "spreadTiers": [{"upToNotional": "10000", "spreadBps": "5"},
                        {"upToNotional": "100000", "spreadBps": "8.5"}],
        "minQuoteNotional": "0.5", "maxQuoteNotional": "500000", "quoteTtlMs": 2500,
        "inventorySkewBps": "15", "maxUnhedgedExposure": {"BTC": "2.5", "ETH": "30"},
        "maxUnhedgedNotional": "90000.00", "hedgeMode": "NETTED", "hedgeNettingWindowMs": 250,
        "slippageToleranceBps": "35", "lastLookBps": "2",
    }
    data = await new_dealer(client, **config)
    assert data["config"] == config
    assert data["nickname"] is None
    status, body = await get(client, f"{DEALER}/get", {"dealerAccountId": data["dealerAccountId"]})
    assert status == 200
    assert assert_ok(body)["config"] == config


async def test_create_dealer_refuses_ill_typed_or_missing_fields(
    client: TestClient, conn: asyncpg.Connection
) -> None:
    cases: list[dict[str, Any]] = [
        {},
        {"nickname": "no symbols"},
        {"symbols": []},
        {"symbols": "BTC/USDT"},
        {"symbols": ["btc/usdt"]},
        {"symbols": ["BTC/USDT", "BTC/USDT"]},
        {"symbols": ["BTC/USDT"], "spreadBps": "abc"},
        {"symbols": ["BTC/USDT"], "spreadBps": "-1"},
        {"symbols": ["BTC/USDT"], "spreadBps": 10},
        {"symbols": ["BTC/USDT"], "spreadBps": "10001"},
        {"symbols": ["BTC/USDT"], "quoteTtlMs": "x"},
        {"symbols": ["BTC/USDT"], "quoteTtlMs": 100},
        {"symbols": ["BTC/USDT"], "hedgeMode": "SOMETIMES"},
        {"symbols": ["BTC/USDT"], "hedgeNettingWindowMs": 60001},
        {"symbols": ["BTC/USDT"], "spreadTiers": [{"upToNotional": "500", "spreadBps": "1"},
                                                  {"upToNotional": "100", "spreadBps": "2"}]},
        {"symbols": ["BTC/USDT"], "maxUnhedgedExposure": {"BTC": "-2"}},
        {"symbols": ["BTC/USDT"], "lastLookBps": "fast"},
        {"symbols": ["BTC/USDT"], "nickname": ""},
        {"symbols": ["BTC/USDT"], "nickname": 7},
        {"symbols": ["BTC/USDT"], "dealerAccountId": str(uuid.uuid4())},
        {"symbols": ["BTC/USDT"], "surprise": True},
    ]
    async with nothing_written(conn):
        for case in cases:
            assert_refused(await post(client, f"{DEALER}/create", case), 400, INVALID, case)
        assert_refused(await post(client, f"{DEALER}/create", ["BTC/USDT"]), 400, INVALID)
        resp = await client.post(f"{DEALER}/create", data=b"{not json", headers=ADMIN)
        assert resp.status == 400
        assert_error(await resp.json(), Errors.MALFORMED_JSON.errno)


async def test_create_dealer_error_names_the_field(client: TestClient) -> None:
    status, body = await post(client, f"{DEALER}/create",
                              {"symbols": ["BTC/USDT"], "spreadBps": "abc"})
    assert status == 400
    assert body["details"]["fields"][0]["field"] == "spreadBps"
    assert "decimal string" in body["error"]


async def test_create_dealer_refuses_an_inconsistent_config(
    client: TestClient, conn: asyncpg.Connection
) -> None:
    async with nothing_written(conn):
        body = assert_refused(await post(client, f"{DEALER}/create", {
            "symbols": ["BTC/USDT"], "minQuoteNotional": "5000", "maxQuoteNotional": "5000"}),
            400, Errors.INVALID_DEALER_CONFIG)
        assert "minQuoteNotional must be below maxQuoteNotional" in body["error"]
        assert [f["field"] for f in body["details"]["fields"]] == ["minQuoteNotional",
                                                                   "maxQuoteNotional"]


# ---------------------------------------------------------------- roles on every write


ADMIN_WRITES = [
    f"{DEALER}/create", f"{DEALER}/update", f"{DEALER}/pause", f"{DEALER}/resume",
    f"{DEALER}/link", f"{DEALER}/unlink", f"{CLIENT}/create",
]


async def test_every_write_needs_an_admin_token(
    client: TestClient, conn: asyncpg.Connection
) -> None:
    dealer = await new_dealer(client)
    lp = await insert_exchange_account(conn)
    body = {"dealerAccountId": dealer["dealerAccountId"], "tradingAccountId": str(lp),
            "symbols": ["ETH/USDT"], "nickname": "x"}
    async with nothing_written(conn):
        for path in ADMIN_WRITES:
            assert_refused(await post(client, path, body, headers=None),
                           401, Errors.UNAUTHENTICATED, path)
            assert_refused(await post(client, path, body, headers=INVALID_TOKEN),
                           401, Errors.INVALID_TOKEN, path)
            for headers in (VIEWER, TRADER, auth(Role.TRADER, [lp])):
                answer = assert_refused(await post(client, path, body, headers=headers),
                                        403, Errors.FORBIDDEN, path)
                assert answer["details"]["required"] == ["admin"]


# ---------------------------------------------------------------- dealer/get and dealer/list


async def test_get_dealer_for_every_role(client: TestClient) -> None:
    dealer = await new_dealer(client, nickname="d")
    for headers in (ADMIN, VIEWER, TRADER):
        status, body = await get(client, f"{DEALER}/get",
                                 {"dealerAccountId": dealer["dealerAccountId"]}, headers)
        assert status == 200
        assert assert_ok(body) == dealer


async def test_get_dealer_errors(client: TestClient, conn: asyncpg.Connection) -> None:
    unknown = {"dealerAccountId": str(uuid.uuid4())}
    assert_refused(await get(client, f"{DEALER}/get", unknown), 404, Errors.DEALER_NOT_FOUND)
    # An exchange account or a client is not a dealer.
    lp = await insert_exchange_account(conn)
    customer = await new_client(client)
    for other in (str(lp), customer["tradingAccountId"]):
        assert_refused(await get(client, f"{DEALER}/get", {"dealerAccountId": other}),
                       404, Errors.DEALER_NOT_FOUND, other)
    for params in ({}, {"dealerAccountId": "not-a-uuid"}, {"dealerAccountId": "123"}):
        assert_refused(await get(client, f"{DEALER}/get", params), 400, INVALID, params)
    assert_refused(await get(client, f"{DEALER}/get", unknown, headers=None),
                   401, Errors.UNAUTHENTICATED)


async def test_list_dealers_paginates_and_filters(client: TestClient) -> None:
    ids = [(await new_dealer(client, nickname=f"d{i}"))["dealerAccountId"] for i in range(3)]
    await post(client, f"{DEALER}/pause", {"dealerAccountId": ids[1], "reason": "maintenance"})

    status, body = await get(client, f"{DEALER}/list", {"limit": 2})
    assert status == 200
    assert [d["dealerAccountId"] for d in assert_ok(body)] == ids[:2]
    assert body["pagination"] == {"offset": 0, "limit": 2, "total": 3, "hasNext": True}

    status, body = await get(client, f"{DEALER}/list", {"limit": 2, "offset": 2}, VIEWER)
    assert [d["dealerAccountId"] for d in assert_ok(body)] == ids[2:]
    assert body["pagination"] == {"offset": 2, "limit": 2, "total": 3, "hasNext": False}

    status, body = await get(client, f"{DEALER}/list", {"status": "PAUSED"}, TRADER)
    assert status == 200
    (paused,) = assert_ok(body)
    assert paused["dealerAccountId"] == ids[1]
    assert paused["pauseReason"] == "maintenance"
    assert body["pagination"]["total"] == 1

    status, body = await get(client, f"{DEALER}/list", {"status": "ACTIVE"})
    assert [d["dealerAccountId"] for d in assert_ok(body)] == [ids[0], ids[2]]

    status, body = await get(client, f"{DEALER}/list", {"offset": 10})
    assert assert_ok(body) == []
    assert body["pagination"]["total"] == 3


async def test_list_dealers_errors(client: TestClient) -> None:
    for params in ({"status": "SLEEPING"}, {"limit": 0}, {"limit": 1001}, {"limit": "x"},
                   {"offset": -1}):
        assert_refused(await get(client, f"{DEALER}/list", params), 400, INVALID, params)
    assert_refused(await get(client, f"{DEALER}/list", headers=None), 401, Errors.UNAUTHENTICATED)


# ---------------------------------------------------------------- dealer/update


async def test_update_dealer_changes_only_the_fields_sent(
    client: TestClient, conn: asyncpg.Connection
) -> None:
    dealer = await new_dealer(client, nickname="before", spreadBps="10", lastLookBps="5")
    status, body = await post(client, f"{DEALER}/update", {
        "dealerAccountId": dealer["dealerAccountId"], "spreadBps": "25.5",
        "symbols": ["BTC/USDT", "SOL/USDC"], "hedgeMode": "NETTED", "nickname": "after",
    })
    assert status == 200, body
    data = assert_ok(body)
    assert data["nickname"] == "after"
    expected = {**dealer["config"], "spreadBps": "25.5", "symbols": ["BTC/USDT", "SOL/USDC"],
                "hedgeMode": "NETTED"}
    assert data["config"] == expected
    assert data["createdAt"] == dealer["createdAt"]
    assert data["updatedAt"] >= dealer["updatedAt"]
    stored = await conn.fetchval("SELECT config FROM dealer WHERE dealer_account_id = $1",
                                 uuid.UUID(dealer["dealerAccountId"]))
    assert json.loads(stored) == expected
    operation = await conn.fetchrow(
        "SELECT operation_type, detail FROM trading_account_operation "
        "WHERE trading_account_id = $1", uuid.UUID(dealer["dealerAccountId"]))
    assert operation is not None
    assert operation["operation_type"] == "UPDATE"
    assert json.loads(operation["detail"]) == {
        "config": ["symbols", "spreadBps", "hedgeMode"], "nickname": True}

    # null clears the nickname and turns last look off; other fields stay.
    status, body = await post(client, f"{DEALER}/update", {
        "dealerAccountId": dealer["dealerAccountId"], "nickname": None, "lastLookBps": None})
    data = assert_ok(body)
    assert data["nickname"] is None
    assert data["config"] == {**expected, "lastLookBps": None}


async def test_update_dealer_without_changes_writes_nothing(
    client: TestClient, conn: asyncpg.Connection
) -> None:
    dealer = await new_dealer(client, nickname="same")
    async with nothing_written(conn):
        for body in ({"dealerAccountId": dealer["dealerAccountId"]},
                     {"dealerAccountId": dealer["dealerAccountId"], "spreadBps": "10",
                      "nickname": "same"}):
            status, answer = await post(client, f"{DEALER}/update", body)
            assert status == 200
            assert assert_ok(answer) == dealer


async def test_update_dealer_revalidates_the_merged_config(
    client: TestClient, conn: asyncpg.Connection
) -> None:
    dealer = await new_dealer(client, maxQuoteNotional="1000")
    async with nothing_written(conn):
        # Each field is fine alone; together with the stored maximum the minimum is too large.
        body = assert_refused(await post(client, f"{DEALER}/update", {
            "dealerAccountId": dealer["dealerAccountId"], "minQuoteNotional": "1000",
            "nickname": "not written either"}), 400, Errors.INVALID_DEALER_CONFIG)
        assert "minQuoteNotional must be below maxQuoteNotional" in body["error"]


async def test_update_dealer_refuses_bad_requests(
    client: TestClient, conn: asyncpg.Connection
) -> None:
    dealer = await new_dealer(client)
    dealer_id = dealer["dealerAccountId"]
    cases: list[dict[str, Any]] = [
        {},
        {"spreadBps": "5"},
        {"dealerAccountId": 123, "spreadBps": "5"},
        {"dealerAccountId": "not-a-uuid", "spreadBps": "5"},
        {"dealerAccountId": dealer_id, "spreadBps": "abc"},
        {"dealerAccountId": dealer_id, "spreadBps": None},
        {"dealerAccountId": dealer_id, "quoteTtlMs": "x"},
        {"dealerAccountId": dealer_id, "symbols": []},
        {"dealerAccountId": dealer_id, "symbols": None},
        {"dealerAccountId": dealer_id, "status": "PAUSED"},
        {"dealerAccountId": dealer_id, "config": {"spreadBps": "5"}},
    ]
    async with nothing_written(conn):
        for case in cases:
            assert_refused(await post(client, f"{DEALER}/update", case), 400, INVALID, case)
        assert_refused(await post(client, f"{DEALER}/update",
                                  {"dealerAccountId": str(uuid.uuid4()), "spreadBps": "5"}),
                       404, Errors.DEALER_NOT_FOUND)


async def test_update_dealer_schema_allows_null_only_where_the_update_takes_it(
    client: TestClient,
) -> None:
    _, document = await get(client, "/api/v3/openapi.json", headers=None)
    properties = document["components"]["schemas"]["UpdateDealerBody"]["properties"]
    for name in ("nickname", "lastLookBps"):  # null clears it; omitted keeps it: no default
        assert {"type": "null"} in properties[name]["anyOf"]
        assert "default" not in properties[name]
    others = set(properties) - {"nickname", "lastLookBps"}
    assert others >= {"dealerAccountId", "spreadBps", "symbols", "quoteTtlMs", "spreadTiers"}
    for name in others:
        # May be omitted (unchanged), never null: refused with -100001, so not documented.
        assert "null" not in json.dumps(properties[name]), (name, properties[name])
    assert properties["spreadBps"]["type"] == "string"
    assert properties["quoteTtlMs"] == {"maximum": 60000, "minimum": 500,
                                        "title": "Quotettlms", "type": "integer"}


# ---------------------------------------------------------------- dealer/pause and dealer/resume


async def test_pause_and_resume_are_idempotent(
    client: TestClient, conn: asyncpg.Connection
) -> None:
    dealer = await new_dealer(client)
    dealer_id = dealer["dealerAccountId"]
    status, body = await post(client, f"{DEALER}/pause",
                              {"dealerAccountId": dealer_id, "reason": "  exposure review  "})
    assert status == 200
    paused = assert_ok(body)
    assert (paused["status"], paused["pauseReason"]) == ("PAUSED", "exposure review")

    async with nothing_written(conn):
        for again in ({"dealerAccountId": dealer_id},
                      {"dealerAccountId": dealer_id, "reason": "exposure review"}):
            status, body = await post(client, f"{DEALER}/pause", again)
            assert status == 200
            assert assert_ok(body) == paused

    status, body = await post(client, f"{DEALER}/pause",
                              {"dealerAccountId": dealer_id, "reason": "venue outage"})
    assert assert_ok(body)["pauseReason"] == "venue outage"

    status, body = await post(client, f"{DEALER}/resume", {"dealerAccountId": dealer_id})
    assert status == 200
    resumed = assert_ok(body)
    assert (resumed["status"], resumed["pauseReason"]) == ("ACTIVE", None)
    row = await conn.fetchrow(
        "SELECT status, pause_reason FROM dealer WHERE dealer_account_id = $1",
        uuid.UUID(dealer_id))
    assert row is not None
    assert tuple(row) == ("ACTIVE", None)

    async with nothing_written(conn):
        status, body = await post(client, f"{DEALER}/resume", {"dealerAccountId": dealer_id})
        assert assert_ok(body) == resumed
    # Each change (not the repeats) is in the dealer's operation history.
    history = [(r["operation_type"], json.loads(r["detail"])) for r in await conn.fetch(
        """SELECT operation_type, detail FROM trading_account_operation
           WHERE trading_account_id = $1 AND operation_type IN ('PAUSE', 'RESUME')
           ORDER BY created_at""", uuid.UUID(dealer_id))]
    assert history == [
        ("PAUSE", {"by": "manual", "reason": "exposure review", "previousStatus": "ACTIVE",
                   "previousPausedBy": None}),
        ("PAUSE", {"by": "manual", "reason": "venue outage", "previousStatus": "PAUSED",
                   "previousPausedBy": "manual"}),
        ("RESUME", {"previousPausedBy": "manual", "previousReason": "venue outage"})]


async def test_pause_without_reason(client: TestClient) -> None:
    dealer = await new_dealer(client)
    status, body = await post(client, f"{DEALER}/pause",
                              {"dealerAccountId": dealer["dealerAccountId"]})
    assert status == 200
    data = assert_ok(body)
    assert (data["status"], data["pauseReason"]) == ("PAUSED", None)


async def test_pause_and_resume_errors(client: TestClient, conn: asyncpg.Connection) -> None:
    await new_dealer(client)
    async with nothing_written(conn):
        for path in (f"{DEALER}/pause", f"{DEALER}/resume"):
            assert_refused(await post(client, path, {"dealerAccountId": str(uuid.uuid4())}),
                           404, Errors.DEALER_NOT_FOUND, path)
            for case in ({}, {"dealerAccountId": 123}, {"dealerAccountId": "not-a-uuid"}):
                assert_refused(await post(client, path, case), 400, INVALID, (path, case))
        for reason in ("", "   ", 5, "x" * 501):
            assert_refused(await post(client, f"{DEALER}/pause",
                                      {"dealerAccountId": str(uuid.uuid4()), "reason": reason}),
                           400, INVALID, reason)
        assert_refused(await post(client, f"{DEALER}/resume",
                                  {"dealerAccountId": str(uuid.uuid4()), "reason": "x"}),
                       400, INVALID)


# ---------------------------------------------------------------- client/create and client/list


async def test_create_client(client: TestClient, conn: asyncpg.Connection) -> None:
    data = await new_client(client, nickname="alice")
    assert data["venue"] == "FERMATA"
    assert data["externalTradingAccountId"] == "client"
    assert data["accountType"] == "CLIENT"
    assert data["externalAccountType"] == "CLIENT"
    assert data["nickname"] == "alice"
    assert data["status"] == "ACTIVE"
    assert data["credentials"] == []
    assert_time_pair(data, "createdAt")
    row = await conn.fetchrow(
        "SELECT kind, venue FROM trading_account WHERE trading_account_id = $1",
        uuid.UUID(data["tradingAccountId"]))
    assert row is not None
    assert tuple(row) == ("CLIENT", "FERMATA")
    anonymous = await new_client(client)
    assert anonymous["nickname"] is None


async def test_create_client_refuses_bad_requests(
    client: TestClient, conn: asyncpg.Connection
) -> None:
    async with nothing_written(conn):
        for case in ({"nickname": 42}, {"nickname": ""}, {"nickname": "x" * 101},
                     {"venue": "BINANCE"}):
            assert_refused(await post(client, f"{CLIENT}/create", case), 400, INVALID, case)


async def test_list_clients_by_role(client: TestClient, conn: asyncpg.Connection) -> None:
    ids = [(await new_client(client, nickname=f"c{i}"))["tradingAccountId"] for i in range(3)]
    # Dealers and exchange accounts are not clients.
    await new_dealer(client)
    await insert_exchange_account(conn)
    await conn.execute("UPDATE trading_account SET status = 'INACTIVE' "
                       "WHERE trading_account_id = $1", uuid.UUID(ids[2]))

    for headers in (ADMIN, VIEWER):
        status, body = await get(client, f"{CLIENT}/list", headers=headers)
        assert status == 200
        assert [c["tradingAccountId"] for c in assert_ok(body)] == ids
        assert body["pagination"] == {"offset": 0, "limit": 50, "total": 3, "hasNext": False}

    status, body = await get(client, f"{CLIENT}/list", {"limit": 1, "offset": 1})
    assert [c["tradingAccountId"] for c in assert_ok(body)] == [ids[1]]
    assert body["pagination"] == {"offset": 1, "limit": 1, "total": 3, "hasNext": True}

    status, body = await get(client, f"{CLIENT}/list", {"status": "INACTIVE"})
    assert [c["tradingAccountId"] for c in assert_ok(body)] == [ids[2]]

    trader = auth(Role.TRADER, [uuid.UUID(ids[0]), uuid.UUID(ids[2]), uuid.uuid4()])
    status, body = await get(client, f"{CLIENT}/list", headers=trader)
    assert status == 200
    assert [c["tradingAccountId"] for c in assert_ok(body)] == [ids[0], ids[2]]
    assert body["pagination"]["total"] == 2

    status, body = await get(client, f"{CLIENT}/list", headers=TRADER)
    assert assert_ok(body) == []
    assert body["pagination"]["total"] == 0


async def test_list_clients_errors(client: TestClient) -> None:
    for params in ({"status": "HAPPY"}, {"limit": 0}, {"offset": "x"}):
        assert_refused(await get(client, f"{CLIENT}/list", params), 400, INVALID, params)
    assert_refused(await get(client, f"{CLIENT}/list", headers=None), 401, Errors.UNAUTHENTICATED)


# ---------------------------------------------------------------- dealer/link


async def test_link_answers_ok_and_opens_the_exchange_wallet(
    client: TestClient, conn: asyncpg.Connection
) -> None:
    dealer = await new_dealer(client)
    dealer_id = uuid.UUID(dealer["dealerAccountId"])
    lp = await insert_exchange_account(conn, venue="OKX")

    resp = await client.post(f"{DEALER}/link", headers=ADMIN,
                             json={"dealerAccountId": str(dealer_id), "tradingAccountId": str(lp)})
    assert resp.status == 200
    assert await resp.json() == {"data": "ok", "success": True, "errno": 0, "error": None}

    link_row = await conn.fetchrow("SELECT * FROM dealer_link WHERE trading_account_id = $1", lp)
    assert link_row is not None
    assert link_row["dealer_account_id"] == dealer_id
    operations = await conn.fetch(
        "SELECT operation_type, status, detail FROM trading_account_operation "
        "WHERE trading_account_id = $1", lp)
    assert [(o["operation_type"], o["status"]) for o in operations] == [("LINK", "COMPLETED")]
    assert json.loads(operations[0]["detail"]) == {
        "dealerAccountId": str(dealer_id), "ledgerAccount": f"exchange:{lp}"}
    await outbox_drained(conn)
    ledger = await conn.fetchrow("SELECT * FROM ledger_account WHERE address = $1",
                                 f"exchange:{lp}")
    assert ledger is not None
    metadata = json.loads(ledger["metadata"])
    assert metadata["dealerAccountId"] == str(dealer_id)
    assert metadata["venue"] == "OKX"
    linked_at = dt.datetime.fromisoformat(metadata["linkedAt"].replace("Z", "+00:00"))
    assert abs(linked_at - link_row["linked_at"]) < dt.timedelta(milliseconds=1)

    status, body = await get(client, f"{DEALER}/get", {"dealerAccountId": str(dealer_id)})
    assert status == 200
    assert assert_ok(body)["linkedAccounts"] == [str(lp)]
    assert await metric_value(client, 'dealer_lp_link_changes_total{action="link"}') == 1.0


async def test_link_twice_answers_already_linked_exactly(
    client: TestClient, conn: asyncpg.Connection
) -> None:
    dealer = await new_dealer(client)
    lp = await insert_exchange_account(conn)
    status, body = await link(client, dealer["dealerAccountId"], lp)
    assert (status, body["data"]) == (200, "ok")
    async with nothing_written(conn):

        status, body = await link(client, dealer["dealerAccountId"], lp)
        assert status == 400
        assert_error(body, -130007)
        assert body["data"] is None
        assert body["success"] is False
        assert body["error"] == ALREADY_LINKED_TEXT
        assert body["details"]["code"] == "ALREADY_LINKED"
    assert await metric_value(client, 'dealer_lp_link_changes_total{action="link"}') == 1.0


@pytest.mark.parametrize("account_status",
                         ["INACTIVE", "DISCONNECTED", "SUSPENDED", "SETUP", "LOCKED", "DELETED"])
async def test_link_refuses_an_account_that_is_not_active(
    client: TestClient, conn: asyncpg.Connection, account_status: str
) -> None:
    dealer = await new_dealer(client)
    lp = await insert_exchange_account(conn, status=account_status)
    async with nothing_written(conn):
        body = assert_refused(await link(client, dealer["dealerAccountId"], lp),
                              400, Errors.ACCOUNT_NOT_ACTIVE)
        assert account_status in body["error"]


async def test_link_refuses_fermata_accounts(client: TestClient, conn: asyncpg.Connection) -> None:
    dealer = await new_dealer(client)
    other_dealer = await new_dealer(client)
    customer = await new_client(client)
    async with nothing_written(conn):
        for account in (customer["tradingAccountId"], dealer["dealerAccountId"],
                        other_dealer["dealerAccountId"]):
            assert_refused(await link(client, dealer["dealerAccountId"], account),
                           400, Errors.NOT_EXCHANGE_ACCOUNT, account)


async def test_link_unknown_dealer_or_account_is_404(
    client: TestClient, conn: asyncpg.Connection
) -> None:
    dealer = await new_dealer(client)
    lp = await insert_exchange_account(conn)
    customer = await new_client(client)
    async with nothing_written(conn):
        for dealer_id in (uuid.uuid4(), lp, customer["tradingAccountId"]):
            assert_refused(await link(client, dealer_id, lp),
                           404, Errors.DEALER_NOT_FOUND, dealer_id)
        assert_refused(await link(client, dealer["dealerAccountId"], uuid.uuid4()),
                       404, Errors.TRADING_ACCOUNT_NOT_FOUND)


async def test_link_refuses_an_account_linked_to_another_dealer(
    client: TestClient, conn: asyncpg.Connection
) -> None:
    first = await new_dealer(client)
    second = await new_dealer(client)
    lp = await insert_exchange_account(conn)
    status, _ = await link(client, first["dealerAccountId"], lp)
    assert status == 200
    async with nothing_written(conn):
        assert_refused(await link(client, second["dealerAccountId"], lp),
                       400, Errors.LINKED_TO_OTHER_DEALER)


async def test_link_refuses_missing_or_ill_typed_fields(
    client: TestClient, conn: asyncpg.Connection
) -> None:
    dealer = await new_dealer(client)
    dealer_id = dealer["dealerAccountId"]
    lp = str(await insert_exchange_account(conn))
    cases: list[Any] = [
        {},
        {"dealerAccountId": dealer_id},
        {"tradingAccountId": lp},
        {"dealerAccountId": 123, "tradingAccountId": lp},
        {"dealerAccountId": dealer_id, "tradingAccountId": "not-a-uuid"},
        {"dealerAccountId": dealer_id, "tradingAccountId": None},
        {"dealerAccountId": dealer_id, "tradingAccountId": lp, "force": True},
        [dealer_id, lp],
    ]
    async with nothing_written(conn):
        for case in cases:
            assert_refused(await post(client, f"{DEALER}/link", case), 400, INVALID, case)


async def test_concurrent_identical_links_succeed_once(
    client: TestClient, conn: asyncpg.Connection
) -> None:
    dealer = await new_dealer(client)
    lp = await insert_exchange_account(conn)
    answers = await asyncio.gather(
        *(link(client, dealer["dealerAccountId"], lp) for _ in range(20)))
    oks = [body for status, body in answers if status == 200]
    refusals = [body for status, body in answers if status != 200]
    assert len(oks) == 1
    assert oks[0]["data"] == "ok"
    assert len(refusals) == 19
    for body in refusals:
        assert_error(body, -130007)
        assert body["error"] == ALREADY_LINKED_TEXT
    assert await conn.fetchval("SELECT count(*) FROM dealer_link") == 1
    assert await conn.fetchval(
        "SELECT count(*) FROM trading_account_operation WHERE operation_type = 'LINK'") == 1
    await outbox_drained(conn)
    assert await conn.fetchval("SELECT count(*) FROM ledger_account") == 1


async def test_concurrent_links_of_one_account_to_many_dealers(
    client: TestClient, conn: asyncpg.Connection
) -> None:
    dealer_ids = [(await new_dealer(client))["dealerAccountId"] for _ in range(8)]
    lp = await insert_exchange_account(conn)
    answers = await asyncio.gather(*(link(client, d, lp) for d in dealer_ids))
    assert sorted(status for status, _ in answers) == [200] + [400] * 7
    for status, body in answers:
        if status == 400:
            assert_error(body, Errors.LINKED_TO_OTHER_DEALER.errno)
    assert await conn.fetchval("SELECT count(*) FROM dealer_link") == 1


async def test_the_link_constraint_violation_becomes_the_precise_error(
    client: TestClient, conn: asyncpg.Connection
) -> None:
    first = await new_dealer(client)
    second = await new_dealer(client)
    lp = await insert_exchange_account(conn)
    await link(client, first["dealerAccountId"], lp)
    now = dt.datetime.now(dt.UTC)
    for dealer_id, error in ((first["dealerAccountId"], Errors.ALREADY_LINKED),
                             (second["dealerAccountId"], Errors.LINKED_TO_OTHER_DEALER)):
        async with conn.transaction():
            with pytest.raises(ApiError) as caught:
                await dealers.insert_link(conn, uuid.UUID(dealer_id), lp, now)
            assert caught.value.error is error
            # The savepoint kept the transaction usable.
            assert await conn.fetchval("SELECT count(*) FROM dealer_link") == 1


# ---------------------------------------------------------------- dealer/unlink


async def test_unlink_then_relink(client: TestClient, conn: asyncpg.Connection) -> None:
    dealer = await new_dealer(client)
    dealer_id = dealer["dealerAccountId"]
    lp = await insert_exchange_account(conn)
    assert (await link(client, dealer_id, lp))[0] == 200

    status, body = await unlink(client, dealer_id, lp)
    assert status == 200
    assert body == {"data": "ok", "success": True, "errno": 0, "error": None}
    assert await conn.fetchval("SELECT count(*) FROM dealer_link") == 0
    # The ledger account and its history stay.
    await outbox_drained(conn)
    assert await conn.fetchval("SELECT count(*) FROM ledger_account WHERE address = $1",
                               f"exchange:{lp}") == 1
    status, body = await get(client, f"{DEALER}/get", {"dealerAccountId": dealer_id})
    assert assert_ok(body)["linkedAccounts"] == []

    status, body = await link(client, dealer_id, lp)
    assert (status, body["data"]) == (200, "ok")
    types = [r["operation_type"] for r in await conn.fetch(
        "SELECT operation_type FROM trading_account_operation WHERE trading_account_id = $1 "
        "ORDER BY created_at, operation_type DESC", lp)]
    assert types == ["LINK", "UNLINK", "LINK"]
    await outbox_drained(conn)
    assert await conn.fetchval("SELECT count(*) FROM ledger_account") == 1
    assert await metric_value(client, 'dealer_lp_link_changes_total{action="link"}') == 2.0
    assert await metric_value(client, 'dealer_lp_link_changes_total{action="unlink"}') == 1.0

    # Once unlinked, the account may serve another dealer.
    other = await new_dealer(client)
    assert (await unlink(client, dealer_id, lp))[0] == 200
    assert (await link(client, other["dealerAccountId"], lp))[0] == 200
    await outbox_drained(conn)
    metadata = json.loads(await conn.fetchval(
        "SELECT metadata FROM ledger_account WHERE address = $1", f"exchange:{lp}"))
    assert metadata["dealerAccountId"] == other["dealerAccountId"]


async def test_unlink_errors(client: TestClient, conn: asyncpg.Connection) -> None:
    dealer = await new_dealer(client)
    other = await new_dealer(client)
    dealer_id = dealer["dealerAccountId"]
    lp = await insert_exchange_account(conn)
    never_linked = await insert_exchange_account(conn)
    assert (await link(client, other["dealerAccountId"], lp))[0] == 200

    async with nothing_written(conn):
        for account in (lp, never_linked):
            assert_refused(await unlink(client, dealer_id, account),
                           404, Errors.NOT_LINKED, account)
        assert_refused(await unlink(client, uuid.uuid4(), lp), 404, Errors.DEALER_NOT_FOUND)
        assert_refused(await unlink(client, dealer_id, uuid.uuid4()),
                       404, Errors.TRADING_ACCOUNT_NOT_FOUND)
        for case in ({}, {"dealerAccountId": dealer_id}, {"tradingAccountId": str(lp)},
                     {"dealerAccountId": 123, "tradingAccountId": str(lp)},
                     {"dealerAccountId": dealer_id, "tradingAccountId": "not-a-uuid"}):
            assert_refused(await post(client, f"{DEALER}/unlink", case), 400, INVALID, case)
    assert await metric_value(client, 'dealer_lp_link_changes_total{action="unlink"}') == 0.0


# ---------------------------------------------------------------- dealer/listLinks


async def test_list_links(client: TestClient, conn: asyncpg.Connection) -> None:
    dealer = await new_dealer(client)
    dealer_id = dealer["dealerAccountId"]
    other = await new_dealer(client)
    lps = [await insert_exchange_account(conn, venue=v) for v in ("BINANCE", "OKX", "BYBIT")]
    for lp in lps:
        assert (await link(client, dealer_id, lp))[0] == 200
    foreign = await insert_exchange_account(conn)
    assert (await link(client, other["dealerAccountId"], foreign))[0] == 200

    for headers in (ADMIN, VIEWER):
        status, body = await get(client, f"{DEALER}/listLinks", {"dealerAccountId": dealer_id},
                                 headers)
        assert status == 200
        links = assert_ok(body)
        assert [x["tradingAccountId"] for x in links] == [str(lp) for lp in lps]
        assert body["pagination"] == {"offset": 0, "limit": 50, "total": 3, "hasNext": False}
    first = links[0]
    assert set(first) == {"dealerAccountId", "tradingAccountId", "venue",
                          "externalTradingAccountId", "nickname", "status", "ledgerAccount",
                          "draining", "state", "linkedAt", "linkedAtDateTime"}
    assert (first["draining"], first["state"]) == (False, "LINKED")
    assert first["dealerAccountId"] == dealer_id
    assert first["venue"] == "BINANCE"
    assert first["externalTradingAccountId"] == "spot"
    assert first["nickname"] == "binance spot"
    assert first["status"] == "ACTIVE"
    assert first["ledgerAccount"] == f"exchange:{lps[0]}"
    assert_time_pair(first, "linkedAt")

    status, body = await get(client, f"{DEALER}/listLinks",
                             {"dealerAccountId": dealer_id, "limit": 2, "offset": 1})
    assert [x["tradingAccountId"] for x in assert_ok(body)] == [str(lps[1]), str(lps[2])]
    assert body["pagination"] == {"offset": 1, "limit": 2, "total": 3, "hasNext": False}

    fresh = await new_dealer(client)
    status, body = await get(client, f"{DEALER}/listLinks",
                             {"dealerAccountId": fresh["dealerAccountId"]})
    assert assert_ok(body) == []
    assert body["pagination"]["total"] == 0


async def test_list_links_errors(client: TestClient) -> None:
    dealer = await new_dealer(client)
    assert_refused(await get(client, f"{DEALER}/listLinks", {"dealerAccountId": str(uuid.uuid4())}),
                   404, Errors.DEALER_NOT_FOUND)
    for params in ({}, {"dealerAccountId": "not-a-uuid"},
                   {"dealerAccountId": dealer["dealerAccountId"], "limit": 0}):
        assert_refused(await get(client, f"{DEALER}/listLinks", params), 400, INVALID, params)
    params = {"dealerAccountId": dealer["dealerAccountId"]}
    assert_refused(await get(client, f"{DEALER}/listLinks", params, headers=TRADER),
                   403, Errors.FORBIDDEN)
    assert_refused(await get(client, f"{DEALER}/listLinks", params, headers=None),
                   401, Errors.UNAUTHENTICATED)


async def test_openapi_documents_the_link_errnos(client: TestClient) -> None:
    status, document = await get(client, "/api/v3/openapi.json", headers=None)
    assert status == 200
    operation = document["paths"]["/api/v3/fermata/dealer/link"]["post"]
    assert operation["x-roles"] == ["admin"]
    errnos_400 = {e["errno"] for e in operation["responses"]["400"]["x-errnos"]}
    assert {-130003, -130004, -130006, -130007, -100001} <= errnos_400
    errnos_404 = {e["errno"] for e in operation["responses"]["404"]["x-errnos"]}
    assert errnos_404 == {-130001, -120001}
