"""The `formance` backend: Formance Ledger v2 through formance-sdk-python (DESIGN §7).

Writes:
- one transaction → `POST /api/ledger/v2/{ledger}/transactions` with `force` (query and body),
  `Idempotency-Key` = `reference` = the outbox reference. 200 → COMMITTED; a replay of that key
  (header `Idempotency-Hit: true`) → DUPLICATE: the same key with the same input is the same
  entry, already booked;
- several → `POST /_bulk`, at most `bulk_max` elements a call, in order, `continueOnFailure`
  so that one element's failure does not cancel the others, not atomic. Elements carry no `ik`:
  a bulk answer does not say whether an element was replayed, so the unique `reference` is what
  deduplicates there;
- 409 `CONFLICT` (the reference is already booked) → DUPLICATE once the booked transaction is
  read back and has the same postings; different postings → LedgerRefused.
Errors: network failures, timeouts, 5xx, 429, authentication, `INTERNAL`, `TIMEOUT`,
`OUTDATED_SCHEMA`, `LEDGER_NOT_FOUND`, anything unparseable → LedgerUnavailable (the outbox
retries; every write is idempotent). The entry's own faults (`VALIDATION`, `INSUFFICIENT_FUND`,
`NO_POSTINGS`, `COMPILATION_FAILED`, `METADATA_OVERRIDE`, `INTERPRETER_*`) → LedgerRefused; what
the server would refuse is checked before anything is sent, so a batch is refused whole or sent.
In a bulk, booked elements stay booked when another one fails: a retry answers them DUPLICATE.

Reads: balances from the aggregated balances of one address; by prefix from the accounts list
(filtered by whole segments on the server, then by the exact string prefix here); transactions
newest first, paged through cursors up to `offset + limit`, with the total from the ledger's
count (`HEAD /transactions`, header `Count`) — two requests, so not one snapshot.

The ledger is created on first use when missing. Credentials (OAuth2 client credentials, the
SDK's token flow) are never logged nor shown in a repr.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
from formance_sdk_python import SDK
from formance_sdk_python.models import errors as sdk_errors
from formance_sdk_python.models import ledger as models
from formance_sdk_python.models import operations, shared

from ledger.accounts import ADDRESS_PATTERN, validate_address
from ledger.backend import (
    AccountMetadata,
    CommitOutcome,
    CommittedTransaction,
    LedgerRefused,
    LedgerTransaction,
    LedgerUnavailable,
    Posting,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

PAGE_SIZE = 100  # the server's maximum page size
# Formance asset syntax (pkg/assets): CODE[_SUFFIX][/scale].
_ASSET_PATTERN = re.compile(r"[A-Z][A-Z0-9]{0,16}(_[A-Z]{1,16})?(/[0-9]{1,6})?")

# Codes that say the entry itself is wrong: retrying it cannot help.
_REFUSED_CODES = frozenset({
    models.V2ErrorsEnum.VALIDATION,
    models.V2ErrorsEnum.INSUFFICIENT_FUND,
    models.V2ErrorsEnum.NO_POSTINGS,
    models.V2ErrorsEnum.COMPILATION_FAILED,
    models.V2ErrorsEnum.METADATA_OVERRIDE,
    models.V2ErrorsEnum.INTERPRETER_PARSE,
    models.V2ErrorsEnum.INTERPRETER_RUNTIME,
    models.V2ErrorsEnum.ALREADY_REVERT,
})
_NOT_FOUND = frozenset({models.V2ErrorsEnum.NOT_FOUND, models.V2ErrorsEnum.LEDGER_NOT_FOUND})


@dataclass(frozen=True, slots=True)
class FormanceConfig:
    """Where the Formance stack is (`base_url`: the gateway serving `/api/ledger/v2/...`)."""

    base_url: str
    ledger_name: str = "fermata"
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    timeout_ms: int = 5000
    bulk_max: int = 100

    def __post_init__(self) -> None:
        if self.bulk_max < 1:
            raise ValueError("bulk_max must be at least 1")
        if self.timeout_ms < 1:
            raise ValueError("timeout_ms must be positive")
        if (self.client_id is None) != (self.client_secret is None):
            raise ValueError("client_id and client_secret go together")


class FormanceLedger:
    """`LedgerBackend` on a Formance Ledger v2 (one ledger of the stack)."""

    name = "formance"

    def __init__(self, config: FormanceConfig) -> None:
        self._ledger = config.ledger_name
        self._bulk_max = config.bulk_max
        self._http = httpx.AsyncClient(follow_redirects=False)
        # The SDK's OAuth hook fetches tokens with a synchronous client, in a worker thread.
        self._token_http = httpx.Client(follow_redirects=False)
        security = None
        if config.client_id is not None and config.client_secret is not None:
            security = shared.Security(client_id=config.client_id,
                                       client_secret=config.client_secret)
        self._sdk = SDK(server_url=config.base_url.rstrip("/"), security=security,
                        client=self._token_http, async_client=self._http,
                        timeout_ms=config.timeout_ms)
        self._api = self._sdk.ledger.v2
        self._ledger_ready = False
        self._ledger_lock = asyncio.Lock()
        self._closed = False

    # ------------------------------------------------------------ writes

    async def commit(self, transactions: Sequence[LedgerTransaction]) -> list[CommitOutcome]:
        for tx in transactions:
            _check_transaction(tx)
        if not transactions:
            return []
        await self._ensure_ledger()
        if len(transactions) == 1:
            return [await self._create_one(transactions[0])]
        outcomes: list[CommitOutcome] = []
        start = 0
        while start < len(transactions):
            chunk = transactions[start:start + self._bulk_max]
            booked = await self._create_bulk(chunk)
            if booked is None:  # the server takes smaller bulks: _bulk_max was lowered
                continue
            outcomes.extend(booked)
            start += len(chunk)
        return outcomes

    async def _create_one(self, tx: LedgerTransaction) -> CommitOutcome:
        request = operations.V2CreateTransactionRequest(
            ledger=self._ledger, idempotency_key=tx.reference, force=True,
            v2_post_transaction=_post_transaction(tx))
        try:
            response = await self._call(
                "create transaction", lambda: self._api.create_transaction_async(request=request))
        except models.ErrorsV2ErrorResponse as exc:
            if exc.data.error_code is models.V2ErrorsEnum.CONFLICT:
                await self._confirm_duplicates([tx])
                return CommitOutcome.DUPLICATE
            raise self._failure(exc, f"transaction {tx.reference}") from None
        if response.raw_response.headers.get("Idempotency-Hit", "").lower() == "true":
            return CommitOutcome.DUPLICATE
        if response.v2_create_transaction_response is None:
            raise LedgerUnavailable(f"formance: no transaction in the answer for {tx.reference}")
        return CommitOutcome.COMMITTED

    async def _create_bulk(self, chunk: Sequence[LedgerTransaction]
                           ) -> list[CommitOutcome] | None:
        """One bulk call; None when the server refused its size (the chunk is to be resent)."""
        elements: list[models.V2BulkElement] = [
            models.V2BulkElementCreateTransaction(action="CREATE_TRANSACTION",
                                                  data=_post_transaction(tx))
            for tx in chunk
        ]
        results = await self._bulk(elements, what=f"bulk of {len(chunk)} transactions")
        if results is None:
            return None
        outcomes: list[CommitOutcome | None] = []
        conflicts: list[LedgerTransaction] = []
        refused: list[str] = []
        unavailable: list[str] = []
        for tx, result in zip(chunk, results, strict=True):
            if isinstance(result, models.V2BulkElementResultCreateTransaction):
                outcomes.append(CommitOutcome.COMMITTED)
                continue
            outcomes.append(None)
            if not isinstance(result, models.V2BulkElementResultError):
                unavailable.append(f"{tx.reference}: unexpected {result.response_type}")
            elif result.error_code == models.V2ErrorsEnum.CONFLICT:
                conflicts.append(tx)
            elif result.error_code in _REFUSED_CODES:
                refused.append(f"{tx.reference}: {result.error_code} {result.error_description}")
            else:
                unavailable.append(f"{tx.reference}: {result.error_code}")
        if unavailable:
            # Retrying the whole chunk is safe: what was booked answers DUPLICATE next time.
            raise LedgerUnavailable("formance bulk: " + "; ".join(unavailable))
        if refused:
            raise LedgerRefused("formance refused " + "; ".join(refused))
        if conflicts:
            await self._confirm_duplicates(conflicts)
        return [CommitOutcome.DUPLICATE if o is None else o for o in outcomes]

    async def _bulk(self, elements: list[models.V2BulkElement], *, what: str
                    ) -> list[models.V2BulkElementResult] | None:
        request = operations.V2CreateBulkRequest(
            ledger=self._ledger, request_body=elements, atomic=False,
            continue_on_failure=True, parallel=False)
        try:
            response = await self._call(what, lambda: self._api.create_bulk_async(request=request))
        except models.ErrorsV2ErrorResponse as exc:
            if exc.data.error_code is models.V2ErrorsEnum.BULK_SIZE_EXCEEDED:
                if len(elements) == 1:
                    raise LedgerUnavailable("formance refuses bulks of one element") from None
                self._bulk_max = max(1, len(elements) // 2)
                log.warning("formance bulk size %d exceeded; sending %d at a time",
                            len(elements), self._bulk_max)
                return None
            raise self._failure(exc, what) from None
        answer = response.v2_bulk_response
        if answer is not None and answer.error_code is not None:
            failure = f"formance {what}: {answer.error_code} {answer.error_message or ''}"
            if answer.error_code in _REFUSED_CODES:
                raise LedgerRefused(failure)
            raise LedgerUnavailable(failure)
        if answer is None or answer.data is None or len(answer.data) != len(elements):
            raise LedgerUnavailable(f"formance {what}: malformed bulk answer")
        return answer.data

    async def _confirm_duplicates(self, transactions: Sequence[LedgerTransaction]) -> None:
        """A CONFLICT says the reference is taken: check it holds these very postings."""
        wanted = {tx.reference: tx for tx in transactions}
        booked: dict[str, models.V2Transaction] = {}
        for start in range(0, len(transactions), PAGE_SIZE):
            references = [tx.reference for tx in transactions[start:start + PAGE_SIZE]]
            # $or of $match: Ledger v2.3 (the deploy pins v2.3.0) has no $in, and later v2.3
            # releases refuse it on references; every v2 takes this
            query = {"$or": [{"$match": {"reference": reference}} for reference in references]}
            async for found in self._iterate_transactions(query, limit=len(references)):
                if found.reference is not None:
                    booked[found.reference] = found
        for reference, tx in wanted.items():
            held = booked.get(reference)
            if held is None:
                raise LedgerUnavailable(f"formance: {reference} conflicts but cannot be read")
            if _postings_of(held) != tx.postings:
                raise LedgerRefused(
                    f"formance holds reference {reference} with other postings")

    async def set_account_metadata(self, entries: Sequence[AccountMetadata]) -> None:
        for entry in entries:
            _check_address(entry.address)
            _check_metadata(entry.metadata, entry.address)
        if not entries:
            return
        await self._ensure_ledger()
        if len(entries) == 1:
            await self._add_metadata(entries[0])
            return
        start = 0
        while start < len(entries):
            chunk = entries[start:start + self._bulk_max]
            elements: list[models.V2BulkElement] = [
                models.V2BulkElementAddMetadata(
                    action="ADD_METADATA",
                    data=models.V2BulkElementAddMetadataData(
                        metadata=dict(entry.metadata), target_id=entry.address,
                        target_type=models.V2TargetType.ACCOUNT))
                for entry in chunk
            ]
            results = await self._bulk(elements, what=f"bulk of {len(chunk)} account metadata")
            if results is None:
                continue
            failures = [
                (entry.address, result) for entry, result in zip(chunk, results, strict=True)
                if isinstance(result, models.V2BulkElementResultError)
            ]
            if any(r.error_code not in _REFUSED_CODES for _, r in failures):
                raise LedgerUnavailable("formance account metadata: " + "; ".join(
                    f"{address}: {r.error_code}" for address, r in failures))
            if failures:
                raise LedgerRefused("formance refused account metadata: " + "; ".join(
                    f"{address}: {r.error_code} {r.error_description}"
                    for address, r in failures))
            start += len(chunk)

    async def _add_metadata(self, entry: AccountMetadata) -> None:
        request = operations.V2AddMetadataToAccountRequest(
            ledger=self._ledger, address=entry.address, request_body=dict(entry.metadata))
        try:
            await self._call("account metadata",
                             lambda: self._api.add_metadata_to_account_async(request=request))
        except models.ErrorsV2ErrorResponse as exc:
            raise self._failure(exc, f"account metadata of {entry.address}") from None

    # ------------------------------------------------------------ reads

    async def balances(self, address: str) -> dict[str, int]:
        validate_address(address)
        await self._ensure_ledger()
        request = operations.V2GetBalancesAggregatedRequest(
            ledger=self._ledger, request_body={"$match": {"address": address}})
        try:
            response = await self._call(
                "balances", lambda: self._api.get_balances_aggregated_async(request=request))
        except models.ErrorsV2ErrorResponse as exc:
            raise self._failure(exc, f"balances of {address}") from None
        if response.v2_aggregate_balances_response is None:
            raise LedgerUnavailable("formance: no balances in the answer")
        return dict(response.v2_aggregate_balances_response.data)

    async def balances_by_prefix(self, prefix: str) -> dict[str, dict[str, int]]:
        await self._ensure_ledger()
        # The server filters by whole segments (`a:b:...` = a:b and anything below it); the
        # exact string prefix is applied here.
        segments = prefix[:prefix.rfind(":") + 1]
        query: dict[str, Any] = {}
        if segments and ADDRESS_PATTERN.fullmatch(segments.rstrip(":")):
            query = {"$match": {"address": segments + "..."}}
        found: dict[str, dict[str, int]] = {}
        async for account in self._iterate_accounts(query):
            if account.address.startswith(prefix) and account.volumes:
                found[account.address] = {
                    asset: volumes.input - volumes.output
                    for asset, volumes in account.volumes.items()
                }
        return found

    async def account(self, address: str) -> tuple[dict[str, str], dict[str, int]] | None:
        validate_address(address)
        await self._ensure_ledger()
        request = operations.V2GetAccountRequest(ledger=self._ledger, address=address,
                                                 expand="volumes")
        try:
            response = await self._call(
                "account", lambda: self._api.get_account_async(request=request))
        except models.ErrorsV2ErrorResponse as exc:
            if exc.data.error_code is models.V2ErrorsEnum.NOT_FOUND:
                return None
            raise self._failure(exc, f"account {address}") from None
        if response.v2_account_response is None:
            raise LedgerUnavailable("formance: no account in the answer")
        held = response.v2_account_response.data
        return dict(held.metadata), {asset: volumes.input - volumes.output
                                     for asset, volumes in (held.volumes or {}).items()}

    async def transactions(self, *, address: str | None, reference: str | None, limit: int,
                           offset: int) -> tuple[list[CommittedTransaction], int]:
        if address is not None:
            validate_address(address)
        await self._ensure_ledger()
        conditions: list[dict[str, Any]] = []
        if address is not None:
            conditions.append({"$match": {"account": address}})
        if reference is not None:
            conditions.append({"$match": {"reference": reference}})
        query: dict[str, Any] = {}
        if len(conditions) == 1:
            query = conditions[0]
        elif conditions:
            query = {"$and": conditions}
        total = await self._count_transactions(query)
        page: list[CommittedTransaction] = []
        if limit > 0:
            seen = 0
            async for found in self._iterate_transactions(query, limit=offset + limit):
                if seen >= offset:
                    page.append(_committed(found))
                seen += 1
        return page, total

    async def _count_transactions(self, query: dict[str, Any]) -> int:
        request = operations.V2CountTransactionsRequest(ledger=self._ledger,
                                                        request_body=query)
        try:
            response = await self._call(
                "count transactions", lambda: self._api.count_transactions_async(request=request))
        except models.ErrorsV2ErrorResponse as exc:
            raise self._failure(exc, "count transactions") from None
        count = response.raw_response.headers.get("Count")
        if count is None or not count.isdigit():
            raise LedgerUnavailable("formance: the transaction count has no Count header")
        return int(count)

    async def _iterate_transactions(self, query: dict[str, Any], *, limit: int
                                    ) -> AsyncIterator[models.V2Transaction]:
        """Newest first, at most `limit`, following the cursors."""
        async for found in _paged(
                lambda cursor, size: self._transactions_page(query, cursor, size), limit):
            yield found

    async def _transactions_page(self, query: dict[str, Any], cursor: str | None, size: int
                                 ) -> tuple[list[models.V2Transaction], str | None]:
        request = operations.V2ListTransactionsRequest(
            ledger=self._ledger, request_body={} if cursor else query, cursor=cursor,
            page_size=size)
        try:
            response = await self._call(
                "list transactions", lambda: self._api.list_transactions_async(request=request))
        except models.ErrorsV2ErrorResponse as exc:
            raise self._failure(exc, "list transactions") from None
        if response.v2_transactions_cursor_response is None:
            raise LedgerUnavailable("formance: no transactions cursor in the answer")
        page = response.v2_transactions_cursor_response.cursor
        return page.data, page.next if page.has_more else None

    async def _iterate_accounts(self, query: dict[str, Any]
                                ) -> AsyncIterator[models.V2Account]:
        async for found in _paged(
                lambda cursor, size: self._accounts_page(query, cursor, size), None):
            yield found

    async def _accounts_page(self, query: dict[str, Any], cursor: str | None, size: int
                             ) -> tuple[list[models.V2Account], str | None]:
        request = operations.V2ListAccountsRequest(
            ledger=self._ledger, request_body={} if cursor else query, cursor=cursor,
            page_size=size, expand="volumes")
        try:
            response = await self._call(
                "list accounts", lambda: self._api.list_accounts_async(request=request))
        except models.ErrorsV2ErrorResponse as exc:
            raise self._failure(exc, "list accounts") from None
        if response.v2_accounts_cursor_response is None:
            raise LedgerUnavailable("formance: no accounts cursor in the answer")
        page = response.v2_accounts_cursor_response.cursor
        return page.data, page.next if page.has_more else None

    # ------------------------------------------------------------ lifecycle

    async def check(self) -> None:
        await self._ensure_ledger()
        request = operations.V2GetLedgerInfoRequest(ledger=self._ledger)
        try:
            await self._call(
                "ledger info", lambda: self._api.get_ledger_info_async(request=request))
        except models.ErrorsV2ErrorResponse as exc:
            raise self._failure(exc, "ledger info") from None

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._http.aclose()
        self._token_http.close()

    async def _ensure_ledger(self) -> None:
        """Create the ledger on first use when the stack does not have it yet."""
        if self._ledger_ready:
            return
        async with self._ledger_lock:
            if self._ledger_ready:
                return
            try:
                await self._call("get ledger", lambda: self._api.get_ledger_async(
                    request=operations.V2GetLedgerRequest(ledger=self._ledger)))
            except models.ErrorsV2ErrorResponse as exc:
                if exc.status_code != 404 or exc.data.error_code not in _NOT_FOUND:
                    raise self._failure(exc, f"ledger {self._ledger}") from None
                await self._create_ledger()
            self._ledger_ready = True

    async def _create_ledger(self) -> None:
        request = operations.V2CreateLedgerRequest(
            ledger=self._ledger, v2_create_ledger_request=models.V2CreateLedgerRequest())
        try:
            await self._call(
                "create ledger", lambda: self._api.create_ledger_async(request=request))
        except models.ErrorsV2ErrorResponse as exc:
            if exc.data.error_code is not models.V2ErrorsEnum.LEDGER_ALREADY_EXISTS:
                raise self._failure(exc, f"create ledger {self._ledger}") from None
            return
        log.info("formance ledger %s created", self._ledger)

    # ------------------------------------------------------------ errors

    async def _call(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """Make an SDK call; transport failures and unreadable answers → LedgerUnavailable.
        The ledger's own error answers (ErrorsV2ErrorResponse) go to the caller."""
        if self._closed:
            raise LedgerUnavailable("formance backend is closed")
        try:
            return await call()
        except models.ErrorsV2ErrorResponse:
            raise
        except httpx.TimeoutException:
            raise LedgerUnavailable(f"formance {what}: timed out") from None
        except httpx.HTTPError as exc:
            raise LedgerUnavailable(f"formance {what}: {type(exc).__name__}") from None
        except sdk_errors.SDKBaseError as exc:
            raise LedgerUnavailable(
                f"formance {what}: HTTP {exc.status_code} {type(exc).__name__}") from None
        except sdk_errors.NoResponseError:
            raise LedgerUnavailable(f"formance {what}: no response") from None
        except Exception as exc:
            # The SDK's OAuth hook raises bare Exceptions (token endpoint status, token type);
            # its message names the endpoint's status only, never the credentials.
            raise LedgerUnavailable(f"formance {what}: {type(exc).__name__}: {exc}") from None

    def _failure(self, exc: models.ErrorsV2ErrorResponse, what: str) -> Exception:
        """An error answer of the ledger as LedgerRefused (the entry's fault) or
        LedgerUnavailable (the server's, or a setup's)."""
        code = exc.data.error_code
        message = f"formance {what}: HTTP {exc.status_code} {code.value}: {exc.data.error_message}"
        if code is models.V2ErrorsEnum.LEDGER_NOT_FOUND:
            self._ledger_ready = False  # created again on the next call
        if exc.status_code < 500 and code in _REFUSED_CODES:
            return LedgerRefused(message)
        return LedgerUnavailable(message)


