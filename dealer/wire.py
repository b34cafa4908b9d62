"""Wire conventions shared by every endpoint: camelCase JSON, the envelope, times, pagination."""

from __future__ import annotations

import datetime as dt
import re
import types
import uuid
from collections.abc import Sequence
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Generic, TypeVar, Union, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from dealer.ids import uuid_from_canonical

T = TypeVar("T")

def _ascii_digits(value: str) -> str:
    # The pattern is the seeds' text, where \d means 0-9 (JSON Schema); the validator's regex
    # engine, and Decimal, would also take the digits of other scripts (Arabic-Indic, full-width).
    if not value.isascii():
        raise ValueError("must use the digits 0-9")
    return value


DecimalString = Annotated[
    str, StringConstraints(pattern=r"^-?\d+(\.\d+)?$", max_length=64),
    AfterValidator(_ascii_digits),
    Field(description="Decimal value as string to preserve precision", examples=["1234.56789000"]),
]
# The largest offset PostgreSQL (bigint) and the JSON encoder (64-bit integers) can carry.
MAX_OFFSET = 2**63 - 1


def _storable_text(value: str) -> str:
    # PostgreSQL text cannot hold NUL: refuse it here rather than fail the INSERT with a 500.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


Nickname = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100),
    AfterValidator(_storable_text),
]


