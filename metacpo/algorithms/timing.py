"""Wall-clock accounting for an iteration's phases (the ``time/*`` log columns)."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager


class Stopwatch:
    """Accumulates named durations: ``with clock("sample"): ...`` adds the block's seconds to
    ``clock.seconds["sample"]`` (a phase entered several times sums its visits; one never entered
    reads 0.0)."""

    def __init__(self) -> None:
        self.seconds: defaultdict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] += time.perf_counter() - start