PageFetch = Callable[[str | None, int], Awaitable[tuple[list[T], str | None]]]


async def _paged(fetch: PageFetch[T], limit: int | None) -> AsyncIterator[T]:
    """The items of a cursor-paginated list, at most `limit` of them (all when None)."""
    cursor: str | None = None
    given = 0
    while limit is None or given < limit:
        size = PAGE_SIZE if limit is None else min(PAGE_SIZE, limit - given)
        items, cursor = await fetch(cursor, size)
        for item in items[:size]:
            yield item
            given += 1
        if cursor is None:
            return


# ---------------------------------------------------------------- conversions


def _check_transaction(tx: LedgerTransaction) -> None:
    """What the ledger would refuse, refused before anything is sent."""
    if not tx.reference:
        raise LedgerRefused("a transaction needs a reference")
    if not tx.postings:
        raise LedgerRefused(f"{tx.reference}: a transaction needs postings")
    for posting in tx.postings:
        _check_address(posting.source)
        _check_address(posting.destination)
        if isinstance(posting.amount, bool) or not isinstance(posting.amount, int):
            raise LedgerRefused(f"{tx.reference}: amounts are integers of minor units")
        if posting.amount <= 0:
            raise LedgerRefused(f"{tx.reference}: amounts must be positive")
        if not _ASSET_PATTERN.fullmatch(posting.asset):
            raise LedgerRefused(f"{tx.reference}: invalid asset {posting.asset!r}")
    _check_metadata(tx.metadata, tx.reference)
    if tx.timestamp is not None and tx.timestamp.utcoffset() is None:
        raise LedgerRefused(f"{tx.reference}: the timestamp needs a time zone")


