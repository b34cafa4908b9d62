"""What every request goes through around its handler: request id (and its log context) →
metrics → errors → auth. Every failure becomes the seed envelope.

Not an aiohttp middleware: each route's handler is wrapped in it when the API is installed
(`routed`), and unmatched paths and methods go to a last catch-all route (`Api.install`). An
app with any middleware sends every request through aiohttp's middleware chain, a layer of
Python calls of its own (the current-app fix-up, the chain's lookups), and the quote endpoint
pays it on every quote."""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Awaitable, Callable
from functools import partial

import asyncpg
from aiohttp import web
from pydantic import ValidationError

from dealer import logs
from dealer.api.framework import Api, UnreadableBody, json_response, validation_details
from dealer.appkeys import AUTH_ERROR, METRICS, PRINCIPAL, REQUEST_ID, TOKENS
from dealer.auth import TokenVerifier
from dealer.errors import ApiError, ErrorCode, Errors
from dealer.metrics import Metrics
from dealer.wire import error_envelope, is_uuid_text

log = logging.getLogger(__name__)

# Losing the database is an outage (503, retry), not a bug in the request or the daemon.
DATABASE_OUTAGE = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InvalidCatalogNameError,
    # A pooled connection whose server session was cut mid-operation can surface as a client
    # protocol error rather than a closed connection.
    asyncpg.exceptions.InternalClientError,
    # The server's connection slots used up (53300) or out of memory or disk (53xxx).
    asyncpg.exceptions.InsufficientResourcesError,
    # A pooled connection to a primary demoted by a failover: it now answers read-only.
    asyncpg.exceptions.ReadOnlySQLTransactionError,
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
access_log = logging.getLogger("dealer.access")
# Scrapes and probes arrive every few seconds: their lines are DEBUG so INFO stays readable.
_QUIET_ROUTES = frozenset({"/metrics", "/api/v3/health"})
# Query parameters whose (UUID) value names the dealer or quote a request is about.
_QUERY_IDS = {"dealerAccountId": "dealer_account_id", "quoteId": "quote_id"}


def _ids_in_query(request: web.Request) -> dict[str, str]:
    ids: dict[str, str] = {}
    for param, field in _QUERY_IDS.items():
        value = request.query.get(param)
        # Only an id the handler takes (canonical text): it refuses any other, and a log line
        # must not carry arbitrary input.
        if value is not None and is_uuid_text(value):
            ids[field] = value.lower()
    return ids


def routed(app: web.Application, handler: Handler, route: str) -> Handler:
    """`handler` of the route `route` (its template: a bounded metrics label), answered through
    `answer`."""
    return partial(answer, handler=handler, route=route, metrics=app[METRICS],
                   tokens=app[TOKENS])


