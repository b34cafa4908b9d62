from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from dealer.api.fermata import CreateDealerBody, UpdateDealerBody
from dealer.errors import ApiError, Errors
from dealer.services.dealers import CONFIG_FIELDS, DealerConfig, parse_config


def test_defaults_are_sane_and_stored_camel_case_as_strings() -> None:
    config = DealerConfig(symbols=["BTC/USDT"])
    assert config.stored() == {
        "symbols": ["BTC/USDT"],
        "spreadBps": "10",
        "spreadTiers": [],
        "minQuoteNotional": "10",
        "maxQuoteNotional": "1000000",
        "quoteTtlMs": 5000,
        "inventorySkewBps": "0",
        "maxUnhedgedExposure": {},
        "maxUnhedgedNotional": "250000",
        "hedgeMode": "IMMEDIATE",
        "hedgeNettingWindowMs": 1000,
        "slippageToleranceBps": "20",
        "lastLookBps": None,
    }


def test_a_full_config_round_trips_through_its_stored_form() -> None:
    values = {
        "symbols": ["BTC/USDT", "ETH/USDC", "1INCH/USDT"],
        "spreadBps": "12.5",
        "spreadTiers": [{"upToNotional": "1000", "spreadBps": "5"},
                        {"upToNotional": "50000.5", "spreadBps": "8"}],
        "minQuoteNotional": "0",
        "maxQuoteNotional": "2000000.000001",
        "quoteTtlMs": 500,
        "inventorySkewBps": "1000",
        "maxUnhedgedExposure": {"BTC": "2.5", "ETH": "40"},
        "maxUnhedgedNotional": "100000",
        "hedgeMode": "NETTED",
        "hedgeNettingWindowMs": 60000,
        "slippageToleranceBps": "0",
        "lastLookBps": "3.25",
    }
    config = DealerConfig.model_validate(values)
    assert config.stored() == values
    assert DealerConfig.model_validate(config.stored()) == config


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("symbols", []),
        ("symbols", ["btc/usdt"]),
        ("symbols", ["BTCUSDT"]),
        ("symbols", ["BTC/USDT/X"]),
        ("symbols", ["BTC/USDT", "BTC/USDT"]),
        ("symbols", [f"S{i}/USDT" for i in range(51)]),
        ("spreadBps", "abc"),
        ("spreadBps", "-1"),
        ("spreadBps", "10000.01"),
        ("spreadBps", "1e3"),
        ("spreadBps", "NaN"),
        ("spreadBps", " 10"),
        ("spreadBps", 10),
        ("spreadBps", 10.5),
        ("spreadTiers", [{"upToNotional": "0", "spreadBps": "5"}]),
        ("spreadTiers", [{"upToNotional": "100", "spreadBps": "5"},
                         {"upToNotional": "100", "spreadBps": "4"}]),
        ("spreadTiers", [{"upToNotional": "100", "spreadBps": "5"},
                         {"upToNotional": "99.99", "spreadBps": "4"}]),
        ("spreadTiers", [{"upToNotional": "100"}]),
        ("spreadTiers", [{"upToNotional": "100", "spreadBps": "5", "extra": 1}]),
        ("minQuoteNotional", "-0.01"),
        ("maxQuoteNotional", "0"),
        ("quoteTtlMs", 499),
        ("quoteTtlMs", 60001),
        ("quoteTtlMs", "5000"),
        ("quoteTtlMs", 5000.0),
        ("quoteTtlMs", True),
        ("inventorySkewBps", "1000.1"),
        ("maxUnhedgedExposure", {"btc": "1"}),
        ("maxUnhedgedExposure", {"BTC": "0"}),
        ("maxUnhedgedExposure", {"BTC": "-1"}),
        ("maxUnhedgedNotional", "0"),
        ("hedgeMode", "LATER"),
        ("hedgeNettingWindowMs", 99),
        ("slippageToleranceBps", "1001"),
        ("lastLookBps", "-1"),
        ("unknownField", "1"),
    ],
)
def test_each_field_is_validated(field: str, value: Any) -> None:
    with pytest.raises(ValidationError):
        DealerConfig.model_validate({"symbols": ["BTC/USDT"], field: value})


def test_decimal_errors_say_what_is_wrong_without_echoing_the_value() -> None:
    with pytest.raises(ValidationError) as caught:
        DealerConfig.model_validate({"symbols": ["BTC/USDT"], "spreadBps": "abc"})
    (error,) = caught.value.errors()
    assert error["loc"] == ("spreadBps",)
    assert "decimal string" in error["msg"]
    assert "abc" not in error["msg"]
    with pytest.raises(ValidationError) as caught:
        DealerConfig.model_validate({"symbols": ["BTC/USDT"], "spreadBps": "-1"})
    assert "at least 0" in caught.value.errors()[0]["msg"]


def test_min_notional_must_be_below_max() -> None:
    with pytest.raises(ValidationError, match="minQuoteNotional must be below maxQuoteNotional"):
        DealerConfig.model_validate({"symbols": ["BTC/USDT"], "minQuoteNotional": "100",
                                     "maxQuoteNotional": "100"})


def test_parse_config_refuses_with_invalid_dealer_config() -> None:
    with pytest.raises(ApiError) as caught:
        parse_config({"symbols": ["BTC/USDT"], "minQuoteNotional": "2000000"})
    assert caught.value.error is Errors.INVALID_DEALER_CONFIG
    assert "minQuoteNotional must be below maxQuoteNotional" in str(caught.value)
    # A rule over several fields names them, as every refusal names its fields.
    assert [f["field"] for f in caught.value.details["fields"]] == ["minQuoteNotional",
                                                                    "maxQuoteNotional"]


def test_create_body_does_not_check_consistency_but_the_config_does() -> None:
    body = CreateDealerBody.model_validate({"symbols": ["BTC/USDT"], "minQuoteNotional": "5",
                                            "maxQuoteNotional": "1"})
    with pytest.raises(ApiError):
        parse_config(body.model_dump(by_alias=True, exclude={"nickname"}))


def test_update_body_offers_every_config_field() -> None:
    assert set(UpdateDealerBody.model_fields) - {"dealer_account_id", "nickname"} == CONFIG_FIELDS


def test_update_body_reports_only_the_fields_sent() -> None:
    body = UpdateDealerBody.model_validate({
        "dealerAccountId": "550e8400-e29b-41d4-a716-446655440000",
        "spreadBps": "7", "lastLookBps": None,
    })
    assert body.config_changes() == {"spreadBps": "7", "lastLookBps": None}


@pytest.mark.parametrize("field", ["spreadBps", "symbols", "quoteTtlMs", "hedgeMode"])
def test_update_body_refuses_null_for_a_required_field(field: str) -> None:
    with pytest.raises(ApiError, match="may be omitted but not null") as refused:
        UpdateDealerBody.model_validate(
            {"dealerAccountId": "550e8400-e29b-41d4-a716-446655440000", field: None}
        )
    assert refused.value.error is Errors.INVALID_REQUEST
    assert [f["field"] for f in refused.value.details["fields"]] == [field]
