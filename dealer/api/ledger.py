"""Ledger endpoints: accounts, transactions, a dealer's net flow per LP, reconciliation."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable
from decimal import Decimal
from typing import TypeVar

from aiohttp import web
from pydantic import Field

from dealer.api.framework import Api
from dealer.appkeys import CLOCK, LEDGER, POOL, VENUES
from dealer.auth import Principal, Role
from dealer.errors import ApiError, Errors
from dealer.services import reconciliation
from dealer.services.dealers import get_dealer
from dealer.uow import connection
from dealer.wire import ListQuery, Page, QueryModel, Uuid, WireModel, iso, millis
from ledger.accounts import InvalidAddress, exchange_account, validate_address
from ledger.assets import Asset, from_minor
from ledger.backend import CommittedTransaction, LedgerUnavailable

T = TypeVar("T")
READERS = [Role.ADMIN, Role.VIEWER]
TAG = "ledger"


class AddressQuery(QueryModel):
    address: str = Field(min_length=1, max_length=200)


class LedgerBalanceOut(WireModel):
    asset: str = Field(description="Formance notation CODE/scale")
    balance: str = Field(description="Integer minor units")
    amount: str = Field(description="Decimal amount in asset units")


class LedgerAccountOut(WireModel):
    address: str
    metadata: dict[str, str]
    balances: list[LedgerBalanceOut]


class TransactionQuery(ListQuery):
    address: str | None = Field(default=None, max_length=200)
    reference: str | None = Field(default=None, max_length=200)


class PostingOut(WireModel):
    source: str
    destination: str
    amount: str
    asset: str
    quantity: str


class TransactionOut(WireModel):
    transaction_id: int
    reference: str
    postings: list[PostingOut]
    metadata: dict[str, str]
    timestamp: int
    timestamp_date_time: str


class DealerQuery(QueryModel):
    dealer_account_id: Uuid


class AssetAmountOut(WireModel):
    asset: str
    amount: str


class WalletOut(WireModel):
    trading_account_id: uuid.UUID
    venue: str
    address: str
    exists: bool
    balances: list[AssetAmountOut]


class NetFlowOut(WireModel):
    dealer_account_id: uuid.UUID
    wallets: list[WalletOut]
    pending_entries: int = Field(description="Ledger entries still in the outbox")


class ReconciliationQuery(QueryModel):
    dealer_account_id: Uuid | None = None


class AssetCheckOut(WireModel):
    asset: str
    baseline: str
    venue_balance: str
    venue_change: str
    ledger_net_flow: str
    drift: str
    rounding: str | None
    unexplained: str
    status: reconciliation.AssetStatus


class LpCheckOut(WireModel):
    trading_account_id: uuid.UUID
    dealer_account_id: uuid.UUID
    venue: str
    address: str
    status: reconciliation.LpStatus
    pending_entries: int
    detail: str | None
    assets: list[AssetCheckOut]


class ReconciliationOut(WireModel):
    checked_at: int
    checked_at_date_time: str
    pending_entries: int
    lps: list[LpCheckOut]


def register(api: Api) -> None:
    api.get("/api/v3/ledger/account", summary="A ledger account: metadata and balances",
            tag=TAG, roles=READERS, query=AddressQuery, response=LedgerAccountOut,
            errors=[Errors.INVALID_LEDGER_ADDRESS, Errors.LEDGER_ACCOUNT_NOT_FOUND,
                    Errors.LEDGER_UNAVAILABLE])(account)
    api.get("/api/v3/ledger/transaction/list", summary="Ledger transactions, newest first",
            tag=TAG, roles=READERS, query=TransactionQuery, response=Page[TransactionOut],
            errors=[Errors.INVALID_LEDGER_ADDRESS, Errors.LEDGER_UNAVAILABLE])(transactions)
    api.get("/api/v3/fermata/dealer/netFlow", summary="Net flow per linked LP wallet "
            "(exchange:<tradingAccountId>) and asset", tag="dealers", roles=READERS,
            query=DealerQuery, response=NetFlowOut,
            errors=[Errors.DEALER_NOT_FOUND, Errors.LEDGER_UNAVAILABLE])(net_flow)
    api.get("/api/v3/ledger/reconciliation", summary="Venue balance changes since link against "
            "the ledger, per LP and asset", tag=TAG, roles=READERS,
            query=ReconciliationQuery, response=ReconciliationOut,
            errors=[Errors.DEALER_NOT_FOUND])(reconcile)


async def _ledger(call: Awaitable[T]) -> T:
    try:
        return await call
    except LedgerUnavailable as exc:
        raise ApiError(Errors.LEDGER_UNAVAILABLE, f"Ledger unavailable: {exc}") from None


def _address(value: str) -> str:
    try:
        return validate_address(value)
    except InvalidAddress:
        raise ApiError(Errors.INVALID_LEDGER_ADDRESS,
                       "Addresses are segments of letters, digits, _ and - joined by ':'"
                       ) from None


def _plain(value: Decimal) -> str:
    """A decimal as the wire carries it: `0.00000000` and `0.00000012`, never `0E-8` or
    `1.2E-7` (what str() gives for amounts below 1e-6)."""
    return format(value, "f")


def _amount(notation: str, units: int) -> str:
    return _plain(from_minor(units, Asset.parse(notation)))


def balances_out(balances: dict[str, int]) -> list[LedgerBalanceOut]:
    return [LedgerBalanceOut(asset=a, balance=str(u), amount=_amount(a, u))
            for a, u in sorted(balances.items())]


async def account(request: web.Request, principal: Principal | None,
                  params: AddressQuery) -> LedgerAccountOut:
    address = _address(params.address)
    found = await _ledger(request.app[LEDGER].account(address))
    if found is None:
        raise ApiError(Errors.LEDGER_ACCOUNT_NOT_FOUND)  # the address sent is not echoed
    metadata, balances = found
    return LedgerAccountOut(address=address, metadata=metadata, balances=balances_out(balances))


def transaction_out(tx: CommittedTransaction) -> TransactionOut:
    return TransactionOut(
        transaction_id=tx.transaction_id, reference=tx.reference,
        postings=[PostingOut(source=p.source, destination=p.destination, amount=str(p.amount),
                             asset=p.asset, quantity=_amount(p.asset, p.amount))
                  for p in tx.postings],
        metadata=dict(tx.metadata), timestamp=millis(tx.timestamp) or 0,
        timestamp_date_time=iso(tx.timestamp) or "")


async def transactions(request: web.Request, principal: Principal | None,
                       params: TransactionQuery) -> Page[TransactionOut]:
    address = None if params.address is None else _address(params.address)
    found, total = await _ledger(request.app[LEDGER].transactions(
        address=address, reference=params.reference, limit=params.limit, offset=params.offset))
    return Page([transaction_out(t) for t in found], total, params.limit, params.offset)


async def net_flow(request: web.Request, principal: Principal | None,
                   params: DealerQuery) -> NetFlowOut:
    app = request.app
    async with connection(app[POOL]) as conn:
        await get_dealer(conn, params.dealer_account_id)
        links = await conn.fetch(
            """SELECT l.trading_account_id, t.venue FROM dealer_link l
               JOIN trading_account t USING (trading_account_id)
               WHERE l.dealer_account_id = $1 ORDER BY l.linked_at, l.trading_account_id""",
            params.dealer_account_id)
    wallets = []
    for link in links:
        address = exchange_account(link["trading_account_id"])
        found = await _ledger(app[LEDGER].account(address))
        balances = {} if found is None else found[1]
        wallets.append(WalletOut(
            trading_account_id=link["trading_account_id"], venue=link["venue"],
            address=address, exists=found is not None,
            balances=[AssetAmountOut(asset=Asset.parse(a).code, amount=_amount(a, u))
                      for a, u in sorted(balances.items())]))
    return NetFlowOut(dealer_account_id=params.dealer_account_id, wallets=wallets,
                      pending_entries=await reconciliation.pending_entries(app[POOL]))


async def reconcile(request: web.Request, principal: Principal | None,
                    params: ReconciliationQuery) -> ReconciliationOut:
    app = request.app
    if params.dealer_account_id is not None:
        async with connection(app[POOL]) as conn:
            await get_dealer(conn, params.dealer_account_id)
    now = app[CLOCK]()
    checks = await reconciliation.reconcile(app[POOL], app[VENUES], app[LEDGER], now,
                                            dealer_account_id=params.dealer_account_id)
    return ReconciliationOut(
        checked_at=millis(now) or 0, checked_at_date_time=iso(now) or "",
        pending_entries=await reconciliation.pending_entries(app[POOL]),
        lps=[lp_check_out(c) for c in checks])


def lp_check_out(check: reconciliation.LpCheck) -> LpCheckOut:
    return LpCheckOut(
        trading_account_id=check.trading_account_id, dealer_account_id=check.dealer_account_id,
        venue=check.venue, address=check.address, status=check.status,
        pending_entries=check.pending_entries, detail=check.detail,
        assets=[AssetCheckOut(asset=a.asset, baseline=_plain(a.baseline),
                              venue_balance=_plain(a.venue_balance),
                              venue_change=_plain(a.venue_change),
                              ledger_net_flow=_plain(a.ledger_net_flow), drift=_plain(a.drift),
                              rounding=None if a.rounding is None else _plain(a.rounding),
                              unexplained=_plain(a.unexplained), status=a.status)
                for a in check.assets])
