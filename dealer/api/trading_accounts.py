"""Trading account endpoints (seeds/000 connect flow, seeds/001 tradingAccount API)."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import Field, StringConstraints

from dealer.api.fermata import follow_links
from dealer.api.framework import Api
from dealer.api.schemas import (
    AccountStatus,
    OperationStatus,
    TradingAccountOut,
    trading_account_out,
)
from dealer.appkeys import CLOCK, POOL, SECRET_BOX, VENUES
from dealer.auth import Principal, Role
from dealer.errors import Errors
from dealer.services import trading_accounts as service
from dealer.uow import UnitOfWork, connection
from dealer.wire import ListQuery, Nickname, Page, Uuid, WireModel, iso, millis
from venues.base import EXCHANGE_VENUES, FERMATA_VENUE

OperationType = Literal["CONNECT", "DISCONNECT", "ENABLE", "DISABLE", "UPDATE",
                        "CREDENTIAL_REVOKE", "CREDENTIAL_ROTATE", "LINK", "UNLINK", "PAUSE",
                        "RESUME", "HEDGE_RETRY", "HEDGE_CANCEL"]
AnyVenue = Literal[(*EXCHANGE_VENUES, FERMATA_VENUE)]  # type: ignore[valid-type]
# A rate below 0.1 (10 %), at most 8 decimals: what trading_account.taker_fee keeps.
FeeRate = Annotated[str, StringConstraints(pattern=r"^0(\.0[0-9]{0,7})?$")]
ExternalId = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1,
                                              max_length=100)]


class ConnectRequest(WireModel):
    credential_ids: list[Uuid] = Field(min_length=1, max_length=10)
    external_trading_account_id: ExternalId
    nickname: Nickname | None = None


class AccountIdRequest(WireModel):
    trading_account_id: Uuid


class UpdateRequest(WireModel):
    trading_account_id: Uuid
    nickname: Nickname | None = Field(default=None, description="null clears it; omitted: kept")
    taker_fee: FeeRate | None = Field(
        default=None, description="LP taker fee rate (0.001 = 10 bps) used to adjust its book "
        "prices, below 0.1 with at most 8 decimals; null: the venue's default")


class AccountListQuery(ListQuery):
    trading_account_id: Uuid | None = None
    venue: AnyVenue | None = None
    account_status: AccountStatus | None = None


class OperationListQuery(ListQuery):
    trading_account_id: Uuid | None = None
    operation_type: OperationType | None = None
    start_time: int | None = Field(default=None, ge=0, le=10**14,
                                   description="Unix ms, inclusive")
    end_time: int | None = Field(default=None, ge=0, le=10**14, description="Unix ms, exclusive")


class OperationOut(WireModel):
    operation_id: uuid.UUID
    trading_account_id: uuid.UUID
    operation_type: OperationType
    status: OperationStatus
    detail: dict[str, Any]
    created_at: int
    created_at_date_time: str


ADMIN = [Role.ADMIN]
EVERYONE = [Role.ADMIN, Role.VIEWER, Role.TRADER]
_ACCOUNT_ERRORS = [Errors.TRADING_ACCOUNT_NOT_FOUND, Errors.TRADING_ACCOUNT_DISCONNECTED]


def register(api: Api) -> None:
    api.post("/api/v3/tradingAccount/connect", summary="Connect an exchange trading account "
             "with verified credentials (seeds/000)", tag="tradingAccounts", roles=ADMIN,
             body=ConnectRequest, response=TradingAccountOut,
             errors=[Errors.CREDENTIAL_NOT_FOUND, Errors.CREDENTIAL_REVOKED,
                     Errors.CREDENTIAL_NOT_VERIFIED, Errors.CREDENTIAL_VENUE_MISMATCH,
                     Errors.CREDENTIAL_VERIFICATION_FAILED,
                     Errors.TRADING_ACCOUNT_ALREADY_CONNECTED,
                     Errors.EXTERNAL_ACCOUNT_UNKNOWN, Errors.VENUE_UNAVAILABLE])(connect)
    api.post("/api/v3/tradingAccount/disconnect", summary="Archive an exchange trading account "
             "(refused while linked to a dealer)", tag="tradingAccounts", roles=ADMIN,
             body=AccountIdRequest, response=TradingAccountOut,
             errors=[*_ACCOUNT_ERRORS, Errors.TRADING_ACCOUNT_NOT_EXCHANGE,
                     Errors.TRADING_ACCOUNT_LINKED])(disconnect)
    api.post("/api/v3/tradingAccount/update", summary="Update a trading account's nickname, "
             "or an exchange account's taker fee", tag="tradingAccounts", roles=ADMIN,
             body=UpdateRequest, response=TradingAccountOut,
             errors=[*_ACCOUNT_ERRORS, Errors.TRADING_ACCOUNT_NOT_EXCHANGE])(update)
    api.post("/api/v3/tradingAccount/enable", summary="Enable a trading account (→ ACTIVE)",
             tag="tradingAccounts", roles=ADMIN, body=AccountIdRequest,
             response=TradingAccountOut,
             errors=[*_ACCOUNT_ERRORS, Errors.CREDENTIAL_REVOKED])(enable)
    api.post("/api/v3/tradingAccount/disable", summary="Disable an exchange or client trading "
             "account (→ INACTIVE); a dealer is paused instead", tag="tradingAccounts",
             roles=ADMIN, body=AccountIdRequest, response=TradingAccountOut,
             errors=[*_ACCOUNT_ERRORS, Errors.TRADING_ACCOUNT_NOT_EXCHANGE])(disable)
    api.get("/api/v3/tradingAccount/list", summary="List trading accounts (a trader sees its "
            "own)", tag="tradingAccounts", roles=EVERYONE, query=AccountListQuery,
            response=Page[TradingAccountOut])(list_)
    api.get("/api/v3/tradingAccount/operation/list", summary="Operation history of trading "
            "accounts, newest first", tag="tradingAccounts", roles=EVERYONE,
            query=OperationListQuery, response=Page[OperationOut])(operations)


async def connect(request: web.Request, principal: Principal | None,
                  params: ConnectRequest) -> TradingAccountOut:
    cmd = service.ConnectCommand(params.credential_ids, params.external_trading_account_id,
                                 params.nickname)
    async with UnitOfWork(request.app[POOL]) as uow:
        account = await service.connect_account(uow, request.app[SECRET_BOX],
                                                request.app[VENUES], cmd, request.app[CLOCK]())
    return trading_account_out(account)


async def disconnect(request: web.Request, principal: Principal | None,
                     params: AccountIdRequest) -> TradingAccountOut:
    async with UnitOfWork(request.app[POOL]) as uow:
        account = await service.disconnect_account(uow, params.trading_account_id,
                                                   request.app[CLOCK]())
    await follow_links(request.app)
    return trading_account_out(account)


async def update(request: web.Request, principal: Principal | None,
                 params: UpdateRequest) -> TradingAccountOut:
    async with UnitOfWork(request.app[POOL]) as uow:
        account = await service.update_account(
            uow, params.trading_account_id,
            params.nickname if "nickname" in params.model_fields_set else service.KEEP,
            request.app[CLOCK](),
            taker_fee=(Decimal(params.taker_fee) if params.taker_fee is not None else None)
            if "taker_fee" in params.model_fields_set else service.KEEP,
        )
    await follow_links(request.app)
    return trading_account_out(account)


async def enable(request: web.Request, principal: Principal | None,
                 params: AccountIdRequest) -> TradingAccountOut:
    async with UnitOfWork(request.app[POOL]) as uow:
        account = await service.enable_account(uow, params.trading_account_id,
                                               request.app[CLOCK]())
    await follow_links(request.app)
    return trading_account_out(account)


async def disable(request: web.Request, principal: Principal | None,
                  params: AccountIdRequest) -> TradingAccountOut:
    async with UnitOfWork(request.app[POOL]) as uow:
        account = await service.disable_account(uow, params.trading_account_id,
                                                request.app[CLOCK]())
    await follow_links(request.app)
    return trading_account_out(account)


def own_accounts(principal: Principal | None) -> frozenset[uuid.UUID] | None:
    """A trader's visible accounts; None (no restriction) for admins and viewers."""
    assert principal is not None
    return principal.accounts if principal.role is Role.TRADER else None


