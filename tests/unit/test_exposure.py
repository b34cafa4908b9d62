"""Exposure valuation and the kill switch's decision, on plain values."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

from dealer.metrics import Metrics
from dealer.services.exposure import (
    AssetExposure,
    DealerExposure,
    FailureStats,
    KillSwitchPolicy,
    base_assets,
    export_exposures,
    export_kill_switch,
    trip_reason,
    unit_price,
)

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
POLICY = KillSwitchPolicy(failure_rate=Decimal("0.5"), window=10, min_jobs=4)
NO_FAILURES = FailureStats(0, 0)
MIDS = {"BTC/USDT": Decimal(65000), "ETH/BTC": Decimal("0.05"), "SOL/USDC": Decimal(150)}


def _mid(symbol: str) -> Decimal | None:
    return MIDS.get(symbol)


def _asset(name: str, unhedged: str, price: str | None) -> AssetExposure:
    return AssetExposure(name, Decimal(unhedged), Decimal(0), 1, 0, None,
                         None if price is None else Decimal(price))


def _dealer(assets: list[AssetExposure], limit: str = "100000",
            failures: FailureStats = NO_FAILURES) -> DealerExposure:
    return DealerExposure(uuid.uuid4(), "ACTIVE", None, None, "USDT", Decimal(limit),
                          tuple(assets), failures, NOW)


def test_unit_prices_come_from_the_dealers_symbols() -> None:
    symbols = ["BTC/USDT", "ETH/BTC", "SOL/USDC"]
    assert unit_price("BTC", "USDT", symbols, _mid) == Decimal(65000)
    assert unit_price("ETH", "USDT", symbols, _mid) == Decimal(3250)  # through ETH/BTC
    assert unit_price("USDT", "USDT", symbols, _mid) == Decimal(1)
    assert unit_price("SOL", "USDT", symbols, _mid) is None  # no SOL/USDT nor USDC/USDT
    assert unit_price("ADA", "USDT", symbols, _mid) is None
    assert unit_price("BTC", "USDT", ["BTC/USDT"], lambda s: None) is None
    assert base_assets(["BTC/USDT", "ETH/BTC", "BTC/USDC"]) == ["BTC", "ETH"]


def test_notional_is_gross_and_flags_what_has_no_price() -> None:
    long_btc, short_eth = _asset("BTC", "0.5", "65000"), _asset("ETH", "-2", "3250")
    flat, unpriced = _asset("SOL", "0", None), _asset("ADA", "-10", None)
    assert (long_btc.notional, short_eth.notional) == (Decimal(32500), Decimal(-6500))
    assert flat.notional == 0
    assert unpriced.notional is None
    dealer = _dealer([long_btc, short_eth, flat])
    assert dealer.unhedged_notional == Decimal(39000)
    assert dealer.notional_complete
    dealer = _dealer([long_btc, unpriced])
    assert dealer.unhedged_notional == Decimal(32500)
    assert not dealer.notional_complete


def test_the_kill_switch_trips_on_notional_over_the_limit() -> None:
    at_limit = _dealer([_asset("BTC", "-1", "65000")], limit="65000")
    assert trip_reason(at_limit, POLICY) is None
    over = _dealer([_asset("BTC", "-1", "65000.01")], limit="65000")
    trip = trip_reason(over, POLICY)
    assert trip is not None
    assert trip[0] == "exposure"
    assert "65000.01 USDT" in trip[1]
    assert "limit 65000" in trip[1]


def test_the_kill_switch_trips_on_the_hedge_failure_rate_once_enough_jobs_finished() -> None:
    assert trip_reason(_dealer([], failures=FailureStats(3, 3)), POLICY) is None  # too few
    assert trip_reason(_dealer([], failures=FailureStats(10, 4)), POLICY) is None
    trip = trip_reason(_dealer([], failures=FailureStats(10, 5)), POLICY)
    assert trip is not None
    assert trip[0] == "hedge_failures"
    assert "5 of the last 10" in trip[1]
    assert FailureStats(0, 0).rate is None
    assert FailureStats(4, 1).rate == Decimal("0.25")


def test_gauges_follow_the_last_check() -> None:
    metrics = Metrics()
    dealer = _dealer([_asset("BTC", "-0.5", "65000"), _asset("ETH", "0", None)])
    export_exposures(metrics, [dealer])
    dealer_id = str(dealer.dealer_account_id)
    assert metrics.unhedged_exposure.labels(dealer_id, "BTC")._value.get() == -0.5
    assert metrics.unhedged_exposure.labels(dealer_id, "ETH")._value.get() == 0
    assert metrics.unhedged_notional.labels(dealer_id)._value.get() == 32500
    for reason in ("manual", "exposure", "hedge_failures"):
        assert metrics.kill_switch.labels(dealer_id, reason)._value.get() == 0
    export_kill_switch(metrics, dealer.dealer_account_id, "PAUSED", "exposure")
    assert metrics.kill_switch.labels(dealer_id, "exposure")._value.get() == 1
    assert metrics.kill_switch.labels(dealer_id, "manual")._value.get() == 0
    export_kill_switch(metrics, dealer.dealer_account_id, "PAUSED", None)
    assert metrics.kill_switch.labels(dealer_id, "manual")._value.get() == 1
    assert metrics.kill_switch.labels(dealer_id, "exposure")._value.get() == 0
    # A dealer gone from the next check leaves no stale series behind.
    export_exposures(metrics, [])
    text = metrics.render().decode()
    assert dealer_id not in text
