"""The request path updates its metrics through their values directly (one lock each); what it
exports must be exactly what prometheus-client's own inc and observe would have exported."""

from __future__ import annotations

import pytest

from dealer.metrics import HTTP_BUCKETS, Metrics

# On each bucket bound, just around it, zero, and past the largest bound.
AMOUNTS = sorted({0.0, *HTTP_BUCKETS, *(b * 0.999 for b in HTTP_BUCKETS),
                  *(b * 1.001 for b in HTTP_BUCKETS), 7.5, 1e9})


def _samples(metrics: Metrics, prefix: str) -> dict[tuple[str, tuple[tuple[str, str], ...]],
                                                     float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in metrics.registry.collect() if family.name.startswith(prefix)
            for s in family.samples if not s.name.endswith("_created")}


@pytest.mark.parametrize("route", ["/api/v3/fermata/quote/request", "unmatched"])
def test_http_request_exports_what_inc_and_observe_would(route: str) -> None:
    fast, reference = Metrics(), Metrics()
    for n, seconds in enumerate(AMOUNTS):
        status = 200 if n % 3 else 400
        fast.http_request(route, "POST", status, seconds)
        reference.http_requests.labels(route, "POST", str(status)).inc()
        reference.http_latency.labels(route, "POST").observe(seconds)
    exported = _samples(fast, "dealer_http_request")
    assert exported == _samples(reference, "dealer_http_request")
    assert exported[("dealer_http_request_duration_seconds_count",
                     (("method", "POST"), ("route", route)))] == len(AMOUNTS)


def test_quote_outcome_and_duration_export_what_inc_and_observe_would() -> None:
    fast, reference = Metrics(), Metrics()
    for n, seconds in enumerate(AMOUNTS):
        outcome, reason = ("quoted", "ok") if n % 4 else ("refused", "BOOKS_STALE")
        fast.quote_outcome(outcome, reason)
        fast.quote_duration(seconds)
        reference.quotes.labels(outcome, reason).inc()
        reference.quote_latency.observe(seconds)
    assert _samples(fast, "dealer_quote") == _samples(reference, "dealer_quote")
    assert fast.registry.get_sample_value("dealer_quote_duration_seconds_bucket",
                                          {"le": "0.005"}) == sum(a <= 0.005 for a in AMOUNTS)


def test_a_venue_s_hedge_order_statuses_exist_at_zero_from_its_first_order() -> None:
    # so that increase() sees a venue's first UNKNOWN or REJECTED order (the alerts' input)
    metrics = Metrics()
    metrics.hedge_order("OKX", "SENT")
    sample = metrics.registry.get_sample_value
    assert sample("dealer_hedge_orders_total", {"venue": "OKX", "status": "UNKNOWN"}) == 0.0
    assert sample("dealer_hedge_orders_total", {"venue": "OKX", "status": "REJECTED"}) == 0.0
    assert sample("dealer_hedge_orders_total", {"venue": "OKX", "status": "SENT"}) == 1.0
    metrics.hedge_order("OKX", "UNKNOWN")
    assert sample("dealer_hedge_orders_total", {"venue": "OKX", "status": "UNKNOWN"}) == 1.0