async def list_(request: web.Request, principal: Principal | None,
                params: AccountListQuery) -> Page[TradingAccountOut]:
    query = service.AccountFilter(
        trading_account_id=params.trading_account_id, venue=params.venue,
        status=params.account_status, only=own_accounts(principal),
        limit=params.limit, offset=params.offset,
    )
    async with connection(request.app[POOL]) as conn:
        records, total = await service.list_accounts(conn, query)
    return Page([trading_account_out(r) for r in records], total, params.limit, params.offset)


def _from_millis(value: int | None) -> dt.datetime | None:
    return None if value is None else dt.datetime.fromtimestamp(value / 1000, tz=dt.UTC)


async def operations(request: web.Request, principal: Principal | None,
                     params: OperationListQuery) -> Page[OperationOut]:
    query = service.OperationFilter(
        trading_account_id=params.trading_account_id, operation_type=params.operation_type,
        start=_from_millis(params.start_time), end=_from_millis(params.end_time),
        only=own_accounts(principal), limit=params.limit, offset=params.offset,
    )
    async with connection(request.app[POOL]) as conn:
        records, total = await service.list_operations(conn, query)
    items = [
        OperationOut(operation_id=r.operation_id, trading_account_id=r.trading_account_id,
                     operation_type=r.operation_type, status=r.status, detail=r.detail,
                     created_at=millis(r.created_at) or 0,
                     created_at_date_time=iso(r.created_at) or "")
        for r in records
    ]
    return Page(items, total, params.limit, params.offset)
