"""Live books through the cadenza connector against a fake Cadenza: a lost websocket makes the
LP's book stale (metric and health say so) until the feed recovers by itself; crossed and gapped
updates never reach the consolidated book."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from decimal import Decimal as D
from typing import Any

from aiohttp import web

from dealer.app import create_app
from dealer.settings import DaemonSecrets, Settings
from tests.conftest import assert_ok
from tests.fakes.cadenza import FakeCadenza, running
from tests.helpers import Client, connect_exchange_account, eventually, get, post


def _levels(start: str, step: str, count: int = 5) -> list[tuple[D, D]]:
    return [(D(start) + D(step) * i, D("0.5")) for i in range(count)]


def _metric(text: str, name: str, **labels: str) -> float | None:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(f"{name}{{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    del wanted
    return None


async def test_cadenza_feed_loss_gaps_and_crossed_books(
    settings: Settings, secrets: DaemonSecrets,
    aiohttp_client: Callable[[web.Application], Awaitable[Client]],
) -> None:
    fake = FakeCadenza()
    async with running(fake) as server:
        fake.set_book("BINANCE", "BTC/USDT", _levels("64999", "-1"), _levels("65001", "1"))
        configured = settings.model_copy(update={
            "venue_connectors": {"BINANCE": "cadenza"}, "cadenza_url": server.url,
            "cadenza_ws_url": server.ws_url, "cadenza_token": fake.token,
            "book_max_age_ms": 600_000,
        })
        client = await aiohttp_client(create_app(configured, secrets))
        account = await connect_exchange_account(client, "BINANCE", "spot")
        _, body = await post(client, "/api/v3/fermata/dealer/create", {"symbols": ["BTC/USDT"]})
        dealer = assert_ok(body)["dealerAccountId"]
        status, body = await post(client, "/api/v3/fermata/dealer/link",
                                  {"dealerAccountId": dealer, "tradingAccountId": account})
        assert status == 200, body

        async def dealer_book() -> dict[str, Any]:
            _, payload = await get(client, "/api/v3/fermata/dealer/orderBook",
                                   {"dealerAccountId": dealer, "symbol": "BTC/USDT"})
            data: dict[str, Any] = assert_ok(payload)
            return data

        async def best_ask_is(raw: str) -> bool:
            data = await dealer_book()
            return bool(data["lps"][0]["fresh"] and data["asks"]
                        and data["asks"][0]["sources"][0]["price"] == raw)

        async def lp_stale() -> bool:
            data = await dealer_book()
            return not data["lps"][0]["fresh"] and data["asks"] == []

        async def health() -> dict[str, Any]:
            resp = await client.get("/api/v3/health")
            payload: dict[str, Any] = await resp.json()
            return payload

        async def metrics() -> str:
            return await (await client.get("/metrics")).text()

        async def published(ask: str) -> None:
            """Publish until the book shows `ask`: a publication made before the stream has
            subscribed is not replayed (as with Centrifugo without recovery)."""
            bid = str(int(ask) - 6)

            async def shown() -> bool:
                fake.set_book("BINANCE", "BTC/USDT", _levels(bid, "-1"), _levels(ask, "1"))
                return await best_ask_is(ask)

            await eventually(shown, within_s=10, every_s=0.1)

        await eventually(lambda: best_ask_is("65001"), within_s=3)
        await published("65002")
        assert (await health())["status"] == "healthy"

        # The websocket dies: stale at once, visible in health and metrics.
        await fake.kill_websockets()
        await eventually(lp_stale, within_s=3)
        report = await health()
        assert report["status"] == "degraded"
        assert report["checks"]["venues"]["staleBooks"][0]["venue"] == "BINANCE"
        assert _metric(await metrics(), "dealer_book_stale", venue="BINANCE",
                       symbol="BTC/USDT") == 1.0
        assert (_metric(await metrics(), "dealer_connector_errors_total", venue="BINANCE",
                        connector="cadenza", operation="book_stream") or 0) >= 1

        # It reconnects and resyncs by itself; new books flow again.
        await published("65003")
        assert (await health())["status"] == "healthy"

        # A crossed update is dropped: the book goes stale, pricing never sees it.
        fake.set_book("BINANCE", "BTC/USDT", _levels("65100", "-1"), _levels("65050", "1"))
        await eventually(lp_stale, within_s=3)
        assert (_metric(await metrics(), "dealer_book_updates_rejected_total", venue="BINANCE",
                        symbol="BTC/USDT", reason="crossed") or 0) >= 1
        await published("65004")

        # A gap: the gapped update is not used; a REST snapshot resyncs the book.
        fake.skip_offsets("BINANCE", "BTC/USDT", 3)
        fake.set_book("BINANCE", "BTC/USDT", _levels("64995", "-1"), _levels("65005", "1"))
        await eventually(lambda: best_ask_is("65005"), within_s=3)
        text = await metrics()
        assert (_metric(text, "dealer_book_updates_rejected_total", venue="BINANCE",
                        symbol="BTC/USDT", reason="gap") or 0) >= 1
        assert (_metric(text, "dealer_book_resyncs_total", venue="BINANCE",
                        symbol="BTC/USDT") or 0) >= 3
