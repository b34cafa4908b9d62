"""A real Prometheus scrapes the real daemon through an RFQ and hedging session; then every
query of the Grafana dashboard answers data and every alert rule evaluates, so neither can name
a metric the daemon does not export. Also: no id of a quote, order or client in any label."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import yaml

from tests.helpers import empty_database, eventually
from tests.integration.daemon import Daemon, daemon_env, start_daemon
from tests.integration.prometheus import (
    ALERT_RULES,
    DASHBOARD,
    SCRAPE_JOB,
    Prometheus,
    PromQLError,
    binary,
    grafana_expr,
    has_data,
    metric_names,
    scrape_config_for,
    start_prometheus,
)

# Label names that would make cardinality grow with the business: one series per quote,
# order, client or request.
UNBOUNDED_LABELS = {"quote_id", "quoteId", "trade_order_id", "order_id", "client_id",
                    "client_account_id", "request_id", "idempotency_key"}


def _desk(banner: str) -> dict[str, str]:
    """The demo desk's ids and tokens, as the banner prints them."""
    def find(pattern: str) -> str:
        match = re.search(pattern, banner, re.MULTILINE)
        assert match, (pattern, banner)
        return match.group(1)

    return {"dealer": find(r"^  dealer  (\S+)"), "client": find(r"^  client  (\S+)"),
            "admin": find(r"^export ADMIN_TOKEN=(\S+)"),
            "trader": find(r"^export CLIENT_TOKEN=(\S+)")}


class Session:
    """A desk's day in miniature: quotes, accepts (hedged by the daemon), replays, refusals."""

    def __init__(self, http: aiohttp.ClientSession, url: str, desk: dict[str, str]) -> None:
        self.http, self.url, self.desk = http, url, desk
        self.quote_ids: set[str] = set()
        self.order_ids: set[str] = set()
        self.fills = 0
        self.refusals = 0

    async def call(self, method: str, path: str, token: str | None = None,
                   body: dict[str, Any] | None = None,
                   params: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.http.request(method, self.url + path, json=body, params=params,
                                     headers=headers) as resp:
            return resp.status, await resp.json()

    async def quote(self, side: str | None, quantity: str, symbol: str = "BTC/USDT"
                    ) -> tuple[int, dict[str, Any]]:
        body = {"dealerAccountId": self.desk["dealer"], "tradingAccountId": self.desk["client"],
                "symbol": symbol, "quantity": quantity}
        if side:
            body["orderSide"] = side
        status, payload = await self.call("POST", "/api/v3/fermata/quote/request",
                                          self.desk["trader"], body)
        if status == 200:
            self.quote_ids.add(payload["data"]["quoteId"])
        else:
            self.refusals += 1
        return status, payload

    async def accept(self, quote: dict[str, Any], key: str, quantity: str | None = None
                     ) -> tuple[int, dict[str, Any]]:
        body = {"tradingAccountId": quote["tradingAccountId"],
                "instrumentId": quote["instrumentId"], "orderSide": quote["orderSide"],
                "orderType": "QUOTED", "quantity": quantity or quote["quantity"],
                "quoteId": quote["quoteId"], "idempotencyKey": key}
        status, payload = await self.call("POST", "/api/v3/trading/order/submit",
                                          self.desk["trader"], body)
        if status == 200:
            self.order_ids.add(payload["data"][0]["tradeOrderId"])
        else:
            self.refusals += 1
        return status, payload

    async def first_half(self) -> list[dict[str, Any]]:
        """Quotes on both sides, most of them accepted (the daemon hedges them on the LPs)."""
        status, health = await self.call("GET", "/api/v3/health")
        assert status == 200, health
        accepted: list[dict[str, Any]] = []
        for n in range(8):
            side = "BUY" if n % 2 == 0 else "SELL"
            status, payload = await self.quote(side, f"0.0{n % 4 + 1}")
            assert status == 200, payload
            if n < 6:  # the last two are left to expire
                status, order = await self.accept(payload["data"], f"session-{n}")
                assert status == 200, order
                assert order["data"][0]["status"] == "FILLED", order
                self.fills += 1
                accepted.append(payload["data"])
        status, payload = await self.quote(None, "0.02")  # two-way
        assert status == 200, payload
        await self.portfolio()
        return accepted

    async def portfolio(self) -> None:
        """The desk reads its LPs' balances (connector calls)."""
        status, balances = await self.call("GET", "/api/v3/portfolio/list", self.desk["admin"])
        assert status == 200, balances

    async def second_half(self, accepted: list[dict[str, Any]]) -> None:
        """More fills, an idempotent retry, refusals, and the desk looking at its LPs."""
        for n, side in enumerate(("SELL", "BUY")):
            status, payload = await self.quote(side, "0.03")
            assert status == 200, payload
            status, order = await self.accept(payload["data"], f"later-{n}")
            assert status == 200, order
            self.fills += 1
        status, again = await self.accept(accepted[0], "session-0")  # the same order again
        assert status == 200, again
        # Refusals, each counted with its error code as the reason.
        refused = [
            await self.quote("BUY", "1", symbol="SOL/USDT"),  # not quoted by the dealer
            await self.quote("BUY", "100000"),  # beyond every book and limit
            await self.accept(accepted[1], "another-key"),  # already filled
        ]
        status, quote = await self.quote("BUY", "0.01")
        assert status == 200, quote
        refused.append(await self.accept(quote["data"], "wrong-size", quantity="0.02"))
        refused.append(await self.call("GET", "/api/v3/fermata/quote/get", self.desk["admin"],
                                        params={"quoteId": str(uuid.uuid4())}))
        for status, payload in refused:
            assert status >= 400, payload
            assert payload["success"] is False, payload
        status, book = await self.call("GET", "/api/v3/fermata/dealer/orderBook",
                                       self.desk["admin"], params={
                                           "dealerAccountId": self.desk["dealer"],
                                           "symbol": "BTC/USDT", "depth": "5"})
        assert status == 200, book
        await self.portfolio()


def _dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target, and the template variables' queries."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [(panel["title"], target["expr"]) for panel in dashboard["panels"]
               for target in panel.get("targets", [])]
    assert queries
    return queries


