"""Exchange trading accounts: connect with verified credentials, update, enable, disable,
disconnect, list, and their operation history (seeds/000, seeds/001)."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from decimal import Decimal

import asyncpg

from dealer.errors import ApiError, Errors
from dealer.secretbox import SecretBox
from dealer.services.credentials import load_secret, lock_credentials
from dealer.services.records import (
    ACCOUNT_COLUMNS,
    DEALER,
    EXCHANGE,
    TradingAccountRecord,
    credentials_of,
    load_account,
    record_operation,
)
from dealer.uow import UnitOfWork
from venues.base import CredentialRejected, VenueError
from venues.registry import VenueRegistry


@dataclass(frozen=True, slots=True)
class ConnectCommand:
    credential_ids: list[uuid.UUID]
    external_trading_account_id: str
    nickname: str | None


async def require_account(
    conn: asyncpg.Connection, trading_account_id: uuid.UUID, *, for_update: bool = False
) -> TradingAccountRecord:
    account = await load_account(conn, trading_account_id, for_update=for_update)
    if account is None:
        raise ApiError(Errors.TRADING_ACCOUNT_NOT_FOUND, details={"metadata": {
            "tradingAccountId": str(trading_account_id)}})
    return account


async def connect_account(
    uow: UnitOfWork, box: SecretBox, venues: VenueRegistry, cmd: ConnectCommand,
    now: dt.datetime,
) -> TradingAccountRecord:
    """Connect an exchange account: 404 unknown credential, 409 already connected,
    422 external id the credentials were not verified for. The connector is asked to make the
    account usable (and names its own reference to it) before anything is written."""
    conn = uow.conn
    credentials = await lock_credentials(conn, cmd.credential_ids)
    for credential in credentials:
        if credential.status == "REVOKED":
            raise ApiError(Errors.CREDENTIAL_REVOKED)
        if credential.status != "VERIFIED":
            raise ApiError(Errors.CREDENTIAL_NOT_VERIFIED, details={"metadata": {
                "credentialId": str(credential.credential_id)}})
    venue_names = {c.venue for c in credentials}
    if len(venue_names) != 1:
        raise ApiError(Errors.CREDENTIAL_VENUE_MISMATCH)
    identities = [c.identity(cmd.external_trading_account_id) for c in credentials]
    if any(i is None for i in identities):
        known = sorted({i["externalTradingAccountId"] for c in credentials for i in c.identities})
        raise ApiError(
            Errors.EXTERNAL_ACCOUNT_UNKNOWN,
            # the accounts the venue named, never the submitted text
            "Invalid external trading account ID; the credential gives access to: "
            f"{', '.join(known) or 'nothing'}",
        )
    identity = identities[0]
    assert identity is not None
    account_id = uuid.uuid4()
    venue = venue_names.pop()
    already = await conn.fetchval(
        """SELECT 1 FROM trading_account_credential
           WHERE live AND credential_id = ANY($1::uuid[]) AND external_trading_account_id = $2""",
        [c.credential_id for c in credentials], cmd.external_trading_account_id,
    )
    if already:
        raise ApiError(Errors.TRADING_ACCOUNT_ALREADY_CONNECTED)
    secret = await load_secret(conn, box, credentials[0].credential_id)
    try:
        venue_ref = await venues.execution(venue).connect_account(
            secret, cmd.external_trading_account_id)
    except CredentialRejected as exc:
        raise ApiError(Errors.CREDENTIAL_VERIFICATION_FAILED, f"{venue}: {exc}") from None
    except VenueError as exc:
        raise ApiError(Errors.VENUE_UNAVAILABLE, f"{venue}: {exc}") from None
    try:
        async with conn.transaction():  # savepoint: a 409 leaves the outer transaction usable
            await conn.execute(
                """INSERT INTO trading_account (trading_account_id, venue, kind,
                       external_trading_account_id, account_type, external_account_type,
                       nickname, status, created_at, updated_at, venue_ref)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, 'ACTIVE', $8, $8, $9)""",
                account_id, venue, EXCHANGE, cmd.external_trading_account_id,
                identity["accountType"], identity["externalAccountType"], cmd.nickname, now,
                venue_ref,
            )
            await conn.executemany(
                """INSERT INTO trading_account_credential
                       (trading_account_id, credential_id, external_trading_account_id)
                   VALUES ($1, $2, $3)""",
                [(account_id, c.credential_id, cmd.external_trading_account_id)
                 for c in credentials],
            )
    except asyncpg.UniqueViolationError:
        raise ApiError(Errors.TRADING_ACCOUNT_ALREADY_CONNECTED) from None
    await record_operation(conn, account_id, "CONNECT", now,
                           {"credentialIds": [str(c.credential_id) for c in credentials]})
    account = await require_account(conn, account_id)
    await uow.commit()
    return account


async def _mutable_account(conn: asyncpg.Connection, trading_account_id: uuid.UUID
                           ) -> TradingAccountRecord:
    account = await require_account(conn, trading_account_id, for_update=True)
    if account.status == "DISCONNECTED":
        raise ApiError(Errors.TRADING_ACCOUNT_DISCONNECTED)
    return account


async def _set_status(conn: asyncpg.Connection, account: TradingAccountRecord, status: str,
                      now: dt.datetime) -> None:
    await conn.execute(
        "UPDATE trading_account SET status = $2, updated_at = $3 WHERE trading_account_id = $1",
        account.trading_account_id, status, now,
    )


KEEP = object()  # "not sent": distinct from an explicit null
# An UPDATE operation's detail names the fields changed as the API does (camelCase).
_WIRE_NAMES = {"nickname": "nickname", "taker_fee": "takerFee"}


async def update_account(
    uow: UnitOfWork, trading_account_id: uuid.UUID, nickname: str | object | None,
    now: dt.datetime, *, taker_fee: Decimal | object | None = KEEP,
) -> TradingAccountRecord:
    """Nickname (None clears it) and the LP's taker fee rate (None: the venue's default); KEEP
    leaves either as it is."""
    conn = uow.conn
    account = await _mutable_account(conn, trading_account_id)
    changes: dict[str, object] = {}
    if nickname is not KEEP and nickname != account.nickname:
        changes["nickname"] = nickname
    if taker_fee is not KEEP and taker_fee != account.taker_fee:
        if not account.is_exchange:
            raise ApiError(Errors.TRADING_ACCOUNT_NOT_EXCHANGE,
                           "Only exchange accounts have a taker fee")
        changes["taker_fee"] = taker_fee
    if changes:
        assignments = ", ".join(f"{column} = ${n}" for n, column in enumerate(changes, 3))
        await conn.execute(
            f"UPDATE trading_account SET updated_at = $2, {assignments} "  # noqa: S608
            "WHERE trading_account_id = $1",
            trading_account_id, now, *changes.values(),
        )
        await record_operation(conn, trading_account_id, "UPDATE", now,
                               {_WIRE_NAMES[k]: None if v is None else str(v)
                                for k, v in changes.items()})
    updated = await require_account(conn, trading_account_id)
    await uow.commit()
    return updated


async def enable_account(
    uow: UnitOfWork, trading_account_id: uuid.UUID, now: dt.datetime
) -> TradingAccountRecord:
    """INACTIVE → ACTIVE (idempotent); an exchange account needs a usable credential."""
    return await _switch(uow, trading_account_id, "ACTIVE", "ENABLE", now)


async def disable_account(
    uow: UnitOfWork, trading_account_id: uuid.UUID, now: dt.datetime
) -> TradingAccountRecord:
    """ACTIVE → INACTIVE (idempotent). A linked LP stays linked but is not used while inactive;
    a client gets no quote and fills none. A dealer is paused instead: its account's status
    would stop nothing, so disabling it is refused."""
    return await _switch(uow, trading_account_id, "INACTIVE", "DISABLE", now)


async def _switch(uow: UnitOfWork, trading_account_id: uuid.UUID, status: str, operation: str,
                  now: dt.datetime) -> TradingAccountRecord:
    """Move to `status` (idempotent) and record `operation`; enabling an exchange account
    needs a credential that is not revoked."""
    conn = uow.conn
    account = await _mutable_account(conn, trading_account_id)
    if status == "INACTIVE" and account.kind == DEALER:
        raise ApiError(Errors.TRADING_ACCOUNT_NOT_EXCHANGE,
                       "A dealer stops quoting with fermata/dealer/pause, not by disabling "
                       "its account")
    if account.status != status:
        if (status == "ACTIVE" and account.is_exchange
                and all(c.status == "REVOKED" for c in account.credentials)):
            raise ApiError(Errors.CREDENTIAL_REVOKED,
                           "Every credential of this account is revoked; connect the exchange "
                           "account anew with a verified credential")
        await _set_status(conn, account, status, now)
        await record_operation(conn, trading_account_id, operation, now)
    updated = await require_account(conn, trading_account_id)
    await uow.commit()
    return updated


async def disconnect_account(
    uow: UnitOfWork, trading_account_id: uuid.UUID, now: dt.datetime
) -> TradingAccountRecord:
    """Archive an exchange account for good; refused while it is linked to a dealer."""
    conn = uow.conn
    account = await _mutable_account(conn, trading_account_id)
    if not account.is_exchange:
        raise ApiError(Errors.TRADING_ACCOUNT_NOT_EXCHANGE)
    linked_to = await conn.fetchval(
        "SELECT dealer_account_id FROM dealer_link WHERE trading_account_id = $1",
        trading_account_id,
    )
    if linked_to is not None:
        raise ApiError(Errors.TRADING_ACCOUNT_LINKED, details={"metadata": {
            "dealerAccountId": str(linked_to)}})
    await _set_status(conn, account, "DISCONNECTED", now)
    await conn.execute(
        "UPDATE trading_account_credential SET live = false WHERE trading_account_id = $1",
        trading_account_id,
    )
    await record_operation(conn, trading_account_id, "DISCONNECT", now)
    updated = await require_account(conn, trading_account_id)
    await uow.commit()
    return updated


@dataclass(frozen=True, slots=True)
class AccountFilter:
    trading_account_id: uuid.UUID | None
    venue: str | None
    status: str | None
    only: frozenset[uuid.UUID] | None  # a trader's own accounts
    limit: int
    offset: int
    kind: str | None = None


async def list_accounts(
    conn: asyncpg.Connection, f: AccountFilter
) -> tuple[list[TradingAccountRecord], int]:
    where: list[str] = ["TRUE"]
    args: list[object] = []
    for column, value in (("trading_account_id", f.trading_account_id), ("venue", f.venue),
                          ("status", f.status), ("kind", f.kind)):
        if value is not None:
            args.append(value)
            where.append(f"{column} = ${len(args)}")
    if f.only is not None:
        args.append(list(f.only))
        where.append(f"trading_account_id = ANY(${len(args)}::uuid[])")
    clause = " AND ".join(where)
    total: int = await conn.fetchval(
        f"SELECT count(*) FROM trading_account WHERE {clause}", *args  # noqa: S608
    )
    rows = await conn.fetch(
        f"""SELECT {ACCOUNT_COLUMNS} FROM trading_account WHERE {clause}
            ORDER BY created_at, trading_account_id
            LIMIT ${len(args) + 1} OFFSET ${len(args) + 2}""",  # noqa: S608
        *args, f.limit, f.offset,
    )
    creds = await credentials_of(conn, [r["trading_account_id"] for r in rows])
    return [TradingAccountRecord.from_row(r, creds.get(r["trading_account_id"], ()))
            for r in rows], total


@dataclass(frozen=True, slots=True)
class OperationRecord:
    operation_id: uuid.UUID
    trading_account_id: uuid.UUID
    operation_type: str
    status: str
    detail: dict[str, object]
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class OperationFilter:
    trading_account_id: uuid.UUID | None
    operation_type: str | None
    start: dt.datetime | None
    end: dt.datetime | None
    only: frozenset[uuid.UUID] | None
    limit: int
    offset: int


async def list_operations(
    conn: asyncpg.Connection, f: OperationFilter
) -> tuple[list[OperationRecord], int]:
    where: list[str] = ["TRUE"]
    args: list[object] = []
    for condition, value in (("trading_account_id = ${}", f.trading_account_id),
                             ("operation_type = ${}", f.operation_type),
                             ("created_at >= ${}", f.start), ("created_at < ${}", f.end)):
        if value is not None:
            args.append(value)
            where.append(condition.format(len(args)))
    if f.only is not None:
        args.append(list(f.only))
        where.append(f"trading_account_id = ANY(${len(args)}::uuid[])")
    clause = " AND ".join(where)
    total: int = await conn.fetchval(
        f"SELECT count(*) FROM trading_account_operation WHERE {clause}", *args  # noqa: S608
    )
    rows = await conn.fetch(
        f"""SELECT operation_id, trading_account_id, operation_type, status, detail, created_at
            FROM trading_account_operation WHERE {clause}
            ORDER BY created_at DESC, operation_id
            LIMIT ${len(args) + 1} OFFSET ${len(args) + 2}""",  # noqa: S608
        *args, f.limit, f.offset,
    )
    return [OperationRecord(**dict(r)) for r in rows], total
