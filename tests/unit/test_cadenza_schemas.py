"""The cadenza connector's pure parts: wire → domain parsing, request bodies, config, rate limit."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from hedging.policy import base_fee, fees_by_asset
from venues.base import (
    ApiCredential,
    Fee,
    OrderRequest,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
)
from venues.cadenza.client import TokenBucket
from venues.cadenza.config import CadenzaConfig
from venues.cadenza.schemas import (
    Envelope,
    WireError,
    WireInstrument,
    WireOrderBook,
    WirePortfolio,
    WireTradeOrder,
    WireTradingAccount,
    credential_body,
    decode_json,
    dump,
    parse_balances,
    parse_book,
    parse_identity,
    parse_instrument,
    parse_order_state,
    parse_order_status,
    submit_body,
)

D = Decimal


def trade_order(**overrides: Any) -> dict[str, Any]:
    """A TradeOrder exactly as seeds/001 shows it (no clientOrderId), with overrides."""
    order: dict[str, Any] = {
        "tradeOrderId": "85df4133-2159-4db1-a117-d20455178752",
        "tradingAccountId": "14f773c5-2079-41e0-90e4-340a7b4d3391",
        "venue": "BINANCE", "instrumentId": "BINANCE:BTC/USDT", "baseAsset": "BTC",
        "quoteAsset": "USDT", "orderSide": "BUY", "orderType": "LIMIT", "timeInForce": "GTC",
        "status": "FILLED", "rejectReason": "", "cancelReason": "",
        "limitPrice": "1234.56789000", "quantity": "2.00000000", "orderQuantityType": "BASE",
        "executedPrice": "1234.56789000", "executedQuantity": "2.00000000",
        "executedCost": "2469.13578000",
        "fees": [{"security": "BINANCE:BTC", "asset": "BTC", "venue": "BINANCE",
                  "quantity": "0.00200000"}],
        "executions": [{
            "executionId": "fc49a52d-e069-4441-83c6-8d779c937dd9",
            "externalTradeId": "binance-exec-12345", "venue": "BINANCE",
            "instrumentId": "BINANCE:BTC/USDT", "orderSide": "BUY",
            "executedQuantity": "2.00000000", "executedPrice": "1234.56789000",
            "executedCost": "2469.13578000",
            "fees": [{"security": "BINANCE:BTC", "asset": "BTC", "venue": "BINANCE",
                      "quantity": "0.00200000"}],
            "executedAt": 1632933600000, "executedAtDateTime": "2021-09-29T16:40:00Z"}],
        "createdAt": 1632933600000, "createdAtDateTime": "2021-09-29T16:40:00Z",
        "updatedAt": 1632933600500, "updatedAtDateTime": "2021-09-29T16:40:00Z",
    }
    order.update(overrides)
    return order


def test_seed_trade_order_parses_into_an_order_state() -> None:
    state = parse_order_state(WireTradeOrder.model_validate(trade_order()), "mine-1")
    assert state.client_order_id == "mine-1"
    assert state.venue_order_id == "85df4133-2159-4db1-a117-d20455178752"
    assert state.symbol == "BTC/USDT"
    assert (state.side, state.order_type, state.time_in_force) == (
        Side.BUY, OrderType.LIMIT, TimeInForce.GTC)
    assert state.status is OrderStatus.FILLED
    assert state.filled_quantity == D("2")
    assert state.limit_price == D("1234.56789")
    assert state.reject_reason is None
    [execution] = state.executions
    assert execution.price == D("1234.56789000")
    assert execution.fee.asset == "BTC"
    assert execution.fee.amount == D("0.002")
    assert execution.liquidity == "TAKER"  # executed when created: it took liquidity
    assert (state.ts_created, state.ts_updated) == (1632933600000, 1632933600500)


@pytest.mark.parametrize(("wire", "executed", "expected"), [
    ("CREATED", "0", OrderStatus.ACCEPTED),
    ("SUBMITTED", "0", OrderStatus.ACCEPTED),
    ("ACCEPTED", "0", OrderStatus.ACCEPTED),
    ("ACCEPTED", "0.5", OrderStatus.PARTIALLY_FILLED),
    ("PENDING_CANCEL", "0", OrderStatus.ACCEPTED),
    ("PENDING_REPLACE", "0.1", OrderStatus.PARTIALLY_FILLED),
    ("REPLACED", "0", OrderStatus.ACCEPTED),
    ("UNKNOWN", "0", OrderStatus.ACCEPTED),
    ("", "0", OrderStatus.ACCEPTED),
    ("PARTIALLY_FILLED", "0.5", OrderStatus.PARTIALLY_FILLED),
    ("FILLED", "1", OrderStatus.FILLED),
    ("CANCELLED", "0.5", OrderStatus.CANCELLED),
    ("REVOKED", "0", OrderStatus.CANCELLED),
    ("REJECTED", "0", OrderStatus.REJECTED),
    ("EXPIRED", "0.2", OrderStatus.EXPIRED),
])
def test_every_seed_order_status_maps_to_ours(wire: str, executed: str,
                                              expected: OrderStatus) -> None:
    assert parse_order_status(wire, D(executed)) is expected


def test_an_order_status_outside_the_seed_is_refused() -> None:
    with pytest.raises(WireError, match="SETTLED"):
        parse_order_status("SETTLED", D(0))


def test_rejected_order_keeps_its_reason_and_open_order_has_none() -> None:
    rejected = parse_order_state(WireTradeOrder.model_validate(trade_order(
        status="REJECTED", rejectReason="insufficient balance", executedQuantity="0",
        executedPrice="", executions=[], fees=[])), "c")
    assert rejected.status is OrderStatus.REJECTED
    assert rejected.reject_reason == "insufficient balance"
    assert rejected.executions == ()
    resting = parse_order_state(WireTradeOrder.model_validate(trade_order(
        status="ACCEPTED", rejectReason="stale", executedQuantity="0", executions=[],
        fees=[])), "c")
    assert resting.reject_reason is None


def test_order_level_fees_land_on_the_last_execution() -> None:
    executions = [
        {"executionId": "e1", "executedQuantity": "1", "executedPrice": "100",
         "executedAt": 1, "fees": []},
        {"executionId": "e2", "executedQuantity": "1", "executedPrice": "101",
         "executedAt": 2, "fees": []},
    ]
    state = parse_order_state(WireTradeOrder.model_validate(trade_order(
        orderType="MARKET", timeInForce="IOC", limitPrice=None, executedQuantity="2",
        executions=executions,
        fees=[{"asset": "USDT", "quantity": "0.2"}])), "c")
    assert [e.fee for e in state.executions] == [
        state.executions[0].fee, state.executions[1].fee]
    assert state.executions[0].fee.amount == 0
    assert state.executions[1].fee.asset == "USDT"
    assert state.executions[1].fee.amount == D("0.2")


def test_every_fee_asset_of_an_execution_is_kept() -> None:
    # A fee-token discount that ran out mid-trade: part of the fee in BNB, the rest in USDT,
    # listed in two USDT entries; each asset once, summed, in the order first listed.
    execution = {"executionId": "e1", "executedQuantity": "2", "executedPrice": "100",
                 "executedAt": 1, "fees": [{"asset": "BNB", "quantity": "0.001"},
                                           {"asset": "USDT", "quantity": "0.05"},
                                           {"asset": "USDT", "quantity": "0.03"}]}
    state = parse_order_state(WireTradeOrder.model_validate(trade_order(
        orderType="MARKET", timeInForce="IOC", limitPrice=None, executions=[execution])), "c")
    [parsed] = state.executions
    assert parsed.fee == Fee("BNB", D("0.001"))
    assert parsed.other_fees == (Fee("USDT", D("0.08")),)
    assert parsed.fees == (Fee("BNB", D("0.001")), Fee("USDT", D("0.08")))
    assert fees_by_asset(state.executions) == {"BNB": D("0.001"), "USDT": D("0.08")}


def test_order_level_fees_in_two_assets_land_on_the_last_execution_whole() -> None:
    executions = [{"executionId": "e1", "executedQuantity": "2", "executedPrice": "100",
                   "executedAt": 1, "fees": []}]
    state = parse_order_state(WireTradeOrder.model_validate(trade_order(
        orderType="MARKET", timeInForce="IOC", limitPrice=None, executions=executions,
        fees=[{"asset": "BTC", "quantity": "0.0001"}, {"asset": "BNB", "quantity": "0.002"}])),
        "c")
    [parsed] = state.executions
    assert parsed.fees == (Fee("BTC", D("0.0001")), Fee("BNB", D("0.002")))
    # a fee in the base asset counts against the hedge's progress, wherever it is listed
    assert base_fee(state.executions, "BTC") == D("0.0001")
    assert base_fee(state.executions, "BNB") == D("0.002")
    aggregate = parse_order_state(WireTradeOrder.model_validate(trade_order(
        executions=[], executedQuantity="2", executedPrice="1234.5",
        fees=[{"asset": "USDT", "quantity": "0.4"}, {"asset": "BNB", "quantity": "0.002"}])),
        "c")
    assert fees_by_asset(aggregate.executions) == {"USDT": D("0.4"), "BNB": D("0.002")}


def test_an_aggregate_only_answer_becomes_one_execution() -> None:
    state = parse_order_state(WireTradeOrder.model_validate(trade_order(
        executions=[], executedQuantity="2", executedPrice="1234.5")), "c")
    [execution] = state.executions
    assert (execution.price, execution.quantity) == (D("1234.5"), D("2"))
    assert execution.fee.amount == D("0.002")
    assert state.average_price == D("1234.5")


def test_an_aggregate_without_price_is_refused() -> None:
    with pytest.raises(WireError):
        parse_order_state(WireTradeOrder.model_validate(trade_order(
            executions=[], executedQuantity="2", executedPrice=None)), "c")


def test_liquidity_falls_back_to_resting_time_when_cadenza_does_not_say() -> None:
    later = {"executionId": "e", "executedQuantity": "2", "executedPrice": "1234.5",
             "executedAt": 1632933609999, "fees": []}
    gtc = parse_order_state(WireTradeOrder.model_validate(trade_order(executions=[later])), "c")
    assert gtc.executions[0].liquidity == "MAKER"
    ioc = parse_order_state(WireTradeOrder.model_validate(
        trade_order(timeInForce="IOC", executions=[later])), "c")
    assert ioc.executions[0].liquidity == "TAKER"
    flagged = parse_order_state(WireTradeOrder.model_validate(
        trade_order(executions=[{**later, "liquidity": "TAKER"}])), "c")
    assert flagged.executions[0].liquidity == "TAKER"


def test_missing_time_in_force_defaults_by_order_type() -> None:
    market = parse_order_state(WireTradeOrder.model_validate(
        trade_order(orderType="MARKET", timeInForce="", limitPrice="")), "c")
    assert market.time_in_force is TimeInForce.IOC
    assert market.limit_price is None
    limit = parse_order_state(WireTradeOrder.model_validate(trade_order(timeInForce=None)), "c")
    assert limit.time_in_force is TimeInForce.GTC


@pytest.mark.parametrize("overrides", [
    {"orderType": "STOP_LIMIT"}, {"orderSide": "UNKNOWN"}, {"timeInForce": "GTD"},
    {"instrumentId": "BTCUSDT"},
])
def test_orders_this_connector_never_sends_are_refused(overrides: dict[str, Any]) -> None:
    with pytest.raises(WireError):
        parse_order_state(WireTradeOrder.model_validate(trade_order(**overrides)), "c")


def test_json_numbers_decode_as_exact_decimals() -> None:
    assert decode_json(b'{"p": 0.1}') == {"p": D("0.1")}


def test_book_levels_are_decimals_in_the_order_sent_even_when_crossed() -> None:
    wire = WireOrderBook.model_validate({
        "instrumentId": "BINANCE:BTC/USDT", "venue": "BINANCE", "symbol": "BTC/USDT",
        "asks": [["99.5", "1"], ["100", "2"]], "bids": [["100.5", "1"]],
        "timestamp": 1632933600000})
    book = parse_book(wire, "BINANCE", "BTC/USDT", 42)
    assert book.asks == ((D("99.5"), D("1")), (D("100"), D("2")))
    assert book.bids == ((D("100.5"), D("1")),)
    assert (book.sequence, book.ts_event) == (42, 1632933600000)
    assert book.is_crossed()


def test_seed_instrument_parses_with_tick_from_pip_size() -> None:
    instrument = parse_instrument(WireInstrument.model_validate({
        "instrumentId": "BINANCE:BTC/USDT", "venue": "BINANCE", "symbol": "BTC/USDT",
        "externalSymbol": "BTCUSDT", "instrumentType": "SPOT", "status": "ACTIVE",
        "baseAsset": "BTC", "quoteAsset": "USDT", "basePrecision": 5, "quotePrecision": 2,
        "lotSize": "0.00001000", "pipSize": "0.01000000", "minQuantity": "0.00001000",
        "maxQuantity": "9000.00000000", "minNotional": "5.00000000"}))
    assert instrument.instrument_id == "BINANCE:BTC/USDT"
    assert (instrument.tick_size, instrument.lot_size) == (D("0.01"), D("0.00001"))
    assert instrument.max_quantity == D("9000")
    assert instrument.min_notional == D("5")


def test_an_instrument_status_outside_the_seeds_enum_is_malformed() -> None:
    """The daemon answers the status again, with the seeds' enum in its OpenAPI document."""
    item = {"venue": "BINANCE", "symbol": "BTC/USDT", "basePrecision": 5, "quotePrecision": 2}
    for status in ("ACTIVE", "INACTIVE", "DISABLED", "DELISTED"):
        assert parse_instrument(WireInstrument.model_validate({**item, "status": status})
                                ).status == status
    assert parse_instrument(WireInstrument.model_validate(item)).status == "ACTIVE"
    for status in ("TRADING", "active", ""):
        with pytest.raises(ValidationError):
            WireInstrument.model_validate({**item, "status": status})


