"""Fault injection of the paper connector: which order calls are rejected or time out."""

from __future__ import annotations

import enum
import random


class Fault(enum.Enum):
    NONE = "none"
    REJECT = "reject"  # the venue refuses the order ("injected reject")
    TIMEOUT = "timeout"  # the venue applies the order but the caller never hears back


class FaultInjector:
    """Draws the fault of each order submit from its own seeded generator.

    Both draws are made on every call so the n-th submit meets the same fault whatever the
    ratios of earlier ones; a ratio of 1.0 always hits and 0.0 never does.
    """

    def __init__(self, seed: int, reject_ratio: float, timeout_ratio: float) -> None:
        self._rng = random.Random(seed)
        self.reject_ratio = reject_ratio
        self.timeout_ratio = timeout_ratio

    def next_fault(self) -> Fault:
        reject_draw, timeout_draw = self._rng.random(), self._rng.random()
        if reject_draw < self.reject_ratio:
            return Fault.REJECT
        if timeout_draw < self.timeout_ratio:
            return Fault.TIMEOUT
        return Fault.NONE
