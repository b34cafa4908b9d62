"""FERMATA area: dealers, their configuration and LP links (seeds/002), and clients."""

from __future__ import annotations

import logging
import uuid
from typing import Annotated, Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from dealer.api.framework import ALL_ROLES, Api, absent_or_value
from dealer.api.market import sync_dealer_instruments
from dealer.api.schemas import AccountStatus, TradingAccountOut, trading_account_out
from dealer.appkeys import CLOCK, LEDGER, MARKET_DATA, METRICS, POOL, VENUES
from dealer.auth import Principal, Role
from dealer.errors import Errors, invalid_fields
from dealer.services import dealers
from dealer.services.dealers import (
    DealerConfig,
    DealerConfigFields,
    DealerRecord,
    DealerStatus,
    ExposureLimits,
    HedgeMode,
    LinkRecord,
    LinkState,
    NettingWindowMs,
    NonNegativeDecimal,
    PausedBy,
    PositiveDecimal,
    QuoteTtlMs,
    SmallBps,
    SpreadBps,
    SpreadTiers,
    Symbols,
    UnlinkState,
)
from dealer.services.exposure import export_kill_switch
from dealer.services.reconciliation import capture_baseline
from dealer.uow import UnitOfWork
from dealer.wire import ListQuery, Nickname, Page, QueryModel, Uuid, WireModel, iso, millis

log = logging.getLogger(__name__)

TAG_DEALERS = "dealers"
TAG_CLIENTS = "clients"
ADMIN_ONLY = [Role.ADMIN]
READERS = [Role.ADMIN, Role.VIEWER]

PauseReason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1,
                                               max_length=500)]

# ---------------------------------------------------------------- request models


class CreateDealerBody(DealerConfigFields):
    """A nickname and the configuration fields, flat; omitted fields take their defaults."""

    nickname: Nickname | None = None


# The fields of a dealer update that take an explicit null (every other may only be omitted).
_NULLABLE_UPDATES = frozenset({"nickname", "last_look_bps"})


def _null_only_where_taken(schema: dict[str, Any], model: type[BaseModel]) -> None:
    """The update's schema says what its validator does: null only where it means something,
    and no default (an omitted field keeps its value; it does not take the model's None)."""
    properties = schema.get("properties", {})
    for name, info in model.model_fields.items():
        alias = info.alias or name
        if alias not in properties:
            continue
        if name in _NULLABLE_UPDATES:
            properties[alias].pop("default", None)
        else:
            properties[alias] = absent_or_value(properties[alias])


class UpdateDealerBody(WireModel):
    """Only the fields sent change; the merged configuration is validated as a whole."""

    model_config = ConfigDict(json_schema_extra=_null_only_where_taken)

    dealer_account_id: Uuid
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
        fields = type(self).model_fields
        nulls = [fields[name].alias or name
                 for name in sorted(self.model_fields_set - _NULLABLE_UPDATES)
                 if getattr(self, name) is None]
        if nulls:  # named, not "body" as a ValueError here would be
            raise invalid_fields([(alias, "may be omitted but not null") for alias in nulls])
        return self

    def config_changes(self) -> dict[str, Any]:
        """The configuration fields that were sent, camelCase as stored."""
        sent = self.model_fields_set & dealers.CONFIG_FIELDS
        return self.model_dump(mode="json", by_alias=True, include=set(sent))


class DealerIdBody(WireModel):
    dealer_account_id: Uuid


class PauseDealerBody(WireModel):
    dealer_account_id: Uuid
    reason: PauseReason | None = None


class LinkBody(WireModel):
    dealer_account_id: Uuid = Field(description="Dealer account ID")
    trading_account_id: Uuid = Field(description="Exchange trading account ID (the LP)")


class UnlinkBody(LinkBody):
    drain: bool = Field(default=False, strict=True,
                        description="With hedge work in flight on the LP: stop routing hedges "
                        "to it and unlink it once that work is done (answers the link's state) "
                        "instead of refusing")


class CreateClientBody(WireModel):
    nickname: Nickname | None = None


class DealerQuery(QueryModel):
    dealer_account_id: Uuid


class DealerListQuery(ListQuery):
    status: DealerStatus | None = None


class ClientListQuery(ListQuery):
    status: AccountStatus | None = None


class LinkListQuery(ListQuery):
    dealer_account_id: Uuid


# ---------------------------------------------------------------- response models


