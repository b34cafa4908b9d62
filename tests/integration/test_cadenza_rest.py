"""The cadenza connector's REST side against a fake Cadenza over real HTTP: envelopes, errors,
retries, lost answers, order lookup, credentials, rate limiting and secrecy."""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import aiohttp
import pytest

from tests.fakes.cadenza import SUBMIT_PATH, FakeCadenza, RunningFake, running, unused_port
from venues.base import (
    ApiCredential,
    CredentialRejected,
    OrderRequest,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
    UnknownInstrument,
    UnknownOrder,
    VenueAccount,
    VenueError,
    VenueTimeout,
    VenueUnavailable,
)
from venues.cadenza import CadenzaConfig, CadenzaVenue
from venues.cadenza.client import CadenzaAuthRejected, CadenzaRefused, rate_limiter

D = Decimal
BOOK_PATH = "/api/v3/market/orderBook/get"
ORDER_LIST_PATH = "/api/v3/trading/order/list"
SECRET = "s3cr3t-api-secret"
PASSPHRASE = "pa55-phrase"


@pytest.fixture
async def server() -> AsyncIterator[RunningFake]:
    async with running(FakeCadenza()) as started:
        started.fake.set_book("BINANCE", "BTC/USDT", [(D("64990"), D("1"))],
                              [(D("65010"), D("0.5")), (D("65020"), D("2"))])
        yield started


def config(server: RunningFake, **overrides: Any) -> CadenzaConfig:
    values: dict[str, Any] = {"base_url": server.url, "ws_url": server.ws_url,
                              "token": server.fake.token, "timeout_ms": 2000,
                              "rate_limit_per_s": 1000, "backoff_base_ms": 1,
                              "reconnect_max_ms": 50, **overrides}
    return CadenzaConfig(**values)


