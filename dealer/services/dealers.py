"""Dealers, clients and LP links: the FERMATA accounts this service owns (DESIGN §2, seeds/002).

Every write runs in the caller's unit of work and checks everything before writing anything, so a
refusal leaves the database untouched. Links lock the LP's trading-account row, which serialises
concurrent links and unlinks of one account; the dealer_link constraints are the backstop.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from itertools import pairwise
from typing import Annotated, Any, Literal

import asyncpg
from annotated_types import Len
from pydantic import AfterValidator, Field, StringConstraints, ValidationError, model_validator

from dealer.errors import ApiError, Errors
from dealer.services.records import (
    CLIENT,
    DEALER,
    TradingAccountRecord,
    load_account,
    record_operation,
)
from dealer.services.trading_accounts import AccountFilter, list_accounts
from dealer.uow import UnitOfWork
from dealer.wire import WireModel, iso
from ledger.accounts import exchange_account
from ledger.backend import AccountMetadata
from ledger.outbox import enqueue_account_metadata

FERMATA = "FERMATA"
DEALER_EXTERNAL_ID = "dealer"
CLIENT_EXTERNAL_ID = "client"
ACTIVE = "ACTIVE"
PAUSED = "PAUSED"

DealerStatus = Literal["ACTIVE", "PAUSED"]
# Who paused a dealer: an admin, or the kill switch (unhedged notional, hedge failure rate).
PausedBy = Literal["manual", "exposure", "hedge_failures"]
MANUAL = "manual"
LinkState = Literal["LINKED", "DRAINING"]
UnlinkState = Literal["UNLINKED", "DRAINING"]
HedgeMode = Literal["IMMEDIATE", "NETTED"]

# ---------------------------------------------------------------- configuration fields

# Bounded digits keep every value exactly representable in the ledger's integer minor units.
_DECIMAL = re.compile(r"^-?[0-9]{1,30}(\.[0-9]{1,18})?$")  # [0-9]: \d takes any script's
_SYMBOL = re.compile(r"^[A-Z0-9]{1,20}/[A-Z0-9]{1,20}$")
_ASSET = re.compile(r"^[A-Z0-9]{1,20}$")


def _decimal_check(
    low: Decimal, high: Decimal | None, *, low_exclusive: bool = False
) -> Callable[[str], str]:
    """A validator that parses with Decimal and checks bounds, keeping the string as sent."""

    def check(value: str) -> str:
        if not _DECIMAL.fullmatch(value):
            raise ValueError('must be a decimal string such as "12.5"')
        try:
            number = Decimal(value)
        except InvalidOperation:
            raise ValueError('must be a decimal string such as "12.5"') from None
        if low_exclusive and number <= low:
            raise ValueError(f"must be greater than {low}")
        if not low_exclusive and number < low:
            raise ValueError(f"must be at least {low}")
        if high is not None and number > high:
            raise ValueError(f"must be at most {high}")
        return value

    return check


def _symbol_check(value: str) -> str:
    if not _SYMBOL.fullmatch(value):
        raise ValueError('symbol must be "BASE/QUOTE" in upper-case letters and digits, e.g. '
                         '"BTC/USDT"')
    return value


def _asset_check(value: str) -> str:
    if not _ASSET.fullmatch(value):
        raise ValueError("asset must be upper-case letters and digits, e.g. BTC")
    return value


def _unique(values: list[str]) -> list[str]:
    if len(set(values)) != len(values):
        raise ValueError("symbols must be unique")
    return values


_DecimalText = Annotated[str, StringConstraints(max_length=64)]
SpreadBps = Annotated[_DecimalText, AfterValidator(_decimal_check(Decimal(0), Decimal(10000)))]
SmallBps = Annotated[_DecimalText, AfterValidator(_decimal_check(Decimal(0), Decimal(1000)))]
NonNegativeDecimal = Annotated[_DecimalText, AfterValidator(_decimal_check(Decimal(0), None))]
PositiveDecimal = Annotated[
    _DecimalText, AfterValidator(_decimal_check(Decimal(0), None, low_exclusive=True))
]
Symbol = Annotated[str, StringConstraints(max_length=41), AfterValidator(_symbol_check)]
Asset = Annotated[str, StringConstraints(max_length=20), AfterValidator(_asset_check)]
Symbols = Annotated[list[Symbol], Len(1, 50), AfterValidator(_unique)]
QuoteTtlMs = Annotated[int, Field(ge=500, le=60000, strict=True)]
NettingWindowMs = Annotated[int, Field(ge=100, le=60000, strict=True)]
ExposureLimits = Annotated[dict[Asset, PositiveDecimal], Len(0, 100)]


class SpreadTier(WireModel):
    """Spread for quotes whose notional is at most `upToNotional` (quote currency)."""

    up_to_notional: PositiveDecimal
    spread_bps: SpreadBps


def _increasing(tiers: list[SpreadTier]) -> list[SpreadTier]:
    bounds = [Decimal(t.up_to_notional) for t in tiers]
    if any(b <= a for a, b in pairwise(bounds)):
        raise ValueError("spreadTiers must have strictly increasing upToNotional")
    return tiers


SpreadTiers = Annotated[list[SpreadTier], Len(0, 20), AfterValidator(_increasing)]


class DealerConfigFields(WireModel):
    """The quoting configuration, field by field (each field validated on its own)."""

    symbols: Symbols = Field(description='Symbols quoted, "BASE/QUOTE" (1..50, unique)',
                             examples=[["BTC/USDT", "ETH/USDT"]])
    spread_bps: SpreadBps = Field(default="10", description="Spread in bps, 0..10000")
    spread_tiers: SpreadTiers = Field(
        default_factory=list,
        description="Spread by size: the first tier whose upToNotional covers the side's hedge "
        "notional (fee-adjusted, before spread) applies; larger quotes use spreadBps",
    )
    min_quote_notional: NonNegativeDecimal = Field(
        default="10", description="Smallest quote notional (quote currency)")
    max_quote_notional: PositiveDecimal = Field(
        default="1000000", description="Largest quote notional (quote currency)")
    quote_ttl_ms: QuoteTtlMs = Field(default=5000, description="Quote lifetime, 500..60000 ms")
    inventory_skew_bps: SmallBps = Field(
        default="0", description="Price skew in bps applied at the full exposure limit "
        "(maxUnhedgedExposure of the base asset; none without one), 0..1000")
    max_unhedged_exposure: ExposureLimits = Field(
        default_factory=dict, description="Largest unhedged position per asset (asset → amount)")
    max_unhedged_notional: PositiveDecimal = Field(
        default="250000", description="Largest unhedged exposure in quote currency")
    hedge_mode: HedgeMode = Field(
        default="IMMEDIATE", description="IMMEDIATE: one hedge per fill; NETTED: per window")
    hedge_netting_window_ms: NettingWindowMs = Field(
        default=1000, description="Netting window for NETTED hedging, 100..60000 ms")
    slippage_tolerance_bps: SmallBps = Field(
        default="20", description="Worst hedge price vs the quote-time plan, bps, 0..1000")
    last_look_bps: SmallBps | None = Field(
        default=None, description="Refuse an accept if the market moved more than this (bps); "
        "null: last look is off")


# The fields `DealerConfig._consistent` checks together: its refusal names both.
_CHECKED_TOGETHER = ("minQuoteNotional", "maxQuoteNotional")


class DealerConfig(DealerConfigFields):
    """A complete, consistent configuration (fields together make sense)."""

    @model_validator(mode="after")
    def _consistent(self) -> DealerConfig:
        if Decimal(self.min_quote_notional) >= Decimal(self.max_quote_notional):
            raise ValueError("minQuoteNotional must be below maxQuoteNotional")
        return self

    def stored(self) -> dict[str, Any]:
        """The jsonb form: camelCase keys, decimals as strings."""
        return self.model_dump(mode="json", by_alias=True)


CONFIG_FIELDS = frozenset(DealerConfig.model_fields)


def parse_config(values: Mapping[str, Any]) -> DealerConfig:
    """Validate a whole configuration (camelCase keys); refuses with INVALID_DEALER_CONFIG."""
    try:
        return DealerConfig.model_validate(dict(values))
    except ValidationError as exc:
        fields: list[dict[str, str]] = []
        summaries: list[str] = []
        for err in exc.errors(include_input=False, include_url=False, include_context=False):
            # A field's own error has its place; the rule over several fields names them all.
            names = ([".".join(str(p) for p in err["loc"])] if err["loc"]
                     else list(_CHECKED_TOGETHER))
            fields += [{"field": name, "message": err["msg"], "type": err["type"]}
                       for name in names]
            summaries.append(f"{', '.join(names)}: {err['msg']}")
        raise ApiError(Errors.INVALID_DEALER_CONFIG,
                       f"Invalid dealer configuration: {'; '.join(summaries[:5])}",
                       {"fields": fields}) from None


# ---------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class DealerRecord:
    dealer_account_id: uuid.UUID
    venue: str
    nickname: str | None
    status: DealerStatus
    pause_reason: str | None
    paused_by: PausedBy | None
    config: DealerConfig
    linked_accounts: tuple[uuid.UUID, ...]
    created_at: dt.datetime
    updated_at: dt.datetime

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> DealerRecord:
        return cls(
            dealer_account_id=row["dealer_account_id"], venue=row["venue"],
            nickname=row["nickname"], status=row["status"], pause_reason=row["pause_reason"],
            paused_by=row["paused_by"], config=DealerConfig.model_validate(row["config"]),
            linked_accounts=tuple(row["linked_accounts"]), created_at=row["created_at"],
            updated_at=row["updated_at"],
        )


@dataclass(frozen=True, slots=True)
class LinkRecord:
    dealer_account_id: uuid.UUID
    trading_account_id: uuid.UUID
    venue: str
    external_trading_account_id: str
    nickname: str | None
    status: str
    linked_at: dt.datetime
    draining: bool = False

    @property
    def ledger_account(self) -> str:
        return exchange_account(self.trading_account_id)

    @property
    def state(self) -> LinkState:
        return "DRAINING" if self.draining else "LINKED"


# ---------------------------------------------------------------- dealers

# What DealerRecord.from_row reads (`d` the dealer, `ta` its trading account); other queries of
# dealers add their own columns to it.
DEALER_COLUMNS = """d.dealer_account_id, ta.venue, ta.nickname, d.status, d.pause_reason,
       d.paused_by, d.config, d.created_at, d.updated_at,
       ARRAY(SELECT l.trading_account_id FROM dealer_link l
             WHERE l.dealer_account_id = d.dealer_account_id
             ORDER BY l.linked_at, l.trading_account_id) AS linked_accounts"""
DEALER_FROM = "FROM dealer d JOIN trading_account ta ON ta.trading_account_id = d.dealer_account_id"
_DEALER_SELECT = f"SELECT {DEALER_COLUMNS}\n{DEALER_FROM}\n"
_DEALER_BY_ID = _DEALER_SELECT + "WHERE d.dealer_account_id = $1"
_DEALER_PAGE = _DEALER_SELECT + """WHERE ($1::text IS NULL OR d.status = $1)
ORDER BY d.created_at, d.dealer_account_id
LIMIT $2 OFFSET $3"""


async def _dealer(conn: asyncpg.Connection, dealer_account_id: uuid.UUID) -> DealerRecord:
    row = await conn.fetchrow(_DEALER_BY_ID, dealer_account_id)
    if row is None:
        raise ApiError(Errors.DEALER_NOT_FOUND)
    return DealerRecord.from_row(row)


async def _lock_dealer(conn: asyncpg.Connection, dealer_account_id: uuid.UUID) -> None:
    """Lock the dealer row (so concurrent updates merge one after the other) or answer 404."""
    found = await conn.fetchval(
        "SELECT 1 FROM dealer WHERE dealer_account_id = $1 FOR UPDATE", dealer_account_id
    )
    if found is None:
        raise ApiError(Errors.DEALER_NOT_FOUND)


async def _insert_fermata_account(
    conn: asyncpg.Connection, kind: str, external_id: str, nickname: str | None,
    now: dt.datetime,
) -> uuid.UUID:
    account_id = uuid.uuid4()
    await conn.execute(
        """INSERT INTO trading_account (trading_account_id, venue, kind,
               external_trading_account_id, account_type, external_account_type, nickname,
               status, created_at, updated_at)
           VALUES ($1, $2, $3, $4, $3, $3, $5, 'ACTIVE', $6, $6)""",
        account_id, FERMATA, kind, external_id, nickname, now,
    )
    return account_id


async def create_dealer(
    uow: UnitOfWork, now: dt.datetime, *, config: DealerConfig, nickname: str | None = None
) -> DealerRecord:
    """A new ACTIVE dealer: its FERMATA trading account and its dealer row."""
    conn = uow.conn
    dealer_account_id = await _insert_fermata_account(
        conn, DEALER, DEALER_EXTERNAL_ID, nickname, now
    )
    await conn.execute(
        """INSERT INTO dealer (dealer_account_id, status, pause_reason, config, created_at,
                               updated_at)
           VALUES ($1, 'ACTIVE', NULL, $2, $3, $3)""",
        dealer_account_id, config.stored(), now,
    )
    record = await _dealer(conn, dealer_account_id)
    await uow.commit()
    return record


async def get_dealer(conn: asyncpg.Connection, dealer_account_id: uuid.UUID) -> DealerRecord:
    """One dealer, or DEALER_NOT_FOUND."""
    return await _dealer(conn, dealer_account_id)


async def list_dealers(
    conn: asyncpg.Connection, *, status: str | None, limit: int, offset: int
) -> tuple[list[DealerRecord], int]:
    """One page of dealers (oldest first) and how many match the filter."""
    total = await conn.fetchval(
        "SELECT count(*) FROM dealer WHERE ($1::text IS NULL OR status = $1)", status
    )
    rows = await conn.fetch(_DEALER_PAGE, status, limit, offset)
    return [DealerRecord.from_row(r) for r in rows], int(total)


async def update_dealer(
    uow: UnitOfWork,
    now: dt.datetime,
    dealer_account_id: uuid.UUID,
    *,
    changes: Mapping[str, Any],
    nickname: str | None = None,
    set_nickname: bool = False,
) -> DealerRecord:
    """Merge `changes` (camelCase config keys) into the config, re-validate, write if different."""
    conn = uow.conn
    await _lock_dealer(conn, dealer_account_id)
    current = await _dealer(conn, dealer_account_id)
    merged = parse_config({**current.config.stored(), **changes})
    changed = [
        name for name in DealerConfig.model_fields
        if getattr(merged, name) != getattr(current.config, name)
    ]
    rename = set_nickname and nickname != current.nickname
    if not changed and not rename:
        return current
    if changed:
        await conn.execute(
            "UPDATE dealer SET config = $2, updated_at = $3 WHERE dealer_account_id = $1",
            dealer_account_id, merged.stored(), now,
        )
    if rename:
        await conn.execute(
            """UPDATE trading_account SET nickname = $2, updated_at = $3
               WHERE trading_account_id = $1""",
            dealer_account_id, nickname, now,
        )
        await conn.execute(
            "UPDATE dealer SET updated_at = $2 WHERE dealer_account_id = $1",
            dealer_account_id, now,
        )
    alias = {name: info.alias or name for name, info in DealerConfig.model_fields.items()}
    await record_operation(
        conn, dealer_account_id, "UPDATE", now,
        {"config": [alias[n] for n in changed], "nickname": rename},
    )
    record = await _dealer(conn, dealer_account_id)
    await uow.commit()
    return record


async def pause_dealer(
    uow: UnitOfWork, now: dt.datetime, dealer_account_id: uuid.UUID, reason: str | None = None
) -> DealerRecord:
    """Stop quoting (paused_by `manual`). Pausing a dealer an admin paused changes nothing
    unless a new reason is given; pausing one the kill switch paused makes the pause manual."""
    conn = uow.conn
    await _lock_dealer(conn, dealer_account_id)
    current = await _dealer(conn, dealer_account_id)
    if (current.status == PAUSED and current.paused_by == MANUAL
            and (reason is None or reason == current.pause_reason)):
        return current
    await conn.execute(
        """UPDATE dealer SET status = 'PAUSED', paused_by = 'manual', pause_reason = $2,
               updated_at = $3
           WHERE dealer_account_id = $1""",
        dealer_account_id, reason if reason is not None else current.pause_reason, now,
    )
    await record_operation(conn, dealer_account_id, "PAUSE", now, {
        "by": MANUAL, "reason": reason if reason is not None else current.pause_reason,
        "previousStatus": current.status, "previousPausedBy": current.paused_by})
    record = await _dealer(conn, dealer_account_id)
    await uow.commit()
    return record


async def resume_dealer(
    uow: UnitOfWork, now: dt.datetime, dealer_account_id: uuid.UUID
) -> DealerRecord:
    """Quote again, whoever paused it; resuming an active dealer changes nothing. (A kill
    switch whose condition still holds pauses the dealer again at its next check.)"""
    conn = uow.conn
    await _lock_dealer(conn, dealer_account_id)
    current = await _dealer(conn, dealer_account_id)
    if current.status == ACTIVE:
        return current
    await conn.execute(
        """UPDATE dealer SET status = 'ACTIVE', pause_reason = NULL, paused_by = NULL,
               updated_at = $2
           WHERE dealer_account_id = $1""",
        dealer_account_id, now,
    )
    await record_operation(conn, dealer_account_id, "RESUME", now, {
        "previousPausedBy": current.paused_by, "previousReason": current.pause_reason})
    record = await _dealer(conn, dealer_account_id)
    await uow.commit()
    return record


# ---------------------------------------------------------------- clients

async def create_client(
    uow: UnitOfWork, now: dt.datetime, *, nickname: str | None = None
) -> TradingAccountRecord:
    """A new ACTIVE client: a FERMATA trading account that requests and accepts quotes."""
    account_id = await _insert_fermata_account(uow.conn, CLIENT, CLIENT_EXTERNAL_ID, nickname, now)
    record = await load_account(uow.conn, account_id)
    assert record is not None
    await uow.commit()
    return record


async def list_clients(
    conn: asyncpg.Connection,
    *,
    status: str | None,
    only: frozenset[uuid.UUID] | None,
    limit: int,
    offset: int,
) -> tuple[list[TradingAccountRecord], int]:
    """One page of clients (oldest first); `only` restricts to those accounts (a trader's)."""
    return await list_accounts(conn, AccountFilter(
        trading_account_id=None, venue=None, status=status, only=only, limit=limit,
        offset=offset, kind=CLIENT))


# ---------------------------------------------------------------- links

_LINKS_PAGE = """
SELECT l.dealer_account_id, l.trading_account_id, ta.venue, ta.external_trading_account_id,
       ta.nickname, ta.status, l.linked_at, l.draining
FROM dealer_link l JOIN trading_account ta USING (trading_account_id)
WHERE l.dealer_account_id = $1
ORDER BY l.linked_at, l.trading_account_id
LIMIT $2 OFFSET $3
"""


async def _existing_link_dealer(
    conn: asyncpg.Connection, trading_account_id: uuid.UUID
) -> uuid.UUID | None:
    dealer_account_id: uuid.UUID | None = await conn.fetchval(
        "SELECT dealer_account_id FROM dealer_link WHERE trading_account_id = $1",
        trading_account_id,
    )
    return dealer_account_id


def _link_refusal(dealer_account_id: uuid.UUID, linked_to: uuid.UUID) -> ApiError:
    if linked_to == dealer_account_id:
        return ApiError(Errors.ALREADY_LINKED)
    return ApiError(Errors.LINKED_TO_OTHER_DEALER)


async def insert_link(
    conn: asyncpg.Connection,
    dealer_account_id: uuid.UUID,
    trading_account_id: uuid.UUID,
    now: dt.datetime,
) -> None:
    """Insert the link row; a constraint violation becomes ALREADY_LINKED or LINKED_TO_OTHER_DEALER.

    Runs in a savepoint so that, after a violation, the transaction can still read which dealer
    won and answer the precise error.
    """
    try:
        async with conn.transaction():
            await conn.execute(
                """INSERT INTO dealer_link (dealer_account_id, trading_account_id, linked_at)
                   VALUES ($1, $2, $3)""",
                dealer_account_id, trading_account_id, now,
            )
    except asyncpg.UniqueViolationError:
        linked_to = await _existing_link_dealer(conn, trading_account_id)
        raise _link_refusal(dealer_account_id, linked_to or dealer_account_id) from None


async def _dealer_and_locked_account(
    conn: asyncpg.Connection, dealer_account_id: uuid.UUID, trading_account_id: uuid.UUID
) -> TradingAccountRecord:
    """404 for an unknown dealer or account; else the account, its row locked so that a
    concurrent link or unlink of the same account waits, then sees this one's outcome."""
    found = await conn.fetchval(
        "SELECT 1 FROM dealer WHERE dealer_account_id = $1", dealer_account_id
    )
    if found is None:
        raise ApiError(Errors.DEALER_NOT_FOUND)
    account = await load_account(conn, trading_account_id, for_update=True)
    if account is None:
        raise ApiError(Errors.TRADING_ACCOUNT_NOT_FOUND)
    return account


async def link_lp(
    uow: UnitOfWork,
    now: dt.datetime,
    dealer_account_id: uuid.UUID,
    trading_account_id: uuid.UUID,
) -> None:
    """Link an ACTIVE exchange account to a dealer as LP and open its `exchange:` wallet."""
    conn = uow.conn
    account = await _dealer_and_locked_account(conn, dealer_account_id, trading_account_id)
    if not account.is_exchange:
        raise ApiError(Errors.NOT_EXCHANGE_ACCOUNT)
    linked_to = await _existing_link_dealer(conn, trading_account_id)
    if linked_to is not None:
        raise _link_refusal(dealer_account_id, linked_to)
    if account.status != ACTIVE:
        raise ApiError(Errors.ACCOUNT_NOT_ACTIVE,
                       f"Trading account is not ACTIVE (status {account.status})")
    await insert_link(conn, dealer_account_id, trading_account_id, now)
    address = exchange_account(trading_account_id)
    await record_operation(
        conn, trading_account_id, "LINK", now,
        {"dealerAccountId": str(dealer_account_id), "ledgerAccount": address},
    )
    # The wallet is opened through the outbox, in this transaction: it exists in the ledger
    # exactly when the link does, whichever backend is behind (and however long it is down).
    await enqueue_account_metadata(conn, AccountMetadata(address, {
        "dealerAccountId": str(dealer_account_id), "venue": account.venue,
        "linkedAt": iso(now) or ""}), now)
    await uow.commit()


@dataclass(frozen=True, slots=True)
class LpWork:
    """What an LP still has in flight: hedge orders whose outcome is not known yet (SENT or
    UNKNOWN) and IN_PROGRESS hedge jobs whose plan routes to it."""

    orders: int
    jobs: int

    @property
    def idle(self) -> bool:
        return self.orders == 0 and self.jobs == 0


@dataclass(frozen=True, slots=True)
class UnlinkOutcome:
    state: UnlinkState  # UNLINKED, or DRAINING until its work in flight is done
    work: LpWork


async def lp_work_in_flight(conn: asyncpg.Connection, trading_account_id: uuid.UUID) -> LpWork:
    """The LP's hedge work in flight (whichever dealer's jobs: plans keep their LPs)."""
    orders = await conn.fetchval(
        """SELECT count(*) FROM hedge_order
           WHERE trading_account_id = $1 AND status IN ('SENT', 'UNKNOWN')""",
        trading_account_id)
    jobs = await conn.fetchval(
        """SELECT count(*) FROM hedge_job
           WHERE status = 'IN_PROGRESS'
             AND plan -> 'legs' @> jsonb_build_array(jsonb_build_object('tradingAccountId',
                                                                        $1::text))""",
        str(trading_account_id))
    return LpWork(int(orders), int(jobs))


async def _locked_link(conn: asyncpg.Connection, dealer_account_id: uuid.UUID,
                       trading_account_id: uuid.UUID) -> asyncpg.Record | None:
    # Locked so that the in-flight check and the unlink (or drain) see one state of the link: a
    # hedge worker that reads the link FOR SHARE before recording an order on this LP waits.
    row: asyncpg.Record | None = await conn.fetchrow(
        """SELECT draining FROM dealer_link
           WHERE dealer_account_id = $1 AND trading_account_id = $2 FOR UPDATE""",
        dealer_account_id, trading_account_id)
    return row


async def _remove_link(conn: asyncpg.Connection, now: dt.datetime, dealer_account_id: uuid.UUID,
                       trading_account_id: uuid.UUID, *, drained: bool) -> None:
    await conn.execute(
        "DELETE FROM dealer_link WHERE dealer_account_id = $1 AND trading_account_id = $2",
        dealer_account_id, trading_account_id,
    )
    detail: dict[str, Any] = {"dealerAccountId": str(dealer_account_id),
                              "ledgerAccount": exchange_account(trading_account_id)}
    if drained:
        detail["drained"] = True
    await record_operation(conn, trading_account_id, "UNLINK", now, detail)


async def unlink_lp(
    uow: UnitOfWork,
    now: dt.datetime,
    dealer_account_id: uuid.UUID,
    trading_account_id: uuid.UUID,
    *,
    drain: bool = False,
) -> UnlinkOutcome:
    """Remove a link; the `exchange:` ledger account stays, its history still matters.

    An LP with hedge work in flight is not unlinked: without `drain` the call is refused
    (LP_ORDERS_IN_FLIGHT, nothing written); with `drain` the link is marked draining (no new
    hedge orders are routed to it) and `complete_drain` unlinks it once its work is done.
    """
    conn = uow.conn
    await _dealer_and_locked_account(conn, dealer_account_id, trading_account_id)
    link = await _locked_link(conn, dealer_account_id, trading_account_id)
    if link is None:
        raise ApiError(Errors.NOT_LINKED)
    work = await lp_work_in_flight(conn, trading_account_id)
    if not work.idle:
        if not drain:
            raise ApiError(
                Errors.LP_ORDERS_IN_FLIGHT,
                f"The LP has {work.orders} hedge order(s) in flight and {work.jobs} hedge "
                "job(s) in progress routed to it; unlink with drain: true, or once they finish",
                {"metadata": {"ordersInFlight": work.orders, "jobsInProgress": work.jobs}})
        if not link["draining"]:
            await conn.execute(
                """UPDATE dealer_link SET draining = true
                   WHERE dealer_account_id = $1 AND trading_account_id = $2""",
                dealer_account_id, trading_account_id)
            await uow.commit()
        return UnlinkOutcome("DRAINING", work)
    await _remove_link(conn, now, dealer_account_id, trading_account_id,
                       drained=link["draining"])
    await uow.commit()
    return UnlinkOutcome("UNLINKED", work)


async def draining_links(conn: asyncpg.Connection) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """(dealer, LP account) of every link waiting for its work in flight to finish."""
    rows = await conn.fetch(
        """SELECT dealer_account_id, trading_account_id FROM dealer_link WHERE draining
           ORDER BY linked_at, trading_account_id""")
    return [(r["dealer_account_id"], r["trading_account_id"]) for r in rows]


async def complete_drain(
    uow: UnitOfWork, now: dt.datetime, dealer_account_id: uuid.UUID,
    trading_account_id: uuid.UUID,
) -> bool:
    """Unlink a draining LP if nothing is in flight any more; True when it was unlinked."""
    conn = uow.conn
    if await load_account(conn, trading_account_id, for_update=True) is None:
        return False
    link = await _locked_link(conn, dealer_account_id, trading_account_id)
    if link is None or not link["draining"]:
        return False
    if not (await lp_work_in_flight(conn, trading_account_id)).idle:
        return False
    await _remove_link(conn, now, dealer_account_id, trading_account_id, drained=True)
    await uow.commit()
    return True


async def list_links(
    conn: asyncpg.Connection, dealer_account_id: uuid.UUID, *, limit: int, offset: int
) -> tuple[list[LinkRecord], int]:
    """One page of a dealer's LP links (oldest first), or DEALER_NOT_FOUND."""
    dealer_found = await conn.fetchval(
        "SELECT 1 FROM dealer WHERE dealer_account_id = $1", dealer_account_id
    )
    if dealer_found is None:
        raise ApiError(Errors.DEALER_NOT_FOUND)
    total = await conn.fetchval(
        "SELECT count(*) FROM dealer_link WHERE dealer_account_id = $1", dealer_account_id
    )
    rows = await conn.fetch(_LINKS_PAGE, dealer_account_id, limit, offset)
    links = [
        LinkRecord(
            dealer_account_id=r["dealer_account_id"], trading_account_id=r["trading_account_id"],
            venue=r["venue"], external_trading_account_id=r["external_trading_account_id"],
            nickname=r["nickname"], status=r["status"], linked_at=r["linked_at"],
            draining=r["draining"],
        )
        for r in rows
    ]
    return links, int(total)