def _variable_values(prometheus: Prometheus) -> dict[str, list[str]]:
    """Each template variable's values, asked the way Grafana asks `label_values(m, label)`."""
    dashboard = json.loads(DASHBOARD.read_text())
    values = {}
    for variable in dashboard["templating"]["list"]:
        match = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["query"]["query"])
        assert match, variable
        values[variable["name"]] = prometheus.api(f"label/{match.group(2)}/values",
                                                  **{"match[]": match.group(1)})
    return values


def _alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERT_RULES.read_text())["groups"]
    rules: list[dict[str, Any]] = [rule for group in groups for rule in group["rules"]]
    return rules


async def _until(check: Any, what: str, within_s: float = 60.0) -> None:
    async def poll() -> bool:
        return bool(check())

    try:
        await eventually(poll, within_s=within_s, every_s=0.25)
    except AssertionError as exc:
        raise AssertionError(f"{what}: {exc}") from None


def _value(prometheus: Prometheus, expr: str) -> float | None:
    samples = prometheus.query(expr)
    return float(samples[0]["value"][1]) if samples else None


async def _session_then_queries(daemon: Daemon, prometheus: Prometheus,
                                desk: dict[str, str]) -> None:
    await _until(prometheus.ready, "Prometheus ready\n" + prometheus.log_tail())
    await _until(lambda: _value(prometheus, f'up{{job="{SCRAPE_JOB}"}}') == 1,
                 "the daemon is scraped\n" + prometheus.log_tail())
    async def scraped_since(moment: float, scrapes: int = 1) -> None:
        """Until Prometheus has scraped `scrapes` more times after `moment` (epoch seconds)."""
        await _until(lambda: (_value(prometheus, f'timestamp(up{{job="{SCRAPE_JOB}"}})') or 0)
                     > moment + scrapes - 1, "a scrape after the session's step")

    # The session spans several scrapes, as a desk's traffic does: rates are then measured
    # between samples that differ, not over one burst that lands in a single scrape.
    started = time.monotonic()
    async with aiohttp.ClientSession() as http:
        session = Session(http, daemon.url, desk)
        accepted = await session.first_half()
        await scraped_since(time.time())
        await session.second_half(accepted)
    session_s = time.monotonic() - started

    # What the session did is in Prometheus: fills, their hedges, a reconciliation run, and
    # the alert rules evaluated since.
    await _until(lambda: _value(prometheus, "sum(dealer_fills_total)") == session.fills,
                 "fills scraped")
    await _until(lambda: _value(prometheus, "max(dealer_hedge_jobs_open)") == 0 and (
        _value(prometheus, 'sum(dealer_hedge_orders_total{status="FILLED"})') or 0) > 0,
                 "hedges done\n" + daemon.log_tail())
    await _until(lambda: prometheus.query("dealer_reconciliation_drift"),
                 "reconciliation ran")
    evaluated_after = time.time()
    await scraped_since(evaluated_after, scrapes=2)  # two samples of everything after that

    def rules_evaluated() -> bool:
        rules = [rule for group in prometheus.api("rules")["groups"] for rule in group["rules"]]
        return len(rules) == len(_alert_rules()) and all(
            _epoch(rule["lastEvaluation"]) > evaluated_after for rule in rules)

    await _until(rules_evaluated, "alert rules evaluated after the session")

    problems: list[str] = []
    empty_metrics: set[str] = set()
    unchanged_metrics: set[str] = set()

    def series_exist(name: str) -> bool:
        return bool(prometheus.api("series", **{"match[]": name}))

    def explain(promql: str) -> str:
        """Which metrics of a query without data have no series, or never moved."""
        names = sorted(metric_names(promql))
        missing = [n for n in names if not series_exist(n)]
        unchanged = [n for n in names if n not in missing
                     and _value(prometheus, f"max(changes({n}[10m]))") == 0]
        empty_metrics.update(missing)
        unchanged_metrics.update(unchanged)
        return "".join([f" (no series of {', '.join(missing)})" if missing else "",
                        f" (never changed: {', '.join(unchanged)})" if unchanged else ""])

    variables = _variable_values(prometheus)
    instance = urlsplit(daemon.url).netloc
    for name, values in variables.items():
        if instance not in values:
            problems.append(f"variable ${name}: {values} lacks {instance}")
    # Grafana's default selection is "All" (allValue `.*`).
    selected = {f"${name}": ".*" for name in variables}
    queries = _dashboard_queries()
    for title, expr in queries:
        promql = grafana_expr(expr, selected)
        try:
            if has_data(prometheus.query(promql)):
                continue
            reason = "no data"
        except PromQLError as exc:
            reason = str(exc)
        problems.append(f"dashboard [{title}] {reason}: {promql}{explain(promql)}")

    for rule in _alert_rules():
        try:
            prometheus.query(rule["expr"])
        except PromQLError as exc:
            problems.append(f"alert {rule['alert']} does not evaluate: {exc}")
        missing = sorted(n for n in metric_names(rule["expr"]) if not series_exist(n))
        empty_metrics.update(missing)
        if missing:
            problems.append(f"alert {rule['alert']} names metrics without series: "
                            f"{', '.join(missing)}")
    for group in prometheus.api("rules")["groups"]:
        for rule in group["rules"]:
            if rule["health"] != "ok":
                problems.append(f"alert {rule['name']} health {rule['health']}: "
                                f"{rule.get('lastError')}")

    # Bounded label cardinality: no label is named after a per-request id, and no label value
    # is the id of a quote, an order or the client.
    series = prometheus.api("series", **{"match[]": f'{{job="{SCRAPE_JOB}"}}'})
    ids = session.quote_ids | session.order_ids | {desk["client"]}
    for labels in series:
        unbounded = set(labels) & UNBOUNDED_LABELS
        leaked = {k for k, v in labels.items() if v in ids}
        if unbounded or leaked:
            problems.append(f"series {labels} has per-request labels {unbounded | leaked}")
    print(f"session {session_s:.1f}s: {session.fills} fills, {len(session.quote_ids)} quotes, "
          f"{session.refusals} refusals; {len(queries)} dashboard queries, "
          f"{len(_alert_rules())} alert rules; {len(series)} series")
    assert not problems, (
        f"{len(problems)} problem(s):\n  " + "\n  ".join(problems)
        + f"\nmetrics without series: {sorted(empty_metrics)}"
        + f"\nmetrics that never changed during the session: {sorted(unchanged_metrics)}")


