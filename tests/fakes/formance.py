"""A Formance Ledger v2 emulator for the `formance` backend's tests (DESIGN §7).

The real formance-sdk-python talks to it over HTTP, under the stack gateway's prefix
`/api/ledger/v2`. It follows the rules of the real server (formancehq/ledger: internal/api/v2,
internal/api/bulking, internal/api/common, internal/controller/ledger; go-libs transport/api)
where a client can observe them:

- errors are `{"errorCode", "errorMessage"}` with a code of the server's closed set
  (`ERROR_CODES`); an unknown ledger answers 404 `LEDGER_NOT_FOUND` on every route behind the
  ledger middleware, 404 `NOT_FOUND` on `GET /{ledger}`; an unknown account or transaction 404
  `NOT_FOUND`;
- `POST /{ledger}/transactions` answers 200 `{"data": transaction}` (with pre/post-commit
  volumes). Checks in the server's order: body decoding and postings syntax → 400 `VALIDATION`
  (`NO_POSTINGS` without postings); then the `Idempotency-Key`: a key already used with the same
  input replays the first answer with `Idempotency-Hit: true`, with another input → 400
  `VALIDATION`; then execution: a source other than `world` going negative → 400
  `INSUFFICIENT_FUND` unless `force` (query `force=true` or body `"force": true`, OR-ed); a
  `reference` already used → 409 `CONFLICT`. Only successes consume ids and keys; ids start at 1;
- `POST /{ledger}/accounts/{address}/metadata` merges metadata, creating the account (204; same
  idempotency rules; the address is not checked, as the server does not);
- `POST /{ledger}/_bulk`: a JSON array of at most `bulk_max_size` elements (else 413
  `BULK_SIZE_EXCEEDED`; an undecodable element → 400 `VALIDATION` for the whole bulk;
  `atomic` with `parallel` → 412 `VALIDATION`). Elements (`CREATE_TRANSACTION`, `ADD_METADATA`,
  with an optional `ik`) run in order; after a failure the rest fail with `INTERNAL` ("context
  canceled") unless `continueOnFailure=true`; `atomic=true` rolls everything back when one
  fails (the answer still shows the others' data, as the server's does). One result per element
  (`responseType` = the action, or `ERROR` with `errorCode`/`errorDescription`, `logID`); status
  400 if any failed, else 200. Inside a bulk, postings that fail validation answer `INTERNAL`
  (the server wraps that error without its type) and an `ik` replay is not flagged;
- lists are cursors `{"cursor": {pageSize, hasMore, next, data}}`: `pageSize` default 15, clamped
  to 100; `next` is an opaque token carrying the query (other parameters are then ignored but
  `pageSize`); transactions newest first (`reverse=true`: oldest first), accounts by address.
  Filters are the query-builder JSON in the body or the `query` parameter (`$match`, `$and`,
  `$or`, `$not`, `$lt`, `$lte`, `$gt`, `$gte`: the operators of Ledger v2.3.0, the version the
  deploy files pin, whose go-libs query parser has no `$in` and answers 400 VALIDATION
  "unexpected operator $in"); addresses match exactly, or segment by
  segment when partial (an empty segment matches any one segment; a trailing `...` any rest);
- `HEAD /{ledger}/transactions` and `HEAD /{ledger}/accounts` answer 204 with a `Count` header;
  `GET /{ledger}/aggregate/balances` sums balances per asset over the matching accounts.

Liberties: no numscript (a `script` answers 400 `VALIDATION`), no schemas, point-in-time,
reverts, logs or pipelines; `previous` cursors are not given. Authentication is off unless
`require_oauth(client_id, client_secret)`: then `POST /api/auth/oauth/token` (the SDK's default
token URL) grants client-credentials tokens and the ledger routes answer 401 without one.

Test controls: `available = False` (every request answers 503 text/plain, as a gateway with no
upstream would, without being applied); `await stop()` / `await start()` (the port closes, then
listens again); `fail_next(count, status, operation)` (answer an `INTERNAL` error without applying);
`drop_next_answer(operation, hang_s=None)` (apply, then close the connection without an answer, or
answer only after `hang_s`). Operations are named as the SDK's operation ids (`v2CreateTransaction`,
`v2CreateBulk`, ...). Observations: `requests` ((method, path, operation) in order),
`operation_counts`, `ledger(name)` (its `transactions`, `accounts`, `references`),
`balance(...)`, `tokens_issued`, `authorizations` (the Authorization headers received).

Run it with `async with running_emulator() as (url, emulator):` (127.0.0.1, a free port).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import copy
import datetime as dt
import hashlib
import json
import re
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from aiohttp import web

API = "/api/ledger/v2"
TOKEN_PATH = "/api/auth/oauth/token"
WORLD = "world"
DEFAULT_PAGE_SIZE = 15
MAX_PAGE_SIZE = 100
DEFAULT_BULK_MAX_SIZE = 100
DEFAULT_BUCKET = "_default"

# internal/api/common/errors.go + middleware_resolver.go, go-libs transport/api (INTERNAL,
# NOT_FOUND), and the v2 error enum of the SDK (TIMEOUT, IMPORT, ...).
ERROR_CODES = frozenset({
    "INTERNAL", "INSUFFICIENT_FUND", "VALIDATION", "CONFLICT", "COMPILATION_FAILED",
    "METADATA_OVERRIDE", "NOT_FOUND", "REVERT_OCCURRING", "ALREADY_REVERT", "NO_POSTINGS",
    "LEDGER_NOT_FOUND", "IMPORT", "TIMEOUT", "BULK_SIZE_EXCEEDED", "INTERPRETER_PARSE",
    "INTERPRETER_RUNTIME", "LEDGER_ALREADY_EXISTS", "SCHEMA_ALREADY_EXISTS",
    "SCHEMA_NOT_SPECIFIED", "OUTDATED_SCHEMA",
})

ADDRESS_PATTERN = re.compile(r"^[a-zA-Z0-9_-]+(:[a-zA-Z0-9_-]+)*$")
ASSET_PATTERN = re.compile(r"^[A-Z][A-Z0-9]{0,16}(_[A-Z]{1,16})?(/\d{1,6})?$")
LEDGER_NAME_PATTERN = re.compile(r"^[0-9a-zA-Z_-]{1,63}$")

ACTION_CREATE_TRANSACTION = "CREATE_TRANSACTION"
ACTION_ADD_METADATA = "ADD_METADATA"
_BULK_ACTIONS = frozenset({ACTION_CREATE_TRANSACTION, ACTION_ADD_METADATA})


class LedgerApiError(Exception):
    """An error answer of the ledger: HTTP status, a code of the closed set, a message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        if code not in ERROR_CODES:
            raise ValueError(f"{code} is not an error code of the ledger")
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _bad_request(code: str, message: str) -> LedgerApiError:
    return LedgerApiError(400, code, message)


