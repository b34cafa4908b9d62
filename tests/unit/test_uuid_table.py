"""Request ids read through an app's UuidTable: the same text gives the same UUID object, equal
to what uuid.UUID makes of it; text in another form is refused and never kept."""

from __future__ import annotations

import uuid

import pytest
from pydantic import ValidationError

from dealer.api.framework import validated_body
from dealer.api.rfq import QuoteRequestBody
from dealer.ids import uuid_from_canonical, uuid_from_int
from dealer.wire import UuidTable


def _body(dealer: str, client: str) -> dict[str, object]:
    return {"dealerAccountId": dealer, "tradingAccountId": client, "symbol": "BTC/USDT",
            "orderSide": "BUY", "quantity": "0.1"}


def test_ids_made_without_the_constructor_are_the_constructors_ids() -> None:
    for made in (uuid.uuid4(), uuid.UUID(int=0), uuid.UUID(int=2**128 - 1)):
        for twin in (uuid_from_int(made.int), uuid_from_canonical(str(made)),
                     uuid_from_canonical(str(made).upper())):
            assert twin == made
            assert hash(twin) == hash(made)
            assert str(twin) == str(made)
            assert twin.version == made.version
            assert twin.is_safe is uuid.SafeUUID.unknown


def test_the_same_text_gives_the_same_object_across_bodies() -> None:
    table = UuidTable()
    dealer, client = str(uuid.uuid4()), str(uuid.uuid4()).upper()
    first = validated_body(QuoteRequestBody, _body(dealer, client), table.context())
    second = validated_body(QuoteRequestBody, _body(dealer, client), table.context())
    assert first.dealer_account_id is second.dealer_account_id
    assert first.trading_account_id is second.trading_account_id
    assert first.dealer_account_id == uuid.UUID(dealer)
    assert first.trading_account_id == uuid.UUID(client)
    assert set(table) == {dealer, client}
    # without a table: equal ids, made afresh
    alone = validated_body(QuoteRequestBody, _body(dealer, client))
    assert alone.dealer_account_id == first.dealer_account_id
    assert alone.dealer_account_id is not first.dealer_account_id


@pytest.mark.parametrize("spelling", [
    lambda u: u.hex, lambda u: "{" + str(u) + "}", lambda u: f"urn:uuid:{u}",
    lambda u: f" {u}", lambda u: str(u)[:-1] + "g"])
def test_other_spellings_are_refused_and_never_kept(spelling: object) -> None:
    table = UuidTable()
    text = spelling(uuid.uuid4())  # type: ignore[operator]
    with pytest.raises(ValidationError) as refused:
        validated_body(QuoteRequestBody, _body(text, str(uuid.uuid4())), table.context())
    assert refused.value.errors()[0]["loc"] == ("dealerAccountId",)
    assert text not in table


def test_the_table_is_bounded() -> None:
    table = UuidTable(limit=3)
    ids = [str(uuid.uuid4()) for _ in range(7)]
    for text in ids:
        assert table.keep(text) == uuid.UUID(text)
        assert len(table) <= 3
    assert ids[-1] in table
