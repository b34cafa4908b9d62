"""Wire conventions shared by every endpoint: camelCase JSON, the envelope, times, pagination."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints
from pydantic.alias_generators import to_camel

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
    """Base of request and response bodies: camelCase on the wire, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class QueryModel(WireModel):
    """Base of query-string parameters."""


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
    code: str
    resource: str | None = None
    action: str | None = None
    required: list[str] | None = None
    provided: list[str] | None = None
    request_id: str | None = Field(default=None, serialization_alias="request_id")
    fields: list[dict[str, Any]] | None = None
    metadata: dict[str, Any] | None = None


def millis(moment: dt.datetime | None) -> int | None:
    """Unix milliseconds of an aware datetime."""
    return None if moment is None else int(moment.timestamp() * 1000)


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