# ---------------------------------------------------------------- state


@dataclass
class Volumes:
    input: int = 0
    output: int = 0

    @property
    def balance(self) -> int:
        return self.input - self.output

    def render(self) -> dict[str, int]:
        return {"input": self.input, "output": self.output, "balance": self.balance}


@dataclass(frozen=True, slots=True)
class StoredPosting:
    source: str
    destination: str
    amount: int
    asset: str

    def render(self) -> dict[str, Any]:
        return {"source": self.source, "destination": self.destination,
                "amount": self.amount, "asset": self.asset}


@dataclass
class StoredTransaction:
    id: int
    postings: tuple[StoredPosting, ...]
    metadata: dict[str, str]
    reference: str | None
    timestamp: dt.datetime
    inserted_at: dt.datetime
    post_commit_volumes: dict[str, dict[str, Volumes]]

    def touches(self, pattern: str, *, sources: bool = True, destinations: bool = True) -> bool:
        return any(
            (sources and address_matches(pattern, p.source))
            or (destinations and address_matches(pattern, p.destination))
            for p in self.postings
        )

    def render(self, *, volumes: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "postings": [p.render() for p in self.postings],
            "metadata": dict(self.metadata),
            "timestamp": _render_time(self.timestamp),
            "insertedAt": _render_time(self.inserted_at),
            "updatedAt": _render_time(self.inserted_at),
            "reverted": False,
        }
        if self.reference:
            body["reference"] = self.reference
        if volumes:
            body["postCommitVolumes"] = {
                address: {asset: v.render() for asset, v in by_asset.items()}
                for address, by_asset in self.post_commit_volumes.items()
            }
            body["preCommitVolumes"] = self._pre_commit_volumes()
        return body

    def _pre_commit_volumes(self) -> dict[str, dict[str, dict[str, int]]]:
        pre = {address: {asset: Volumes(v.input, v.output) for asset, v in by_asset.items()}
               for address, by_asset in self.post_commit_volumes.items()}
        for p in self.postings:
            pre[p.source][p.asset].output -= p.amount
            pre[p.destination][p.asset].input -= p.amount
        return {address: {asset: v.render() for asset, v in by_asset.items()}
                for address, by_asset in pre.items()}


@dataclass
class StoredAccount:
    address: str
    metadata: dict[str, str]
    first_usage: dt.datetime
    insertion_date: dt.datetime
    updated_at: dt.datetime
    volumes: dict[str, Volumes] = field(default_factory=dict)

    def render(self, *, volumes: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "address": self.address,
            "metadata": dict(self.metadata),
            "firstUsage": _render_time(self.first_usage),
            "insertionDate": _render_time(self.insertion_date),
            "updatedAt": _render_time(self.updated_at),
        }
        if volumes and self.volumes:
            body["volumes"] = {asset: v.render() for asset, v in self.volumes.items()}
        return body


@dataclass
class _Replay:
    """What an idempotency key answers again: the hash of its input and the first outcome."""

    input_hash: str
    log_id: int
    transaction: StoredTransaction | None


@dataclass
class EmulatedLedger:
    name: str
    id: int
    bucket: str
    metadata: dict[str, str]
    features: dict[str, str]
    added_at: dt.datetime
    transactions: list[StoredTransaction] = field(default_factory=list)
    accounts: dict[str, StoredAccount] = field(default_factory=dict)
    references: dict[str, int] = field(default_factory=dict)
    idempotency: dict[str, _Replay] = field(default_factory=dict)
    last_log_id: int = 0

    def render(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "bucket": self.bucket,
                "metadata": dict(self.metadata), "features": dict(self.features),
                "addedAt": _render_time(self.added_at)}

    def next_log_id(self) -> int:
        self.last_log_id += 1
        return self.last_log_id


# pkg/features/features.go DefaultFeatures
DEFAULT_FEATURES = {
    "MOVES_HISTORY": "ON",
    "MOVES_HISTORY_POST_COMMIT_EFFECTIVE_VOLUMES": "SYNC",
    "HASH_LOGS": "SYNC",
    "ACCOUNT_METADATA_HISTORY": "SYNC",
    "TRANSACTION_METADATA_HISTORY": "SYNC",
}


# ---------------------------------------------------------------- request models


