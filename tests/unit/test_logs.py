"""Log lines: JSON or text, with the context of the request they were written for."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from dealer import logs
from dealer.settings import SettingsError, load_settings


@pytest.fixture
def root_logging() -> Iterator[None]:
    """Put the root logger back as it was (configure() replaces its handlers)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    quiet = {name: logging.getLogger(name).level for name in logs.QUIET_LOGGERS}
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    for name, old in quiet.items():
        logging.getLogger(name).setLevel(old)


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_the_bound_context_and_extra_fields(root_logging: None) -> None:
    stream = io.StringIO()
    logs.configure("INFO", "json", stream)
    log = logging.getLogger("dealer.test")
    with logs.scope(request_id="r-1"):
        logs.bind(dealer_account_id="d-1", quote_id=None)
        log.info("quoted %s", "BTC/USDT", extra={"route": "/api/v3/fermata/quote/request"})
    log.info("after the request")

    inside, after = _lines(stream)
    assert inside["message"] == "quoted BTC/USDT"
    assert inside["level"] == "INFO"
    assert inside["logger"] == "dealer.test"
    assert inside["request_id"] == "r-1"
    assert inside["dealer_account_id"] == "d-1"
    assert "quote_id" not in inside  # None is never written
    assert inside["route"] == "/api/v3/fermata/quote/request"
    assert inside["time"].endswith("Z")
    assert "request_id" not in after


def test_an_exception_is_one_json_line(root_logging: None) -> None:
    stream = io.StringIO()
    logs.configure("INFO", "json", stream)
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("dealer.test").exception("failed")
    (line,) = _lines(stream)
    assert line["level"] == "ERROR"
    assert "ValueError: boom" in line["exception"]


def test_level_filters_and_routine_library_lines_stay_quiet(root_logging: None) -> None:
    stream = io.StringIO()
    logs.configure("WARNING", "json", stream)
    logging.getLogger("dealer.test").info("not shown")
    logging.getLogger("dealer.test").warning("shown")
    logs.configure("DEBUG", "json", stream)
    logging.getLogger("apscheduler.executors.default").info("Running job")
    logging.getLogger("dealer.test").debug("debug shown")
    assert [line["message"] for line in _lines(stream)] == ["shown", "debug shown"]


def test_text_format_puts_the_context_after_the_message(root_logging: None) -> None:
    stream = io.StringIO()
    logs.configure("INFO", "text", stream)
    with logs.scope(request_id="r-2", quote_id="q-2"):
        logging.getLogger("dealer.test").warning("refused")
    line = stream.getvalue().strip()
    assert line.endswith("WARNING dealer.test refused request_id=r-2 quote_id=q-2"), line


async def test_concurrent_requests_keep_their_own_context(root_logging: None) -> None:
    stream = io.StringIO()
    logs.configure("INFO", "json", stream)
    log = logging.getLogger("dealer.test")
    both_bound = asyncio.Barrier(2)

    async def request(n: int) -> None:
        with logs.scope(request_id=f"r-{n}"):
            logs.bind(quote_id=f"q-{n}")
            await both_bound.wait()  # each task binds before either logs
            log.info("request %d", n)

    await asyncio.gather(request(1), request(2))
    seen = {(line["message"], line["request_id"], line["quote_id"]) for line in _lines(stream)}
    assert seen == {("request 1", "r-1", "q-1"), ("request 2", "r-2", "q-2")}


def test_log_settings_are_validated() -> None:
    settings = load_settings({"DEALER_LOG_FORMAT": "text", "DEALER_LOG_LEVEL": "DEBUG"})
    assert (settings.log_format, settings.log_level) == ("text", "DEBUG")
    assert load_settings({}).log_format == "json"
    with pytest.raises(SettingsError, match="DEALER_LOG_FORMAT"):
        load_settings({"DEALER_LOG_FORMAT": "xml"})