def _epoch(rfc3339: str) -> float:
    """Prometheus' timestamps carry nanoseconds; Python reads up to microseconds."""
    trimmed = re.sub(r"(\.\d{6})\d*", r"\1", rfc3339).replace("Z", "+00:00")
    return dt.datetime.fromisoformat(trimmed).timestamp()


def test_prometheus_scrapes_a_session_and_every_dashboard_and_alert_query_answers(
        pg_server: Any, tmp_path: Path) -> None:
    binary("prometheus")  # before anything starts: a missing binary fails with the hint
    dsn = asyncio.run(empty_database(pg_server))
    daemon = start_daemon(daemon_env(tmp_path / "dealer", DEALER_DATABASE_URL=dsn,
                                     DEALER_DEMO="1", DEALER_RECONCILIATION_INTERVAL_S="5"),
                          timeout=120)
    prometheus: Prometheus | None = None
    try:
        folder = tmp_path / "prometheus"
        folder.mkdir()
        config = scrape_config_for(urlsplit(daemon.url).netloc, folder)
        prometheus = start_prometheus(config, folder)
        asyncio.run(_session_then_queries(daemon, prometheus, _desk(daemon.banner)))
    finally:
        if prometheus is not None:
            prometheus.stop()
        code = daemon.stop()
    assert code == 0, daemon.log_tail()