@dataclass(frozen=True, slots=True)
class _TransactionRequest:
    postings: tuple[dict[str, Any], ...]
    script: dict[str, Any]
    timestamp: dt.datetime | None
    reference: str
    metadata: dict[str, str]
    account_metadata: dict[str, dict[str, str]]
    runtime: str
    force: bool

    def with_force(self, force: bool) -> _TransactionRequest:
        return _TransactionRequest(self.postings, self.script, self.timestamp, self.reference,
                                   self.metadata, self.account_metadata, self.runtime,
                                   self.force or force)

    def has_script(self) -> bool:
        return bool(self.script.get("plain") or self.script.get("template"))

    def validated_postings(self) -> tuple[StoredPosting, ...]:
        """ledger.Postings.Validate: amount present and not negative, addresses, assets."""
        checked = []
        for raw in self.postings:
            amount = raw.get("amount")
            if amount is None:
                raise _bad_request("VALIDATION", "no amount defined")
            if amount < 0:
                raise _bad_request("VALIDATION", "negative amount")
            if not ADDRESS_PATTERN.fullmatch(raw.get("source", "")):
                raise _bad_request("VALIDATION", "invalid source address")
            if not ADDRESS_PATTERN.fullmatch(raw.get("destination", "")):
                raise _bad_request("VALIDATION", "invalid destination address")
            if not ASSET_PATTERN.fullmatch(raw.get("asset", "")):
                raise _bad_request("VALIDATION", "invalid asset")
            checked.append(StoredPosting(raw["source"], raw["destination"], amount, raw["asset"]))
        return tuple(checked)

    def input_hash(self) -> str:
        """What the server hashes for idempotency: the whole input, force included."""
        return _hash({
            "kind": "createTransaction",
            "postings": list(self.postings),
            "script": self.script,
            "timestamp": None if self.timestamp is None else _render_time(self.timestamp),
            "reference": self.reference,
            "metadata": self.metadata,
            "accountMetadata": self.account_metadata,
            "runtime": self.runtime,
            "force": self.force,
        })


class _DecodeError(Exception):
    """The JSON does not decode into the server's types (Go's json.Unmarshal would fail)."""


def _decode_transaction(raw: Any) -> _TransactionRequest:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise _DecodeError("transaction request must be an object")
    postings_raw = raw.get("postings") or []
    if not isinstance(postings_raw, list):
        raise _DecodeError("postings must be an array")
    postings = []
    for item in postings_raw:
        if not isinstance(item, dict):
            raise _DecodeError("a posting must be an object")
        posting: dict[str, Any] = {}
        for key in ("source", "destination", "asset"):
            value = item.get(key)
            if value is not None and not isinstance(value, str):
                raise _DecodeError(f"posting {key} must be a string")
            posting[key] = value or ""
        amount = item.get("amount")
        if amount is not None and (isinstance(amount, bool) or not isinstance(amount, int)):
            raise _DecodeError("posting amount must be an integer")
        posting["amount"] = amount
        postings.append(posting)
    script = raw.get("script") or {}
    if not isinstance(script, dict):
        raise _DecodeError("script must be an object")
    reference = raw.get("reference") or ""
    if not isinstance(reference, str):
        raise _DecodeError("reference must be a string")
    runtime = raw.get("runtime") or ""
    if not isinstance(runtime, str):
        raise _DecodeError("runtime must be a string")
    force = raw.get("force", False)
    if not isinstance(force, bool):
        raise _DecodeError("force must be a boolean")
    account_metadata_raw = raw.get("accountMetadata") or {}
    if not isinstance(account_metadata_raw, dict):
        raise _DecodeError("accountMetadata must be an object")
    return _TransactionRequest(
        postings=tuple(postings),
        script=script,
        timestamp=_decode_time(raw.get("timestamp")),
        reference=reference,
        metadata=_decode_metadata(raw.get("metadata")),
        account_metadata={address: _decode_metadata(m)
                          for address, m in account_metadata_raw.items()},
        runtime=runtime,
        force=force,
    )


def _decode_metadata(raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise _DecodeError("metadata must be an object of strings")
    return dict(raw)


def _decode_time(raw: Any) -> dt.datetime | None:
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str):
        raise _DecodeError("a time must be an RFC 3339 string")
    try:
        parsed = dt.datetime.fromisoformat(raw)
    except ValueError:
        raise _DecodeError(f"invalid time {raw!r}") from None
    if parsed.tzinfo is None:
        raise _DecodeError(f"time {raw!r} has no offset (RFC 3339)")
    return parsed.astimezone(dt.UTC)


