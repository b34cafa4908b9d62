"""Hand-written fakes of the outside systems the daemon talks to, and the polling helper their
tests wait with (never a fixed sleep)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(
    probe: Callable[[], T | Awaitable[T]], *, within: float = 5.0, interval: float = 0.01,
    message: str = "condition",
) -> T:
    """Poll `probe` (sync or async) until it answers something truthy; answer that value."""
    deadline = time.monotonic() + within
    while True:
        value = probe()
        if isinstance(value, Awaitable):
            value = await value
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{message} not reached within {within} s (last: {value!r})")
        await asyncio.sleep(interval)