def test_instrument_without_sizes_falls_back_to_precisions_and_needs_one() -> None:
    instrument = parse_instrument(WireInstrument.model_validate({
        "venue": "OKX", "symbol": "ETH/BTC", "basePrecision": 4, "quotePrecision": 6,
        "maxQuantity": "0"}))
    assert (instrument.tick_size, instrument.lot_size) == (D("0.000001"), D("0.0001"))
    assert instrument.min_quantity == D("0.0001")
    assert instrument.max_quantity is None
    assert instrument.external_symbol == "ETH/BTC"
    with pytest.raises(WireError):
        parse_instrument(WireInstrument.model_validate({"venue": "OKX", "symbol": "ETH/BTC"}))


def test_portfolio_balances_parse_free_and_locked() -> None:
    portfolio = WirePortfolio.model_validate({
        "tradingAccountId": "a", "venue": "BINANCE", "positions": [],
        "balances": [{"securitySymbol": "USDT", "free": "10.5", "locked": "2", "total": "12.5"},
                     {"securitySymbol": "BTC", "free": "1"}]})
    balances = parse_balances(portfolio)
    assert [(b.asset, b.free, b.locked, b.total) for b in balances] == [
        ("USDT", D("10.5"), D("2"), D("12.5")), ("BTC", D("1"), D("0"), D("1"))]


