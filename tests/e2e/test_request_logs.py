"""Every request leaves one access line carrying its request id, and the dealer and quote it
was about when the request names them."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from dealer import logs
from tests.conftest import ADMIN
from tests.desk import SUBMIT, accept_body, make_desk, request_quote
from tests.helpers import Client, get, post


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """The daemon's log as JSON lines, for this test only."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(logs.ContextFilter())
    handler.setFormatter(logs.JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield stream
    root.removeHandler(handler)
    root.setLevel(level)


def _access(stream: io.StringIO) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    return [line for line in lines if line["logger"] == "dealer.access"]


async def test_access_lines_carry_request_dealer_and_quote_ids(
        client: Client, log_lines: io.StringIO) -> None:
    desk = await make_desk(client)
    quote = await request_quote(client, desk, orderSide="BUY", quantity="0.01")
    resp = await client.post(SUBMIT, json=accept_body(quote),
                             headers={**ADMIN, "X-Request-Id": "accept-1"})
    assert resp.status == 200, await resp.text()
    assert resp.headers["X-Request-Id"] == "accept-1"
    status, body = await get(client, "/api/v3/fermata/quote/get", {"quoteId": quote["quoteId"]})
    assert status == 200, body
    status, body = await post(client, "/api/v3/fermata/quote/request",
                              {"dealerAccountId": desk.dealer, "tradingAccountId": desk.client,
                               "symbol": "SOL/USDT", "orderSide": "BUY", "quantity": "1"})
    assert status == 400, body
    status, body = await get(client, "/api/v3/fermata/dealer/get",
                             {"dealerAccountId": "not-a-uuid"})
    assert status == 400, body
    # the dealer's id without its hyphens: refused, and so not bound to the lines either
    status, body = await get(client, "/api/v3/fermata/dealer/get",
                             {"dealerAccountId": desk.dealer.replace("-", "")})
    assert status == 400, body
    status, body = await post(client, "/api/v3/fermata/dealer/pause",
                              {"dealerAccountId": desk.dealer})
    assert status == 200, body
    status, body = await post(client, "/api/v3/fermata/dealer/resume",
                              {"dealerAccountId": "not-a-uuid"})
    assert status == 400, body

    lines = _access(log_lines)
    quoted = [line for line in lines if line["route"] == "/api/v3/fermata/quote/request"]
    assert quoted[0]["status"] == 200
    assert quoted[0]["dealer_account_id"] == desk.dealer
    assert quoted[0]["quote_id"] == quote["quoteId"]
    assert quoted[0]["level"] == "INFO"
    assert quoted[-1]["status"] == 400  # refused: the dealer is known, no quote was made
    assert quoted[-1]["dealer_account_id"] == desk.dealer
    assert "quote_id" not in quoted[-1]

    (accepted,) = [line for line in lines if line["route"] == SUBMIT]
    assert accepted["request_id"] == "accept-1"
    assert accepted["quote_id"] == quote["quoteId"]
    assert accepted["message"] == f"POST {SUBMIT} 200"
    assert accepted["method"] == "POST"
    assert accepted["duration_ms"] > 0

    (fetched,) = [line for line in lines if line["route"] == "/api/v3/fermata/quote/get"]
    assert fetched["quote_id"] == quote["quoteId"]  # bound from the query string
    malformed = [line for line in lines if line["route"] == "/api/v3/fermata/dealer/get"]
    assert len(malformed) == 2
    for line in malformed:
        assert "dealer_account_id" not in line  # never a value the handler refuses
    (paused,) = [line for line in lines if line["route"] == "/api/v3/fermata/dealer/pause"]
    assert paused["dealer_account_id"] == desk.dealer  # bound from the validated body
    (refused,) = [line for line in lines if line["route"] == "/api/v3/fermata/dealer/resume"]
    assert "dealer_account_id" not in refused
    # Each request has its own id, and every line is about one request only.
    ids = [line["request_id"] for line in lines]
    assert len(set(ids)) == len(ids)


async def test_metrics_scrapes_and_health_probes_log_at_debug(
        client: Client, log_lines: io.StringIO) -> None:
    assert (await client.get("/metrics")).status == 200
    assert (await client.get("/api/v3/health")).status == 200
    lines = {line["route"]: line for line in _access(log_lines)}
    assert lines["/metrics"]["level"] == "DEBUG"
    assert lines["/api/v3/health"]["level"] == "DEBUG"
