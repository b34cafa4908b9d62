"""Prometheus metrics of the daemon, on a registry owned by the app (no global registry)."""

from __future__ import annotations

import contextlib
import time
from bisect import bisect_left
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.values import MutexValue

import dealer

HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
HEDGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
SLIPPAGE_BUCKETS = (-50.0, -20.0, -10.0, -5.0, -2.0, -1.0, 0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0)


class _LoopValue(MutexValue):
    """A metric value incremented without its lock: the values of the per-request series
    (HTTP requests, quotes), which only the event loop's thread increments. The lock of
    `MutexValue.inc` guards against other threads, and costs as much as the addition itself on
    a path that runs for every request. Reads (a scrape) still take it: a float is read whole."""

    def inc(self, amount: float) -> None:
        self._value += amount


class _Incremented(Protocol):
    def inc(self, amount: float) -> None: ...


def _loop_owned(value: Any) -> _Incremented:
    """`value` (a series' own) made a _LoopValue in place: its lock, exemplar and count stay.
    Another kind of value (prometheus-client's multiprocess mode) is left as it is."""
    if type(value) is MutexValue:
        value.__class__ = _LoopValue
    incremented: _Incremented = value
    return incremented


class _Timing:
    """What `Histogram.observe` does for a histogram without labels, or a label child (it is
    observable, and no exemplar is given): add to the sum, count in the first bucket whose bound
    is not below the amount. Its values are incremented without their lock (`_LoopValue`): this
    runs for every request. Relies on prometheus-client's value layout (pinned; a test checks
    that both paths export the same samples)."""

    __slots__ = ("_bounds", "_buckets", "_in_place", "_sum")

    def __init__(self, histogram: Histogram) -> None:
        self._sum: Any = _loop_owned(histogram._sum)
        self._buckets: list[Any] = [_loop_owned(bucket) for bucket in histogram._buckets]
        self._bounds = histogram._upper_bounds
        # Added to in place below, as _LoopValue.inc adds (a call less per value): only when
        # every value is a _LoopValue (not in prometheus-client's multiprocess mode).
        self._in_place = all(type(v) is _LoopValue for v in (self._sum, *self._buckets))

    def observe(self, amount: float) -> None:
        if self._in_place:
            self._sum._value += amount
            self._buckets[bisect_left(self._bounds, amount)]._value += 1
        else:
            self._sum.inc(amount)
            self._buckets[bisect_left(self._bounds, amount)].inc(1)


def _counting(counter: Counter) -> Callable[[float], None]:
    """`inc` of a counter without labels, or a label child, for amounts known to be
    non-negative, counted from the event loop's thread only: its value's own inc, without its
    lock (see `_LoopValue`)."""
    inc: Callable[[float], None] = _loop_owned(counter._value).inc
    return inc


_HEDGE_ORDER_STATUSES = ("SENT", "FILLED", "PARTIALLY_FILLED", "EXPIRED", "REJECTED",
                         "UNKNOWN")


