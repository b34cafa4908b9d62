"""Prometheus metrics of the daemon, on a registry owned by the app (no global registry)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator

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

        self.book_updates = Counter(
            "dealer_book_updates_total", "Order book updates accepted, by venue and symbol",
            ["venue", "symbol"], registry=r,
        )
        self.book_rejected = Counter(
            "dealer_book_updates_rejected_total",
            "Order book updates dropped (crossed, malformed, gap, old_sequence, resync_rejected)",
            ["venue", "symbol", "reason"], registry=r,
        )
        self.book_resyncs = Counter(
            "dealer_book_resyncs_total", "Snapshots taken to (re)start a book", ["venue", "symbol"],
            registry=r,
        )
        self.book_age = Gauge(
            "dealer_lp_book_age_seconds", "Age of the latest accepted book, per LP account",
            ["trading_account_id", "venue", "symbol"], registry=r,
        )
        self.book_stale = Gauge(
            "dealer_book_stale", "1 when a subscribed book cannot be used for pricing",
            ["venue", "symbol"], registry=r,
        )
        self.connector_errors = Counter(
            "dealer_connector_errors_total", "Connector calls that failed",
            ["venue", "connector", "operation"], registry=r,
        )
        self.connector_latency = Histogram(
            "dealer_connector_request_duration_seconds", "Connector call latency",
            ["venue", "connector", "operation"], buckets=HTTP_BUCKETS, registry=r,
        )
        self.scheduler_runs = Counter(
            "dealer_scheduler_job_runs_total", "Scheduled job runs by job and outcome",
            ["job", "outcome"], registry=r,
        )

    @contextlib.asynccontextmanager
    async def connector_call(self, venue: str, connector: str, operation: str
                             ) -> AsyncIterator[None]:
        """Time one connector call; count it as an error if it raises."""
        started = time.perf_counter()
        try:
            yield
        except Exception:
            self.connector_errors.labels(venue, connector, operation).inc()
            raise
        finally:
            self.connector_latency.labels(venue, connector, operation).observe(
                time.perf_counter() - started)

    def render(self) -> bytes:
        return generate_latest(self.registry)
