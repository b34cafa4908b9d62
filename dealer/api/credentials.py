"""Credential endpoints (seeds/001 credential API). Secrets go in, never come out."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from aiohttp import web
from pydantic import Field, StringConstraints

from dealer.api.framework import Api
from dealer.api.schemas import (
    CredentialOut,
    CredentialStatus,
    TradingAccountOut,
    credential_out,
)
from dealer.appkeys import CLOCK, POOL, SECRET_BOX, VENUES
from dealer.auth import Principal, Role
from dealer.errors import Errors
from dealer.services import credentials as service
from dealer.uow import UnitOfWork, connection
from dealer.wire import ListQuery, Nickname, Page, Uuid, WireModel, iso, millis
from venues.base import EXCHANGE_VENUES, ApiCredential

CredentialType = Literal["API_KEY", "HMAC", "OAUTH", "RSA", "ED25519"]
Secret = Annotated[str, StringConstraints(min_length=1, max_length=4096)]
ExchangeVenue = Literal[EXCHANGE_VENUES]  # type: ignore[valid-type]


class CreateCredentialRequest(WireModel):
    venue: ExchangeVenue = Field(description="Exchange venue the credential belongs to")
    credential_type: CredentialType
    nickname: Nickname | None = None
    api_key: Secret | None = None
    api_secret: Secret | None = None
    api_passphrase: Secret | None = None

    def __repr__(self) -> str:
        return f"CreateCredentialRequest(venue={self.venue!r}, <secrets redacted>)"


class CredentialIdRequest(WireModel):
    credential_id: Uuid


class VerifyCredentialRequest(WireModel):
    credential_ids: list[Uuid] = Field(min_length=1, max_length=20)


class RotateCredentialRequest(WireModel):
    credential_id: Uuid
    api_key: Secret
    api_secret: Secret | None = None
    api_passphrase: Secret | None = None

    def __repr__(self) -> str:
        return f"RotateCredentialRequest(credential_id={self.credential_id}, <secrets redacted>)"


class CredentialListQuery(ListQuery):
    credential_type: CredentialType | None = None
    credential_status: CredentialStatus | None = None
    credential_ids: list[Uuid] | None = None
    venue: ExchangeVenue | None = None


class VerifiedAccountOut(TradingAccountOut):
    """An account the credential may trade: `tradingAccountId` is set once it is connected."""

    trading_account_id: uuid.UUID | None  # type: ignore[assignment]
    description: str


ADMIN = [Role.ADMIN]
READERS = [Role.ADMIN, Role.VIEWER]


def register(api: Api) -> None:
    api.post("/api/v3/credential/create", summary="Create an exchange API credential (secrets "
             "are encrypted at rest and never returned)", tag="credentials", roles=ADMIN,
             body=CreateCredentialRequest, response=CredentialOut)(create)
    api.post("/api/v3/credential/verify", summary="Verify credentials with their venue and list "
             "the trading accounts they give access to", tag="credentials", roles=ADMIN,
             body=VerifyCredentialRequest, response=list[VerifiedAccountOut],
             errors=[Errors.CREDENTIAL_NOT_FOUND, Errors.CREDENTIAL_REVOKED,
                     Errors.CREDENTIAL_VERIFICATION_FAILED, Errors.VENUE_UNAVAILABLE])(verify)
    api.post("/api/v3/credential/revoke", summary="Revoke a credential; accounts left without a "
             "usable credential become INACTIVE", tag="credentials", roles=ADMIN,
             body=CredentialIdRequest, response=CredentialOut,
             errors=[Errors.CREDENTIAL_NOT_FOUND])(revoke)
    api.post("/api/v3/credential/rotate", summary="Replace a credential's key after the venue "
             "verifies the new one for every connected account", tag="credentials", roles=ADMIN,
             body=RotateCredentialRequest, response=CredentialOut,
             errors=[Errors.CREDENTIAL_NOT_FOUND, Errors.CREDENTIAL_REVOKED,
                     Errors.CREDENTIAL_VERIFICATION_FAILED, Errors.VENUE_UNAVAILABLE])(rotate)
    api.get("/api/v3/credential/list", summary="List credentials", tag="credentials",
            roles=READERS, query=CredentialListQuery, response=Page[CredentialOut])(list_)


async def create(request: web.Request, principal: Principal | None,
                 params: CreateCredentialRequest) -> CredentialOut:
    cmd = service.NewCredential(
        venue=params.venue, credential_type=params.credential_type, nickname=params.nickname,
        secret=ApiCredential(params.api_key or "", params.api_secret, params.api_passphrase),
    )
    async with UnitOfWork(request.app[POOL]) as uow:
        record = await service.create_credential(uow, request.app[SECRET_BOX], cmd,
                                                 request.app[CLOCK]())
    return credential_out(record)


async def verify(request: web.Request, principal: Principal | None,
                 params: VerifyCredentialRequest) -> list[VerifiedAccountOut]:
    app = request.app
    now = app[CLOCK]()
    async with UnitOfWork(app[POOL]) as uow:
        found = await service.verify_credentials(uow, app[SECRET_BOX], app[VENUES],
                                                 params.credential_ids, now)
    out = []
    for item in found:
        account = item.connected
        out.append(VerifiedAccountOut(
            trading_account_id=account.trading_account_id if account else None,
            external_trading_account_id=item.identity["externalTradingAccountId"],
            venue=item.credential.venue,
            nickname=account.nickname if account else None,
            account_type=item.identity["accountType"],
            external_account_type=item.identity["externalAccountType"],
            description=item.identity.get("description", ""),
            credentials=[credential_out(item.credential)],
            status=account.status if account else "SETUP",
            created_at=millis(account.created_at if account else now) or 0,
            created_at_date_time=iso(account.created_at if account else now) or "",
            updated_at=millis(account.updated_at if account else now) or 0,
            updated_at_date_time=iso(account.updated_at if account else now) or "",
        ))
    return out


async def revoke(request: web.Request, principal: Principal | None,
                 params: CredentialIdRequest) -> CredentialOut:
    async with UnitOfWork(request.app[POOL]) as uow:
        record = await service.revoke_credential(uow, params.credential_id, request.app[CLOCK]())
    return credential_out(record)


async def rotate(request: web.Request, principal: Principal | None,
                 params: RotateCredentialRequest) -> CredentialOut:
    app = request.app
    secret = ApiCredential(params.api_key, params.api_secret, params.api_passphrase)
    async with UnitOfWork(app[POOL]) as uow:
        record = await service.rotate_credential(uow, app[SECRET_BOX], app[VENUES],
                                                 params.credential_id, secret, app[CLOCK]())
    return credential_out(record)


async def list_(request: web.Request, principal: Principal | None,
                params: CredentialListQuery) -> Page[CredentialOut]:
    query = service.CredentialFilter(
        credential_type=params.credential_type, status=params.credential_status,
        credential_ids=params.credential_ids, venue=params.venue,
        limit=params.limit, offset=params.offset,
    )
    async with connection(request.app[POOL]) as conn:
        records, total = await service.list_credentials(conn, query)
    return Page([credential_out(r) for r in records], total, params.limit, params.offset)