class DealerOut(WireModel):
    dealer_account_id: uuid.UUID
    trading_account_id: uuid.UUID = Field(description="Same as dealerAccountId")
    venue: str
    nickname: str | None
    status: DealerStatus
    pause_reason: str | None
    paused_by: PausedBy | None = Field(description="Who paused it: manual (an admin), or the "
                                       "kill switch (exposure, hedge_failures); null when ACTIVE")
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
    status: AccountStatus = Field(description="The LP account's status")
    ledger_account: str
    draining: bool = Field(description="Unlink requested while hedge work was in flight: no "
                           "new hedge orders go to it; it is unlinked once that work is done")
    state: LinkState = Field(description="LINKED or DRAINING")
    linked_at: int
    linked_at_date_time: str


class UnlinkOut(WireModel):
    dealer_account_id: uuid.UUID
    trading_account_id: uuid.UUID
    state: UnlinkState = Field(description="UNLINKED (done) or DRAINING (accepted: unlinked in "
                             "the background once its hedge work in flight is done)")
    orders_in_flight: int = Field(description="The LP's hedge orders whose outcome is not "
                                  "known yet (SENT or UNKNOWN)")
    jobs_in_progress: int = Field(description="IN_PROGRESS hedge jobs whose plan routes to it")


def dealer_out(record: DealerRecord) -> DealerOut:
    return DealerOut(
        dealer_account_id=record.dealer_account_id, trading_account_id=record.dealer_account_id,
        venue=record.venue, nickname=record.nickname, status=record.status,
        pause_reason=record.pause_reason, paused_by=record.paused_by, config=record.config,
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
        draining=record.draining, state=record.state, linked_at=millis(record.linked_at) or 0,
        linked_at_date_time=iso(record.linked_at) or "",
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
             "and its history stay); with drain: true, once its hedge work in flight is done",
             tag=TAG_DEALERS, roles=ADMIN_ONLY, response=str | UnlinkOut, body=UnlinkBody,
             errors=[Errors.DEALER_NOT_FOUND, Errors.TRADING_ACCOUNT_NOT_FOUND,
                     Errors.NOT_LINKED, Errors.LP_ORDERS_IN_FLIGHT],
             description="Admin only. Without `drain` answers `\"ok\"`, or refuses an LP with "
             "hedge orders in flight (SENT/UNKNOWN) or IN_PROGRESS hedge jobs routed to it "
             "(`-130010`, nothing written). With `\"drain\": true` answers the link's `state`: "
             "`UNLINKED` when nothing was in flight, else `DRAINING` (accepted: no new hedge "
             "orders go to it and a background job unlinks it once its work is done).")(unlink)
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
    export_kill_switch(request.app[METRICS], record.dealer_account_id, record.status,
                       record.paused_by)
    return dealer_out(record)


async def resume_dealer(
    request: web.Request, principal: Principal | None, params: DealerIdBody
) -> DealerOut:
    async with _uow(request) as uow:
        record = await dealers.resume_dealer(uow, request.app[CLOCK](), params.dealer_account_id)
    export_kill_switch(request.app[METRICS], record.dealer_account_id, record.status,
                       record.paused_by)
    return dealer_out(record)


async def link(request: web.Request, principal: Principal | None, params: LinkBody) -> str:
    async with _uow(request) as uow:
        await dealers.link_lp(uow, request.app[CLOCK](),
                              params.dealer_account_id, params.trading_account_id)
    request.app[METRICS].links_changed.labels("link").inc()
    await follow_links(request.app)
    await capture_baseline(request.app[POOL], request.app[VENUES], request.app[LEDGER],
                           params.trading_account_id, request.app[CLOCK]())
    await sync_dealer_instruments(request.app, params.dealer_account_id)
    return "ok"


async def unlink(request: web.Request, principal: Principal | None,
                 params: UnlinkBody) -> str | UnlinkOut:
    async with _uow(request) as uow:
        outcome = await dealers.unlink_lp(uow, request.app[CLOCK](), params.dealer_account_id,
                                          params.trading_account_id, drain=params.drain)
    if outcome.state == "UNLINKED":
        request.app[METRICS].links_changed.labels("unlink").inc()
        await follow_links(request.app)
    else:
        log.info("LP %s of dealer %s is draining: %d order(s) in flight, %d job(s) in "
                 "progress", params.trading_account_id, params.dealer_account_id,
                 outcome.work.orders, outcome.work.jobs,
                 extra={"event": "lp_draining", "trading_account_id":
                        str(params.trading_account_id)})
    if not params.drain:
        return "ok"
    return UnlinkOut(dealer_account_id=params.dealer_account_id,
                     trading_account_id=params.trading_account_id, state=outcome.state,
                     orders_in_flight=outcome.work.orders, jobs_in_progress=outcome.work.jobs)


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
