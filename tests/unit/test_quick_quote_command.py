"""The quote endpoint reads its usual requests without the model (`quick_quote_command`): for
any body, what it answers is what the model's strict validation makes of that body, and it
answers None (the model decides) for everything else, refusals included."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from dealer.api.framework import _ValidatedBodies, validated_body
from dealer.api.rfq import QuoteRequestBody, quick_quote_command
from dealer.errors import ApiError
from dealer.services.rfq import QuoteCommand
from dealer.wire import UuidTable

DEALER, CLIENT, UNSEEN = (str(uuid.UUID(int=n * 0x1234567890ABCDEF)) for n in (1, 2, 3))

_IDS = st.sampled_from([DEALER, CLIENT, DEALER.upper(), UNSEEN, DEALER.replace("-", ""),
                        "{" + CLIENT + "}", f" {DEALER}", DEALER + "\n", 7, None, [DEALER]])
_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "dealerAccountId": _IDS,
    "tradingAccountId": _IDS,
    "symbol": st.sampled_from(["BTC/USDT", "ETH/USDT", "btc/usdt", "BTC/USDT\n", "BTCUSDT",
                               "A" * 21 + "/USDT", "B/U", "BTC/USDT ", "", 5, None, ["BTC/USDT"]]),
    "instrumentId": st.sampled_from(["FERMATA:BTC/USDT", "BTC/USDT", None]),
    "orderSide": st.sampled_from(["BUY", "SELL", "buy", "UNKNOWN", "", None, 1, True]),
    "quantity": st.one_of(
        st.sampled_from(["0.1", "1", "0", "-1", "-0", "0.0", "00.10", "1.", ".5", "1e3", " 1",
                         "1 ", "\u0661", "0." + "1" * 70, "1" * 64, "1" * 65, "+1", "0.000",
                         1, 0.1, True, None]),
        st.from_regex(r"-?[0-9]{1,3}(\.[0-9]{1,4})?", fullmatch=True)),
    "quoteQuantity": st.sampled_from(["100", "0", None, 100]),
    "timeInForce": st.sampled_from(["FOK"]),
}
_QUANTITIES = st.from_regex(r"[0-9]{1,3}(\.[0-9]{1,4})?", fullmatch=True)


@st.composite
def _bodies(draw: st.DrawFn) -> dict[str, Any]:
    """A usual request (either side or two-way), then up to three of its keys changed to
    other values (right or wrong), added or left out."""
    body: dict[str, Any] = {"dealerAccountId": DEALER, "tradingAccountId": CLIENT,
                            "symbol": draw(st.sampled_from(["BTC/USDT", "ETH/USDT"])),
                            "quantity": draw(_QUANTITIES)}
    side = draw(st.sampled_from(["BUY", "SELL", None]))
    if side is not None:
        body["orderSide"] = side
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.sampled_from(sorted(_VALUES)))
        if draw(st.booleans()):
            body.pop(key, None)
        else:
            body[key] = draw(_VALUES[key])
    return body


_BODIES = _bodies()


def _table() -> UuidTable:
    table = UuidTable()
    for text in (DEALER, CLIENT, DEALER.upper()):
        table.keep(text)
    return table


def _by_the_model(body: dict[str, Any]) -> QuoteCommand | None:
    try:
        return validated_body(QuoteRequestBody, body, _table().context()).command
    except (ValidationError, ApiError):
        return None


@settings(max_examples=3000, deadline=None)
@given(_BODIES)
def test_what_the_quick_reader_answers_the_model_answers_too(body: dict[str, Any]) -> None:
    quick = quick_quote_command(body, _table())
    if quick is not None:
        assert quick == _by_the_model(body)
        assert type(quick.quantity) is Decimal


def test_the_usual_requests_are_read_quickly() -> None:
    table = _table()
    for side in ("BUY", "SELL", None):
        body = {"dealerAccountId": DEALER, "tradingAccountId": CLIENT, "symbol": "BTC/USDT",
                "quantity": "0.10"}
        if side is not None:
            body["orderSide"] = side
        quick = quick_quote_command(body, table)
        assert quick == _by_the_model(body)
        assert quick is not None
        assert quick.dealer_account_id is table[DEALER]  # the app's own UUID objects


def test_the_model_reads_what_the_quick_reader_leaves() -> None:
    """Through the endpoint's body reader: an id not seen yet goes to the model, which keeps
    it; the next request with it is read quickly, to the same command."""
    table = _table()
    bodies = _ValidatedBodies(QuoteRequestBody, table, reads=lambda b: b.command,
                              quick=quick_quote_command)
    body = (b'{"dealerAccountId": "%s", "tradingAccountId": "%s", "symbol": "BTC/USDT", '
            b'"orderSide": "SELL", "quantity": "%s"}')
    first = bodies.validated(body % (UNSEEN.encode(), CLIENT.encode(), b"0.1"))
    assert UNSEEN in table
    assert quick_quote_command({"dealerAccountId": UNSEEN, "tradingAccountId": CLIENT,
                                "symbol": "BTC/USDT", "orderSide": "SELL",
                                "quantity": "0.1"}, table) == first
    assert first == QuoteCommand(uuid.UUID(UNSEEN), uuid.UUID(CLIENT), "BTC/USDT", "SELL",
                                 Decimal("0.1"), None)
