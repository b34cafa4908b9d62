"""Meta endpoints: root, health, metrics, the OpenAPI document and its docs page."""

from __future__ import annotations

import asyncio
import html
import time
from typing import TYPE_CHECKING, Any, Literal

from aiohttp import web
from pydantic import ConfigDict, Field

import dealer
from dealer.api.framework import Api, Endpoint, json_response, openapi_document
from dealer.appkeys import API, CLOCK, LEDGER, MARKET_DATA, METRICS, POOL, VENUES
from dealer.auth import Principal
from dealer.wire import WireModel, iso, millis

if TYPE_CHECKING:
    import asyncpg

TITLE = "Fermata Dealer API"
DESCRIPTION = (
    "RFQ dealer daemon: firm quotes from the order books of linked exchange accounts, automatic "
    "hedging, double-entry ledger. Every response is the envelope "
    "`{data, success, errno, error}` (+ `details` on errors)."
)
# The reference says what holds for every operation (the root's description stays short).
REFERENCE_DESCRIPTION = DESCRIPTION + (
    " Query values have one spelling each: integers in the digits 0-9 without sign, spaces, "
    "underscores or leading zeros; booleans `true` or `false`; UUIDs in the hyphenated "
    "8-4-4-4-12 form, as in request bodies. A request body's fields take their own JSON "
    "type: integers JSON integers, booleans `true` or `false`, text (decimals included) "
    "strings. Any other is refused with errno -100001 naming the parameter or field."
)
HEALTH_TIMEOUT_SECONDS = 2.0


class RootInfo(WireModel):
    name: str
    version: str
    description: str
    openapi: str
    docs: str


class KillSwitchState(WireModel):
    dealer_account_id: str
    reason: str = Field(description="manual, exposure or hedge_failures")
    pause_reason: str | None
    since: int
    since_date_time: str


# A check that could not run (the dealers' without a database) is unknown.
CheckStatus = Literal["healthy", "degraded", "unhealthy", "unknown"]


class HealthCheck(WireModel):
    # dumped without its nulls (`health`): the fields a check lacks are absent
    model_config = ConfigDict(json_schema_serialization_defaults_required=False)

    status: CheckStatus
    latency_ms: float | None = None
    detail: str | None = None
    backend: str | None = None
    connectors: dict[str, str] | None = None
    stale_books: list[dict[str, Any]] | None = None
    kill_switches: list[KillSwitchState] | None = None


class Health(WireModel):
    model_config = ConfigDict(json_schema_serialization_defaults_required=False)

    status: Literal["healthy", "degraded", "unhealthy"]
    timestamp: int
    iso_date_time: str
    version: str
    checks: dict[str, HealthCheck]


def register(api: Api) -> None:
    api.get("/", summary="API name and version", tag="meta", roles=None,
            response=RootInfo)(root)
    api.get("/api/v3/health", summary="Health of the database, ledger and venues, and the "
            "dealers' kill switches (no envelope, as the seed; degraded while an LP book is "
            "stale or a kill switch is engaged; 503 when unhealthy)", tag="meta",
            roles=None, response=Health)(health)
    api.get("/metrics", summary="Prometheus metrics (text exposition format)", tag="meta",
            roles=None, response=None)(metrics)
    api.get("/api/v3/openapi.json", summary="This OpenAPI document", tag="meta", roles=None,
            response=None)(openapi)
    api.get("/api/v3/docs", summary="Human-readable API reference", tag="meta", roles=None,
            response=None)(docs)


async def root(request: web.Request, principal: Principal | None, params: None) -> RootInfo:
    return RootInfo(
        name=TITLE, version=dealer.__version__, description=DESCRIPTION,
        openapi="/api/v3/openapi.json", docs="/api/v3/docs",
    )


async def _timed(check: Any) -> HealthCheck:
    started = time.perf_counter()
    try:
        await asyncio.wait_for(check, HEALTH_TIMEOUT_SECONDS)
    except Exception as exc:
        return HealthCheck(status="unhealthy", detail=type(exc).__name__,
                           latency_ms=round((time.perf_counter() - started) * 1000, 2))
    return HealthCheck(status="healthy",
                       latency_ms=round((time.perf_counter() - started) * 1000, 2))


async def _database_check(request: web.Request) -> None:
    async with request.app[POOL].acquire() as conn:
        await conn.fetchval("SELECT 1")


