"""The Formance Ledger v2 emulator keeps the real server's rules, seen through the real SDK.

formance-sdk-python talks HTTP to the emulator; nothing of the SDK is replaced.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from formance_sdk_python import SDK
from formance_sdk_python.ledger_v2 import LedgerV2
from formance_sdk_python.models import errors as sdk_errors
from formance_sdk_python.models import ledger as models
from formance_sdk_python.models import operations, shared

from tests.fakes.formance import (
    API,
    ERROR_CODES,
    FormanceEmulator,
    RunningEmulator,
    address_matches,
    running_emulator,
)

LEDGER = "main"
# The SDK reads its own deprecated `order` field when it builds a list request.
pytestmark = pytest.mark.filterwarnings(
    "ignore::DeprecationWarning:formance_sdk_python.utils.queryparams")


@pytest.fixture
async def served() -> AsyncIterator[RunningEmulator]:
    async with running_emulator() as running:
        running.emulator.add_ledger(LEDGER)
        yield running


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
def v2(served: RunningEmulator, http: httpx.AsyncClient) -> LedgerV2:
    return SDK(server_url=served.url, async_client=http).ledger.v2


def posting(source: str, destination: str, amount: int, asset: str = "USD/2") -> models.V2Posting:
    return models.V2Posting(source=source, destination=destination, amount=amount, asset=asset)


def create_request(*postings: models.V2Posting, reference: str | None = None,
                   key: str | None = None, force: bool | None = None,
                   ledger: str = LEDGER, metadata: dict[str, str] | None = None,
                   body_force: bool | None = None,
                   ) -> operations.V2CreateTransactionRequest:
    return operations.V2CreateTransactionRequest(
        ledger=ledger, idempotency_key=key, force=force,
        v2_post_transaction=models.V2PostTransaction(
            postings=list(postings), metadata=metadata or {}, reference=reference,
            force=body_force))


def tx_element(*postings: models.V2Posting, reference: str | None = None,
               ik: str | None = None) -> models.V2BulkElementCreateTransaction:
    return models.V2BulkElementCreateTransaction(
        action="CREATE_TRANSACTION", ik=ik,
        data=models.V2PostTransaction(postings=list(postings), metadata={},
                                      reference=reference))


async def bulk(v2: LedgerV2, elements: list[Any], **options: bool
               ) -> operations.V2CreateBulkResponse:
    return await v2.create_bulk_async(request=operations.V2CreateBulkRequest(
        ledger=LEDGER, request_body=elements,
        continue_on_failure=options.get("continue_on_failure"),
        atomic=options.get("atomic")))


async def expect_error(call: Any) -> models.ErrorsV2ErrorResponse:
    with pytest.raises(models.ErrorsV2ErrorResponse) as caught:
        await call
    return caught.value


# ---------------------------------------------------------------- create transaction


async def test_create_answers_200_with_the_transaction_and_volumes(v2: LedgerV2) -> None:
    when = dt.datetime(2026, 3, 1, 12, 30, tzinfo=dt.UTC)
    request = operations.V2CreateTransactionRequest(
        ledger=LEDGER, v2_post_transaction=models.V2PostTransaction(
            postings=[posting("world", "dealer:d1", 1500)], metadata={"kind": "seed"},
            reference="ref-1", timestamp=when))

    response = await v2.create_transaction_async(request=request)

    assert response.status_code == 200
    assert "idempotency-hit" not in response.raw_response.headers
    assert response.v2_create_transaction_response is not None
    tx = response.v2_create_transaction_response.data
    assert tx.id == 1
    assert tx.reference == "ref-1"
    assert tx.metadata == {"kind": "seed"}
    assert tx.timestamp == when
    assert [(p.source, p.destination, p.amount, p.asset) for p in tx.postings] == [
        ("world", "dealer:d1", 1500, "USD/2")]
    assert tx.post_commit_volumes is not None
    assert tx.post_commit_volumes["dealer:d1"]["USD/2"].balance == 1500
    assert tx.post_commit_volumes["world"]["USD/2"].output == 1500
    assert tx.pre_commit_volumes is not None
    assert tx.pre_commit_volumes["dealer:d1"]["USD/2"].balance == 0


async def test_same_idempotency_key_and_body_replays_with_the_hit_header(
        v2: LedgerV2, served: RunningEmulator) -> None:
    request = create_request(posting("world", "a:1", 10), reference="r", key="k1")
    first = await v2.create_transaction_async(request=request)

    again = await v2.create_transaction_async(request=request)

    assert again.status_code == 200
    assert again.raw_response.headers["Idempotency-Hit"] == "true"
    assert again.v2_create_transaction_response == first.v2_create_transaction_response
    assert len(served.emulator.ledger(LEDGER).transactions) == 1


async def test_reused_idempotency_key_with_another_body_is_400_validation(
        v2: LedgerV2, served: RunningEmulator) -> None:
    await v2.create_transaction_async(
        request=create_request(posting("world", "a:1", 10), reference="r", key="k1"))

    error = await expect_error(v2.create_transaction_async(
        request=create_request(posting("world", "a:1", 11), reference="r", key="k1")))

    assert error.status_code == 400
    assert error.data.error_code is models.V2ErrorsEnum.VALIDATION
    assert len(served.emulator.ledger(LEDGER).transactions) == 1


async def test_force_is_part_of_the_idempotent_input(v2: LedgerV2) -> None:
    await v2.create_transaction_async(
        request=create_request(posting("world", "a:1", 10), key="k", force=True))

    # The same input, with force in the body instead of the query: still the same input.
    same = await v2.create_transaction_async(
        request=create_request(posting("world", "a:1", 10), key="k", body_force=True))
    other = await expect_error(v2.create_transaction_async(
        request=create_request(posting("world", "a:1", 10), key="k")))

    assert same.raw_response.headers["Idempotency-Hit"] == "true"
    assert other.data.error_code is models.V2ErrorsEnum.VALIDATION


async def test_duplicate_reference_with_a_new_key_is_409_conflict(
        v2: LedgerV2, served: RunningEmulator) -> None:
    await v2.create_transaction_async(
        request=create_request(posting("world", "a:1", 10), reference="r", key="k1"))

    error = await expect_error(v2.create_transaction_async(
        request=create_request(posting("world", "a:1", 10), reference="r", key="k2")))
    without_key = await expect_error(v2.create_transaction_async(
        request=create_request(posting("world", "a:1", 10), reference="r")))

    assert error.status_code == 409
    assert error.data.error_code is models.V2ErrorsEnum.CONFLICT
    assert without_key.status_code == 409
    assert len(served.emulator.ledger(LEDGER).transactions) == 1


async def test_a_failed_create_consumes_neither_key_nor_id(
        v2: LedgerV2, served: RunningEmulator) -> None:
    await expect_error(v2.create_transaction_async(
        request=create_request(posting("a:1", "b:1", 10), reference="r", key="k")))

    created = await v2.create_transaction_async(
        request=create_request(posting("a:1", "b:1", 10), reference="r", key="k", force=True))

    assert "idempotency-hit" not in created.raw_response.headers
    assert created.v2_create_transaction_response is not None
    assert created.v2_create_transaction_response.data.id == 1


async def test_unknown_ledger_is_404_ledger_not_found(v2: LedgerV2) -> None:
    error = await expect_error(v2.create_transaction_async(
        request=create_request(posting("world", "a:1", 1), ledger="nope")))
    listing = await expect_error(v2.list_transactions_async(
        request=operations.V2ListTransactionsRequest(ledger="nope", request_body={})))
    read = await expect_error(v2.get_ledger_async(
        request=operations.V2GetLedgerRequest(ledger="nope")))

    assert error.status_code == 404
    assert error.data.error_code is models.V2ErrorsEnum.LEDGER_NOT_FOUND
    assert listing.data.error_code is models.V2ErrorsEnum.LEDGER_NOT_FOUND
    assert read.status_code == 404
    assert read.data.error_code is models.V2ErrorsEnum.NOT_FOUND


async def test_unknown_account_is_404_not_found(v2: LedgerV2) -> None:
    error = await expect_error(v2.get_account_async(
        request=operations.V2GetAccountRequest(ledger=LEDGER, address="nobody:1")))

    assert error.status_code == 404
    assert error.data.error_code is models.V2ErrorsEnum.NOT_FOUND


async def test_a_source_going_negative_is_insufficient_fund_unless_forced(
        v2: LedgerV2, served: RunningEmulator) -> None:
    await v2.create_transaction_async(request=create_request(posting("world", "a:1", 5)))

    short = await expect_error(v2.create_transaction_async(
        request=create_request(posting("a:1", "b:1", 6))))
    # Postings run in order: what a:1 receives first it may send on.
    chained = await v2.create_transaction_async(request=create_request(
        posting("world", "a:1", 1), posting("a:1", "b:1", 6)))
    forced_query = await v2.create_transaction_async(
        request=create_request(posting("a:1", "b:1", 7), force=True))
    forced_body = await v2.create_transaction_async(
        request=create_request(posting("a:1", "b:1", 1), body_force=True))

    assert short.status_code == 400
    assert short.data.error_code is models.V2ErrorsEnum.INSUFFICIENT_FUND
    assert chained.status_code == forced_query.status_code == forced_body.status_code == 200
    assert served.emulator.balance(LEDGER, "a:1", "USD/2") == -8
    assert served.emulator.balance(LEDGER, "world", "USD/2") == -6


async def test_postings_are_validated_and_required(v2: LedgerV2) -> None:
    negative = await expect_error(v2.create_transaction_async(
        request=create_request(posting("world", "a:1", -1))))
    bad_address = await expect_error(v2.create_transaction_async(
        request=create_request(posting("world", "a:1:", 1))))
    bad_asset = await expect_error(v2.create_transaction_async(
        request=create_request(posting("world", "a:1", 1, asset="usd/2"))))
    empty = await expect_error(v2.create_transaction_async(request=create_request()))

    for error in (negative, bad_address, bad_asset):
        assert error.status_code == 400
        assert error.data.error_code is models.V2ErrorsEnum.VALIDATION
    assert empty.data.error_code is models.V2ErrorsEnum.NO_POSTINGS


async def test_error_bodies_are_error_code_and_message_only(
        served: RunningEmulator, http: httpx.AsyncClient) -> None:
    answers = [
        await http.post(f"{served.url}{API}/{LEDGER}/transactions", content=b"{not json"),
        await http.post(f"{served.url}{API}/nope/transactions", json={}),
        await http.get(f"{served.url}{API}/{LEDGER}/accounts/x"),
        await http.post(f"{served.url}{API}/{LEDGER}/transactions", json={
            "postings": [{"source": "a", "destination": "b", "amount": 1, "asset": "X"}]}),
    ]

    assert [a.status_code for a in answers] == [400, 404, 404, 400]
    for answer in answers:
        assert answer.headers["Content-Type"].startswith("application/json")
        body = answer.json()
        assert set(body) == {"errorCode", "errorMessage"}
        assert body["errorCode"] in ERROR_CODES
        assert body["errorMessage"]


# ---------------------------------------------------------------- ledgers and accounts


async def test_create_ledger_then_again_is_ledger_already_exists(v2: LedgerV2) -> None:
    request = operations.V2CreateLedgerRequest(
        ledger="second", v2_create_ledger_request=models.V2CreateLedgerRequest(
            metadata={"owner": "tests"}))

    created = await v2.create_ledger_async(request=request)
    again = await expect_error(v2.create_ledger_async(request=request))
    read = await v2.get_ledger_async(request=operations.V2GetLedgerRequest(ledger="second"))
    info = await v2.get_ledger_info_async(
        request=operations.V2GetLedgerInfoRequest(ledger="second"))

    assert created.status_code == 204
    assert again.status_code == 400
    assert again.data.error_code is models.V2ErrorsEnum.LEDGER_ALREADY_EXISTS
    assert read.v2_get_ledger_response is not None
    assert read.v2_get_ledger_response.data.name == "second"
    assert read.v2_get_ledger_response.data.metadata == {"owner": "tests"}
    assert info.v2_ledger_info_response is not None
    assert info.v2_ledger_info_response.data is not None
    assert info.v2_ledger_info_response.data.name == "second"


async def test_account_metadata_creates_the_account_and_merges(v2: LedgerV2) -> None:
    def add(metadata: dict[str, str], key: str | None = None
            ) -> operations.V2AddMetadataToAccountRequest:
        return operations.V2AddMetadataToAccountRequest(
            ledger=LEDGER, address="exchange:e1", request_body=metadata, idempotency_key=key)

    first = await v2.add_metadata_to_account_async(request=add({"venue": "paper"}, "m1"))
    replay = await v2.add_metadata_to_account_async(request=add({"venue": "paper"}, "m1"))
    reused = await expect_error(v2.add_metadata_to_account_async(request=add({"v": "x"}, "m1")))
    await v2.add_metadata_to_account_async(request=add({"dealer": "d1"}))
    read = await v2.get_account_async(request=operations.V2GetAccountRequest(
        ledger=LEDGER, address="exchange:e1", expand="volumes"))

    assert first.status_code == 204
    assert replay.raw_response.headers["Idempotency-Hit"] == "true"
    assert reused.data.error_code is models.V2ErrorsEnum.VALIDATION
    assert read.v2_account_response is not None
    account = read.v2_account_response.data
    assert account.metadata == {"venue": "paper", "dealer": "d1"}
    assert not account.volumes


async def test_accounts_list_volumes_and_aggregated_balances(v2: LedgerV2) -> None:
    await v2.create_transaction_async(request=create_request(
        posting("world", "exchange:e1", 7), posting("world", "exchange:e2:sub", 3),
        posting("world", "dealer:d1", 100), posting("world", "exchange:e2", 2, "BTC/8")))

    listed = await v2.list_accounts_async(request=operations.V2ListAccountsRequest(
        ledger=LEDGER, request_body={"$match": {"address": "exchange:"}}, expand="volumes"))
    deep = await v2.list_accounts_async(request=operations.V2ListAccountsRequest(
        ledger=LEDGER, request_body={"$match": {"address": "exchange:..."}}))
    aggregated = await v2.get_balances_aggregated_async(
        request=operations.V2GetBalancesAggregatedRequest(
            ledger=LEDGER, request_body={"$match": {"address": "exchange:..."}}))

    assert listed.v2_accounts_cursor_response is not None
    accounts = listed.v2_accounts_cursor_response.cursor.data
    assert [a.address for a in accounts] == ["exchange:e1", "exchange:e2"]
    assert accounts[0].volumes is not None
    assert accounts[0].volumes["USD/2"].balance == 7
    assert deep.v2_accounts_cursor_response is not None
    assert [a.address for a in deep.v2_accounts_cursor_response.cursor.data] == [
        "exchange:e1", "exchange:e2", "exchange:e2:sub"]
    assert aggregated.v2_aggregate_balances_response is not None
    assert aggregated.v2_aggregate_balances_response.data == {"USD/2": 10, "BTC/8": 2}


def test_partial_addresses_match_segment_by_segment() -> None:
    assert address_matches("a:b", "a:b")
    assert not address_matches("a:b", "a:b:c")
    assert address_matches("a:", "a:x")
    assert not address_matches("a:", "a:x:y")
    assert address_matches("a::c", "a:b:c")
    assert address_matches("a:...", "a:x:y")
    assert address_matches("a:...", "a")
    assert not address_matches("a:...", "b:x")


# ---------------------------------------------------------------- lists


async def test_transactions_are_listed_newest_first_through_cursors(v2: LedgerV2) -> None:
    for n in range(5):
        await v2.create_transaction_async(request=create_request(
            posting("world", f"a:{n % 2}", n + 1), reference=f"r{n}"))

    first = await v2.list_transactions_async(request=operations.V2ListTransactionsRequest(
        ledger=LEDGER, request_body={}, page_size=2))
    assert first.v2_transactions_cursor_response is not None
    page = first.v2_transactions_cursor_response.cursor
    second = await v2.list_transactions_async(request=operations.V2ListTransactionsRequest(
        ledger=LEDGER, request_body={}, cursor=page.next))
    assert second.v2_transactions_cursor_response is not None
    following = second.v2_transactions_cursor_response.cursor
    filtered = await v2.list_transactions_async(request=operations.V2ListTransactionsRequest(
        ledger=LEDGER, request_body={"$and": [{"$match": {"account": "a:0"}},
                                              {"$not": {"$match": {"reference": "r0"}}}]}))
    counted = await v2.count_transactions_async(request=operations.V2CountTransactionsRequest(
        ledger=LEDGER, request_body={"$match": {"account": "a:0"}}))

    assert [tx.id for tx in page.data] == [5, 4]
    assert page.has_more is True
    assert page.page_size == 2
    assert [tx.id for tx in following.data] == [3, 2]
    assert following.has_more is True
    assert filtered.v2_transactions_cursor_response is not None
    assert [tx.reference for tx in filtered.v2_transactions_cursor_response.cursor.data] == [
        "r4", "r2"]
    assert counted.status_code == 204
    assert counted.raw_response.headers["Count"] == "3"


async def test_page_size_is_clamped_to_the_maximum(v2: LedgerV2) -> None:
    for n in range(3):
        await v2.create_transaction_async(request=create_request(posting("world", "a:1", 1),
                                                                 reference=f"r{n}"))

    listed = await v2.list_transactions_async(request=operations.V2ListTransactionsRequest(
        ledger=LEDGER, request_body={"$or": [{"$match": {"reference": r}}
                                             for r in ("r0", "r2", "zz")]},
        page_size=1000))

    assert listed.v2_transactions_cursor_response is not None
    cursor = listed.v2_transactions_cursor_response.cursor
    assert cursor.page_size == 100
    assert [tx.reference for tx in cursor.data] == ["r2", "r0"]
    assert cursor.has_more is False


async def test_in_is_not_an_operator_of_the_pinned_ledger_version(v2: LedgerV2) -> None:
    error = await expect_error(v2.list_transactions_async(
        request=operations.V2ListTransactionsRequest(
            ledger=LEDGER, request_body={"$in": {"reference": ["r0"]}})))
    assert error.status_code == 400
    assert error.data.error_code is models.V2ErrorsEnum.VALIDATION
    assert "unexpected operator $in" in (error.data.error_message or "")


# ---------------------------------------------------------------- bulk


async def test_bulk_answers_one_result_per_element_in_order(
        v2: LedgerV2, served: RunningEmulator) -> None:
    response = await bulk(v2, [
        tx_element(posting("world", "a:1", 5), reference="b1"),
        models.V2BulkElementAddMetadata(action="ADD_METADATA",
                                        data=models.V2BulkElementAddMetadataData(
                                            metadata={"k": "v"}, target_id="exchange:e9",
                                            target_type=models.V2TargetType.ACCOUNT)),
        tx_element(posting("a:1", "b:1", 5), reference="b2"),
    ])

    assert response.status_code == 200
    assert response.v2_bulk_response is not None
    results = response.v2_bulk_response.data
    assert results is not None
    assert isinstance(results[0], models.V2BulkElementResultCreateTransaction)
    assert isinstance(results[1], models.V2BulkElementResultAddMetadata)
    assert isinstance(results[2], models.V2BulkElementResultCreateTransaction)
    assert [results[0].data.id, results[2].data.id] == [1, 2]
    assert results[0].log_id < results[1].log_id < results[2].log_id
    assert served.emulator.ledger(LEDGER).accounts["exchange:e9"].metadata == {"k": "v"}


async def test_bulk_stops_at_the_first_failure_unless_continue_on_failure(
        v2: LedgerV2, served: RunningEmulator) -> None:
    await v2.create_transaction_async(request=create_request(posting("world", "a:1", 1),
                                                             reference="taken"))
    elements = [
        tx_element(posting("world", "a:1", 1), reference="n1"),
        tx_element(posting("world", "a:1", 1), reference="taken"),
        tx_element(posting("world", "a:1", 1), reference="n2"),
    ]

    stopped = await bulk(v2, elements)
    assert stopped.v2_bulk_response is not None
    assert stopped.v2_bulk_response.data is not None
    stopped_results = stopped.v2_bulk_response.data
    carried_on = await bulk(v2, [
        tx_element(posting("world", "a:1", 1), reference="taken"),
        tx_element(posting("world", "a:1", 1), reference="n3"),
    ], continue_on_failure=True)

    assert stopped.status_code == 400
    assert isinstance(stopped_results[0], models.V2BulkElementResultCreateTransaction)
    assert isinstance(stopped_results[1], models.V2BulkElementResultError)
    assert stopped_results[1].error_code == "CONFLICT"
    assert isinstance(stopped_results[2], models.V2BulkElementResultError)
    assert stopped_results[2].error_code == "INTERNAL"
    assert stopped_results[2].error_description == "context canceled"
    assert carried_on.status_code == 400
    assert carried_on.v2_bulk_response is not None
    assert carried_on.v2_bulk_response.data is not None
    assert isinstance(carried_on.v2_bulk_response.data[1],
                      models.V2BulkElementResultCreateTransaction)
    assert set(served.emulator.ledger(LEDGER).references) == {"taken", "n1", "n3"}


async def test_atomic_bulk_rolls_everything_back_when_one_fails(
        v2: LedgerV2, served: RunningEmulator) -> None:
    response = await bulk(v2, [
        tx_element(posting("world", "a:1", 1), reference="x1"),
        tx_element(posting("b:1", "a:1", 1), reference="x2"),
    ], atomic=True)

    assert response.status_code == 400
    assert response.v2_bulk_response is not None
    assert response.v2_bulk_response.data is not None
    failed = response.v2_bulk_response.data[1]
    assert isinstance(failed, models.V2BulkElementResultError)
    assert failed.error_code == "INSUFFICIENT_FUND"
    assert served.emulator.ledger(LEDGER).transactions == []
    assert served.emulator.ledger(LEDGER).accounts == {}


async def test_bulk_element_idempotency_key_replays_without_a_flag(
        v2: LedgerV2, served: RunningEmulator) -> None:
    element = tx_element(posting("world", "a:1", 1), reference="i1", ik="ik-1")
    first = await bulk(v2, [element])
    again = await bulk(v2, [element])
    changed = await bulk(v2, [tx_element(posting("world", "a:1", 2), reference="i1",
                                         ik="ik-1")])

    assert first.v2_bulk_response is not None
    assert again.v2_bulk_response is not None
    assert again.status_code == 200
    assert again.v2_bulk_response.data == first.v2_bulk_response.data
    assert changed.v2_bulk_response is not None
    assert changed.v2_bulk_response.data is not None
    result = changed.v2_bulk_response.data[0]
    assert isinstance(result, models.V2BulkElementResultError)
    assert result.error_code == "VALIDATION"
    assert len(served.emulator.ledger(LEDGER).transactions) == 1


async def test_bulk_size_is_limited(served: RunningEmulator, v2: LedgerV2) -> None:
    served.emulator.bulk_max_size = 3
    elements = [tx_element(posting("world", "a:1", 1)) for _ in range(4)]

    error = await expect_error(bulk(v2, elements))
    fits = await bulk(v2, elements[:3])

    assert error.status_code == 413
    assert error.data.error_code is models.V2ErrorsEnum.BULK_SIZE_EXCEEDED
    assert fits.status_code == 200


async def test_an_undecodable_bulk_element_fails_the_whole_bulk(
        served: RunningEmulator, http: httpx.AsyncClient) -> None:
    answer = await http.post(f"{served.url}{API}/{LEDGER}/_bulk", json=[
        {"action": "CREATE_TRANSACTION", "data": {"postings": [], "metadata": {}}},
        {"action": "NOT_AN_ACTION", "data": {}},
    ])
    invalid_postings = await http.post(f"{served.url}{API}/{LEDGER}/_bulk", json=[
        {"action": "CREATE_TRANSACTION", "data": {"postings": [
            {"source": "world", "destination": "a", "amount": -1, "asset": "USD"}]}},
        {"action": "CREATE_TRANSACTION", "data": {"postings": []}},
    ], params={"continueOnFailure": "true"})

    assert answer.status_code == 400
    assert answer.json()["errorCode"] == "VALIDATION"
    assert invalid_postings.status_code == 400
    # The server wraps the postings' validation error without its type: INTERNAL.
    assert [r["errorCode"] for r in invalid_postings.json()["data"]] == [
        "INTERNAL", "NO_POSTINGS"]


# ---------------------------------------------------------------- controls


async def test_outage_switch_fails_every_request_without_applying(
        served: RunningEmulator, v2: LedgerV2) -> None:
    served.emulator.available = False

    with pytest.raises(sdk_errors.SDKError) as caught:
        await v2.create_transaction_async(request=create_request(posting("world", "a:1", 1)))
    served.emulator.available = True
    served.emulator.fail_next(1, status=503)
    unavailable = await expect_error(v2.create_transaction_async(
        request=create_request(posting("world", "a:1", 1))))

    assert caught.value.status_code == 503
    assert unavailable.status_code == 503
    assert unavailable.data.error_code is models.V2ErrorsEnum.INTERNAL
    assert served.emulator.ledger(LEDGER).transactions == []
    assert served.emulator.operation_counts["v2CreateTransaction"] == 2


async def test_stop_refuses_connections_until_start(served: RunningEmulator,
                                                    v2: LedgerV2) -> None:
    await served.emulator.stop()
    with pytest.raises(httpx.ConnectError):
        await v2.get_ledger_async(request=operations.V2GetLedgerRequest(ledger=LEDGER))

    assert await served.emulator.start() == served.url
    read = await v2.get_ledger_async(request=operations.V2GetLedgerRequest(ledger=LEDGER))

    assert read.status_code == 200


async def test_a_dropped_answer_is_applied_all_the_same(served: RunningEmulator,
                                                        v2: LedgerV2) -> None:
    served.emulator.drop_next_answer("v2CreateTransaction")

    with pytest.raises(httpx.HTTPError):
        await v2.create_transaction_async(
            request=create_request(posting("world", "a:1", 1), reference="lost", key="lost"))
    replay = await v2.create_transaction_async(
        request=create_request(posting("world", "a:1", 1), reference="lost", key="lost"))

    assert replay.raw_response.headers["Idempotency-Hit"] == "true"
    assert [tx.reference for tx in served.emulator.ledger(LEDGER).transactions] == ["lost"]


async def test_oauth_client_credentials_are_required_when_asked() -> None:
    emulator = FormanceEmulator()
    emulator.add_ledger(LEDGER)
    emulator.require_oauth("emulator-client", "emulator-secret")
    async with running_emulator(emulator) as (url, _), httpx.AsyncClient() as http:
        anonymous = SDK(server_url=url, async_client=http).ledger.v2
        with pytest.raises(sdk_errors.SDKError) as caught:
            await anonymous.get_ledger_async(
                request=operations.V2GetLedgerRequest(ledger=LEDGER))
        authorised = SDK(server_url=url, async_client=http, security=shared.Security(
            client_id="emulator-client", client_secret="emulator-secret")).ledger.v2
        read = await authorised.get_ledger_async(
            request=operations.V2GetLedgerRequest(ledger=LEDGER))

    assert caught.value.status_code == 401
    assert read.status_code == 200
    assert emulator.tokens_issued == 1
    assert emulator.authorizations[-1] == "Bearer emulated-token-1"
