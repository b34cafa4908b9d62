"""Endpoint registry: parse → authorise → call → envelope, and the OpenAPI document built from it.

Every endpoint is declared once with its request model, response type, roles and errors; the same
declaration validates requests and generates `/api/v3/openapi.json`, so the two cannot drift.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar, get_args, get_origin

import orjson
from aiohttp import web
from pydantic import BaseModel, TypeAdapter, ValidationError

from dealer import logs
from dealer.appkeys import AUTH_ERROR, PRINCIPAL
from dealer.auth import Principal, Role
from dealer.errors import ApiError, ErrorCode, Errors
from dealer.wire import Page, QueryModel, Serialized, UuidTable, envelope

Handler = Callable[[web.Request, Principal | None, Any], Awaitable[Any]]
H = TypeVar("H", bound=Handler)
# Told of a request refused before its handler ran (token, role, body or query), with why.
Refused = Callable[[web.Application, Exception], None]
Reads = Callable[[Any], Any]  # a validated body → what the handler takes
AiohttpHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# What every route's handler is wrapped in (app, handler, route template → handler).
Around = Callable[[web.Application, AiohttpHandler, str], AiohttpHandler]
Quick = Callable[[dict[str, Any], UuidTable], Any]  # a parsed body → the same, or None

ALL_ROLES = frozenset(Role)



@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    roles: frozenset[Role] | None  # None: no token needed
    body: type[BaseModel] | None
    query: type[QueryModel] | None
    response: Any
    errors: tuple[ErrorCode, ...]
    paginated: bool = False
    description: str = ""
    # Clients send the very same body again and again (a desk asks for the same quote all
    # day): keep bodies that passed validation, by their bytes. Only for frozen body models,
    # whose validation depends on nothing but the bytes; see `_ValidatedBodies`.
    repeated_bodies: bool = False
    # An endpoint that counts its outcomes (the RFQ's) counts these refusals too.
    refused: Refused | None = None
    # What the handler takes instead of the validated body (the RFQ's command), and a reader
    # of the usual bodies straight to it, without the model; see `_ValidatedBodies`.
    reads: Reads | None = None
    quick: Quick | None = None

    @property
    def operation_id(self) -> str:
        parts = [p for p in self.path.removeprefix("/api/v3/").split("/") if p]
        return parts[0] + "".join(p[:1].upper() + p[1:] for p in parts[1:]) if parts else "root"

    def documented_errors(self) -> list[ErrorCode]:
        codes: list[ErrorCode] = list(self.errors)
        if self.body is not None:
            codes += [Errors.INVALID_REQUEST, Errors.MALFORMED_JSON, Errors.PAYLOAD_TOO_LARGE]
        if self.query is not None:
            codes.append(Errors.INVALID_REQUEST)
        if self.roles is not None:
            codes += [Errors.UNAUTHENTICATED, Errors.INVALID_TOKEN, Errors.TOKEN_EXPIRED]
            if self.roles != ALL_ROLES:
                codes.append(Errors.FORBIDDEN)
        codes += [Errors.INTERNAL, Errors.SERVICE_UNAVAILABLE]
        unique = {c.errno: c for c in codes}
        return sorted(unique.values(), key=lambda c: (c.status, -c.errno))


@dataclass
class Api:
    """The registry of endpoints; `install` adds them to an aiohttp app."""

    endpoints: list[Endpoint] = field(default_factory=list)

    def route(
        self,
        method: str,
        path: str,
        *,
        summary: str,
        tag: str,
        roles: Iterable[Role] | None,
        response: Any,
        body: type[BaseModel] | None = None,
        query: type[QueryModel] | None = None,
        errors: Iterable[ErrorCode] = (),
        description: str = "",
        repeated_bodies: bool = False,
        refused: Refused | None = None,
        reads: Reads | None = None,
        quick: Quick | None = None,
    ) -> Callable[[H], H]:
        def register(handler: H) -> H:
            paginated = get_origin(response) is Page
            if repeated_bodies and (body is None or not body.model_config.get("frozen")):
                raise ValueError(f"{path}: only a frozen body model may be reused")
            if (reads is not None or quick is not None) and not repeated_bodies:
                raise ValueError(f"{path}: reads and quick go with repeated_bodies")
            if quick is not None and reads is None:
                raise ValueError(f"{path}: a quick reader reads what `reads` makes of a body")
            self.endpoints.append(
                Endpoint(
                    method=method, path=path, handler=handler, summary=summary, tag=tag,
                    roles=None if roles is None else frozenset(roles), body=body, query=query,
                    response=get_args(response)[0] if paginated else response,
                    errors=tuple(errors), paginated=paginated, description=description,
                    repeated_bodies=repeated_bodies, refused=refused, reads=reads, quick=quick,
                )
            )
            return handler

        return register

    def get(self, path: str, **kwargs: Any) -> Callable[[H], H]:
        return self.route("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Callable[[H], H]:
        return self.route("POST", path, **kwargs)

    def install(self, app: web.Application, around: Around) -> None:
        """Add every endpoint to `app`, each handler wrapped by `around` (with its path)."""
        uuids = UuidTable()  # the app's: its endpoints read the same ids
        for endpoint in self.endpoints:
            app.router.add_route(endpoint.method, endpoint.path,
                                 around(app, _wrap(endpoint, uuids), endpoint.path))

    def find(self, method: str, path: str) -> Endpoint | None:
        for endpoint in self.endpoints:
            if endpoint.method == method and endpoint.path == path:
                return endpoint
        return None


def _wrap(endpoint: Endpoint, uuids: UuidTable
          ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    adapter = TypeAdapter(endpoint.response) if endpoint.response is not None else None
    page_adapter = TypeAdapter(list[endpoint.response]) if endpoint.paginated else None  # type: ignore[name-defined]

    # Which ids the request's log lines are bound to: known from the models, so a request does
    # not look for attributes its parameters lack (a failed lookup on a model raises inside).
    model = endpoint.body or endpoint.query
    fields = model.model_fields if model is not None else {}
    binds_dealer, binds_quote = "dealer_account_id" in fields, "quote_id" in fields
    context = uuids.context()
    bodies = (_ValidatedBodies(endpoint.body, uuids, reads=endpoint.reads, quick=endpoint.quick)
              if endpoint.repeated_bodies and endpoint.body is not None else None)

    refused = endpoint.refused

    async def handle(request: web.Request) -> web.StreamResponse:
        principal: Principal | None = request.get(PRINCIPAL)
        params: Any = None
        try:
            if endpoint.roles is not None:
                if principal is None:  # `answer` sets a principal or an error, not both
                    if AUTH_ERROR in request:
                        raise request[AUTH_ERROR]
                    raise ApiError(Errors.UNAUTHENTICATED)
                if principal.role not in endpoint.roles:
                    raise ApiError(
                        Errors.FORBIDDEN,
                        details={
                            "required": sorted(r.value for r in endpoint.roles),
                            "provided": [principal.role.value],
                        },
                    )
            # Validated `by_alias=True, by_name=False`: fields go by their wire (camelCase) names
            # only. The models also take their Python names (`populate_by_name`, for the
            # daemon's own code), which a client's `start_time` must not reach.
            if bodies is not None:
                params = bodies.validated(await read_body(request))
            elif endpoint.body is not None:
                params = validated_body(endpoint.body, await read_json_object(request),
                                        context)
            elif endpoint.query is not None:
                params = endpoint.query.model_validate(query_values(request, endpoint.query),
                                                       by_alias=True, by_name=False,
                                                       context=context)
        except Exception as exc:
            if refused is not None:
                refused(request.app, exc)
            raise
        # Log lines of the request name the dealer and quote it is about (validated values).
        if binds_quote:
            logs.bind(dealer_account_id=params.dealer_account_id if binds_dealer else None,
                      quote_id=params.quote_id)
        elif binds_dealer and params.dealer_account_id is not None:
            logs.bind_one("dealer_account_id", params.dealer_account_id)
        result = await endpoint.handler(request, principal, params)
        if type(result) is Serialized:  # already wire data: no model validation or dump
            return web.Response(body=orjson.dumps({"data": result.data, "success": True,
                                                   "errno": 0, "error": None}),
                                content_type="application/json")
        if isinstance(result, web.StreamResponse):
            return result
        if isinstance(result, Page):
            assert page_adapter is not None
            data = page_adapter.dump_python(result.items, mode="json", by_alias=True)
            body = envelope(data, pagination=result.pagination())
        else:
            data = adapter.dump_python(result, mode="json", by_alias=True) if adapter else result
            body = envelope(data)
        return json_response(body)

    handle.__name__ = endpoint.operation_id
    return handle


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


class _ValidatedBodies:
    """Validated request bodies by their bytes, for one endpoint of one app. A frozen model is
    a pure function of the bytes, so one validated body serves every request sending the same
    bytes. Only successes are kept (a refusal is worked out again, as it was); small bodies
    only, and at most `max_entries` (all forgotten when full).

    `reads`: what the handler takes, made of the validated body (the body itself without it).
    `quick`: reads the usual bodies straight to that, without the model (whose validation
    costs the quote endpoint more than the rest of reading its request); it answers None for
    anything else, which the model then validates, and must answer only what `reads` would
    make of the model's validation (a test holds the RFQ's to that)."""

    __slots__ = ("_by_bytes", "_context", "_max_bytes", "_max_entries", "_model", "_quick",
                 "_reads", "_uuids")

    def __init__(self, model: type[BaseModel], uuids: UuidTable | None = None, *,
                 reads: Reads | None = None, quick: Quick | None = None,
                 max_entries: int = 1024, max_bytes: int = 1024) -> None:
        self._model = model
        self._uuids = uuids if uuids is not None else UuidTable()
        self._context = self._uuids.context()
        self._reads = reads
        self._quick = quick
        self._by_bytes: dict[bytes, Any] = {}
        self._max_entries = max_entries
        self._max_bytes = max_bytes

    def validated(self, raw: bytes) -> Any:
        """What these bytes validate to (ApiError or ValidationError as without reuse)."""
        params = self._by_bytes.get(raw)
        if params is None:
            body = json_object(raw)
            if self._quick is not None:
                params = self._quick(body, self._uuids)
            if params is None:
                params = validated_body(self._model, body, self._context)
                if self._reads is not None:
                    params = self._reads(params)
            if len(raw) <= self._max_bytes:
                if len(self._by_bytes) >= self._max_entries:
                    self._by_bytes.clear()
                self._by_bytes[raw] = params
        return params


B = TypeVar("B", bound=BaseModel)


def validated_body(model: type[B], body: dict[str, Any],
                   context: dict[str, Any] | None = None) -> B:
    """A request body (parsed JSON) as `model`: by wire names only, and strictly, so each field
    takes its own JSON type: an integer a JSON integer (not `"5"`, `5.0` or `true`), a boolean
    `true` or `false` (not `"true"` or `1`), text a string (not a number: decimals travel as
    strings). Lax parsing would let two different bodies mean one request, as leniency would
    in query values (`dealer.wire.QueryModel`); a UUID's text is held to its one form by
    `dealer.wire.Uuid`, which hands the strict field the UUID (`context`: the app's
    `dealer.wire.UuidTable`'s, where it looks up the ids it read before)."""
    return model.model_validate(body, by_alias=True, by_name=False, strict=True,
                                context=context)


class UnreadableBody(ApiError):
    """A request body that cannot be read as sent: its answer closes the connection."""


async def read_json_object(request: web.Request) -> dict[str, Any]:
    return json_object(await read_body(request))


async def read_body(request: web.Request) -> bytes:
    """The request's body, as `request.read()` gives it (413 past the app's `client_max_size`).
    A small body arrives whole with its headers, and is then taken in one read: `read` reads
    once more for the end of the body and copies it, on every quote request. A body that
    cannot be read as sent (its Content-Encoding does not decode it, a broken chunk) is the
    client's: 400 -100002, as a body that is not JSON."""
    content, limit = request.content, request.client_max_size
    try:
        chunk = await content.readany()
        if content.at_eof():
            body = chunk
        else:
            parts = bytearray(chunk)
            while chunk and not (limit and len(parts) > limit):
                chunk = await content.readany()
                parts.extend(chunk)
            body = bytes(parts)
    except web.RequestPayloadError:
        # Nothing more of it can be read (each read raises this again): the server reads no
        # further, and the answer closes the connection, where the rest of it may still come.
        content.feed_eof()
        raise UnreadableBody(Errors.MALFORMED_JSON, "Request body could not be decoded") from None
    if limit and len(body) > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(body))
    return body


