"""Per-stage wall-clock accounting for the hot path.

Benchmarks and the run summary both need "milliseconds per stage" without sprinkling
``time.perf_counter()`` pairs everywhere; a tiny accumulator keeps that honest and cheap.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class StageTimer:
    """Accumulates total seconds and call counts per named stage."""

    totals: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - start)

    def add(self, name: str, seconds: float, count: int = 1) -> None:
        self.totals[name] = self.totals.get(name, 0.0) + seconds
        self.counts[name] = self.counts.get(name, 0) + count

    def ms_per_call(self, name: str) -> float:
        n = self.counts.get(name, 0)
        return 1000.0 * self.totals.get(name, 0.0) / n if n else 0.0

    def ms_per(self, name: str, denominator: int) -> float:
        """Total milliseconds of a stage divided by e.g. frames or faces."""
        return 1000.0 * self.totals.get(name, 0.0) / denominator if denominator else 0.0
