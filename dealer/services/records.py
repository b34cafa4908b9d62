"""Records the services return: plain dataclasses read from rows, converted to wire at the edge."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import asyncpg

EXCHANGE = "EXCHANGE"
DEALER = "DEALER"
CLIENT = "CLIENT"


@dataclass(frozen=True, slots=True)
class CredentialRecord:
    credential_id: uuid.UUID
    venue: str
    credential_type: str
    nickname: str | None
    status: str
    identities: list[dict[str, str]]
    created_at: dt.datetime
    updated_at: dt.datetime
    verified_at: dt.datetime | None
    revoked_at: dt.datetime | None

    def identity(self, external_trading_account_id: str) -> dict[str, str] | None:
        """The verified identity with this external trading account id, if any."""
        for identity in self.identities:
            if identity["externalTradingAccountId"] == external_trading_account_id:
                return identity
        return None

    @classmethod
    def from_row(cls, row: asyncpg.Record | dict[str, Any]) -> CredentialRecord:
        return cls(
            credential_id=row["credential_id"], venue=row["venue"],
            credential_type=row["credential_type"], nickname=row["nickname"],
            status=row["status"], identities=list(row["identities"]),
            created_at=row["created_at"], updated_at=row["updated_at"],
            verified_at=row["verified_at"], revoked_at=row["revoked_at"],
        )


@dataclass(frozen=True, slots=True)
class TradingAccountRecord:
    trading_account_id: uuid.UUID
    venue: str
    kind: str
    external_trading_account_id: str
    account_type: str
    external_account_type: str
    nickname: str | None
    status: str
    created_at: dt.datetime
    updated_at: dt.datetime
    credentials: tuple[CredentialRecord, ...] = ()
    venue_ref: str | None = None
    taker_fee: Decimal | None = None

    @property
    def is_exchange(self) -> bool:
        return self.kind == EXCHANGE

    @classmethod
    def from_row(
        cls, row: asyncpg.Record | dict[str, Any], credentials: tuple[CredentialRecord, ...] = ()
    ) -> TradingAccountRecord:
        return cls(
            trading_account_id=row["trading_account_id"], venue=row["venue"], kind=row["kind"],
            external_trading_account_id=row["external_trading_account_id"],
            account_type=row["account_type"], external_account_type=row["external_account_type"],
            nickname=row["nickname"], status=row["status"], created_at=row["created_at"],
            updated_at=row["updated_at"], credentials=credentials,
            venue_ref=row["venue_ref"], taker_fee=row["taker_fee"],
        )


# Column lists interpolated into queries. Queries only ever interpolate these constants and
# WHERE fragments of fixed text with $n placeholders (hence the `noqa: S608`); values are always
# bound parameters.
CREDENTIAL_COLUMNS = (
    "credential_id, venue, credential_type, nickname, status, identities, created_at, "
    "updated_at, verified_at, revoked_at"
)
ACCOUNT_COLUMNS = (
    "trading_account_id, venue, kind, external_trading_account_id, account_type, "
    "external_account_type, nickname, status, created_at, updated_at, venue_ref, taker_fee"
)


async def credentials_of(
    conn: asyncpg.Connection, account_ids: list[uuid.UUID]
) -> dict[uuid.UUID, tuple[CredentialRecord, ...]]:
    """The credentials of each account, in one query."""
    if not account_ids:
        return {}
    rows = await conn.fetch(
        f"""SELECT tac.trading_account_id AS owner, {', '.join('c.' + c.strip()
                   for c in CREDENTIAL_COLUMNS.split(','))}
            FROM trading_account_credential tac JOIN credential c USING (credential_id)
            WHERE tac.trading_account_id = ANY($1::uuid[])
            ORDER BY c.created_at, c.credential_id""",  # noqa: S608
        account_ids,
    )
    found: dict[uuid.UUID, list[CredentialRecord]] = {}
    for row in rows:
        found.setdefault(row["owner"], []).append(CredentialRecord.from_row(row))
    return {k: tuple(v) for k, v in found.items()}


async def load_account(
    conn: asyncpg.Connection, trading_account_id: uuid.UUID, *, for_update: bool = False
) -> TradingAccountRecord | None:
    """One trading account with its credentials; `for_update` locks its row."""
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(
        f"SELECT {ACCOUNT_COLUMNS} FROM trading_account WHERE trading_account_id = $1{lock}",  # noqa: S608
        trading_account_id,
    )
    if row is None:
        return None
    creds = await credentials_of(conn, [trading_account_id])
    return TradingAccountRecord.from_row(row, creds.get(trading_account_id, ()))


async def record_operation(
    conn: asyncpg.Connection,
    trading_account_id: uuid.UUID,
    operation_type: str,
    now: dt.datetime,
    detail: dict[str, Any] | None = None,
) -> None:
    """Append to an account's operation history (in the caller's transaction)."""
    await conn.execute(
        """INSERT INTO trading_account_operation
               (operation_id, trading_account_id, operation_type, status, detail, created_at)
           VALUES ($1, $2, $3, 'COMPLETED', $4, $5)""",
        uuid.uuid4(), trading_account_id, operation_type, detail or {}, now,
    )