class Metrics:
    """Every metric the daemon exports; names and labels are a documented contract."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        # The process's own health (CPU, memory, file descriptors, GC), on this registry too:
        # the default global registry is never used.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
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
        self._http_children: dict[tuple[str, str, int],
                                  tuple[Callable[[float], None], _Timing]] = {}
        self._quote_children: dict[tuple[str, str], Callable[[float], None]] = {}
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
        self.scheduler_last_success = Gauge(
            "dealer_scheduler_job_last_success_timestamp_seconds",
            "Unix time of a job's last successful run (its registration before the first)",
            ["job"], registry=r)
        self.scheduler_interval = Gauge(
            "dealer_scheduler_job_interval_seconds", "A scheduled job's interval", ["job"],
            registry=r)

        self.outbox_pending = Gauge(
            "dealer_ledger_outbox_pending", "Ledger entries waiting in the outbox", registry=r)
        self.outbox_oldest_age = Gauge(
            "dealer_ledger_outbox_oldest_age_seconds",
            "Age of the oldest ledger entry still waiting in the outbox", registry=r)
        self.relay_sends = Counter(
            "dealer_ledger_relay_sent_total",
            "Outbox entries the ledger acknowledged, by outcome (committed, duplicate)",
            ["outcome"], registry=r)
        self.relay_errors = Counter(
            "dealer_ledger_relay_errors_total",
            "Relay failures by kind (unavailable: retried; refused: needs a person; relay)",
            ["kind"], registry=r)
        self.relay_retries = Counter(
            "dealer_ledger_relay_retries_total", "Relay retries scheduled with backoff",
            registry=r)
        self.ledger_latency = Histogram(
            "dealer_ledger_backend_request_duration_seconds",
            "Ledger backend call latency by operation", ["operation"], buckets=HTTP_BUCKETS,
            registry=r)
        self.reconciliation_drift = Gauge(
            "dealer_reconciliation_drift",
            "Venue balance change since link + ledger net flow of the LP's exchange wallet, "
            "less what the bookings rounded off (0 when they agree), per LP account and asset, "
            "in asset units",
            ["trading_account_id", "asset"], registry=r)

        self.quotes = Counter(
            "dealer_quotes_total", "Quote requests by outcome (quoted, refused, failed) and "
            "reason (the error code answered; 'ok' when quoted)", ["outcome", "reason"], registry=r)
        self.quote_latency = Histogram(
            "dealer_quote_duration_seconds", "Time to price and store a quote",
            buckets=HTTP_BUCKETS, registry=r)
        self._quote_timing = _Timing(self.quote_latency)
        self.quote_fact_reads = Counter(
            "dealer_quote_fact_reads_total", "Reads of quoting facts (dealer, client, instrument "
            "rules) from the database: facts not cached yet, or changed (the quoting epoch "
            "moved); requests needing the same facts at once share one read", registry=r)
        self.quotes_expired = Counter(
            "dealer_quotes_expired_total", "Quotes the expiry job marked EXPIRED: past their "
            "expireAt and never accepted", registry=r)
        self.quotes_purged = Counter(
            "dealer_quotes_purged_total", "EXPIRED quotes deleted by the retention "
            "(DEALER_QUOTE_RETENTION_HOURS)", registry=r)
        self.accepts = Counter(
            "dealer_quote_accepts_total", "Accept attempts by outcome (filled, replayed, "
            "rejected by a last look, refused, failed) and reason", ["outcome", "reason"],
            registry=r)
        self.fills = Counter(
            "dealer_fills_total", "Client fills by symbol and client side", ["symbol", "side"],
            registry=r)
        self.fill_notional = Counter(
            "dealer_fill_notional_total", "Client fill notional in quote currency, by quote asset",
            ["quote_asset"], registry=r)

        self.hedge_orders = Counter(
            "dealer_hedge_orders_total", "Hedge order events by LP venue and status (SENT when "
            "sent, then FILLED, PARTIALLY_FILLED, EXPIRED, REJECTED or UNKNOWN)",
            ["venue", "status"], registry=r)
        # No label: the series exists from the start, so the alert on it can be checked (and
        # fires on the first); the log line and the hedge order name the asset and amount.
        self.hedge_fees_unbooked = Counter(
            "dealer_hedge_fees_unbooked_total", "Hedge fees (one per order and asset) not booked "
            "because the ledger has no scale for their asset (a venue's fee token)", registry=r)
        self.hedge_fees_booked_late = Counter(
            "dealer_hedge_fees_booked_late_total", "Hedge fees booked after their fill, once a "
            "scale for their asset was configured (hedging.late_fees)", registry=r)
        self.hedge_fees_waiting = Gauge(
            "dealer_hedge_fees_waiting", "Hedge fees not booked yet: their asset has no scale "
            "on the daemon that last looked, or the ledger refused them (hedge_fee_pending)",
            registry=r)
        self.hedge_first_order_latency_s = Histogram(
            "dealer_hedge_first_order_latency_seconds",
            "Time from a client fill to the first hedge order sent for it",
            buckets=HTTP_BUCKETS, registry=r)
        self.hedge_fast_rounds = Counter(
            "dealer_hedge_fast_rounds_total",
            "New hedge jobs a worker tried to size and record straight from their notice "
            "(taken), or left to its lane's claim (declined: the lane was busy), or recorded "
            "by the fill's own statement (inline)", ["outcome"], registry=r)
        self.hedge_carry_jobs = Counter(
            "dealer_hedge_carry_jobs_total",
            "Carry jobs written: an idle hedge lane's carry and residuals an LP would take",
            registry=r)
        self.hedge_jobs_open = Gauge(
            "dealer_hedge_jobs_open", "Hedge jobs not finished yet (PENDING or IN_PROGRESS)",
            registry=r)
        self.hedge_jobs_finished = Counter(
            "dealer_hedge_jobs_finished_total",
            "Hedge jobs that reached a final status (HEDGED, FAILED, CANCELLED)", ["status"],
            registry=r)
        self.hedge_fully_hedged_latency_s = Histogram(
            "dealer_hedge_fill_to_hedged_seconds",
            "Time from a client fill to its hedge job being fully HEDGED",
            buckets=HEDGE_BUCKETS, registry=r)
        self.hedge_slippage = Histogram(
            "dealer_hedge_slippage_bps",
            "Hedge execution price vs the quote-time plan, bps (positive: worse for the dealer)",
            ["venue"], buckets=SLIPPAGE_BUCKETS, registry=r)
        self.unhedged_exposure = Gauge(
            "dealer_unhedged_exposure",
            "Unhedged position per dealer and base asset, in asset units (negative: short)",
            ["dealer_account_id", "asset"], registry=r)
        self.unhedged_notional = Gauge(
            "dealer_unhedged_notional",
            "Unhedged exposure per dealer valued at mid, in quote currency", ["dealer_account_id"],
            registry=r)
        self.kill_switch = Gauge(
            "dealer_kill_switch_engaged",
            "1 while a dealer's quoting is paused, by reason (manual, exposure, hedge_failures)",
            ["dealer_account_id", "reason"], registry=r)

        # Known label values are exported from the start at 0: increase() then counts the
        # first event too, so an alert on the first refused entry or FAILED job does fire.
        for kind in ("unavailable", "refused", "relay"):
            self.relay_errors.labels(kind)
        for status in ("HEDGED", "FAILED", "CANCELLED"):
            self.hedge_jobs_finished.labels(status)
        # The RFQ's: what the accept ratio and the outcome panels divide and sum.
        self.quote_outcome_known("quoted", "ok")
        for outcome, reason in (("filled", "ok"), ("replayed", "ok"), ("rejected", "last_look")):
            self.accepts.labels(outcome, reason)
        self._fill_symbols: set[str] = set()
        self._hedge_venues: set[str] = set()

    def http_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count and time one request (label children are looked up once per route, method
        and status: this runs for every request)."""
        key = (route, method, status)
        children = self._http_children.get(key)
        if children is None:
            children = (_counting(self.http_requests.labels(route, method, str(status))),
                        _Timing(self.http_latency.labels(route, method)))
            self._http_children[key] = children
        children[0](1)
        children[1].observe(seconds)

    def quote_outcome(self, outcome: str, reason: str) -> None:
        """Count one quote request (the label child is looked up once per outcome and reason:
        this runs for every quote)."""
        inc = self._quote_children.get((outcome, reason))
        if inc is None:
            inc = self._quote_children[(outcome, reason)] = _counting(
                self.quotes.labels(outcome, reason))
        inc(1)

    def quote_outcome_known(self, outcome: str, reason: str) -> None:
        """Export the series of one quote outcome at 0, before its first count."""
        if (outcome, reason) not in self._quote_children:
            self._quote_children[(outcome, reason)] = _counting(
                self.quotes.labels(outcome, reason))

    def fills_known(self, symbol: str) -> None:
        """Export the fill series of `symbol` (both sides, its quote asset's notional) at 0,
        so that increase() counts its first fill (called for every symbol a linked dealer
        quotes, on every replica, and when a quote of it is answered)."""
        if symbol not in self._fill_symbols:
            self._fill_symbols.add(symbol)
            for side in ("BUY", "SELL"):
                self.fills.labels(symbol, side)
            self.fill_notional.labels(symbol.partition("/")[2])

    def quote_duration(self, seconds: float) -> None:
        """Time one quote that was priced and stored (`dealer_quote_duration_seconds`)."""
        self._quote_timing.observe(seconds)

    # The hedge worker's reporting interface (hedging.worker.HedgeMetrics).

    def hedge_order(self, venue: str, status: str) -> None:
        if venue not in self._hedge_venues:
            # Every status of a venue exists from its first order on, at 0: increase() sees
            # the first REJECTED or UNKNOWN too (a series born at 1 shows no increase).
            self._hedge_venues.add(venue)
            for known in _HEDGE_ORDER_STATUSES:
                self.hedge_orders.labels(venue, known)
        self.hedge_orders.labels(venue, status).inc()

    def hedge_first_order_latency(self, seconds: float) -> None:
        self.hedge_first_order_latency_s.observe(seconds)

    def hedge_fast_round(self, outcome: str) -> None:
        self.hedge_fast_rounds.labels(outcome).inc()

    def hedge_carry_jobs_made(self, count: int) -> None:
        self.hedge_carry_jobs.inc(count)

    def hedge_open_jobs(self, count: int) -> None:
        self.hedge_jobs_open.set(count)

    def hedge_job_finished(self, status: str, fill_to_final_s: float | None) -> None:
        """A job reached HEDGED, FAILED or CANCELLED; the latency is observed for HEDGED only."""
        self.hedge_jobs_finished.labels(status).inc()
        if status == "HEDGED" and fill_to_final_s is not None:
            self.hedge_fully_hedged_latency_s.observe(fill_to_final_s)

    def hedge_slippage_bps(self, venue: str, bps: float) -> None:
        self.hedge_slippage.labels(venue).observe(bps)

    def hedge_fee_unbooked(self) -> None:
        self.hedge_fees_unbooked.inc()

    # The ledger relay's reporting interface (ledger.outbox.RelayMetrics).

    def relay_sent(self, outcome: str, count: int) -> None:
        if count:
            self.relay_sends.labels(outcome).inc(count)

    def relay_error(self, kind: str) -> None:
        self.relay_errors.labels(kind).inc()

    def relay_retry(self) -> None:
        self.relay_retries.inc()

    def backend_latency(self, operation: str, seconds: float) -> None:
        self.ledger_latency.labels(operation).observe(seconds)

    def outbox_state(self, pending: int, oldest_age_s: float) -> None:
        self.outbox_pending.set(pending)
        self.outbox_oldest_age.set(oldest_age_s)

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
