"""Credentials: create, verify with the venue, rotate, revoke, list. Secrets stay sealed."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

import asyncpg

from dealer.errors import ApiError, Errors
from dealer.secretbox import SecretBox
from dealer.services.records import (
    ACCOUNT_COLUMNS,
    CREDENTIAL_COLUMNS,
    CredentialRecord,
    TradingAccountRecord,
    record_operation,
)
from dealer.uow import UnitOfWork
from venues.base import ApiCredential, CredentialRejected, VenueError, VenueIdentity
from venues.registry import VenueRegistry


@dataclass(frozen=True, slots=True)
class NewCredential:
    venue: str
    credential_type: str
    nickname: str | None
    secret: ApiCredential


@dataclass(frozen=True, slots=True)
class VerifiedIdentity:
    """One account a verified credential gives access to, and its connection if any."""

    credential: CredentialRecord
    identity: dict[str, str]
    connected: TradingAccountRecord | None


def _sealable(secret: ApiCredential) -> dict[str, str | None]:
    return {"apiKey": secret.api_key, "apiSecret": secret.api_secret,
            "apiPassphrase": secret.api_passphrase}


def _identity_json(identity: VenueIdentity) -> dict[str, str]:
    return {
        "externalTradingAccountId": identity.external_trading_account_id,
        "accountType": identity.account_type,
        "externalAccountType": identity.external_account_type,
        **({"venueRef": identity.venue_ref} if identity.venue_ref else {}),
        "description": identity.description,
    }


async def get_credential(
    conn: asyncpg.Connection, credential_id: uuid.UUID, *, for_update: bool = False
) -> CredentialRecord:
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(
        f"SELECT {CREDENTIAL_COLUMNS} FROM credential WHERE credential_id = $1{lock}",  # noqa: S608
        credential_id,
    )
    if row is None:
        raise ApiError(Errors.CREDENTIAL_NOT_FOUND, details={"metadata": {
            "credentialId": str(credential_id)}})
    return CredentialRecord.from_row(row)


async def lock_credentials(
    conn: asyncpg.Connection, credential_ids: list[uuid.UUID]
) -> list[CredentialRecord]:
    """The credentials named (duplicates dropped, order kept), each locked FOR UPDATE.

    Rows are locked in id order, whatever order the request named them in, so two requests
    naming the same credentials cannot deadlock. 404 for an unknown id.
    """
    wanted = list(dict.fromkeys(credential_ids))
    locked = {cid: await get_credential(conn, cid, for_update=True) for cid in sorted(wanted)}
    return [locked[cid] for cid in wanted]


async def create_credential(
    uow: UnitOfWork, box: SecretBox, cmd: NewCredential, now: dt.datetime
) -> CredentialRecord:
    row = await uow.conn.fetchrow(
        f"""INSERT INTO credential (credential_id, venue, credential_type, nickname, status,
                secret_ciphertext, created_at, updated_at)
            VALUES ($1, $2, $3, $4, 'CREATED', $5, $6, $6)
            RETURNING {CREDENTIAL_COLUMNS}""",  # noqa: S608
        uuid.uuid4(), cmd.venue, cmd.credential_type, cmd.nickname,
        box.seal(_sealable(cmd.secret)), now,
    )
    assert row is not None  # INSERT … RETURNING always answers the row
    await uow.commit()
    return CredentialRecord.from_row(row)


async def verify_credentials(
    uow: UnitOfWork,
    box: SecretBox,
    venues: VenueRegistry,
    credential_ids: list[uuid.UUID],
    now: dt.datetime,
) -> list[VerifiedIdentity]:
    """Ask each credential's venue what it may access; record VERIFIED or FAILED.

    A credential the venue refuses is marked FAILED (that is the verification's outcome, kept
    even though the call answers an error). The credentials stay locked until the outcome is
    written, so a revoke or rotate committed meanwhile is never overwritten.
    """
    conn = uow.conn
    records = await lock_credentials(conn, credential_ids)
    for record in records:
        if record.status == "REVOKED":
            raise ApiError(Errors.CREDENTIAL_REVOKED, details={"metadata": {
                "credentialId": str(record.credential_id)}})
    outcomes: list[tuple[CredentialRecord, list[VenueIdentity] | None, str | None]] = []
    for record in records:
        secret = await load_secret(conn, box, record.credential_id)
        try:
            found = await venues.execution(record.venue).verify_credential(secret)
            outcomes.append((record, found, None))
        except CredentialRejected as exc:
            outcomes.append((record, None, str(exc)))
        except VenueError as exc:  # the venue did not answer: no outcome, nothing written
            raise ApiError(Errors.VENUE_UNAVAILABLE, f"{record.venue}: {exc}") from None
    updated: list[CredentialRecord] = []
    failures: list[str] = []
    for record, identities, reason in outcomes:
        if identities is None:
            row = await conn.fetchrow(
                f"""UPDATE credential SET status = 'FAILED', updated_at = $2
                    WHERE credential_id = $1 RETURNING {CREDENTIAL_COLUMNS}""",  # noqa: S608
                record.credential_id, now,
            )
            failures.append(f"{record.credential_id}: {reason}")
        else:
            row = await conn.fetchrow(
                f"""UPDATE credential SET status = 'VERIFIED', identities = $2, verified_at = $3,
                        updated_at = $3
                    WHERE credential_id = $1 RETURNING {CREDENTIAL_COLUMNS}""",  # noqa: S608
                record.credential_id, [_identity_json(i) for i in identities], now,
            )
        assert row is not None  # the credential exists: it was read above in this transaction
        updated.append(CredentialRecord.from_row(row))
    await uow.commit()
    if failures:
        raise ApiError(Errors.CREDENTIAL_VERIFICATION_FAILED,
                       "Credential verification failed: " + "; ".join(failures))
    return await _identities_with_connections(conn, updated)


async def _identities_with_connections(
    conn: asyncpg.Connection, credentials: list[CredentialRecord]
) -> list[VerifiedIdentity]:
    rows = await conn.fetch(
        f"""SELECT tac.credential_id, {', '.join('ta.' + c.strip()
                   for c in ACCOUNT_COLUMNS.split(','))}
            FROM trading_account_credential tac JOIN trading_account ta USING (trading_account_id)
            WHERE tac.live AND tac.credential_id = ANY($1::uuid[])""",  # noqa: S608
        [c.credential_id for c in credentials],
    )
    connected = {(r["credential_id"], r["external_trading_account_id"]):
                 TradingAccountRecord.from_row(r) for r in rows}
    return [
        VerifiedIdentity(c, identity,
                         connected.get((c.credential_id, identity["externalTradingAccountId"])))
        for c in credentials for identity in c.identities
    ]


async def load_secret(conn: asyncpg.Connection, box: SecretBox,
                       credential_id: uuid.UUID) -> ApiCredential:
    sealed = await conn.fetchval(
        "SELECT secret_ciphertext FROM credential WHERE credential_id = $1", credential_id
    )
    opened = box.open(sealed)
    return ApiCredential(api_key=opened.get("apiKey") or "", api_secret=opened.get("apiSecret"),
                         api_passphrase=opened.get("apiPassphrase"))


async def _accounts_using(
    conn: asyncpg.Connection, credential_id: uuid.UUID
) -> list[asyncpg.Record]:
    return await conn.fetch(
        """SELECT ta.trading_account_id, ta.status, ta.external_trading_account_id
           FROM trading_account_credential tac JOIN trading_account ta USING (trading_account_id)
           WHERE tac.credential_id = $1 AND tac.live
           ORDER BY ta.trading_account_id FOR UPDATE OF ta""",
        credential_id,
    )


async def revoke_credential(
    uow: UnitOfWork, credential_id: uuid.UUID, now: dt.datetime
) -> CredentialRecord:
    """Revoke (idempotent). Accounts left without a usable credential become INACTIVE."""
    conn = uow.conn
    record = await get_credential(conn, credential_id, for_update=True)
    if record.status == "REVOKED":
        return record
    for account in await _accounts_using(conn, credential_id):
        remaining = await conn.fetchval(
            """SELECT count(*) FROM trading_account_credential tac JOIN credential c
                   USING (credential_id)
               WHERE tac.trading_account_id = $1 AND tac.live AND c.status <> 'REVOKED'
                 AND c.credential_id <> $2""",
            account["trading_account_id"], credential_id,
        )
        detail: dict[str, str] = {"credentialId": str(credential_id)}
        if remaining == 0 and account["status"] == "ACTIVE":
            await conn.execute(
                "UPDATE trading_account SET status = 'INACTIVE', updated_at = $2 "
                "WHERE trading_account_id = $1",
                account["trading_account_id"], now,
            )
            detail["statusChange"] = "ACTIVE->INACTIVE"
        await record_operation(conn, account["trading_account_id"], "CREDENTIAL_REVOKE", now,
                               detail)
    row = await conn.fetchrow(
        f"""UPDATE credential SET status = 'REVOKED', revoked_at = $2, updated_at = $2
            WHERE credential_id = $1 RETURNING {CREDENTIAL_COLUMNS}""",  # noqa: S608
        credential_id, now,
    )
    assert row is not None  # locked FOR UPDATE above
    await uow.commit()
    return CredentialRecord.from_row(row)


async def rotate_credential(
    uow: UnitOfWork,
    box: SecretBox,
    venues: VenueRegistry,
    credential_id: uuid.UUID,
    secret: ApiCredential,
    now: dt.datetime,
) -> CredentialRecord:
    """Swap in a new key only if the venue verifies it for every account that uses it."""
    conn = uow.conn
    record = await get_credential(conn, credential_id, for_update=True)
    if record.status == "REVOKED":
        raise ApiError(Errors.CREDENTIAL_REVOKED)
    try:
        identities = await venues.execution(record.venue).verify_credential(secret)
    except CredentialRejected as exc:
        raise ApiError(Errors.CREDENTIAL_VERIFICATION_FAILED,
                       f"Credential verification failed: {exc}") from None
    except VenueError as exc:  # the venue did not answer: the old key stays
        raise ApiError(Errors.VENUE_UNAVAILABLE, f"{record.venue}: {exc}") from None
    reachable = {i.external_trading_account_id for i in identities}
    accounts = await _accounts_using(conn, credential_id)
    lost = sorted(a["external_trading_account_id"] for a in accounts
                  if a["external_trading_account_id"] not in reachable)
    if lost:
        raise ApiError(Errors.CREDENTIAL_VERIFICATION_FAILED,
                       "The new key cannot access connected account(s): " + ", ".join(lost))
    row = await conn.fetchrow(
        f"""UPDATE credential SET secret_ciphertext = $2, status = 'VERIFIED', identities = $3,
                verified_at = $4, updated_at = $4
            WHERE credential_id = $1 RETURNING {CREDENTIAL_COLUMNS}""",  # noqa: S608
        credential_id, box.seal(_sealable(secret)), [_identity_json(i) for i in identities],
        now,
    )
    assert row is not None  # locked FOR UPDATE above
    for account in accounts:
        await record_operation(conn, account["trading_account_id"], "CREDENTIAL_ROTATE", now,
                               {"credentialId": str(credential_id)})
    await uow.commit()
    return CredentialRecord.from_row(row)


@dataclass(frozen=True, slots=True)
class CredentialFilter:
    credential_type: str | None
    status: str | None
    credential_ids: list[uuid.UUID] | None
    venue: str | None
    limit: int
    offset: int


async def list_credentials(
    conn: asyncpg.Connection, f: CredentialFilter
) -> tuple[list[CredentialRecord], int]:
    where: list[str] = ["TRUE"]
    args: list[object] = []
    for column, value in (("credential_type", f.credential_type), ("status", f.status),
                          ("venue", f.venue)):
        if value is not None:
            args.append(value)
            where.append(f"{column} = ${len(args)}")
    if f.credential_ids:
        args.append(f.credential_ids)
        where.append(f"credential_id = ANY(${len(args)}::uuid[])")
    clause = " AND ".join(where)
    total: int = await conn.fetchval(f"SELECT count(*) FROM credential WHERE {clause}", *args)  # noqa: S608
    rows = await conn.fetch(
        f"""SELECT {CREDENTIAL_COLUMNS} FROM credential WHERE {clause}
            ORDER BY created_at, credential_id
            LIMIT ${len(args) + 1} OFFSET ${len(args) + 2}""",  # noqa: S608
        *args, f.limit, f.offset,
    )
    return [CredentialRecord.from_row(r) for r in rows], total
