"""The quote endpoint answers `quote_wire` directly, without QuoteOut: both must be the same JSON,
key order included, for one-sided and two-way quotes; its times (`TimeTexts`) are `millis` and
`iso` of them."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dealer.api.rfq import QuoteOut, quote_wire
from dealer.services.rfq import QuoteRecord
from dealer.wire import TimeTexts, iso, millis
from ledger.assets import ScaleTable

SCALES = ScaleTable.default()  # USDT/6

CREATED = dt.datetime(2026, 5, 9, 7, 34, 55, 222_999, tzinfo=dt.UTC)


def _record(side: str | None, bid: str | None, ask: str | None, quantity: str = "0.10000",
            created: dt.datetime = CREATED, symbol: str = "BTC/USDT") -> QuoteRecord:
    return QuoteRecord(
        quote_id=uuid.uuid4(), dealer_account_id=uuid.uuid4(), trading_account_id=uuid.uuid4(),
        symbol=symbol, order_side=side, quantity=Decimal(quantity),
        bid_price=None if bid is None else Decimal(bid),
        ask_price=None if ask is None else Decimal(ask), hedge_plan={}, status="OPEN",
        created_at=created, expire_at=created + dt.timedelta(milliseconds=5000),
        filled_order_id=None)


@pytest.mark.parametrize("record", [
    _record("BUY", None, "65001.370"),
    _record("SELL", "64999.10", None),
    _record(None, "64999.10", "65001.37", quantity="0.05"),
    _record("BUY", None, "1E+5", quantity="1.0E-3",
            created=CREATED.astimezone(dt.timezone(dt.timedelta(hours=2)))),
])
def test_quote_wire_is_what_quote_out_dumps(record: QuoteRecord) -> None:
    wire = orjson.loads(orjson.dumps(quote_wire(record, SCALES)))
    model = QuoteOut.model_validate(quote_wire(record, SCALES)).model_dump(mode="json",
                                                                           by_alias=True)
    assert wire == model
    assert list(wire) == list(model)
    assert wire["quoteId"] == str(record.quote_id)


def test_quote_amounts_are_what_the_ledger_books_for_each_side() -> None:
    # 64999.11 * 0.12345 = 8024.1401295, beyond USDT/6: the client pays the ask's amount
    # rounded up, and gets the bid's rounded down, as the fill books them
    two_way = quote_wire(_record(None, "64999.11", "64999.11", quantity="0.12345"), SCALES)
    assert (two_way["askQuoteQuantity"], two_way["bidQuoteQuantity"]) == ("8024.14013",
                                                                          "8024.140129")
    buy = quote_wire(_record("BUY", None, "64999.11", quantity="0.12345"), SCALES)
    sell = quote_wire(_record("SELL", "64999.11", None, quantity="0.12345"), SCALES)
    assert buy["quoteQuantity"] == buy["askQuoteQuantity"] == "8024.14013"
    assert sell["quoteQuantity"] == sell["bidQuoteQuantity"] == "8024.140129"
    # an asset whose scale was removed from the configuration since: the exact product
    unknown = quote_wire(_record("BUY", None, "0.0123457", quantity="0.52", symbol="ETH/XBT"),
                         SCALES)
    assert unknown["quoteQuantity"] == "0.006419764"


def test_quote_wire_prices_quantities_and_times() -> None:
    wire = quote_wire(_record(None, "64999.10", "65001.370", quantity="0.05000"), SCALES)
    assert (wire["price"], wire["quoteQuantity"]) == (None, None)
    assert (wire["bidPrice"], wire["askPrice"], wire["quantity"]) == ("64999.1", "65001.37",
                                                                      "0.05")
    assert (wire["bidQuoteQuantity"], wire["askQuoteQuantity"]) == ("3249.955", "3250.0685")
    assert wire["createdAtDateTime"] == "2026-05-09T07:34:55.222Z"
    assert wire["expireAtDateTime"] == "2026-05-09T07:35:00.222Z"
    assert wire["createdAt"] == 1778312095222
    one_sided = quote_wire(_record("BUY", None, "65001.370"), SCALES)
    assert one_sided["price"] == one_sided["askPrice"] == "65001.37"
    assert one_sided["quoteQuantity"] == one_sided["askQuoteQuantity"] == "6500.137"


@pytest.mark.parametrize("moment", [
    CREATED, CREATED.replace(microsecond=0), CREATED.replace(year=999),
    CREATED.astimezone(dt.timezone(dt.timedelta(hours=-5, minutes=-30))),
])
def test_iso_is_isoformat_in_utc_with_milliseconds(moment: dt.datetime) -> None:
    expected = moment.astimezone(dt.UTC).isoformat(timespec="milliseconds")
    assert iso(moment) == expected.replace("+00:00", "Z")


@given(st.datetimes(min_value=dt.datetime(1000, 1, 1), max_value=dt.datetime(9999, 12, 30),
                    timezones=st.sampled_from([dt.UTC, dt.timezone(dt.timedelta(hours=-5)),
                                               dt.timezone(dt.timedelta(hours=5, minutes=30))])))
def test_a_times_text_is_the_milliseconds_and_iso_text_of_the_time(moment: dt.datetime) -> None:
    times = TimeTexts()
    utc = moment.astimezone(dt.UTC)
    expected_ms = int(utc.replace(microsecond=0).timestamp()) * 1000 + moment.microsecond // 1000
    for _ in range(2):  # the second from its kept text
        assert times.of(moment) == (millis(moment), iso(moment))
        assert times.of(moment) == (expected_ms,
                                    utc.isoformat(timespec="milliseconds")[:-6] + "Z")


def test_times_texts_keep_a_few_seconds() -> None:
    times = TimeTexts()
    start = dt.datetime(2026, 11, 22, 23, 59, 58, 999_999, tzinfo=dt.UTC)
    for n in range(40):
        moment = start + dt.timedelta(milliseconds=250 * n)
        assert times.of(moment) == (millis(moment), iso(moment))
        assert len(times._by_second) <= 16
