"""Fault injection of the paper connector: which order calls are rejected or time out."""

from __future__ import annotations

import enum
import random


class Fault(enum.Enum):
    NONE = "none"
    REJECT = "reject"  # the venue refuses the order ("injected reject")
    TIMEOUT = "timeout"  # the venue applies the order but the caller never hears back
    LOST = "lost"  # the order never reaches the venue and the caller never hears back


class FaultInjector:
    """Draws the fault of each order submit from its own seeded generator.

    Every draw is made on every call so the n-th submit meets the same fault whatever the
    ratios of earlier ones; a ratio of 1.0 always hits and 0.0 never does. A reject wins over a
    timeout, a timeout over a loss.
    """

    def __init__(self, seed: int, reject_ratio: float, timeout_ratio: float,
                 lost_ratio: float = 0.0) -> None:
        self._rng = random.Random(seed)
        self._lost_rng = random.Random(seed + 1)  # its own stream: earlier draws are unchanged
        self.reject_ratio = reject_ratio
        self.timeout_ratio = timeout_ratio
        self.lost_ratio = lost_ratio

    def next_fault(self) -> Fault:
        reject_draw, timeout_draw = self._rng.random(), self._rng.random()
        lost_draw = self._lost_rng.random()
        if reject_draw < self.reject_ratio:
            return Fault.REJECT
        if timeout_draw < self.timeout_ratio:
            return Fault.TIMEOUT
        if lost_draw < self.lost_ratio:
            return Fault.LOST
        return Fault.NONE