class WireModel(BaseModel):
    """Base of request and response bodies: camelCase on the wire, unknown fields refused.

    A response is dumped whole (defaults and nulls included), so its schema lists every field
    as required; a model dumped without some fields sets `json_schema_serialization_defaults_
    required=False` (request schemas are unaffected: a field with a default may be omitted)."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True,
        json_schema_serialization_defaults_required=True,
    )


# A UUID's one text form on the wire: 8-4-4-4-12 hex digits (either case) with hyphens.
# pydantic alone also takes 32 bare digits, braces and a `urn:uuid:` prefix.
_UUID_TEXT = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def is_uuid_text(text: str) -> bool:
    """Whether `text` is a UUID in its canonical hyphenated form (hex digits of either case)."""
    return _UUID_TEXT.fullmatch(text) is not None


class UuidTable(dict[str, uuid.UUID]):
    """The UUIDs of canonical texts already read, by text, for one app: a request's ids are
    looked up rather than made again. Making a UUID from its text costs more than the rest of
    validating a quote request's ids, and the same few ids (a desk's dealers and clients) come
    in every request; equal ids are then the same object, which the caches keyed by them find
    at once. Each text is checked before it is kept; bounded (cleared when full)."""

    __slots__ = ("_limit",)

    def __init__(self, limit: int = 10_000) -> None:
        super().__init__()
        self._limit = limit

    def context(self) -> dict[str, Any]:
        """The validation context under which `Uuid` fields read their text here."""
        return {_UUIDS: self}

    def keep(self, text: str) -> uuid.UUID:
        """The UUID of `text`, already checked to be in the canonical form, kept."""
        if len(self) >= self._limit:
            self.clear()
        made = self[text] = uuid_from_canonical(text)
        return made


_UUIDS = "uuids"  # the validation context's key of the UuidTable


def _canonical_uuid(value: Any, info: ValidationInfo) -> Any:
    # Text only: the daemon's own code passes uuid.UUID values.
    if isinstance(value, str):
        context = info.context
        table: UuidTable | None = context.get(_UUIDS) if context else None
        if table is not None:
            known = table.get(value)  # checked when it was kept
            if known is not None:
                return known
        if _UUID_TEXT.fullmatch(value) is None:
            # the message says what is expected, never what was sent
            raise PydanticCustomError("uuid_parsing",
                                      "must be a UUID in the hyphenated 8-4-4-4-12 form")
        # the UUID itself: a request body is validated strictly (`validated_body`), and a
        # strict UUID field takes no text
        return uuid_from_canonical(value) if table is None else table.keep(value)
    return value


_CANONICAL_UUID = BeforeValidator(_canonical_uuid)
# A UUID as the wire carries one, in query parameters and request bodies alike.
Uuid = Annotated[uuid.UUID, _CANONICAL_UUID]

# The grammar of a query value of each scalar type: a query value is text, and pydantic's lax
# parsing would read "1_0" as 10, take "+5", " 5" and "05", and "yes", "on" or "1" as true.
# Each value has one spelling here: an integer as JSON writes one (no sign: no query integer is
# negative), a boolean as JSON's `true` or `false`. (UUIDs: `Uuid`, which bodies use too.)
_QUERY_TEXT: dict[type, tuple[re.Pattern[str], str, str]] = {
    int: (re.compile(r"0|[1-9][0-9]*"), "int_parsing",
          "must be an integer in the digits 0-9, without sign, spaces, underscores or leading "
          "zeros"),
    bool: (re.compile(r"true|false"), "bool_parsing", "must be true or false"),
}


def _query_text_type(annotation: Any, metadata: Sequence[Any], field: str) -> type | None:
    """int, bool or uuid.UUID: the type a query field's values are held to the one spelling
    of, through Annotated, `| None` and list; None for a text field (str, Literal). A UUID
    must be declared `Uuid` (TypeError otherwise: it would take any spelling)."""
    origin = get_origin(annotation)
    if origin is Annotated:
        inner, *more = get_args(annotation)
        return _query_text_type(inner, [*metadata, *more], field)
    if origin is list:
        return _query_text_type(get_args(annotation)[0], (), field)
    if origin is Union or origin is types.UnionType:
        members = [a for a in get_args(annotation) if a is not type(None)]
        found = {_query_text_type(a, metadata if len(members) == 1 else (), field)
                 for a in members}
        if len(members) > 1 and found != {None}:
            # the one spelling of the one would refuse the others' text
            raise TypeError(f"query field {field}: an int, bool or UUID must not be in a union")
        return found.pop()
    if annotation is uuid.UUID and _CANONICAL_UUID not in metadata:
        raise TypeError(f"query field {field}: declare a UUID as dealer.wire.Uuid")
    return annotation if annotation in (int, bool, uuid.UUID) else None


class QueryModel(WireModel):
    """Base of query-string parameters: integers, booleans and UUIDs take one spelling each
    (`_QUERY_TEXT`, `Uuid`). The int and bool fields to hold to it are found from their types
    and need no annotation of their own, so their Field constraints stay pydantic's own (behind
    a BeforeValidator, an optional int's `ge`/`le` would reach the JSON Schema as unknown
    keywords rather than `minimum`/`maximum`)."""

    _text_types: ClassVar[dict[str, type]] = {}  # field name → int, bool or uuid.UUID

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        cls._text_types = {
            name: text_type for name, info in cls.model_fields.items()
            if (text_type := _query_text_type(info.annotation, info.metadata, name)) is not None}

    @field_validator("*", mode="before")
    @classmethod
    def _one_spelling(cls, value: Any, info: ValidationInfo) -> Any:
        grammar = _QUERY_TEXT.get(cls._text_types.get(info.field_name or "", str))
        if grammar is not None:
            pattern, kind, message = grammar
            for text in value if isinstance(value, list) else (value,):
                # Text only: the daemon's own code builds queries from typed values.
                if isinstance(text, str) and pattern.fullmatch(text) is None:
                    # the message says what is expected, never what was sent
                    raise PydanticCustomError(kind, message)
        return value


class ListQuery(QueryModel):
    limit: int = Field(default=50, ge=1, le=1000,
                       description="Limit the number of returned results")
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET,
                        description="Offset of the returned results")


class Pagination(WireModel):
    offset: int
    limit: int
    total: int
    has_next: bool


class Page(Generic[T]):
    """What a list handler returns: one page of items and the total the filters matched."""

    __slots__ = ("items", "limit", "offset", "total")

    def __init__(self, items: list[T], total: int, limit: int, offset: int) -> None:
        self.items = items
        self.total = total
        self.limit = limit
        self.offset = offset

    def pagination(self) -> Pagination:
        return Pagination(
            offset=self.offset, limit=self.limit, total=self.total,
            has_next=self.offset + len(self.items) < self.total,
        )


class ErrorDetails(WireModel):
    # built as a dict by `dealer.middlewares.answer`: the fields an error lacks are absent
    model_config = ConfigDict(json_schema_serialization_defaults_required=False)

    code: str
    resource: str | None = None
    action: str | None = None
    required: list[str] | None = None
    provided: list[str] | None = None
    request_id: str | None = Field(default=None, serialization_alias="request_id")
    fields: list[dict[str, Any]] | None = None
    metadata: dict[str, Any] | None = None


def decimal_text(value: Decimal) -> str:
    """A decimal as the wire carries it, seeds/001's `^-?\\d+(\\.\\d+)?$`: its digits, never an
    exponent (str() writes a lot of 1e-8 as `1E-8`, and a normalised 64000 as `6.4E+4`)."""
    return format(value, "f")


def millis(moment: dt.datetime | None) -> int | None:
    """Unix milliseconds of an aware datetime (exact: the milliseconds `iso` shows)."""
    return None if moment is None else (moment - _EPOCH) // _MILLISECOND


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MILLISECOND = dt.timedelta(milliseconds=1)
# Zero-padded numbers as strings, looked up rather than formatted: `iso` runs twice per quote.
_TWO_DIGITS = tuple(f"{n:02d}" for n in range(100))
_THREE_DIGITS = tuple(f"{n:03d}" for n in range(1000))


def iso(moment: dt.datetime | None) -> str | None:
    """ISO 8601 in UTC with milliseconds and a Z, as the seeds show."""
    if moment is None:
        return None
    if moment.tzinfo is not dt.UTC:  # the clock and asyncpg already answer UTC: no conversion
        moment = moment.astimezone(dt.UTC)
    # What isoformat(timespec="milliseconds") writes (milliseconds truncated), with a Z; spelt
    # out because datetime.isoformat formats through C printf, several times slower, and
    # %-formatting is still slower than joining looked-up digits.
    year = moment.year
    two = _TWO_DIGITS
    return (f"{year if year >= 1000 else f'{year:04d}'}-{two[moment.month]}-{two[moment.day]}"
            f"T{two[moment.hour]}:{two[moment.minute]}:{two[moment.second]}"
            f".{_THREE_DIGITS[moment.microsecond // 1000]}Z")


class TimeTexts:
    """`millis` and `iso` of a time together, for the quote endpoint, whose every answer shows
    two. The text up to the second is kept for the last few seconds seen (quotes come many to
    a second, and a quote's expiry is seconds after its creation), so a time costs a
    subtraction and a lookup rather than a datetime's six fields read and formatted."""

    __slots__ = ("_by_second",)

    def __init__(self) -> None:
        self._by_second: dict[int, str] = {}

    def of(self, moment: dt.datetime) -> tuple[int, str]:
        """(Unix milliseconds, ISO text) of an aware datetime, as `millis` and `iso` give."""
        ms = (moment - _EPOCH) // _MILLISECOND
        second, within = divmod(ms, 1000)
        prefix = self._by_second.get(second)
        if prefix is None:
            if len(self._by_second) >= 16:
                self._by_second.clear()
            text = iso(moment)
            assert text is not None
            prefix = self._by_second[second] = text[:-5]  # less ".mmmZ"
        return ms, f"{prefix}.{_THREE_DIGITS[within]}Z"


class Serialized:
    """A response body already in wire form (JSON types, UUIDs, camelCase keys, in the field
    order of the endpoint's response model), built by a hot endpoint without a model round trip.
    The response model still documents it; a test pins that the two agree."""

    __slots__ = ("data",)

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data


def envelope(data: Any, *, pagination: Pagination | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"data": data, "success": True, "errno": 0, "error": None}
    if pagination is not None:
        body["pagination"] = pagination.model_dump(mode="json", by_alias=True)
    return body


def error_envelope(errno: int, message: str, details: dict[str, Any]) -> dict[str, Any]:
    return {"data": None, "success": False, "errno": errno, "error": message, "details": details}
