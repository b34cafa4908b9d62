"""Response models shared by several areas (seeds/001 shapes) and their builders."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from dealer.services.records import CredentialRecord, TradingAccountRecord
from dealer.wire import WireModel, decimal_text, iso, millis

# A symbol as a dealer quotes it (BASE/QUOTE, its configuration's form): a request naming one
# is held to it, so a refusal may name the symbol it was given.
Symbol = Annotated[str, StringConstraints(pattern=r"^[A-Z0-9]{1,20}/[A-Z0-9]{1,20}$")]

# seeds/001's enums, declared once for the requests that take them and the responses that
# carry them (so the OpenAPI document lists their values on both).
Side = Literal["BUY", "SELL"]  # seeds/001 also lists UNKNOWN, which no order or quote has here
OrderType = Literal["", "MARKET", "LIMIT", "STOP", "STOP_LIMIT", "STOP_LOSS", "STOP_LOSS_LIMIT",
                    "TAKE_PROFIT", "TAKE_PROFIT_LIMIT", "TRAILING_STOP", "QUOTED", "UNKNOWN"]
TimeInForce = Literal["", "GTC", "IOC", "FOK", "GTD", "DAY", "GTX", "OPG", "CLS", "GFA", "GFS",
                      "GTM", "MOO", "MOC", "EXT", "UNKNOWN"]
# The order list's orderStatus filter adds "" (any status).
OrderStatus = Literal["CREATED", "SUBMITTED", "ACCEPTED", "PARTIALLY_FILLED", "FILLED",
                      "CANCELLED", "PENDING_CANCEL", "REPLACED", "PENDING_REPLACE", "REJECTED",
                      "EXPIRED", "REVOKED", "UNKNOWN"]
AccountStatus = Literal["SETUP", "ACTIVE", "INACTIVE", "LOCKED", "DISCONNECTED", "SUSPENDED",
                        "DELETED"]
CredentialStatus = Literal["CREATED", "VERIFIED", "FAILED", "REVOKED"]
InstrumentStatus = Literal["ACTIVE", "INACTIVE", "DISABLED", "DELISTED"]
# An operation is recorded once done (seeds/001 shows PENDING too: none is pending here).
OperationStatus = Literal["COMPLETED"]


class CredentialOut(WireModel):
    credential_id: uuid.UUID
    venue: str
    credential_type: str
    nickname: str | None
    status: CredentialStatus
    identities: list[str] = Field(
        description="External trading account ids found by the last successful verification"
    )
    created_at: int
    created_at_date_time: str
    updated_at: int
    updated_at_date_time: str
    verified_at: int | None
    verified_at_date_time: str | None
    revoked_at: int | None
    revoked_at_date_time: str | None


class TradingAccountOut(WireModel):
    trading_account_id: uuid.UUID
    external_trading_account_id: str
    venue: str
    nickname: str | None
    account_type: str
    external_account_type: str
    credentials: list[CredentialOut]
    status: AccountStatus
    created_at: int
    created_at_date_time: str
    updated_at: int
    updated_at_date_time: str
    taker_fee: str | None = Field(default=None, description="LP taker fee rate set on the "
                                  "account; null: the venue's default")


def credential_out(record: CredentialRecord) -> CredentialOut:
    return CredentialOut(
        credential_id=record.credential_id, venue=record.venue,
        credential_type=record.credential_type, nickname=record.nickname, status=record.status,
        identities=[i["externalTradingAccountId"] for i in record.identities],
        created_at=millis(record.created_at) or 0,
        created_at_date_time=iso(record.created_at) or "",
        updated_at=millis(record.updated_at) or 0,
        updated_at_date_time=iso(record.updated_at) or "",
        verified_at=millis(record.verified_at), verified_at_date_time=iso(record.verified_at),
        revoked_at=millis(record.revoked_at), revoked_at_date_time=iso(record.revoked_at),
    )


def trading_account_out(record: TradingAccountRecord) -> TradingAccountOut:
    return TradingAccountOut(
        trading_account_id=record.trading_account_id,
        external_trading_account_id=record.external_trading_account_id,
        venue=record.venue, nickname=record.nickname, account_type=record.account_type,
        external_account_type=record.external_account_type,
        credentials=[credential_out(c) for c in record.credentials], status=record.status,
        created_at=millis(record.created_at) or 0,
        created_at_date_time=iso(record.created_at) or "",
        updated_at=millis(record.updated_at) or 0,
        updated_at_date_time=iso(record.updated_at) or "",
        taker_fee=(None if record.taker_fee is None
                   else decimal_text(record.taker_fee.normalize())),
    )