class RecordingSleep:
    """Backoff waits are recorded, not waited."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        await asyncio.sleep(0)


@pytest.fixture
async def venue(server: RunningFake) -> AsyncIterator[CadenzaVenue]:
    async with CadenzaVenue("BINANCE", config(server)) as connector:
        yield connector


def account_of(server: RunningFake) -> VenueAccount:
    return VenueAccount(uuid.uuid4(), "spot", server.fake.add_account("BINANCE"))


def market_buy(client_order_id: str, quantity: str = "1") -> OrderRequest:
    return OrderRequest(client_order_id, "BTC/USDT", Side.BUY, OrderType.MARKET, D(quantity),
                        None, TimeInForce.IOC)


# ---------------------------------------------------------------- market data


async def test_instruments_come_from_the_venue_listing(venue: CadenzaVenue) -> None:
    everything = await venue.instruments()
    assert {i.symbol for i in everything} >= {"BTC/USDT", "ETH/USDT", "ETH/BTC"}
    [btc] = await venue.instruments(["BTC/USDT", "DOGE/USDT"])
    assert (btc.venue, btc.symbol, btc.external_symbol) == ("BINANCE", "BTC/USDT", "BTCUSDT")
    assert (btc.tick_size, btc.lot_size, btc.min_notional) == (D("0.01"), D("0.00001"), D("5"))
    assert btc.max_quantity is None


async def test_instrument_sync_asks_cadenza_and_answers_the_count(
    server: RunningFake, venue: CadenzaVenue,
) -> None:
    assert await venue.sync_instruments(["BTC/USDT", "ETH/USDT"]) == 2
    assert server.fake.syncs == 1


async def test_order_book_snapshot_is_decimal_and_cut_to_depth(venue: CadenzaVenue) -> None:
    book = await venue.order_book("BTC/USDT", 1)
    assert (book.venue, book.symbol, book.sequence) == ("BINANCE", "BTC/USDT", 0)
    assert book.bids == ((D("64990"), D("1")),)
    assert book.asks == ((D("65010"), D("0.5")),)
    assert book.ts_event > 0


async def test_unknown_instruments_are_unknown_instrument(
    server: RunningFake, venue: CadenzaVenue,
) -> None:
    with pytest.raises(UnknownInstrument, match="errno -140002"):
        await venue.order_book("DOGE/XYZ", 5)
    requests_before = len(server.fake.requests)
    with pytest.raises(UnknownInstrument):
        await venue.order_book("BTCUSDT", 5)  # not BASE/QUOTE: never sent
    assert len(server.fake.requests) == requests_before


# ---------------------------------------------------------------- auth and envelope errors


@pytest.mark.parametrize("token", ["wrong-token", " "])
async def test_a_refused_token_is_an_auth_error_without_the_token(
    server: RunningFake, token: str,
) -> None:
    async with CadenzaVenue("BINANCE", config(server, token=token)) as connector:
        with pytest.raises(CadenzaAuthRejected) as caught:
            await connector.order_book("BTC/USDT", 5)
    assert isinstance(caught.value, VenueUnavailable)
    assert "HTTP 401" in str(caught.value)
    assert "wrong-token" not in str(caught.value)
    assert server.fake.count("GET", BOOK_PATH) == 1  # not retried


async def test_requests_without_bearer_are_answered_401_envelopes(server: RunningFake) -> None:
    params = {"instrumentId": "BINANCE:BTC/USDT"}
    async with aiohttp.ClientSession() as session, session.get(
            server.url + BOOK_PATH, params=params) as response:
        assert response.status == 401
        body = await response.json()
    assert body["success"] is False
    assert body["errno"] == -101001
    assert body["details"]["code"] == "UNAUTHENTICATED"
    assert body["data"] is None


async def test_forbidden_is_an_auth_error(server: RunningFake, venue: CadenzaVenue) -> None:
    server.fake.fail_next(status=403)
    with pytest.raises(CadenzaAuthRejected, match="HTTP 403"):
        await venue.balances(account_of(server))


async def test_success_false_in_a_200_is_a_refusal_with_errno_and_code(
    server: RunningFake, venue: CadenzaVenue,
) -> None:
    server.fake.fail_next(status=200, code="INVALID_REQUEST")
    with pytest.raises(CadenzaRefused) as caught:
        await venue.order_book("BTC/USDT", 5)
    assert (caught.value.http_status, caught.value.errno, caught.value.code) == (
        200, -100001, "INVALID_REQUEST")
    assert server.fake.count("GET", BOOK_PATH) == 1


async def test_an_unknown_account_is_refused_not_timed_out(
    server: RunningFake, venue: CadenzaVenue,
) -> None:
    stranger = VenueAccount(uuid.uuid4(), "spot", str(uuid.uuid4()))
    with pytest.raises(VenueError, match="errno -120001") as caught:
        await venue.submit_order(stranger, market_buy("x-1"))
    assert not isinstance(caught.value, VenueTimeout | VenueUnavailable)
    with pytest.raises(VenueError, match="not connected through Cadenza"):
        await venue.submit_order(VenueAccount(uuid.uuid4(), "spot"), market_buy("x-2"))


async def test_a_non_json_gateway_error_is_unavailable(
    server: RunningFake, venue: CadenzaVenue,
) -> None:
    server.fake.fail_next(count=10, status=502, body=b"<html>Bad Gateway</html>")
    with pytest.raises(VenueUnavailable, match="HTTP 502 and no envelope"):
        await venue.order_book("BTC/USDT", 5)


# ---------------------------------------------------------------- retries


async def test_gets_are_retried_on_503_with_growing_jittered_backoff(
    server: RunningFake,
) -> None:
    sleep = RecordingSleep()
    connector = CadenzaVenue("BINANCE", config(server, backoff_base_ms=100,
                                               reconnect_max_ms=5000),
                             sleep=sleep, rng=random.Random(1))
    server.fake.fail_next(count=3, status=503)
    async with connector:
        book = await connector.order_book("BTC/USDT", 5)
    assert book.best_ask == D("65010")
    assert server.fake.count("GET", BOOK_PATH) == 4
    assert len(sleep.waits) == 3
    for attempt, wait in enumerate(sleep.waits):
        ceiling = 0.1 * 2 ** attempt
        assert ceiling / 2 <= wait <= ceiling


async def test_gets_give_up_after_max_retries(server: RunningFake) -> None:
    sleep = RecordingSleep()
    server.fake.fail_next(count=10, status=503)
    async with CadenzaVenue("BINANCE", config(server, max_retries=2), sleep=sleep) as connector:
        with pytest.raises(VenueUnavailable, match="HTTP 503"):
            await connector.instruments()
    assert server.fake.count("GET", "/api/v3/market/instrument/list") == 3


async def test_429_is_retried_honouring_retry_after_cap(server: RunningFake) -> None:
    sleep = RecordingSleep()
    server.fake.fail_next(count=1, status=429)
    async with CadenzaVenue("BINANCE", config(server), sleep=sleep) as connector:
        await connector.order_book("BTC/USDT", 5)
    assert server.fake.count("GET", BOOK_PATH) == 2


async def test_submit_is_never_retried_and_a_5xx_leaves_its_outcome_unknown(
    server: RunningFake, venue: CadenzaVenue,
) -> None:
    account = account_of(server)
    server.fake.fail_next(count=1, status=503, path=SUBMIT_PATH)

    with pytest.raises(VenueTimeout, match="HTTP 503"):
        await venue.submit_order(account, market_buy("once-1"))

    assert server.fake.count("POST", SUBMIT_PATH) == 1
    # This 503 came before Cadenza applied anything: status says so, resubmitting is safe.
    with pytest.raises(UnknownOrder):
        await venue.order_status(account, "once-1")
    state = await venue.submit_order(account, market_buy("once-1"))
    assert state.status is OrderStatus.FILLED


async def test_submit_refused_with_429_is_unavailable_not_unknown(
    server: RunningFake, venue: CadenzaVenue,
) -> None:
    server.fake.fail_next(count=1, status=429, path=SUBMIT_PATH)
    with pytest.raises(VenueUnavailable) as caught:
        await venue.submit_order(account_of(server), market_buy("busy-1"))
    assert not isinstance(caught.value, VenueTimeout)
    assert server.fake.count("POST", SUBMIT_PATH) == 1


# ---------------------------------------------------------------- lost answers and lookup


async def test_a_dropped_submit_answer_is_a_timeout_and_status_finds_the_fill(
    server: RunningFake, venue: CadenzaVenue,
) -> None:
    account = account_of(server)
    server.fake.drop_next_answer(SUBMIT_PATH)

    with pytest.raises(VenueTimeout, match="lost"):
        await venue.submit_order(account, market_buy("lost-1", "0.7"))

    assert server.fake.count("POST", SUBMIT_PATH) == 1
    # A restarted daemon knows only the client order id: a fresh connector finds it.
    async with CadenzaVenue("BINANCE", config(server)) as restarted:
        state = await restarted.order_status(account, "lost-1")
    assert state.status is OrderStatus.FILLED
    assert state.client_order_id == "lost-1"
    assert [(e.price, e.quantity) for e in state.executions] == [
        (D("65010"), D("0.5")), (D("65020"), D("0.2"))]


async def test_a_submit_answer_slower_than_the_timeout_is_a_timeout(server: RunningFake) -> None:
    account = account_of(server)
    server.fake.drop_next_answer(SUBMIT_PATH, hang_s=1.3)
    async with CadenzaVenue("BINANCE", config(server, timeout_ms=100)) as connector:
        with pytest.raises(VenueTimeout, match="did not answer"):
            await connector.submit_order(account, market_buy("slow-1", "0.1"))
        state = await connector.order_status(account, "slow-1")
    assert state.status is OrderStatus.FILLED
    assert server.fake.count("POST", SUBMIT_PATH) == 1


async def test_status_scans_pages_of_recent_orders_newest_first(server: RunningFake) -> None:
    account = account_of(server)
    async with CadenzaVenue("BINANCE", config(server)) as submitter:
        for n in range(5):
            await submitter.submit_order(account, market_buy(f"page-{n}", "0.01"))
    async with CadenzaVenue("BINANCE", config(
            server, status_page_size=2, status_lookup_limit=4)) as reader:
        lists_before = server.fake.count("GET", ORDER_LIST_PATH)
        newest = await reader.order_status(account, "page-4")
        assert server.fake.count("GET", ORDER_LIST_PATH) == lists_before + 1
        second_page = await reader.order_status(account, "page-1")
        assert server.fake.count("GET", ORDER_LIST_PATH) == lists_before + 3
        with pytest.raises(VenueUnavailable, match="not among the account's 4 most recent"):
            # beyond the lookup limit: not "unknown", which would read as never received
            await reader.order_status(account, "page-0")
    async with CadenzaVenue("BINANCE", config(
            server, status_page_size=2, status_lookup_limit=10)) as reader:
        with pytest.raises(UnknownOrder):  # every order read: it is not there
            await reader.order_status(account, "page-9")
    assert newest.client_order_id == "page-4"
    assert second_page.client_order_id == "page-1"
    assert newest.venue_order_id != second_page.venue_order_id


async def test_a_lost_submit_stays_unknown_when_orders_carry_no_client_order_id(
    server: RunningFake, venue: CadenzaVenue,
) -> None:
    # The seed's TradeOrder has no clientOrderId: an order whose answer was lost cannot be found
    # by it, and must not be called unknown to the venue (the caller would trade again).
    account = account_of(server)
    server.fake.echo_client_order_ids = False
    async with CadenzaVenue("BINANCE", config(server)) as fresh:
        with pytest.raises(UnknownOrder):  # no order at all on the account: none was received
            await fresh.order_status(account, "never-1")
    server.fake.drop_next_answer(SUBMIT_PATH)
    with pytest.raises(VenueTimeout):
        await venue.submit_order(account, market_buy("lost-2", "0.1"))
    async with CadenzaVenue("BINANCE", config(server)) as restarted:
        with pytest.raises(VenueUnavailable, match="carry no clientOrderId"):
            await restarted.order_status(account, "lost-2")
    assert server.fake.count("POST", SUBMIT_PATH) == 1


async def test_status_lookups_are_retried_like_any_get(server: RunningFake) -> None:
    account = account_of(server)
    sleep = RecordingSleep()
    async with CadenzaVenue("BINANCE", config(server), sleep=sleep) as connector:
        await connector.submit_order(account, market_buy("retry-1", "0.1"))
        server.fake.fail_next(count=2, status=500, path=ORDER_LIST_PATH)
        state = await connector.order_status(account, "retry-1")
    assert state.status is OrderStatus.FILLED
    assert len(sleep.waits) == 2


async def test_cancel_of_an_unknown_order_is_unknown_order(
    server: RunningFake, venue: CadenzaVenue,
) -> None:
    with pytest.raises(UnknownOrder):
        await venue.cancel_order(account_of(server), "nope")


# ---------------------------------------------------------------- credentials and accounts


async def test_verify_answers_identities_and_connect_answers_the_cadenza_account(
    server: RunningFake, venue: CadenzaVenue,
) -> None:
    credential = ApiCredential("key-1", SECRET, PASSPHRASE)
    identities = await venue.verify_credential(credential)
    assert [i.external_trading_account_id for i in identities] == [
        "spot", "margin", "isolated_margin", "futures", "coin_futures"]
    assert all(i.venue_ref is None for i in identities)

    venue_ref = await venue.connect_account(credential, "spot")

    assert venue_ref is not None
    connected = server.fake.account(venue_ref)
    assert (connected.external_id, connected.api_key) == ("spot", "key-1")
    again = await venue.verify_credential(credential)
    assert {i.external_trading_account_id: i.venue_ref for i in again}["spot"] == venue_ref
    # Connecting again finds the account Cadenza already has, through a fresh connector too.
    assert await venue.connect_account(credential, "spot") == venue_ref
    async with CadenzaVenue("BINANCE", config(server)) as fresh:
        assert await fresh.connect_account(credential, "spot") == venue_ref
    assert server.fake.count("POST", "/api/v3/credential/create") == 2  # reused per process


async def test_an_already_connected_account_is_found_in_the_account_list(
    server: RunningFake,
) -> None:
    server.fake.verify_reports_accounts = False
    credential = ApiCredential("key-4", SECRET)
    async with CadenzaVenue("BINANCE", config(server)) as first:
        venue_ref = await first.connect_account(credential, "spot")
        other = server.fake.add_account("BINANCE", "spot")  # another key's spot account
        # Same process, same credential id: the connected account is the one holding it.
        assert await first.connect_account(credential, "spot") == venue_ref
    async with CadenzaVenue("BINANCE", config(server)) as restarted:
        # A new credential id and two live "spot" accounts: which one is not guessed.
        with pytest.raises(CadenzaRefused, match="errno -120002"):
            await restarted.connect_account(credential, "spot")
    server.fake.account(other).status = "DISCONNECTED"
    async with CadenzaVenue("BINANCE", config(server)) as again:
        assert await again.connect_account(credential, "spot") == venue_ref  # the only live one


async def test_a_refused_credential_is_rejected_without_its_secrets(
    server: RunningFake, venue: CadenzaVenue, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    server.fake.reject_api_key("bad-key-9")
    credential = ApiCredential("bad-key-9", SECRET, PASSPHRASE)

    with pytest.raises(CredentialRejected) as verify:
        await venue.verify_credential(credential)
    with pytest.raises(CredentialRejected) as connect:
        await venue.connect_account(credential, "spot")
    with pytest.raises(CredentialRejected, match="empty"):
        await venue.verify_credential(ApiCredential("  "))

    for error in (verify.value, connect.value):
        assert "errno -110004" in str(error)
        for secret in ("bad-key-9", SECRET, PASSPHRASE, server.fake.token):
            assert secret not in str(error)
    for secret in (SECRET, PASSPHRASE, server.fake.token):
        assert secret not in caplog.text


async def test_connecting_an_account_the_credential_cannot_see_is_rejected(
    venue: CadenzaVenue,
) -> None:
    with pytest.raises(CredentialRejected, match="'unified'"):
        await venue.connect_account(ApiCredential("key-2", SECRET), "unified")


async def test_nothing_logged_or_raised_carries_the_token(
    server: RunningFake, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    server.fake.fail_next(count=2, status=503)
    sleep = RecordingSleep()
    async with CadenzaVenue("BINANCE", config(server), sleep=sleep) as connector:
        await connector.order_book("BTC/USDT", 5)
        await connector.verify_credential(ApiCredential("key-3", SECRET, PASSPHRASE))
        assert server.fake.token not in repr(connector)
    assert "retry 1 of 3" in caplog.text
    for secret in (server.fake.token, SECRET, PASSPHRASE):
        assert secret not in caplog.text


async def test_a_closed_connector_refuses_calls(server: RunningFake) -> None:
    connector = CadenzaVenue("BINANCE", config(server))
    await connector.order_book("BTC/USDT", 5)
    await connector.close()
    with pytest.raises(VenueUnavailable, match="closed"):
        await connector.order_book("BTC/USDT", 5)


async def test_an_unreachable_cadenza_is_unavailable(server: RunningFake) -> None:
    sleep = RecordingSleep()
    unreachable = config(server, base_url=f"http://127.0.0.1:{unused_port()}", max_retries=1)
    async with CadenzaVenue("BINANCE", unreachable, sleep=sleep) as connector:
        with pytest.raises(VenueUnavailable, match="could not be reached"):
            await connector.order_book("BTC/USDT", 5)
        with pytest.raises(VenueUnavailable, match="could not be reached") as caught:
            await connector.submit_order(account_of(server), market_buy("never-1"))
    assert not isinstance(caught.value, VenueTimeout)  # never sent: nothing to look up
    assert len(sleep.waits) == 1  # the GET retried once, the submit never


# ---------------------------------------------------------------- rate limiting


class FakeClock:
    """Monotonic seconds that move only when the connector sleeps."""

    def __init__(self) -> None:
        self.now = 500.0
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


async def test_calls_are_spaced_by_the_token_bucket(server: RunningFake) -> None:
    clock = FakeClock()
    limited = config(server, rate_limit_per_s=10, rate_burst=2)
    async with CadenzaVenue("BINANCE", limited, clock=clock, sleep=clock.sleep) as connector:
        for _ in range(22):
            await connector.order_book("BTC/USDT", 1)
    # A burst of two, then twenty calls a tenth of a second apart: two seconds, no less.
    assert server.fake.count("GET", BOOK_PATH) == 22
    assert len(clock.waits) == 20
    assert clock.now - 500.0 == pytest.approx(2.0)


async def test_retries_take_tokens_too(server: RunningFake) -> None:
    clock = FakeClock()
    server.fake.fail_next(count=2, status=503)
    limited = config(server, rate_limit_per_s=5, rate_burst=1, backoff_base_ms=0)
    async with CadenzaVenue("BINANCE", limited, clock=clock, sleep=clock.sleep) as connector:
        await connector.order_book("BTC/USDT", 1)
    assert server.fake.count("GET", BOOK_PATH) == 3
    assert clock.now - 500.0 == pytest.approx(0.4)


async def test_venues_given_one_limiter_share_one_budget(server: RunningFake) -> None:
    clock = FakeClock()
    limited = config(server, rate_limit_per_s=10, rate_burst=1)
    shared = rate_limiter(limited, clock=clock, sleep=clock.sleep)
    server.fake.set_book("OKX", "BTC/USDT", [(D("64000"), D("1"))], [(D("64100"), D("1"))])
    async with CadenzaVenue("BINANCE", limited, limiter=shared) as binance, CadenzaVenue(
            "OKX", limited, limiter=shared) as okx:
        for _ in range(5):
            await binance.order_book("BTC/USDT", 1)
            await okx.order_book("BTC/USDT", 1)
    assert clock.now - 500.0 == pytest.approx(0.9)  # ten calls, one budget