async def _kill_switches(pool: asyncpg.Pool) -> HealthCheck:
    """Every paused dealer and who paused it. Only the automatic kill switch degrades health
    (an admin's pause is a decision, not a fault); neither makes the daemon unhealthy."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            """SELECT dealer_account_id, coalesce(paused_by, 'manual') AS reason, pause_reason,
                      updated_at
               FROM dealer WHERE status = 'PAUSED' ORDER BY updated_at, dealer_account_id""")
    engaged = [KillSwitchState(dealer_account_id=str(r["dealer_account_id"]), reason=r["reason"],
                               pause_reason=r["pause_reason"], since=millis(r["updated_at"]) or 0,
                               since_date_time=iso(r["updated_at"]) or "") for r in rows]
    automatic = any(k.reason != "manual" for k in engaged)
    return HealthCheck(status="degraded" if automatic else "healthy", kill_switches=engaged)


async def _dealers_check(request: web.Request) -> HealthCheck:
    try:
        return await asyncio.wait_for(_kill_switches(request.app[POOL]), HEALTH_TIMEOUT_SECONDS)
    except Exception as exc:
        return HealthCheck(status="unknown", detail=type(exc).__name__)


async def health(request: web.Request, principal: Principal | None, params: None) -> web.Response:
    app = request.app
    database = await _timed(_database_check(request))
    ledger = await _timed(app[LEDGER].check())
    ledger = ledger.model_copy(update={"backend": app[LEDGER].name})
    connectors = app[VENUES].connectors()
    stale = app[MARKET_DATA].stale_books()
    venues = HealthCheck(
        status="degraded" if stale else "healthy", connectors=connectors, stale_books=stale,
        detail="every venue is served by the paper connector" if app[VENUES].all_paper else None,
    )
    dealers = (await _dealers_check(request) if database.status == "healthy"
               else HealthCheck(status="unknown", detail="database unavailable"))
    checks = {"database": database, "ledger": ledger, "venues": venues, "dealers": dealers}
    for name, check in checks.items():
        app[METRICS].health_check.labels(name).set(1 if check.status == "healthy" else 0)
    if database.status != "healthy" or ledger.status != "healthy":
        status = "unhealthy"
    else:
        status = "degraded" if stale or dealers.status == "degraded" else "healthy"
    now = app[CLOCK]()
    body = Health(status=status, timestamp=millis(now) or 0, iso_date_time=iso(now) or "",
                  version=dealer.__version__, checks=checks)
    return json_response(body.model_dump(mode="json", by_alias=True, exclude_none=True),
                         status=503 if status == "unhealthy" else 200)


async def metrics(request: web.Request, principal: Principal | None, params: None) -> web.Response:
    request.app[MARKET_DATA].export_gauges()
    response = web.Response(body=request.app[METRICS].render())
    response.content_type = "text/plain"
    response.headers["Content-Type"] = "text/plain; version=0.0.4; charset=utf-8"
    return response


async def openapi(request: web.Request, principal: Principal | None, params: None) -> web.Response:
    document = openapi_document(request.app[API], title=TITLE, version=dealer.__version__,
                                description=REFERENCE_DESCRIPTION)
    return json_response(document)


async def docs(request: web.Request, principal: Principal | None, params: None) -> web.Response:
    rows = "\n".join(_docs_row(ep) for ep in request.app[API].endpoints)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{TITLE}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2rem;max-width:80rem}}
table{{border-collapse:collapse;width:100%}}td,th{{border:1px solid #ccc;padding:.3rem .5rem;
text-align:left;vertical-align:top}}code{{font-size:.9em}}</style></head><body>
<h1>{TITLE} {dealer.__version__}</h1><p>{html.escape(REFERENCE_DESCRIPTION)}</p>
<p>Machine-readable: <a href="/api/v3/openapi.json">/api/v3/openapi.json</a>.
Authenticate with <code>Authorization: Bearer &lt;token&gt;</code>
(mint one with <code>dealerd token --role admin</code>).</p>
<table><tr><th>method</th><th>path</th><th>roles</th><th>summary</th><th>errors (errno)</th></tr>
{rows}</table></body></html>"""
    return web.Response(text=page, content_type="text/html")


def _docs_row(ep: Endpoint) -> str:
    roles = "public" if ep.roles is None else ", ".join(sorted(r.value for r in ep.roles))
    errors = "<br>".join(f"{c.status} {c.errno} {html.escape(c.code)}"
                         for c in ep.documented_errors())
    return (f"<tr><td>{ep.method}</td><td><code>{html.escape(ep.path)}</code></td>"
            f"<td>{roles}</td><td>{html.escape(ep.summary)}</td><td>{errors}</td></tr>")