def _render_time(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _hash(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class _BulkElement:
    action: str
    ik: str
    data: Any  # _TransactionRequest or _MetadataRequest


@dataclass(frozen=True, slots=True)
class _MetadataRequest:
    target_type: str
    target_id: Any
    metadata: dict[str, str]


def _decode_bulk_element(raw: Any) -> _BulkElement:
    if not isinstance(raw, dict):
        raise _DecodeError("a bulk element must be an object")
    action = raw.get("action")
    ik = raw.get("ik") or ""
    if not isinstance(ik, str):
        raise _DecodeError("ik must be a string")
    if action == ACTION_CREATE_TRANSACTION:
        return _BulkElement(action, ik, _decode_transaction(raw.get("data")))
    if action == ACTION_ADD_METADATA:
        data = raw.get("data")
        if not isinstance(data, dict):
            raise _DecodeError("error parsing element: data must be an object")
        target_type = data.get("targetType")
        if not isinstance(target_type, str):
            raise _DecodeError("error parsing element: targetType must be a string")
        return _BulkElement(action, ik, _MetadataRequest(
            target_type, data.get("targetId"), _decode_metadata(data.get("metadata"))))
    # The server has REVERT_TRANSACTION and DELETE_METADATA too; the emulator does not.
    raise _DecodeError(f"error parsing element: unsupported action {action!r}")


# ---------------------------------------------------------------- filters


def _is_partial(pattern: str) -> bool:
    segments = pattern.split(":")
    return any(s == "" or (s == "..." and i == len(segments) - 1)
               for i, s in enumerate(segments))


def address_matches(pattern: str, address: str) -> bool:
    """The server's address filter: exact, or segment by segment when the pattern is partial."""
    if not _is_partial(pattern):
        return address == pattern
    wanted = pattern.split(":")
    parts = address.split(":")
    if wanted[-1] != "..." and len(parts) != len(wanted):
        return False
    for index, segment in enumerate(wanted):
        if segment in ("", "..."):
            continue
        if index >= len(parts) or parts[index] != segment:
            return False
    return True


Predicate = Callable[[Any], bool]
_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "$lt": lambda a, b: a < b, "$lte": lambda a, b: a <= b,
    "$gt": lambda a, b: a > b, "$gte": lambda a, b: a >= b,
}


def _single_key(node: Any) -> tuple[str, Any]:
    if not isinstance(node, dict) or len(node) != 1:
        raise _bad_request("VALIDATION", "a query node must be an object with one key")
    ((key, value),) = node.items()
    return key, value


def _compile_filter(node: Any, resolve: Callable[[str, str, Any], Predicate]) -> Predicate:
    """go-libs query.ParseJSON, evaluated in memory; `resolve(operator, property, value)`."""
    operator, value = _single_key(node)
    if operator in ("$and", "$or"):
        if not isinstance(value, list):
            raise _bad_request("VALIDATION", f"{operator} needs an array")
        parts = [_compile_filter(item, resolve) for item in value]
        if operator == "$and":
            return lambda item: all(p(item) for p in parts)
        return lambda item: any(p(item) for p in parts)
    if operator == "$not":
        inner = _compile_filter(value, resolve)
        return lambda item: not inner(item)
    if operator in ("$match", *_COMPARISONS):
        prop, operand = _single_key(value)
        return resolve(operator, prop, operand)
    raise _bad_request("VALIDATION", f"unexpected operator {operator}")


def _metadata_key(prop: str) -> str | None:
    match = re.fullmatch(r"metadata\[(.+)\]", prop)
    return None if match is None else match.group(1)


def _resolve_transaction_filter(operator: str, prop: str, operand: Any) -> Predicate:
    if prop in ("account", "source", "destination"):
        sources = prop in ("account", "source")
        destinations = prop in ("account", "destination")
        if operator != "$match" or not isinstance(operand, str):
            raise _bad_request("VALIDATION", f"unsupported filter on {prop}")
        return lambda tx: tx.touches(operand, sources=sources, destinations=destinations)
    if prop == "reference":
        if operator == "$match":
            return lambda tx: tx.reference == operand
        raise _bad_request("VALIDATION", "unsupported filter on reference")
    if prop == "id":
        if operator == "$match":
            return lambda tx: tx.id == operand
        if operator in _COMPARISONS:
            compare = _COMPARISONS[operator]
            return lambda tx: compare(tx.id, operand)
        raise _bad_request("VALIDATION", "unsupported filter on id")
    key = _metadata_key(prop)
    if key is not None and operator == "$match":
        return lambda tx: tx.metadata.get(key) == operand
    raise _bad_request("VALIDATION", f"unsupported filter: {prop}")


def _resolve_account_filter(operator: str, prop: str, operand: Any) -> Predicate:
    if prop in ("address", "account"):
        if operator != "$match" or not isinstance(operand, str):
            raise _bad_request("VALIDATION", f"unsupported filter on {prop}")
        return lambda account: address_matches(operand, account.address)
    key = _metadata_key(prop)
    if key is not None and operator == "$match":
        return lambda account: account.metadata.get(key) == operand
    raise _bad_request("VALIDATION", f"invalid filter property {prop}")


# ---------------------------------------------------------------- controls


@dataclass
class _Failure:
    status: int
    operation: str | None


@dataclass
class _Drop:
    operation: str
    hang_s: float | None


class RunningEmulator(NamedTuple):
    url: str
    emulator: FormanceEmulator


class FormanceEmulator:
    """The ledgers, the HTTP app that serves them, and the test controls."""

    def __init__(self, *, bulk_max_size: int = DEFAULT_BULK_MAX_SIZE,
                 clock: Callable[[], dt.datetime] | None = None) -> None:
        self.bulk_max_size = bulk_max_size
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self.ledgers: dict[str, EmulatedLedger] = {}
        self.available = True
        self.requests: list[tuple[str, str, str]] = []
        self.operation_counts: Counter[str] = Counter()
        self._failures: list[_Failure] = []
        self._drops: list[_Drop] = []
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._oauth_client: tuple[str, str] | None = None
        self._tokens: set[str] = set()
        self.tokens_issued = 0
        self.authorizations: list[str] = []

    # ------------------------------------------------------------ controls

    def fail_next(self, count: int = 1, *, status: int = 503,
                  operation: str | None = None) -> None:
        """The next `count` requests (of `operation`, or any) answer `status` with an
        `INTERNAL` error body and are not applied (503 is what the server answers when its
        database has no free connection)."""
        self._failures.extend(_Failure(status, operation) for _ in range(count))

    def drop_next_answer(self, operation: str = "v2CreateTransaction", *,
                         hang_s: float | None = None) -> None:
        """Apply the next request of `operation`, then close the connection without an answer
        (a crash between commit and acknowledgement), or answer only after `hang_s` seconds."""
        self._drops.append(_Drop(operation, hang_s))

    def require_oauth(self, client_id: str, client_secret: str) -> None:
        """Ledger routes need a Bearer token granted to this client (client credentials)."""
        self._oauth_client = (client_id, client_secret)

    def ledger(self, name: str) -> EmulatedLedger:
        """Direct read access to a ledger's state for assertions (KeyError if unknown)."""
        return self.ledgers[name]

    def balance(self, ledger: str, address: str, asset: str) -> int:
        account = self.ledgers[ledger].accounts.get(address)
        if account is None or asset not in account.volumes:
            return 0
        return account.volumes[asset].balance

    def add_ledger(self, name: str) -> EmulatedLedger:
        """Create a ledger directly (as `POST /{ledger}` would)."""
        created = EmulatedLedger(name=name, id=len(self.ledgers) + 1, bucket=DEFAULT_BUCKET,
                                 metadata={}, features=dict(DEFAULT_FEATURES),
                                 added_at=self._clock())
        self.ledgers[name] = created
        return created

    # ------------------------------------------------------------ serving

    @property
    def url(self) -> str:
        if self._port is None:
            raise RuntimeError("the emulator was never started")
        return f"http://127.0.0.1:{self._port}"

    async def start(self) -> str:
        """Listen on 127.0.0.1 (a free port the first time, the same port afterwards)."""
        if self._runner is not None:
            return self.url
        runner = web.AppRunner(self.make_app(), shutdown_timeout=0.5, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self._port or 0, reuse_address=True)
        await site.start()
        self._runner = runner
        self._port = int(runner.addresses[0][1])
        return self.url

    async def stop(self) -> None:
        """Stop listening and close open connections: clients get connection refused."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    def make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        ledger = API + "/{ledger}"
        routes: list[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]],
                           str]] = [
            ("POST", TOKEN_PATH, self._token, "oauthToken"),
            ("GET", ledger, self._get_ledger, "v2GetLedger"),
            ("POST", ledger, self._create_ledger, "v2CreateLedger"),
            ("GET", ledger + "/_info", self._ledger_info, "v2GetLedgerInfo"),
            ("POST", ledger + "/_bulk", self._bulk, "v2CreateBulk"),
            ("GET", ledger + "/transactions", self._list_transactions, "v2ListTransactions"),
            ("HEAD", ledger + "/transactions", self._count_transactions,
             "v2CountTransactions"),
            ("POST", ledger + "/transactions", self._create_transaction,
             "v2CreateTransaction"),
            ("GET", ledger + "/transactions/{id}", self._get_transaction, "v2GetTransaction"),
            ("GET", ledger + "/accounts", self._list_accounts, "v2ListAccounts"),
            ("HEAD", ledger + "/accounts", self._count_accounts, "v2CountAccounts"),
            ("GET", ledger + "/accounts/{address}", self._get_account, "v2GetAccount"),
            ("POST", ledger + "/accounts/{address}/metadata", self._add_account_metadata,
             "v2AddMetadataToAccount"),
            ("GET", ledger + "/aggregate/balances", self._aggregated_balances,
             "v2GetBalancesAggregated"),
        ]
        for method, path, handler, name in routes:
            if method == "GET":
                app.router.add_get(path, handler, name=name, allow_head=False)
            else:
                app.router.add_route(method, path, handler, name=name)
        return app

    @web.middleware
    async def _middleware(
        self, request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        operation = request.match_info.route.name or "unknown"
        self.requests.append((request.method, request.path, operation))
        self.operation_counts[operation] += 1
        if not self.available:
            return web.Response(status=503, text="no healthy upstream", content_type="text/plain")
        self.authorizations.append(request.headers.get("Authorization", ""))
        if self._oauth_client is not None and operation != "oauthToken":
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            if scheme != "Bearer" or token not in self._tokens:
                return web.Response(status=401, text="unauthorized", content_type="text/plain")
        failure = next((f for f in self._failures
                        if f.operation is None or f.operation == operation), None)
        if failure is not None:
            self._failures.remove(failure)
            return _error_response(LedgerApiError(
                failure.status, "INTERNAL", "Internal error. Consult logs/traces to have more "
                "details."))
        try:
            response = await handler(request)
        except LedgerApiError as exc:
            response = _error_response(exc)
        drop = next((d for d in self._drops if d.operation == operation), None)
        if drop is not None:
            self._drops.remove(drop)
            if drop.hang_s is None:
                if request.transport is not None:
                    request.transport.close()
            else:
                await asyncio.sleep(drop.hang_s)
        return response

    async def _token(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        granted = (str(form.get("client_id", "")), str(form.get("client_secret", "")))
        if (form.get("grant_type") != "client_credentials" or self._oauth_client is None
                or granted != self._oauth_client):
            return web.json_response({"error": "invalid_client"}, status=401)
        self.tokens_issued += 1
        token = f"emulated-token-{self.tokens_issued}"
        self._tokens.add(token)
        return web.json_response({"access_token": token, "token_type": "Bearer",
                                  "expires_in": 3600})

    # ------------------------------------------------------------ ledgers

    def _known_ledger(self, request: web.Request) -> EmulatedLedger:
        """common.LedgerMiddleware: 404 LEDGER_NOT_FOUND for a ledger that does not exist."""
        name = request.match_info["ledger"]
        found = self.ledgers.get(name)
        if found is None:
            raise LedgerApiError(404, "LEDGER_NOT_FOUND", f"ledger {name} not found")
        return found

    async def _get_ledger(self, request: web.Request) -> web.StreamResponse:
        found = self.ledgers.get(request.match_info["ledger"])
        if found is None:
            raise LedgerApiError(404, "NOT_FOUND", "not found")
        return _ok(found.render())

    async def _create_ledger(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["ledger"]
        raw = await request.read()
        configuration: Any = {}
        if raw:
            try:
                configuration = json.loads(raw)
            except ValueError as exc:
                raise _bad_request("VALIDATION", str(exc)) from None
            if not isinstance(configuration, dict):
                raise _bad_request("VALIDATION", "ledger configuration must be an object")
        if not LEDGER_NAME_PATTERN.fullmatch(name):
            raise _bad_request("VALIDATION", f"invalid ledger name {name!r}")
        if name in self.ledgers:
            raise _bad_request("LEDGER_ALREADY_EXISTS", "ledger already exists")
        created = self.add_ledger(name)
        try:
            created.metadata = _decode_metadata(configuration.get("metadata"))
            created.features.update(_decode_metadata(configuration.get("features")))
        except _DecodeError as exc:
            del self.ledgers[name]
            raise _bad_request("VALIDATION", str(exc)) from None
        bucket = configuration.get("bucket")
        if bucket:
            created.bucket = str(bucket)
        return web.Response(status=204)

    async def _ledger_info(self, request: web.Request) -> web.StreamResponse:
        found = self._known_ledger(request)
        return _ok({"name": found.name, "storage": {"migrations": [
            {"version": "1", "name": "emulated", "date": _render_time(found.added_at),
             "state": "DONE"}]}})

    # ------------------------------------------------------------ transactions

    async def _create_transaction(self, request: web.Request) -> web.StreamResponse:
        ledger = self._known_ledger(request)
        try:
            payload = _decode_transaction(await _json_body(request))
        except _DecodeError as exc:
            raise _bad_request("VALIDATION", str(exc)) from None
        if payload.postings and payload.has_script():
            raise _bad_request("VALIDATION", "cannot pass postings and numscript in the same "
                               "request")
        if not payload.postings and not payload.has_script():
            raise _bad_request("NO_POSTINGS", "you must pass either a posting array, a "
                               "numscript script, or a template")
        if payload.has_script():
            raise _bad_request("VALIDATION", "the emulator does not run numscript")
        payload = payload.with_force(_query_bool(request, "force"))
        payload.validated_postings()
        transaction, _, hit = self._commit_transaction(
            ledger, payload, request.headers.get("Idempotency-Key", ""))
        response = _ok(transaction.render(volumes=True))
        if hit:
            response.headers["Idempotency-Hit"] = "true"
        return response

    def _commit_transaction(self, ledger: EmulatedLedger, payload: _TransactionRequest,
                            ik: str) -> tuple[StoredTransaction, int, bool]:
        """The controller's CreateTransaction: idempotency first, then execution, then insert.
        Answers (transaction, log id, idempotency hit)."""
        input_hash = payload.input_hash()
        if ik:
            replay = ledger.idempotency.get(ik)
            if replay is not None:
                if replay.input_hash != input_hash or replay.transaction is None:
                    raise _bad_request("VALIDATION", f"invalid idempotency hash when using "
                                       f"idempotency key '{ik}'")
                return replay.transaction, replay.log_id, True
        postings = payload.validated_postings()
        if not postings:
            raise _bad_request("NO_POSTINGS", "numscript execution returned no postings")
        moves = self._execute(ledger, postings, force=payload.force)
        if payload.reference and payload.reference in ledger.references:
            raise LedgerApiError(409, "CONFLICT", f"duplicate reference {payload.reference!r}")
        now = self._clock()
        timestamp = payload.timestamp or now
        for address in moves:
            account = self._touch_account(ledger, address, now, timestamp)
            for asset, (inputs, outputs) in moves[address].items():
                volumes = account.volumes.setdefault(asset, Volumes())
                volumes.input += inputs
                volumes.output += outputs
        for address, extra in payload.account_metadata.items():
            self._touch_account(ledger, address, now, timestamp).metadata.update(extra)
        transaction = StoredTransaction(
            id=len(ledger.transactions) + 1,
            postings=postings,
            metadata=dict(payload.metadata),
            reference=payload.reference or None,
            timestamp=timestamp,
            inserted_at=now,
            post_commit_volumes={
                address: {asset: copy.copy(ledger.accounts[address].volumes[asset])
                          for asset in by_asset}
                for address, by_asset in moves.items()
            },
        )
        ledger.transactions.append(transaction)
        if transaction.reference:
            ledger.references[transaction.reference] = transaction.id
        log_id = ledger.next_log_id()
        if ik:
            ledger.idempotency[ik] = _Replay(input_hash, log_id, transaction)
        return transaction, log_id, False

    @staticmethod
    def _execute(ledger: EmulatedLedger, postings: Iterable[StoredPosting], *,
                 force: bool) -> dict[str, dict[str, tuple[int, int]]]:
        """Postings in order, as the machine sends them: a source other than `world` may not
        go below zero unless forced. Answers address → asset → (input, output) moved."""
        balances: dict[tuple[str, str], int] = {}
        moves: dict[str, dict[str, tuple[int, int]]] = {}

        def balance(address: str, asset: str) -> int:
            if (address, asset) not in balances:
                account = ledger.accounts.get(address)
                volumes = None if account is None else account.volumes.get(asset)
                balances[(address, asset)] = 0 if volumes is None else volumes.balance
            return balances[(address, asset)]

        for p in postings:
            available = balance(p.source, p.asset)
            if p.source != WORLD and not force and available < p.amount:
                raise _bad_request(
                    "INSUFFICIENT_FUND",
                    f"account had insufficient funds: {p.source} has {available} {p.asset}, "
                    f"{p.amount} needed")
            balances[(p.source, p.asset)] = available - p.amount
            balances[(p.destination, p.asset)] = balance(p.destination, p.asset) + p.amount
            inputs, outputs = moves.setdefault(p.source, {}).get(p.asset, (0, 0))
            moves[p.source][p.asset] = (inputs, outputs + p.amount)
            inputs, outputs = moves.setdefault(p.destination, {}).get(p.asset, (0, 0))
            moves[p.destination][p.asset] = (inputs + p.amount, outputs)
        return moves

    @staticmethod
    def _touch_account(ledger: EmulatedLedger, address: str, now: dt.datetime,
                       first_usage: dt.datetime) -> StoredAccount:
        account = ledger.accounts.get(address)
        if account is None:
            account = StoredAccount(address, {}, first_usage, now, now)
            ledger.accounts[address] = account
        elif first_usage < account.first_usage:
            account.first_usage = first_usage
        return account

    async def _get_transaction(self, request: web.Request) -> web.StreamResponse:
        ledger = self._known_ledger(request)
        try:
            wanted = int(request.match_info["id"])
        except ValueError:
            raise _bad_request("VALIDATION", "invalid transaction id") from None
        found = next((tx for tx in ledger.transactions if tx.id == wanted), None)
        if found is None:
            raise LedgerApiError(404, "NOT_FOUND", "transaction not found")
        return _ok(found.render(volumes=_expands(request, "volumes")))

    async def _list_transactions(self, request: web.Request) -> web.StreamResponse:
        ledger = self._known_ledger(request)
        query = await _paginated_query(request, order="asc" if _query_bool(request, "reverse")
                                       else "desc")
        matches = _compile_optional(query.filter, _resolve_transaction_filter)
        selected = [tx for tx in ledger.transactions if matches(tx)]
        selected.sort(key=lambda tx: tx.id, reverse=query.order == "desc")
        if query.after is not None:
            selected = [tx for tx in selected
                        if (tx.id < query.after if query.order == "desc" else tx.id > query.after)]
        page = selected[:query.page_size]
        has_more = len(selected) > query.page_size
        volumes = "volumes" in query.expand
        return _cursor(
            [tx.render(volumes=volumes) for tx in page], query, has_more,
            after=page[-1].id if page else None)

    async def _count_transactions(self, request: web.Request) -> web.StreamResponse:
        ledger = self._known_ledger(request)
        matches = _compile_optional(await _filter_of(request), _resolve_transaction_filter)
        return web.Response(status=204, headers={
            "Count": str(sum(1 for tx in ledger.transactions if matches(tx)))})

    # ------------------------------------------------------------ accounts

    async def _get_account(self, request: web.Request) -> web.StreamResponse:
        ledger = self._known_ledger(request)
        account = ledger.accounts.get(request.match_info["address"])
        if account is None:
            raise LedgerApiError(404, "NOT_FOUND", "account not found")
        return _ok(account.render(volumes=_expands(request, "volumes")))

    async def _list_accounts(self, request: web.Request) -> web.StreamResponse:
        ledger = self._known_ledger(request)
        query = await _paginated_query(request, order="asc")
        matches = _compile_optional(query.filter, _resolve_account_filter)
        selected = sorted((a for a in ledger.accounts.values() if matches(a)),
                          key=lambda a: a.address, reverse=query.order == "desc")
        if query.after is not None:
            selected = [a for a in selected
                        if (a.address < query.after if query.order == "desc"
                            else a.address > query.after)]
        page = selected[:query.page_size]
        has_more = len(selected) > query.page_size
        volumes = "volumes" in query.expand
        return _cursor([a.render(volumes=volumes) for a in page], query, has_more,
                       after=page[-1].address if page else None)

    async def _count_accounts(self, request: web.Request) -> web.StreamResponse:
        ledger = self._known_ledger(request)
        matches = _compile_optional(await _filter_of(request), _resolve_account_filter)
        return web.Response(status=204, headers={
            "Count": str(sum(1 for a in ledger.accounts.values() if matches(a)))})

    async def _add_account_metadata(self, request: web.Request) -> web.StreamResponse:
        ledger = self._known_ledger(request)
        address = request.match_info["address"]
        try:
            metadata = _decode_metadata(await _json_body(request))
        except _DecodeError as exc:
            raise _bad_request("VALIDATION", str(exc)) from None
        hit = self._save_account_metadata(ledger, address, metadata,
                                          request.headers.get("Idempotency-Key", ""))[1]
        response = web.Response(status=204)
        if hit:
            response.headers["Idempotency-Hit"] = "true"
        return response

    def _save_account_metadata(self, ledger: EmulatedLedger, address: str,
                               metadata: dict[str, str], ik: str) -> tuple[int, bool]:
        # The server upserts the account without checking its address.
        input_hash = _hash({"kind": "saveAccountMetadata", "address": address,
                            "metadata": metadata})
        if ik:
            replay = ledger.idempotency.get(ik)
            if replay is not None:
                if replay.input_hash != input_hash:
                    raise _bad_request("VALIDATION", f"invalid idempotency hash when using "
                                       f"idempotency key '{ik}'")
                return replay.log_id, True
        now = self._clock()
        account = self._touch_account(ledger, address, now, now)
        account.metadata.update(metadata)
        account.updated_at = now
        log_id = ledger.next_log_id()
        if ik:
            ledger.idempotency[ik] = _Replay(input_hash, log_id, None)
        return log_id, False

    def _save_transaction_metadata(self, ledger: EmulatedLedger, target: Any,
                                   metadata: dict[str, str], ik: str) -> int:
        if isinstance(target, bool) or not isinstance(target, int):
            raise _bad_request("VALIDATION", "targetId of a transaction must be an integer")
        input_hash = _hash({"kind": "saveTransactionMetadata", "id": target,
                            "metadata": metadata})
        if ik:
            replay = ledger.idempotency.get(ik)
            if replay is not None:
                if replay.input_hash != input_hash:
                    raise _bad_request("VALIDATION", f"invalid idempotency hash when using "
                                       f"idempotency key '{ik}'")
                return replay.log_id
        found = next((tx for tx in ledger.transactions if tx.id == target), None)
        if found is None:
            raise LedgerApiError(404, "NOT_FOUND", "transaction not found")
        found.metadata.update(metadata)
        log_id = ledger.next_log_id()
        if ik:
            ledger.idempotency[ik] = _Replay(input_hash, log_id, None)
        return log_id

    async def _aggregated_balances(self, request: web.Request) -> web.StreamResponse:
        ledger = self._known_ledger(request)
        matches = _compile_optional(await _filter_of(request), _resolve_account_filter)
        totals: dict[str, int] = {}
        for account in ledger.accounts.values():
            if matches(account):
                for asset, volumes in account.volumes.items():
                    totals[asset] = totals.get(asset, 0) + volumes.balance
        return _ok(totals)

    # ------------------------------------------------------------ bulk

    async def _bulk(self, request: web.Request) -> web.StreamResponse:
        ledger = self._known_ledger(request)
        content_type = request.headers.get("Content-Type", "application/json").split(";")[0]
        if content_type.strip() != "application/json":
            raise _bad_request("VALIDATION", f"unsupported content type: {content_type}")
        raw = await _json_body(request)
        if not isinstance(raw, list):
            raise _bad_request("VALIDATION", "a bulk is a JSON array")
        try:
            elements = [_decode_bulk_element(item) for item in raw]
        except _DecodeError as exc:
            raise _bad_request("VALIDATION", str(exc)) from None
        if self.bulk_max_size and len(elements) > self.bulk_max_size:
            raise LedgerApiError(413, "BULK_SIZE_EXCEEDED",
                                 f"bulk size exceeded, max size is {self.bulk_max_size}")
        atomic = _query_bool(request, "atomic")
        if atomic and _query_bool(request, "parallel"):
            raise LedgerApiError(412, "VALIDATION",
                                 "atomic and parallel options are mutually exclusive")
        continue_on_failure = _query_bool(request, "continueOnFailure")
        snapshot = copy.deepcopy(ledger) if atomic else None
        results: list[dict[str, Any]] = []
        failed = False
        for element in elements:
            if failed and not continue_on_failure:
                results.append(_bulk_error("INTERNAL", "context canceled"))
                continue
            try:
                results.append(self._bulk_element(ledger, element))
            except LedgerApiError as exc:
                failed = True
                results.append(_bulk_error(exc.code, exc.message))
        if failed and snapshot is not None:
            self.ledgers[ledger.name] = snapshot
        return web.json_response({"data": results}, status=400 if failed else 200)

    def _bulk_element(self, ledger: EmulatedLedger, element: _BulkElement) -> dict[str, Any]:
        if element.action == ACTION_CREATE_TRANSACTION:
            payload: _TransactionRequest = element.data
            if payload.has_script():
                raise _bad_request("VALIDATION", "the emulator does not run numscript")
            try:
                payload.validated_postings()
            except LedgerApiError as exc:
                # bulking.TransactionRequest.ToCore's error is wrapped with %s: its type is
                # lost and mapBulkElementError answers INTERNAL.
                raise LedgerApiError(400, "INTERNAL",
                                     f"error parsing element: {exc.message}") from None
            transaction, log_id, _ = self._commit_transaction(ledger, payload, element.ik)
            return {"responseType": element.action, "logID": log_id,
                    "data": transaction.render(volumes=True)}
        request: _MetadataRequest = element.data
        if request.target_type == "ACCOUNT":
            if not isinstance(request.target_id, str):
                raise LedgerApiError(400, "INTERNAL", "targetId of an account must be a string")
            log_id, _ = self._save_account_metadata(ledger, request.target_id,
                                                    request.metadata, element.ik)
        elif request.target_type == "TRANSACTION":
            log_id = self._save_transaction_metadata(ledger, request.target_id,
                                                     request.metadata, element.ik)
        else:
            raise LedgerApiError(400, "INTERNAL", f"invalid target type: {request.target_type}")
        return {"responseType": element.action, "logID": log_id}


def _bulk_error(code: str, description: str) -> dict[str, Any]:
    return {"responseType": "ERROR", "errorCode": code, "errorDescription": description,
            "logID": 0}


# ---------------------------------------------------------------- HTTP helpers


def _ok(data: Any) -> web.Response:
    return web.json_response({"data": data})


def _error_response(exc: LedgerApiError) -> web.Response:
    return web.json_response({"errorCode": exc.code, "errorMessage": exc.message},
                             status=exc.status)


def _query_bool(request: web.Request, key: str) -> bool:
    return request.query.get(key, "").lower() in ("1", "true")


def _expands(request: web.Request, what: str) -> bool:
    return any(what in value.split(",") for value in request.query.getall("expand", []))


async def _json_body(request: web.Request) -> Any:
    raw = await request.read()
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise _bad_request("VALIDATION", f"invalid JSON: {exc}") from None


async def _filter_of(request: web.Request) -> Any:
    """The query builder: the `query` parameter, else the body (getQueryBuilder)."""
    text = request.query.get("query") or (await request.read()).decode()
    if not text:
        return None
    try:
        parsed = json.loads(text)
    except ValueError as exc:
        raise _bad_request("VALIDATION", f"invalid query: {exc}") from None
    if parsed is not None and not isinstance(parsed, dict):
        raise _bad_request("VALIDATION", "a query must be an object")
    return parsed or None


def _compile_optional(node: Any, resolve: Callable[[str, str, Any], Predicate]) -> Predicate:
    if node is None:
        return lambda _: True
    return _compile_filter(node, resolve)


@dataclass(frozen=True, slots=True)
class _PageQuery:
    filter: Any
    page_size: int
    order: str
    expand: tuple[str, ...]
    after: Any  # the last key of the previous page, None on the first page


def _page_size(request: web.Request, default: int) -> int:
    raw = request.query.get("pageSize", "")
    if not raw:
        return default
    try:
        size = int(raw)
    except ValueError:
        raise _bad_request("VALIDATION", "invalid 'pageSize' query param") from None
    if size < 0:
        raise _bad_request("VALIDATION", "invalid 'pageSize' query param")
    if size == 0:
        return default
    return min(size, MAX_PAGE_SIZE)


async def _paginated_query(request: web.Request, *, order: str) -> _PageQuery:
    token = request.query.get("cursor")
    if token:
        try:
            saved = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
            query = _PageQuery(saved["filter"], int(saved["pageSize"]), str(saved["order"]),
                               tuple(saved["expand"]), saved["after"])
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise _bad_request("VALIDATION", "invalid cursor") from None
        return _PageQuery(query.filter, _page_size(request, query.page_size), query.order,
                          query.expand, query.after)
    expand = tuple(part for value in request.query.getall("expand", [])
                   for part in value.split(",") if part)
    return _PageQuery(await _filter_of(request), _page_size(request, DEFAULT_PAGE_SIZE),
                      order, expand, None)


def _cursor(data: list[dict[str, Any]], query: _PageQuery, has_more: bool,
            *, after: Any) -> web.Response:
    cursor: dict[str, Any] = {"pageSize": query.page_size, "hasMore": has_more, "data": data}
    if has_more:
        saved = {"filter": query.filter, "pageSize": query.page_size, "order": query.order,
                 "expand": list(query.expand), "after": after}
        cursor["next"] = base64.urlsafe_b64encode(
            json.dumps(saved).encode()).decode().rstrip("=")
    return web.json_response({"cursor": cursor})


@contextlib.asynccontextmanager
async def running_emulator(emulator: FormanceEmulator | None = None,
                           ) -> AsyncIterator[RunningEmulator]:
    """Serve an emulator (a new one unless given) on 127.0.0.1 at a free port for the block."""
    served = emulator or FormanceEmulator()
    url = await served.start()
    try:
        yield RunningEmulator(url, served)
    finally:
        await served.stop()
