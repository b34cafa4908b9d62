"""Request bodies take each field in its own JSON type: an integer field a JSON integer, a
boolean field `true` or `false`, a text field (decimals included: they travel as strings) a
string. Every integer, boolean and text field of every body, nested ones too, is held to it."""

from __future__ import annotations

import types
import uuid
from collections.abc import Iterator
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
import asyncpg
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from dealer.app import build_api
from tests.helpers import Client, assert_invalid, post, snapshot

Path = tuple[str | int, ...]  # wire names, list indexes and dict keys down to a field
# Values of another JSON type than the field's, each of which lax parsing took or could take,
# by the field's type, with the error type the refusal names.
WRONG: dict[str, tuple[list[Any], str]] = {
    "int": (["5", "500", 500.0, 5.5, True, None, [5]], "int_type"),
    "bool": (["true", "false", 1, 0, "1", "yes", None], "bool_type"),
    "str": ([5, 1.5, True, None, ["5"], {"x": "5"}], "string_type"),
    "literal": ([1, True, None], "literal_error"),
}


def _good_int(metadata: list[Any]) -> int:
    """An integer within the field's bounds."""
    for item in metadata:
        if isinstance(item, FieldInfo):  # Annotated[int, Field(ge=…)] inside `| None`
            return _good_int(list(item.metadata))
        if isinstance(item, annotated_types.Ge):
            return int(item.ge)  # type: ignore[call-overload]
        if isinstance(item, annotated_types.Gt):
            return int(item.gt) + 1  # type: ignore[call-overload]
    return 0


def _fields(annotation: Any, metadata: list[Any], path: Path, optional: bool
            ) -> Iterator[tuple[Path, str, Any, bool]]:
    """(path, kind, a value of the right type, nullable) of each int, bool, text and Literal
    field under `annotation`, through Annotated, `| None`, list, dict and models."""
    origin = get_origin(annotation)
    if origin is Annotated:
        inner, *more = get_args(annotation)
        yield from _fields(inner, [*metadata, *more], path, optional)
    elif origin is Union or origin is types.UnionType:
        members = [a for a in get_args(annotation) if a is not type(None)]
        for member in members:
            yield from _fields(member, metadata if len(members) == 1 else [], path,
                               optional or len(members) < len(get_args(annotation)))
    elif origin is list:
        yield from _fields(get_args(annotation)[0], [], (*path, 0), False)
    elif origin is dict:
        yield from _fields(get_args(annotation)[1], [], (*path, "BTC"), False)
    elif origin is Literal:
        yield path, "literal", get_args(annotation)[0], optional
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        for name, info in annotation.model_fields.items():
            yield from _fields(info.annotation, list(info.metadata),
                               (*path, info.alias or name), False)
    elif annotation is bool:  # before int: a bool is an int to Python
        yield path, "bool", False, optional
    elif annotation is int:
        yield path, "int", _good_int(metadata), optional
    elif annotation is str:
        yield path, "str", "1", optional
    else:
        assert annotation is uuid.UUID, (path, annotation)  # held to its form: test_body_ids


def body_fields() -> list[tuple[str, Path, str, Any, bool]]:
    """(endpoint path, field path, kind, good value, nullable) of every int, bool, text and
    Literal field of every request body."""
    found = []
    seen: set[tuple[str, type[BaseModel]]] = set()
    for endpoint in build_api().endpoints:
        model = endpoint.body
        if model is None or (endpoint.path, model) in seen:
            continue
        seen.add((endpoint.path, model))
        found += [(endpoint.path, *field) for field in _fields(model, [], (), False)]
    return found


def _body(path: Path, value: Any) -> Any:
    """The smallest body that carries `value` at `path`."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    return [_body(rest, value)] if isinstance(head, int) else {head: _body(rest, value)}


def _named(path: Path) -> str:
    return ".".join(str(part) for part in path)


def _refusals(payload: dict[str, Any], path: Path) -> list[dict[str, Any]]:
    """The refusals naming this field (a union's members each add theirs)."""
    named = _named(path)
    return [f for f in payload.get("details", {}).get("fields", [])
            if f["field"] == named or f["field"].startswith(named + ".")]


def test_the_fields_are_found_nested_ones_too() -> None:
    found = {(endpoint, _named(path)): kind for endpoint, path, kind, _, _ in body_fields()}
    submit = "/api/v3/trading/order/submit"
    assert found[(submit, "leverage")] == found[(submit, "expireAt")] == "int"
    assert found[(submit, "awaitClosed")] == "bool"
    assert found[(submit, "quantity")] == "str"
    assert found[(submit, "orderSide")] == "literal"
    assert found[("/api/v3/fermata/dealer/create", "quoteTtlMs")] == "int"
    assert found[("/api/v3/fermata/dealer/create", "spreadTiers.0.upToNotional")] == "str"
    assert found[("/api/v3/fermata/dealer/update", "maxUnhedgedExposure.BTC")] == "str"
    assert found[("/api/v3/fermata/dealer/unlink", "drain")] == "bool"
    assert found[("/api/v3/fermata/quote/request", "quoteQuantity")] == "str"
    assert len(found) >= 60


async def test_a_value_of_another_json_type_is_refused_naming_the_field(
        client: Client, conn: asyncpg.Connection) -> None:
    before = await snapshot(conn)
    for endpoint, path, kind, _, nullable in body_fields():
        values, error_type = WRONG[kind]
        for wrong in values:
            if wrong is None and nullable:
                continue  # null is this optional field's "not set"
            status, payload = await post(client, endpoint, _body(path, wrong))
            assert_invalid(status, payload, _named(path))
            refusals = _refusals(payload, path)
            assert refusals, (endpoint, path, wrong, payload)
            assert error_type in {f["type"] for f in refusals}, (endpoint, path, wrong, refusals)
            if isinstance(wrong, str):  # never echoed
                assert repr(wrong) not in payload["error"], (endpoint, path, payload)
    assert await snapshot(conn) == before


async def test_a_value_of_the_right_json_type_is_taken(client: Client) -> None:
    # Other required fields are missing, so most of these bodies are refused as a whole:
    # never for the type of the field they carry.
    for endpoint, path, kind, good, _ in body_fields():
        status, payload = await post(client, endpoint, _body(path, good))
        types_refused = {f["type"] for f in _refusals(payload, path)} if status == 400 else set()
        assert not types_refused & {error for _, error in WRONG.values()}, (
            endpoint, path, good, payload)
        if kind in ("int", "bool"):  # the value is within the field's rules too
            assert not types_refused, (endpoint, path, good, payload)


async def test_decimals_are_strings_and_integers_json_integers_in_a_whole_body(
        client: Client) -> None:
    body = {"symbols": ["BTC/USDT"], "quoteTtlMs": 1500, "spreadBps": "12.5",
            "spreadTiers": [{"upToNotional": "1000", "spreadBps": "8"}]}
    status, payload = await post(client, "/api/v3/fermata/dealer/create", body)
    assert status == 200, payload
    config = payload["data"]["config"]
    assert (config["quoteTtlMs"], config["spreadBps"]) == (1500, "12.5")
    for field, wrong in (("quoteTtlMs", "1500"), ("spreadBps", 12.5)):
        status, payload = await post(client, "/api/v3/fermata/dealer/create",
                                     {**body, field: wrong})
        assert_invalid(status, payload, field)