def json_object(raw: bytes) -> dict[str, Any]:
    """A request body as a JSON object ({} when empty), or the error envelope's ApiError."""
    if not raw.strip():
        return {}
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ApiError(Errors.MALFORMED_JSON) from None
    if not isinstance(value, dict):
        raise ApiError(Errors.INVALID_REQUEST, "Request body must be a JSON object")
    # JSON carries a NUL only escaped; the bytes test is cheap and the walk settles it (an
    # escaped backslash before "u0000" is no NUL)
    if b"\\u0000" in raw:
        _refuse_nul(list(_nul_paths(value, "")))
    return value


def _refuse_nul(fields: list[str]) -> None:
    """PostgreSQL text cannot hold NUL: a request carrying one is refused (naming where)
    before it reaches a query, where it would fail with a 500."""
    if fields:
        message = "must not contain NUL characters"
        raise ApiError(Errors.INVALID_REQUEST, f"Invalid request: {fields[0]}: {message}",
                       {"fields": [{"field": field, "message": message, "type": "nul"}
                                   for field in fields]})


def _nul_paths(value: Any, path: str) -> Iterator[str]:
    if isinstance(value, str):
        if "\x00" in value:
            yield path or "body"
    elif isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in key:
                yield path or "body"
            else:
                yield from _nul_paths(item, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for number, item in enumerate(value):
            yield from _nul_paths(item, f"{path}.{number}" if path else str(number))


def list_parameters(model: type[QueryModel]) -> set[str]:
    """The wire names of a query model's list-valued parameters."""
    return {
        (info.alias or name)
        for name, info in model.model_fields.items()
        if get_origin(info.annotation) is list
        or any(get_origin(a) is list for a in get_args(info.annotation))
    }


LIST_FORM = "give each value as its own parameter (repeat the key), not comma-separated"


def query_values(request: web.Request, model: type[QueryModel]) -> dict[str, Any]:
    """Query string → dict; a list parameter takes one value per key, repeated (the OpenAPI
    document's `style: form, explode: true`), any other parameter must come once."""
    values: dict[str, Any] = {}
    array_fields = list_parameters(model)
    query = request.query
    if "\x00" in request.query_string:  # decoded: keys and values
        known = _aliases(model)
        _refuse_nul(sorted({key if key in known else "a query parameter"
                            for key, value in query.items() if "\x00" in key + value}))
    for key in query:
        if key in values:
            continue
        if key in array_fields:
            given = query.getall(key)
            if any("," in value for value in given):
                # No id, symbol or instrument id holds a comma: it could only join two values
                # in one, a second spelling of the repeated keys the reference documents.
                raise ApiError(Errors.INVALID_REQUEST, f"Invalid request: {key}: {LIST_FORM}",
                               {"fields": [{"field": key, "message": LIST_FORM,
                                            "type": "comma_separated"}]})
            values[key] = [value for value in given if value]  # an empty one is no filter
        elif len(query.getall(key)) > 1:
            # which one was meant is a guess; a known field is named, an unknown one is not
            field = key if key in _aliases(model) else "a query parameter"
            raise ApiError(Errors.INVALID_REQUEST, f"Invalid request: {field} must be given once",
                           {"fields": [{"field": field, "message": "must be given once",
                                        "type": "repeated"}]})
        else:
            values[key] = query[key]
    return values


def _aliases(model: type[QueryModel]) -> set[str]:
    return {info.alias or name for name, info in model.model_fields.items()}


def validation_details(exc: ValidationError) -> list[dict[str, Any]]:
    """Field errors without the submitted values (a secret must never be echoed back)."""
    fields = []
    for err in exc.errors(include_input=False, include_url=False, include_context=False):
        fields.append(
            {
                "field": ".".join(str(p) for p in err["loc"]) or "body",
                "message": err["msg"],
                "type": err["type"],
            }
        )
    return fields


# ---------------------------------------------------------------- OpenAPI

_REF = "#/components/schemas/{model}"


def openapi_document(api: Api, *, title: str, version: str, description: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every registered endpoint, with errnos per status code."""
    components: dict[str, Any] = {
        "Envelope": {
            "type": "object",
            "required": ["data", "success", "errno", "error"],
            "properties": {
                "data": {},
                "success": {"type": "boolean"},
                "errno": {"type": "integer"},
                "error": {"type": ["string", "null"]},
                "details": {"$ref": "#/components/schemas/ErrorDetails"},
                "pagination": {"$ref": "#/components/schemas/Pagination"},
            },
        },
        "ErrorEnvelope": {
            "type": "object",
            "required": ["data", "success", "errno", "error", "details"],
            "properties": {
                "data": {"type": "null"},
                "success": {"const": False},
                "errno": {"type": "integer"},
                "error": {"type": "string"},
                "details": {"$ref": "#/components/schemas/ErrorDetails"},
            },
        },
    }
    from dealer.wire import ErrorDetails, Pagination

    for model in (ErrorDetails, Pagination):
        _add_schema(components, model, "serialization")
    paths: dict[str, dict[str, Any]] = {}
    for ep in api.endpoints:
        operation: dict[str, Any] = {
            "operationId": ep.operation_id,
            "summary": ep.summary,
            "tags": [ep.tag],
            "responses": {},
        }
        if ep.description:
            operation["description"] = ep.description
        if ep.roles is not None:
            operation["security"] = [{"bearerAuth": []}]
            operation["x-roles"] = sorted(r.value for r in ep.roles)
        else:
            operation["security"] = []
        if ep.query is not None:
            operation["parameters"] = _query_parameters(components, ep.query)
        if ep.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": _add_schema(components, ep.body,
                                                                        "validation")}},
            }
        operation["responses"]["200"] = _success_response(components, ep)
        by_status: dict[int, list[ErrorCode]] = {}
        for code in ep.documented_errors():
            by_status.setdefault(code.status, []).append(code)
        for status, codes in sorted(by_status.items()):
            operation["responses"][str(status)] = {
                "description": "; ".join(f"{c.errno} {c.code}: {c.message}" for c in codes),
                "x-errnos": [{"errno": c.errno, "code": c.code, "error": c.message}
                             for c in codes],
                "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}},
            }
        paths.setdefault(ep.path, {})[ep.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": description},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
        "x-errnos": [
            {"errno": c.errno, "status": c.status, "code": c.code, "error": c.message}
            for c in Errors.all()
        ],
    }


def _keep(components: dict[str, Any], name: str, definition: dict[str, Any]) -> None:
    """Add a component schema. Components go by the model's class name: two models of one name
    (in two modules) would share one schema, documenting the other one wrongly."""
    if components.setdefault(name, definition) != definition:
        raise ValueError(f"OpenAPI: two different schemas named {name}; rename one model")


def _add_schema(components: dict[str, Any], tp: Any, mode: str) -> dict[str, Any]:
    schema = TypeAdapter(tp).json_schema(ref_template=_REF, mode=mode)  # type: ignore[arg-type]
    for name, definition in schema.pop("$defs", {}).items():
        _keep(components, name, definition)
    if isinstance(tp, type) and issubclass(tp, BaseModel) and "properties" in schema:
        name = tp.__name__
        _keep(components, name, schema)
        return {"$ref": _REF.format(model=name)}
    return schema


def _query_parameters(components: dict[str, Any], model: type[QueryModel]) -> list[dict[str, Any]]:
    schema = TypeAdapter(model).json_schema(ref_template=_REF, mode="validation")
    for name, definition in schema.pop("$defs", {}).items():
        _keep(components, name, definition)
    required = set(schema.get("required", []))
    params = []
    for name, field_schema in schema.get("properties", {}).items():
        prop = absent_or_value(field_schema)
        param: dict[str, Any] = {
            "name": name, "in": "query", "required": name in required, "schema": prop,
        }
        if "description" in prop:
            param["description"] = prop["description"]
        if _is_array(prop):
            param["style"] = "form"
            param["explode"] = True
            form = (f"One value per parameter, repeated (`?{name}=a&{name}=b`); a value "
                    "holding a comma is refused.")
            param["description"] = (f"{param['description']} {form}" if "description" in param
                                    else form)
        params.append(param)
    return params


def absent_or_value(prop: dict[str, Any]) -> dict[str, Any]:
    """A field's schema without the null of its model's `X | None`, for a field that may be
    absent but never null: a query parameter (a query string cannot carry a null), or a body
    field whose null is refused. Its default, null, is what absence means and is not
    documented as a value."""
    prop = dict(prop)
    options = prop.pop("anyOf", None)
    if options is not None:
        values = [option for option in options if option != {"type": "null"}]
        if len(values) == 1:
            prop = {**values[0], **prop}
        else:
            prop["anyOf"] = values
    if "default" in prop and prop["default"] is None:
        del prop["default"]
    return prop


def _is_array(prop: dict[str, Any]) -> bool:
    return prop.get("type") == "array" or any(
        alt.get("type") == "array" for alt in prop.get("anyOf", [])
    )


def _success_response(components: dict[str, Any], ep: Endpoint) -> dict[str, Any]:
    if ep.response is None:
        data_schema: dict[str, Any] = {}
    elif ep.paginated:
        data_schema = {"type": "array", "items": _add_schema(components, ep.response,
                                                             "serialization")}
    else:
        data_schema = _add_schema(components, ep.response, "serialization")
    properties: dict[str, Any] = {
        "data": data_schema,
        "success": {"const": True},
        "errno": {"const": 0},
        "error": {"type": "null"},
    }
    required = ["data", "success", "errno", "error"]
    if ep.paginated:
        properties["pagination"] = {"$ref": "#/components/schemas/Pagination"}
        required.append("pagination")
    return {
        "description": "OK",
        "content": {"application/json": {"schema": {
            "type": "object", "required": required, "properties": properties}}},
    }