def test_verified_identity_carries_the_cadenza_account_id() -> None:
    identity = parse_identity(WireTradingAccount.model_validate({
        "tradingAccountId": "14f773c5-2079-41e0-90e4-340a7b4d3391",
        "externalTradingAccountId": "futures", "venue": "BINANCE", "nickname": "USDT-M",
        "accountType": "FUTURES", "externalAccountType": "USDT_FUTURES"}))
    assert identity.venue_ref == "14f773c5-2079-41e0-90e4-340a7b4d3391"
    assert (identity.external_trading_account_id, identity.account_type,
            identity.external_account_type, identity.description) == (
        "futures", "FUTURES", "USDT_FUTURES", "USDT-M")
    bare = parse_identity(WireTradingAccount.model_validate(
        {"externalTradingAccountId": "spot", "tradingAccountId": ""}))
    assert (bare.venue_ref, bare.account_type, bare.description) == (
        None, "SPOT", "Spot account")


def test_submit_body_is_the_seed_request_with_plain_decimal_strings() -> None:
    order = OrderRequest("hedge-1-0", "BTC/USDT", Side.SELL, OrderType.LIMIT, D("1E-5"),
                         D("6.5E+4"), TimeInForce.IOC)
    body = dump(submit_body("acct", "BINANCE", order))
    assert body == {
        "tradingAccountId": "acct", "instrumentId": "BINANCE:BTC/USDT",
        "idempotencyKey": "hedge-1-0", "clientOrderId": "hedge-1-0", "orderSide": "SELL",
        "orderType": "LIMIT", "limitPrice": "65000", "quantity": "0.00001",
        "quantityType": "BASE", "timeInForce": "IOC", "awaitClosed": True}
    market = dump(submit_body("acct", "BINANCE", OrderRequest(
        "m", "BTC/USDT", Side.BUY, OrderType.MARKET, D("2"), D("1"), TimeInForce.FOK)))
    assert "limitPrice" not in market
    assert market["timeInForce"] == "FOK"


