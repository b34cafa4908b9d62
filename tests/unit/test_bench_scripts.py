"""The benchmark scripts start as README says to run them (`.venv/bin/python bench/<name>.py`):
a script's folder comes first on sys.path there, where bench/pricing.py could shadow the
`pricing` package."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

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
