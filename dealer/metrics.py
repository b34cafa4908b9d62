"""Prometheus metrics of the daemon, on a registry owned by the app (no global registry)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

import dealer

HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """Every metric the daemon exports; names and labels are a documented contract."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.build_info = Gauge(
            "dealer_build_info", "Daemon version (value is always 1)", ["version"], registry=r
        )
        self.build_info.labels(dealer.__version__).set(1)
        self.http_requests = Counter(
            "dealer_http_requests_total",
            "HTTP requests by route template, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.http_latency = Histogram(
            "dealer_http_request_duration_seconds",
            "HTTP request latency by route template and method",
            ["route", "method"],
            buckets=HTTP_BUCKETS,
            registry=r,
        )
        self.api_errors = Counter(
            "dealer_api_errors_total", "Error envelopes answered, by errno code", ["code"],
            registry=r,
        )
        self.health_check = Gauge(
            "dealer_health_check_up", "1 when a health check passes, by check", ["check"],
            registry=r,
        )
        self.venue_connector = Gauge(
            "dealer_venue_connector_info", "Which connector serves each configured venue",
            ["venue", "connector"], registry=r,
        )
        self.links_changed = Counter(
            "dealer_lp_link_changes_total", "LP link and unlink operations", ["action"],
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