def test_credential_body_hides_secrets_from_repr() -> None:
    body = credential_body("OKX", ApiCredential("key-123", "secret-456", "pass-789"))
    assert dump(body) == {"venue": "OKX", "credentialType": "API_KEY", "apiKey": "key-123",
                          "apiSecret": "secret-456", "apiPassphrase": "pass-789"}
    assert "secret-456" not in repr(body)
    assert "pass-789" not in repr(body)
    assert "key-123" not in repr(body)


def test_envelope_exposes_the_error_code() -> None:
    envelope = Envelope.model_validate({"success": False, "errno": -101002,
                                        "error": "Invalid access token",
                                        "details": {"code": "INVALID_TOKEN"}, "data": None})
    assert envelope.code == "INVALID_TOKEN"
    assert Envelope.model_validate({"success": True, "data": []}).code is None


def test_config_repr_never_shows_the_token() -> None:
    config = CadenzaConfig("https://cadenza.example", "wss://ws.example/connection/websocket",
                           "eyJ-very-secret")
    assert "eyJ-very-secret" not in repr(config)
    assert "<redacted>" in repr(config)
    assert config.burst == 20


@pytest.mark.parametrize("overrides", [
    {"base_url": "cadenza.example"}, {"ws_url": "https://x"}, {"token": ""},
    {"rate_limit_per_s": 0}, {"max_retries": -1}, {"reconnect_max_ms": 10},
    {"rate_burst": 0}, {"timeout_ms": 0}, {"status_lookup_limit": 0},
])
def test_config_refuses_nonsense(overrides: dict[str, Any]) -> None:
    values: dict[str, Any] = {"base_url": "https://c.example", "ws_url": "wss://c.example/ws",
                              "token": "t", **overrides}
    with pytest.raises(ValueError, match="cadenza"):
        CadenzaConfig(**values)


