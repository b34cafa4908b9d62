"""A frozen body model validated once serves every request sending the same bytes; anything
that fails validation is worked out again each time, exactly as without reuse."""

from __future__ import annotations

import uuid

import orjson
import pytest
from pydantic import ValidationError

from dealer.api.framework import Api, _ValidatedBodies
from dealer.api.rfq import QuoteRequestBody
from dealer.errors import ApiError, Errors
from dealer.wire import WireModel


def _body(**fields: object) -> bytes:
    return orjson.dumps({"dealerAccountId": str(uuid.uuid4()),
                         "tradingAccountId": str(uuid.uuid4()), "symbol": "BTC/USDT", **fields})


def test_the_same_bytes_give_the_same_validated_body() -> None:
    bodies = _ValidatedBodies(QuoteRequestBody)
    raw = _body(orderSide="BUY", quantity="0.1")
    first = bodies.validated(raw)
    assert bodies.validated(bytes(raw)) is first
    assert first == QuoteRequestBody.model_validate(orjson.loads(raw))
    other = bodies.validated(_body(quantity="0.1"))
    assert other is not first


def test_refusals_are_never_kept() -> None:
    bodies = _ValidatedBodies(QuoteRequestBody)
    for raw, error in ((b"{", ApiError), (b"[]", ApiError), (b"", ValidationError),
                       (_body(quantity="0"), ApiError),
                       (_body(quantity="1", quoteQuantity="2"), ApiError)):
        for _ in range(2):
            with pytest.raises(error) as refused:
                bodies.validated(raw)
            if isinstance(refused.value, ApiError):
                assert refused.value.error in (Errors.MALFORMED_JSON, Errors.INVALID_REQUEST)


def test_bounded_and_small_bodies_only() -> None:
    bodies = _ValidatedBodies(QuoteRequestBody, max_entries=2, max_bytes=400)
    raws = [_body(quantity=f"0.{n + 1}") for n in range(3)]
    kept = [bodies.validated(raw) for raw in raws]  # the third clears the first two
    assert bodies.validated(raws[2]) is kept[2]
    assert bodies.validated(raws[0]) is not kept[0]
    large = _body(quantity="0." + "1" * 60, orderSide="BUY") + b" " * 400
    assert bodies.validated(large) is not bodies.validated(large)


def test_only_frozen_body_models_may_be_reused() -> None:
    class Mutable(WireModel, frozen=False):
        name: str

    async def handler(*_: object) -> None:
        return None

    with pytest.raises(ValueError, match="frozen"):
        Api().post("/x", summary="x", tag="x", roles=None, response=None, body=Mutable,
                   repeated_bodies=True)(handler)
    with pytest.raises(ValueError, match="frozen"):
        Api().get("/y", summary="y", tag="y", roles=None, response=None,
                  repeated_bodies=True)(handler)
