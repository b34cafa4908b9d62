"""The benchmark scripts start as README says to run them (`.venv/bin/python bench/<name>.py`):
a script's folder comes first on sys.path there, where bench/pricing.py could shadow the
`pricing` package."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from aiohttp import web

BENCH = Path(__file__).resolve().parents[2] / "bench"
SCRIPTS = sorted(p.name for p in BENCH.glob("*.py") if p.name not in {"__init__.py", "shared.py"})


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=BENCH.parent, capture_output=True,
                          text=True, timeout=120, check=False)


def test_every_benchmark_is_listed() -> None:
    assert {"book_ingest.py", "hedge.py", "pricing.py", "relay.py", "risk.py",
            "rfq.py"} <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_benchmark_script_starts(script: str) -> None:
    done = _run(f"bench/{script}", "--help")
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout


def test_the_in_process_benchmarks_print_their_figures() -> None:
    ingest = _run("bench/book_ingest.py", "--updates", "200")
    assert ingest.returncode == 0, ingest.stderr
    assert "ratio service/bare" in ingest.stdout
    pricing = _run("bench/pricing.py", "--quotes", "20")
    assert pricing.returncode == 0, pricing.stderr
    assert "µs" in pricing.stdout


async def test_the_open_loop_schedule_never_asks_for_a_wait_under_the_timer_resolution() -> None:
    # uvloop rounds a wait under 1 ms down to zero: a generator pacing 5,000 requests a second
    # with such waits spins and takes a core from the servers it measures.
    sys.path.insert(0, str(BENCH.parent))
    try:
        from bench.shared import TIMER_RESOLUTION_S, open_loop
    finally:
        sys.path.remove(str(BENCH.parent))
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        await asyncio.sleep(seconds)

    t0 = time.perf_counter()
    schedule = [item async for item in open_loop(500, 5000.0, t0, sleep=sleep)]
    assert [index for index, _ in schedule] == list(range(500))
    assert [scheduled for _, scheduled in schedule] == [t0 + i / 5000.0 for i in range(500)]
    assert waits
    assert min(waits) >= TIMER_RESOLUTION_S
    # Every request went out at or after its scheduled time, in bursts of those due.
    assert len(waits) < 500


def _step(rate: float, p99_ms: float) -> dict[str, object]:
    return {"rate": rate, "scheduled": 100, "ok": 100, "unanswered": 0, "p99_ms": p99_ms,
            "throughput": rate}


def _bench_rfq() -> ModuleType:
    sys.path.insert(0, str(BENCH.parent))
    try:
        import bench.rfq
    finally:
        sys.path.remove(str(BENCH.parent))
    return bench.rfq


def test_the_rfq_search_doubles_while_sustained_then_bisects_to_within_five_percent() -> None:
    rfq = _bench_rfq()
    search = rfq.MaxSearch(rfq.Target("quote", "http://127.0.0.1/", ["{}"], {}), 100.0)
    capacity = 1000.0  # steps up to this rate keep the p99 within the SLO
    rates = []
    while not search.done:
        rates.append(search.rate)
        search.record(_step(search.rate, 5.0 if search.rate <= capacity else 500.0), 100.0)
    assert rates == [100, 200, 400, 800, 1600, 1200, 1000, 1100, 1050]
    result = search.result()
    assert result.best is not None
    assert result.best["rate"] == 1000
    assert result.failed is not None
    assert result.failed["rate"] == 1050


def test_the_rfq_cpu_meter_counts_a_party_and_the_children_it_reaped() -> None:
    rfq = _bench_rfq()
    # This process stands for the servers, the generator and the postmaster: a child that
    # burns CPU and ends must be counted with its parent once reaped, as a backend is.
    meter = rfq.CpuMeter(os.getpid(), os.getpid(), os.getpid())
    before = meter.snapshot()
    assert before is not None
    # And the machine's steal time, where /proc/stat has one (a Linux kernel has).
    assert set(before) == {"server", "generator", "postgres", "stolen"}
    assert before["stolen"] >= 0
    burn = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass"
    subprocess.run([sys.executable, "-c", burn], check=True, timeout=60)
    after = meter.snapshot()
    assert after is not None
    used = rfq.cpu_used(before, after, 2.0)
    assert used["seconds"]["postgres"] >= 0.25  # the child's 0.3 s, at 10 ms ticks
    assert used["seconds"]["server"] < used["seconds"]["postgres"]  # not its own
    assert used["cores"]["postgres"] == pytest.approx(used["seconds"]["postgres"] / 2.0)


def test_the_rfq_cpu_use_needs_two_snapshots() -> None:
    rfq = _bench_rfq()
    assert rfq.cpu_used(None, {"server": 1.0}, 1.0) is None
    assert rfq.cpu_used({"server": 1.0}, {"server": 1.5}, 0.0) is None
    assert rfq.cpu_used({"server": 1.0}, {"server": 1.5, "postgres": 2.0}, 0.5) == {
        "wall_s": 0.5, "seconds": {"server": 0.5}, "cores": {"server": 1.0}}


async def test_the_rfq_generator_reads_each_answer_whole_on_kept_alive_connections(
        aiohttp_server: Any) -> None:
    """The generator's HTTP/1.1 client: statuses as sent, a body in many reads read to its end
    (the next answer on the connection comes out right), no more connections than allowed."""
    rfq = _bench_rfq()
    peers: set[Any] = set()

    async def handler(request: web.Request) -> web.Response:
        peers.add(request.transport.get_extra_info("peername") if request.transport else None)
        body = await request.read()
        if body == b"teapot":
            return web.Response(status=418, text="short")
        if body == b"big":
            return web.Response(body=b"x" * 300_000)  # far more than one read
        return web.json_response({"echo": body.decode()})

    app = web.Application()
    app.router.add_post("/any", handler)
    server = await aiohttp_server(app)
    host, port, requests = rfq._requests(
        str(server.make_url("/any")), {"Authorization": "Bearer t"}, ["big", "teapot", "{}"])
    assert requests[1].startswith(b"POST /any HTTP/1.1\r\n")
    assert requests[1].endswith(b"Content-Length: 6\r\n\r\nteapot")
    connections = rfq._Connections(host, port, 2)
    try:
        for _ in range(3):  # one after the other: the same connection each time
            assert [await connections.request(r) for r in requests] == [200, 418, 200]
        answers = await asyncio.gather(*(connections.request(requests[i % 3])
                                         for i in range(30)))
        assert answers == [200, 418, 200] * 10
    finally:
        connections.close()
    assert 1 <= len(peers) <= 2


async def test_an_rfq_generator_step_answers_its_figures(aiohttp_server: Any) -> None:
    rfq = _bench_rfq()
    server = await aiohttp_server(rfq.bare_app())
    step = await rfq._run_step({"url": str(server.make_url(rfq.BARE_PATH)), "rate": 200.0,
                                "seconds": 0.5, "connections": 4, "headers": {},
                                "bodies": ['{"a": 1}', '{"b": 2}']})
    assert step["scheduled"] == 100
    assert step["ok"] == 100
    assert step["statuses"] == {"200": 100}
    assert step["unanswered"] == 0
    assert 0 < step["p50_ms"] <= step["p99_ms"] < 1000