class FakeClock:
    """Time that moves only when someone sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


async def test_token_bucket_spaces_calls_at_the_rate_after_the_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=4, burst=2, clock=clock, sleep=clock.sleep)
    for _ in range(10):
        await bucket.acquire()
    # Two calls free, then eight at a quarter of a second each.
    assert clock.now - 1000.0 == pytest.approx(2.0)


async def test_token_bucket_refills_while_idle_but_not_beyond_the_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=10, burst=3, clock=clock, sleep=clock.sleep)
    for _ in range(3):
        await bucket.acquire()
    clock.now += 60  # idle for a minute
    for _ in range(3):
        await bucket.acquire()
    assert clock.slept == []
    await bucket.acquire()
    assert clock.slept == [pytest.approx(0.1)]


async def test_token_bucket_spaces_concurrent_callers_in_arrival_order() -> None:
    slept: list[float] = []

    async def record(seconds: float) -> None:  # all arrive at the same instant
        slept.append(seconds)

    bucket = TokenBucket(rate=5, burst=1, clock=lambda: 1000.0, sleep=record)
    await asyncio.gather(*(bucket.acquire() for _ in range(6)))
    # The first goes at once; the k-th waits k fifths of a second from the same start.
    assert slept == [pytest.approx(k / 5) for k in range(1, 6)]