def _check_address(address: str) -> None:
    if not ADDRESS_PATTERN.fullmatch(address):
        raise LedgerRefused(f"invalid ledger account address {address!r}")


def _check_metadata(metadata: Mapping[str, str], owner: str) -> None:
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise LedgerRefused(f"{owner}: metadata keys and values must be strings")


def _post_transaction(tx: LedgerTransaction) -> models.V2PostTransaction:
    return models.V2PostTransaction(
        postings=[models.V2Posting(source=p.source, destination=p.destination,
                                   amount=p.amount, asset=p.asset) for p in tx.postings],
        metadata=dict(tx.metadata),
        reference=tx.reference,
        timestamp=tx.timestamp,
        force=True,
    )


def _postings_of(tx: models.V2Transaction) -> tuple[Posting, ...]:
    return tuple(Posting(p.source, p.destination, p.amount, p.asset) for p in tx.postings)


def _committed(tx: models.V2Transaction) -> CommittedTransaction:
    timestamp = tx.timestamp
    # The ledger answers UTC; a time without an offset is UTC too.
    timestamp = (timestamp.replace(tzinfo=dt.UTC) if timestamp.tzinfo is None
                 else timestamp.astimezone(dt.UTC))
    return CommittedTransaction(reference=tx.reference or "", transaction_id=tx.id,
                                postings=_postings_of(tx), metadata=dict(tx.metadata),
                                timestamp=timestamp)
