"""What the benchmarks share: the desk, made over HTTP like an admin would (three paper LPs,
BINANCE spot, OKX trading and BYBIT spot, linked to a BTC/USDT dealer, and a client), and the
event loop they run on."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import math
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from decimal import Decimal
from typing import Any

import aiohttp
from aiohttp import web

LP_ACCOUNTS = (("BINANCE", "spot"), ("OKX", "trading"), ("BYBIT", "spot"))
# The shortest wait a load generator asks its event loop for. uvloop's timers count whole
# milliseconds and round a shorter delay down to zero: a generator sleeping 0.4 ms between
# sends at 2,500/s would spin, taking a whole core from the servers it measures.
TIMER_RESOLUTION_S = 0.001
# The FERMATA BTC/USDT lot of that desk: the coarsest of the three LP venues' lots.
LOT = Decimal("0.00001")
# The daemon's secrets in a benchmark (its own throwaway database and data directory).
JWT_SECRET = "bench-secret-" + "x" * 40
SECRETS_KEY = base64.urlsafe_b64encode(b"b" * 32).decode()


async def call(session: aiohttp.ClientSession, method: str, url: str, headers: dict[str, str],
               body: dict[str, Any] | None = None, params: dict[str, str] | None = None) -> Any:
    """One API call; its `data`, or RuntimeError for anything but 200."""
    async with session.request(method, url, json=body, params=params, headers=headers) as resp:
        payload = await resp.json()
        if resp.status != 200:
            raise RuntimeError(f"{method} {url} answered {resp.status}: {payload}")
        return payload["data"]


async def setup_desk(base: str, admin: dict[str, str], *, nickname: str = "bench",
                     fresh_within_s: float = 10.0) -> tuple[str, str]:
    """The desk, once every LP book is fresh in the dealer's consolidated book; answers
    (dealerAccountId, client tradingAccountId)."""
    async with aiohttp.ClientSession() as session:
        lps = []
        for venue, external in LP_ACCOUNTS:
            credential = await call(session, "POST", f"{base}/api/v3/credential/create", admin, {
                "venue": venue, "credentialType": "API_KEY", "apiKey": f"{venue}-key",
                "apiSecret": "s"})
            await call(session, "POST", f"{base}/api/v3/credential/verify", admin,
                       {"credentialIds": [credential["credentialId"]]})
            account = await call(session, "POST", f"{base}/api/v3/tradingAccount/connect", admin,
                                 {"credentialIds": [credential["credentialId"]],
                                  "externalTradingAccountId": external})
            lps.append(account["tradingAccountId"])
        dealer = (await call(session, "POST", f"{base}/api/v3/fermata/dealer/create", admin,
                             {"symbols": ["BTC/USDT"], "nickname": nickname}))["dealerAccountId"]
        for lp in lps:
            await call(session, "POST", f"{base}/api/v3/fermata/dealer/link", admin,
                       {"dealerAccountId": dealer, "tradingAccountId": lp})
        client = (await call(session, "POST", f"{base}/api/v3/fermata/client/create", admin,
                             {"nickname": f"{nickname} client"}))["tradingAccountId"]
        deadline = time.monotonic() + fresh_within_s
        while True:
            book = await call(session, "GET", f"{base}/api/v3/fermata/dealer/orderBook", admin,
                              params={"dealerAccountId": dealer, "symbol": "BTC/USDT",
                                      "depth": "1"})
            if sum(lp["fresh"] for lp in book["lps"]) == len(LP_ACCOUNTS):
                return dealer, client
            if time.monotonic() > deadline:
                raise RuntimeError(f"LP books not fresh: {book['lps']}")
            await asyncio.sleep(0.1)


def run_on(event_loop: str, main: Coroutine[Any, Any, None]) -> None:
    """Run `main` on uvloop (as `dealerd run` does by default) or the standard asyncio loop."""
    if event_loop == "uvloop":
        import uvloop

        uvloop.run(main)
    else:
        asyncio.run(main)


@contextlib.asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    """Serve `app` on 127.0.0.1, a free port; answers the base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    await web.SockSite(runner, sock).start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        await runner.cleanup()


async def open_loop(count: int, rate: float, t0: float, *,
                    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                    ) -> AsyncIterator[tuple[int, float]]:
    """The schedule of an open-loop generator: (index, scheduled perf_counter time) of request
    i at t0 + i/rate, each as soon as its time has come, whatever earlier requests are doing.
    Between sends it sleeps, never less than the timer resolution (the requests due meanwhile
    go out together at the next wake-up; their latency still runs from their scheduled time)."""
    sent = 0
    while sent < count:
        now = time.perf_counter()
        while sent < count and t0 + sent / rate <= now:
            yield sent, t0 + sent / rate
            sent += 1
        if sent < count:
            await sleep(max(TIMER_RESOLUTION_S, t0 + sent / rate - time.perf_counter()))


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """A load generator's step runs with Python's cyclic garbage collector paused, and collects
    afterwards: a full collection of the generator's heap stalls its event loop for 20-30 ms,
    and every response in flight would count that stall against the server it measures."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect()


def percentile(sorted_values: list[float], fraction: float) -> float:
    """The nearest-rank percentile of sorted values (infinite when there are none)."""
    if not sorted_values:
        return math.inf
    index = max(0, math.ceil(fraction * len(sorted_values)) - 1)
    return sorted_values[index]
