"""FERMATA area: dealers, their configuration and LP links (seeds/002), and clients."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import Field, StringConstraints, model_validator

from dealer.api.framework import ALL_ROLES, Api
from dealer.api.market import sync_dealer_instruments
from dealer.api.schemas import TradingAccountOut, trading_account_out
from dealer.appkeys import CLOCK, MARKET_DATA, METRICS, POOL, VENUES
from dealer.auth import Principal, Role
from dealer.errors import Errors
from dealer.services import dealers
from dealer.services.dealers import (
    DealerConfig,
    DealerConfigFields,
    DealerRecord,
    DealerStatus,
    ExposureLimits,
    HedgeMode,
    LinkRecord,
    NettingWindowMs,
    NonNegativeDecimal,
    PositiveDecimal,
    QuoteTtlMs,
    SmallBps,
    SpreadBps,
    SpreadTiers,
    Symbols,
)
from dealer.services.reconciliation import capture_baseline
from dealer.uow import UnitOfWork
from dealer.wire import ListQuery, Nickname, Page, QueryModel, WireModel, iso, millis

TAG_DEALERS = "dealers"
TAG_CLIENTS = "clients"
ADMIN_ONLY = [Role.ADMIN]
READERS = [Role.ADMIN, Role.VIEWER]

AccountStatus = Literal["SETUP", "ACTIVE", "INACTIVE", "LOCKED", "DISCONNECTED", "SUSPENDED",
                        "DELETED"]
PauseReason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1,
                                               max_length=500)]

# ---------------------------------------------------------------- request models


class CreateDealerBody(DealerConfigFields):
    """A nickname and the configuration fields, flat; omitted fields take their defaults."""

    nickname: Nickname | None = None


class UpdateDealerBody(WireModel):
    """Only the fields sent change; the merged configuration is validated as a whole."""

    dealer_account_id: uuid.UUID
    nickname: Nickname | None = Field(default=None, description="null clears the nickname")
    symbols: Symbols | None = None
    spread_bps: SpreadBps | None = None
    spread_tiers: SpreadTiers | None = None
    min_quote_notional: NonNegativeDecimal | None = None
    max_quote_notional: PositiveDecimal | None = None
    quote_ttl_ms: QuoteTtlMs | None = None
    inventory_skew_bps: SmallBps | None = None
    max_unhedged_exposure: ExposureLimits | None = None
    max_unhedged_notional: PositiveDecimal | None = None
    hedge_mode: HedgeMode | None = None
    hedge_netting_window_ms: NettingWindowMs | None = None
    slippage_tolerance_bps: SmallBps | None = None
    last_look_bps: SmallBps | None = Field(default=None, description="null turns last look off")

    @model_validator(mode="after")
    def _null_only_where_meaningful(self) -> UpdateDealerBody:
        # Optional here means "may be omitted"; only these two fields accept an explicit null.
        for name in sorted(self.model_fields_set - {"nickname", "last_look_bps"}):
            if getattr(self, name) is None:
                alias = type(self).model_fields[name].alias or name
                raise ValueError(f"{alias} may be omitted but not null")
        return self

    def config_changes(self) -> dict[str, Any]:
        """The configuration fields that were sent, camelCase as stored."""
        sent = self.model_fields_set & dealers.CONFIG_FIELDS
        return self.model_dump(mode="json", by_alias=True, include=set(sent))


class DealerIdBody(WireModel):
    dealer_account_id: uuid.UUID


class PauseDealerBody(WireModel):
    dealer_account_id: uuid.UUID
    reason: PauseReason | None = None


class LinkBody(WireModel):
    dealer_account_id: uuid.UUID = Field(description="Dealer account ID")
    trading_account_id: uuid.UUID = Field(description="Exchange trading account ID (the LP)")


class CreateClientBody(WireModel):
    nickname: Nickname | None = None


class DealerQuery(QueryModel):
    dealer_account_id: uuid.UUID


class DealerListQuery(ListQuery):
    status: DealerStatus | None = None


class ClientListQuery(ListQuery):
    status: AccountStatus | None = None


class LinkListQuery(ListQuery):
    dealer_account_id: uuid.UUID


# ---------------------------------------------------------------- response models


class DealerOut(WireModel):
    dealer_account_id: uuid.UUID
    trading_account_id: uuid.UUID = Field(description="Same as dealerAccountId")
    venue: str
    nickname: str | None
    status: DealerStatus
    pause_reason: str | None
    config: DealerConfig
    linked_accounts: list[uuid.UUID]
    created_at: int
    created_at_date_time: str
    updated_at: int
    updated_at_date_time: str


class LinkOut(WireModel):
    dealer_account_id: uuid.UUID
    trading_account_id: uuid.UUID
    venue: str
    external_trading_account_id: str
    nickname: str | None
    status: str
    ledger_account: str
    linked_at: int
    linked_at_date_time: str


def dealer_out(record: DealerRecord) -> DealerOut:
    return DealerOut(
        dealer_account_id=record.dealer_account_id, trading_account_id=record.dealer_account_id,
        venue=record.venue, nickname=record.nickname, status=record.status,
        pause_reason=record.pause_reason, config=record.config,
        linked_accounts=list(record.linked_accounts),
        created_at=millis(record.created_at) or 0,
        created_at_date_time=iso(record.created_at) or "",
        updated_at=millis(record.updated_at) or 0,
        updated_at_date_time=iso(record.updated_at) or "",
    )


def link_out(record: LinkRecord) -> LinkOut:
    return LinkOut(
        dealer_account_id=record.dealer_account_id, trading_account_id=record.trading_account_id,
        venue=record.venue, external_trading_account_id=record.external_trading_account_id,
        nickname=record.nickname, status=record.status, ledger_account=record.ledger_account,
        linked_at=millis(record.linked_at) or 0, linked_at_date_time=iso(record.linked_at) or "",
    )


# ---------------------------------------------------------------- registration


def register(api: Api) -> None:
    api.post("/api/v3/fermata/dealer/create", summary="Create a dealer with its quoting "
             "configuration (flat fields in, `config` object out)", tag=TAG_DEALERS,
             roles=ADMIN_ONLY, response=DealerOut, body=CreateDealerBody,
             errors=[Errors.INVALID_DEALER_CONFIG])(create_dealer)
    api.get("/api/v3/fermata/dealer/get", summary="One dealer", tag=TAG_DEALERS,
            roles=ALL_ROLES, response=DealerOut, query=DealerQuery,
            errors=[Errors.DEALER_NOT_FOUND])(get_dealer)
    api.get("/api/v3/fermata/dealer/list", summary="Dealers, oldest first", tag=TAG_DEALERS,
            roles=ALL_ROLES, response=Page[DealerOut], query=DealerListQuery)(list_dealers)
    api.post("/api/v3/fermata/dealer/update", summary="Change the nickname or some "
             "configuration fields; the merged configuration is validated as a whole",
             tag=TAG_DEALERS, roles=ADMIN_ONLY, response=DealerOut, body=UpdateDealerBody,
             errors=[Errors.DEALER_NOT_FOUND, Errors.INVALID_DEALER_CONFIG])(update_dealer)
    api.post("/api/v3/fermata/dealer/pause", summary="Stop quoting (idempotent)",
             tag=TAG_DEALERS, roles=ADMIN_ONLY, response=DealerOut, body=PauseDealerBody,
             errors=[Errors.DEALER_NOT_FOUND])(pause_dealer)
    api.post("/api/v3/fermata/dealer/resume", summary="Quote again (idempotent)",
             tag=TAG_DEALERS, roles=ADMIN_ONLY, response=DealerOut, body=DealerIdBody,
             errors=[Errors.DEALER_NOT_FOUND])(resume_dealer)
    api.post("/api/v3/fermata/dealer/link", summary="Link an ACTIVE exchange trading account "
             "to a dealer as LP; creates the ledger account exchange:{tradingAccountId}",
             tag=TAG_DEALERS, roles=ADMIN_ONLY, response=str, body=LinkBody,
             errors=[Errors.DEALER_NOT_FOUND, Errors.TRADING_ACCOUNT_NOT_FOUND,
                     Errors.NOT_EXCHANGE_ACCOUNT, Errors.ACCOUNT_NOT_ACTIVE,
                     Errors.ALREADY_LINKED, Errors.LINKED_TO_OTHER_DEALER],
             description="Admin only. Answers `\"ok\"`. The account must be an exchange "
             "account (not FERMATA) in ACTIVE status and linked to no dealer.")(link)
    api.post("/api/v3/fermata/dealer/unlink", summary="Remove an LP link (the ledger account "
             "and its history stay)", tag=TAG_DEALERS, roles=ADMIN_ONLY, response=str,
             body=LinkBody, errors=[Errors.DEALER_NOT_FOUND, Errors.TRADING_ACCOUNT_NOT_FOUND,
                                    Errors.NOT_LINKED])(unlink)
    api.get("/api/v3/fermata/dealer/listLinks", summary="A dealer's LP links, oldest first",
            tag=TAG_DEALERS, roles=READERS, response=Page[LinkOut], query=LinkListQuery,
            errors=[Errors.DEALER_NOT_FOUND])(list_links)
    api.post("/api/v3/fermata/client/create", summary="Create a client (a FERMATA trading "
             "account that requests quotes)", tag=TAG_CLIENTS, roles=ADMIN_ONLY,
             response=TradingAccountOut, body=CreateClientBody)(create_client)
    api.get("/api/v3/fermata/client/list", summary="Clients, oldest first (a trader sees the "
            "accounts of its token only)", tag=TAG_CLIENTS, roles=ALL_ROLES,
            response=Page[TradingAccountOut], query=ClientListQuery)(list_clients)


async def follow_links(app: web.Application) -> None:
    """Subscribe to (or drop) LP books at once after a change, not at the next periodic pass."""
    await app[MARKET_DATA].refresh(app[POOL])


def _uow(request: web.Request) -> UnitOfWork:
    return UnitOfWork(request.app[POOL])


# ---------------------------------------------------------------- handlers


async def create_dealer(
    request: web.Request, principal: Principal | None, params: CreateDealerBody
) -> DealerOut:
    config = dealers.parse_config(params.model_dump(by_alias=True, exclude={"nickname"}))
    async with _uow(request) as uow:
        record = await dealers.create_dealer(uow, request.app[CLOCK](), config=config,
                                             nickname=params.nickname)
    return dealer_out(record)


async def get_dealer(
    request: web.Request, principal: Principal | None, params: DealerQuery
) -> DealerOut:
    async with _uow(request) as uow:
        record = await dealers.get_dealer(uow.conn, params.dealer_account_id)
    return dealer_out(record)


async def list_dealers(
    request: web.Request, principal: Principal | None, params: DealerListQuery
) -> Page[DealerOut]:
    async with _uow(request) as uow:
        records, total = await dealers.list_dealers(
            uow.conn, status=params.status, limit=params.limit, offset=params.offset
        )
    return Page([dealer_out(r) for r in records], total, params.limit, params.offset)


async def update_dealer(
    request: web.Request, principal: Principal | None, params: UpdateDealerBody
) -> DealerOut:
    async with _uow(request) as uow:
        record = await dealers.update_dealer(
            uow, request.app[CLOCK](), params.dealer_account_id,
            changes=params.config_changes(), nickname=params.nickname,
            set_nickname="nickname" in params.model_fields_set,
        )
    await follow_links(request.app)
    await sync_dealer_instruments(request.app, params.dealer_account_id)
    return dealer_out(record)


async def pause_dealer(
    request: web.Request, principal: Principal | None, params: PauseDealerBody
) -> DealerOut:
    async with _uow(request) as uow:
        record = await dealers.pause_dealer(uow, request.app[CLOCK](), params.dealer_account_id,
                                            params.reason)
    return dealer_out(record)


async def resume_dealer(
    request: web.Request, principal: Principal | None, params: DealerIdBody
) -> DealerOut:
    async with _uow(request) as uow:
        record = await dealers.resume_dealer(uow, request.app[CLOCK](), params.dealer_account_id)
    return dealer_out(record)


async def link(request: web.Request, principal: Principal | None, params: LinkBody) -> str:
    async with _uow(request) as uow:
        await dealers.link_lp(uow, request.app[CLOCK](),
                              params.dealer_account_id, params.trading_account_id)
    request.app[METRICS].links_changed.labels("link").inc()
    await follow_links(request.app)
    await capture_baseline(request.app[POOL], request.app[VENUES], params.trading_account_id,
                           request.app[CLOCK]())
    await sync_dealer_instruments(request.app, params.dealer_account_id)
    return "ok"


async def unlink(request: web.Request, principal: Principal | None, params: LinkBody) -> str:
    async with _uow(request) as uow:
        await dealers.unlink_lp(uow, request.app[CLOCK](), params.dealer_account_id,
                                params.trading_account_id)
    request.app[METRICS].links_changed.labels("unlink").inc()
    await follow_links(request.app)
    return "ok"


async def list_links(
    request: web.Request, principal: Principal | None, params: LinkListQuery
) -> Page[LinkOut]:
    async with _uow(request) as uow:
        records, total = await dealers.list_links(
            uow.conn, params.dealer_account_id, limit=params.limit, offset=params.offset
        )
    return Page([link_out(r) for r in records], total, params.limit, params.offset)


async def create_client(
    request: web.Request, principal: Principal | None, params: CreateClientBody
) -> TradingAccountOut:
    async with _uow(request) as uow:
        record = await dealers.create_client(uow, request.app[CLOCK](), nickname=params.nickname)
    return trading_account_out(record)


async def list_clients(
    request: web.Request, principal: Principal | None, params: ClientListQuery
) -> Page[TradingAccountOut]:
    only = principal.accounts if principal is not None and principal.role is Role.TRADER else None
    async with _uow(request) as uow:
        records, total = await dealers.list_clients(
            uow.conn, status=params.status, only=only, limit=params.limit, offset=params.offset
        )
    return Page([trading_account_out(r) for r in records], total, params.limit, params.offset)