async def answer(request: web.Request, *, handler: Handler, route: str, metrics: Metrics,
                 tokens: TokenVerifier) -> web.StreamResponse:
    """Every request, in this order: its request id and log context, its metrics, the error
    envelope, then its bearer token. One layer rather than four: each costs a coroutine frame
    per request, and this runs for every quote."""
    offered = request.headers.get("X-Request-Id", "")
    # 128 random bits as 32 hex digits, the shape uuid4().hex had: an id to correlate log lines,
    # not a secret, so the pseudo-random generator serves (no system call per request).
    request_id = (offered if offered and _REQUEST_ID.match(offered)
                  else f"{random.getrandbits(128):032x}")
    request[REQUEST_ID] = request_id
    started = time.perf_counter()
    status = 500  # what the access line says when no response comes back
    scope = (logs.scope(request_id=request_id, **_ids_in_query(request)) if request.query_string
             else logs.scope(request_id=request_id))  # most POSTs have no query to read
    with scope:
        try:
            counted = 500  # the metrics count an escaping exception (a redirect) as 500
            try:
                try:
                    _authenticate(request, tokens)
                    response = await handler(request)
                except Exception as exc:
                    if isinstance(exc, web.HTTPException) and exc.status < 400:
                        raise
                    response = _error_answer(request, exc)
                counted = response.status
            finally:
                metrics.http_request(route, request.method, counted,
                                     time.perf_counter() - started)
            response.headers["X-Request-Id"] = request_id
            status = counted
            return response
        except web.HTTPException as exc:  # redirects: errors were answered as envelopes
            status = exc.status
            raise
        finally:
            level = logging.DEBUG if route in _QUIET_ROUTES else logging.INFO
            if access_log.isEnabledFor(level):
                access_log.log(level, "%s %s %d", request.method, route, status, extra={
                    "method": request.method, "route": route, "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                    "remote": request.remote})


def answered_code(exc: Exception) -> ErrorCode:
    """The error code a request that raised `exc` is answered with: its own for an ApiError,
    INVALID_REQUEST for validation errors, by status for aiohttp's HTTP errors (400 and above),
    SERVICE_UNAVAILABLE when the database is out of reach, INTERNAL for anything else."""
    if isinstance(exc, ApiError):
        return exc.error
    if isinstance(exc, ValidationError):
        return Errors.INVALID_REQUEST
    if isinstance(exc, web.HTTPException):
        code = {
            404: Errors.ROUTE_NOT_FOUND,
            405: Errors.METHOD_NOT_ALLOWED,
            413: Errors.PAYLOAD_TOO_LARGE,
        }.get(exc.status)
        if code is None:
            code = Errors.INVALID_REQUEST if exc.status < 500 else Errors.INTERNAL
        return code
    if isinstance(exc, DATABASE_OUTAGE):
        return Errors.SERVICE_UNAVAILABLE
    return Errors.INTERNAL


def _error_answer(request: web.Request, exc: Exception) -> web.Response:
    """The error envelope of a failed request: ApiError, validation errors, aiohttp HTTP errors
    (400 and above) and crashes. Called while `exc` is being handled (its traceback is logged)."""
    if isinstance(exc, ApiError):
        response = _error_response(request, exc)
        if isinstance(exc, UnreadableBody):
            response.force_close()
        return response
    code = answered_code(exc)
    if isinstance(exc, ValidationError):
        fields = validation_details(exc)
        summary = "; ".join(f"{f['field']}: {f['message']}" for f in fields[:5])
        return _error_response(request, ApiError(code, f"Invalid request: {summary}",
                                                 {"fields": fields}))
    if code is Errors.SERVICE_UNAVAILABLE:
        log.error("database unavailable on %s %s (request %s): %s", request.method,
                  request.path, request.get(REQUEST_ID), type(exc).__name__)
    elif code is Errors.INTERNAL and not isinstance(exc, web.HTTPException):
        log.exception("unhandled error on %s %s (request %s)", request.method, request.path,
                      request.get(REQUEST_ID))
    return _error_response(request, ApiError(code))


def _authenticate(request: web.Request, tokens: TokenVerifier) -> None:
    """Verify a bearer token when one is sent; endpoints that need one refuse without it."""
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            request[AUTH_ERROR] = ApiError(Errors.INVALID_TOKEN,
                                           "Authorization must be 'Bearer <token>'")
        else:
            try:
                request[PRINCIPAL] = tokens.verify(token.strip())
            except ApiError as exc:
                request[AUTH_ERROR] = exc


def _error_response(request: web.Request, error: ApiError) -> web.Response:
    details = {
        "code": error.error.code,
        "resource": request.path,
        "action": request.path.rstrip("/").rsplit("/", 1)[-1] or None,
        "request_id": request.get(REQUEST_ID),
        **error.details,
    }
    request.app[METRICS].api_errors.labels(error.error.code).inc()
    return json_response(error_envelope(error.error.errno, str(error), details),
                         status=error.error.status)


async def unmatched(request: web.Request) -> web.StreamResponse:
    """The last route, for any method and path: 405 when another route has the path (with
    another method), else 404; `answer` writes either as the envelope."""
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        if resource.canonical != UNMATCHED_PATH:
            match, methods = await resource.resolve(request)
            if match is None:
                allowed |= methods
    if allowed:
        raise web.HTTPMethodNotAllowed(request.method, allowed)
    raise web.HTTPNotFound()


UNMATCHED_PATH = "/{unmatched}"
UNMATCHED_ROUTE = "unmatched"  # its metrics label


def install_api(app: web.Application, api: Api) -> None:
    """`api`'s endpoints on `app`, each answered through `answer`, then the catch-all."""
    api.install(app, routed)
    app.router.add_route("*", "/{unmatched:.*}", routed(app, unmatched, UNMATCHED_ROUTE))
